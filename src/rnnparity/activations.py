"""Element-wise activations, each written the way its framework writes it.

An activation is data: a name plus optional ``alpha`` / ``beta`` (ONNX's parameters). The
same name can mean different functions in different frameworks (``hard_sigmoid`` is
``clip(0.2 x + 0.5)`` in Keras 2 but ``clip(x / 6 + 0.5)`` in Keras 3), so dialects resolve
framework names to an explicit :class:`Activation` with its constants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import UnsupportedFeatureError

__all__ = [
    "Activation",
    "SIGMOID",
    "TANH",
    "RELU",
    "LINEAR",
    "HARD_SIGMOID_KERAS2",
    "HARD_SIGMOID_KERAS3",
    "ACTIVATION_DEFAULTS",
]

Array = np.ndarray


def _sigmoid(x: Array, out: Array, a: float, b: float) -> None:
    # sigmoid(x) = 0.5 * tanh(0.5 x) + 0.5: one transcendental call, no overflow warnings.
    np.multiply(x, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5


def _tanh(x: Array, out: Array, a: float, b: float) -> None:
    np.tanh(x, out=out)


def _relu(x: Array, out: Array, a: float, b: float) -> None:
    np.maximum(x, 0, out=out)


def _linear(x: Array, out: Array, a: float, b: float) -> None:
    if out is not x:
        np.copyto(out, x)


def _hard_sigmoid(x: Array, out: Array, a: float, b: float) -> None:
    np.multiply(x, a, out=out)
    out += b
    np.clip(out, 0.0, 1.0, out=out)


def _affine(x: Array, out: Array, a: float, b: float) -> None:
    np.multiply(x, a, out=out)
    out += b


def _leaky_relu(x: Array, out: Array, a: float, b: float) -> None:
    np.copyto(out, np.where(x >= 0, x, x * np.asarray(a, x.dtype)))


def _thresholded_relu(x: Array, out: Array, a: float, b: float) -> None:
    np.copyto(out, np.where(x > a, x, np.zeros((), x.dtype)))


def _scaled_tanh(x: Array, out: Array, a: float, b: float) -> None:
    np.multiply(x, b, out=out)
    np.tanh(out, out=out)
    out *= a


def _elu(x: Array, out: Array, a: float, b: float) -> None:
    np.copyto(out, np.where(x >= 0, x, np.asarray(a, x.dtype) * np.expm1(np.minimum(x, 0))))


def _softsign(x: Array, out: Array, a: float, b: float) -> None:
    np.copyto(out, x / (1 + np.abs(x)))


def _softplus(x: Array, out: Array, a: float, b: float) -> None:
    np.logaddexp(x, np.zeros((), x.dtype), out=out)


_FUNCTIONS: dict[str, Callable[[Array, Array, float, float], None]] = {
    "sigmoid": _sigmoid,
    "tanh": _tanh,
    "relu": _relu,
    "linear": _linear,
    "hard_sigmoid": _hard_sigmoid,
    "affine": _affine,
    "leaky_relu": _leaky_relu,
    "thresholded_relu": _thresholded_relu,
    "scaled_tanh": _scaled_tanh,
    "elu": _elu,
    "softsign": _softsign,
    "softplus": _softplus,
}

# Defaults for parameterised activations: ONNX's for the ONNX family.
ACTIVATION_DEFAULTS: dict[str, tuple[float, float]] = {
    "hard_sigmoid": (0.2, 0.5),
    "affine": (1.0, 0.0),
    "leaky_relu": (0.01, 0.0),
    "thresholded_relu": (1.0, 0.0),
    "scaled_tanh": (1.0, 1.0),
    "elu": (1.0, 0.0),
}


@dataclass(frozen=True)
class Activation:
    """A named element-wise function with its constants.

    Args:
        name: one of ``sigmoid, tanh, relu, linear, hard_sigmoid, affine, leaky_relu,
            thresholded_relu, scaled_tanh, elu, softsign, softplus``.
        alpha, beta: constants of the parameterised functions (ONNX meaning:
            hard_sigmoid ``clip(alpha x + beta, 0, 1)``, affine ``alpha x + beta``,
            scaled_tanh ``alpha tanh(beta x)``, leaky_relu / elu slope ``alpha``,
            thresholded_relu threshold ``alpha``).
    """

    name: str
    alpha: float = 0.0
    beta: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in _FUNCTIONS:
            supported = ", ".join(sorted(_FUNCTIONS))
            raise UnsupportedFeatureError(
                f"activation {self.name!r} is not supported; supported: {supported}"
            )

    @classmethod
    def of(cls, name: str, alpha: float | None = None, beta: float | None = None) -> Activation:
        """Build an activation, filling missing constants with the ONNX defaults."""
        default_alpha, default_beta = ACTIVATION_DEFAULTS.get(name, (0.0, 0.0))
        return cls(
            name,
            default_alpha if alpha is None else float(alpha),
            default_beta if beta is None else float(beta),
        )

    def __call__(self, x: Array, out: Array | None = None) -> Array:
        """Apply the function; in place when ``out is x``."""
        if out is None:
            out = np.empty_like(x)
        _FUNCTIONS[self.name](x, out, self.alpha, self.beta)
        return out

    def __str__(self) -> str:
        if self.name in ACTIVATION_DEFAULTS:
            return f"{self.name}(alpha={self.alpha:g}, beta={self.beta:g})"
        return self.name


SIGMOID = Activation("sigmoid")
TANH = Activation("tanh")
RELU = Activation("relu")
LINEAR = Activation("linear")
HARD_SIGMOID_KERAS2 = Activation("hard_sigmoid", 0.2, 0.5)
HARD_SIGMOID_KERAS3 = Activation("hard_sigmoid", 1.0 / 6.0, 0.5)
