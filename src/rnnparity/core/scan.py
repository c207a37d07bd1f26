"""The time loop: one direction of one layer over a batch of sequences.

Everything sequence-specific that frameworks disagree on is an argument here, so dialects
only choose values:

- ``reverse``: process time from the last step to the first. Outputs are returned aligned
  with the input (``y[:, t]`` belongs to ``x[:, t]``); Keras' bare ``go_backwards`` layer
  returns processing order, which its dialect gets by flipping.
- ``mask (batch, seq_len)``: at a masked step every state keeps its value; the emitted
  output is the previous emitted output (Keras) or zeros (PyTorch packed sequences, ONNX
  ``sequence_lens``, Keras Bidirectional and cuDNN), chosen by ``masked_output``.
  A reverse pass over right-padded lengths therefore starts at each sequence's own end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .cells import PreparedCell

__all__ = ["ScanResult", "scan", "lengths_to_mask", "TIME_BLOCK"]

# Steps whose input projection is computed at once: at most TIME_BLOCK, and no more than
# fit in BLOCK_BYTES, which bounds memory and keeps the block in cache while the matmul
# stays large (batch * steps rows).
TIME_BLOCK = 256
BLOCK_BYTES = 4 << 20


@dataclass
class ScanResult:
    """Outputs of one direction.

    Shapes:
        y: (batch, seq_len, hidden_out), or None when sequences were not asked for.
        h: (batch, hidden_out) final hidden state.
        c: (batch, hidden_size) final cell state (LSTM), else None.
        last_output: (batch, hidden_out) the last emitted output (differs from ``h`` only
            under masking with ``masked_output="zero"`` or leading masked steps).
    """

    y: np.ndarray | None
    h: np.ndarray
    c: np.ndarray | None
    last_output: np.ndarray


def lengths_to_mask(lengths: np.ndarray, seq_len: int) -> np.ndarray:
    """``(batch,)`` lengths -> ``(batch, seq_len)`` bool mask, True at valid steps."""
    return np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]


def scan(
    cell: PreparedCell,
    x: np.ndarray,
    h0: np.ndarray | None = None,
    c0: np.ndarray | None = None,
    *,
    reverse: bool = False,
    mask: np.ndarray | None = None,
    masked_output: str = "previous",
    prev_output: np.ndarray | None = None,
    return_sequences: bool = True,
) -> ScanResult:
    """Run ``cell`` over ``x``.

    Args:
        cell: the prepared direction.
        x: (batch, seq_len, input_size), already in ``cell.dtype``.
        h0: (batch, hidden_out) initial hidden state; zeros if None.
        c0: (batch, hidden_size) initial cell state (LSTM); zeros if None.
        reverse: process time backwards.
        mask: (batch, seq_len) bool, True where the step is real data.
        masked_output: ``"previous"`` or ``"zero"``: what a masked step emits.
        prev_output: (batch, hidden_out) what counts as the output before the first step
            (zeros if None); only read when ``masked_output="previous"``.
        return_sequences: also return every step's output.

    Returns:
        A :class:`ScanResult`.
    """
    spec, dtype = cell.spec, cell.dtype
    batch, seq_len, _ = x.shape
    H, H_out = spec.hidden_size, spec.hidden_out

    h = np.zeros((batch, H_out), dtype) if h0 is None else np.array(h0, dtype=dtype)
    h_new = np.empty_like(h)
    is_lstm = spec.kind == "lstm"
    c = c_new = None
    if is_lstm:
        c = np.zeros((batch, H), dtype) if c0 is None else np.array(c0, dtype=dtype)
        c_new = np.empty_like(c)
    out = np.zeros((batch, H_out), dtype) if prev_output is None else np.array(prev_output,
                                                                                dtype=dtype)
    y = np.empty((seq_len, batch, H_out), dtype) if return_sequences else None
    keep = None if mask is None else ~np.asarray(mask, bool).T  # (seq_len, batch)
    zero_fill = masked_output == "zero"
    if keep is not None:  # per-step views and flags made once, not per step
        held_at, valid_at = keep[:, :, None], ~keep[:, :, None]
        any_held = keep.any(axis=1).tolist()

    # Work buffers for one block, allocated once (re-touching freed memory is slow).
    row_bytes = batch * spec.num_gates * H * dtype.itemsize
    block = max(1, min(TIME_BLOCK, seq_len, BLOCK_BYTES // row_bytes))
    x_block = np.empty((block, batch, x.shape[2]), dtype)
    xw_block = np.empty((block, batch, spec.num_gates * H), dtype)
    starts = range(0, seq_len, block)
    for start in (reversed(starts) if reverse else starts):
        stop = min(start + block, seq_len)
        x_t = x_block[: stop - start]
        np.copyto(x_t, x[:, start:stop].transpose(1, 0, 2))
        xw = cell.project(x_t, out=xw_block[: stop - start])
        steps = range(stop - start)
        for k in (reversed(steps) if reverse else steps):
            t = start + k
            cell.step(xw[k], h, c, h_new, c_new)
            if keep is None:  # the output is the state: no copy per step
                h, h_new = h_new, h
                if is_lstm:
                    c, c_new = c_new, c
                if y is not None:
                    y[t] = h
                continue
            if any_held[t]:
                held = held_at[t]
                np.copyto(h_new, h, where=held)
                if is_lstm:
                    np.copyto(c_new, c, where=held)
                if zero_fill:
                    np.copyto(out, h_new)
                    np.copyto(out, 0, where=held)
                else:
                    np.copyto(out, h_new, where=valid_at[t])
            else:
                np.copyto(out, h_new)
            h, h_new = h_new, h
            if is_lstm:
                c, c_new = c_new, c
            if y is not None:
                y[t] = out

    if keep is None and seq_len:
        np.copyto(out, h)
    return ScanResult(
        y=None if y is None else y.transpose(1, 0, 2),
        h=h,
        c=c,
        last_output=out,
    )
