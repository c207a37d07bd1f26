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

import numpy as np

from ..spec import CellSpec, CellWeights

__all__ = ["PreparedCell"]

# Internal LSTM block order: the three sigmoid gates first, so one call covers them.
_LSTM_INTERNAL = ("i", "f", "o", "g")


class PreparedCell:
    """One direction's weights in the engine's internal layout, ready to step.

    Args:
        spec: what the cell computes.
        weights: canonical weights (checked against ``spec``).
        dtype: computation dtype, float32 unless float64 is asked for.
    """

    def __init__(self, spec: CellSpec, weights: CellWeights, dtype: np.dtype) -> None:
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

    def _buffers(self, batch: int) -> None:
        if batch == self._batch:
            return
        H, G = self.spec.hidden_size, self.spec.num_gates
        self._gates = np.empty((batch, G * H), self.dtype)
        self._tmp = np.empty((batch, H), self.dtype)
        self._tmp2 = np.empty((batch, H), self.dtype)
        self._batch = batch

    def project(self, x: np.ndarray) -> np.ndarray:
        """Input projection ``x @ w_ih.T + bias`` for ``x (steps, batch, input_size)``.

        Returns ``(steps, batch, num_gates * hidden_size)``, time-major and contiguous.
        """
        steps, batch, _ = x.shape
        xw = np.matmul(x.reshape(steps * batch, -1), self.w_ih_t)
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
        if kind == "lstm":
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
        i, f, o, g = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H : 3 * H], gates[:, 3 * H :]
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
            act(gates[:, : 3 * H], out=gates[:, : 3 * H])
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
            gates[:, 2 * H :] += self.b_hn
            gates[:, : 2 * H] += xw_t[:, : 2 * H]
        else:
            np.matmul(h, self.w_hh_rz_t, out=gates[:, : 2 * H])
            gates[:, : 2 * H] += xw_t[:, : 2 * H]
        rz = gates[:, : 2 * H]
        self._clip(rz)
        spec.gate_activation(rz, out=rz)
        r, z, n = gates[:, :H], gates[:, H : 2 * H], gates[:, 2 * H :]

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


def _reorder(array: np.ndarray, order: tuple[str, ...]) -> np.ndarray:
    from ..spec import permute_gates

    return permute_gates(array, "ifgo", order, axis=0)
