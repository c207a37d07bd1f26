"""The cell math: one canonical implementation of LSTM, GRU and simple RNN steps.

A :class:`PreparedCell` holds one direction's weights laid out for fast row-vector
matmuls (``x @ w``) with its gate blocks contiguous, plus reusable work buffers. Its
``step`` advances a batch by one time step, given the input projection ``x @ w_ih.T + b``
for that step (computed for many steps at once by :mod:`rnnparity.core.scan`).

Equations, in computation order (``f`` = gate_activation, ``g`` = activation,
``h_act`` = cell_activation, ``p_*`` peepholes):

LSTM::

    i = f(xi + h_prev @ Wi + p_i * c_prev)
    f = f(xf + h_prev @ Wf + forget_bias + p_f * c_prev)     (f = 1 - i with input_forget)
    g = g(xg + h_prev @ Wg)
    c = f * c_prev + i * g                                   (clipped by cell_clip)
    o = f(xo + h_prev @ Wo + p_o * c)
    h = o * h_act(c)                                         (then @ w_hr.T, proj_clip)

GRU::

    r = f(xr + h_prev @ Wr)
    z = f(xz + h_prev @ Wz)
    n = g(xn + r * (h_prev @ Wn + b_hn))      reset_after
    n = g(xn + (r * h_prev) @ Wn + b_hn)      reset before
    h = (1 - z) * n + z * h_prev

RNN::

    h = g(x + h_prev @ W)
"""

from __future__ import annotations

import importlib.util
import logging
import os
from types import ModuleType

import numpy as np

from ..errors import InputError, ShapeError, check_shape
from ..spec import CellSpec, CellWeights

__all__ = ["PreparedCell", "Stepper", "FAST_ENV", "FAST_ACTIVATIONS", "fast_default"]

logger = logging.getLogger(__name__)

# Internal LSTM block order: the three sigmoid gates first, so one call covers them.
_LSTM_INTERNAL = ("i", "f", "o", "g")

# The compiled path (numba, rnnparity[fast]) is used when installed unless this is 0.
FAST_ENV = "RNNPARITY_FAST"
# Functions the compiled kernels implement (codes = positions); others use NumPy.
FAST_ACTIVATIONS = ("sigmoid", "tanh", "hard_sigmoid", "relu", "linear", "affine",
                    "scaled_tanh")
# Recurrent products of at most this many multiply-adds per step run inside the compiled
# step: below it a BLAS call and a second kernel call cost more than the arithmetic.
SMALL_STEP_MACS = 1 << 17

_numba_found: bool | None = None
_FLOAT32 = np.dtype(np.float32)


def fast_default() -> bool:
    """Whether cells built with ``fast=None`` use the compiled path: numba is installed
    and the environment variable ``RNNPARITY_FAST`` is not ``0`` / ``false`` / ``off``."""
    global _numba_found
    if os.environ.get(FAST_ENV, "").strip().lower() in ("0", "false", "no", "off"):
        return False
    if _numba_found is None:  # find_spec does not import numba
        _numba_found = importlib.util.find_spec("numba") is not None
    return _numba_found


