"""Trained PyTorch recurrent weights from the package registry, run by rnnparity and torch.

- silero-vad 6.2.3 ``silero_vad_16k.safetensors``: the trained ``lstm_cell`` (LSTMCell,
  128 -> 128) of the voice activity detector.
- g2p-en 2.1.0 ``checkpoint20.npz``: the trained GRU encoder (256 -> 256) stored in
  PyTorch layout under g2p-en's own names (``enc_w_ih``, ...), fed the embeddings of real
  words' graphemes.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

torch = require("torch", "PyTorch is the oracle for the trained torch weights")

import rnnparity  # noqa: E402
from rnnparity.tolerances import ATOL, ATOL_FLOAT64  # noqa: E402

pytestmark = pytest.mark.models

# g2p-en's grapheme vocabulary, as g2p_en/g2p.py builds it in G2p.__init__ (g2p-en 2.1.0):
# ["<pad>", "<unk>", "</s>"] + the 26 lowercase letters; G2p.encode appends "</s>" to a word.
GRAPHEMES = ["<pad>", "<unk>", "</s>"] + list("abcdefghijklmnopqrstuvwxyz")
WORDS = ["hello", "parity", "recurrent", "a"]
G2P_KEYS = {"weight_ih_l0": "enc_w_ih", "weight_hh_l0": "enc_w_hh",
            "bias_ih_l0": "enc_b_ih", "bias_hh_l0": "enc_b_hh"}


def vad_features(batch: int = 2, steps: int = 64, seed: int = 16000) -> np.ndarray:
    """A (batch, steps, 128) feature sequence of the width the cell reads.

    Standard normal features: with them the trained cell's state stays within a few units.
    Non-negative inputs (like the ReLU conv features silero feeds it) make this cell
    integrate: its c grows to ~30 over 64 steps, where a float32 ULP is ~4e-6 and the
    1e-5 bound is a few ULPs for torch itself (checked: torch float32 vs float64 differs by
    ~6e-6 there), so that regime is checked in float64 below.
    """
    return np.random.default_rng(seed).standard_normal((batch, steps, 128)).astype(np.float32)


def rectified_features(batch: int = 2, steps: int = 64) -> np.ndarray:
    """Non-negative features: rectified sines, a frequency per channel, a phase per row."""
    t = np.arange(steps)[None, :, None]
    channel = np.arange(128)[None, None, :]
    phase = np.arange(batch)[:, None, None] * 0.7
    return np.maximum(np.sin(2 * np.pi * (channel + 1) * t / 97.0 + phase), 0.0)


def silero_cell(tensors, dtype):
    cell = torch.nn.LSTMCell(128, 128, dtype=dtype)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(torch.from_numpy(tensors[f"lstm_cell.{name}"]))
    return cell


def step_torch(cell, x):
    """The cell stepped over x (batch, steps, 128) with its state: every h, final (h, c)."""
    state = None
    hs = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            state = cell(torch.from_numpy(x[:, t]), state)
            hs.append(state[0].numpy())
    return np.stack(hs, axis=1), state[1].numpy()


def test_silero_vad_lstm_cell_over_a_sequence(registry_model):
    from safetensors.numpy import load_file

    path = registry_model("silero_vad_safetensors")
    tensors = load_file(str(path))
    model = rnnparity.load(path, layer="lstm_cell")
    assert model.meta["module_kind"] == "LSTMCell"

    x = vad_features()
    hs, c = step_torch(silero_cell(tensors, torch.float32), x)
    out = model(x)
    assert float(np.abs(out["h"] - hs).max()) <= ATOL
    assert float(np.abs(out["c"] - c).max()) <= ATOL
    assert float(np.abs(hs).max()) > 0.05  # the input drives the cell

    # one frame at a time, as the detector runs on a stream
    stream = model.stream(batch_size=x.shape[0])
    for t in range(x.shape[1]):
        step = stream.step(x[:, t])
    assert float(np.abs(step["h"] - hs[:, -1]).max()) <= ATOL
    assert float(np.abs(step["c"] - c).max()) <= ATOL


def test_silero_vad_lstm_cell_long_memory_in_float64(registry_model):
    from safetensors.numpy import load_file

    path = registry_model("silero_vad_safetensors")
    tensors = {k: v.astype(np.float64) for k, v in load_file(str(path)).items()}
    model = rnnparity.load(path, layer="lstm_cell", dtype="float64")
    x = rectified_features()
    hs, c = step_torch(silero_cell(tensors, torch.float64), x)
    out = model(x)
    assert float(np.abs(c).max()) > 10  # the regime where float32 rounding reaches ~1e-5
    assert float(np.abs(out["h"] - hs).max()) <= ATOL_FLOAT64
    assert float(np.abs(out["c"] - c).max()) <= ATOL_FLOAT64


def test_g2p_en_gru_encoder_on_real_words(registry_model):
    path = registry_model("g2p_en")
    with np.load(path) as data:
        arrays = {key: data[key] for key in ("enc_emb", *G2P_KEYS.values())}
    model = rnnparity.load(path, keys=G2P_KEYS)
    assert model.meta["module_kind"] == "GRU"

    ids = [[GRAPHEMES.index(ch) for ch in word] + [GRAPHEMES.index("</s>")] for word in WORDS]
    lengths = np.array([len(seq) for seq in ids])
    padded = np.zeros((len(ids), lengths.max()), np.int64)  # 0 is "<pad>"
    for row, seq in enumerate(ids):
        padded[row, : len(seq)] = seq
    x = arrays["enc_emb"][padded]  # (words, seq_len, 256)

    gru = torch.nn.GRU(256, 256, batch_first=True)
    with torch.no_grad():
        for name, stored in G2P_KEYS.items():
            getattr(gru, name).copy_(torch.from_numpy(arrays[stored]))
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            torch.from_numpy(x), torch.from_numpy(lengths), batch_first=True,
            enforce_sorted=False)
        y, h_n = gru(packed)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True,
                                                      total_length=x.shape[1])

    out = model(x, lengths=lengths)
    assert float(np.abs(out["output"] - y.numpy()).max()) <= ATOL
    assert float(np.abs(out["h_n"] - h_n.numpy()).max()) <= ATOL

    # each word alone, as g2p-en encodes it: the last step's state is the batch's h_n row
    for row, seq in enumerate(ids):
        alone = model(arrays["enc_emb"][np.array(seq)][None])
        assert float(np.abs(alone["h_n"][0, 0] - h_n.numpy()[0, row]).max()) <= ATOL
