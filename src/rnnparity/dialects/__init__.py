"""Framework dialects: each maps one framework's layout onto the canonical CellSpec.

Every dialect module exposes the same names: ``GATE_ORDER`` (the framework's gate block
letters per cell kind), ``to_canonical`` and ``from_canonical`` (one direction's arrays
to and from :class:`~rnnparity.spec.CellWeights`), and ``SUPPORTED_ATTRIBUTES``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UnsupportedFeatureError

__all__ = ["DIALECTS", "get_dialect"]

# name -> module; imported on first use so that no framework code loads with rnnparity.
DIALECTS: dict[str, str] = {
    "keras": "rnnparity.dialects.keras",
    "torch": "rnnparity.dialects.torch",
    "onnx": "rnnparity.dialects.onnx",
    "tf1": "rnnparity.dialects.tf1",
}


def get_dialect(name: str) -> ModuleType:
    """The dialect module called ``name`` (keras, torch, onnx, tf1)."""
    if name not in DIALECTS:
        raise UnsupportedFeatureError(
            f"unknown dialect {name!r}; known: {', '.join(sorted(DIALECTS))}")
    return importlib.import_module(DIALECTS[name])
