"""ONNX dialect: the ``LSTM``, ``GRU`` and ``RNN`` operators, every attribute.

Layout of one node (``D`` = num_directions, 2 for ``direction="bidirectional"`` with index 0
forward and 1 backward):

- ``W (D, num_gates * hidden_size, input_size)``, ``R (D, num_gates * hidden_size,
  hidden_size)``, applied as ``x @ W.T`` (canonical, no transpose); gate blocks LSTM
  ``i o f c``, GRU ``z r h``, RNN one block;
- ``B (D, 2 * num_gates * hidden_size)`` = ``[Wb, Rb]``, both added; a GRU's ``Rb_h`` sits
  inside the reset product when ``linear_before_reset=1``;
- LSTM peepholes ``P (D, 3 * hidden_size)`` in order ``i o f``;
- ``activations``: 3 (LSTM ``f g h``), 2 (GRU ``f g``) or 1 (RNN) names per direction, the
  forward list first; ``activation_alpha`` / ``activation_beta`` are consumed in that order,
  each value only by a function that takes one (onnxruntime reads the two lists the same
  way, independently).

Two semantics (``semantics=`` when loading, ``--override semantics=onnxruntime`` in the CLI):

``"spec"`` (default) follows the operator text (opset 22): ``clip`` bounds the input of every
activation, the cell state fed to ``h`` included; a parameter missing from the alpha/beta
lists takes the default of the ONNX operator of that name (ThresholdedRelu 1.0, Affine 1.0
and 0.0; ScaledTanh has none and must be given); a sequence of length 0 keeps its initial
state in ``Y_h`` / ``Y_c``.

``"onnxruntime"`` reproduces onnxruntime's CPU kernels where they depart from the text:
the cell state is not clipped before ``h``; missing parameters default to 0 except LeakyRelu
(0.01), HardSigmoid (0.2, 0.5) and Elu (1.0); a sequence of length 0 gives zeros in ``Y_h`` /
``Y_c``. Both: ``input_forget=1`` computes ``f = 1 - i`` (the text names no formula;
onnxruntime uses this one); steps past a sequence's length give zeros in ``Y``; layout=1
runs although onnxruntime's CPU kernels refuse it.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from ..activations import SIGMOID, Activation
from ..core.scan import lengths_to_mask
from ..engine import Direction, RecurrentStack, as_float_input
from ..errors import (
    FormatError,
    InputError,
    ShapeError,
    UnsupportedFeatureError,
    check_shape,
)
from ..model import CallContext, Layer
from ..spec import GATES, CellSpec, CellWeights, permute_gates

__all__ = [
    "GATE_ORDER",
    "OP_KINDS",
    "SEMANTICS",
    "SUPPORTED_ATTRIBUTES",
    "INPUT_SLOTS",
    "OUTPUT_SLOTS",
    "to_canonical",
    "from_canonical",
    "resolve_activations",
    "OnnxRecurrent",
]

logger = logging.getLogger(__name__)

# ONNX gate order per kind, in the operator's own letters.
GATE_ORDER = {"lstm": "iofc", "gru": "zrh", "rnn": "h"}
# The same blocks named with canonical letters (ONNX LSTM c = cell = g; GRU h = new = n).
_CANONICAL_LETTERS = {"lstm": "iofg", "gru": "zrn", "rnn": "h"}
_PEEPHOLE_ORDER = "iof"  # ONNX P; canonical peepholes are i f o

OP_KINDS = {"LSTM": "lstm", "GRU": "gru", "RNN": "rnn"}
SEMANTICS = ("spec", "onnxruntime")
INPUT_SLOTS = ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")
OUTPUT_SLOTS = ("Y", "Y_h", "Y_c")
NUM_ACTIVATIONS = {"lstm": 3, "gru": 2, "rnn": 1}
DEFAULT_ACTIVATIONS = {"lstm": ("Sigmoid", "Tanh", "Tanh"), "gru": ("Sigmoid", "Tanh"),
                       "rnn": ("Tanh",)}

_COMMON = ("activation_alpha", "activation_beta", "activations", "clip", "direction",
           "hidden_size", "layout")
SUPPORTED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "LSTM": _COMMON + ("input_forget", "output_sequence"),
    "GRU": _COMMON + ("linear_before_reset", "output_sequence"),
    "RNN": _COMMON + ("output_sequence",),
}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}

# lower-case ONNX name -> (rnnparity name, takes alpha, takes beta)
_ACTIVATIONS: dict[str, tuple[str, bool, bool]] = {
    "relu": ("relu", False, False),
    "tanh": ("tanh", False, False),
    "sigmoid": ("sigmoid", False, False),
    "affine": ("affine", True, True),
    "leakyrelu": ("leaky_relu", True, False),
    "thresholdedrelu": ("thresholded_relu", True, False),
    "scaledtanh": ("scaled_tanh", True, True),
    "hardsigmoid": ("hard_sigmoid", True, True),
    "elu": ("elu", True, False),
    "softsign": ("softsign", False, False),
    "softplus": ("softplus", False, False),
}
_ONNX_NAMES = {
    "relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "affine": "Affine",
    "leaky_relu": "LeakyRelu", "thresholded_relu": "ThresholdedRelu",
    "scaled_tanh": "ScaledTanh", "hard_sigmoid": "HardSigmoid", "elu": "Elu",
    "softsign": "Softsign", "softplus": "Softplus",
}
# Defaults for a parameter the lists do not supply. "spec": the ONNX operator of the same
# name (Affine and ScaledTanh were experimental operators; ScaledTanh had no default).
# "onnxruntime": its rnn_helpers table, 0 for anything not listed there.
_PARAM_DEFAULTS: dict[str, dict[str, tuple[float, float] | None]] = {
    "spec": {"affine": (1.0, 0.0), "leakyrelu": (0.01, 0.0), "thresholdedrelu": (1.0, 0.0),
             "scaledtanh": None, "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)},
    "onnxruntime": {"affine": (0.0, 0.0), "leakyrelu": (0.01, 0.0),
                    "thresholdedrelu": (0.0, 0.0), "scaledtanh": (0.0, 0.0),
                    "hardsigmoid": (0.2, 0.5), "elu": (1.0, 0.0)},
}


def _check_semantics(semantics: str) -> str:
    if semantics not in SEMANTICS:
        raise InputError(f"semantics={semantics!r} is not known; expected one of {SEMANTICS}")
    return semantics


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def resolve_activations(
    kind: str, names: Sequence[Any] | None, alpha: Sequence[float] | None,
    beta: Sequence[float] | None, num_directions: int, semantics: str = "spec",
    context: str = "ONNX",
) -> list[Activation]:
    """ONNX ``activations`` with ``activation_alpha/beta`` -> one Activation per function.

    Args:
        kind: ``"lstm"``, ``"gru"`` or ``"rnn"``.
        names: the ``activations`` attribute (any letter case), or None for the defaults.
        alpha, beta: the attribute lists, consumed in order by the functions taking them.
        num_directions: 1 or 2; the list holds the forward functions first.
        semantics: ``"spec"`` or ``"onnxruntime"`` (defaults of missing parameters).
        context: prefix of error messages.

    Returns:
        ``num_directions * k`` activations, k = 3 (LSTM), 2 (GRU), 1 (RNN).

    Raises:
        UnsupportedFeatureError: an unknown function, or a ScaledTanh without parameters
            under ``"spec"`` (the operator text gives it no default).
        InputError: the list length does not fit the direction count.
    """
    count = NUM_ACTIVATIONS[kind] * num_directions
    if not names:
        names = list(DEFAULT_ACTIVATIONS[kind]) * num_directions
    names = [_text(n) for n in names]
    if len(names) != count:
        raise InputError(
            f"{context}: activations lists {len(names)} functions {names}; expected "
            f"{count} ({NUM_ACTIVATIONS[kind]} per direction, {num_directions} direction(s))"
        )
    alphas, betas = list(alpha or ()), list(beta or ())
    defaults = _PARAM_DEFAULTS[_check_semantics(semantics)]
    result = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATIONS:
            supported = ", ".join(_ONNX_NAMES[v[0]] for v in _ACTIVATIONS.values())
            raise UnsupportedFeatureError(
                f"{context}: activation {name!r} is not supported; supported: {supported}"
            )
        target, takes_alpha, takes_beta = _ACTIVATIONS[key]
        default = defaults.get(key, (0.0, 0.0))
        missing = (takes_alpha and not alphas) or (takes_beta and not betas)
        if missing and default is None:
            raise UnsupportedFeatureError(
                f"{context}: {name} needs activation_alpha and activation_beta values; the "
                "ONNX spec gives it no default (onnxruntime uses 0, 0: load with "
                "semantics='onnxruntime' to follow it)"
            )
        a = (alphas.pop(0) if alphas else default[0]) if takes_alpha else 0.0
        b = (betas.pop(0) if betas else default[1]) if takes_beta else 0.0
        result.append(Activation(target, float(a), float(b)))
    if alphas or betas:
        logger.debug("%s: %d alpha and %d beta values left unused", context, len(alphas),
                     len(betas))
    return result


def _direction_count(direction: Any, context: str) -> int:
    text = _text(direction)
    if text not in _DIRECTIONS:
        raise InputError(f"{context}: direction={text!r}; expected one of {list(_DIRECTIONS)}")
    return _DIRECTIONS[text]


def _check_attributes(op_type: str, attributes: Mapping[str, Any], context: str) -> None:
    if op_type not in SUPPORTED_ATTRIBUTES:
        raise UnsupportedFeatureError(
            f"{context}: operator {op_type!r} is not supported; supported: LSTM, GRU, RNN"
        )
    unknown = sorted(set(attributes) - set(SUPPORTED_ATTRIBUTES[op_type]))
    if unknown:
        raise UnsupportedFeatureError(
            f"{context}: attribute(s) {unknown} are not supported; supported: "
            f"{list(SUPPORTED_ATTRIBUTES[op_type])}"
        )
    _check_attribute_types(attributes, context)
    layout = int(attributes.get("layout", 0))
    if layout not in (0, 1):
        raise InputError(f"{context}: layout={layout}; expected 0 or 1")
    if op_type == "LSTM" and int(attributes.get("input_forget", 0)) not in (0, 1):
        raise InputError(f"{context}: input_forget={attributes['input_forget']}; expected 0/1")
    if op_type == "GRU" and int(attributes.get("linear_before_reset", 0)) not in (0, 1):
        raise InputError(f"{context}: linear_before_reset="
                         f"{attributes['linear_before_reset']}; expected 0 or 1")


# The ONNX attribute type of each attribute: a file may store any type under any name.
_ATTRIBUTE_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    "hidden_size": ("an int", (int, np.integer)), "layout": ("an int", (int, np.integer)),
    "input_forget": ("an int", (int, np.integer)),
    "linear_before_reset": ("an int", (int, np.integer)),
    "clip": ("a float", (float, int, np.number)), "direction": ("a string", (str, bytes)),
    "activations": ("a list of strings", (str, bytes)),
    "activation_alpha": ("a list of floats", (float, int, np.number)),
    "activation_beta": ("a list of floats", (float, int, np.number)),
}


def _check_attribute_types(attributes: Mapping[str, Any], context: str) -> None:
    for name, (what, types) in _ATTRIBUTE_TYPES.items():
        if name not in attributes:
            continue
        value = attributes[name]
        items = value if what.startswith("a list") and isinstance(value, (list, tuple)) \
            else [value] if not what.startswith("a list") else None
        if items is None or not all(isinstance(v, types) and not isinstance(v, bool)
                                    for v in items):
            raise InputError(f"{context}: attribute {name}={value!r}; expected {what}")
    if "hidden_size" in attributes and attributes["hidden_size"] < 1:
        raise InputError(f"{context}: hidden_size={attributes['hidden_size']}; expected a "
                         "positive integer")
    if "clip" in attributes and not attributes["clip"] > 0:
        raise InputError(f"{context}: clip={attributes['clip']}; expected a positive "
                         "threshold (cell inputs are clipped to [-clip, clip])")


def _convention(op_type: str, attributes: Mapping[str, Any], semantics: str) -> str:
    kind = OP_KINDS[op_type]
    parts = [f"ONNX {op_type}: gates {' '.join(GATE_ORDER[kind])}, B = [Wb, Rb]"]
    if kind == "lstm":
        parts.append("P = i o f")
    if kind == "gru":
        parts.append(f"linear_before_reset={int(attributes.get('linear_before_reset', 0))}")
    parts.append(f"layout={int(attributes.get('layout', 0))}")
    parts.append(f"semantics={semantics}")
    return ", ".join(parts)


def to_canonical(op_type: str, arrays: Mapping[str, Any], direction_index: int = 0,
                 **attributes: Any) -> tuple[CellSpec, CellWeights]:
    """One direction of an ONNX LSTM / GRU / RNN node -> canonical spec and weights.

    Args:
        op_type: ``"LSTM"``, ``"GRU"`` or ``"RNN"``.
        arrays: ``W``, ``R`` and optionally ``B``, ``P``, with their direction axis.
        direction_index: 0 (forward) or 1 (the backward half of a bidirectional node).
        **attributes: the node's attributes (``hidden_size``, ``direction``,
            ``activations``, ``activation_alpha``, ``activation_beta``, ``clip``,
            ``input_forget``, ``linear_before_reset``, ``layout``), plus ``semantics``
            (``"spec"`` or ``"onnxruntime"``) and ``context`` for error messages.

    Returns:
        ``(spec, weights)``; gate blocks reordered, values unchanged.

    Raises:
        ShapeError: an array does not fit the others.
        UnsupportedFeatureError: an unknown operator, attribute or activation.
        FormatError: W or R is missing.

    Shapes:
        W: (num_directions, num_gates * hidden_size, input_size)
        R: (num_directions, num_gates * hidden_size, hidden_size)
        B: (num_directions, 2 * num_gates * hidden_size)
        P: (num_directions, 3 * hidden_size)
    """
    semantics = _check_semantics(attributes.pop("semantics", "spec"))
    context = attributes.pop("context", None) or f"ONNX {op_type}"
    _check_attributes(op_type, attributes, context)
    kind = OP_KINDS[op_type]
    num_directions = _direction_count(attributes.get("direction", "forward"), context)
    W, R = arrays.get("W"), arrays.get("R")
    if W is None or R is None:
        raise FormatError(f"{context}: {'W' if W is None else 'R'} is missing; X, W and R "
                          "are required inputs")
    W, R = np.asarray(W), np.asarray(R)
    if W.ndim != 3 or R.ndim != 3:
        bad = "W" if W.ndim != 3 else "R"
        raise ShapeError(f"{context}: {bad} has shape {np.shape(arrays[bad])}; expected 3 "
                         "dimensions (num_directions, num_gates * hidden_size, ...)")
    hidden_size, input_size = R.shape[-1], W.shape[-1]
    declared = attributes.get("hidden_size")
    if declared is not None and int(declared) != hidden_size:
        raise ShapeError(f"{context}: R has shape {R.shape} but hidden_size={int(declared)}")
    G = len(GATE_ORDER[kind])
    sizes = dict(num_directions=num_directions, hidden_size=hidden_size,
                 input_size=input_size)
    gates = f"{G} * hidden_size"
    check_shape(context, "W", W.shape, ("num_directions", gates, "input_size"), **sizes)
    check_shape(context, "R", R.shape, ("num_directions", gates, "hidden_size"), **sizes)
    B, P = arrays.get("B"), arrays.get("P")
    if B is not None:
        B = np.asarray(B)
        check_shape(context, "B", B.shape, ("num_directions", f"2 * {gates}"), **sizes)
    if P is not None:
        if kind != "lstm":
            raise ShapeError(f"{context}: P (peepholes) is only defined for LSTM")
        P = np.asarray(P)
        check_shape(context, "P", P.shape, ("num_directions", "3 * hidden_size"), **sizes)
    if not 0 <= direction_index < num_directions:
        raise InputError(f"{context}: direction_index={direction_index}; the node has "
                         f"{num_directions} direction(s)")

    d = direction_index
    source, target = _CANONICAL_LETTERS[kind], "".join(GATES[kind])
    weights = CellWeights(
        w_ih=permute_gates(W[d], source, target),
        w_hh=permute_gates(R[d], source, target),
        b_ih=None if B is None else permute_gates(B[d, : G * hidden_size], source, target),
        b_hh=None if B is None else permute_gates(B[d, G * hidden_size :], source, target),
        peephole=None if P is None else permute_gates(
            P[d].reshape(3, hidden_size), _PEEPHOLE_ORDER, "ifo"),
    )
    functions = resolve_activations(
        kind, attributes.get("activations"), attributes.get("activation_alpha"),
        attributes.get("activation_beta"), num_directions, semantics, context)
    own = functions[d * NUM_ACTIVATIONS[kind] : (d + 1) * NUM_ACTIVATIONS[kind]]
    clip = attributes.get("clip")
    spec = CellSpec(
        kind=kind,
        input_size=input_size,
        hidden_size=hidden_size,
        gate_activation=own[0] if kind != "rnn" else SIGMOID,
        activation=own[1] if kind != "rnn" else own[0],
        cell_activation=own[2] if kind == "lstm" else None,
        reset_after=bool(int(attributes.get("linear_before_reset", 0))) if kind == "gru"
        else True,
        clip=None if clip is None else float(clip),
        clip_cell_output=semantics == "spec",
        input_forget=bool(int(attributes.get("input_forget", 0))),
        convention=_convention(op_type, attributes, semantics),
    )
    return spec, weights


def from_canonical(spec: CellSpec, weights: CellWeights, semantics: str = "spec",
                   context: str | None = None) -> tuple[dict[str, np.ndarray | None],
                                                        dict[str, Any]]:
    """Canonical spec and weights -> one direction of an ONNX node.

    Args:
        spec: what the direction computes.
        weights: its canonical weights.
        semantics: the semantics the node will be run with (decides whether a ``clip``
            that leaves the cell state unclipped can be expressed).
        context: prefix of error messages.

    Returns:
        ``(arrays, attributes)``: ``W (num_gates * hidden_size, input_size)``, ``R``, ``B
        (2 * num_gates * hidden_size,)`` or None, ``P (3 * hidden_size,)`` or None, without
        the direction axis; attributes ``hidden_size`` plus whichever of ``activations``,
        ``activation_alpha``, ``activation_beta``, ``clip``, ``input_forget`` and
        ``linear_before_reset`` differ from the operator's defaults (one direction's
        ``activations``; concatenate the directions' lists for a bidirectional node).

    Raises:
        UnsupportedFeatureError: the spec uses something ONNX cannot express (projection,
            forget_bias, cell_clip, proj_clip, a clip that differs from ``semantics``).
    """
    context = context or f"ONNX {spec.kind.upper()}"
    semantics = _check_semantics(semantics)
    weights.check(spec, context)
    _check_expressible(spec, weights, semantics, context)
    kind, H, G = spec.kind, spec.hidden_size, spec.num_gates
    source, target = "".join(GATES[kind]), _CANONICAL_LETTERS[kind]
    B = None
    if weights.b_ih is not None or weights.b_hh is not None:
        zeros = np.zeros(G * H, dtype=weights.w_ih.dtype)
        b_ih = zeros if weights.b_ih is None else weights.b_ih
        b_hh = zeros if weights.b_hh is None else weights.b_hh
        B = np.concatenate([permute_gates(b_ih, source, target),
                            permute_gates(b_hh, source, target)])
    arrays = {
        "W": permute_gates(weights.w_ih, source, target),
        "R": permute_gates(weights.w_hh, source, target),
        "B": B,
        "P": None if weights.peephole is None else permute_gates(
            weights.peephole, "ifo", _PEEPHOLE_ORDER).reshape(-1),
    }
    attributes: dict[str, Any] = {"hidden_size": H}
    functions = {"lstm": [spec.gate_activation, spec.activation, spec.output_activation],
                 "gru": [spec.gate_activation, spec.activation],
                 "rnn": [spec.activation]}[kind]
    names, alpha, beta = _activation_attributes(functions)
    if tuple(names) != DEFAULT_ACTIVATIONS[kind]:
        attributes["activations"] = names
    if alpha:
        attributes["activation_alpha"] = alpha
    if beta:
        attributes["activation_beta"] = beta
    if spec.clip is not None:
        attributes["clip"] = spec.clip
    if spec.input_forget:
        attributes["input_forget"] = 1
    if kind == "gru" and spec.reset_after:
        attributes["linear_before_reset"] = 1
    return arrays, attributes


def _check_expressible(spec: CellSpec, weights: CellWeights, semantics: str,
                       context: str) -> None:
    problems = []
    if spec.proj_size or weights.w_hr is not None:
        problems.append(f"proj_size={spec.proj_size} (projection)")
    if spec.forget_bias:
        problems.append(f"forget_bias={spec.forget_bias:g} (add it to the forget bias)")
    for name in ("cell_clip", "proj_clip"):
        if getattr(spec, name) is not None:
            problems.append(f"{name}={getattr(spec, name):g}")
    if spec.kind == "gru" and spec.cell_activation is not None:
        problems.append("a GRU cell_activation")
    if spec.input_forget and spec.kind != "lstm":
        problems.append("input_forget outside an LSTM")
    if spec.kind == "lstm" and spec.clip is not None and spec.clip_cell_output != (
            semantics == "spec"):
        problems.append(
            f"clip with clip_cell_output={spec.clip_cell_output} under semantics="
            f"{semantics!r} (the spec clips the cell state before h; onnxruntime does not)")
    if problems:
        raise UnsupportedFeatureError(f"{context}: ONNX cannot express {'; '.join(problems)}")


def _activation_attributes(functions: list[Activation]) -> tuple[list[str], list[float],
                                                                  list[float]]:
    names: list[str] = []
    alpha: list[float] = []
    beta: list[float] = []
    for function in functions:
        if function.name == "linear":
            names.append("Affine")
            alpha.append(1.0)
            beta.append(0.0)
            continue
        onnx_name = _ONNX_NAMES[function.name]
        _, takes_alpha, takes_beta = _ACTIVATIONS[onnx_name.lower()]
        names.append(onnx_name)
        if takes_alpha:
            alpha.append(function.alpha)
        if takes_beta:
            beta.append(function.beta)
    return names, alpha, beta


class OnnxRecurrent(Layer):
    """One ONNX ``LSTM`` / ``GRU`` / ``RNN`` node, run on the canonical engine.

    Args:
        name: the node name (streaming states are kept under it).
        op_type: ``"LSTM"``, ``"GRU"`` or ``"RNN"``.
        attributes: the node's attributes as Python values.
        constants: input slot (``W``, ``R``, ``B``, ``P``, ``sequence_lens``,
            ``initial_h``, ``initial_c``) -> array fixed in the file.
        input_slots: the slots fed at run time, in the order of the Node's inputs.
        output_slots: the outputs produced, in the order of the Node's outputs.
        semantics: ``"spec"`` (default) or ``"onnxruntime"`` (see the module docstring).
        dtype: computation dtype.

    Shapes (layout 0; layout 1 swaps to batch first as noted):
        X: (seq_len, batch, input_size); layout 1 (batch, seq_len, input_size)
        initial_h, initial_c, Y_h, Y_c: (num_directions, batch, hidden_size);
            layout 1 (batch, num_directions, hidden_size)
        Y: (seq_len, num_directions, batch, hidden_size);
            layout 1 (batch, seq_len, num_directions, hidden_size)
        sequence_lens: (batch,) integers in [0, seq_len]
    """

    takes_integers = True
    takes_lengths = True

    def __init__(self, name: str, op_type: str, attributes: Mapping[str, Any],
                 constants: Mapping[str, np.ndarray], input_slots: Sequence[str],
                 output_slots: Sequence[str], *, semantics: str = "spec",
                 dtype: Any = np.float32) -> None:
        super().__init__(name)
        self.context = f"ONNX {op_type} node {name!r}"
        _check_attributes(op_type, attributes, self.context)
        self.op_type = op_type
        self.kind = f"onnx {op_type}"
        self.cell_kind = OP_KINDS[op_type]
        self.attributes = dict(attributes)
        self.semantics = _check_semantics(semantics)
        self.dtype = np.dtype(dtype)
        self.direction = _text(self.attributes.get("direction", "forward"))
        self.num_directions = _direction_count(self.direction, self.context)
        self.layout = int(self.attributes.get("layout", 0))
        self.constants = {k: np.asarray(v) for k, v in constants.items() if v is not None}
        self.input_slots = list(input_slots)
        self.output_slots = list(output_slots)
        self._check_slots()
        # Activations are resolved now so an unsupported one fails at load time.
        resolve_activations(self.cell_kind, self.attributes.get("activations"),
                            self.attributes.get("activation_alpha"),
                            self.attributes.get("activation_beta"), self.num_directions,
                            self.semantics, self.context)
        self._stack: RecurrentStack | None = None
        if all(s in self.constants for s in ("W", "R")) and not (
                {"W", "R", "B", "P"} & set(self.input_slots)):
            self._stack = self._build(self.constants)

    def _check_slots(self) -> None:
        for slot in self.input_slots + list(self.constants):
            if slot not in INPUT_SLOTS:
                raise InputError(f"{self.context}: unknown input slot {slot!r}; expected one "
                                 f"of {INPUT_SLOTS}")
        for slot in ("W", "R"):
            if slot not in self.input_slots and slot not in self.constants:
                raise FormatError(f"{self.context}: required input {slot} is missing "
                                  "(inputs X, W and R are required)")
        if self.cell_kind != "lstm":
            extra = {"initial_c", "P"} & (set(self.input_slots) | set(self.constants))
            if extra:
                raise FormatError(f"{self.context}: {sorted(extra)} only exist for LSTM")
        for slot in self.output_slots:
            if slot not in OUTPUT_SLOTS or (slot == "Y_c" and self.cell_kind != "lstm"):
                raise FormatError(f"{self.context}: unknown output {slot!r}")

    @property
    def can_stream(self) -> bool:
        return self.stream_refusal is None

    @property
    def stream_refusal(self) -> str | None:
        """Why this node cannot be fed in chunks, or None when it can."""
        if self.num_directions == 2:
            return "a bidirectional node needs the whole sequence (its backward pass " \
                   "starts at the end)"
        if self.direction == "reverse":
            return "a reverse node needs the whole sequence (it starts at the last step)"
        return None

    @property
    def time_axis(self) -> int:
        """Position of the time axis of X and Y: 0 for layout=0, 1 for layout=1."""
        return 1 if self.layout == 1 else 0

    def recurrent_stack(self, dtype: np.dtype) -> RecurrentStack:
        """The engine stack this node runs (for ``Model.stepper``); needs constant W/R/B."""
        if self._stack is None:
            raise UnsupportedFeatureError(f"{self.context}: its weights are graph inputs, "
                                          "so there is no fixed cell to step")
        return self._stack

    def _build(self, arrays: Mapping[str, np.ndarray]) -> RecurrentStack:
        attributes = {k: v for k, v in self.attributes.items() if k != "output_sequence"}
        directions = []
        for d in range(self.num_directions):
            spec, weights = to_canonical(self.op_type, arrays, d, semantics=self.semantics,
                                         context=self.context, **attributes)
            reverse = self.direction == "reverse" or d == 1
            directions.append(Direction(spec, weights, reverse=reverse))
        logger.debug("%s: %s", self.context, directions[0].spec.convention)
        return RecurrentStack([directions], dtype=self.dtype, name=self.context)

    def call(self, inputs: list[Any], masks: list[Any], ctx: CallContext,
             ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        values = dict(self.constants)
        for slot, value in zip(self.input_slots, inputs):
            if value is not None:
                values[slot] = value
        if "X" not in values:
            raise InputError(f"{self.context}: input X was not given")
        stack = self._stack or self._build(
            {k: as_float_input(values[k], self.dtype, k, True)
             for k in ("W", "R", "B", "P") if k in values})

        x = as_float_input(values["X"], self.dtype, "X", False)
        if x.ndim != 3:
            raise ShapeError(f"{self.context}: X has shape {x.shape}; expected 3 dimensions "
                             f"({'batch, seq_len' if self.layout else 'seq_len, batch'}, "
                             "input_size)")
        x = x if self.layout == 1 else x.transpose(1, 0, 2)
        batch, seq_len = x.shape[0], x.shape[1]
        h0, c0 = self._initial_states(values, ctx, batch)
        lengths = self._lengths(values, ctx, batch, seq_len)
        mask = None if lengths is None else lengths_to_mask(lengths, seq_len)
        result = stack(np.ascontiguousarray(x), h0, c0, mask=mask, masked_output="zero")

        h_n, c_n = result.h_n, result.c_n
        if lengths is not None and self.semantics == "onnxruntime" and (lengths == 0).any():
            h_n, c_n = h_n.copy(), None if c_n is None else c_n.copy()
            h_n[:, lengths == 0] = 0
            if c_n is not None:
                c_n[:, lengths == 0] = 0
        states = [self._to_layout(h_n)] + ([] if c_n is None else [self._to_layout(c_n)])
        if ctx.keep_state:
            ctx.states[self.name] = states
        ys = [r.y for r in result.per_direction]  # each (batch, seq_len, hidden_size)
        y = np.stack(ys, axis=2) if self.layout == 1 else np.stack(ys, 0).transpose(2, 0, 1, 3)
        produced = {"Y": y, "Y_h": states[0], "Y_c": states[1] if c_n is not None else None}
        outputs = [produced[slot] for slot in self.output_slots]
        return outputs, [None] * len(outputs)

    def _to_layout(self, state: np.ndarray) -> np.ndarray:
        """(num_directions, batch, hidden) -> the node's state layout."""
        return np.ascontiguousarray(state.transpose(1, 0, 2)) if self.layout == 1 else state

    def _initial_states(self, values: dict[str, Any], ctx: CallContext, batch: int,
                        ) -> tuple[np.ndarray | None, np.ndarray | None]:
        carried = ctx.states.get(self.name)
        given = list(carried) if carried else [values.get("initial_h"),
                                               values.get("initial_c")]
        given += [None] * (2 - len(given))
        H = int(self.constants["R"].shape[-1]) if "R" in self.constants else int(
            np.shape(values["R"])[-1])
        shape = (("batch", "num_directions", "hidden_size") if self.layout == 1
                 else ("num_directions", "batch", "hidden_size"))
        states = []
        for name, value in zip(("initial_h", "initial_c"), given):
            if value is None or (name == "initial_c" and self.cell_kind != "lstm"):
                states.append(None)
                continue
            state = as_float_input(value, self.dtype, name, True)
            check_shape(self.context, name, state.shape, shape, batch=batch,
                        num_directions=self.num_directions, hidden_size=H)
            states.append(state.transpose(1, 0, 2) if self.layout == 1 else state)
        return states[0], states[1]

    def _lengths(self, values: dict[str, Any], ctx: CallContext, batch: int,
                 seq_len: int) -> np.ndarray | None:
        raw = values.get("sequence_lens")
        if raw is None:
            raw = ctx.lengths
        if raw is None:
            return None
        if ctx.streaming:
            raise UnsupportedFeatureError(
                f"{self.context}: sequence_lens cannot be combined with streaming; run the "
                "whole sequence (chunks do not know their offset in the sequence)")
        lengths = np.asarray(raw)
        check_shape(self.context, "sequence_lens", lengths.shape, ("batch",), batch=batch)
        if lengths.dtype.kind == "f":
            if not np.all(np.isfinite(lengths)) or np.any(lengths != np.round(lengths)):
                raise InputError(f"{self.context}: sequence_lens must hold integers, got "
                                 f"{lengths.tolist()}")
        elif lengths.dtype.kind not in "iub":
            raise InputError(f"{self.context}: sequence_lens has dtype {lengths.dtype}; "
                             "expected integers")
        lengths = lengths.astype(np.int64)
        if lengths.min(initial=0) < 0 or lengths.max(initial=0) > seq_len:
            raise InputError(f"{self.context}: sequence_lens {lengths.tolist()} must lie in "
                             f"[0, seq_len={seq_len}]")
        return None if (lengths == seq_len).all() else lengths

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "direction": self.direction,
            "layout": self.layout,
            "semantics": self.semantics,
            "convention": _convention(self.op_type, self.attributes, self.semantics),
            "attributes": {k: (_text(v) if isinstance(v, bytes) else v)
                           for k, v in sorted(self.attributes.items())},
            "inputs": self.input_slots,
            "constants": {k: list(v.shape) for k, v in sorted(self.constants.items())},
            "outputs": self.output_slots,
        }
        if self._stack is not None:
            info["directions"] = self._stack.describe()
        notes = []
        if self.layout == 1:
            notes.append("onnxruntime's CPU kernels refuse layout=1; rnnparity runs it as "
                         "the spec defines it")
        if self.stream_refusal:
            notes.append(f"cannot stream: {self.stream_refusal}")
        if notes:
            info["notes"] = notes
        return info
