"""PyTorch state_dicts from files: ``.safetensors``, ``.npz``, ``.pt`` / ``.pth`` / ``.bin``.

A state_dict holds arrays by name and nothing else, so the module is inferred from its
keys and shapes: ``weight_hh_l0 (num_gates * hidden_size, hidden_out)`` gives the gate count
(4 LSTM, 3 GRU, 1 RNN) and ``hidden_size``, ``_l{N}`` the number of layers, ``_reverse`` a
second direction, ``weight_hr_l0`` a projection, ``bias_*`` the bias. Keys without
``_l{N}`` (``lstm_cell.weight_ih``, ...) are a cell. Everything before the parameter name
(``encoder.rnn.``) is the module's name; ``layer=`` picks one module of several.

What a state_dict cannot say is assumed and listed in ``model.meta["assumed"]``: RNN
``nonlinearity`` (``tanh``) and ``batch_first`` (True: rnnparity takes ``(batch, seq_len,
input_size)``, while torch's own default is time-major ``(seq_len, batch, input_size)``).

``.pt`` files are read with ``torch.load(weights_only=True)``, which refuses to build
arbitrary objects; anything but a flat mapping name -> tensor is then refused too.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .._optional import import_optional
from ..dialects import torch as dialect
from ..errors import FormatError, InputError, MissingFrameworkError, RnnParityError
from ..model import Model
from ._safety import check_npy_header, check_zip_member

__all__ = ["load", "read_state_dict", "find_modules", "KNOWN_OVERRIDES", "TorchModule"]

logger = logging.getLogger(__name__)

KNOWN_OVERRIDES = ("kind", "nonlinearity", "batch_first", "keys", "dtype")

_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<param>weight_ih|weight_hh|bias_ih|bias_hh|"
                  r"weight_hr)(?P<suffix>_l(?P<layer>\d+)(?P<reverse>_reverse)?)?$")


@dataclass
class TorchModule:
    """The parameters of one recurrent module found in a state_dict.

    Attributes:
        name: its prefix without the final dot (``""`` at the root).
        cell: True for LSTMCell/GRUCell/RNNCell keys (no ``_l{N}`` suffix).
        keys: torch parameter name (``weight_ih_l0``) -> key stored in the file.
    """

    name: str
    cell: bool
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or "(root)"


def load(path: Path, layer: str | None = None, **overrides: Any) -> Model:
    """Read one recurrent module of a PyTorch state_dict file into a :class:`Model`.

    Args:
        path: ``.safetensors``, ``.npz``, ``.pt``, ``.pth`` or ``.bin``.
        layer: the module's prefix (``"encoder.rnn"``; a unique last part such as
            ``"rnn"`` also works); needed when the file holds several modules.
        **overrides: ``kind`` (``LSTM``/``GRU``/``RNN``, checked against the shapes),
            ``nonlinearity`` (``tanh``/``relu``), ``batch_first`` (default True),
            ``keys`` (torch name -> stored name, for arrays saved under other names),
            ``dtype`` (``float32``/``float64``).

    Raises:
        InputError: unknown override, or several modules and no ``layer``.
        FormatError: unreadable file, not a flat name -> tensor mapping, no module found.
        ShapeError: shapes that contradict each other.
    """
    path = Path(path)
    unknown = sorted(set(overrides) - set(KNOWN_OVERRIDES))
    if unknown:
        raise InputError(f"unknown overrides {unknown} for a PyTorch state_dict; known: "
                         f"{list(KNOWN_OVERRIDES)}")
    stored, fetch, fmt = _open(path)
    try:
        return _load_module(path, layer, stored, fetch, fmt, overrides)
    finally:
        getattr(fetch, "close", lambda: None)()  # an .npz stays open while read lazily


def _load_module(path: Path, layer: str | None, stored: list[str],
                 fetch: Callable[[str], np.ndarray], fmt: str,
                 overrides: Mapping[str, Any]) -> Model:
    renamed = _apply_key_mapping(stored, overrides.get("keys"))
    modules = find_modules(renamed)
    if not modules:
        raise FormatError(
            f"{path.name}: no recurrent module found among {len(stored)} keys "
            f"(e.g. {stored[:5]}); expected torch names such as 'weight_ih_l0' or "
            "'rnn.weight_hh_l0'; hint: name arrays stored under other names with "
            "keys={'weight_ih_l0': 'stored_name', ...}",
            hint="map stored names with the keys override")
    module = _select(modules, layer, path.name)

    try:
        return _build(path, fmt, module, modules, fetch, overrides)
    except RnnParityError as err:
        if path.name in str(err):
            raise
        raise type(err)(f"{path.name}: {err}", hint=err.hint) from err


def _build(path: Path, fmt: str, module: TorchModule, modules: list[TorchModule],
           fetch: Callable[[str], np.ndarray], overrides: Mapping[str, Any]) -> Model:
    params = {torch_name: fetch(stored) for torch_name, stored in module.keys.items()}
    kind, num_layers, bidirectional = _structure(module, params, overrides.get("kind"))
    logger.debug("%s: module %s read as torch %s, num_layers=%d, bidirectional=%s",
                 path.name, module.label, kind, num_layers, bidirectional)
    assumed: list[str] = []
    nonlinearity = overrides.get("nonlinearity")
    if kind in ("RNN", "RNNCell") and nonlinearity is None:
        nonlinearity = "tanh"
        assumed.append("nonlinearity='tanh' (a state_dict does not record it; pass "
                       "nonlinearity='relu' if the module was built with it)")
    batch_first = overrides.get("batch_first")
    if not module.cell and batch_first is None:
        batch_first = True
        assumed.append("batch_first=True: input and output are (batch, seq_len, features) "
                       "(torch's default is False, (seq_len, batch, features); pass "
                       "batch_first=False for time-major arrays)")
    if not isinstance(batch_first, (bool, type(None))):
        raise InputError(f"batch_first must be true or false, got {batch_first!r}")
    dtype = _dtype(overrides.get("dtype", "float32"))

    meta = {
        "format": fmt,
        "module": module.label,
        "module_kind": kind,
        "modules": [_summary(m, fetch) for m in modules],
        "assumed": assumed,
    }
    if overrides.get("keys"):
        meta["keys"] = {k: v for k, v in module.keys.items() if k != v}
    strip = len(module.name) + 1 if module.name else 0
    key_names = {k[strip:]: (f"{k[strip:]} (stored as {v!r})" if v != k else v)
                 for k, v in module.keys.items()}
    params = {k[strip:]: v for k, v in params.items()}
    return dialect.build_model(
        kind, params, name=module.name, num_layers=num_layers, bidirectional=bidirectional,
        nonlinearity=nonlinearity, batch_first=bool(batch_first), dtype=dtype,
        source=str(path), meta=meta, key_names=key_names)


def _dtype(value: Any) -> np.dtype:
    if str(value) not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64', got {value!r}")
    return np.dtype(str(value))


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of a state_dict file, by key, as NumPy arrays (no module inference)."""
    stored, fetch, _ = _open(Path(path))
    try:
        return {key: fetch(key) for key in stored}
    finally:
        getattr(fetch, "close", lambda: None)()


