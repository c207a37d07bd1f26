"""The engine against the cell equations written out independently in float64.

The frameworks are the oracles in tests/parity; here every CellSpec option is checked on
its own, including combinations no single framework offers (clip with peepholes, ...).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnparity.activations import Activation
from rnnparity.core.cells import PreparedCell
from rnnparity.core.scan import lengths_to_mask, scan
from rnnparity.engine import Direction, RecurrentStack
from rnnparity.errors import ShapeError
from rnnparity.spec import CellSpec, CellWeights

ACTS = {
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "hard_sigmoid": lambda x: np.clip(0.2 * x + 0.5, 0, 1),
    "linear": lambda x: x,
}


def reference(spec: CellSpec, w: dict, x: np.ndarray, h0, c0):
    """Unoptimised float64 recurrence, one sample at a time, canonical gate order."""
    H = spec.hidden_size
    f_act, g_act = ACTS[spec.gate_activation.name], ACTS[spec.activation.name]
    h_act = ACTS[(spec.cell_activation or spec.activation).name]
    clip = (lambda v: np.clip(v, -spec.clip, spec.clip)) if spec.clip else (lambda v: v)
    b_ih = w.get("b_ih", np.zeros(spec.num_gates * H))
    b_hh = w.get("b_hh", np.zeros(spec.num_gates * H))
    ys = []
    h, c = h0.copy(), c0.copy()
    for t in range(x.shape[0]):
        gx = w["w_ih"] @ x[t] + b_ih
        if spec.kind == "lstm":
            gh = w["w_hh"] @ h + b_hh
            a = gx + gh
            zi, zf, zg, zo = a[:H], a[H:2 * H], a[2 * H:3 * H], a[3 * H:]
            p = w.get("peephole")
            if p is not None:
                zi, zf = zi + p[0] * c, zf + p[1] * c
            zf = zf + spec.forget_bias
            i = f_act(clip(zi))
            f = 1 - i if spec.input_forget else f_act(clip(zf))
            g = g_act(clip(zg))
            c = f * c + i * g
            if spec.cell_clip:
                c = np.clip(c, -spec.cell_clip, spec.cell_clip)
            if p is not None:
                zo = zo + p[2] * c
            o = f_act(clip(zo))
            cell = clip(c) if (spec.clip and spec.clip_cell_output) else c
            h = o * h_act(cell)
            if "w_hr" in w:
                h = w["w_hr"] @ h
                if spec.proj_clip:
                    h = np.clip(h, -spec.proj_clip, spec.proj_clip)
        elif spec.kind == "gru":
            xr, xz, xn = gx[:H], gx[H:2 * H], gx[2 * H:]
            hr, hz, hn = np.split(w["w_hh"] @ h, 3)
            br, bz, bn = np.split(b_hh, 3)
            r = f_act(clip(xr + hr + br))
            z = f_act(clip(xz + hz + bz))
            if spec.reset_after:
                n = g_act(clip(xn + r * (hn + bn)))
            else:
                n = g_act(clip(xn + w["w_hh"][2 * H:] @ (r * h) + bn))
            h = (1 - z) * n + z * h
        else:
            h = g_act(clip(gx + w["w_hh"] @ h + b_hh))
        ys.append(h)
    return np.array(ys), h, c


def random_weights(spec: CellSpec, rng, bias=True, peephole=False):
    G, H, I = spec.num_gates, spec.hidden_size, spec.input_size
    out = {
        "w_ih": rng.normal(0, 0.6, (G * H, I)),
        "w_hh": rng.normal(0, 0.6, (G * H, spec.hidden_out)),
    }
    if bias:
        out["b_ih"] = rng.normal(0, 0.5, G * H)
        out["b_hh"] = rng.normal(0, 0.5, G * H)
    if peephole:
        out["peephole"] = rng.normal(0, 0.5, (3, H))
    if spec.proj_size:
        out["w_hr"] = rng.normal(0, 0.6, (spec.proj_size, H))
    return out


SPECS = {
    "lstm": dict(kind="lstm"),
    "lstm_hard_sigmoid": dict(kind="lstm", gate_activation=Activation("hard_sigmoid", 0.2, 0.5)),
    "lstm_peephole": dict(kind="lstm", peephole=True),
    "lstm_clip": dict(kind="lstm", clip=0.7, peephole=True),
    "lstm_clip_ort": dict(kind="lstm", clip=0.7, clip_cell_output=False),
    "lstm_input_forget": dict(kind="lstm", input_forget=True),
    "lstm_forget_bias_cell_clip": dict(kind="lstm", forget_bias=1.0, cell_clip=0.6),
    "lstm_proj": dict(kind="lstm", proj_size=2, proj_clip=0.4),
    "lstm_relu_cell": dict(kind="lstm", cell_activation=Activation("relu")),
    "gru_after": dict(kind="gru"),
    "gru_before": dict(kind="gru", reset_after=False),
    "gru_clip": dict(kind="gru", clip=0.5),
    "rnn_tanh": dict(kind="rnn"),
    "rnn_relu": dict(kind="rnn", activation=Activation("relu")),
    "rnn_linear_nobias": dict(kind="rnn", activation=Activation("linear"), bias=False),
}


@pytest.mark.parametrize("name", sorted(SPECS))
@settings(max_examples=8, deadline=None)
@given(batch=st.integers(1, 3), seq_len=st.integers(1, 6), input_size=st.integers(1, 5),
       hidden_size=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_step_matches_equations(name, batch, seq_len, input_size, hidden_size, seed):
    options = dict(SPECS[name])
    kind, peephole, bias = options.pop("kind"), options.pop("peephole", False), options.pop(
        "bias", True)
    spec = CellSpec(kind, input_size, hidden_size, **options)
    rng = np.random.default_rng(seed)
    w = random_weights(spec, rng, bias=bias, peephole=peephole)
    x = rng.normal(0, 1, (batch, seq_len, input_size))
    h0 = rng.normal(0, 0.5, (batch, spec.hidden_out))
    c0 = rng.normal(0, 0.5, (batch, hidden_size))

    cell = PreparedCell(spec, CellWeights(**w), np.float64)
    got = scan(cell, x, h0, c0 if kind == "lstm" else None)

    for b in range(batch):
        ys, h, c = reference(spec, w, x[b], h0[b], c0[b])
        np.testing.assert_allclose(got.y[b], ys, atol=1e-12)
        np.testing.assert_allclose(got.h[b], h, atol=1e-12)
        if kind == "lstm":
            np.testing.assert_allclose(got.c[b], c, atol=1e-12)


def test_float32_stays_close_to_float64(rng):
    spec = CellSpec("lstm", 3, 4)
    w = random_weights(spec, rng)
    x = rng.normal(0, 1, (2, 50, 3))
    y64 = scan(PreparedCell(spec, CellWeights(**w), np.float64), x).y
    y32 = scan(PreparedCell(spec, CellWeights(**w), np.float32), x.astype(np.float32)).y
    assert y32.dtype == np.float32
    assert np.abs(y32 - y64).max() < 1e-5


@pytest.mark.parametrize("masked_output", ["previous", "zero"])
@pytest.mark.parametrize("reverse", [False, True])
def test_mask_holds_state_and_sets_output(rng, masked_output, reverse):
    spec = CellSpec("gru", 2, 3)
    cell = PreparedCell(spec, CellWeights(**random_weights(spec, rng)), np.float64)
    x = rng.normal(0, 1, (3, 5, 2))
    lengths = np.array([5, 3, 1])
    got = scan(cell, x, mask=lengths_to_mask(lengths, 5), masked_output=masked_output,
               reverse=reverse)

    for b, n in enumerate(lengths):
        alone = scan(cell, x[b:b + 1, :n], reverse=reverse)
        np.testing.assert_allclose(got.y[b, :n], alone.y[0], atol=1e-12)
        np.testing.assert_allclose(got.h[b], alone.h[0], atol=1e-12)
        padded = got.y[b, n:]
        if masked_output == "zero" or not padded.size:
            assert not padded.any()
        elif not reverse:
            # A masked step repeats the previous emitted output, bit for bit.
            np.testing.assert_array_equal(padded, np.broadcast_to(got.y[b, n - 1], padded.shape))


def test_long_sequence_crosses_time_blocks(rng):
    from rnnparity.core.scan import TIME_BLOCK

    spec = CellSpec("lstm", 2, 3)
    w = random_weights(spec, rng)
    x = rng.normal(0, 1, (2, TIME_BLOCK * 2 + 7, 2))
    cell = PreparedCell(spec, CellWeights(**w), np.float64)
    for reverse in (False, True):
        got = scan(cell, x, reverse=reverse)
        seq = x[:, ::-1] if reverse else x
        ys, h, _ = reference(spec, w, seq[0], np.zeros(3), np.zeros(3))
        np.testing.assert_allclose(got.h[0], h, atol=1e-10)
        np.testing.assert_allclose(got.y[0], ys[::-1] if reverse else ys, atol=1e-10)


def test_stack_rejects_weights_that_do_not_fit(rng):
    spec = CellSpec("lstm", 3, 2)
    w = random_weights(CellSpec("lstm", 3, 1), rng)
    with pytest.raises(ShapeError, match=r"w_ih has shape \(4, 3\); expected"):
        RecurrentStack([[Direction(spec, CellWeights(**w))]])


def test_stack_rejects_transposed_weights_with_hint(rng):
    spec = CellSpec("rnn", 3, 2)
    w = random_weights(spec, rng)
    w["w_ih"] = w["w_ih"].T.copy()
    with pytest.raises(ShapeError, match="looks transposed"):
        RecurrentStack([[Direction(spec, CellWeights(**w))]])


def test_stack_rejects_wrong_feature_size(rng):
    spec = CellSpec("gru", 3, 2)
    stack = RecurrentStack([[Direction(spec, CellWeights(**random_weights(spec, rng)))]])
    with pytest.raises(ShapeError, match=r"input has shape \(2, 4, 5\); expected"):
        stack(np.zeros((2, 4, 5), np.float32))
