"""CuDNNLSTM / CuDNNGRU files against Keras' own CuDNN -> LSTM/GRU conversion.

cuDNN kernels cannot run on a CPU, but the CuDNN layers can be built and saved there. When
Keras 2 loads such an .h5 file into the equivalent CPU layer (``LSTM`` with sigmoid gates,
``GRU(reset_after=True)``), it converts the weights itself (``_convert_rnn_weights``); Keras
tests that converter against real cuDNN on GPUs. That converted model, run on CPU, is the
oracle here: rnnparity reads the raw file (full model and weights-only) and must match it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require

tf = require("tensorflow", "TensorFlow is the oracle for Keras parity")
tf_keras = require("tf_keras", "tf_keras (Keras 2) has the CuDNN layers and the converter")

import rnnparity  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = [
    pytest.mark.keras,
    # tf_keras warns that .h5 is a legacy format, attributing it to the caller.
    pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file"),
]

SIZES = [(1, 1), (1, 2), (3, 2), (3, 5), (4, 3)]
BIDIRECTIONAL_SIZES = [(1, 2), (3, 2)]
BATCH, SEQ_LEN = 3, 7


def cudnn_classes():
    """tf_keras' CuDNNLSTM and CuDNNGRU (TF serves them as tf.compat.v1.keras.layers only
    when bound to tf_keras)."""
    layers = tf.compat.v1.keras.layers
    if not hasattr(layers, "CuDNNLSTM"):
        from tf_keras.api._v1.keras import layers
    return {"lstm": layers.CuDNNLSTM, "gru": layers.CuDNNGRU}


def equivalent_layer(kind: str, units: int, name: str):
    """The CPU layer Keras converts a CuDNN layer's weights into on load."""
    if kind == "lstm":
        return tf_keras.layers.LSTM(units, recurrent_activation="sigmoid",
                                    return_sequences=True, name=name)
    return tf_keras.layers.GRU(units, recurrent_activation="sigmoid", reset_after=True,
                               return_sequences=True, name=name)


def build(kind: str, features: int, units: int, bidirectional: bool, cudnn: bool):
    name = "bidirectional" if bidirectional else f"cudnn_{kind}"
    if cudnn:
        layer = cudnn_classes()[kind](units, return_sequences=True, name=f"cudnn_{kind}")
    else:
        layer = equivalent_layer(kind, units, f"cudnn_{kind}")
    if bidirectional:
        layer = tf_keras.layers.Bidirectional(layer, name=name)
    inputs = tf_keras.Input(shape=(None, features), name="input")
    return tf_keras.Model(inputs, layer(inputs)), name


class Case:
    """One CuDNN model saved twice, with the Keras-converted reference output."""

    def __init__(self, kind, features, units, bidirectional, folder: Path, seed: int):
        rng = np.random.default_rng(seed)
        model, self.layer = build(kind, features, units, bidirectional, cudnn=True)
        layer = model.get_layer(self.layer)
        self.raw = [rng.uniform(-0.9, 0.9, w.shape).astype(np.float32)
                    for w in layer.get_weights()]
        layer.set_weights(self.raw)
        tag = f"{kind}_{features}x{units}{'_bi' if bidirectional else ''}"
        self.full = folder / f"{tag}.h5"
        self.weights_only = folder / f"{tag}_weights.h5"
        model.save(self.full, save_format="h5", include_optimizer=False)
        model.save_weights(self.weights_only, save_format="h5")

        self.x = rng.normal(0, 1, (BATCH, SEQ_LEN, features)).astype(np.float32)
        reference, _ = build(kind, features, units, bidirectional, cudnn=False)
        reference.load_weights(self.full)
        self.expected = reference(self.x).numpy()
        self.args = (kind, features, units, bidirectional)


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> dict[tuple, Case]:
    folder = tmp_path_factory.mktemp("cudnn")
    made = {}
    for seed, (kind, (n, u), bi) in enumerate(
        [(k, s, False) for k in ("lstm", "gru") for s in SIZES]
        + [(k, s, True) for k in ("lstm", "gru") for s in BIDIRECTIONAL_SIZES]
    ):
        made[kind, n, u, bi] = Case(kind, n, u, bi, folder, seed)
    return made


ALL = ([(k, n, u, False) for k in ("lstm", "gru") for n, u in SIZES]
       + [(k, n, u, True) for k in ("lstm", "gru") for n, u in BIDIRECTIONAL_SIZES])


def ids(case) -> str:
    kind, n, u, bi = case
    return f"{kind}-{n}x{u}{'-bidirectional' if bi else ''}"


@pytest.mark.parametrize("key", ALL, ids=ids)
def test_full_model_h5_matches_keras_conversion(cases, key):
    case = cases[key]
    y = rnnparity.load(case.full)(case.x)
    assert y.shape == case.expected.shape
    assert np.abs(y - case.expected).max() <= ATOL


@pytest.mark.parametrize("key", ALL, ids=ids)
def test_weights_only_h5_matches_keras_conversion(cases, key):
    case = cases[key]
    model = rnnparity.load(case.weights_only, layer=case.layer)
    y = model(case.x)
    # Both files hold the same weights (see the next test), so the same oracle applies.
    assert np.abs(y - case.expected).max() <= ATOL
    assert "CuDNN" in str(model.describe()["layers"])