def _open(path: Path) -> tuple[list[str], Callable[[str], np.ndarray], str]:
    """The keys of a state_dict file, a function reading one array, and the format name.

    Arrays are read on demand, so a big checkpoint costs only its recurrent module.
    """
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _open_safetensors(path)
    if suffix == ".npz":
        return _open_npz(path)
    if suffix in (".pt", ".pth", ".bin"):
        return _open_torch(path)
    raise FormatError(f"{path.name}: not a state_dict file; expected .safetensors, .npz, "
                      ".pt, .pth or .bin")


def _open_safetensors(path: Path) -> tuple[list[str], Callable[[str], np.ndarray], str]:
    safetensors = import_optional("safetensors")
    try:
        handle = safetensors.safe_open(str(path), framework="np")
        keys = list(handle.keys())
    except Exception as err:  # the Rust reader raises its own SafetensorError
        raise FormatError(f"{path.name}: not a readable .safetensors file: {err}") from err

    def fetch(key: str) -> np.ndarray:
        try:
            return handle.get_tensor(key)
        except Exception as err:
            raise FormatError(f"{path.name}: cannot read tensor {key!r} as NumPy ({err}); "
                              "bfloat16 tensors need converting to float32 first") from err

    return keys, fetch, "safetensors"


def _open_npz(path: Path) -> tuple[list[str], Callable[[str], np.ndarray], str]:
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise FormatError(f"{path.name}: not a readable .npz file: {err}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise FormatError(f"{path.name}: holds one array, not named arrays (.npz archive)")

    def fetch(key: str) -> np.ndarray:
        member = key + ".npy" if key + ".npy" in data.zip.namelist() else key
        try:
            info = data.zip.getinfo(member)
            check_zip_member(path.name, info)
            with data.zip.open(member) as stream:
                check_npy_header(path.name, repr(key), stream, info.file_size)
            array = data[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            if isinstance(err, FormatError):
                raise
            if "pickle" in str(err).lower():  # an object array: never unpickled
                raise FormatError(f"{path.name}: {key!r} holds pickled objects; expected a "
                                  "numeric array") from err
            raise FormatError(f"{path.name}: {key!r} cannot be read: {err}") from err
        if not isinstance(array, np.ndarray):
            raise FormatError(f"{path.name}: member {key!r} is not an .npy array; expected "
                              "arrays written by numpy.savez")
        return _numeric(array, key, path.name)

    fetch.close = data.close  # type: ignore[attr-defined]
    return list(data.files), fetch, "npz"


def _open_torch(path: Path) -> tuple[list[str], Callable[[str], np.ndarray], str]:
    torch = import_optional("torch")
    try:
        # weights_only=True: torch's restricted unpickler builds tensors and plain
        # containers only, never arbitrary objects (no code from the file runs).
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except MissingFrameworkError:
        raise
    except Exception as err:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip()  # torch bolds some words
        first = text.splitlines()[0] if text else type(err).__name__
        raise FormatError(
            f"{path.name}: refused: not a plain state_dict loadable with "
            f"torch.load(weights_only=True) ({type(err).__name__}: {first[:200]})",
            hint="save model.state_dict() (a mapping name -> tensor), or use .safetensors",
        ) from err
    if not isinstance(state, Mapping):
        raise FormatError(f"{path.name}: holds a {type(state).__name__}; expected a "
                          "state_dict (mapping name -> tensor)")
    bad = [(k, type(v).__name__) for k, v in state.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        hint = "save model.state_dict() itself, not a dict holding it"
        raise FormatError(f"{path.name}: not a plain state_dict: {bad[:3]} are not name -> "
                          f"tensor entries; hint: {hint}", hint=hint)

    def fetch(key: str) -> np.ndarray:
        tensor = state[key].detach()
        if tensor.dtype not in (torch.float32, torch.float64) and \
                tensor.dtype.is_floating_point:
            tensor = tensor.float()  # float16 / bfloat16: compute in float32
        return _numeric(tensor.numpy(), key, path.name)

    return list(state.keys()), fetch, "torch"


def _numeric(array: np.ndarray, key: str, filename: str) -> np.ndarray:
    if array.dtype.kind not in "fiu":
        raise FormatError(f"{filename}: {key!r} has dtype {array.dtype}; expected numbers")
    return array


def _apply_key_mapping(stored: list[str], keys: Any) -> dict[str, str]:
    """torch-style name -> stored key, after applying ``keys`` (torch name -> stored)."""
    if keys is None:
        return {k: k for k in stored}
    if isinstance(keys, str):
        try:
            keys = json.loads(keys)
        except json.JSONDecodeError as err:
            raise InputError(f"keys must be a JSON object torch name -> stored name: {err}"
                             ) from err
    if not isinstance(keys, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise InputError("keys must map torch parameter names to stored names, e.g. "
                         '{"weight_ih_l0": "enc_w_ih"}')
    present = set(stored)
    for torch_name, stored_name in keys.items():
        match = _KEY.match(torch_name)
        if match is None or (match["prefix"] and not match["prefix"].endswith(".")):
            raise InputError(f"keys: {torch_name!r} is not a torch recurrent parameter name; "
                             "expected e.g. weight_ih_l0, bias_hh_l1_reverse, weight_ih")
        if stored_name not in present:
            raise InputError(f"keys: {stored_name!r} (for {torch_name}) is not in the file; "
                             f"keys there: {sorted(present)[:20]}")
    mapped = set(keys.values())
    result = {k: k for k in stored if k not in mapped}
    clashes = sorted(set(keys) & set(result))
    if clashes:
        raise InputError(f"keys: {clashes} already exist in the file under that name")
    result.update(keys)
    return result


def find_modules(names: Mapping[str, str] | list[str]) -> list[TorchModule]:
    """Group torch-style parameter names into modules by prefix (cells apart).

    Args:
        names: torch-style name -> stored key (or a list of keys stored as they are).
    """
    mapping = dict(names) if isinstance(names, Mapping) else {k: k for k in names}
    modules: dict[tuple[str, bool], TorchModule] = {}
    for torch_name, stored in mapping.items():
        match = _KEY.match(torch_name)
        if match is None:
            continue
        cell = match["suffix"] is None
        found = modules.setdefault((match["prefix"], cell),
                                   TorchModule(match["prefix"].rstrip("."), cell))
        found.keys[torch_name] = stored
    return [modules[k] for k in sorted(modules)]


def _select(modules: list[TorchModule], layer: str | None, filename: str) -> TorchModule:
    listing = "; ".join(f"{m.label} ({'cell' if m.cell else 'module'})" for m in modules)
    if layer is None:
        if len(modules) == 1:
            return modules[0]
        raise InputError(f"{filename} holds {len(modules)} recurrent modules: {listing}; "
                         "pick one with layer= / --layer",
                         hint="pass --layer with one of the module names")
    wanted = layer.rstrip(".")
    if wanted in ("(root)", "."):
        wanted = ""
    exact = [m for m in modules if m.name == wanted]
    near = [m for m in modules if m.name.endswith("." + wanted)] if wanted else []
    chosen = exact or near
    if len(chosen) != 1:
        which = "matches several" if chosen else "matches none"
        raise InputError(f"{filename}: layer {layer!r} {which} of the recurrent modules: "
                         f"{listing}")
    return chosen[0]


def _structure(module: TorchModule, params: Mapping[str, np.ndarray],
               kind_override: Any) -> tuple[str, int, bool]:
    """(torch kind, num_layers, bidirectional) from the keys and the weight_hh shape."""
    strip = len(module.name) + 1 if module.name else 0
    local = {k[strip:]: v for k, v in params.items()}
    context = f"torch module {module.label!r}"
    if module.cell:
        if "weight_hh" not in local:
            raise FormatError(f"{context}: weight_hh is missing")
        hr = local.get("weight_hr")
        inferred = dialect.infer_kind(np.shape(local["weight_hh"]),
                                      None if hr is None else np.shape(hr), context,
                                      module.keys[module_key(module, "weight_hh")]) + "Cell"
        num_layers, bidirectional = 1, False
    else:
        found = [_KEY.match(k) for k in local]
        layers = sorted({int(m["layer"]) for m in found})
        if layers != list(range(len(layers))):
            raise FormatError(f"{context}: layers {layers} found; expected 0..{len(layers) - 1}"
                              f" without gaps (is weight_ih_l{_first_gap(layers)} missing?)")
        bidirectional = any(m["reverse"] for m in found)
        if "weight_hh_l0" not in local:
            raise FormatError(f"{context}: weight_hh_l0 is missing")
        hr = local.get("weight_hr_l0")
        inferred = dialect.infer_kind(np.shape(local["weight_hh_l0"]),
                                      None if hr is None else np.shape(hr), context,
                                      module.keys[module_key(module, "weight_hh_l0")])
        num_layers = len(layers)
    return _resolve_kind(kind_override, inferred, module), num_layers, bidirectional


def module_key(module: TorchModule, local_name: str) -> str:
    """The torch-style name of a module's parameter (its prefix put back)."""
    return f"{module.name}.{local_name}" if module.name else local_name


def _first_gap(layers: list[int]) -> int:
    return next(i for i in range(len(layers) + 1) if i not in layers)


def _resolve_kind(override: Any, inferred: str, module: TorchModule) -> str:
    if override is None:
        return inferred
    if override not in dialect.MODULE_KINDS:
        raise InputError(f"kind={override!r} is not a torch recurrent module; known: "
                         f"{', '.join(dialect.MODULE_KINDS)}")
    base = str(override).removesuffix("Cell")
    if override.endswith("Cell") and not module.cell:
        raise InputError(f"kind={override!r}, but module {module.label!r} has _l{{N}} keys "
                         f"(a {base} module, not a cell)")
    # The shapes are checked against the requested kind when the weights are read, so a
    # contradiction is reported there with the array that shows it.
    return base + "Cell" if module.cell else base


def _summary(module: TorchModule, fetch: Callable[[str], np.ndarray]) -> str:
    """One line per module for ``inspect``: kind and sizes read from the shapes."""
    strip = len(module.name) + 1 if module.name else 0
    local = {k[strip:]: v for k, v in module.keys.items()}
    hh_key = "weight_hh" if module.cell else "weight_hh_l0"
    ih_key = "weight_ih" if module.cell else "weight_ih_l0"
    hr_key = "weight_hr" if module.cell else "weight_hr_l0"
    if hh_key not in local or ih_key not in local:
        return f"{module.label}: incomplete ({sorted(local)})"
    hh = fetch(local[hh_key]).shape
    hr = fetch(local[hr_key]).shape if hr_key in local else None
    try:
        kind = dialect.infer_kind(hh, hr) + ("Cell" if module.cell else "")
    except RnnParityError:
        kind = "unknown"
    text = f"{module.label}: {kind} input_size={fetch(local[ih_key]).shape[-1]} " \
           f"hidden_size={hr[1] if hr else hh[-1]}"
    if not module.cell:
        layers = {int(_KEY.match(k)["layer"]) for k in local}
        text += f" num_layers={len(layers)}"
        text += f" bidirectional={any(k.endswith('_reverse') for k in local)}"
        if hr:
            text += f" proj_size={hr[0]}"
    text += f" bias={any(k.startswith('bias_') for k in local)}"
    return text
