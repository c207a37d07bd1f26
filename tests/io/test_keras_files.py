"""Keras files saved by tf_keras (Keras 2) and Keras 3, read back by ``rnnparity.load``.

The framework that wrote each file is the oracle; bad files and bad options must raise
the specific rnnparity exception, and the CLI must turn it into one line and an exit code.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

tf = require("tensorflow", "TensorFlow is the oracle for Keras parity")
h5py = require("h5py", "h5py reads Keras HDF5 files")

import rnnparity  # noqa: E402
from rnnparity.cli.main import main  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = pytest.mark.keras

SEED = 5


def randomize(model, seed: int = SEED, scale: float = 0.6) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.uniform(-scale, scale, w.shape).astype(w.dtype)
                           for w in layer.get_weights()])


def close(got, expected) -> None:
    expected = np.asarray(expected)
    assert np.shape(got) == expected.shape
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def padded_tokens(rng, batch=5, steps=7, vocab=20):
    tokens = rng.integers(1, vocab, size=(batch, steps))
    tokens[0, 5:] = 0
    tokens[1, :3] = 0
    tokens[2, 2:4] = 0
    tokens[3] = 0
    return tokens


@pytest.fixture(scope="module")
def tfk():
    return require("tf_keras", "tf_keras (Keras 2) is the oracle")


@pytest.fixture(scope="module")
def k3():
    return require("keras", "Keras 3 is the oracle")


@pytest.fixture(scope="module")
def files(tmp_path_factory, tfk):
    """tf_keras files: full .h5 with a masked Embedding, weights-only .h5, CuDNN weights."""
    root = tmp_path_factory.mktemp("keras2")
    L = tfk.layers
    inp = tfk.Input((7,), dtype="int32", name="tokens")
    h = L.Embedding(20, 6, mask_zero=True)(inp)
    h = L.LSTM(4, return_sequences=True)(h)
    out = L.Dense(3, activation="softmax", name="probs")(h)
    full = tfk.Model(inp, out)
    randomize(full)
    full.save(root / "full.h5")

    stack = tfk.Sequential([tfk.Input((6, 3)), L.LSTM(5, return_sequences=True, name="enc"),
                            L.GRU(4, return_sequences=True, reset_after=False, name="dec"),
                            L.Dense(2, name="head")])
    randomize(stack, seed=6)
    stack.save_weights(root / "weights.h5")

    hard = tfk.Sequential([tfk.Input((6, 3)), L.LSTM(3, recurrent_activation="hard_sigmoid",
                                                     return_sequences=True, name="old")])
    randomize(hard, seed=7)
    hard.save_weights(root / "old.h5")
    with h5py.File(root / "old.h5", "r+") as f:
        f.attrs["keras_version"] = b"2.2.0"
    return {"root": root, "full": full, "stack": stack, "hard": hard}


def test_full_h5_masked_embedding(files, rng):
    tokens = padded_tokens(rng)
    model = rnnparity.load(files["root"] / "full.h5")
    assert model.inputs == ["tokens"] and model.outputs == ["probs"]
    close(model(tokens), files["full"](tokens))


def test_weights_only_chains_recurrent_layers(files, rng):
    x = rng.normal(size=(3, 6, 3)).astype("float32")
    model = rnnparity.load(files["root"] / "weights.h5")
    stack = files["stack"]
    assert [layer.name for layer in model.layers] == ["enc", "dec"]
    close(model(x), stack.layers[1](stack.layers[0](x)))
    assumed = " ".join(model.describe()["assumed"])
    assert "recurrent_activation=sigmoid" in assumed and "head" in assumed


def test_weights_only_single_layer_with_overrides(files, rng):
    x = rng.normal(size=(3, 6, 3)).astype("float32")
    model = rnnparity.load(files["root"] / "weights.h5", layer="enc",
                           return_sequences=False)
    close(model(x), files["stack"].layers[0](x)[:, -1])


def test_weights_only_version_default_hard_sigmoid(files, rng):
    x = rng.normal(size=(3, 6, 3)).astype("float32") * 3
    model = rnnparity.load(files["root"] / "old.h5")
    assert any("hard_sigmoid" in note for note in model.describe()["assumed"])
    close(model(x), files["hard"](x))
    newer = rnnparity.load(files["root"] / "old.h5", keras_version="2.3.0")
    assert np.abs(newer(x) - np.asarray(files["hard"](x))).max() > 10 * ATOL


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_cudnn_weights_match_keras_converter(tfk, tmp_path, rng, kind):
    """CuDNN weights read raw by rnnparity == Keras' own h5 conversion into LSTM / GRU."""
    if kind == "LSTM":
        from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM as Cudnn
        plain = tfk.layers.LSTM(5, return_sequences=True)
    else:
        from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU as Cudnn
        plain = tfk.layers.GRU(5, return_sequences=True, reset_after=True,
                               recurrent_activation="sigmoid")
    cudnn = tfk.Sequential([tfk.Input((4, 3)), Cudnn(5, return_sequences=True)])
    randomize(cudnn)
    cudnn.save_weights(tmp_path / "cudnn.h5")
    converted = tfk.Sequential([tfk.Input((4, 3)), plain])
    converted.load_weights(tmp_path / "cudnn.h5")
    x = rng.normal(size=(2, 4, 3)).astype("float32")
    model = rnnparity.load(tmp_path / "cudnn.h5")
    assert model.layers[0].kind == f"CuDNN{kind}"
    close(model(x), converted(x))


