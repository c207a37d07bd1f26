"""Real pretrained Keras models that no one here made, against TensorFlow loading them.

- textgenrnn 2.0.0 ``textgenrnn_weights.hdf5``: weights only, saved by Keras 2.1.5; two
  CuDNNLSTM layers (rnn_1, rnn_2) after a character embedding. Real text is encoded the
  way textgenrnn encodes it, embedded, and run through rnn_1 and rnn_2.
- chars2vec 0.1.7 ``trained_models/eng_50/weights.h5``: weights only, Keras 2.2.0; two LSTM
  layers whose recurrent activation is the Keras 2.2.0 default, hard_sigmoid (not stored).
  Real words are one-hot encoded the way chars2vec encodes them.

The oracle is tf_keras building the same layers under the same names and calling
``load_weights(path, by_name=True)``, which converts the CuDNN weights itself. Neither
package is imported or executed; their files are fetched by ``registry_model``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require

tf = require("tensorflow", "TensorFlow is the oracle for the pretrained Keras models")
tf_keras = require("tf_keras", "tf_keras (Keras 2) reads Keras 2 weight files by name")
h5py = require("h5py", "h5py reads the pretrained weight files")

import rnnparity  # noqa: E402
from rnnparity.cli.main import main  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = pytest.mark.models

# textgenrnn 2.0.0, textgenrnn/textgenrnn.py: config max_length=40, META_TOKEN='<s>';
# textgenrnn/utils.py (textgenrnn_generate, textgenrnn_encode_sequence): the tokens are
# [META_TOKEN] + list(prefix), the last max_length are kept, mapped with vocab.get(c, 0)
# and left-padded with 0 (keras pad_sequences defaults).
TEXTGENRNN_MAX_LENGTH = 40
TEXTGENRNN_META_TOKEN = "<s>"
TEXTS = [
    "Recurrent networks trained on a GPU often run elsewhere later.",
    "hello world",
    "Ünïcödé and ascii: mixed €",
]

# chars2vec 0.1.7: the character -> index map is stored in trained_models/eng_50/model.pkl
# (a pickle of [dim, char_to_ix]); it was read once with pickletools.genops, which lists
# the opcodes without executing anything, and written out here: index = position.
CHARS2VEC_CHARS = "!\"#$%&'()*+,-./0123456789:;<=>?@_abcdefghijklmnopqrstuvwxyz"
# chars2vec/model.py (vectorize_words): words are lowercased, each character becomes a
# one-hot vector (all zeros if unknown), and the sequences are left-padded with zero
# vectors to the longest word (keras pad_sequences defaults).
WORDS = ["Parity", "recurrent", "netwrok", "LSTM!", "cafe", "x"]


def textgenrnn_encode(text: str, vocab: dict[str, int]) -> list[int]:
    tokens = ([TEXTGENRNN_META_TOKEN] + list(text))[-TEXTGENRNN_MAX_LENGTH:]
    ids = [vocab.get(token, 0) for token in tokens]
    return [0] * (TEXTGENRNN_MAX_LENGTH - len(ids)) + ids


def chars2vec_encode(words: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(CHARS2VEC_CHARS)}
    longest = max(len(w) for w in words)
    x = np.zeros((len(words), longest, len(CHARS2VEC_CHARS)), np.float32)
    for b, word in enumerate(words):
        word = word.lower()
        start = longest - len(word)
        for t, char in enumerate(word):
            if char in index:
                x[b, start + t, index[char]] = 1.0
    return x


def weight_names(path) -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    """Layer -> [(weight name, shape)] in the file's declared order."""
    found = {}
    with h5py.File(path, "r") as f:
        for layer in f.attrs["layer_names"]:
            layer = layer.decode() if isinstance(layer, bytes) else layer
            names = [n.decode() if isinstance(n, bytes) else n
                     for n in f[layer].attrs["weight_names"]]
            found[layer] = [(n, f[layer][n].shape) for n in names]
    return found


# ------------------------------------------------------------------------ textgenrnn


