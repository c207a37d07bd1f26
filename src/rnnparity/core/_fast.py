"""The optional compiled fast path: numba kernels for the element-wise part of a step.

Imported only by :mod:`rnnparity.core.cells` at the first step that uses it, so
``import rnnparity`` never imports numba. The kernels compute exactly the operations of
the NumPy path in the same order and float32 rounding (no fused multiply-add, no
reassociation); the one difference is tanh, which pip's llvmlite cannot vectorise
(no SVML). :func:`tanh` is a rational approximation fitted for this module, evaluated in
float64 and rounded once to float32: within one float32 ulp of ``np.tanh`` (see
``tests/core/test_fast.py``). Sigmoid is ``0.5 * tanh(0.5 * x) + 0.5`` as in the NumPy path.

Matrix products stay in NumPy's BLAS, called from :mod:`cells` (numba's ``np.dot`` would
call a second BLAS); the only products written here are those of small cells
(:func:`small_matmul`), where a BLAS call costs more than the arithmetic.

Activation codes (``ACT_CODES``) and the per-cell ``flags`` / ``consts`` arrays are built
by :func:`pack`.
"""

from __future__ import annotations

import numba
import numpy as np

from ..spec import CellSpec
from .cells import FAST_ACTIVATIONS

__all__ = ["ACT_CODES", "pack", "tanh", "lstm_pointwise", "gru_pointwise", "gru_rz",
           "rnn_pointwise", "small_matmul", "small_step", "stream_step", "tanh_array"]

# sigmoid 0, tanh 1, hard_sigmoid 2, relu 3, linear 4, affine 5, scaled_tanh 6
ACT_CODES = {name: code for code, name in enumerate(FAST_ACTIVATIONS)}

# flags: gate, activation and cell-output activation codes, then switches.
F_GATE, F_ACT, F_OUT, F_PEEP, F_CLIP, F_CELL_CLIP, F_INPUT_FORGET, F_CLIP_CELL_OUT = range(8)
# consts (float32): clip, cell_clip, forget_bias, then alpha / beta of the three functions.
C_CLIP, C_CELL_CLIP, C_FORGET, C_GATE_A, C_GATE_B, C_ACT_A, C_ACT_B, C_OUT_A, C_OUT_B = range(9)

_F32 = np.float32
_JIT = dict(cache=True, error_model="numpy", nogil=True)

# tanh(x) = x * P(x^2) / Q(x^2) on [-9, 9] (float32 tanh is +-1 beyond): a weighted
# least-squares fit with Lawson iterations; |error| < 6e-11 in exact arithmetic.
_P0, _P1, _P2, _P3, _P4, _P5 = (
    0.9999999998803625, 0.14097553115766287, 0.0044237603256231045,
    4.221896876309547e-05, 1.1088094894546949e-07, 3.657877582153595e-11,
)
_Q1, _Q2, _Q3, _Q4, _Q5 = (
    0.47430886381564896, 0.02919338263221446, 0.0005004178650789858,
    2.5989004072541405e-06, 2.9407446925096936e-09,
)


