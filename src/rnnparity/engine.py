"""Stacks of recurrent layers, each with one or two directions, on the canonical cells.

A :class:`RecurrentStack` is what PyTorch calls ``nn.LSTM(num_layers=..., bidirectional=...)``
and ONNX one LSTM/GRU/RNN node; Keras layers and Bidirectional wrappers are one-layer
stacks. Its results use PyTorch's arrangement (features of the directions concatenated,
forward first; final states ``(num_layers * num_directions, batch, hidden)``); dialects
rearrange them into their framework's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .core.cells import PreparedCell
from .core.scan import ScanResult, scan
from .errors import InputError, ShapeError, check_shape
from .spec import CellSpec, CellWeights

__all__ = ["Direction", "RecurrentStack", "StackResult", "as_float_input"]


@dataclass
class Direction:
    """One direction of one layer: what it computes, its weights, and which way it runs."""

    spec: CellSpec
    weights: CellWeights
    reverse: bool = False


@dataclass
class StackResult:
    """Shapes:
    y: (batch, seq_len, num_directions * hidden_out) of the last layer, or None.
    h_n: (num_layers * num_directions, batch, hidden_out).
    c_n: (num_layers * num_directions, batch, hidden_size) for LSTM, else None.
    last_output: (num_directions, batch, hidden_out) last emitted output per direction of
        the last layer.
    per_direction: the last layer's ScanResults, in direction order.
    """

    y: np.ndarray | None
    h_n: np.ndarray
    c_n: np.ndarray | None
    last_output: np.ndarray
    per_direction: list[ScanResult] = field(default_factory=list)


def as_float_input(x: object, dtype: np.dtype, name: str, check_finite: bool) -> np.ndarray:
    """Convert user data to the computation dtype; reject NaN/inf unless allowed.

    NaN or inf in a recurrent input spreads to every later step of that sequence, so by
    default it is refused with the position of the first bad value.
    """
    try:
        array = np.asarray(x)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise InputError(f"{name} cannot be read as an array ({err}); expected a "
                         "rectangular array of real numbers") from err
    if array.dtype.kind not in "fiub":
        raise InputError(f"{name} has dtype {array.dtype}; expected a real number array")
    source = array
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes inf
        array = np.asarray(array, dtype=dtype)
    if check_finite and not _all_finite(array):
        position = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        what = (f"a value ({float(source[position]):g}) too large for {array.dtype}"
                if np.isfinite(source[position]) else "a non-finite value")
        raise InputError(
            f"{name} holds {what} at index {position}; expected finite numbers "
            "(pass check_finite=False / --allow-nonfinite to run it as the frameworks do)"
        )
    return array


# Elements checked for NaN / inf at a time: a whole-array check would allocate a bool copy
# of the input, which grows with seq_len on long runs.
FINITE_CHECK_BLOCK = 1 << 16


def _all_finite(array: np.ndarray) -> bool:
    """``np.isfinite(array).all()`` in blocks along the longest axis (bounded memory)."""
    if array.size <= FINITE_CHECK_BLOCK:
        return bool(np.isfinite(array).all())
    axis = int(np.argmax(array.shape))
    length = array.shape[axis]
    step = max(1, FINITE_CHECK_BLOCK * length // array.size)
    for start in range(0, length, step):
        block = array[(slice(None),) * axis + (slice(start, start + step),)]
        if not np.isfinite(block).all():
            return False
    return True


class RecurrentStack:
    """``num_layers`` layers of one or two :class:`Direction` each.

    Args:
        layers: ``layers[l][d]``; every layer has the same number of directions.
        dtype: computation dtype (float32 by default).
        name: used in error messages.
    """

    def __init__(self, layers: list[list[Direction]], dtype: np.dtype = np.float32,
                 name: str = "recurrent") -> None:
        if not layers or any(len(layer) != len(layers[0]) for layer in layers):
            raise ShapeError(f"{name}: every layer needs the same number of directions")
        self.name = name
        self.dtype = np.dtype(dtype)
        self.layers = layers
        self.cells = [[PreparedCell(d.spec, d.weights, self.dtype) for d in layer]
                      for layer in layers]
        self._check_chain()

    def _check_chain(self) -> None:
        width = self.input_size
        for index, layer in enumerate(self.layers):
            for d in layer:
                if d.spec.input_size != width:
                    raise ShapeError(
                        f"{self.name}: layer {index} expects input_size={d.spec.input_size} "
                        f"but receives {width} features from the layer below"
                    )
            width = sum(d.spec.hidden_out for d in layer)

    @property
    def input_size(self) -> int:
        return self.layers[0][0].spec.input_size

    @property
    def num_directions(self) -> int:
        return len(self.layers[0])

    @property
    def kind(self) -> str:
        return self.layers[0][0].spec.kind

    def __call__(
        self,
        x: np.ndarray,
        h0: np.ndarray | None = None,
        c0: np.ndarray | None = None,
        *,
        mask: np.ndarray | None = None,
        masked_output: str = "zero",
        prev_output: np.ndarray | None = None,
        return_sequences: bool = True,
    ) -> StackResult:
        """Run the stack.

        Args:
            x: (batch, seq_len, input_size) in the stack's dtype.
            h0: (num_layers * num_directions, batch, hidden_out) or None for zeros.
            c0: (num_layers * num_directions, batch, hidden_size) or None (LSTM).
            mask: (batch, seq_len) bool, True at real steps; see :func:`core.scan.scan`.
            masked_output: ``"zero"`` or ``"previous"``.
            prev_output: (num_directions, batch, hidden_out) output before the first step.
            return_sequences: return the last layer's outputs for every step.
        """
        if x.ndim != 3:
            raise ShapeError(
                f"{self.name}: input has shape {x.shape}; expected (batch, seq_len, "
                f"input_size) with input_size={self.input_size}"
            )
        check_shape(self.name, "input", x.shape, (x.shape[0], x.shape[1], "input_size"),
                    input_size=self.input_size)
        if 0 in x.shape[:2]:
            raise ShapeError(f"{self.name}: input has shape {x.shape}; expected at least one "
                             "sequence and one time step (batch >= 1, seq_len >= 1)")
        batch = x.shape[0]
        self._check_states(h0, c0, batch)

        h_n, c_n, results = [], [], []
        last = len(self.layers) - 1
        for index, layer in enumerate(self.cells):
            results = []
            for d, cell in enumerate(layer):
                k = index * len(layer) + d
                results.append(scan(
                    cell, x,
                    None if h0 is None else h0[k],
                    None if c0 is None else c0[k],
                    reverse=self.layers[index][d].reverse,
                    mask=mask,
                    masked_output=masked_output,
                    prev_output=None if prev_output is None else prev_output[d],
                    return_sequences=return_sequences or index < last,
                ))
                h_n.append(results[-1].h)
                if results[-1].c is not None:
                    c_n.append(results[-1].c)
            if index < last or return_sequences:
                ys = [r.y for r in results]
                x = ys[0] if len(ys) == 1 else np.concatenate(ys, axis=-1)

        return StackResult(
            y=x if return_sequences else None,
            h_n=np.stack(h_n),
            c_n=np.stack(c_n) if c_n else None,
            last_output=np.stack([r.last_output for r in results]),
            per_direction=results,
        )

    def _check_states(self, h0: np.ndarray | None, c0: np.ndarray | None, batch: int) -> None:
        first = self.layers[0][0].spec
        count = len(self.layers) * self.num_directions
        sizes = dict(num_states=count, batch=batch, hidden_out=first.hidden_out,
                     hidden_size=first.hidden_size)
        if h0 is not None:
            check_shape(self.name, "initial h", np.shape(h0),
                        ("num_states", "batch", "hidden_out"), **sizes)
        if c0 is not None:
            if first.kind != "lstm":
                raise ShapeError(f"{self.name}: a cell state was given to a {first.kind}")
            check_shape(self.name, "initial c", np.shape(c0),
                        ("num_states", "batch", "hidden_size"), **sizes)

    def describe(self) -> list[str]:
        lines = []
        for index, layer in enumerate(self.layers):
            for d in layer:
                where = f"layer {index} {'reverse' if d.reverse else 'forward'}"
                lines.append(f"{where}: {d.spec.describe()}")
        return lines
