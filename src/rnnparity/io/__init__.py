"""File readers. ``load`` picks one by file suffix; each returns a :class:`Model`."""

from __future__ import annotations

import importlib
import logging
import zipfile
from pathlib import Path
from typing import Any

from ..errors import FormatError, InputError, RnnParityError
from ..model import Model

__all__ = ["load", "READERS"]

logger = logging.getLogger(__name__)

# suffix -> "module:function"; modules are imported only when a file of theirs is read.
READERS: dict[str, str] = {
    ".h5": "rnnparity.io.keras_h5:load",
    ".hdf5": "rnnparity.io.keras_h5:load",
    ".keras": "rnnparity.io.keras_v3:load",
    ".onnx": "rnnparity.io.onnx_file:load",
    ".safetensors": "rnnparity.io.torch_file:load",
    ".pt": "rnnparity.io.torch_file:load",
    ".pth": "rnnparity.io.torch_file:load",
    ".bin": "rnnparity.io.torch_file:load",
    ".npz": "rnnparity.io.torch_file:load",
}


def load(path: str | Path, layer: str | None = None, **overrides: Any) -> Model:
    """Read a model file into a runnable :class:`Model`.

    Args:
        path: a Keras ``.h5``/``.hdf5``/``.keras``, ONNX ``.onnx``, or PyTorch state_dict
            ``.safetensors``/``.npz``/``.pt``/``.pth`` file.
        layer: run only this layer (Keras layer name, state_dict module prefix, ONNX node).
        **overrides: facts the file does not pin down, e.g. ``recurrent_activation``,
            ``units``, ``keras_version``, ``kind``; each reader lists the ones it accepts.

    Raises:
        FormatError: the file is missing, unreadable or of an unknown kind.
    """
    if not isinstance(path, (str, Path)):
        raise InputError(f"model path must be a str or Path, got {type(path).__name__}")
    if layer is not None and not isinstance(layer, str):
        raise InputError(f"layer must be a name (str) or None, got {layer!r}")
    path = Path(path)
    if not path.exists():
        raise FormatError(f"model file {str(path)!r} does not exist")
    if not path.is_file():
        raise FormatError(f"model path {str(path)!r} is not a file")
    target = READERS.get(path.suffix.lower())
    if target is None:
        known = ", ".join(sorted(READERS))
        raise FormatError(f"cannot tell the format of {path.name!r} from its suffix; "
                          f"expected one of {known}")
    module_name, function = target.split(":")
    logger.debug("reading %s with %s", path, target)
    reader = getattr(importlib.import_module(module_name), function)
    try:
        return reader(path, layer=layer, **overrides)
    except RnnParityError:
        raise
    except _LOW_LEVEL as err:
        # Readers check what they expect; this catches a corrupt file in a way no check
        # foresaw, so the caller still gets one specific error naming the file.
        detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise FormatError(f"{path.name!r} is not a readable {path.suffix} model: "
                          f"{type(err).__name__}: {detail} (expected a file as "
                          f"{_FRAMEWORK[path.suffix.lower()]} writes it)") from err


# What a reader meeting malformed content raises from json, h5py, onnx, numpy or zipfile.
_LOW_LEVEL = (KeyError, IndexError, TypeError, ValueError, AttributeError, OSError,
              RuntimeError, RecursionError, EOFError, UnicodeError, zipfile.BadZipFile)
_FRAMEWORK = {".h5": "Keras", ".hdf5": "Keras", ".keras": "Keras 3", ".onnx": "an ONNX exporter",
              ".safetensors": "safetensors", ".pt": "torch.save", ".pth": "torch.save",
              ".bin": "torch.save", ".npz": "numpy.savez"}