def pack(spec: CellSpec, has_peephole: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``flags`` (int64) and ``consts`` (float32) arrays the kernels read."""
    out = spec.output_activation
    flags = np.array([
        ACT_CODES[spec.gate_activation.name], ACT_CODES[spec.activation.name],
        ACT_CODES[out.name], has_peephole, spec.clip is not None,
        spec.cell_clip is not None, spec.input_forget, spec.clip_cell_output,
    ], np.int64)
    consts = np.array([
        spec.clip or 0.0, spec.cell_clip or 0.0, spec.forget_bias,
        spec.gate_activation.alpha, spec.gate_activation.beta,
        spec.activation.alpha, spec.activation.beta, out.alpha, out.beta,
    ], _F32)
    return flags, consts


@numba.njit(inline="always", **_JIT)
def tanh(x):  # noqa: ANN001, ANN201 - numba-typed
    """float32 tanh within one ulp of ``np.tanh``, vectorisable without SVML."""
    # Comparisons rather than min/max so that NaN propagates as in np.tanh; beyond 9
    # float32 tanh rounds to +-1 (the fit is not used there).
    d = np.float64(x)
    d = 9.0 if d > 9.0 else d
    d = -9.0 if d < -9.0 else d
    s = d * d
    p = ((((_P5 * s + _P4) * s + _P3) * s + _P2) * s + _P1) * s + _P0
    q = ((((_Q5 * s + _Q4) * s + _Q3) * s + _Q2) * s + _Q1) * s + 1.0
    r = _F32(d * p / q)
    r = _F32(1.0) if x > 9.0 else r
    return _F32(-1.0) if x < -9.0 else r


@numba.njit(inline="always", **_JIT)
def _clamp(x, low, high):  # noqa: ANN001, ANN201
    # NaN passes through, as in np.clip.
    return low if x < low else (high if x > high else x)


@numba.njit(inline="always", **_JIT)
def _clip(x, limit):  # noqa: ANN001, ANN201
    return _clamp(x, -limit, limit)


@numba.njit(**_JIT)
def _act(code, a, b, row):  # noqa: ANN001, ANN201
    """``row = f(row)`` in place on a 1-D view: the same float32 operations as
    rnnparity.activations, in the same order. What lets each loop vectorise: one loop per
    function (no branch inside), indices from 0 (no negative-index check) and a single
    array (no possible overlap of a source and a destination)."""
    half = _F32(0.5)
    if code == 0:
        for j in range(row.shape[0]):
            row[j] = tanh(row[j] * half) * half + half
    elif code == 1:
        for j in range(row.shape[0]):
            row[j] = tanh(row[j])
    elif code == 2:
        for j in range(row.shape[0]):
            row[j] = _clamp(row[j] * a + b, _F32(0.0), _F32(1.0))
    elif code == 3:
        for j in range(row.shape[0]):
            x = row[j]
            row[j] = _F32(0.0) if x < 0 else x
    elif code == 4:
        for j in range(row.shape[0]):
            row[j] = row[j]
    elif code == 5:
        for j in range(row.shape[0]):
            row[j] = row[j] * a + b
    else:
        for j in range(row.shape[0]):
            row[j] = tanh(row[j] * b) * a


@numba.njit(inline="always", **_JIT)
def _clip_row(row, limit):  # noqa: ANN001, ANN201
    for j in range(row.shape[0]):
        row[j] = _clip(row[j], limit)


@numba.njit(**_JIT)
def _lstm_plain(gates, xw, c_prev, c_out, h_out):  # noqa: ANN001, ANN201
    # Sigmoid gates, tanh, nothing else: one fused pass (no per-pass calls, which cost
    # more than the arithmetic in small cells).
    batch, H = c_prev.shape
    half = _F32(0.5)
    for b in range(batch):
        g, x, cp, cn, h = gates[b], xw[b], c_prev[b], c_out[b], h_out[b]
        for j in range(H):
            i = tanh((g[j] + x[j]) * half) * half + half
            f = tanh((g[H + j] + x[H + j]) * half) * half + half
            o = tanh((g[2 * H + j] + x[2 * H + j]) * half) * half + half
            c = f * cp[j] + i * tanh(g[3 * H + j] + x[3 * H + j])
            cn[j] = c
            h[j] = o * tanh(c)


@numba.njit(**_JIT)
def lstm_pointwise(gates, xw, c_prev, c_out, h_out, peephole, flags, consts):  # noqa
    """LSTM after the recurrent matmul: ``gates (batch, 4H)`` holds ``h_prev @ W_hh`` in
    the internal order i f o g, ``xw`` the input projection. Writes the new cell state to
    ``c_out`` and ``o * h_act(c)`` (before any projection) to ``h_out``.

    Row by row, one pass per operation as in the NumPy path (each pass vectorises).
    """
    if (flags[F_GATE] == 0 and flags[F_ACT] == 1 and flags[F_OUT] == 1
            and flags[F_PEEP] == 0 and flags[F_CLIP] == 0 and flags[F_CELL_CLIP] == 0
            and flags[F_INPUT_FORGET] == 0 and consts[C_FORGET] == 0):
        _lstm_plain(gates, xw, c_prev, c_out, h_out)
        return
    batch, H = c_prev.shape
    ga, ac, oc = flags[F_GATE], flags[F_ACT], flags[F_OUT]
    peep, clip_on, cell_clip_on = flags[F_PEEP] != 0, flags[F_CLIP] != 0, flags[F_CELL_CLIP] != 0
    coupled, clip_cell_out = flags[F_INPUT_FORGET] != 0, flags[F_CLIP_CELL_OUT] != 0
    clip, cell_clip, forget_bias = consts[C_CLIP], consts[C_CELL_CLIP], consts[C_FORGET]
    ga_a, ga_b, ac_a, ac_b = consts[C_GATE_A], consts[C_GATE_B], consts[C_ACT_A], consts[C_ACT_B]
    oc_a, oc_b = consts[C_OUT_A], consts[C_OUT_B]
    for b in range(batch):
        g, x, cp, cn, h = gates[b], xw[b], c_prev[b], c_out[b], h_out[b]
        for j in range(4 * H):
            g[j] += x[j]
        if forget_bias != 0:
            for j in range(H):
                g[H + j] += forget_bias
        if peep:
            for j in range(H):
                g[j] += peephole[0, j] * cp[j]
                g[H + j] += peephole[1, j] * cp[j]
        if clip_on:
            _clip_row(g[: 2 * H], clip)
            _clip_row(g[3 * H : 4 * H], clip)
            if not peep:
                _clip_row(g[2 * H : 3 * H], clip)
        _act(ga, ga_a, ga_b, g[:H])
        if coupled:
            for j in range(H):
                g[H + j] = _F32(1.0) - g[j]
        else:
            _act(ga, ga_a, ga_b, g[H : 2 * H])
        if not peep:
            _act(ga, ga_a, ga_b, g[2 * H : 3 * H])
        _act(ac, ac_a, ac_b, g[3 * H : 4 * H])
        for j in range(H):
            c = g[H + j] * cp[j] + g[j] * g[3 * H + j]
            if cell_clip_on:
                c = _clip(c, cell_clip)
            cn[j] = c
        if peep:
            for j in range(H):
                g[2 * H + j] += peephole[2, j] * cn[j]
            if clip_on:
                _clip_row(g[2 * H : 3 * H], clip)
            _act(ga, ga_a, ga_b, g[2 * H : 3 * H])
        for j in range(H):
            h[j] = _clip(cn[j], clip) if clip_on and clip_cell_out else cn[j]
        _act(oc, oc_a, oc_b, h[:H])
        for j in range(H):
            h[j] = g[2 * H + j] * h[j]


@numba.njit(**_JIT)
def gru_rz(gates, xw, h_prev, rh_out, flags, consts):  # noqa: ANN001, ANN201
    """GRU gates r, z in place in ``gates[:, :2H]``; ``rh_out = r * h_prev`` (reset before).

    ``gates[:, :2H]`` holds ``h_prev @ W_hh[r, z]`` on entry.
    """
    batch, H = h_prev.shape
    ga, clip_on = flags[F_GATE], flags[F_CLIP] != 0
    clip, ga_a, ga_b = consts[C_CLIP], consts[C_GATE_A], consts[C_GATE_B]
    for b in range(batch):
        g, x = gates[b], xw[b]
        for j in range(2 * H):
            g[j] += x[j]
        if clip_on:
            _clip_row(g[: 2 * H], clip)
        _act(ga, ga_a, ga_b, g[: 2 * H])
        for j in range(H):
            rh_out[b, j] = g[j] * h_prev[b, j]


@numba.njit(**_JIT)
def gru_pointwise(gates, xw, h_prev, h_out, b_hn, reset_after, flags, consts):  # noqa
    """GRU after the recurrent matmul(s), writing the new state to ``h_out``.

    reset_after: ``gates (batch, 3H)`` holds ``h_prev @ W_hh``. Reset before: ``gates``
    holds r, z from :func:`gru_rz` and ``(r * h_prev) @ W_hn`` in its n block.
    """
    batch, H = h_prev.shape
    ga, ac, clip_on = flags[F_GATE], flags[F_ACT], flags[F_CLIP] != 0
    clip, ga_a, ga_b = consts[C_CLIP], consts[C_GATE_A], consts[C_GATE_B]
    ac_a, ac_b = consts[C_ACT_A], consts[C_ACT_B]
    for b in range(batch):
        g, x, hp, h = gates[b], xw[b], h_prev[b], h_out[b]
        if reset_after:
            for j in range(2 * H):
                g[j] += x[j]
            if clip_on:
                _clip_row(g[: 2 * H], clip)
            _act(ga, ga_a, ga_b, g[: 2 * H])
            for j in range(H):
                g[2 * H + j] = (g[2 * H + j] + b_hn[j]) * g[j] + x[2 * H + j]
        else:
            for j in range(H):
                g[2 * H + j] = (g[2 * H + j] + b_hn[j]) + x[2 * H + j]
        if clip_on:
            _clip_row(g[2 * H : 3 * H], clip)
        _act(ac, ac_a, ac_b, g[2 * H : 3 * H])
        for j in range(H):
            n = g[2 * H + j]
            h[j] = (hp[j] - n) * g[H + j] + n


@numba.njit(**_JIT)
def rnn_pointwise(gates, xw, h_out, flags, consts):  # noqa: ANN001, ANN201
    """Simple RNN after the recurrent matmul: ``h_out = act(clip(gates + xw))``."""
    batch, H = h_out.shape
    ac, clip_on = flags[F_ACT], flags[F_CLIP] != 0
    clip, ac_a, ac_b = consts[C_CLIP], consts[C_ACT_A], consts[C_ACT_B]
    for b in range(batch):
        g, x, h = gates[b], xw[b], h_out[b]
        for j in range(H):
            h[j] = g[j] + x[j]
        if clip_on:
            _clip_row(h, clip)
        _act(ac, ac_a, ac_b, h)


@numba.njit(**_JIT)
def small_matmul(a, w, out, acc):  # noqa: ANN001, ANN201
    """``out = a @ w`` for small operands, where a BLAS call costs more than the work.

    Rows accumulate in ``acc`` (at least ``w.shape[1]`` long, not overlapping ``w``).
    """
    batch, k_size = a.shape
    n = w.shape[1]
    for b in range(batch):
        for j in range(n):
            acc[j] = 0
        for k in range(k_size):
            a_bk = a[b, k]
            w_k = w[k]
            for j in range(n):
                acc[j] += a_bk * w_k[j]
        row = out[b]
        for j in range(n):
            row[j] = acc[j]


@numba.njit(**_JIT)
def small_step(kind, xw_t, h, c, h_out, c_out, w_hh_t, w_hh_n_t, gates, tmp,  # noqa
               b_hn, peephole, reset_after, flags, consts):
    """One whole step (recurrent products included) of a small cell without projection.

    kind: 0 LSTM, 1 GRU, 2 RNN; ``gates`` and ``tmp`` are work buffers.
    """
    acc = np.empty(gates.shape[1], gates.dtype)
    if kind == 0:
        small_matmul(h, w_hh_t, gates, acc)
        lstm_pointwise(gates, xw_t, c, c_out, h_out, peephole, flags, consts)
    elif kind == 1:
        if reset_after:
            small_matmul(h, w_hh_t, gates, acc)
        else:
            small_matmul(h, w_hh_t, gates[:, : w_hh_t.shape[1]], acc)
            gru_rz(gates, xw_t, h, tmp, flags, consts)
            small_matmul(tmp, w_hh_n_t, gates[:, w_hh_t.shape[1]:], acc)
        gru_pointwise(gates, xw_t, h, h_out, b_hn, reset_after, flags, consts)
    else:
        small_matmul(h, w_hh_t, gates, acc)
        rnn_pointwise(gates, xw_t, h_out, flags, consts)


# Parts of a streaming arena, in order; each is (offset, rows, cols) in the ints array.
ARENA_PARTS = ("w_ih_t", "bias_x", "w_hh_t", "w_hh_n_t", "b_hn", "peephole", "consts",
               "h", "c", "h_new", "c_new", "xw", "gates", "tmp")
_HEADER = 3  # kind, reset_after, number of parts


@numba.njit(inline="always", **_JIT)
def _part(arena, ints, k):  # noqa: ANN001, ANN201
    base = _HEADER + 3 * k
    start, rows, cols = ints[base], ints[base + 1], ints[base + 2]
    return arena[start : start + rows * cols].reshape((rows, cols))


@numba.njit(**_JIT)
def stream_step(x, arena, ints):  # noqa: ANN001, ANN201
    """One streaming step of a small cell: ``x (batch, input_size)``; every weight, state
    and buffer lives in the one float32 ``arena`` laid out by ``ints`` (see
    ``ARENA_PARTS``; the kernel flags are its last 8 entries), so a call passes three
    arrays instead of fifteen. The new state is copied into the ``h`` / ``c`` parts.

    Returns False, computing nothing, when ``x`` does not have the expected shape.
    """
    kind, reset_after = ints[0], ints[1] != 0
    flags = ints[ints.shape[0] - 8 :]
    w_ih, bias, w_hh, w_hn = (_part(arena, ints, 0), _part(arena, ints, 1)[0],
                              _part(arena, ints, 2), _part(arena, ints, 3))
    b_hn, peephole, consts = _part(arena, ints, 4)[0], _part(arena, ints, 5), \
        _part(arena, ints, 6)[0]
    h, c, h_new, c_new = (_part(arena, ints, 7), _part(arena, ints, 8),
                          _part(arena, ints, 9), _part(arena, ints, 10))
    xw, gates, tmp = _part(arena, ints, 11), _part(arena, ints, 12), _part(arena, ints, 13)
    if x.shape[0] != h.shape[0] or x.shape[1] != w_ih.shape[0]:
        return False
    small_matmul(x, w_ih, xw, np.empty(xw.shape[1], xw.dtype))
    for b in range(xw.shape[0]):
        row = xw[b]
        for j in range(row.shape[0]):
            row[j] += bias[j]
    small_step(kind, xw, h, c, h_new, c_new, w_hh, w_hn, gates, tmp, b_hn, peephole,
               reset_after, flags, consts)
    for b in range(h.shape[0]):
        h_b, h_new_b = h[b], h_new[b]
        for j in range(h_b.shape[0]):
            h_b[j] = h_new_b[j]
        if kind == 0:
            c_b, c_new_b = c[b], c_new[b]
            for j in range(c_b.shape[0]):
                c_b[j] = c_new_b[j]
    return True


@numba.njit(**_JIT)
def tanh_array(x, out):  # noqa: ANN001, ANN201
    """``out = tanh(x)`` over 1-D float32 arrays with :func:`tanh` (for checks)."""
    for j in range(x.shape[0]):
        out[j] = tanh(x[j])
