"""The canonical description of one recurrent cell: what it computes and its weights.

Canonical layout (the one the engine runs; every dialect maps onto it):

- gate blocks: LSTM ``i f g o`` (input, forget, cell, output), GRU ``r z n`` (reset,
  update, new), simple RNN one block;
- ``w_ih (num_gates * hidden_size, input_size)`` and ``w_hh (num_gates * hidden_size,
  hidden_out)``, applied as ``x @ w_ih.T`` (PyTorch's layout); ``hidden_out`` is
  ``proj_size`` when a projection is present, else ``hidden_size``;
- ``b_ih`` and ``b_hh`` ``(num_gates * hidden_size,)``, either may be absent; for a GRU
  the ``n`` part of ``b_hh`` sits inside the reset product when ``reset_after`` is true;
- LSTM peepholes ``(3, hidden_size)`` for ``i, f, o``; projection ``w_hr (proj_size,
  hidden_size)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .activations import SIGMOID, TANH, Activation
from .errors import ShapeError, UnsupportedFeatureError, check_shape

__all__ = ["GATES", "CellSpec", "CellWeights", "permute_gates", "gate_permutation"]

GATES: dict[str, tuple[str, ...]] = {"lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n"),
                                     "rnn": ("h",)}


@dataclass(frozen=True)
class CellSpec:
    """What one direction of a recurrent layer computes.

    Args:
        kind: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        input_size: features per time step.
        hidden_size: units of the cell (Keras ``units``).
        proj_size: LSTM output projection size, 0 for none (PyTorch ``proj_size``,
            TF1 ``num_proj``).
        gate_activation: the sigmoid-like function of the gates (Keras
            ``recurrent_activation``, ONNX ``f``).
        activation: the candidate's function (Keras ``activation``, ONNX ``g``); for a
            simple RNN the only function.
        cell_activation: LSTM function applied to the cell state before the output gate
            (ONNX ``h``); ``None`` means the same as ``activation``.
        reset_after: GRU only: apply the reset gate after the recurrent matmul (Keras
            ``reset_after=True``, ONNX ``linear_before_reset=1``, PyTorch, cuDNN).
        forget_bias: a constant added to the forget gate at run time (TF1 cells).
        cell_clip: clip the stored LSTM cell state to ``[-cell_clip, cell_clip]`` (TF1).
        proj_clip: clip the projected output (TF1 ``proj_clip``).
        clip: clip every activation's input to ``[-clip, clip]`` (ONNX ``clip``).
        clip_cell_output: with ``clip``, also clip the cell state fed to ``cell_activation``
            (the ONNX spec's reading; onnxruntime does not).
        input_forget: couple the forget gate to the input gate, ``f = 1 - i`` (ONNX).
        convention: a one-line description of the framework convention this was read with.
    """

    kind: str
    input_size: int
    hidden_size: int
    proj_size: int = 0
    gate_activation: Activation = SIGMOID
    activation: Activation = TANH
    cell_activation: Activation | None = None
    reset_after: bool = True
    forget_bias: float = 0.0
    cell_clip: float | None = None
    proj_clip: float | None = None
    clip: float | None = None
    clip_cell_output: bool = True
    input_forget: bool = False
    convention: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.kind not in GATES:
            raise UnsupportedFeatureError(
                f"cell kind {self.kind!r} is not supported; supported: lstm, gru, rnn"
            )
        for name in ("input_size", "hidden_size"):
            if int(getattr(self, name)) < 1:
                raise ShapeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.proj_size and self.kind != "lstm":
            raise UnsupportedFeatureError(f"proj_size is only defined for LSTM, not {self.kind}")

    @property
    def num_gates(self) -> int:
        return len(GATES[self.kind])

    @property
    def hidden_out(self) -> int:
        """Width of h (the output): ``proj_size`` if projecting, else ``hidden_size``."""
        return self.proj_size or self.hidden_size

    @property
    def output_activation(self) -> Activation:
        return self.cell_activation or self.activation

    def with_(self, **changes: Any) -> CellSpec:
        return replace(self, **changes)

    def describe(self) -> str:
        """One line naming what is computed, for ``inspect`` and logs."""
        parts = [
            f"{self.kind.upper()} input_size={self.input_size} hidden_size={self.hidden_size}",
            f"gates={' '.join(GATES[self.kind])}",
        ]
        if self.kind != "rnn":
            parts.append(f"gate_activation={self.gate_activation}")
        parts.append(f"activation={self.activation}")
        if self.kind == "lstm" and self.cell_activation is not None:
            parts.append(f"cell_activation={self.cell_activation}")
        if self.kind == "gru":
            parts.append("reset_after" if self.reset_after else "reset_before")
        for name in ("proj_size", "forget_bias", "cell_clip", "proj_clip", "clip"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value:g}")
        if self.input_forget:
            parts.append("input_forget")
        return " ".join(parts)


@dataclass
class CellWeights:
    """Canonical weights of one direction (see the module docstring for the layout)."""

    w_ih: np.ndarray
    w_hh: np.ndarray
    b_ih: np.ndarray | None = None
    b_hh: np.ndarray | None = None
    peephole: np.ndarray | None = None
    w_hr: np.ndarray | None = None

    def check(self, spec: CellSpec, context: str) -> None:
        """Raise ShapeError naming the first array that does not fit ``spec``."""
        sizes = dict(hidden_size=spec.hidden_size, input_size=spec.input_size)
        gates = f"{spec.num_gates} * hidden_size"
        check_shape(context, "w_ih", self.w_ih.shape, (gates, "input_size"), **sizes)
        if spec.proj_size:
            sizes["proj_size"] = spec.proj_size
            check_shape(context, "w_hh", self.w_hh.shape, (gates, "proj_size"), **sizes)
            if self.w_hr is None:
                raise ShapeError(f"{context}: proj_size={spec.proj_size} but no w_hr given")
            check_shape(context, "w_hr", self.w_hr.shape, ("proj_size", "hidden_size"), **sizes)
        else:
            check_shape(context, "w_hh", self.w_hh.shape, (gates, "hidden_size"), **sizes)
            if self.w_hr is not None:
                raise ShapeError(f"{context}: w_hr given but proj_size is 0")
        for name in ("b_ih", "b_hh"):
            bias = getattr(self, name)
            if bias is not None:
                check_shape(context, name, bias.shape, (gates,), **sizes)
        if self.peephole is not None:
            if spec.kind != "lstm":
                raise ShapeError(f"{context}: peepholes are only defined for LSTM")
            check_shape(context, "peephole", self.peephole.shape, (3, "hidden_size"), **sizes)

    def astype(self, dtype: np.dtype) -> CellWeights:
        def cast(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else np.ascontiguousarray(a, dtype=dtype)

        return CellWeights(*(cast(getattr(self, n)) for n in _WEIGHT_FIELDS))

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in _WEIGHT_FIELDS if getattr(self, n) is not None}


_WEIGHT_FIELDS = ("w_ih", "w_hh", "b_ih", "b_hh", "peephole", "w_hr")


def gate_permutation(source: tuple[str, ...] | str, target: tuple[str, ...] | str) -> list[int]:
    """Indices that reorder blocks stored in ``source`` order into ``target`` order.

    Example:
        >>> gate_permutation("ifco", "iofc")
        [0, 3, 1, 2]
    """
    source, target = tuple(source), tuple(target)
    if sorted(source) != sorted(target):
        raise ValueError(f"gate orders {source} and {target} name different gates")
    return [source.index(g) for g in target]


def permute_gates(
    array: np.ndarray, source: tuple[str, ...] | str, target: tuple[str, ...] | str, axis: int = 0
) -> np.ndarray:
    """Reorder the equal gate blocks of ``array`` along ``axis`` from ``source`` to ``target``.

    Example:
        >>> permute_gates(np.arange(4), "ifco", "iofc").tolist()
        [0, 3, 1, 2]
    """
    order = gate_permutation(source, target)
    blocks = np.split(np.asarray(array), len(order), axis=axis)
    return np.concatenate([blocks[k] for k in order], axis=axis)
