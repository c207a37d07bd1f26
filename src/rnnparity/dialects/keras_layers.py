"""The non-recurrent Keras layers that usually surround recurrent ones.

Input, Embedding (``mask_zero``), Masking, Dense, TimeDistributed(Dense), Dropout,
Activation, Concatenate, Add, Reshape, Flatten, and the few ops (``not_equal``,
``any``...) Keras 3 writes into functional graphs to compute masks. Masks follow Keras:
Embedding and Masking make them, Dense / TimeDistributed / Dropout / Activation pass them
on, Concatenate and Add combine them with a logical and. Any other layer class raises
UnsupportedFeatureError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError, ShapeError, UnsupportedFeatureError, check_shape
from ..model import CallContext, Layer

__all__ = [
    "SUPPORTED_ATTRIBUTES",
    "Embedding",
    "Masking",
    "Dense",
    "Dropout",
    "ActivationLayer",
    "Merge",
    "Reshape",
    "Op",
    "OPS",
    "make",
    "apply_activation",
]

SUPPORTED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "Embedding": frozenset({"name", "input_dim", "output_dim", "mask_zero", "dtype",
                            "lora_rank"}),
    "Masking": frozenset({"name", "mask_value", "dtype"}),
    "Dense": frozenset({"name", "units", "activation", "use_bias", "dtype", "lora_rank"}),
    "TimeDistributed": frozenset({"name", "layer", "dtype"}),
    "Dropout": frozenset({"name", "rate", "dtype"}),
    "SpatialDropout1D": frozenset({"name", "rate", "dtype"}),
    "GaussianNoise": frozenset({"name", "stddev", "dtype"}),
    "Activation": frozenset({"name", "activation", "dtype"}),
    "Concatenate": frozenset({"name", "axis", "dtype"}),
    "Add": frozenset({"name", "dtype"}),
    "Reshape": frozenset({"name", "target_shape", "dtype"}),
    "Flatten": frozenset({"name", "data_format", "dtype"}),
    "NotEqual": frozenset({"name", "value"}),
    "Equal": frozenset({"name", "value"}),
    "Any": frozenset({"name", "axis", "keepdims", "value"}),
    "All": frozenset({"name", "axis", "keepdims", "value"}),
    "LogicalAnd": frozenset({"name", "value"}),
    "LogicalOr": frozenset({"name", "value"}),
    "LogicalNot": frozenset({"name", "value"}),
}

Array = np.ndarray


def _softmax(x: Array) -> Array:
    shifted = x - x.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def apply_activation(name: Any, x: Array, keras_version: str = "3") -> Array:
    """Apply a Keras activation by name (``softmax`` over the last axis included)."""
    from .keras import resolve_activation

    if isinstance(name, dict):
        inner = name.get("config")
        name = inner if isinstance(inner, str) else name.get("class_name")
    key = str(name or "linear").lower()
    if key == "softmax":
        return _softmax(x)
    return resolve_activation(key, keras_version)(x)


class Embedding(Layer):
    """Integer ids ``(batch, seq_len)`` -> vectors; ``mask_zero`` masks id 0."""

    kind = "Embedding"
    takes_integers = True

    def __init__(self, name: str, embeddings: Array, mask_zero: bool) -> None:
        super().__init__(name)
        self.embeddings = np.asarray(embeddings)
        self.mask_zero = mask_zero

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        ids = np.asarray(inputs[0])
        if ids.dtype.kind == "f":
            if not np.all(ids == np.round(ids)):
                raise InputError(f"Embedding {self.name!r} expects integer ids; got "
                                 "non-integer floats")
            ids = ids.astype(np.int64)
        if ids.dtype.kind not in "iu":
            raise InputError(f"Embedding {self.name!r} expects integer ids; got {ids.dtype}")
        vocab = self.embeddings.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise InputError(f"Embedding {self.name!r}: ids must be in [0, {vocab}); found "
                             f"min {ids.min()} max {ids.max()}")
        dtype = inputs[0].dtype if inputs[0].dtype.kind == "f" else np.float32
        out = self.embeddings[ids].astype(dtype, copy=False)
        mask = (ids != 0) if self.mask_zero else None
        return [out], [mask]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                "vocabulary": int(self.embeddings.shape[0]),
                "output_dim": int(self.embeddings.shape[1]),
                "mask_zero": self.mask_zero}


class Masking(Layer):
    """Masks steps whose features all equal ``mask_value`` and zeroes them."""

    kind = "Masking"

    def __init__(self, name: str, mask_value: float) -> None:
        super().__init__(name)
        self.mask_value = mask_value

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        x = inputs[0]
        mask = np.any(x != np.asarray(self.mask_value, x.dtype), axis=-1)
        return [np.where(mask[..., None], x, np.zeros((), x.dtype))], [mask]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "mask_value": self.mask_value}


class Dense(Layer):
    """``activation(x @ kernel + bias)`` on the last axis; also TimeDistributed(Dense)."""

    kind = "Dense"

    def __init__(self, name: str, kernel: Array, bias: Array | None, activation: Any,
                 keras_version: str, kind: str = "Dense") -> None:
        super().__init__(name)
        self.kind = kind
        self.kernel = np.asarray(kernel)
        self.bias = None if bias is None else np.asarray(bias)
        self.activation = activation
        self.keras_version = keras_version
        apply_activation(activation, np.zeros(1, np.float32), keras_version)  # validates

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        x = inputs[0]
        check_shape(f"Keras {self.kind} {self.name!r}", "input", x.shape,
                    tuple(x.shape[:-1]) + ("input_size",), input_size=self.kernel.shape[0])
        y = x @ self.kernel.astype(x.dtype, copy=False)
        if self.bias is not None:
            y += self.bias.astype(x.dtype, copy=False)
        return [apply_activation(self.activation, y, self.keras_version)], [masks[0]]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind,
                "input_size": int(self.kernel.shape[0]), "units": int(self.kernel.shape[1]),
                "activation": str(self.activation), "bias": self.bias is not None}


class Dropout(Layer):
    """Identity at inference (Dropout, SpatialDropout1D, GaussianNoise)."""

    def __init__(self, name: str, kind: str) -> None:
        super().__init__(name)
        self.kind = kind

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        return [inputs[0]], [masks[0]]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "computes": "identity at inference"}


class ActivationLayer(Layer):
    kind = "Activation"

    def __init__(self, name: str, activation: Any, keras_version: str) -> None:
        super().__init__(name)
        self.activation = activation
        self.keras_version = keras_version
        apply_activation(activation, np.zeros(1, np.float32), keras_version)

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        return [apply_activation(self.activation, inputs[0], self.keras_version)], [masks[0]]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "activation": str(self.activation)}


class Merge(Layer):
    """Concatenate (along ``axis``) or Add; output mask = and of the input masks."""

    def __init__(self, name: str, kind: str, axis: int = -1) -> None:
        super().__init__(name)
        self.kind = kind
        self.axis = axis

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        if self.kind == "Concatenate":
            out = np.concatenate(inputs, axis=self.axis)
        else:
            out = inputs[0].copy()
            for other in inputs[1:]:
                out = out + other
        present = [m for m in masks if m is not None]
        mask = None
        if present:
            mask = np.logical_and.reduce([m if m is not None else np.ones_like(present[0])
                                          for m in masks])
        return [out], [mask]

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "Concatenate":
            info["axis"] = self.axis
        return info


class Reshape(Layer):
    """Reshape (``target_shape`` per sample) and Flatten; masks are dropped as in Keras."""

    def __init__(self, name: str, kind: str, target_shape: tuple[int, ...] | None) -> None:
        super().__init__(name)
        self.kind = kind
        self.target_shape = target_shape

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        x = inputs[0]
        shape = (-1,) if self.target_shape is None else self.target_shape
        if ctx.streaming and self.target_shape is None and x.ndim >= 3:
            raise UnsupportedFeatureError(
                f"Keras {self.kind} {self.name!r} cannot stream: it flattens the time axis of "
                f"{x.shape}, so it needs the whole sequence")
        try:
            return [x.reshape((x.shape[0],) + tuple(shape))], [None]
        except ValueError as err:
            raise ShapeError(f"Keras {self.kind} {self.name!r}: cannot reshape {x.shape} to "
                             f"(batch, {shape})") from err

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "target_shape": self.target_shape}


class Op(Layer):
    """A Keras 3 op written into a functional graph (the mask computations of Masking and
    Embedding: ``not_equal``, ``any``, ...)."""

    takes_integers = True

    def __init__(self, name: str, kind: str, config: dict[str, Any]) -> None:
        super().__init__(name)
        self.kind = kind
        self.value = config.get("value", 0)
        self.axis = config.get("axis")
        self.keepdims = bool(config.get("keepdims", False))

    def call(self, inputs: list[Array], masks: list[Array | None], ctx: CallContext
             ) -> tuple[list[Array], list[Array | None]]:
        a = inputs[0]
        b = inputs[1] if len(inputs) > 1 else self.value
        kind = self.kind
        if kind in ("NotEqual", "Equal"):
            out = np.not_equal(a, b) if kind == "NotEqual" else np.equal(a, b)
        elif kind in ("Any", "All"):
            reduce = np.any if kind == "Any" else np.all
            out = reduce(a, axis=self.axis, keepdims=self.keepdims)
        elif kind == "LogicalNot":
            out = np.logical_not(a)
        else:
            out = (np.logical_and if kind == "LogicalAnd" else np.logical_or)(a, b)
        return [np.asarray(out)], [None]


OPS = ("NotEqual", "Equal", "Any", "All", "LogicalAnd", "LogicalOr", "LogicalNot")


def _check(class_name: str, config: dict[str, Any]) -> None:
    from .keras import check_config

    check_config(class_name, config, SUPPORTED_ATTRIBUTES[class_name])


def _weights(class_name: str, name: str, arrays: list[Array], count: int | tuple[int, ...]
             ) -> None:
    allowed = (count,) if isinstance(count, int) else count
    if len(arrays) not in allowed:
        raise ShapeError(f"Keras {class_name} {name!r}: expected {' or '.join(map(str, allowed))}"
                         f" weight arrays; found {len(arrays)}")


def make(class_name: str, config: dict[str, Any], arrays: list[Array], build: Any) -> Layer:
    """A layer from its Keras class name, config and weights (get_weights order)."""
    name = config.get("name", class_name.lower())
    version = str(build.overrides.get("keras_version", build.keras_version))
    if class_name not in SUPPORTED_ATTRIBUTES:
        raise UnsupportedFeatureError(
            f"Keras layer class {class_name!r} (layer {name!r}) is not supported; supported: "
            "LSTM, GRU, SimpleRNN, CuDNNLSTM, CuDNNGRU, RNN(cell), Bidirectional, "
            + ", ".join(k for k in SUPPORTED_ATTRIBUTES if k not in OPS))
    _check(class_name, config)
    if config.get("lora_rank"):
        raise UnsupportedFeatureError(f"Keras {class_name} {name!r}: lora_rank is not "
                                      "supported")
    if class_name == "Embedding":
        _weights(class_name, name, arrays, 1)
        return Embedding(name, arrays[0], bool(config.get("mask_zero", False)))
    if class_name == "Masking":
        return Masking(name, float(config.get("mask_value", 0.0)))
    if class_name == "Dense":
        use_bias = config.get("use_bias", True)
        _weights(class_name, name, arrays, 2 if use_bias else 1)
        return Dense(name, arrays[0], arrays[1] if use_bias else None,
                     config.get("activation", "linear"), version)
    if class_name == "TimeDistributed":
        inner = config["layer"]
        if inner.get("class_name") != "Dense":
            raise UnsupportedFeatureError(
                f"Keras TimeDistributed {name!r} wraps {inner.get('class_name')!r}; only "
                "TimeDistributed(Dense) is supported")
        use_bias = inner["config"].get("use_bias", True)
        _check("Dense", inner["config"])
        _weights(class_name, name, arrays, 2 if use_bias else 1)
        return Dense(name, arrays[0], arrays[1] if use_bias else None,
                     inner["config"].get("activation", "linear"), version,
                     kind="TimeDistributed(Dense)")
    if class_name in ("Dropout", "SpatialDropout1D", "GaussianNoise"):
        return Dropout(name, class_name)
    if class_name == "Activation":
        return ActivationLayer(name, config.get("activation", "linear"), version)
    if class_name in ("Concatenate", "Add"):
        return Merge(name, class_name, int(config.get("axis", -1)))
    if class_name == "Reshape":
        return Reshape(name, class_name, tuple(int(s) for s in config["target_shape"]))
    if class_name == "Flatten":
        return Reshape(name, class_name, None)
    return Op(name, class_name, config)
