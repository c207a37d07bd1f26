"""Shared test setup: oracle frameworks that skip (or fail, in CI) when missing."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

if importlib.util.find_spec("hypothesis") is not None:  # a dev extra
    from hypothesis import HealthCheck, settings

    settings.register_profile("ci", max_examples=25, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("dev", max_examples=10, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# RNNPARITY_REQUIRE=tensorflow,torch,onnxruntime,models turns these skips into failures, so
# a CI lane with a broken install cannot pass as "skipped".
REQUIRED = {name.strip() for name in os.environ.get("RNNPARITY_REQUIRE", "").split(",")
            if name.strip()}


def require(module: str, reason: str):
    """Import ``module`` or skip the calling test module with ``reason``."""
    if module in REQUIRED or module.split(".")[0] in REQUIRED:
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=reason)


def tf1_rnn_cell_module(tf):
    """``tf.compat.v1.nn.rnn_cell``, which TF 2 serves from tf_keras' legacy cells.

    With Keras 3 installed, TF binds ``tf.compat.v1.nn.rnn_cell`` to Keras 3, which has no
    such cells; tf_keras still ships them.
    """
    try:
        module = tf.compat.v1.nn.rnn_cell
        module.LSTMCell  # noqa: B018 - raises AttributeError when TF is bound to Keras 3
        return module
    except AttributeError:
        from tf_keras.api._v1.keras.__internal__.legacy import rnn_cell

        return rnn_cell


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def registry_model():
    """``registry_model("textgenrnn")`` -> path of a pretrained file (see registry_models)."""
    from registry_models import fetch

    def get(key: str) -> Path:
        try:
            return fetch(key)
        except (RuntimeError, OSError) as err:
            if "models" in REQUIRED:
                raise
            pytest.skip(f"pretrained model {key!r} not available from the registry: {err}")

    return get
