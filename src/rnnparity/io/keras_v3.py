"""Keras 3 ``.keras`` archives: a zip of ``config.json``, ``metadata.json`` and
``model.weights.h5``.

Inside the weights file each layer lives under ``layers/<path>``, where ``<path>`` is
derived from the class name (``lstm``, ``lstm_1``...) and the real layer name is the
``name`` attribute of ``layers/<path>/vars``. Recurrent layers keep their arrays in
``cell/vars/0..2`` (kernel, recurrent_kernel, bias); Bidirectional in
``forward_layer/cell/vars`` and ``backward_layer/cell/vars``; TimeDistributed in
``layer/vars``; other layers in ``vars``.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..dialects import keras as kd
from ..errors import FormatError
from ..model import Model
from ._safety import MAX_JSON_BYTES, check_zip_member
from .keras_h5 import member, open_h5, read_dataset, split_overrides

__all__ = ["load"]

logger = logging.getLogger(__name__)

# Where each class keeps its arrays, in get_weights() order.
_VAR_PATHS: dict[str, tuple[str, ...]] = {
    "Bidirectional": ("forward_layer/cell/vars", "backward_layer/cell/vars"),
    "TimeDistributed": ("layer/vars",),
}
_RECURRENT_PATHS = ("cell/vars",)


def load(path: Path, layer: str | None = None, **overrides: Any) -> Model:
    """Read a Keras 3 ``.keras`` archive."""
    rest, dtype = split_overrides(overrides)
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for required in ("config.json", "model.weights.h5"):
                if required not in names:
                    raise FormatError(f"{str(path)!r} has no {required}; expected a Keras 3 "
                                      f".keras archive (found {sorted(names)[:10]})")
            # Members are read into memory, never extracted: names such as "../x" are
            # harmless; declared sizes are checked first so a zip bomb fails at once.
            for name in ("config.json", "metadata.json", "model.weights.h5"):
                if name in names:
                    check_zip_member(str(path), archive.getinfo(name),
                                     *([MAX_JSON_BYTES] if name.endswith(".json") else []))
            config = json.loads(archive.read("config.json"))
            metadata = (json.loads(archive.read("metadata.json"))
                        if "metadata.json" in names else {})
            weights_bytes = archive.read("model.weights.h5")
    except zipfile.BadZipFile as err:
        raise FormatError(f"{str(path)!r} is not a zip archive; expected a Keras 3 .keras "
                          "file") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(f"{str(path)!r}: config.json or metadata.json is not valid JSON "
                          f"({err})") from err
    except FormatError:
        raise
    except (OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as err:
        raise FormatError(f"{str(path)!r}: a member of the archive cannot be read ({err}); "
                          "expected a Keras 3 .keras file") from err
    if not isinstance(metadata, dict):
        raise FormatError(f"{str(path)!r}: metadata.json holds a JSON "
                          f"{type(metadata).__name__}; expected an object")

    recorded = str(metadata.get("keras_version", "3"))
    version = str(rest.get("keras_version", recorded))
    meta = {"framework": "keras", "format": "Keras 3 .keras archive",
            "keras_version": recorded}
    with open_h5(io.BytesIO(weights_bytes), "model.weights.h5") as f:
        reader = _reader(f, path)
        try:
            return kd.build_model(config, reader, keras_version=version, source=str(path),
                                  meta=meta, layer=layer, overrides=rest, dtype=dtype)
        except KeyError as err:
            raise FormatError(f"{str(path)!r}: missing entry {err} in model.weights.h5") from err


def _reader(f: Any, path: Path) -> kd.WeightSource:
    context = f"{str(path)!r} model.weights.h5"
    groups = member(f, "layers", context) if "layers" in f else {}
    by_name: dict[str, Any] = {}
    for key in groups:
        group = member(groups, key, context)
        vars_group = group.get("vars") if hasattr(group, "get") else None
        real = vars_group.attrs.get("name") if vars_group is not None else None
        by_name[_text(real) if real is not None else key] = group

    def read(name: str, class_name: str, config: dict[str, Any]) -> list[np.ndarray]:
        if name not in by_name:
            return []
        group = by_name[name]
        context = f"{str(path)!r} model.weights.h5 layer {name!r}"
        recurrent = class_name in kd.KINDS or class_name == "RNN"
        paths = _VAR_PATHS.get(class_name, _RECURRENT_PATHS if recurrent else ("vars",))
        arrays: list[np.ndarray] = []
        for sub in paths:
            if sub not in group:
                raise FormatError(f"{str(path)!r}: layer {name!r} ({class_name}) has no "
                                  f"{sub!r} group in model.weights.h5")
            variables = member(group, sub, context)
            keys = list(variables)
            if not all(k.isdigit() for k in keys):
                raise FormatError(f"{context}: {sub!r} holds {sorted(keys)[:8]}; expected "
                                  "variables named 0, 1, 2...")
            arrays += [read_dataset(variables, k, context) for k in sorted(keys, key=int)]
        return arrays

    return read


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
