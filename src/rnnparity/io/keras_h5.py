"""Keras legacy HDF5 files: full models (``model_config``) and weights-only files.

Full models (``model.save("x.h5")`` in standalone Keras 2, tf.keras / tf_keras and Keras
3) are rebuilt from their config. Weights-only files (``save_weights``) hold no config:
each layer's kind and units are inferred from its weight shapes, and what the shapes do
not pin down (recurrent activation, return_sequences...) is taken from the Keras version
the file records and listed in ``model.meta["assumed"]``. Weights are read in the order
of each group's ``weight_names`` attribute, never h5py's alphabetical order.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import import_optional
from ..dialects import keras as kd
from ..errors import FormatError, InputError, ShapeError, UnsupportedFeatureError
from ..model import Layer, Model, Node
from ._safety import check_array_size

__all__ = ["load", "OVERRIDES", "infer_layer", "split_overrides"]

logger = logging.getLogger(__name__)

OVERRIDES = kd.OVERRIDES


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value.item())
    return str(value)


def _names(value: Any) -> list[str]:
    return [_text(v) for v in np.atleast_1d(value)] if value is not None else []


def split_overrides(overrides: dict[str, Any]) -> tuple[dict[str, Any], np.dtype]:
    """Check override keys; return (the rest, computation dtype)."""
    rest = dict(overrides)
    unknown = sorted(set(rest) - set(OVERRIDES))
    if unknown:
        raise InputError(f"unknown override(s) {unknown} for a Keras file; known: "
                         f"{', '.join(OVERRIDES)}")
    dtype = rest.pop("dtype", "float32")
    if str(dtype) not in ("float32", "float64"):
        raise InputError(f"override dtype={dtype!r}; expected float32 or float64")
    kd.check_override_values(rest)
    return rest, np.dtype(str(dtype))


def open_h5(path: Path | str, what: str = "Keras HDF5 file") -> Any:
    """Open an HDF5 file read-only, or raise FormatError in one line."""
    h5py = import_optional("h5py")
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as err:
        reason = str(err).split("(")[0].strip() or type(err).__name__
        where = str(path) if isinstance(path, (str, Path)) else what
        raise FormatError(f"{where!r} is not a readable {what} ({reason}); expected an "
                          "HDF5 file written by Keras") from err


def load(path: Path, layer: str | None = None, **overrides: Any) -> Model:
    """Read a Keras ``.h5`` / ``.hdf5`` file (full model or weights only)."""
    rest, dtype = split_overrides(overrides)
    with open_h5(path) as f:
        try:
            return _load_open(f, Path(path), layer, rest, dtype)
        except KeyError as err:
            raise FormatError(f"{str(path)!r}: missing entry {err} in the HDF5 file; expected "
                              "a file written by Keras") from err


def _load_open(f: Any, path: Path, layer: str | None, overrides: dict[str, Any],
               dtype: np.dtype) -> Model:
    attrs = dict(f.attrs)
    recorded = _text(attrs["keras_version"]) if "keras_version" in attrs else None
    backend = _text(attrs.get("backend", "")) or None
    meta: dict[str, Any] = {"framework": "keras", "format": "Keras HDF5",
                            "keras_version": recorded or "not recorded",
                            "backend": backend or "not recorded"}
    if recorded is None and "keras_version" not in overrides:
        version = "1"
        meta["assumed"] = ["keras_version=1 (the file records none; Keras 2 and later "
                           "always do)"]
    else:
        version = str(overrides.get("keras_version", recorded))
    if "model_config" in attrs:
        config = _model_config(attrs["model_config"], path)
        if "kind" in overrides:
            raise InputError("override 'kind' applies to weights-only files; this file "
                             "records each layer's class")
        root = member(f, "model_weights", str(path)) if "model_weights" in f else f
        meta["format"] = "Keras HDF5 full model"
        return kd.build_model(config, _weights_reader(root, path), keras_version=version,
                              source=str(path), meta=meta, layer=layer,
                              overrides=overrides, dtype=dtype)
    root = member(f, "model_weights", str(path)) if "model_weights" in f else f
    if "layer_names" not in root.attrs:
        raise FormatError(f"{str(path)!r} holds neither a model_config nor layer_names; "
                          "expected a Keras model or save_weights file")
    meta["format"] = "Keras HDF5 weights only (no config)"
    return _weights_only(root, path, version, layer, overrides, dtype, meta)


def _weights_reader(root: Any, path: Path) -> kd.WeightSource:
    def read(name: str, class_name: str, config: dict[str, Any]) -> list[np.ndarray]:
        if name not in root:
            if class_name in ("InputLayer", "Masking", "Dropout", "Activation", "Concatenate",
                              "Add", "Reshape", "Flatten", "NotEqual", "SpatialDropout1D",
                              "GaussianNoise"):
                return []
            raise FormatError(f"{str(path)!r}: no weights stored for layer {name!r}")
        return _group_arrays(member(root, name, str(path)), f"{str(path)!r} layer {name!r}")[1]

    return read


def _model_config(raw: Any, path: Path) -> dict[str, Any]:
    """The ``model_config`` attribute as a dict, or FormatError saying what it holds."""
    try:
        config = json.loads(_text(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise FormatError(f"{str(path)!r}: attribute model_config is not valid JSON ({err}); "
                          "expected the JSON object Keras writes") from err
    if not isinstance(config, dict):
        raise FormatError(f"{str(path)!r}: attribute model_config holds a JSON "
                          f"{type(config).__name__}; expected an object with class_name "
                          "and config")
    return config


def member(group: Any, path: str, context: str) -> Any:
    """``group[path]`` walked one link at a time: external links (which would open other
    files) are refused, and h5py's errors become one-line FormatErrors."""
    h5py = import_optional("h5py")
    current = group
    for part in [p for p in path.split("/") if p]:
        try:
            link = current.get(part, getlink=True) if isinstance(current, h5py.Group) else None
            if isinstance(link, h5py.ExternalLink):
                raise FormatError(f"{context}: {path!r} is an external link to "
                                  f"{link.filename!r}; expected data stored in this file")
            if link is None:
                raise FormatError(f"{context}: no entry {path!r} in the HDF5 file; expected "
                                  "a file written by Keras")
            current = current[part]
        except FormatError:
            raise
        except (KeyError, RuntimeError, OSError, ValueError, TypeError) as err:
            raise FormatError(f"{context}: cannot read {path!r} ({err}); expected a file "
                              "written by Keras") from err
    return current