class PreparedCell:
    """One direction's weights in the engine's internal layout, ready to step.

    Args:
        spec: what the cell computes.
        weights: canonical weights (checked against ``spec``).
        dtype: computation dtype, float32 unless float64 is asked for.
        fast: use the compiled element-wise kernels (numba): None chooses them when
            :func:`fast_default` says so; True requires numba. They cover float32 and the
            functions in ``FAST_ACTIVATIONS``; other cells use the NumPy path. Results
            equal the NumPy path's to 1e-6 (relative above 1).
    """

    def __init__(self, spec: CellSpec, weights: CellWeights, dtype: np.dtype, *,
                 fast: bool | None = None) -> None:
        weights.check(spec, spec.convention or spec.kind)
        self.spec = spec
        self.dtype = np.dtype(dtype)
        w = weights.astype(self.dtype)
        H, G = spec.hidden_size, spec.num_gates

        order = _LSTM_INTERNAL if spec.kind == "lstm" else None
        w_ih, w_hh, b_ih, b_hh = w.w_ih, w.w_hh, w.b_ih, w.b_hh
        if order is not None:
            w_ih, w_hh = _reorder(w_ih, order), _reorder(w_hh, order)
            b_ih = None if b_ih is None else _reorder(b_ih, order)
            b_hh = None if b_hh is None else _reorder(b_hh, order)

        zeros = np.zeros(G * H, self.dtype)
        b_ih = zeros if b_ih is None else b_ih
        b_hh = zeros if b_hh is None else b_hh
        # The GRU's recurrent n-bias belongs to the recurrent term (inside r * (.) when
        # reset_after); every other recurrent bias can be folded into the input projection.
        self.b_hn: np.ndarray | None = None
        if spec.kind == "gru":
            self.bias_x = b_ih.copy()
            self.bias_x[: 2 * H] += b_hh[: 2 * H]
            self.b_hn = np.ascontiguousarray(b_hh[2 * H :])
        else:
            self.bias_x = b_ih + b_hh

        self.w_ih_t = np.ascontiguousarray(w_ih.T)
        self.w_hh_t = np.ascontiguousarray(w_hh.T)
        if spec.kind == "gru" and not spec.reset_after:
            self.w_hh_rz_t = np.ascontiguousarray(self.w_hh_t[:, : 2 * H])
            self.w_hh_n_t = np.ascontiguousarray(self.w_hh_t[:, 2 * H :])
        self.w_hr_t = None if w.w_hr is None else np.ascontiguousarray(w.w_hr.T)
        self.peephole = w.peephole
        self._batch = -1
        self.fast = self._choose_fast(fast)
        self._kernels: ModuleType | None = None

    def _choose_fast(self, fast: bool | None) -> bool:
        if fast is None:
            fast = fast_default()
        elif fast:
            from .._optional import import_optional

            import_optional("numba")
        names = (self.spec.gate_activation.name, self.spec.activation.name,
                 self.spec.output_activation.name)
        if fast and (self.dtype != np.float32 or any(n not in FAST_ACTIVATIONS for n in names)):
            logger.debug("compiled path skipped for %s in %s", self.spec.describe(), self.dtype)
            return False
        return bool(fast)

    def _buffers(self, batch: int) -> None:
        if batch == self._batch:
            return
        H, G = self.spec.hidden_size, self.spec.num_gates
        gates = self._gates = np.empty((batch, G * H), self.dtype)
        self._tmp = np.empty((batch, H), self.dtype)
        self._tmp2 = np.empty((batch, H), self.dtype)
        # Views made once: slicing costs as much as a small ufunc call.
        self._blocks = [gates[:, k * H : (k + 1) * H] for k in range(G)]
        self._sig3 = gates[:, : 3 * H]
        self._sig2 = gates[:, : 2 * H]
        self._small = batch * self.w_hh_t.size <= SMALL_STEP_MACS
        self._batch = batch

    def project(self, x: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
        """Input projection ``x @ w_ih.T + bias`` for ``x (steps, batch, input_size)``.

        Returns ``(steps, batch, num_gates * hidden_size)``, time-major and contiguous;
        written into ``out`` (contiguous, that shape) when given.
        """
        steps, batch, _ = x.shape
        flat = None if out is None else out.reshape(steps * batch, -1)
        xw = np.matmul(x.reshape(steps * batch, -1), self.w_ih_t, out=flat)
        xw += self.bias_x
        return xw.reshape(steps, batch, -1)

    def step(
        self, xw_t: np.ndarray, h: np.ndarray, c: np.ndarray | None,
        h_out: np.ndarray, c_out: np.ndarray | None,
    ) -> None:
        """Advance one step: read ``h``, ``c``; write the new state to ``h_out``, ``c_out``.

        ``h_out`` / ``c_out`` must not alias ``h`` / ``c``.
        """
        self._buffers(h.shape[0])
        kind = self.spec.kind
        if self.fast:
            self._fast_step(xw_t, h, c, h_out, c_out)
        elif kind == "lstm":
            self._lstm(xw_t, h, c, h_out, c_out)
        elif kind == "gru":
            self._gru(xw_t, h, h_out)
        else:
            self._rnn(xw_t, h, h_out)

    def _clip(self, a: np.ndarray) -> None:
        if self.spec.clip is not None:
            np.clip(a, -self.spec.clip, self.spec.clip, out=a)

    def _lstm(self, xw_t, h, c, h_out, c_out) -> None:
        spec, H = self.spec, self.spec.hidden_size
        gates = self._gates
        np.matmul(h, self.w_hh_t, out=gates)
        gates += xw_t
        i, f, o, g = self._blocks
        if spec.forget_bias:
            f += spec.forget_bias
        if self.peephole is not None:
            i += self.peephole[0] * c
            f += self.peephole[1] * c
            # o's peephole reads the new c, so o is clipped once that term is in.
            self._clip(gates[:, : 2 * H])
            self._clip(g)
        else:
            self._clip(gates)

        act = spec.gate_activation
        if self.peephole is None and not spec.input_forget:
            act(self._sig3, out=self._sig3)
        else:
            act(i, out=i)
            if spec.input_forget:
                np.subtract(1, i, out=f)
            else:
                act(f, out=f)
            if self.peephole is None:
                act(o, out=o)
        spec.activation(g, out=g)

        np.multiply(f, c, out=c_out)
        np.multiply(i, g, out=self._tmp)
        c_out += self._tmp
        if spec.cell_clip is not None:
            np.clip(c_out, -spec.cell_clip, spec.cell_clip, out=c_out)

        if self.peephole is not None:
            np.multiply(self.peephole[2], c_out, out=self._tmp)
            o += self._tmp
            self._clip(o)
            act(o, out=o)
        cell = c_out
        if spec.clip is not None and spec.clip_cell_output:
            cell = np.clip(c_out, -spec.clip, spec.clip, out=self._tmp2)
        spec.output_activation(cell, out=self._tmp)
        if self.w_hr_t is None:
            np.multiply(o, self._tmp, out=h_out)
            return
        np.multiply(o, self._tmp, out=self._tmp)
        np.matmul(self._tmp, self.w_hr_t, out=h_out)
        if spec.proj_clip is not None:
            np.clip(h_out, -spec.proj_clip, spec.proj_clip, out=h_out)

    def _gru(self, xw_t, h, h_out) -> None:
        spec, H = self.spec, self.spec.hidden_size
        gates = self._gates
        if spec.reset_after:
            np.matmul(h, self.w_hh_t, out=gates)
            self._blocks[2] += self.b_hn
            self._sig2 += xw_t[:, : 2 * H]
        else:
            np.matmul(h, self.w_hh_rz_t, out=self._sig2)
            self._sig2 += xw_t[:, : 2 * H]
        rz = self._sig2
        self._clip(rz)
        spec.gate_activation(rz, out=rz)
        r, z, n = self._blocks

        if spec.reset_after:
            n *= r
        else:
            np.multiply(r, h, out=self._tmp)
            np.matmul(self._tmp, self.w_hh_n_t, out=n)
            n += self.b_hn
        n += xw_t[:, 2 * H :]
        self._clip(n)
        spec.activation(n, out=n)

        # h = (1 - z) * n + z * h_prev, written as n + z * (h_prev - n).
        np.subtract(h, n, out=h_out)
        h_out *= z
        h_out += n

    def _rnn(self, xw_t, h, h_out) -> None:
        np.matmul(h, self.w_hh_t, out=h_out)
        h_out += xw_t
        self._clip(h_out)
        self.spec.activation(h_out, out=h_out)


    def _load_kernels(self) -> ModuleType:
        from . import _fast

        self._flags, self._consts = _fast.pack(self.spec, self.peephole is not None)
        H = self.spec.hidden_size
        self._peephole_or_dummy = (np.zeros((3, H), np.float32) if self.peephole is None
                                   else self.peephole)
        self._b_hn_or_dummy = np.zeros(H, np.float32) if self.b_hn is None else self.b_hn
        self._dummy = np.zeros((1, 1), np.float32)
        self._kernels = _fast
        return _fast

    def _fast_step(self, xw_t, h, c, h_out, c_out) -> None:
        k = self._kernels or self._load_kernels()
        spec = self.spec
        kind = spec.kind
        if kind == "lstm":
            cell_h = h_out if self.w_hr_t is None else self._tmp2
            if self._small:
                k.small_step(0, xw_t, h, c, cell_h, c_out, self.w_hh_t, self._dummy,
                             self._gates, self._tmp, self._b_hn_or_dummy,
                             self._peephole_or_dummy, False, self._flags, self._consts)
            else:
                np.matmul(h, self.w_hh_t, out=self._gates)
                k.lstm_pointwise(self._gates, xw_t, c, c_out, cell_h,
                                 self._peephole_or_dummy, self._flags, self._consts)
            if self.w_hr_t is not None:
                np.matmul(cell_h, self.w_hr_t, out=h_out)
                if spec.proj_clip is not None:
                    np.clip(h_out, -spec.proj_clip, spec.proj_clip, out=h_out)
            return
        if kind == "gru":
            w_hh = self.w_hh_t if spec.reset_after else self.w_hh_rz_t
            w_hn = self._dummy if spec.reset_after else self.w_hh_n_t
            if self._small:
                k.small_step(1, xw_t, h, self._dummy, h_out, self._dummy, w_hh, w_hn,
                             self._gates, self._tmp, self.b_hn, self._peephole_or_dummy,
                             spec.reset_after, self._flags, self._consts)
                return
            if spec.reset_after:
                np.matmul(h, w_hh, out=self._gates)
            else:
                np.matmul(h, w_hh, out=self._sig2)
                k.gru_rz(self._gates, xw_t, h, self._tmp, self._flags, self._consts)
                np.matmul(self._tmp, w_hn, out=self._blocks[2])
            k.gru_pointwise(self._gates, xw_t, h, h_out, self.b_hn, spec.reset_after,
                            self._flags, self._consts)
            return
        if self._small:
            k.small_step(2, xw_t, h, self._dummy, h_out, self._dummy, self.w_hh_t,
                         self._dummy, self._gates, self._tmp, self._b_hn_or_dummy,
                         self._peephole_or_dummy, False, self._flags, self._consts)
        else:
            np.matmul(h, self.w_hh_t, out=self._gates)
            k.rnn_pointwise(self._gates, xw_t, h_out, self._flags, self._consts)

    def stepper(self, batch: int, h0: np.ndarray | None = None,
                c0: np.ndarray | None = None, check_finite: bool = False) -> Stepper:
        """A :class:`Stepper` running this cell one step per call (streaming)."""
        return Stepper(self, batch, h0, c0, check_finite)


class Stepper:
    """Runs a cell one time step per call with every buffer allocated once.

    The lean path for streaming: no time loop, no per-call allocation, one compiled call
    per step for small cells on the fast path.

    Args:
        cell: the prepared cell.
        batch: sequences advanced together.
        h0: (batch, hidden_out) initial hidden state; zeros if None.
        c0: (batch, hidden_size) initial cell state (LSTM); zeros if None.
        check_finite: refuse NaN / inf in each step's input (costs about a microsecond).

    Example:
        >>> import numpy as np
        >>> from rnnparity.spec import CellSpec, CellWeights
        >>> spec = CellSpec("gru", input_size=2, hidden_size=3)
        >>> w = CellWeights(np.ones((9, 2)), np.ones((9, 3)))
        >>> step = PreparedCell(spec, w, np.float32).stepper(batch=1)
        >>> step(np.zeros((1, 2), np.float32)).shape
        (1, 3)
    """

    def __init__(self, cell: PreparedCell, batch: int, h0: np.ndarray | None = None,
                 c0: np.ndarray | None = None, check_finite: bool = False) -> None:
        spec, dtype = cell.spec, cell.dtype
        self.cell = cell
        self.check_finite = bool(check_finite)
        sizes = dict(batch=batch, hidden_out=spec.hidden_out, hidden_size=spec.hidden_size)
        self._h = np.zeros((batch, spec.hidden_out), dtype)
        self._h_new = np.empty_like(self._h)
        if h0 is not None:
            check_shape("stepper", "h0", np.shape(h0), ("batch", "hidden_out"), **sizes)
            self._h[...] = h0
        self._c = self._c_new = None
        if spec.kind == "lstm":
            self._c = np.zeros((batch, spec.hidden_size), dtype)
            self._c_new = np.empty_like(self._c)
            if c0 is not None:
                check_shape("stepper", "c0", np.shape(c0), ("batch", "hidden_size"), **sizes)
                self._c[...] = c0
        self._xw = np.empty((batch, spec.num_gates * spec.hidden_size), dtype)
        self._x_shape = (batch, spec.input_size)
        cell._buffers(batch)
        self._arena: np.ndarray | None = None
        self._lean: tuple[np.ndarray, ...] | None = None
        if cell.fast and cell._small and cell.w_hr_t is None:
            self._build_arena()
        elif not cell.fast and _plain_lstm(spec, cell.peephole):
            self._build_lean()

    def _build_lean(self) -> None:
        # NumPy streaming of the common LSTM in 10 calls per step: [x, h, 1] times
        # [w_ih; w_hh; bias] in one product, the sigmoid blocks pre-scaled by 0.5 (exact
        # in binary floating point) so that one tanh call covers all four blocks.
        cell, spec = self.cell, self.cell.spec
        I, H, batch = spec.input_size, spec.hidden_size, self._h.shape[0]
        w_cat = np.concatenate([cell.w_ih_t, cell.w_hh_t, cell.bias_x[None]])
        w_cat[-1, H : 2 * H] += spec.forget_bias
        w_cat[:, : 3 * H] *= 0.5
        xh = [np.zeros((batch, I + H + 1), cell.dtype) for _ in range(2)]
        for buffer in xh:
            buffer[:, -1] = 1
        xh[0][:, I : I + H] = self._h
        gates = cell._gates
        # Two phases alternate: read [x, h] from one buffer, write h into the other.
        self._phases = [(xh[k], xh[k][:, :I], xh[1 - k][:, I : I + H]) for k in (0, 1)]
        self._phase = 0
        self._lean = (w_cat, gates, gates[:, : 3 * H], *cell._blocks, cell._tmp,
                      np.array(0.5, cell.dtype))
        self._h = xh[0][:, I : I + H]

    def _build_arena(self) -> None:
        # One compiled call per step: weights, states and buffers in one float32 array.
        cell = self.cell
        k = cell._kernels or cell._load_kernels()
        gru_before = cell.spec.kind == "gru" and not cell.spec.reset_after
        c = self._c if self._c is not None else cell._dummy
        c_new = self._c_new if self._c_new is not None else cell._dummy
        arrays = dict(
            w_ih_t=cell.w_ih_t, bias_x=cell.bias_x[None],
            w_hh_t=cell.w_hh_rz_t if gru_before else cell.w_hh_t,
            w_hh_n_t=cell.w_hh_n_t if gru_before else cell._dummy,
            b_hn=cell._b_hn_or_dummy[None], peephole=cell._peephole_or_dummy,
            consts=cell._consts[None], h=self._h, c=c, h_new=self._h_new, c_new=c_new,
            xw=self._xw, gates=cell._gates, tmp=cell._tmp,
        )
        parts = [np.atleast_2d(arrays[name]) for name in k.ARENA_PARTS]
        ints = [("lstm", "gru", "rnn").index(cell.spec.kind), int(cell.spec.reset_after),
                len(parts)]
        offset = 0
        for part in parts:
            ints += [offset, part.shape[0], part.shape[1]]
            offset += part.size
        arena = np.empty(offset, np.float32)
        views = []
        for part, start in zip(parts, ints[3::3]):
            view = arena[start : start + part.size].reshape(part.shape)
            view[...] = part
            views.append(view)
        named = dict(zip(k.ARENA_PARTS, views))
        self._h = named["h"]
        self._c = named["c"] if self._c is not None else None
        self._arena = arena
        self._arena_ints = np.array(ints + cell._flags.tolist(), np.int64)
        self._stream_step = k.stream_step

    def reset(self, h0: np.ndarray | None = None, c0: np.ndarray | None = None) -> None:
        """Start again from ``h0`` / ``c0`` (zeros if None), keeping every buffer."""
        spec = self.cell.spec
        sizes = dict(batch=self._h.shape[0], hidden_out=spec.hidden_out,
                     hidden_size=spec.hidden_size)
        if h0 is not None:
            check_shape("stepper", "h0", np.shape(h0), ("batch", "hidden_out"), **sizes)
        self._h[...] = 0 if h0 is None else h0
        if self._c is not None:
            if c0 is not None:
                check_shape("stepper", "c0", np.shape(c0), ("batch", "hidden_size"), **sizes)
            self._c[...] = 0 if c0 is None else c0

    @property
    def h(self) -> np.ndarray:
        """(batch, hidden_out) the current hidden state (the last output)."""
        return self._h

    @property
    def c(self) -> np.ndarray | None:
        """(batch, hidden_size) the current cell state (LSTM), else None."""
        return self._c

    def __call__(self, x_t: np.ndarray) -> np.ndarray:
        """Advance one step on ``x_t (batch, input_size)``; return the new hidden state.

        The returned array is this stepper's state buffer, valid until the next call:
        copy it to keep it.
        """
        if not isinstance(x_t, np.ndarray):
            x_t = _as_step_input(x_t)
        if self.check_finite and not np.isfinite(x_t).all():
            raise InputError(f"stepper input holds a non-finite value at index "
                             f"{tuple(int(i) for i in np.argwhere(~np.isfinite(x_t))[0])}; "
                             "expected finite numbers (check_finite=False runs it)")
        if self._arena is not None:  # the kernel checks the shape itself
            if x_t.dtype is _FLOAT32 and x_t.ndim == 2 and self._stream_step(
                    x_t, self._arena, self._arena_ints):
                return self._h
            self._check_input(x_t)
        cell = self.cell
        if x_t.shape != self._x_shape:
            self._check_input(x_t)
        if x_t.dtype != cell.dtype or not x_t.flags.c_contiguous:
            x_t = np.ascontiguousarray(x_t, cell.dtype)
        if self._arena is not None:
            self._stream_step(x_t, self._arena, self._arena_ints)
            return self._h
        if self._lean is not None:
            return self._lean_step(x_t)
        np.matmul(x_t, cell.w_ih_t, out=self._xw)
        self._xw += cell.bias_x
        cell.step(self._xw, self._h, self._c, self._h_new, self._c_new)
        self._h, self._h_new = self._h_new, self._h
        if self._c is not None:
            self._c, self._c_new = self._c_new, self._c
        return self._h


    def _check_input(self, x_t: np.ndarray) -> None:
        if np.shape(x_t) != self._x_shape:
            raise ShapeError(f"stepper input has shape {np.shape(x_t)}; expected (batch, "
                             f"input_size) = {self._x_shape}")

    def _lean_step(self, x_t: np.ndarray) -> np.ndarray:
        w_cat, gates, sig3, i, f, o, g, tmp, half = self._lean
        xh, x_slot, h = self._phases[self._phase]
        c, c_new = self._c, self._c_new
        np.copyto(x_slot, x_t)
        np.matmul(xh, w_cat, out=gates)
        np.tanh(gates, out=gates)
        np.multiply(sig3, half, out=sig3)
        np.add(sig3, half, out=sig3)
        np.multiply(f, c, out=c_new)
        np.multiply(i, g, out=tmp)
        np.add(c_new, tmp, out=c_new)
        np.tanh(c_new, out=tmp)
        np.multiply(o, tmp, out=h)
        self._c, self._c_new = c_new, c
        self._phase ^= 1
        self._h = h
        return h


def _plain_lstm(spec: CellSpec, peephole: np.ndarray | None) -> bool:
    """An LSTM with sigmoid gates, tanh and no clip, peephole, coupling or projection."""
    return (spec.kind == "lstm" and spec.gate_activation.name == "sigmoid"
            and spec.activation.name == "tanh" and spec.output_activation.name == "tanh"
            and peephole is None and not spec.proj_size and spec.clip is None
            and spec.cell_clip is None and not spec.input_forget)


def _reorder(array: np.ndarray, order: tuple[str, ...]) -> np.ndarray:
    from ..spec import permute_gates

    return permute_gates(array, "ifgo", order, axis=0)


def _as_step_input(value: object) -> np.ndarray:
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise InputError(f"stepper input cannot be read as an array ({err}); expected "
                         "(batch, input_size) numbers") from err