@pytest.mark.parametrize("key", [("lstm", 3, 5, False), ("gru", 3, 2, True)], ids=ids)
def test_keras_converts_the_weights_only_file_like_the_full_one(cases, key):
    case = cases[key]
    reference, _ = build(*case.args, cudnn=False)
    reference.load_weights(case.weights_only)
    assert np.abs(reference(case.x).numpy() - case.expected).max() <= 1e-6


def test_the_converted_reference_is_not_the_raw_arrays(cases):
    """Guard on the oracle: Keras really changed the weights when loading (n, u > 1)."""
    case = cases["lstm", 3, 5, False]
    reference, _ = build("lstm", 3, 5, False, cudnn=False)
    reference.load_weights(case.full)
    converted = reference.get_layer("cudnn_lstm").get_weights()
    assert np.abs(converted[0] - case.raw[0]).max() > 1e-3
    assert converted[2].shape == (4 * 5,) and case.raw[2].shape == (8 * 5,)


def naive_replica(x, kernel, recurrent, bias):
    """The issue's replica: Keras LSTM equations applied to the raw CuDNN arrays."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units))
    c = np.zeros_like(h)
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    steps = []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ kernel + h @ recurrent + bias[:4 * units]
                              + bias[4 * units:], 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        steps.append(h)
    return np.stack(steps, axis=1)


def per_step_error(a, b) -> np.ndarray:
    return np.abs(a - b).max(axis=(0, 2))


def test_motivating_case_naive_replica_drifts_rnnparity_does_not(cases):
    """1 input, 2 units: the naive replica is right at step 0 only; rnnparity everywhere."""
    case = cases["lstm", 1, 2, False]
    naive = per_step_error(naive_replica(case.x.astype(np.float64), *case.raw), case.expected)
    ours = per_step_error(rnnparity.load(case.full)(case.x), case.expected)

    assert naive[0] <= ATOL
    assert naive[1:].min() > 1e-4
    assert ours.max() <= ATOL


def test_naive_replica_is_right_for_one_unit_and_wrong_at_step_0_for_three_inputs(cases):
    """The two other symptoms of the same cause (CONVENTIONS 1.1)."""
    one = cases["lstm", 1, 1, False]
    three = cases["lstm", 3, 2, False]
    assert per_step_error(naive_replica(one.x, *one.raw), one.expected).max() <= ATOL
    assert per_step_error(naive_replica(three.x, *three.raw), three.expected)[0] > 1e-4


@pytest.fixture(scope="module")
def plain_lstm_file(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A plain LSTM with the same input and unit counts as a CuDNN case, weights only."""
    rng = np.random.default_rng(99)
    model, name = build("lstm", 3, 2, False, cudnn=False)
    layer = model.get_layer(name)
    layer.set_weights([rng.uniform(-0.9, 0.9, w.shape).astype(np.float32)
                       for w in layer.get_weights()])
    path = tmp_path_factory.mktemp("plain") / "plain_lstm_weights.h5"
    model.save_weights(path, save_format="h5")
    x = rng.normal(0, 1, (BATCH, SEQ_LEN, 3)).astype(np.float32)
    return path, x, model(x).numpy()


def test_cudnn_and_plain_lstm_files_are_told_apart(cases, plain_lstm_file):
    """Same layer name, same kernel shapes: only the bias length (8u vs 4u) differs."""
    path, x, expected = plain_lstm_file
    cudnn = cases["lstm", 3, 2, False]
    plain_model = rnnparity.load(path, layer="cudnn_lstm")
    cudnn_model = rnnparity.load(cudnn.weights_only, layer="cudnn_lstm")

    assert np.abs(plain_model(x) - expected).max() <= ATOL
    assert np.abs(cudnn_model(cudnn.x) - cudnn.expected).max() <= ATOL
    plain_kind = plain_model.describe()["layers"][-1]["kind"]
    cudnn_kind = cudnn_model.describe()["layers"][-1]["kind"]
    assert "CuDNN" not in plain_kind and "CuDNN" in cudnn_kind


@pytest.mark.parametrize("name", ["cudnn_lstm_1x2", "cudnn_lstm_3x5", "cudnn_gru_3x4"])
def test_shipped_examples_match_their_expected_output(name):
    model = rnnparity.load(rnnparity.example_path(f"{name}.h5"))
    x = np.load(rnnparity.example_path(f"{name}.input.npy"))
    with np.load(rnnparity.example_path(f"{name}.expected.npz")) as expected:
        (key,) = expected.files
        assert key in model.outputs
        assert np.abs(model(x) - expected[key]).max() <= ATOL


@pytest.mark.parametrize("name", ["cudnn_lstm_1x2", "cudnn_gru_3x4"])
def test_shipped_expected_outputs_are_what_keras_computes_now(name):
    """The shipped .expected.npz files still equal tf_keras' converted output."""
    path = rnnparity.example_path(f"{name}.h5")
    kind = "gru" if "gru" in name else "lstm"
    x = np.load(rnnparity.example_path(f"{name}.input.npy"))
    units = int(name.rsplit("x", 1)[1])
    reference, _ = build(kind, x.shape[-1], units, False, cudnn=False)
    reference.load_weights(path)
    with np.load(rnnparity.example_path(f"{name}.expected.npz")) as expected:
        assert np.abs(reference(x).numpy() - expected[expected.files[0]]).max() <= 1e-6