def read_dataset(group: Any, path: str, context: str) -> np.ndarray:
    """A numeric dataset's values, after checking what it declares (bounded memory)."""
    h5py = import_optional("h5py")
    dataset = member(group, path, context)
    if not isinstance(dataset, h5py.Dataset):
        raise FormatError(f"{context}: {path!r} is a {type(dataset).__name__}; expected a "
                          "dataset of weights")
    if dataset.external or dataset.is_virtual:
        raise FormatError(f"{context}: {path!r} keeps its data outside this file (external "
                          "or virtual storage); expected data stored in the file")
    if dataset.dtype.kind not in "fiu":
        raise FormatError(f"{context}: {path!r} has dtype {dataset.dtype}; expected "
                          "numeric weights")
    check_array_size(context, repr(path), dataset.shape, dataset.dtype.itemsize,
                     stored=dataset.id.get_storage_size())
    try:
        return np.asarray(dataset[()])
    except (OSError, ValueError, RuntimeError) as err:
        raise FormatError(f"{context}: {path!r} cannot be read ({err})") from err


def _group_arrays(group: Any, context: str = "Keras HDF5") -> tuple[list[str], list[np.ndarray]]:
    raw = group.attrs.get("weight_names")
    # Keras writes an empty list as an empty float64 array.
    if raw is not None and np.asarray(raw).size and np.asarray(raw).dtype.kind not in "SUO":
        raise FormatError(f"{context}: attribute weight_names holds {np.asarray(raw).dtype} "
                          "values; expected weight names (strings)")
    names = _names(raw)
    return names, [read_dataset(group, n, context) for n in names]


# ------------------------------------------------------------------------ weights only


def _short(weight_name: str) -> str:
    return weight_name.rsplit("/", 1)[-1].split(":")[0]


