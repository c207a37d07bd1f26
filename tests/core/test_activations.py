"""Activations against their defining formulas, including each framework's constants."""

from __future__ import annotations

import numpy as np
import pytest

from rnnparity.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3, Activation
from rnnparity.errors import UnsupportedFeatureError

X = np.linspace(-8, 8, 2001)

DEFINITIONS = {
    "sigmoid": (Activation("sigmoid"), lambda x: 1 / (1 + np.exp(-x))),
    "tanh": (Activation("tanh"), np.tanh),
    "relu": (Activation("relu"), lambda x: np.where(x > 0, x, 0)),
    "linear": (Activation("linear"), lambda x: x),
    "keras2_hard_sigmoid": (HARD_SIGMOID_KERAS2, lambda x: np.clip(0.2 * x + 0.5, 0, 1)),
    "keras3_hard_sigmoid": (HARD_SIGMOID_KERAS3, lambda x: np.clip(x + 3, 0, 6) / 6),
    "affine": (Activation.of("affine", 2.0, -0.5), lambda x: 2 * x - 0.5),
    "leaky_relu": (Activation.of("leaky_relu", 0.1), lambda x: np.where(x >= 0, x, 0.1 * x)),
    "thresholded_relu": (Activation.of("thresholded_relu", 1.5),
                         lambda x: np.where(x > 1.5, x, 0)),
    "scaled_tanh": (Activation.of("scaled_tanh", 2.0, 0.5), lambda x: 2 * np.tanh(0.5 * x)),
    "elu": (Activation.of("elu", 0.7), lambda x: np.where(x >= 0, x, 0.7 * (np.exp(x) - 1))),
    "softsign": (Activation("softsign"), lambda x: x / (1 + np.abs(x))),
    "softplus": (Activation("softplus"), lambda x: np.log1p(np.exp(x))),
}


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_activation_matches_definition(name):
    activation, formula = DEFINITIONS[name]
    np.testing.assert_allclose(activation(X), formula(X), atol=1e-12, rtol=1e-12)
    x32 = X.astype(np.float32)
    got = activation(x32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, formula(X), atol=2e-6, rtol=1e-6)


def test_in_place_application():
    x = X.copy()
    Activation("sigmoid")(x, out=x)
    np.testing.assert_allclose(x, 1 / (1 + np.exp(-X)), atol=1e-12)


def test_onnx_defaults_fill_missing_constants():
    assert Activation.of("hard_sigmoid") == HARD_SIGMOID_KERAS2
    assert Activation.of("leaky_relu").alpha == pytest.approx(0.01)


def test_unknown_activation_is_refused():
    with pytest.raises(UnsupportedFeatureError, match="activation 'swish' is not supported"):
        Activation("swish")
