"""rnnparity: run Keras, TensorFlow, PyTorch and ONNX recurrent layers in plain NumPy.

Example:
    >>> import numpy as np, rnnparity
    >>> model = rnnparity.load(rnnparity.example_path("cudnn_lstm_1x2.h5"))
    >>> model(np.zeros((1, 4, 1), np.float32)).shape
    (1, 4, 2)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .activations import Activation
from .engine import Direction, RecurrentStack
from .errors import (
    FormatError,
    InputError,
    LayoutError,
    MissingFrameworkError,
    RnnParityError,
    RnnParityWarning,
    ShapeError,
    UnsupportedFeatureError,
)
from .io import load
from .model import Model, Stream
from .spec import CellSpec, CellWeights

__version__ = "0.1.0"

__all__ = [
    "load",
    "from_keras",
    "from_torch",
    "example_path",
    "Model",
    "Stream",
    "CellSpec",
    "CellWeights",
    "Activation",
    "Direction",
    "RecurrentStack",
    "RnnParityError",
    "ShapeError",
    "LayoutError",
    "FormatError",
    "InputError",
    "UnsupportedFeatureError",
    "MissingFrameworkError",
    "RnnParityWarning",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


def example_path(name: str) -> Path:
    """Path of an example file shipped with the package (see ``rnnparity/examples``)."""
    path = Path(__file__).parent / "examples" / name
    if not path.exists():
        folder = path.parent
        known = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
        raise FormatError(f"no example named {name!r}; examples: {known}")
    return path


def from_keras(layer_or_model: Any, **overrides: Any) -> Model:
    """Build a :class:`Model` from a live Keras (Keras 3 or tf_keras) layer or model."""
    from .dialects.keras import from_live

    return from_live(layer_or_model, **overrides)


def from_torch(module: Any, **overrides: Any) -> Model:
    """Build a :class:`Model` from a live ``torch.nn`` LSTM/GRU/RNN module or cell."""
    from .dialects.torch import from_live

    return from_live(module, **overrides)