def infer_layer(name: str, weight_names: list[str], arrays: list[np.ndarray],
                version: str, overrides: dict[str, Any]) -> tuple[Layer, list[str]]:
    """A layer and the assumptions made, from one weights-only group.

    Kind and units come from the shapes: recurrent kernel ``(units, G * units)`` gives the
    gate count; the bias tells LSTM ``4u`` from CuDNNLSTM ``8u`` and GRU ``(3u,)``
    (reset before) from ``(2, 3u)`` (reset after) and CuDNNGRU ``(6u,)``.
    """
    shorts = [_short(n) for n in weight_names]
    build = kd.BuildContext(version, dict(overrides))
    if any("forward_" in n for n in weight_names) and any("backward_" in n
                                                          for n in weight_names):
        half = len(arrays) // 2
        forward, notes = _infer_recurrent(f"forward_{name}", shorts[:half], arrays[:half],
                                          version, overrides)
        backward, _ = _infer_recurrent(f"backward_{name}", shorts[half:], arrays[half:],
                                       version, dict(overrides, go_backwards=True))
        merge = overrides.get("merge_mode", "concat")
        if "merge_mode" not in overrides:
            notes.append(f"{name}: merge_mode=concat (not stored; override merge_mode=...)")
        return kd.KerasBidirectional(name, forward, backward, merge), notes
    if "recurrent_kernel" in shorts:
        return _infer_recurrent(name, shorts, arrays, version, overrides)
    if shorts == ["embeddings"]:
        return (kd.make_layer("Embedding", {"name": name}, arrays, build),
                [f"{name}: Embedding mask_zero=False (not stored)"])
    if shorts in (["kernel", "bias"], ["kernel"]):
        config = {"name": name, "use_bias": len(arrays) == 2}
        return (kd.make_layer("Dense", config, arrays, build),
                [f"{name}: Dense activation=linear (not stored)"])
    raise UnsupportedFeatureError(
        f"weights-only layer {name!r} holds {shorts} with shapes "
        f"{[tuple(a.shape) for a in arrays]}; cannot tell its Keras class (Keras 1 per-gate "
        "weights are not supported)")


def _infer_recurrent(name: str, shorts: list[str], arrays: list[np.ndarray], version: str,
                     overrides: dict[str, Any]) -> tuple[kd.KerasRecurrent, list[str]]:
    named = dict(zip(shorts, arrays))
    if "kernel" not in named or "recurrent_kernel" not in named:
        raise UnsupportedFeatureError(f"weights-only layer {name!r} holds {shorts}; expected "
                                      "kernel, recurrent_kernel[, bias]")
    recurrent, bias = named["recurrent_kernel"], named.get("bias")
    if recurrent.ndim != 2 or recurrent.shape[0] == 0:
        raise ShapeError(f"layer {name!r}: recurrent_kernel has shape {recurrent.shape}; "
                         "expected (units, G * units)")
    kind = overrides.get("kind") or _kind_from_shapes(name, recurrent, bias)
    kind = {k.lower(): k for k in kd.KINDS}.get(str(kind).lower(), str(kind))
    notes = []
    config: dict[str, Any] = {"name": name, "units": recurrent.shape[0],
                              "use_bias": bias is not None}
    if kind in ("LSTM", "GRU") and "recurrent_activation" not in overrides:
        default = kd.default_recurrent_activation(version)
        config["recurrent_activation"] = default
        why = ("written by TF 1.x tf.keras (hard_sigmoid) and by TF 2.0/2.1 (sigmoid)"
               if version.startswith("2.2.4-tf") else f"the Keras {version} default")
        notes.append(f"{name}: recurrent_activation={default} ({why}; not stored; override "
                     "recurrent_activation=...)")
    if kind in ("LSTM", "GRU", "SimpleRNN") and "activation" not in overrides:
        config["activation"] = "tanh"
        notes.append(f"{name}: activation=tanh (Keras default; not stored)")
    if "return_sequences" not in overrides:
        config["return_sequences"] = True
        notes.append(f"{name}: return_sequences=True (not stored; override "
                     "return_sequences=false for the last output only)")
    if kind in ("CuDNNLSTM", "CuDNNGRU"):
        config = {k: v for k, v in config.items() if k not in ("use_bias",)}
    arrays_in_order = [named[k] for k in ("kernel", "recurrent_kernel", "bias") if k in named]
    notes.append(f"{name}: {kind} with units={config['units']} (from the weight shapes)")
    build = kd.BuildContext(version, dict(overrides), assumed=[])
    return kd.make_recurrent(kind, config, arrays_in_order, build), notes


