"""Keras layers in rnnparity vs the real Keras 2 (tf_keras) and Keras 3, on CPU.

Layers are built live with random weights (non-zero biases), run eagerly by Keras, and
converted with ``rnnparity.from_keras``; outputs and states must agree to ``ATOL``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

tf = require("tensorflow", "TensorFlow is the oracle for Keras parity")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import rnnparity  # noqa: E402
from rnnparity.dialects import keras as kd  # noqa: E402
from rnnparity.dialects import keras_layers  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = pytest.mark.keras

BACKENDS = ["tf_keras", "keras"]


@pytest.fixture(scope="module", params=BACKENDS)
def K(request):
    return require(request.param, f"{request.param} is the oracle for Keras parity")


def randomize(layer, rng: np.random.Generator, scale: float = 0.6) -> None:
    """Random weights everywhere, biases included (never zero)."""
    layer.set_weights([rng.uniform(-scale, scale, w.shape).astype(w.dtype)
                       for w in layer.get_weights()])


def as_list(value) -> list[np.ndarray]:
    if isinstance(value, (list, tuple)):
        return [np.asarray(v) for v in value]
    return [np.asarray(value)]


def ours_list(model, result) -> list[np.ndarray]:
    if isinstance(result, dict):
        return [result[name] for name in model.outputs]
    return [result]


def assert_parity(expected: list[np.ndarray], got: list[np.ndarray]) -> None:
    assert len(expected) == len(got)
    for e, g in zip(expected, got):
        assert e.shape == g.shape
        np.testing.assert_allclose(g, e, atol=ATOL, rtol=0)


def padded(rng: np.random.Generator, batch: int, steps: int, features: int) -> np.ndarray:
    """Rows padded with zeros on the right, the left, in the middle, entirely, and none."""
    x = rng.normal(size=(batch, steps, features)).astype("float32")
    x[0, steps - 2:] = 0
    x[1, :2] = 0
    x[2, 1:3] = 0
    x[3] = 0
    return x


def layer_parity(K, layer, x: np.ndarray) -> None:
    layer(x)  # build
    randomize(layer, np.random.default_rng(7))
    expected = as_list(layer(x))
    model = rnnparity.from_keras(layer)
    assert_parity(expected, ours_list(model, model(x)))


LAYER_CASES = [
    ("LSTM", {}),
    ("LSTM", {"return_sequences": True, "return_state": True}),
    ("LSTM", {"return_sequences": True, "go_backwards": True}),
    ("LSTM", {"return_state": True, "go_backwards": True}),
    ("LSTM", {"recurrent_activation": "hard_sigmoid", "return_sequences": True}),
    ("LSTM", {"activation": "relu", "recurrent_activation": "tanh", "use_bias": False}),
    ("GRU", {"reset_after": True, "return_sequences": True, "return_state": True}),
    ("GRU", {"reset_after": False, "return_sequences": True, "return_state": True}),
    ("GRU", {"reset_after": False, "recurrent_activation": "hard_sigmoid"}),
    ("GRU", {"reset_after": True, "activation": "softsign", "go_backwards": True,
             "return_sequences": True}),
    ("SimpleRNN", {"return_sequences": True, "return_state": True}),
    ("SimpleRNN", {"activation": "relu", "go_backwards": True}),
    ("SimpleRNN", {"activation": "linear", "return_sequences": True}),
]


@pytest.mark.parametrize("cls,options", LAYER_CASES,
                         ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for c, o in LAYER_CASES])
def test_layer_options(K, cls, options, rng):
    x = rng.normal(size=(3, 5, 4)).astype("float32") * 2
    layer_parity(K, getattr(K.layers, cls)(3, **options), x)


def test_hard_sigmoid_is_version_specific(K, rng):
    layer = K.layers.LSTM(3, recurrent_activation="hard_sigmoid", return_sequences=True)
    x = rng.normal(size=(2, 4, 5)).astype("float32") * 3
    layer(x)
    model = rnnparity.from_keras(layer)
    spec = model.layers[0].spec
    major = 3 if K.__name__ == "keras" else 2
    assert spec.gate_activation.alpha == pytest.approx(0.2 if major == 2 else 1 / 6)
    layer_parity(K, layer, x)


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["LSTM", "GRU-after", "GRU-before", "SimpleRNN"]),
       batch=st.integers(2, 4), steps=st.integers(3, 6), features=st.integers(1, 5),
       units=st.integers(1, 5), sequences=st.booleans(), backend=st.sampled_from(BACKENDS))
def test_shapes(kind, batch, steps, features, units, sequences, backend):
    K = require(backend, f"{backend} is the oracle for Keras parity")
    if features == units:
        units += 1
    x = np.random.default_rng(batch * 31 + steps).normal(
        size=(batch, steps, features)).astype("float32")
    if kind.startswith("GRU"):
        layer = K.layers.GRU(units, reset_after=kind == "GRU-after",
                             return_sequences=sequences, return_state=True)
    else:
        layer = getattr(K.layers, kind)(units, return_sequences=sequences, return_state=True)
    layer_parity(K, layer, x)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("sequences", [True, False])
def test_bidirectional(K, merge_mode, sequences, rng):
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    inner = K.layers.LSTM(3, return_sequences=sequences, return_state=True)
    layer_parity(K, K.layers.Bidirectional(inner, merge_mode=merge_mode), x)


def test_bidirectional_gru(K, rng):
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    inner = K.layers.GRU(2, return_sequences=True, reset_after=False)
    layer_parity(K, K.layers.Bidirectional(inner, merge_mode="concat"), x)


def masked_model(K, body, steps=6, features=3, state=False):
    inp = K.Input((steps, features))
    out = body(K.layers.Masking()(inp))
    return K.Model(inp, out)


def model_parity(K, model, x, rng_seed=11) -> None:
    for layer in model.layers:
        randomize(layer, np.random.default_rng(rng_seed))
    feeds = x if not isinstance(x, dict) else list(x.values())
    expected = as_list(model(feeds))
    ours = rnnparity.from_keras(model)
    assert_parity(expected, ours_list(ours, ours(x)))


MASK_CASES = [
    ("LSTM", {"return_sequences": True, "return_state": True}),
    ("LSTM", {"return_sequences": False, "return_state": True}),
    ("LSTM", {"return_sequences": True, "go_backwards": True}),
    ("GRU", {"return_sequences": True, "reset_after": False}),
    ("GRU", {"return_sequences": False, "return_state": True}),
    ("SimpleRNN", {"return_sequences": True, "return_state": True}),
]


@pytest.mark.parametrize("cls,options", MASK_CASES,
                         ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in o.items())}"
                              for c, o in MASK_CASES])
def test_masking(K, cls, options, rng):
    x = padded(rng, 5, 6, 3)
    model_parity(K, masked_model(K, getattr(K.layers, cls)(4, **options)), x)


@pytest.mark.parametrize("merge_mode,sequences", [("concat", True), (None, True),
                                                   ("ave", False)])
def test_masked_bidirectional(K, merge_mode, sequences, rng):
    x = padded(rng, 5, 6, 3)
    inner = K.layers.LSTM(2, return_sequences=sequences, return_state=True)
    model_parity(K, masked_model(K, K.layers.Bidirectional(inner, merge_mode=merge_mode)), x)


def test_embedding_mask_zero(K, rng):
    tokens = rng.integers(1, 12, size=(5, 7))
    tokens[0, 5:] = 0
    tokens[1, :3] = 0
    tokens[2, 2:4] = 0
    tokens[3] = 0
    inp = K.Input((7,), dtype="int32")
    h = K.layers.Embedding(12, 5, mask_zero=True)(inp)
    h = K.layers.LSTM(4, return_sequences=True)(h)
    h = K.layers.Bidirectional(K.layers.GRU(3, return_sequences=True))(h)
    h = K.layers.TimeDistributed(K.layers.Dense(2, activation="softmax"))(h)
    model_parity(K, K.Model(inp, h), tokens)


def test_initial_state(K, rng):
    x = padded(rng, 5, 6, 3)
    x[1, :3] = 0  # leading masked steps with a non-zero initial state emit 0 on TF
    inputs = [K.Input((6, 3), name="x"), K.Input((4,), name="h0"), K.Input((4,), name="c0")]
    masked = K.layers.Masking()(inputs[0])
    y = K.layers.LSTM(4, return_sequences=True, return_state=True)(
        masked, initial_state=inputs[1:])
    model = K.Model(inputs, y)
    feeds = {"x": x, "h0": rng.normal(size=(5, 4)).astype("float32"),
             "c0": rng.normal(size=(5, 4)).astype("float32")}
    randomize(model.layers[-1], rng)
    expected = as_list(model(list(feeds.values())))
    ours = rnnparity.from_keras(model)
    assert ours.inputs == ["x"] and ours.optional_inputs == ["h0", "c0"]
    assert_parity(expected, ours_list(ours, ours(feeds)))
    streamed = ours.stream(batch_size=5).feed(feeds, chunk_size=2)
    assert_parity(expected, ours_list(ours, streamed))


def test_bidirectional_initial_state(K, rng):
    x = rng.normal(size=(3, 5, 2)).astype("float32")
    names = ["x", "h_fwd", "h_bwd"]
    inputs = [K.Input((5, 2), name="x")] + [K.Input((3,), name=n) for n in names[1:]]
    y = K.layers.Bidirectional(K.layers.GRU(3, return_sequences=True, return_state=True))(
        inputs[0], initial_state=inputs[1:])
    model = K.Model(inputs, y)
    feeds = [x] + [rng.normal(size=(3, 3)).astype("float32") for _ in range(2)]
    randomize(model.layers[-1], rng)
    expected = as_list(model(feeds))
    ours = rnnparity.from_keras(model)
    assert_parity(expected, ours_list(ours, ours(dict(zip(names, feeds)))))


def test_stateful(K, rng):
    batch, steps, features = 3, 4, 2
    inp = K.Input(batch_shape=(batch, steps, features))
    out = K.layers.GRU(3, stateful=True, return_sequences=True)(inp)
    model = K.Model(inp, out)
    first, second = (rng.normal(size=(batch, steps, features)).astype("float32")
                     for _ in range(2))
    model(first)
    randomize(model.layers[-1], rng)
    model.layers[-1].reset_states()
    ours = rnnparity.from_keras(model)
    for x in (first, second):
        np.testing.assert_allclose(ours(x), np.asarray(model(x)), atol=ATOL, rtol=0)
    model.layers[-1].reset_states()
    ours.reset_states()
    np.testing.assert_allclose(ours(second), np.asarray(model(second)), atol=ATOL, rtol=0)


def test_time_major_tf_keras(rng):
    K = require("tf_keras", "tf_keras is the oracle for time_major")
    x = rng.normal(size=(5, 3, 4)).astype("float32")  # (seq_len, batch, features)
    layer = K.layers.LSTM(2, time_major=True, return_sequences=True, return_state=True)
    layer_parity(K, layer, x)
    x[3:, 0] = 0
    x[:2, 1] = 0
    inp = K.Input((3, 4))
    out = K.layers.GRU(2, time_major=True, return_sequences=True)(K.layers.Masking()(inp))
    model_parity(K, K.Model(inp, out), x)


def test_streaming_matches_whole_sequence(K, rng):
    x = padded(rng, 5, 7, 3)
    inp = K.Input((None, 3))
    model = K.Model(inp, K.layers.LSTM(4, return_sequences=True)(K.layers.Masking()(inp)))
    randomize(model.layers[-1], rng)
    ours = rnnparity.from_keras(model)
    stream = ours.stream(batch_size=5)
    pieces = [stream.chunk(x[:, :3]), stream.chunk(x[:, 3:4]), stream.chunk(x[:, 4:])]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), np.asarray(model(x)),
                               atol=ATOL, rtol=0)


def test_bidirectional_refuses_streaming(K, rng):
    layer = K.layers.Bidirectional(K.layers.LSTM(2))
    layer(rng.normal(size=(1, 3, 2)).astype("float32"))
    with pytest.raises(rnnparity.UnsupportedFeatureError, match="cannot stream"):
        rnnparity.from_keras(layer).stream()


CONFIG_CLASSES = ["LSTM", "GRU", "SimpleRNN", "Bidirectional", "Embedding", "Dense",
                  "Masking", "Dropout", "TimeDistributed", "Concatenate", "Add", "Activation"]


def test_config_keys_are_handled_or_ignored(K):
    """Every key of a default config is read or provably irrelevant to inference."""
    L = K.layers
    made = {"LSTM": L.LSTM(2), "GRU": L.GRU(2), "SimpleRNN": L.SimpleRNN(2),
            "Bidirectional": L.Bidirectional(L.LSTM(2)), "Embedding": L.Embedding(3, 2),
            "Dense": L.Dense(2), "Masking": L.Masking(), "Dropout": L.Dropout(0.5),
            "TimeDistributed": L.TimeDistributed(L.Dense(2)), "Concatenate": L.Concatenate(),
            "Add": L.Add(), "Activation": L.Activation("tanh")}
    handled = {**kd.SUPPORTED_ATTRIBUTES, **keras_layers.SUPPORTED_ATTRIBUTES}
    for name, layer in made.items():
        keys = set(layer.get_config())
        unknown = keys - handled[name] - kd.IGNORED_ATTRIBUTES
        assert not unknown, f"{K.__name__} {name}: {unknown}"


def test_unknown_config_key_is_refused(K):
    layer = K.layers.LSTM(2)
    layer(np.zeros((1, 3, 2), np.float32))
    config = dict(layer.get_config(), novel_option=1)
    with pytest.raises(rnnparity.UnsupportedFeatureError, match="novel_option"):
        kd.make_layer("LSTM", config, layer.get_weights(), kd.BuildContext("3"))


def test_unsupported_layer_class_is_named(K, rng):
    inp = K.Input((4, 3))
    out = K.layers.Conv1D(2, 2, name="conv")(K.layers.LSTM(3, return_sequences=True)(inp))
    with pytest.raises(rnnparity.UnsupportedFeatureError, match="Conv1D.*conv"):
        rnnparity.from_keras(K.Model(inp, out))


@pytest.fixture(scope="module")
def masked_pair(K):
    """A bare LSTM and a Bidirectional GRU behind one Masking layer, random weights."""
    inp = K.Input((None, 3))
    masked = K.layers.Masking()(inp)
    bare = K.layers.LSTM(3, return_sequences=True, return_state=True)(masked)
    both = K.layers.Bidirectional(K.layers.GRU(2, return_sequences=True,
                                               return_state=True))(masked)
    model = K.Model(inp, list(bare) + list(both))
    for layer in model.layers:
        randomize(layer, np.random.default_rng(3))
    return model, rnnparity.from_keras(model)


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_drawn_masks(masked_pair, data):
    """Lengths 0..T with right padding, plus arbitrary holes, in plain and bidirectional."""
    model, ours = masked_pair
    steps = data.draw(st.integers(3, 6))
    lengths = data.draw(st.lists(st.integers(0, steps), min_size=2, max_size=4))
    x = np.random.default_rng(sum(lengths)).normal(
        size=(len(lengths), steps, 3)).astype("float32")
    for row, length in enumerate(lengths):
        x[row, length:] = 0
    holes = data.draw(st.lists(st.tuples(st.integers(0, len(lengths) - 1),
                                         st.integers(0, steps - 1)), max_size=3))
    for row, step in holes:
        x[row, step] = 0
    assert_parity(as_list(model(x)), ours_list(ours, ours(x)))


def test_neighbour_layers(K, rng):
    """Concatenate, Add, Activation, Dropout, Reshape and Flatten around recurrent layers."""
    L = K.layers
    inp = K.Input((5, 3))
    a = L.LSTM(4, return_sequences=True)(inp)
    b = L.GRU(4, return_sequences=True)(L.Dropout(0.3)(inp))
    merged = L.Concatenate()([L.Add()([a, b]), L.Activation("sigmoid")(a)])
    flat = L.Flatten()(L.Reshape((5, 4, 2))(merged))
    out = L.Dense(3, activation="relu")(flat)
    model_parity(K, K.Model(inp, out), rng.normal(size=(3, 5, 3)).astype("float32"))