@pytest.fixture(scope="module")
def textgenrnn(registry_model):
    """Path, token ids (batch, 40), embedded input and TensorFlow's rnn_1 / rnn_2 outputs."""
    path = registry_model("textgenrnn")
    with open(registry_model("textgenrnn_vocab"), encoding="utf-8") as handle:
        vocab = json.load(handle)
    ids = np.array([textgenrnn_encode(t, vocab) for t in TEXTS], np.int32)
    with h5py.File(path, "r") as f:
        classes = f["embedding"]["embedding"]["embeddings:0"].shape[0]

    inputs = tf_keras.Input(shape=(None,), dtype="int32", name="input")
    embedded = tf_keras.layers.Embedding(classes, 100, name="embedding")(inputs)
    rnn_1 = tf_keras.layers.LSTM(128, recurrent_activation="sigmoid",
                                 return_sequences=True, name="rnn_1")(embedded)
    rnn_2 = tf_keras.layers.LSTM(128, recurrent_activation="sigmoid",
                                 return_sequences=True, name="rnn_2")(rnn_1)
    model = tf_keras.Model(inputs, [embedded, rnn_1, rnn_2])
    model.load_weights(path, by_name=True)
    e, y1, y2 = (a.numpy() for a in model(ids))
    return {"path": path, "ids": ids, "embedded": e, "rnn_1": y1, "rnn_2": y2,
            "vocab": vocab}


def test_textgenrnn_file_is_what_the_test_assumes(textgenrnn):
    path = textgenrnn["path"]
    with h5py.File(path, "r") as f:
        assert f.attrs["keras_version"] in (b"2.1.5", "2.1.5")
    layers = weight_names(path)
    assert list(layers) == ["input", "embedding", "rnn_1", "rnn_2", "rnn_concat",
                            "attention", "output"]
    assert layers["rnn_1"] == [("rnn_1/kernel:0", (100, 512)),
                               ("rnn_1/recurrent_kernel:0", (128, 512)),
                               ("rnn_1/bias:0", (1024,))]  # 8 * units: a CuDNNLSTM
    assert layers["rnn_2"][0] == ("rnn_2/kernel:0", (128, 512))
    # Real text: every sample has real characters, one is left-padded.
    ids = textgenrnn["ids"]
    assert (ids[:, -1] > 0).all() and (ids[1] == 0).any()


def test_textgenrnn_rnn_layers_match_tensorflow(textgenrnn):
    path, embedded = textgenrnn["path"], textgenrnn["embedded"]
    with h5py.File(path, "r") as f:
        table = f["embedding"]["embedding"]["embeddings:0"][()]
    np.testing.assert_array_equal(table[textgenrnn["ids"]], embedded)
    ours = rnnparity.load(path, layer="embedding")(textgenrnn["ids"])
    np.testing.assert_array_equal(ours, embedded)

    rnn_1 = rnnparity.load(path, layer="rnn_1")
    rnn_2 = rnnparity.load(path, layer="rnn_2")
    y1 = rnn_1(embedded)
    y2 = rnn_2(y1)  # rnn_2 takes rnn_1's output, as in textgenrnn's model

    assert y1.shape == textgenrnn["rnn_1"].shape == (len(TEXTS), 40, 128)
    assert np.abs(y1 - textgenrnn["rnn_1"]).max() <= ATOL
    assert np.abs(y2 - textgenrnn["rnn_2"]).max() <= ATOL
    assert np.abs(textgenrnn["rnn_2"]).max() > 0.1  # the comparison is not of zeros


def test_textgenrnn_whole_file_chains_rnn_1_into_rnn_2(textgenrnn):
    model = rnnparity.load(textgenrnn["path"])
    y = model(textgenrnn["embedded"])
    assert np.abs(y - textgenrnn["rnn_2"]).max() <= ATOL


def test_textgenrnn_cli_run_matches_tensorflow(textgenrnn, tmp_path, capsys):
    x_path, y_path = tmp_path / "x.npy", tmp_path / "y.npz"
    np.save(x_path, textgenrnn["embedded"])

    code = main(["run", str(textgenrnn["path"]), "--layer", "rnn_1", "--input", str(x_path),
                 "--output", str(y_path)])

    assert code == 0, capsys.readouterr().err
    with np.load(y_path) as saved:
        assert saved.files == ["rnn_1"]
        assert np.abs(saved["rnn_1"] - textgenrnn["rnn_1"]).max() <= ATOL