@pytest.fixture(scope="module")
def keras3_stack(tmp_path_factory, k3):
    root = tmp_path_factory.mktemp("keras3")
    L = k3.layers
    model = k3.Sequential([
        k3.Input((6, 3)), L.Masking(), L.LSTM(5, return_sequences=True),
        L.Bidirectional(L.GRU(3, return_sequences=True)), L.LSTM(4, return_sequences=True),
        L.TimeDistributed(L.Dense(2)),
    ])
    randomize(model)
    model.save(root / "stack.keras")
    model.save(root / "stack.h5")
    return root, model


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_keras3_stack(keras3_stack, rng, suffix):
    root, model = keras3_stack
    x = rng.normal(size=(4, 6, 3)).astype("float32")
    x[0, 4:] = 0
    x[1, :2] = 0
    x[2] = 0
    ours = rnnparity.load(root / f"stack{suffix}")
    assert ours.describe()["keras_version"].startswith("3.")
    close(ours(x), model(x))


# ------------------------------------------------------------------------- bad input


def test_corrupt_and_truncated_files(files, tmp_path):
    bad = tmp_path / "junk.h5"
    bad.write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(rnnparity.FormatError, match="junk.h5"):
        rnnparity.load(bad)
    whole = (files["root"] / "full.h5").read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(rnnparity.FormatError):
        rnnparity.load(cut)
    archive = tmp_path / "fake.keras"
    archive.write_bytes(b"PK not really")
    with pytest.raises(rnnparity.FormatError, match="zip"):
        rnnparity.load(archive)
    with pytest.raises(rnnparity.FormatError, match="does not exist"):
        rnnparity.load(tmp_path / "missing.h5")


def test_wrong_feature_size(files, rng):
    model = rnnparity.load(files["root"] / "weights.h5")
    with pytest.raises(rnnparity.ShapeError, match="expected"):
        model(rng.normal(size=(2, 6, 4)).astype("float32"))


def test_units_that_do_not_fit(files):
    with pytest.raises(rnnparity.ShapeError, match=r"has shape \(3, 20\).*units=1"):
        rnnparity.load(files["root"] / "weights.h5", layer="enc", units=1)


def test_unknown_layer_and_override(files):
    with pytest.raises(rnnparity.InputError, match="no layer named 'nope'.*enc"):
        rnnparity.load(files["root"] / "weights.h5", layer="nope")
    with pytest.raises(rnnparity.InputError, match="no layer named 'nope'.*lstm"):
        rnnparity.load(files["root"] / "full.h5", layer="nope")
    with pytest.raises(rnnparity.InputError, match="unknown override.*known"):
        rnnparity.load(files["root"] / "weights.h5", colour="blue")


def test_unsupported_layer_class(tfk, tmp_path):
    model = tfk.Sequential([tfk.Input((5, 3)), tfk.layers.Conv1D(2, 2, name="conv"),
                            tfk.layers.LSTM(2)])
    model.save(tmp_path / "conv.h5")
    with pytest.raises(rnnparity.UnsupportedFeatureError, match="Conv1D.*conv"):
        rnnparity.load(tmp_path / "conv.h5")


# ------------------------------------------------------------------------------- CLI


def test_cli_run_and_inspect(files, tmp_path, rng, capsys):
    tokens = padded_tokens(rng)
    np.save(tmp_path / "x.npy", tokens)
    code = main(["run", str(files["root"] / "full.h5"), "--input", str(tmp_path / "x.npy"),
                 "--output", str(tmp_path / "y.npz")])
    assert code == 0
    with np.load(tmp_path / "y.npz") as saved:
        close(saved["probs"], files["full"](tokens))
    assert main(["inspect", str(files["root"] / "weights.h5")]) == 0
    out = capsys.readouterr().out
    assert "assumed:" in out and "keras_version: 2." in out


def test_cli_errors_are_one_line(files, tmp_path, rng, capsys):
    np.save(tmp_path / "x.npy", rng.normal(size=(2, 6, 3)).astype("float32"))
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x00" * 64)
    cases = [
        (["run", str(junk), "--input", str(tmp_path / "x.npy")], 5),
        (["run", str(files["root"] / "weights.h5"), "--layer", "enc", "--override",
          "units=1", "--input", str(tmp_path / "x.npy")], 5),
        (["inspect", str(files["root"] / "weights.h5"), "--layer", "nope"], 5),
        (["inspect", str(files["root"] / "weights.h5"), "--override", "colour=1"], 5),
    ]
    for argv, expected in cases:
        capsys.readouterr()
        assert main(argv) == expected, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("rnnparity: error: ") and "\n" not in err, err
