"""Optional dependencies: import on demand, fail with the extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingFrameworkError

__all__ = ["import_optional"]

# module -> (pip extra, what needs it)
_EXTRAS = {
    "h5py": ("keras", "reading Keras .h5 / .keras files"),
    "onnx": ("onnx", "reading and writing .onnx models"),
    "onnxruntime": ("onnx", "running the onnxruntime oracle"),
    "safetensors": ("torch", "reading .safetensors state_dicts"),
    "torch": ("torch", "reading .pt/.pth files and live PyTorch modules"),
    "matplotlib": ("plot", "drawing plots"),
    "numba": ("fast", "the compiled fast path"),
    "tqdm": ("all", "progress bars"),
    "tensorflow": ("", "running TensorFlow as the oracle"),
    "keras": ("", "live Keras objects"),
    "tf_keras": ("", "live tf_keras objects"),
}


def import_optional(module: str) -> ModuleType:
    """Import ``module`` or raise MissingFrameworkError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra, purpose = _EXTRAS.get(module.split(".")[0], ("", "this feature"))
        remedy = f"pip install 'rnnparity[{extra}]'" if extra else f"pip install {module}"
        raise MissingFrameworkError(
            f"{module} is needed for {purpose} but is not installed; install it with: {remedy}"
        ) from err