def test_textgenrnn_inspect_names_the_cudnn_layers(textgenrnn, capsys):
    assert main(["inspect", str(textgenrnn["path"])]) == 0
    out = capsys.readouterr().out
    assert "rnn_1 [CuDNNLSTM]" in out and "rnn_2 [CuDNNLSTM]" in out
    assert "2.1.5" in out


# ------------------------------------------------------------------------- chars2vec


def chars2vec_oracle(path, x: np.ndarray, recurrent_activation: str) -> tuple[np.ndarray, ...]:
    inputs = tf_keras.Input(shape=(None, len(CHARS2VEC_CHARS)))
    seq = tf_keras.layers.LSTM(50, recurrent_activation=recurrent_activation,
                               return_sequences=True, name="lstm_1")(inputs)
    last = tf_keras.layers.LSTM(50, recurrent_activation=recurrent_activation,
                                return_sequences=True, name="lstm_2")(seq)
    model = tf_keras.Model(inputs, [seq, last])
    model.load_weights(path, by_name=True)
    return tuple(a.numpy() for a in model(x))


@pytest.fixture(scope="module")
def chars2vec(registry_model):
    path = registry_model("chars2vec_eng_50")
    x = chars2vec_encode(WORDS)
    y1, y2 = chars2vec_oracle(path, x, "hard_sigmoid")
    return {"path": path, "x": x, "lstm_1": y1, "lstm_2": y2}


def test_chars2vec_file_is_what_the_test_assumes(chars2vec):
    with h5py.File(chars2vec["path"], "r") as f:
        assert f.attrs["keras_version"] in (b"2.2.0", "2.2.0")
    layers = weight_names(chars2vec["path"])
    assert layers["lstm_1"] == [("lstm_1/kernel:0", (59, 200)),
                                ("lstm_1/recurrent_kernel:0", (50, 200)),
                                ("lstm_1/bias:0", (200,))]
    assert [shape for _, shape in layers["lstm_2"]] == [(50, 200), (50, 200), (200,)]
    assert len(CHARS2VEC_CHARS) == 59 == layers["lstm_1"][0][1][0]


def test_tf_keras_hard_sigmoid_is_the_keras2_one():
    z = np.linspace(-4, 4, 33).astype(np.float32)
    ours = np.clip(0.2 * z + 0.5, 0, 1)
    assert np.abs(tf_keras.activations.hard_sigmoid(tf.constant(z)).numpy() - ours).max() <= 1e-7


def test_chars2vec_lstms_match_tensorflow(chars2vec):
    model = rnnparity.load(chars2vec["path"])
    lstm_1 = rnnparity.load(chars2vec["path"], layer="lstm_1")

    assert np.abs(lstm_1(chars2vec["x"]) - chars2vec["lstm_1"]).max() <= ATOL
    assert np.abs(model(chars2vec["x"]) - chars2vec["lstm_2"]).max() <= ATOL


def test_chars2vec_word_vectors_match_tensorflow(chars2vec):
    """chars2vec's embedding is lstm_2's last output (return_sequences=False)."""
    model = rnnparity.load(chars2vec["path"], layer="lstm_2", return_sequences=False)
    vectors = model(chars2vec["lstm_1"])
    assert vectors.shape == (len(WORDS), 50)
    assert np.abs(vectors - chars2vec["lstm_2"][:, -1]).max() <= ATOL


def test_chars2vec_hard_sigmoid_assumption_matters(chars2vec):
    """With sigmoid (a wrong guess) TensorFlow itself gives clearly different vectors."""
    _, with_sigmoid = chars2vec_oracle(chars2vec["path"], chars2vec["x"], "sigmoid")
    assert np.abs(with_sigmoid - chars2vec["lstm_2"]).max() > 1e-2
    overridden = rnnparity.load(chars2vec["path"], recurrent_activation="sigmoid")
    assert np.abs(overridden(chars2vec["x"]) - with_sigmoid).max() <= ATOL


def test_chars2vec_inspect_reports_the_hard_sigmoid_assumption(chars2vec, capsys):
    assert main(["inspect", str(chars2vec["path"])]) == 0
    out = capsys.readouterr().out
    assumed = [line for line in out.splitlines() if line.startswith("assumed:")]
    assert any("lstm_1" in line and "hard_sigmoid" in line and "2.2.0" in line
               for line in assumed)
    assert any("lstm_2" in line and "hard_sigmoid" in line for line in assumed)