def _kind_from_shapes(name: str, recurrent: np.ndarray, bias: np.ndarray | None) -> str:
    units, width = recurrent.shape
    gates = width // units if width % units == 0 else 0
    if gates == 1:
        return "SimpleRNN"
    size = None if bias is None else bias.shape
    if gates == 4:
        if size == (8 * units,):
            return "CuDNNLSTM"
        return "LSTM"
    if gates == 3:
        if size == (6 * units,):
            return "CuDNNGRU"
        return "GRU"
    raise ShapeError(f"layer {name!r}: recurrent_kernel has shape {recurrent.shape}; expected "
                     "(units, G * units) with G = 4 (LSTM), 3 (GRU) or 1 (SimpleRNN)")


def _weights_only(root: Any, path: Path, version: str, layer: str | None,
                  overrides: dict[str, Any], dtype: np.dtype, meta: dict[str, Any]) -> Model:
    names = _names(root.attrs["layer_names"])
    assumed: list[str] = list(meta.get("assumed", []))
    with_weights = []
    for name in names:
        weight_names, arrays = _group_arrays(member(root, name, str(path)),
                                             f"{str(path)!r} layer {name!r}")
        if arrays:
            with_weights.append((name, weight_names, arrays))
    listing = ", ".join(n for n, _, _ in with_weights)
    if layer is not None:
        match = [item for item in with_weights if item[0] == layer]
        if not match:
            raise InputError(f"no layer named {layer!r} with weights in {str(path)!r}; "
                             f"layers: {listing}")
        built, notes = infer_layer(layer, match[0][1], match[0][2], version, overrides)
        meta["assumed"] = assumed + notes
        return kd.single_layer_model(built, str(path), meta, dtype)

    recurrent: list[Layer] = []
    for name, weight_names, arrays in with_weights:
        try:
            built, notes = infer_layer(name, weight_names, arrays, version, overrides)
        except UnsupportedFeatureError:
            if "recurrent_kernel" in [_short(n) for n in weight_names]:
                raise  # a recurrent layer that cannot be built: say why, never skip it
            assumed.append(f"{name}: skipped (not a layer rnnparity can infer)")
            continue
        if kd.is_recurrent(built):
            recurrent.append(built)
            assumed += notes
        else:
            assumed.append(f"{name}: not run ({built.kind}; select it with --layer)")
    if not recurrent:
        raise InputError(f"{str(path)!r} holds no recurrent layer; pick one with --layer: "
                         f"{listing}")
    _check_chain(recurrent, path, listing)
    if len(recurrent) > 1:
        assumed.append("recurrent layers run chained in file order: "
                       + " -> ".join(r.name for r in recurrent))
    meta["assumed"] = assumed
    nodes, previous = [], "input"
    for index, built in enumerate(recurrent):
        if index < len(recurrent) - 1:
            _force_sequences(built)
        nodes.append(Node(built, [previous], [built.name]))
        previous = built.name
    return Model(nodes, ["input"], [previous], source=str(path), meta=meta, dtype=dtype)


def _width(layer: Layer) -> tuple[int, int]:
    if isinstance(layer, kd.KerasBidirectional):
        inner = layer.forward.spec
        factor = 2 if layer.merge_mode == "concat" else 1
        return inner.input_size, factor * inner.hidden_size
    spec = layer.spec  # type: ignore[attr-defined]
    return spec.input_size, spec.hidden_size


def _check_chain(layers: list[Layer], path: Path, listing: str) -> None:
    for below, above in zip(layers, layers[1:]):
        gives, wants = _width(below)[1], _width(above)[0]
        if gives != wants:
            raise InputError(
                f"{str(path)!r} holds several layers whose shapes do not chain ({above.name!r} "
                f"expects {wants} features, {below.name!r} gives {gives}); pick one with "
                f"--layer: {listing}")


def _force_sequences(layer: Layer) -> None:
    options = layer.options  # type: ignore[attr-defined]
    options.return_sequences = True
    if isinstance(layer, kd.KerasBidirectional):
        layer.backward.options.return_sequences = True
