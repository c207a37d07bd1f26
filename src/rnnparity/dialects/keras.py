"""Keras dialect: Keras 1/2, tf.keras / tf_keras and Keras 3 recurrent layers.

Keras stores ``kernel (input_size, G * units)``, ``recurrent_kernel (units, G * units)``
and one ``bias`` (GRU with ``reset_after``: ``(2, 3 * units)``, row 0 input, row 1
recurrent), gate blocks LSTM ``i f c o`` and GRU ``z r h``. CuDNNLSTM / CuDNNGRU keep the
same shapes but cuDNN reads every gate block untransposed, and their bias holds input and
recurrent halves (``8 * units`` / ``6 * units``). :func:`to_canonical` maps all of them
onto :class:`rnnparity.spec.CellSpec` / :class:`CellWeights`; :func:`from_canonical` goes
back. The layer classes here reproduce Keras' sequence semantics (masks, go_backwards,
Bidirectional merges, states, stateful layers) on :class:`rnnparity.engine.RecurrentStack`.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..activations import (
    HARD_SIGMOID_KERAS2,
    HARD_SIGMOID_KERAS3,
    SIGMOID,
    TANH,
    Activation,
)
from ..engine import Direction, RecurrentStack
from ..errors import (
    FormatError,
    InputError,
    ShapeError,
    UnsupportedFeatureError,
    check_shape,
)
from ..model import CallContext, Layer, Model, Node
from ..spec import CellSpec, CellWeights, permute_gates

__all__ = [
    "GATE_ORDER",
    "KINDS",
    "SUPPORTED_ATTRIBUTES",
    "IGNORED_ATTRIBUTES",
    "to_canonical",
    "from_canonical",
    "keras_config",
    "resolve_activation",
    "default_recurrent_activation",
    "KerasRecurrent",
    "KerasBidirectional",
    "build_model",
    "single_layer_model",
    "from_live",
]

logger = logging.getLogger(__name__)

# Gate blocks as Keras stores them, with Keras' own letters.
GATE_ORDER: dict[str, str] = {"lstm": "ifco", "gru": "zrh", "rnn": "h"}
# The same orders spelled with canonical letters (Keras c = canonical g; z r h = z r n).
_KERAS_IN_CANONICAL = {"lstm": "ifgo", "gru": "zrn", "rnn": "h"}
_CANONICAL = {"lstm": "ifgo", "gru": "rzn", "rnn": "h"}

# Keras class name -> canonical cell kind.
KINDS: dict[str, str] = {
    "LSTM": "lstm",
    "GRU": "gru",
    "SimpleRNN": "rnn",
    "CuDNNLSTM": "lstm",
    "CuDNNGRU": "gru",
}
_CUDNN = ("CuDNNLSTM", "CuDNNGRU")

_RECURRENT_KEYS = frozenset({
    "name", "units", "activation", "recurrent_activation", "use_bias", "return_sequences",
    "return_state", "go_backwards", "stateful", "time_major", "reset_after",
    "zero_output_for_mask", "unroll", "implementation", "dtype",
})
# Config keys each layer class reads; what a key means is documented in docs/keras.md.
SUPPORTED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "LSTM": _RECURRENT_KEYS - {"reset_after"},
    "GRU": _RECURRENT_KEYS,
    "SimpleRNN": _RECURRENT_KEYS - {"reset_after", "recurrent_activation"},
    "CuDNNLSTM": frozenset({"name", "units", "return_sequences", "return_state",
                            "go_backwards", "stateful", "time_major", "dtype"}),
    "CuDNNGRU": frozenset({"name", "units", "return_sequences", "return_state",
                           "go_backwards", "stateful", "time_major", "dtype"}),
    "Bidirectional": frozenset({"name", "layer", "backward_layer", "merge_mode", "dtype"}),
}
# Keys that provably do not change inference: training-only behaviour (dropout,
# regularizers, constraints), initial values that the stored weights replace, and
# shape declarations the weights already pin down. ``unroll`` and ``implementation`` pick
# another evaluation of the same equations on the TensorFlow backend.
IGNORED_ATTRIBUTES: frozenset[str] = frozenset({
    "trainable", "dropout", "recurrent_dropout", "kernel_initializer",
    "recurrent_initializer", "bias_initializer", "embeddings_initializer",
    "unit_forget_bias", "kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
    "activity_regularizer", "embeddings_regularizer", "kernel_constraint",
    "recurrent_constraint", "bias_constraint", "embeddings_constraint", "seed",
    "batch_input_shape", "batch_shape", "input_shape", "input_dim", "input_length",
    "noise_shape", "sparse", "ragged", "optional", "build_config", "weights",
    "quantization_config", "lora_alpha",
})


# ----------------------------------------------------------------------------- versions


def version_tuple(version: str | int | None) -> tuple[int, int, int]:
    """``"2.2.4-tf"`` -> ``(2, 2, 4)``; ``"3"`` -> ``(3, 0, 0)``; None -> ``(3, 0, 0)``."""
    if version is None:
        return (3, 0, 0)
    numbers = [int(n) for n in re.findall(r"\d+", str(version))[:3]]
    if not numbers:
        raise InputError(f"keras_version {version!r} is not a version; expected e.g. "
                         "'2', '2.2.0' or '3.15.1'")
    return tuple(numbers + [0] * (3 - len(numbers)))  # type: ignore[return-value]


def resolve_activation(name: Any, keras_version: str | int | None = "3") -> Activation:
    """The function a Keras activation name means in the given Keras version.

    ``hard_sigmoid`` is ``clip(0.2 x + 0.5, 0, 1)`` in Keras 1/2 and tf.keras, and
    ``clip(x / 6 + 0.5, 0, 1)`` in Keras 3.
    """
    if isinstance(name, dict):  # Keras 3 may serialise a function as a small dict
        inner = name.get("config")
        found = inner if isinstance(inner, str) else name.get("class_name")
        if not isinstance(found, str):
            raise UnsupportedFeatureError(f"Keras activation {name!r} names no function; "
                                          "expected a name such as 'tanh'")
        name = found
    key = str(name or "linear").lower()
    if key == "hard_sigmoid":
        major = version_tuple(keras_version)[0]
        return HARD_SIGMOID_KERAS3 if major >= 3 else HARD_SIGMOID_KERAS2
    if key == "elu":
        return Activation("elu", 1.0, 0.0)
    if key in {"sigmoid", "tanh", "relu", "linear", "softsign", "softplus"}:
        return Activation(key)
    raise UnsupportedFeatureError(
        f"Keras activation {name!r} is not supported in recurrent layers; supported: "
        "sigmoid, hard_sigmoid, tanh, relu, linear, elu, softsign, softplus"
    )


def default_recurrent_activation(keras_version: str | int | None) -> str:
    """LSTM/GRU ``recurrent_activation`` default: hard_sigmoid before Keras 2.3."""
    return "hard_sigmoid" if version_tuple(keras_version) < (2, 3, 0) else "sigmoid"


def _activation_name(act: Activation, keras_version: str | int | None) -> str | None:
    """The Keras name of ``act`` in that version, or None when Keras has none."""
    if act.name == "hard_sigmoid":
        keras3 = version_tuple(keras_version)[0] >= 3
        wanted = HARD_SIGMOID_KERAS3 if keras3 else HARD_SIGMOID_KERAS2
        return "hard_sigmoid" if act == wanted else None
    if act.name == "elu":
        return "elu" if act.alpha == 1.0 else None
    if act.name in {"sigmoid", "tanh", "relu", "linear", "softsign", "softplus"}:
        return act.name
    return None


# -------------------------------------------------------------------- weight conversion

_OPTIONS = ("units", "activation", "recurrent_activation", "reset_after", "use_bias",
            "keras_version", "name")


def to_canonical(kind: str, arrays: dict[str, np.ndarray], **options: Any
                 ) -> tuple[CellSpec, CellWeights]:
    """Map one direction of a Keras recurrent layer onto the canonical layout.

    Args:
        kind: ``"LSTM"``, ``"GRU"``, ``"SimpleRNN"``, ``"CuDNNLSTM"`` or ``"CuDNNGRU"``.
        arrays: ``kernel (input_size, G * units)``, ``recurrent_kernel (units, G * units)``
            and, unless ``use_bias=False``, ``bias``.
        **options: ``units`` (checked against the weights), ``activation``,
            ``recurrent_activation`` (default: the Keras version's), ``reset_after``
            (default: from the bias shape), ``use_bias``, ``keras_version`` (``"2"``,
            ``"2.2.0"``, ``"3"``...; default 3), ``name`` (for messages).

    Returns:
        ``(spec, weights)``; ``spec.notes`` lists the defaults that were assumed.

    Raises:
        ShapeError: an array does not fit (e.g. ``units`` differs from the weights').
        UnsupportedFeatureError: an unknown kind or activation.
    """
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise InputError(f"unknown Keras option(s) {unknown}; known: {list(_OPTIONS)}")
    if kind not in KINDS:
        raise UnsupportedFeatureError(f"Keras recurrent layer class {kind!r} is not "
                                      f"supported; supported: {', '.join(KINDS)}")
    cell = KINDS[kind]
    version = str(options.get("keras_version") or "3")
    context = f"Keras {kind} {options.get('name') or ''}".rstrip()
    kernel = _array(arrays, "kernel", context)
    recurrent = _array(arrays, "recurrent_kernel", context)
    bias = arrays.get("bias")
    if options.get("use_bias") is False and bias is not None:
        raise ShapeError(f"{context}: use_bias=False but a bias array was given")
    if options.get("use_bias") and bias is None:
        raise ShapeError(f"{context}: use_bias=True but no bias array was given")

    gates = len(GATE_ORDER[cell])
    declared = options.get("units")
    units = recurrent.shape[0] if declared is None else positive_int("units", declared,
                                                                    context)
    if kernel.ndim != 2:
        raise ShapeError(f"{context}: kernel has shape {kernel.shape}; expected 2 dimensions "
                         f"(input_size, {gates} * units)")
    input_size = kernel.shape[0]
    sizes = dict(input_size=input_size, units=units)
    check_shape(context, "kernel", kernel.shape, ("input_size", f"{gates} * units"), **sizes)
    check_shape(context, "recurrent_kernel", recurrent.shape, ("units", f"{gates} * units"),
                **sizes)

    notes: list[str] = []
    if kind in _CUDNN:
        if bias is None:
            raise ShapeError(f"{context}: CuDNN layers always have a bias; none was given")
        check_shape(context, "bias", np.shape(bias), (f"{2 * gates} * units",), **sizes)
        spec = CellSpec(cell, input_size, units, gate_activation=SIGMOID, activation=TANH,
                        reset_after=True, convention=_convention(kind, True, version))
        return spec, _cudnn_weights(cell, kernel, recurrent, np.asarray(bias), units)

    reset_after = _check_bias(cell, bias, options.get("reset_after"), version, context,
                              sizes, notes)
    activation, gate_activation = _activations(cell, options, version, notes)
    spec = CellSpec(cell, input_size, units, gate_activation=gate_activation,
                    activation=activation, reset_after=reset_after,
                    convention=_convention(kind, reset_after, version), notes=tuple(notes))
    return spec, _plain_weights(cell, kernel, recurrent, bias)


def positive_int(name: str, value: Any, context: str) -> int:
    """``value`` as an int >= 1, or InputError (bools, floats and strings are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
            or value < 1:
        raise InputError(f"{context}: {name}={value!r}; expected a positive integer")
    return int(value)


_BOOLEAN_KEYS = ("return_sequences", "return_state", "go_backwards", "reset_after",
                 "stateful", "time_major", "zero_output_for_mask", "use_bias", "mask_zero")
MERGE_MODES = ("concat", "sum", "mul", "ave", None)


def check_values(config: dict[str, Any], context: str) -> None:
    """Refuse config or override values of the wrong type before they are used: a string
    ``"no"`` for return_sequences would otherwise read as true."""
    if config.get("units") is not None:
        positive_int("units", config["units"], context)
    for key in _BOOLEAN_KEYS:
        if config.get(key) is not None and not isinstance(config[key], (bool, np.bool_)):
            raise InputError(f"{context}: {key}={config[key]!r}; expected true or false")
    if "merge_mode" in config and config["merge_mode"] not in MERGE_MODES:
        raise InputError(f"{context}: merge_mode={config['merge_mode']!r}; expected one of "
                         f"{list(MERGE_MODES)}")


def check_override_values(overrides: dict[str, Any]) -> None:
    """Check override values (not just keys) so a typo fails even where it would not apply."""
    check_values(overrides, "override")
    if "keras_version" in overrides:
        version = overrides["keras_version"]
        if not isinstance(version, (str, int)) or isinstance(version, bool):
            raise InputError(f"override keras_version={version!r}; expected e.g. '2.2.0'")
        version_tuple(version)
    for key in ("activation", "recurrent_activation"):
        if key in overrides:
            if not isinstance(overrides[key], str):
                raise InputError(f"override {key}={overrides[key]!r}; expected a Keras "
                                 "activation name such as 'sigmoid'")
            resolve_activation(overrides[key])
    kind = overrides.get("kind")
    if kind is not None and str(kind).lower() not in {k.lower() for k in KINDS}:
        raise InputError(f"override kind={kind!r}; expected one of {', '.join(KINDS)}")


def _check_bias(cell: str, bias: np.ndarray | None, reset_after: bool | None,
                version: str, context: str, sizes: dict[str, int], notes: list[str]) -> bool:
    """Check the bias shape; return the GRU variant (from the shape unless given)."""
    gates = len(GATE_ORDER[cell])
    if cell == "gru" and bias is not None:
        if reset_after is None:
            reset_after = np.ndim(bias) == 2
        expected = ("2", "3 * units") if reset_after else ("3 * units",)
        check_shape(context, "bias", np.shape(bias), expected, **sizes)
    elif cell == "gru" and reset_after is None:
        reset_after = version_tuple(version) >= (2, 4, 0)
        notes.append(f"reset_after={reset_after} (no bias to tell; Keras {version} default)")
    elif bias is not None:
        check_shape(context, "bias", np.shape(bias), (f"{gates} * units",), **sizes)
    return bool(reset_after)


def _activations(cell: str, options: dict[str, Any], version: str, notes: list[str]
                 ) -> tuple[Activation, Activation]:
    """(activation, recurrent activation), the latter from the version when not given."""
    activation = resolve_activation(options.get("activation") or "tanh", version)
    if cell == "rnn":
        return activation, SIGMOID
    name = options.get("recurrent_activation")
    if name is None:
        name = default_recurrent_activation(version)
        notes.append(f"recurrent_activation={name} (Keras {version} default)")
    return activation, resolve_activation(name, version)


def _array(arrays: dict[str, np.ndarray], key: str, context: str) -> np.ndarray:
    if key not in arrays or arrays[key] is None:
        raise ShapeError(f"{context}: missing weight {key!r}; found {sorted(arrays)}")
    return np.asarray(arrays[key])


def _to_canonical_order(cell: str, array: np.ndarray, axis: int = 0) -> np.ndarray:
    return permute_gates(array, _KERAS_IN_CANONICAL[cell], _CANONICAL[cell], axis=axis)


def _from_canonical_order(cell: str, array: np.ndarray, axis: int = 0) -> np.ndarray:
    return permute_gates(array, _CANONICAL[cell], _KERAS_IN_CANONICAL[cell], axis=axis)


def _plain_weights(cell: str, kernel: np.ndarray, recurrent: np.ndarray,
                   bias: np.ndarray | None) -> CellWeights:
    w_ih = _to_canonical_order(cell, kernel.T)
    w_hh = _to_canonical_order(cell, recurrent.T)
    b_ih = b_hh = None
    if bias is not None:
        bias = np.asarray(bias)
        if bias.ndim == 2:  # GRU reset_after: row 0 input bias, row 1 recurrent bias
            b_ih, b_hh = _to_canonical_order(cell, bias[0]), _to_canonical_order(cell, bias[1])
        else:
            b_ih = _to_canonical_order(cell, bias)
    return CellWeights(w_ih, w_hh, b_ih, b_hh)


def _cudnn_weights(cell: str, kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray,
                   units: int) -> CellWeights:
    # cuDNN reads each stored (input_size, units) block as a row-major (units, input_size)
    # matrix and each recurrent block as-is, so the canonical blocks are plain reshapes.
    gates = len(GATE_ORDER[cell])
    n = kernel.shape[0]
    w_ih = np.concatenate([kernel[:, g * units:(g + 1) * units].reshape(units, n)
                           for g in range(gates)])
    w_hh = np.concatenate([recurrent[:, g * units:(g + 1) * units] for g in range(gates)])
    half = gates * units
    return CellWeights(_to_canonical_order(cell, w_ih), _to_canonical_order(cell, w_hh),
                       _to_canonical_order(cell, bias[:half]),
                       _to_canonical_order(cell, bias[half:]))


def from_canonical(spec: CellSpec, weights: CellWeights, kind: str = "LSTM",
                   keras_version: str | int | None = "3") -> dict[str, np.ndarray]:
    """Keras arrays (``kernel``, ``recurrent_kernel``, ``bias``) for one direction.

    Raises:
        UnsupportedFeatureError: Keras ``kind`` cannot compute ``spec`` (peepholes,
            projection, clipping, a run-time forget bias, coupled gates, another GRU
            variant, activations without a Keras name in that version).
    """
    if kind not in KINDS:
        raise UnsupportedFeatureError(f"Keras layer class {kind!r} is not supported; "
                                      f"supported: {', '.join(KINDS)}")
    cell = KINDS[kind]
    if spec.kind != cell:
        raise UnsupportedFeatureError(f"a {spec.kind} cell cannot be written as Keras {kind}")
    _check_expressible(spec, weights, kind, keras_version)
    weights.check(spec, f"Keras {kind}")
    H = spec.hidden_size

    if kind in _CUDNN:
        w_ih = _from_canonical_order(cell, weights.w_ih)
        w_hh = _from_canonical_order(cell, weights.w_hh)
        gates = len(GATE_ORDER[cell])
        zeros = np.zeros(gates * H, weights.w_ih.dtype)
        kernel = np.concatenate([w_ih[g * H:(g + 1) * H].reshape(spec.input_size, H)
                                 for g in range(gates)], axis=1)
        recurrent = np.concatenate([w_hh[g * H:(g + 1) * H] for g in range(gates)], axis=1)
        b_ih = zeros if weights.b_ih is None else _from_canonical_order(cell, weights.b_ih)
        b_hh = zeros if weights.b_hh is None else _from_canonical_order(cell, weights.b_hh)
        return {"kernel": kernel, "recurrent_kernel": recurrent,
                "bias": np.concatenate([b_ih, b_hh])}

    out = {"kernel": _from_canonical_order(cell, weights.w_ih).T.copy(),
           "recurrent_kernel": _from_canonical_order(cell, weights.w_hh).T.copy()}
    b_ih, b_hh = weights.b_ih, weights.b_hh
    if cell == "gru" and spec.reset_after:
        if b_ih is not None or b_hh is not None:
            zeros = np.zeros(3 * H, weights.w_ih.dtype)
            rows = [zeros if b is None else _from_canonical_order(cell, b) for b in (b_ih, b_hh)]
            out["bias"] = np.stack(rows)
    elif b_ih is not None or b_hh is not None:
        # One Keras bias: a second canonical bias can only be folded in by adding (every
        # recurrent bias outside a reset_after GRU's n gate is a plain sum).
        total = b_ih if b_hh is None else (b_hh if b_ih is None else b_ih + b_hh)
        out["bias"] = _from_canonical_order(cell, total)
    return out


def _check_expressible(spec: CellSpec, weights: CellWeights, kind: str,
                       keras_version: str | int | None) -> None:
    def refuse(feature: str) -> None:
        raise UnsupportedFeatureError(f"Keras {kind} cannot express {feature}")

    if spec.proj_size or weights.w_hr is not None:
        refuse(f"an output projection (proj_size={spec.proj_size})")
    if weights.peephole is not None:
        refuse("peephole connections")
    for name in ("cell_clip", "proj_clip", "clip"):
        if getattr(spec, name):
            refuse(f"{name}={getattr(spec, name)}")
    if spec.forget_bias:
        refuse(f"a run-time forget_bias={spec.forget_bias:g} (fold it into the forget-gate "
               "bias first)")
    if spec.input_forget:
        refuse("coupled input/forget gates (input_forget)")
    if spec.cell_activation is not None and spec.cell_activation != spec.activation:
        refuse(f"a cell activation ({spec.cell_activation}) other than the candidate's "
               f"({spec.activation})")
    if kind in _CUDNN:
        if spec.gate_activation != SIGMOID or spec.activation != TANH:
            refuse(f"activations {spec.gate_activation}/{spec.activation} (cuDNN is fixed "
                   "sigmoid/tanh)")
        if spec.kind == "gru" and not spec.reset_after:
            refuse("a GRU with the reset gate applied before the recurrent matmul "
                   "(reset_after=False); cuDNN applies it after")
        return
    names = [spec.activation] + ([spec.gate_activation] if spec.kind != "rnn" else [])
    for act in names:
        if _activation_name(act, keras_version) is None:
            refuse(f"activation {act} in Keras {keras_version}")


def keras_config(spec: CellSpec, kind: str = "LSTM", keras_version: str | int | None = "3",
                 use_bias: bool = True) -> dict[str, Any]:
    """The config entries that make a Keras layer compute ``spec``."""
    if kind in _CUDNN:
        return {"units": spec.hidden_size}
    config: dict[str, Any] = {"units": spec.hidden_size, "use_bias": use_bias,
                              "activation": _activation_name(spec.activation, keras_version)}
    if spec.kind != "rnn":
        config["recurrent_activation"] = _activation_name(spec.gate_activation, keras_version)
    if spec.kind == "gru":
        config["reset_after"] = spec.reset_after
    return config


def _convention(kind: str, reset_after: bool, version: str | int | None) -> str:
    cell = KINDS[kind]
    letters = " ".join(GATE_ORDER[cell])
    if kind == "CuDNNLSTM":
        bias = "bias (8 * units) = input half + recurrent half"
    elif kind == "CuDNNGRU":
        bias = "bias (6 * units) = input half + recurrent half; reset after matmul"
    elif cell == "gru" and reset_after:
        bias = "bias (2, 3 * units): row 0 input, row 1 recurrent; reset after matmul"
    elif cell == "gru":
        bias = "bias (3 * units); reset before matmul"
    else:
        bias = f"bias ({len(GATE_ORDER[cell])} * units)"
    layout = ("cuDNN blocks: kernel gate block read as (units, input_size), recurrent "
              "block transposed" if kind in _CUDNN else "x @ kernel + h @ recurrent_kernel")
    return f"Keras {version} {kind}: gates {letters}; {layout}; {bias}"


# ------------------------------------------------------------------------ layer classes

@dataclass
class RecurrentOptions:
    """Sequence options of a Keras recurrent layer (names as in the Keras config)."""

    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    time_major: bool = False
    stateful: bool = False
    zero_output_for_mask: bool = False


@dataclass
class _Wiring:
    """How one call site feeds a layer: extra initial-state inputs and its mask."""

    initial_states: int = 0
    mask: str = "implicit"  # "implicit" (from inputs[0]), "input" (last input), "none"
    notes: list[str] = field(default_factory=list)
    state_tensors: list[str] = field(default_factory=list)



def _batch_major_inputs(layer: Any, inputs: list[np.ndarray], masks: list[np.ndarray | None],
                        ctx: CallContext) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """The layer's sequence (batch-major), its mask, and the initial states to start from:
    given ones first, else what a stream or a stateful layer carried."""
    x, mask, initial = _split_inputs(layer.wiring, inputs, masks)
    if layer.options.time_major:
        x = np.swapaxes(x, 0, 1)
        mask = None if mask is None else np.swapaxes(mask, 0, 1)
    return x, mask, _given_states(initial, layer.name) or ctx.states.get(layer.name)

class KerasRecurrent(Layer):
    """A Keras LSTM / GRU / SimpleRNN / CuDNNLSTM / CuDNNGRU layer.

    Call inputs: ``x (batch, seq_len, features)`` (``(seq_len, batch, features)`` with
    ``time_major``), then the initial states when the model wires them (LSTM ``h, c``),
    then a mask tensor when the config passes one explicitly. Outputs: the sequence in
    processing order (``return_sequences``) or the last output, then the final states
    (``return_state``).
    """

    can_stream = True

    def __init__(self, name: str, kind: str, spec: CellSpec, weights: CellWeights,
                 options: RecurrentOptions, keras_version: str = "3",
                 assumed: tuple[str, ...] = ()) -> None:
        super().__init__(name)
        self.kind = kind
        self.spec = spec
        self.weights = weights
        self.options = options
        self.keras_version = str(keras_version)
        self.assumed = tuple(assumed) + spec.notes
        self.stateful = options.stateful
        self.can_stream = not options.go_backwards
        self.wiring = _Wiring()
        self._stacks: dict[np.dtype, RecurrentStack] = {}

    @property
    def num_states(self) -> int:
        return 2 if self.spec.kind == "lstm" else 1

    @property
    def masked_output(self) -> str:
        return "zero" if self.options.zero_output_for_mask else "previous"

    def recurrent_stack(self, dtype: np.dtype) -> RecurrentStack:
        """The engine stack this layer runs (for ``Model.stepper``)."""
        return self._stack(dtype)

    def _stack(self, dtype: np.dtype) -> RecurrentStack:
        key = np.dtype(dtype)
        if key not in self._stacks:
            direction = Direction(self.spec, self.weights, reverse=self.options.go_backwards)
            self._stacks[key] = RecurrentStack([[direction]], key, name=self.name)
        return self._stacks[key]

    def run_direction(self, x: np.ndarray, mask: np.ndarray | None,
                      initial: list[np.ndarray] | None, masked_output: str,
                      prev_output: np.ndarray | None, sequences: bool
                      ) -> tuple[np.ndarray | None, np.ndarray, list[np.ndarray]]:
        """Run batch-major ``x``; return (sequence in processing order, last output, states)."""
        if x.ndim != 3:
            raise ShapeError(f"Keras {self.kind} {self.name!r}: input has shape {x.shape}; "
                             f"expected (batch, seq_len, {self.spec.input_size})")
        h0 = c0 = None
        if initial:
            if len(initial) != self.num_states:
                raise InputError(f"Keras {self.kind} {self.name!r} takes {self.num_states} "
                                 f"initial state(s); got {len(initial)}")
            h0 = np.asarray(initial[0], x.dtype)[None]
            if self.num_states == 2:
                c0 = np.asarray(initial[1], x.dtype)[None]
        result = self._stack(x.dtype)(
            x, h0, c0, mask=mask, masked_output=masked_output,
            prev_output=None if prev_output is None else prev_output[None],
            return_sequences=sequences)
        scan = result.per_direction[0]
        y = scan.y
        if y is not None and self.options.go_backwards:
            y = y[:, ::-1]  # Keras returns a backwards layer's outputs in processing order
        states = [scan.h] + ([scan.c] if scan.c is not None else [])
        return y, scan.last_output, states

    def call(self, inputs: list[np.ndarray], masks: list[np.ndarray | None],
             ctx: CallContext) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        x, mask, initial = _batch_major_inputs(self, inputs, masks, ctx)
        opts = self.options
        carried = ctx.extra.setdefault(_PREV_OUTPUT, {}) if ctx.streaming else {}
        y, last, states = self.run_direction(
            x, mask, initial, self.masked_output, carried.get(self.name),
            opts.return_sequences)
        if ctx.keep_state:
            ctx.states[self.name] = states
        if ctx.streaming:
            carried[self.name] = last
        out = y if opts.return_sequences else last
        if opts.time_major and opts.return_sequences:
            out = np.swapaxes(out, 0, 1)
        out_mask = None
        if opts.return_sequences and mask is not None:
            out_mask = np.swapaxes(mask, 0, 1) if opts.time_major else mask
        outputs = [out] + (states if opts.return_state else [])
        return outputs, [out_mask] + [None] * (len(outputs) - 1)

    def describe(self) -> dict[str, Any]:
        opts = self.options
        info: dict[str, Any] = {
            "name": self.name, "kind": self.kind,
            "input_size": self.spec.input_size, "units": self.spec.hidden_size,
            "convention": self.spec.convention,
            "computes": self.spec.describe(),
            "activations": _describe_activations(self.spec),
            "sequence": _describe_options(opts, self.masked_output),
        }
        if self.wiring.notes:
            info["wiring"] = list(self.wiring.notes)
        if self.assumed:
            info["assumed"] = list(self.assumed)
        return info


_PREV_OUTPUT = "keras_previous_output"


def _given_states(states: list[np.ndarray | None], layer: str) -> list[np.ndarray]:
    """The initial states fed to a call: all of them, or none (optional model inputs)."""
    present = [s for s in states if s is not None]
    if present and len(present) != len(states):
        raise InputError(f"Keras layer {layer!r}: give all of its initial states or none; "
                         f"got {len(present)} of {len(states)}")
    return present


def _split_inputs(wiring: _Wiring, inputs: list[np.ndarray], masks: list[np.ndarray | None]
                  ) -> tuple[np.ndarray, np.ndarray | None, list[np.ndarray]]:
    """(x, mask, initial states) from a call's inputs, as the call site wires them."""
    rest = list(inputs[1:])
    mask = None
    if wiring.mask == "input":
        mask = np.asarray(rest.pop(), bool)
    elif wiring.mask == "implicit":
        mask = masks[0]
    return inputs[0], mask, rest


def _describe_activations(spec: CellSpec) -> str:
    text = f"activation={spec.activation}"
    if spec.kind != "rnn":
        text = f"recurrent_activation={spec.gate_activation} " + text
    return text


def _describe_options(opts: RecurrentOptions, masked_output: str) -> str:
    flags = [name for name in ("return_sequences", "return_state", "go_backwards",
                               "time_major", "stateful") if getattr(opts, name)]
    where = ("zeros" if masked_output == "zero" else "the previous output")
    return (", ".join(flags) or "last output only") + f"; masked steps emit {where}"


class KerasBidirectional(Layer):
    """Keras ``Bidirectional``: a forward and a backward copy of a recurrent layer.

    The backward copy's outputs are put back into input time order before merging;
    with ``return_sequences`` masked steps emit zeros (Keras forces
    ``zero_output_for_mask``). Outputs: merged (or forward, backward when
    ``merge_mode=None``), then the forward states, then the backward states.
    """

    kind = "Bidirectional"
    can_stream = False

    def __init__(self, name: str, forward: KerasRecurrent, backward: KerasRecurrent,
                 merge_mode: str | None, zero_masked: bool = True) -> None:
        super().__init__(name)
        if merge_mode not in (None, "concat", "sum", "mul", "ave"):
            raise UnsupportedFeatureError(
                f"Keras Bidirectional {name!r}: merge_mode={merge_mode!r} is not supported; "
                "supported: concat, sum, mul, ave, None")
        self.forward, self.backward = forward, backward
        self.merge_mode = merge_mode
        self.zero_masked = zero_masked
        self.stateful = forward.stateful
        self.wiring = _Wiring()

    @property
    def options(self) -> RecurrentOptions:
        return self.forward.options

    def call(self, inputs: list[np.ndarray], masks: list[np.ndarray | None],
             ctx: CallContext) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        x, mask, initial = _batch_major_inputs(self, inputs, masks, ctx)
        opts = self.options
        n = self.forward.num_states
        if initial and len(initial) != 2 * n:
            raise InputError(f"Keras Bidirectional {self.name!r} takes {2 * n} initial "
                             f"states (forward then backward); got {len(initial)}")
        seq = opts.return_sequences
        results = []
        for half, part in ((self.forward, initial[:n] if initial else None),
                           (self.backward, initial[n:] if initial else None)):
            masked = "zero" if seq and self.zero_masked else half.masked_output
            results.append(half.run_direction(x, mask, part, masked, None, seq))
        (fy, flast, fstates), (by, blast, bstates) = results
        if ctx.keep_state:
            ctx.states[self.name] = fstates + bstates
        if seq:
            a, b = fy, by[:, ::-1]  # backward outputs back into input time order
            if opts.time_major:
                a, b = np.swapaxes(a, 0, 1), np.swapaxes(b, 0, 1)
        else:
            a, b = flast, blast
        merged = self._merge(a, b)
        out_mask = None
        if seq and mask is not None:
            out_mask = np.swapaxes(mask, 0, 1) if opts.time_major else mask
        states = fstates + bstates if opts.return_state else []
        outputs = merged + states
        return outputs, [out_mask] * len(merged) + [None] * len(states)

    def _merge(self, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
        mode = self.merge_mode
        if mode == "concat":
            return [np.concatenate([a, b], axis=-1)]
        if mode == "sum":
            return [a + b]
        if mode == "mul":
            return [a * b]
        if mode == "ave":
            return [(a + b) / np.asarray(2, a.dtype)]
        return [a, b]

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name, "kind": f"Bidirectional({self.forward.kind})",
            "merge_mode": str(self.merge_mode),
            "masked_steps": ("zeros (return_sequences forces zero_output_for_mask)"
                             if self.zero_masked and self.options.return_sequences
                             else "the previous output"),
        }
        for label, half in (("forward", self.forward), ("backward", self.backward)):
            sub = half.describe()
            info[label] = [sub["convention"], sub["computes"], sub["activations"],
                           sub["sequence"]]
        assumed = list(self.forward.assumed) + [a for a in self.backward.assumed
                                                if a not in self.forward.assumed]
        if self.wiring.notes:
            info["wiring"] = list(self.wiring.notes)
        if assumed:
            info["assumed"] = assumed
        return info


# ------------------------------------------------------------------- building from config

@dataclass
class BuildContext:
    """What a layer factory needs besides the layer's config and weights."""

    keras_version: str = "3"
    overrides: dict[str, Any] = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)


def check_config(class_name: str, config: dict[str, Any], handled: frozenset[str]) -> None:
    """Raise UnsupportedFeatureError for a config key that is neither handled nor ignored."""
    for key, value in config.items():
        if key in handled or key in IGNORED_ATTRIBUTES:
            continue
        raise UnsupportedFeatureError(
            f"Keras {class_name} {config.get('name', '')!r}: config key {key}={value!r} is "
            f"not supported; handled: {', '.join(sorted(handled))}")
    dtype = _dtype_name(config.get("dtype"))
    if dtype not in (None, "float32", "float64"):
        raise UnsupportedFeatureError(
            f"Keras {class_name} {config.get('name', '')!r}: dtype {dtype!r} is not "
            "supported; supported: float32, float64")


def _dtype_name(dtype: Any) -> str | None:
    if isinstance(dtype, dict):
        inner = dtype.get("config", {})
        return inner.get("name") if isinstance(inner, dict) else None
    return None if dtype is None else str(dtype)


def make_recurrent(class_name: str, config: dict[str, Any], arrays: list[np.ndarray],
                   build: BuildContext) -> KerasRecurrent:
    """A :class:`KerasRecurrent` from a Keras layer config and its weights."""
    class_name, config = _unwrap_rnn(class_name, config)
    if class_name not in KINDS:
        raise UnsupportedFeatureError(f"Keras layer class {class_name!r} "
                                      f"({config.get('name')!r}) is not supported")
    check_config(class_name, config, SUPPORTED_ATTRIBUTES[class_name])
    over = build.overrides
    name = config.get("name", class_name.lower())
    check_values(config, f"Keras {class_name} {name!r}")
    use_bias = config.get("use_bias", True) if class_name not in _CUDNN else True
    if len(arrays) != (3 if use_bias else 2):
        raise ShapeError(f"Keras {class_name} {name!r}: expected "
                         f"{3 if use_bias else 2} weight arrays (kernel, recurrent_kernel"
                         f"{', bias' if use_bias else ''}); found {len(arrays)}"
                         + (" (is the layer built?)" if not arrays else ""))
    named = dict(zip(("kernel", "recurrent_kernel", "bias"), arrays))
    options: dict[str, Any] = dict(
        units=over.get("units", config.get("units")), name=name,
        keras_version=over.get("keras_version", build.keras_version))
    if class_name not in _CUDNN:
        options.update(activation=over.get("activation", config.get("activation", "tanh")),
                       use_bias=use_bias)
        if KINDS[class_name] != "rnn":
            options["recurrent_activation"] = over.get(
                "recurrent_activation", config.get("recurrent_activation"))
        if class_name == "GRU":
            options["reset_after"] = over.get("reset_after", config.get("reset_after"))
    spec, weights = to_canonical(class_name, named, **options)
    seq = RecurrentOptions(
        return_sequences=bool(over.get("return_sequences", config.get("return_sequences"))),
        return_state=bool(over.get("return_state", config.get("return_state", False))),
        go_backwards=bool(over.get("go_backwards", config.get("go_backwards", False))),
        time_major=bool(config.get("time_major", False)),
        stateful=bool(config.get("stateful", False)),
        zero_output_for_mask=bool(config.get("zero_output_for_mask", False)),
    )
    logger.debug("Keras %s %r: %s", class_name, name, spec.describe())
    return KerasRecurrent(name, class_name, spec, weights, seq,
                          keras_version=str(options["keras_version"]),
                          assumed=tuple(build.assumed))


def _unwrap_rnn(class_name: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``RNN(LSTMCell(...))`` -> the equivalent ``LSTM`` config."""
    if class_name != "RNN":
        return class_name, config
    cell = config.get("cell") or {}
    cells = {"LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN"}
    inner = cell.get("class_name")
    if inner not in cells:
        raise UnsupportedFeatureError(f"Keras RNN {config.get('name')!r} with cell {inner!r}"
                                      f" is not supported; supported cells: {list(cells)}")
    merged = {k: v for k, v in config.items() if k != "cell"}
    merged.update({k: v for k, v in cell.get("config", {}).items() if k != "name"})
    return cells[inner], merged


def make_bidirectional(config: dict[str, Any], arrays: list[np.ndarray],
                       build: BuildContext) -> KerasBidirectional:
    check_config("Bidirectional", config, SUPPORTED_ATTRIBUTES["Bidirectional"])
    name = config.get("name", "bidirectional")
    check_values(config, f"Keras Bidirectional {name!r}")
    inner = config["layer"]
    back = config.get("backward_layer")
    half = len(arrays) // 2
    fwd_config = dict(inner["config"], name=f"forward_{inner['config'].get('name', '')}")
    forward = make_recurrent(inner["class_name"], fwd_config, arrays[:half], build)
    if back:
        backward = make_recurrent(back["class_name"], back["config"], arrays[half:], build)
    else:
        back_config = dict(inner["config"], name=f"backward_{inner['config'].get('name', '')}",
                           go_backwards=not inner["config"].get("go_backwards", False))
        backward = make_recurrent(inner["class_name"], back_config, arrays[half:], build)
    version = version_tuple(build.overrides.get("keras_version", build.keras_version))
    # Standalone Keras <= 2.3.1 had no zero_output_for_mask: its Bidirectional repeated
    # the previous output at masked steps like a bare layer (read from its sources).
    zero_masked = not (version < (2, 4, 0) and "-tf" not in str(build.keras_version))
    merge_mode = build.overrides.get("merge_mode", config.get("merge_mode", "concat"))
    return KerasBidirectional(name, forward, backward, merge_mode, zero_masked)


LayerFactory = Callable[[str, dict[str, Any], list[np.ndarray], BuildContext], Layer]


def make_layer(class_name: str, config: dict[str, Any], arrays: list[np.ndarray],
               build: BuildContext) -> Layer:
    """Any supported Keras layer from its config and weights (get_weights order)."""
    from . import keras_layers

    if class_name in KINDS or class_name == "RNN":
        return make_recurrent(class_name, config, arrays, build)
    if class_name == "Bidirectional":
        return make_bidirectional(config, arrays, build)
    return keras_layers.make(class_name, config, arrays, build)


def is_recurrent(layer: Layer) -> bool:
    return isinstance(layer, (KerasRecurrent, KerasBidirectional))


# --------------------------------------------------------------------- graph from config

WeightSource = Callable[[str, str, dict[str, Any]], list[np.ndarray]]


def tensor_name(layer: str, node: int = 0, index: int = 0) -> str:
    """Graph tensor names: ``lstm`` for a layer's first output, ``lstm:1`` for its second,
    ``lstm@1`` for the output of the layer's second call site."""
    return layer + (f"@{node}" if node else "") + (f":{index}" if index else "")


def build_model(model_config: dict[str, Any], weights: WeightSource, *,
                keras_version: str, source: str, meta: dict[str, Any],
                layer: str | None = None, overrides: dict[str, Any] | None = None,
                dtype: Any = np.float32) -> Model:
    """A :class:`Model` from a Keras model config (Sequential or functional).

    Args:
        model_config: ``{"class_name": ..., "config": ...}`` as Keras serialises a model.
        weights: ``weights(layer_name, class_name, config)`` -> the layer's arrays in
            ``get_weights()`` order.
        keras_version: the version that saved the model (for defaults and activations).
        source, meta: recorded on the model for ``inspect``.
        layer: build only this layer (input ``input``, outputs named after it).
        overrides: facts to change (``units``, ``recurrent_activation``...), applied to
            every recurrent layer built.
    """
    build = BuildContext(str(keras_version), dict(overrides or {}))
    _check_structure(model_config, source)
    class_name = model_config.get("class_name")
    config = model_config.get("config")
    if class_name == "Sequential":
        entries, wiring, inputs, outputs = _sequential_graph(config)
    elif class_name in ("Functional", "Model"):
        entries, wiring, inputs, outputs = _functional_graph(config, keras_version)
    else:
        raise UnsupportedFeatureError(f"Keras model class {class_name!r} is not supported; "
                                      "supported: Sequential, Functional/Model")

    layers: dict[str, Layer] = {}
    for entry in entries:
        name = entry.get("name") or entry["config"].get("name")
        if entry["class_name"] in ("InputLayer",):
            continue
        if layer is not None and name != layer:
            continue
        arrays = weights(name, entry["class_name"], entry["config"])
        layers[name] = make_layer(entry["class_name"], dict(entry["config"], name=name),
                                  arrays, build)
    if layer is not None:
        if layer not in layers:
            known = [e.get("name") or e["config"].get("name") for e in entries
                     if e["class_name"] != "InputLayer"]
            raise InputError(f"no layer named {layer!r} in {source}; layers: "
                             f"{', '.join(known)}")
        return single_layer_model(layers[layer], source, meta, dtype)

    nodes = []
    for layer_name, node_inputs, node_outputs, wire in wiring:
        target = layers[layer_name]
        if hasattr(target, "wiring"):
            _apply_wiring(target, wire)
        nodes.append(Node(target, node_inputs, node_outputs))
    # Graph inputs used only as initial states may be left out (zeros) and are fed to the
    # first chunk only when streaming.
    states = [n for n in inputs if all(n in w.state_tensors for _, i, _, w in wiring
                                       if n in i)]
    sequences = [n for n in inputs if n not in states]
    time_major = any(getattr(getattr(layer, "options", None), "time_major", False)
                     for layer in layers.values())
    return Model(_topological(nodes, inputs), sequences, outputs, source=source, meta=meta,
                 dtype=dtype, optional_inputs=states,
                 time_axes={n: 0 for n in sequences + outputs} if time_major else None)


def _check_structure(model_config: Any, source: str) -> None:
    """Refuse a model config whose shape is not Keras' before any of it is read."""
    def refuse(what: str, found: Any) -> None:
        raise FormatError(f"{source}: Keras model config: expected {what}; found "
                          f"{type(found).__name__} {str(found)[:60]!r}")

    if not isinstance(model_config, dict):
        refuse("an object with class_name and config", model_config)
    config = model_config.get("config")
    layers = config if isinstance(config, list) else (
        config.get("layers", []) if isinstance(config, dict) else None)
    if not isinstance(layers, list):
        refuse("config.layers to be a list of layers", layers if config else config)
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str) \
                or not isinstance(entry.get("config"), dict):
            refuse("each layer to be an object with class_name (a string) and config "
                   "(an object)", entry)


def _apply_wiring(layer: Any, wire: _Wiring) -> None:
    if getattr(layer, "_wired", False):
        if (layer.wiring.initial_states, layer.wiring.mask) != (wire.initial_states,
                                                                wire.mask):
            raise UnsupportedFeatureError(f"Keras layer {layer.name!r} is called at several "
                                          "places with different arguments")
        return
    layer.wiring = wire
    layer._wired = True


def single_layer_model(layer: Layer, source: str, meta: dict[str, Any],
                       dtype: Any = np.float32) -> Model:
    """A model running one layer on the input ``input``; outputs ``name``, ``name:1``..."""
    if hasattr(layer, "wiring"):
        layer.wiring = _Wiring()
    count = _output_count(layer)
    outputs = [tensor_name(layer.name, 0, k) for k in range(count)]
    time_major = getattr(getattr(layer, "options", None), "time_major", False)
    return Model([Node(layer, ["input"], outputs)], ["input"], outputs, source=source,
                 meta=meta, dtype=dtype,
                 time_axes={"input": 0, outputs[0]: 0} if time_major else None)


def _output_count(layer: Layer) -> int:
    if isinstance(layer, KerasRecurrent):
        return 1 + (layer.num_states if layer.options.return_state else 0)
    if isinstance(layer, KerasBidirectional):
        merged = 2 if layer.merge_mode is None else 1
        states = 2 * layer.forward.num_states if layer.options.return_state else 0
        return merged + states
    return 1


def _sequential_graph(config: Any) -> tuple[list[dict], list, list[str], list[str]]:
    entries = config if isinstance(config, list) else config.get("layers", [])
    entries = [dict(e, name=e.get("name") or e["config"].get("name")) for e in entries]
    if not entries:
        raise UnsupportedFeatureError("empty Keras Sequential model")
    if entries[0]["class_name"] == "InputLayer":
        input_name = entries[0]["name"]
    else:
        input_name = f"{entries[0]['name']}_input"
    wiring = []
    previous = input_name
    for entry in entries:
        if entry["class_name"] == "InputLayer":
            continue
        wiring.append((entry["name"], [previous], [entry["name"]], _Wiring()))
        previous = entry["name"]
    return entries, wiring, [input_name], [previous]


def _functional_graph(config: dict[str, Any], keras_version: str
                      ) -> tuple[list[dict], list, list[str], list[str]]:
    from . import keras_layers

    entries = [dict(e, name=e.get("name") or e["config"].get("name"))
               for e in config.get("layers", [])]
    by_name = {e["name"]: e for e in entries}
    counts = {e["name"]: _declared_outputs(e) for e in entries}
    wiring = []
    for entry in entries:
        if entry["class_name"] == "InputLayer":
            continue
        nodes = entry.get("inbound_nodes", [])
        if entry["class_name"] in keras_layers.OPS and nodes and isinstance(nodes[0], dict):
            constants = [a for a in nodes[0].get("args", [])
                         if not _is_tensor(a) and not isinstance(a, list)]
            entry["config"] = dict(entry["config"], value=constants[0] if constants else 0)
        for index, node in enumerate(nodes):
            refs, states, mask_ref = _parse_node(node, entry["name"])
            wire = _Wiring(initial_states=len(states), state_tensors=list(states))
            inputs = refs + states
            if mask_ref is not None:
                wire.mask = "input"
                inputs.append(mask_ref)
                wire.notes.append(f"mask: explicit tensor {mask_ref!r}")
            elif states and version_tuple(keras_version)[0] >= 3:
                # Keras 3 fills a layer's mask only when it is called on one tensor; with
                # initial_state passed it runs unmasked (observed with Keras 3.15).
                wire.mask = "none"
                wire.notes.append("mask: none (Keras 3 drops the mask when initial_state "
                                  "is passed)")
            outputs = [tensor_name(entry["name"], index, k)
                       for k in range(counts[entry["name"]])]
            wiring.append((entry["name"], inputs, outputs, wire))
    inputs = [tensor_name(*_ref(r)) for r in _ref_list(config.get("input_layers", []))]
    outputs = [tensor_name(*_ref(r)) for r in _ref_list(config.get("output_layers", []))]
    for name in [n for n in inputs if n not in by_name]:
        raise UnsupportedFeatureError(f"Keras model input {name!r} is not an InputLayer")
    return entries, wiring, inputs, outputs


def _declared_outputs(entry: dict[str, Any]) -> int:
    config = entry.get("config", {})
    if entry["class_name"] == "Bidirectional":
        inner = config.get("layer", {}).get("config", {})
        kind = config.get("layer", {}).get("class_name", "")
        merged = 2 if config.get("merge_mode", "concat") is None else 1
        states = 2 if kind in ("LSTM", "CuDNNLSTM") else 1
        return merged + (2 * states if inner.get("return_state") else 0)
    if entry["class_name"] in KINDS and config.get("return_state"):
        return 1 + (2 if KINDS[entry["class_name"]] == "lstm" else 1)
    return 1


def _ref_list(refs: Any) -> list[Any]:
    # Keras 3 writes a single output as ["name", 0, 0] instead of [["name", 0, 0]].
    if refs and isinstance(refs[0], str):
        return [refs]
    return list(refs)


def _ref(ref: Any) -> tuple[str, int, int]:
    if isinstance(ref, dict):  # Keras 3 __keras_tensor__
        ref = ref["config"]["keras_history"]
    return str(ref[0]), int(ref[1]), int(ref[2])


def _is_tensor(value: Any) -> bool:
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _parse_node(node: Any, layer: str) -> tuple[list[str], list[str], str | None]:
    """One inbound node -> (input tensors, initial-state tensors, explicit mask tensor)."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        args = node.get("args", [])
        kwargs = dict(node.get("kwargs", {}))
        refs: list[str] = []
        for arg in args:
            if isinstance(arg, list):
                refs += [tensor_name(*_ref(a)) for a in arg if _is_tensor(a)]
            elif _is_tensor(arg):
                refs.append(tensor_name(*_ref(arg)))
        states = [tensor_name(*_ref(s)) for s in kwargs.pop("initial_state", None) or []]
        mask = kwargs.pop("mask", None)
        kwargs.pop("training", None)
        mask_ref = None
        if _is_tensor(mask):
            mask_ref = tensor_name(*_ref(mask))
        elif isinstance(mask, list) and any(_is_tensor(m) for m in mask):
            raise UnsupportedFeatureError(f"Keras layer {layer!r}: a list of explicit masks "
                                          "is not supported")
        if kwargs:
            raise UnsupportedFeatureError(f"Keras layer {layer!r} is called with arguments "
                                          f"{sorted(kwargs)}; not supported")
        return refs, states, mask_ref
    refs = []
    for item in node:  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        kwargs = item[3] if len(item) > 3 else {}
        extra = sorted(k for k, v in (kwargs or {}).items()
                       if v is not None and k not in ("training", "mask"))
        if extra:
            raise UnsupportedFeatureError(f"Keras layer {layer!r} is called with arguments "
                                          f"{extra}; not supported")
        refs.append(tensor_name(*_ref(item)))
    return refs[:1], refs[1:], None


def _topological(nodes: list[Node], inputs: list[str]) -> list[Node]:
    ready = set(inputs)
    ordered: list[Node] = []
    pending = list(nodes)
    while pending:
        progress = [n for n in pending if all(t in ready for t in n.inputs)]
        if not progress:
            missing = sorted({t for n in pending for t in n.inputs} - ready)
            raise UnsupportedFeatureError(f"Keras graph cannot be ordered; tensors never "
                                          f"produced: {missing}")
        for node in progress:
            ordered.append(node)
            ready.update(node.outputs)
            pending.remove(node)
    return ordered


# ------------------------------------------------------------------------ live objects


def from_live(layer_or_model: Any, **overrides: Any) -> Model:
    """A :class:`Model` from a live Keras 3 or tf_keras layer or model.

    A model is rebuilt from ``get_config()`` and each layer's ``get_weights()``; a bare
    recurrent / Bidirectional layer becomes a one-layer model with input ``input``.
    """
    if not all(hasattr(layer_or_model, a) for a in ("get_config", "get_weights")):
        raise InputError(f"expected a live Keras layer or model, got "
                         f"{type(layer_or_model).__name__} (it has no get_config/get_weights)")
    root = type(layer_or_model).__module__.split(".")[0]
    package = sys.modules.get(root)
    version = str(getattr(package, "__version__", "3"))
    if root == "tf_keras" and not version.startswith("2"):
        version = "2"
    keras_version = str(overrides.pop("keras_version", version))
    dtype = overrides.pop("dtype", "float32")
    if str(dtype) not in ("float32", "float64"):
        raise InputError(f"override dtype={dtype!r}; expected float32 or float64")
    dtype = np.dtype(str(dtype))
    _check_overrides(overrides)
    meta = {"framework": f"{root} (live object)", "keras_version": keras_version}
    lookup = {}
    if hasattr(layer_or_model, "layers") and hasattr(layer_or_model, "inputs"):
        for sub in layer_or_model.layers:
            lookup[sub.name] = sub

        def weights(name: str, class_name: str, config: dict[str, Any]) -> list[np.ndarray]:
            if name not in lookup:  # Keras 3 ops in the graph (mask computations)
                return []
            return [np.asarray(w) for w in lookup[name].get_weights()]

        model_config = {"class_name": type(layer_or_model).__name__,
                        "config": layer_or_model.get_config()}
        if model_config["class_name"] not in ("Sequential",):
            model_config["class_name"] = "Functional"
        return build_model(model_config, weights, keras_version=keras_version,
                           source=f"live {root} model", meta=meta, overrides=overrides,
                           dtype=dtype)

    class_name = type(layer_or_model).__name__
    arrays = [np.asarray(w) for w in layer_or_model.get_weights()]
    layer = make_layer(class_name, layer_or_model.get_config(), arrays,
                       BuildContext(keras_version, overrides))
    return single_layer_model(layer, f"live {root} layer", meta, dtype)


OVERRIDES = ("units", "recurrent_activation", "activation", "reset_after", "keras_version",
             "kind", "return_sequences", "return_state", "go_backwards", "merge_mode",
             "dtype")


def _check_overrides(overrides: dict[str, Any]) -> None:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise InputError(f"unknown override(s) {unknown}; known: {', '.join(OVERRIDES)}")
    check_override_values({k: v for k, v in overrides.items() if k != "dtype"})
