"""PyTorch dialect: ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` and their cells.

PyTorch's layout is the canonical one, so the mapping only renames: per direction
``weight_ih (num_gates * hidden_size, input_size)``, ``weight_hh (num_gates * hidden_size,
hidden_out)``, ``bias_ih`` and ``bias_hh (num_gates * hidden_size,)`` (two biases, simply
summed, except the GRU's ``n`` block of ``bias_hh`` which sits inside ``r * (...)``), and
for ``proj_size > 0`` ``weight_hr (proj_size, hidden_size)``. Gates: LSTM ``i f g o``, GRU
``r z n`` (reset applied after the recurrent matmul), RNN one block with ``tanh`` or
``relu``. A module's parameters carry the suffix ``_l{layer}`` and ``_reverse`` for the
backward direction; cells have no suffix.

Sequence semantics reproduced here (checked against torch on CPU):

- ``output (batch, seq_len, num_directions * hidden_out)`` when ``batch_first`` (rnnparity's
  default for files), else ``(seq_len, batch, ...)``; directions concatenated forward first.
- ``h_n (num_layers * num_directions, batch, hidden_out)`` and ``c_n (..., hidden_size)``,
  ordered ``[l0 forward, l0 reverse, l1 forward, ...]``; ``batch_first`` never applies to
  them, nor to ``h0`` / ``c0``.
- Lengths (packed sequences): each sequence runs over its own length; outputs past it are
  zero; ``h_n`` holds the state at its last valid step; the reverse direction starts at
  each sequence's own last valid step. Outputs keep the input's ``seq_len`` (torch's
  ``pad_packed_sequence(..., total_length=seq_len)``).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Mapping

import numpy as np

from ..activations import RELU, SIGMOID, TANH
from ..core.scan import lengths_to_mask
from ..engine import Direction, RecurrentStack
from ..errors import (
    FormatError,
    InputError,
    RnnParityWarning,
    ShapeError,
    UnsupportedFeatureError,
    check_shape,
)
from ..model import CallContext, Layer, Model, Node
from ..spec import CellSpec, CellWeights

__all__ = [
    "GATE_ORDER",
    "MODULE_KINDS",
    "CELL_KINDS",
    "SUPPORTED_ATTRIBUTES",
    "CONVENTION",
    "to_canonical",
    "from_canonical",
    "infer_kind",
    "layers_from_params",
    "params_from_layers",
    "TorchRecurrent",
    "TorchCell",
    "build_model",
    "from_live",
    "describe",
]

logger = logging.getLogger(__name__)

GATE_ORDER = {"lstm": "ifgo", "gru": "rzn", "rnn": "h"}

# PyTorch class name -> canonical cell kind.
MODULE_KINDS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn",
                "LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "rnn"}
CELL_KINDS = ("LSTMCell", "GRUCell", "RNNCell")
NUM_GATES = {"lstm": 4, "gru": 3, "rnn": 1}
NONLINEARITIES = {"tanh": TANH, "relu": RELU}

_MODULE_ATTRIBUTES = ("input_size", "hidden_size", "num_layers", "bias", "batch_first",
                      "dropout", "bidirectional")
SUPPORTED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "LSTM": _MODULE_ATTRIBUTES + ("proj_size",),
    "GRU": _MODULE_ATTRIBUTES,
    "RNN": _MODULE_ATTRIBUTES + ("nonlinearity",),
    "LSTMCell": ("input_size", "hidden_size", "bias"),
    "GRUCell": ("input_size", "hidden_size", "bias"),
    "RNNCell": ("input_size", "hidden_size", "bias", "nonlinearity"),
}

CONVENTION = (
    "PyTorch: gates LSTM i f g o / GRU r z n (reset after the recurrent matmul, "
    "b_hn inside r*(.)) / RNN tanh or relu; weight_ih (gates*hidden, input) applied as "
    "x @ W.T; bias_ih + bias_hh summed; h_n/c_n (layers*directions, batch, hidden)"
)

_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def _base_kind(kind: str) -> str:
    if kind not in MODULE_KINDS:
        raise UnsupportedFeatureError(
            f"torch module kind {kind!r} is not supported; supported: {', '.join(MODULE_KINDS)}"
        )
    return MODULE_KINDS[kind]


def infer_kind(weight_hh_shape: tuple[int, ...], weight_hr_shape: tuple[int, ...] | None,
               context: str = "torch state_dict", name: str = "weight_hh") -> str:
    """Module kind (``"LSTM"``, ``"GRU"``, ``"RNN"``) from the recurrent weight's shape.

    ``weight_hh`` is ``(num_gates * hidden_size, hidden_out)``; ``hidden_size`` is its
    column count, or ``weight_hr``'s column count when a projection is present.

    Example:
        >>> infer_kind((40, 10), None), infer_kind((30, 10), None), infer_kind((8, 8), None)
        ('LSTM', 'GRU', 'RNN')
    """
    if len(weight_hh_shape) != 2:
        raise ShapeError(f"{context}: {name} has shape {tuple(weight_hh_shape)}; "
                         "expected 2 dimensions (num_gates * hidden_size, hidden_out)")
    rows = int(weight_hh_shape[0])
    hidden = int(weight_hr_shape[1]) if weight_hr_shape is not None else int(weight_hh_shape[1])
    gates = rows // hidden if hidden and rows % hidden == 0 else 0
    found = {4: "LSTM", 3: "GRU", 1: "RNN"}.get(gates)
    if found is None or (weight_hr_shape is not None and found != "LSTM"):
        raise ShapeError(
            f"{context}: {name} has shape {tuple(weight_hh_shape)}; expected "
            "(num_gates * hidden_size, hidden_size) with num_gates 4 (LSTM), 3 (GRU) or "
            f"1 (RNN), hidden_size={hidden}"
        )
    return found


def to_canonical(kind: str, arrays: Mapping[str, Any], *, nonlinearity: str | None = None,
                 context: str | None = None,
                 key_names: Mapping[str, str] | None = None) -> tuple[CellSpec, CellWeights]:
    """One direction of one PyTorch layer (or a cell) -> canonical spec and weights.

    Args:
        kind: ``"LSTM"``, ``"GRU"``, ``"RNN"``, ``"LSTMCell"``, ``"GRUCell"``, ``"RNNCell"``.
        arrays: ``weight_ih``, ``weight_hh`` and optionally ``bias_ih``, ``bias_hh``,
            ``weight_hr`` (no ``_l0`` suffix).
        nonlinearity: ``"tanh"`` (default) or ``"relu"``; RNN and RNNCell only.
        context: prefix of error messages (module and direction).
        key_names: display names of the arrays in error messages (e.g. the stored key).

    Returns:
        ``(spec, weights)``; the arrays are passed through unchanged (no copy, no cast).

    Raises:
        ShapeError: shapes contradict each other or the kind.
        UnsupportedFeatureError: an unknown kind, or ``relu`` for an LSTM/GRU.

    Shapes:
        weight_ih: (num_gates * hidden_size, input_size)
        weight_hh: (num_gates * hidden_size, hidden_out)
        bias_ih, bias_hh: (num_gates * hidden_size,)
        weight_hr: (proj_size, hidden_size)
    """
    base = _base_kind(kind)
    context = context or f"torch {kind}"
    names = {n: (key_names or {}).get(n, n) for n in _PARAM_NAMES}
    unknown = sorted(set(arrays) - set(_PARAM_NAMES))
    if unknown:
        raise InputError(f"{context}: unknown arrays {unknown}; expected {list(_PARAM_NAMES)}")
    for required in ("weight_ih", "weight_hh"):
        if arrays.get(required) is None:
            raise FormatError(f"{context}: {names[required]} is missing")
    activation = _activation(kind, nonlinearity, context)

    a = {n: (None if arrays.get(n) is None else np.asarray(arrays[n])) for n in _PARAM_NAMES}
    w_ih, w_hh, w_hr = a["weight_ih"], a["weight_hh"], a["weight_hr"]
    for n in ("weight_ih", "weight_hh", "weight_hr"):
        if a[n] is not None and a[n].ndim != 2:
            raise ShapeError(f"{context}: {names[n]} has shape {a[n].shape}; expected 2 "
                             "dimensions")
    if w_hr is not None and (base != "lstm" or kind in CELL_KINDS):
        raise UnsupportedFeatureError(
            f"{context}: {names['weight_hr']} (proj_size) exists only for nn.LSTM, not {kind}")

    gates = NUM_GATES[base]
    proj = int(w_hr.shape[0]) if w_hr is not None else 0
    hidden = int(w_hr.shape[1]) if w_hr is not None else int(w_hh.shape[0]) // gates
    if hidden < 1:
        raise ShapeError(f"{context}: {names['weight_hh']} has shape {w_hh.shape}; "
                         f"expected ({gates} * hidden_size, hidden_size) with hidden_size >= 1")
    _check_direction(kind, a, names, context, gates, hidden, proj)

    spec = CellSpec(kind=base, input_size=int(w_ih.shape[1]), hidden_size=hidden,
                    proj_size=proj, gate_activation=SIGMOID, activation=activation,
                    reset_after=True, convention=f"{context} ({CONVENTION})")
    weights = CellWeights(w_ih=w_ih, w_hh=w_hh, b_ih=a["bias_ih"], b_hh=a["bias_hh"],
                          w_hr=w_hr)
    return spec, weights


def _activation(kind: str, nonlinearity: str | None, context: str):
    if nonlinearity is None:
        return TANH
    if nonlinearity not in NONLINEARITIES:
        raise UnsupportedFeatureError(
            f"{context}: nonlinearity={nonlinearity!r} is not supported; torch allows "
            "'tanh' and 'relu'")
    if nonlinearity != "tanh" and MODULE_KINDS[kind] != "rnn":
        raise UnsupportedFeatureError(
            f"{context}: nonlinearity={nonlinearity!r} applies only to RNN / RNNCell, not "
            f"{kind}")
    return NONLINEARITIES[nonlinearity]


def _check_direction(kind: str, a: dict[str, np.ndarray | None], names: dict[str, str],
                     context: str, gates: int, hidden: int, proj: int) -> None:
    w_ih, w_hh = a["weight_ih"], a["weight_hh"]
    if w_ih.shape[0] != w_hh.shape[0]:
        raise ShapeError(
            f"{context}: {names['weight_ih']} has {w_ih.shape[0]} rows but "
            f"{names['weight_hh']} has {w_hh.shape[0]} (shapes {w_ih.shape} and {w_hh.shape}); "
            f"both must be {gates} * hidden_size for {kind}")
    sizes = dict(hidden_size=hidden, hidden_out=proj or hidden)
    gate_rows = f"{gates} * hidden_size"
    try:
        check_shape(context, names["weight_hh"], w_hh.shape, (gate_rows, "hidden_out"),
                    **sizes)
    except ShapeError as err:
        ratio = w_hh.shape[0] / w_hh.shape[1] if w_hh.shape[1] else 0
        other = {4.0: "LSTM", 3.0: "GRU", 1.0: "RNN"}.get(ratio)
        if other is None or other == kind.removesuffix("Cell"):
            raise
        article = "a" if other == "GRU" else "an"
        hint = f"{names['weight_hh']}'s shape is that of {article} {other}; check the kind"
        raise ShapeError(f"{err}; hint: {hint}", hint=hint) from None
    for n in ("bias_ih", "bias_hh"):
        if a[n] is not None:
            check_shape(context, names[n], a[n].shape, (gate_rows,), **sizes)


def from_canonical(spec: CellSpec, weights: CellWeights, kind: str | None = None,
                   ) -> dict[str, np.ndarray]:
    """Canonical spec and weights -> the arrays of one PyTorch direction (no suffix).

    Args:
        spec: what the direction computes; it must be expressible in torch.
        weights: canonical weights.
        kind: target module (default ``LSTM``/``GRU``/``RNN`` from ``spec.kind``). For an
            RNN the nonlinearity is ``spec.activation.name``.

    Returns:
        ``weight_ih``, ``weight_hh``, ``bias_ih``/``bias_hh`` when the spec has a bias
        (a missing one of the two is written as zeros), and ``weight_hr`` with a
        projection. Arrays are the same objects (no copy).

    Raises:
        UnsupportedFeatureError: torch cannot express the spec (GRU reset before the
            matmul, non-sigmoid gates, other activations, peepholes, clipping,
            forget_bias, input_forget, a projection on a cell).
    """
    kind = kind or {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[spec.kind]
    if _base_kind(kind) != spec.kind:
        raise UnsupportedFeatureError(f"a {spec.kind} cell cannot be written as torch {kind}")
    _check_expressible(spec, weights, kind)
    weights.check(spec, f"torch {kind}")

    out = {"weight_ih": weights.w_ih, "weight_hh": weights.w_hh}
    if weights.b_ih is not None or weights.b_hh is not None:
        zeros = np.zeros(spec.num_gates * spec.hidden_size, weights.w_ih.dtype)
        out["bias_ih"] = zeros if weights.b_ih is None else weights.b_ih
        out["bias_hh"] = zeros if weights.b_hh is None else weights.b_hh
    if weights.w_hr is not None:
        out["weight_hr"] = weights.w_hr
    return out


def _check_expressible(spec: CellSpec, weights: CellWeights, kind: str) -> None:
    """Raise UnsupportedFeatureError naming the first feature torch has no way to express."""
    problems = []
    if spec.kind != "rnn" and spec.gate_activation != SIGMOID:
        problems.append(f"gate_activation={spec.gate_activation} (torch gates use sigmoid)")
    allowed = (TANH, RELU) if spec.kind == "rnn" else (TANH,)
    if spec.activation not in allowed:
        problems.append(f"activation={spec.activation} (torch {kind} allows "
                        f"{', '.join(a.name for a in allowed)})")
    if spec.cell_activation is not None and spec.cell_activation != spec.activation:
        problems.append(f"cell_activation={spec.cell_activation} (torch uses tanh)")
    if spec.kind == "gru" and not spec.reset_after:
        problems.append("GRU reset gate applied before the recurrent matmul (Keras "
                        "reset_after=False, ONNX linear_before_reset=0); torch applies it after")
    if spec.forget_bias:
        problems.append(f"forget_bias={spec.forget_bias:g} (fold it into bias_ih's f block "
                        "first; torch has no run-time forget bias)")
    for name in ("cell_clip", "proj_clip", "clip"):
        if getattr(spec, name) is not None:
            problems.append(f"{name}={getattr(spec, name):g} (torch does not clip)")
    if spec.input_forget:
        problems.append("input_forget (coupled input and forget gates)")
    if weights.peephole is not None:
        problems.append("peephole connections")
    if spec.proj_size and kind in CELL_KINDS:
        problems.append(f"proj_size={spec.proj_size} on a cell (only nn.LSTM projects)")
    if problems:
        raise UnsupportedFeatureError(
            f"torch {kind} cannot express {problems[0]}"
            + (f"; also: {'; '.join(problems[1:])}" if problems[1:] else ""))


def _suffix(layer: int, reverse: bool) -> str:
    return f"_l{layer}{'_reverse' if reverse else ''}"


def layers_from_params(kind: str, params: Mapping[str, Any], *, num_layers: int = 1,
                       bidirectional: bool = False, nonlinearity: str | None = None,
                       context: str | None = None,
                       key_names: Mapping[str, str] | None = None) -> list[list[Direction]]:
    """A module's parameters by torch name (``weight_ih_l0``, ...) -> ``layers[l][d]``.

    For a cell kind ``params`` holds the unsuffixed names and the result is one layer of
    one direction. Shapes are checked across layers: layer ``l > 0`` takes
    ``num_directions * hidden_out`` features, and every direction has the same sizes.
    """
    context = context or f"torch {kind}"
    key_names = key_names or {}
    if kind in CELL_KINDS:
        names = {n: key_names.get(n, n) for n in _PARAM_NAMES}
        spec, weights = to_canonical(kind, _pick(params, ""), nonlinearity=nonlinearity,
                                     context=context, key_names=names)
        return [[Direction(spec, weights)]]

    _check_param_names(params, num_layers, bidirectional, context)
    layers: list[list[Direction]] = []
    first: CellSpec | None = None
    for layer in range(num_layers):
        directions = []
        for reverse in (False, True)[: 1 + bidirectional]:
            sfx = _suffix(layer, reverse)
            names = {n: key_names.get(n + sfx, n + sfx) for n in _PARAM_NAMES}
            spec, weights = to_canonical(kind, _pick(params, sfx), nonlinearity=nonlinearity,
                                         context=context, key_names=names)
            if first is None:
                first = spec
            _check_against_first(spec, first, names, context, layer, 1 + bidirectional)
            directions.append(Direction(spec, weights, reverse=reverse))
        layers.append(directions)
    return layers


def _pick(params: Mapping[str, Any], sfx: str) -> dict[str, Any]:
    return {n: params[n + sfx] for n in _PARAM_NAMES if params.get(n + sfx) is not None}


def _check_param_names(params: Mapping[str, Any], num_layers: int, bidirectional: bool,
                       context: str) -> None:
    expected = set()
    for layer in range(num_layers):
        for reverse in (False, True)[: 1 + bidirectional]:
            expected |= {n + _suffix(layer, reverse) for n in _PARAM_NAMES}
    unknown = sorted(set(params) - expected)
    if unknown:
        raise FormatError(f"{context}: unexpected parameters {unknown} for num_layers="
                          f"{num_layers}, bidirectional={bidirectional}")
    has_bias = {k for k in params if k.startswith("bias_")}
    if has_bias:
        wanted = {k for k in expected if k.startswith("bias_")}
        missing = sorted(wanted - has_bias)
        if missing:
            raise FormatError(f"{context}: some biases are present but {missing} are missing")
    has_proj = {k for k in params if k.startswith("weight_hr")}
    if has_proj:
        missing = sorted({k for k in expected if k.startswith("weight_hr")} - has_proj)
        if missing:
            raise FormatError(f"{context}: some projections are present but {missing} are "
                              "missing")


def _check_against_first(spec: CellSpec, first: CellSpec, names: dict[str, str], context: str,
                         layer: int, num_directions: int) -> None:
    sizes = dict(hidden_size=first.hidden_size, hidden_out=first.hidden_out)
    if spec.hidden_size != first.hidden_size or spec.proj_size != first.proj_size:
        gates = f"{spec.num_gates} * hidden_size"
        check_shape(context, names["weight_hh"], (spec.num_gates * spec.hidden_size,
                    spec.hidden_out), (gates, "hidden_out"), **sizes)
        raise ShapeError(f"{context}: {names['weight_hr']} has proj_size={spec.proj_size}; "
                         f"expected {first.proj_size} as in layer 0")
    width = "input_size" if layer == 0 else "num_directions * hidden_out"
    if layer == 0:
        sizes["input_size"] = first.input_size
    else:
        sizes["num_directions"] = num_directions
    check_shape(context, names["weight_ih"], (spec.num_gates * spec.hidden_size,
                spec.input_size), (f"{spec.num_gates} * hidden_size", width), **sizes)


def params_from_layers(kind: str, layers: list[list[Direction]]) -> dict[str, np.ndarray]:
    """``layers[l][d]`` -> a torch state_dict (``weight_ih_l0``, ...) for ``kind``.

    The inverse of :func:`layers_from_params`; cells give unsuffixed names.
    """
    out: dict[str, np.ndarray] = {}
    for index, layer in enumerate(layers):
        for direction in layer:
            arrays = from_canonical(direction.spec, direction.weights, kind)
            sfx = "" if kind in CELL_KINDS else _suffix(index, direction.reverse)
            out.update({name + sfx: value for name, value in arrays.items()})
    return out


def _check_lengths(lengths: Any, batch: int, seq_len: int, context: str) -> np.ndarray | None:
    """Validated per-sequence lengths -> (batch, seq_len) mask, or None when all are full."""
    array = np.asarray(lengths)
    if array.dtype.kind not in "iuf" or array.ndim != 1:
        raise InputError(f"{context}: lengths have shape {array.shape} and dtype "
                         f"{array.dtype}; expected (batch,) integers")
    check_shape(context, "lengths", array.shape, ("batch",), batch=batch)
    if array.dtype.kind == "f" and not np.array_equal(array, np.round(array)):
        raise InputError(f"{context}: lengths must be whole numbers, got {array.tolist()}")
    array = array.astype(np.int64)
    if array.min() < 1 or array.max() > seq_len:
        raise InputError(f"{context}: lengths {array.tolist()} must lie in [1, seq_len="
                         f"{seq_len}] (torch refuses empty sequences)")
    if (array == seq_len).all():
        return None
    return lengths_to_mask(array, seq_len)


class _TorchLayer(Layer):
    """What torch modules and cells share: one engine stack, inputs (x, h0[, c0])."""

    stack: RecurrentStack
    is_lstm: bool

    def recurrent_stack(self, dtype: np.dtype) -> RecurrentStack:
        """The engine stack this layer runs (for ``Model.stepper``)."""
        return self.stack

    @property
    def input_names(self) -> list[str]:
        return ["input", "h0", "c0"] if self.is_lstm else ["input", "h0"]


class TorchRecurrent(_TorchLayer):
    """``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` with every option, on the one engine.

    Inputs (tensor order): ``input``, then optional ``h0`` and, for LSTM, ``c0``.
    Outputs: ``output``, ``h_n`` and, for LSTM, ``c_n``.

    Shapes:
        input: (batch, seq_len, input_size) if batch_first else (seq_len, batch,
            input_size); (seq_len, input_size) for one unbatched sequence.
        h0, h_n: (num_layers * num_directions, batch, hidden_out).
        c0, c_n: (num_layers * num_directions, batch, hidden_size).
        output: like input, with num_directions * hidden_out features.
    """

    takes_lengths = True

    def __init__(self, name: str, module_kind: str, layers: list[list[Direction]], *,
                 batch_first: bool = True, dtype: Any = np.float32,
                 nonlinearity: str = "tanh", dropout: float = 0.0) -> None:
        super().__init__(name)
        if module_kind in CELL_KINDS or module_kind not in MODULE_KINDS:
            raise UnsupportedFeatureError(f"TorchRecurrent runs LSTM/GRU/RNN, not {module_kind}")
        self.module_kind = module_kind
        self.kind = f"torch.nn.{module_kind}"
        self.stack = RecurrentStack(layers, dtype, name or module_kind)
        self.batch_first = bool(batch_first)
        self.nonlinearity = nonlinearity
        self.dropout = float(dropout)
        self.is_lstm = module_kind == "LSTM"
        self.can_stream = self.stack.num_directions == 1

    @property
    def output_names(self) -> list[str]:
        return ["output", "h_n", "c_n"] if self.is_lstm else ["output", "h_n"]

    def call(self, inputs: list[Any], masks: list[Any], ctx: CallContext,
             ) -> tuple[list[np.ndarray], list[None]]:
        x = np.asarray(inputs[0])
        h0 = inputs[1] if len(inputs) > 1 else None
        c0 = inputs[2] if len(inputs) > 2 else None
        if x.ndim not in (2, 3):
            raise ShapeError(f"{self.name}: input has shape {x.shape}; expected (batch, "
                             "seq_len, input_size), or (seq_len, input_size) unbatched")
        if h0 is None and c0 is None and self.name in ctx.states:
            h0, *rest = ctx.states[self.name]
            c0 = rest[0] if rest else None

        unbatched = x.ndim == 2
        if unbatched:
            if ctx.lengths is not None:
                raise InputError(f"{self.name}: lengths need batched input (batch, seq_len, "
                                 "input_size)")
            x = x[None]
            h0 = None if h0 is None else np.asarray(h0)[:, None]
            c0 = None if c0 is None else np.asarray(c0)[:, None]
        elif not self.batch_first:
            x = x.transpose(1, 0, 2)
        x = np.ascontiguousarray(x, dtype=self.stack.dtype)
        mask = None if ctx.lengths is None else _check_lengths(
            ctx.lengths, x.shape[0], x.shape[1], self.name)

        result = self.stack(x, _state(h0, self.stack.dtype), _state(c0, self.stack.dtype),
                            mask=mask, masked_output="zero")
        if ctx.keep_state:
            ctx.states[self.name] = [result.h_n] + ([result.c_n] if self.is_lstm else [])

        y, h_n, c_n = result.y, result.h_n, result.c_n
        if unbatched:
            y, h_n = y[0], h_n[:, 0]
            c_n = None if c_n is None else c_n[:, 0]
        elif not self.batch_first:
            y = np.ascontiguousarray(y.transpose(1, 0, 2))
        outputs = [y, h_n] + ([c_n] if self.is_lstm else [])
        return outputs, [None] * len(outputs)

    def describe(self) -> dict[str, Any]:
        first = self.stack.layers[0][0].spec
        info: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "convention": CONVENTION,
            "input_size": first.input_size,
            "hidden_size": first.hidden_size,
            "num_layers": len(self.stack.layers),
            "bidirectional": self.stack.num_directions == 2,
            "bias": first_has_bias(self.stack.layers),
            "batch_first": self.batch_first,
        }
        if self.is_lstm:
            info["proj_size"] = first.proj_size
        if self.module_kind == "RNN":
            info["nonlinearity"] = self.nonlinearity
        if self.dropout:
            info["dropout"] = f"{self.dropout:g} (not applied: inference, as torch in eval())"
        info["inputs"] = ", ".join(self.input_names) + " (h0/c0 optional, zeros by default)"
        info["outputs"] = ", ".join(self.output_names)
        info["lengths"] = ("packed-sequence semantics: zeros past each length, h_n at each "
                           "sequence's last valid step")
        info["streaming"] = ("yes" if self.can_stream else
                             "no (a reverse direction needs the whole sequence)")
        info["directions"] = self.stack.describe()
        return info


def first_has_bias(layers: list[list[Direction]]) -> bool:
    weights = layers[0][0].weights
    return weights.b_ih is not None or weights.b_hh is not None


def _state(value: Any, dtype: np.dtype) -> np.ndarray | None:
    return None if value is None else np.asarray(value, dtype=dtype)


class TorchCell(_TorchLayer):
    """``nn.LSTMCell`` / ``nn.GRUCell`` / ``nn.RNNCell``: one step, or a sequence step by step.

    Inputs (tensor order): ``input``, optional ``h0`` and, for LSTMCell, ``c0``.
    Outputs: ``h`` and, for LSTMCell, ``c``.

    A ``(batch, input_size)`` input is one step, exactly the cell's call: ``h`` and ``c``
    are ``(batch, hidden_size)``. A ``(batch, seq_len, input_size)`` input is run step by
    step feeding each step's state to the next (a Python loop over the cell in torch):
    ``h`` is then every step's hidden state ``(batch, seq_len, hidden_size)`` and ``c`` the
    final cell state ``(batch, hidden_size)``. A ``(input_size,)`` input is one unbatched
    step.
    """

    takes_lengths = True

    def __init__(self, name: str, module_kind: str, layers: list[list[Direction]], *,
                 dtype: Any = np.float32, nonlinearity: str = "tanh") -> None:
        super().__init__(name)
        if module_kind not in CELL_KINDS:
            raise UnsupportedFeatureError(f"TorchCell runs cells, not {module_kind}")
        if len(layers) != 1 or len(layers[0]) != 1:
            raise ShapeError(f"{name}: a cell has one layer of one direction")
        self.module_kind = module_kind
        self.kind = f"torch.nn.{module_kind}"
        self.stack = RecurrentStack(layers, dtype, name or module_kind)
        self.nonlinearity = nonlinearity
        self.is_lstm = module_kind == "LSTMCell"
        self.can_stream = True

    @property
    def output_names(self) -> list[str]:
        return ["h", "c"] if self.is_lstm else ["h"]

    def call(self, inputs: list[Any], masks: list[Any], ctx: CallContext,
             ) -> tuple[list[np.ndarray], list[None]]:
        x = np.asarray(inputs[0])
        h0 = inputs[1] if len(inputs) > 1 else None
        c0 = inputs[2] if len(inputs) > 2 else None
        if x.ndim not in (1, 2, 3):
            raise ShapeError(f"{self.name}: input has shape {x.shape}; expected (batch, "
                             "input_size) for one step or (batch, seq_len, input_size)")
        if ctx.lengths is not None:
            raise InputError(f"{self.name}: torch cells take no lengths; run each sequence "
                             "over its own steps instead")
        if h0 is None and c0 is None and self.name in ctx.states:
            h0, *rest = ctx.states[self.name]
            c0 = rest[0] if rest else None

        unbatched, one_step = x.ndim == 1, x.ndim < 3
        if unbatched:
            x = x.reshape(1, 1, -1)
        elif one_step:
            x = x[:, None]
        h0, c0 = (None if s is None else np.asarray(s, self.stack.dtype).reshape(
            1, x.shape[0], -1) for s in (h0, c0))
        result = self.stack(np.ascontiguousarray(x, dtype=self.stack.dtype), h0, c0)

        h_last, c_last = result.h_n[0], None if result.c_n is None else result.c_n[0]
        if ctx.keep_state:
            ctx.states[self.name] = [h_last] + ([c_last] if self.is_lstm else [])
        h = h_last if one_step else result.y
        if unbatched:
            h, c_last = h[0], None if c_last is None else c_last[0]
        outputs = [h] + ([c_last] if self.is_lstm else [])
        return outputs, [None] * len(outputs)

    def describe(self) -> dict[str, Any]:
        spec = self.stack.layers[0][0].spec
        info: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "convention": CONVENTION,
            "input_size": spec.input_size,
            "hidden_size": spec.hidden_size,
            "bias": first_has_bias(self.stack.layers),
        }
        if self.module_kind == "RNNCell":
            info["nonlinearity"] = self.nonlinearity
        info["inputs"] = ", ".join(self.input_names) + " (states optional, zeros by default)"
        info["outputs"] = (", ".join(self.output_names) + ": (batch, input_size) input = one "
                           "step; (batch, seq_len, input_size) = stepped over the sequence, h "
                           "for every step, c final")
        info["directions"] = self.stack.describe()
        return info


def build_model(kind: str, params: Mapping[str, Any], *, name: str = "",
                num_layers: int = 1, bidirectional: bool = False,
                nonlinearity: str | None = None, batch_first: bool = True,
                dtype: Any = np.float32, dropout: float = 0.0, source: str = "",
                meta: dict[str, Any] | None = None,
                key_names: Mapping[str, str] | None = None) -> Model:
    """A one-layer :class:`Model` from a module's parameters by torch name.

    Args:
        kind: ``"LSTM"``, ``"GRU"``, ``"RNN"`` or a cell kind.
        params: ``weight_ih_l0``, ... (cells: ``weight_ih``, ...), NumPy arrays.
        name: the layer name (the module's prefix in its state_dict).
        num_layers, bidirectional: the module's structure (ignored for cells).
        nonlinearity: ``"tanh"`` or ``"relu"`` for RNN / RNNCell.
        batch_first: the layout of ``input`` and ``output``.
        dtype: computation dtype.
        dropout: recorded only: torch applies it in training mode alone.
        source, meta: for ``inspect``.
        key_names: torch name -> the name the array was stored under, for errors.
    """
    context = f"torch {kind} {name!r}" if name else f"torch {kind}"
    layers = layers_from_params(kind, params, num_layers=num_layers, bidirectional=bidirectional,
                                nonlinearity=nonlinearity, context=context, key_names=key_names)
    label = name or kind.lower()
    if kind in CELL_KINDS:
        layer: Layer = TorchCell(label, kind, layers, dtype=dtype,
                                 nonlinearity=nonlinearity or "tanh")
    else:
        layer = TorchRecurrent(label, kind, layers, batch_first=batch_first, dtype=dtype,
                               nonlinearity=nonlinearity or "tanh", dropout=dropout)
    inputs, outputs = layer.input_names, layer.output_names
    meta = {"framework": "pytorch", **(meta or {})}
    logger.info("%s: torch %s, %d layer(s)", label, kind, len(layers))
    # Only output / h (the first output) has a time axis; h_n and c_n are 3-D states.
    # batch_first=False modules take and give (seq_len, batch, ...): streams split axis 0.
    time_major = kind not in CELL_KINDS and not batch_first
    return Model([Node(layer, inputs, outputs)], inputs[:1], outputs, source=source,
                 meta=meta, dtype=dtype, optional_inputs=inputs[1:],
                 sequence_outputs=outputs[:1],
                 time_axes={"input": 0, "output": 0} if time_major else None)


def describe() -> dict[str, Any]:
    """The convention this dialect applies, as data (for docs and ``inspect``)."""
    return {
        "framework": "pytorch",
        "gate_order": dict(GATE_ORDER),
        "weights": "weight_ih (gates*hidden, input), weight_hh (gates*hidden, hidden_out), "
                   "applied as x @ W.T",
        "biases": "bias_ih and bias_hh, summed; GRU n-block of bias_hh inside r * (.)",
        "gru": "reset gate after the recurrent matmul (Keras reset_after=True)",
        "projection": "LSTM proj_size: h = W_hr (o * tanh(c)); weight_hh is (4H, proj_size)",
        "states": "h_n/c_n (num_layers*num_directions, batch, hidden), [l0 fwd, l0 rev, ...]",
        "lengths": "packed sequences: zeros past each length, h_n at each last valid step",
        "supported_attributes": {k: list(v) for k, v in SUPPORTED_ATTRIBUTES.items()},
    }


def from_live(module: Any, **overrides: Any) -> Model:
    """Build a :class:`Model` from a live ``torch.nn`` LSTM/GRU/RNN module or cell.

    Args:
        module: an ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``, ``nn.LSTMCell``, ``nn.GRUCell`` or
            ``nn.RNNCell`` (subclasses too); or any module together with ``layer=`` naming
            one of those inside it (a name from ``module.named_modules()``).
        **overrides: ``layer``, ``batch_first`` (default: the module's), ``dtype``
            (``"float32"`` default or ``"float64"``), ``name``.

    Raises:
        UnsupportedFeatureError: the module is not one of the six kinds.
        InputError: an unknown override.
    """
    known = ("layer", "batch_first", "dtype", "name")
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise InputError(f"unknown overrides {unknown}; known: {list(known)}")
    torch = _import_torch()
    module, path = _pick_submodule(module, overrides.get("layer"), torch)
    kind = _live_kind(module, torch)
    params = _live_params(module, kind, torch)

    attrs = {a: getattr(module, a) for a in SUPPORTED_ATTRIBUTES[kind] if hasattr(module, a)}
    dropout = float(attrs.get("dropout", 0.0))
    if dropout and module.training:
        where = f"{kind} {path!r}" if path else kind
        warnings.warn(f"{where} is in training mode with dropout={dropout:g}; rnnparity "
                      "computes inference (torch's eval())", RnnParityWarning, stacklevel=3)
    name = overrides.get("name") or path or kind.lower()
    dtype = np.dtype(overrides.get("dtype", "float32"))
    batch_first = overrides.get("batch_first", attrs.get("batch_first", True))
    meta = {"module": path or type(module).__name__, "module_attributes": attrs}
    return build_model(kind, params, name=name, num_layers=int(attrs.get("num_layers", 1)),
                       bidirectional=bool(attrs.get("bidirectional", False)),
                       nonlinearity=attrs.get("nonlinearity"), batch_first=bool(batch_first),
                       dtype=dtype, dropout=dropout, source=f"live torch {type(module).__name__}",
                       meta=meta)


def _import_torch():
    from .._optional import import_optional

    return import_optional("torch")


def _live_kind(module: Any, torch: Any) -> str:
    for kind in ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell"):
        if isinstance(module, getattr(torch.nn, kind)):
            return kind
    raise UnsupportedFeatureError(
        f"{type(module).__name__} is not a torch recurrent module; supported: "
        f"{', '.join(MODULE_KINDS)} (or pass layer= naming one inside it)")


def _pick_submodule(module: Any, layer: str | None, torch: Any) -> tuple[Any, str]:
    if layer is None:
        return module, ""
    found = dict(module.named_modules())
    if layer not in found:
        recurrent = [n for n, m in found.items() if n and _is_recurrent(m, torch)]
        raise InputError(f"no submodule named {layer!r}; recurrent submodules: {recurrent}")
    return found[layer], layer


def _is_recurrent(module: Any, torch: Any) -> bool:
    return isinstance(module, (torch.nn.RNNBase, torch.nn.RNNCellBase))


def _live_params(module: Any, kind: str, torch: Any) -> dict[str, np.ndarray]:
    if kind in CELL_KINDS:
        names = list(_PARAM_NAMES)
    else:
        names = [n + _suffix(layer, reverse) for layer in range(module.num_layers)
                 for reverse in (False, True)[: 1 + bool(module.bidirectional)]
                 for n in _PARAM_NAMES]
    params = {}
    for name in names:
        value = getattr(module, name, None)
        if value is not None:
            tensor = value.detach().cpu()
            if not tensor.dtype.is_floating_point:
                raise FormatError(f"{kind} parameter {name} has dtype {tensor.dtype}; "
                                  "expected floating point")
            if tensor.dtype not in (torch.float32, torch.float64):
                tensor = tensor.float()  # float16 / bfloat16 have no exact NumPy twin
            params[name] = tensor.numpy()
    return params
