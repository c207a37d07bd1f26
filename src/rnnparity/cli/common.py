"""What every subcommand shares: exit codes, reading arrays, JSON and error output."""

from __future__ import annotations

import argparse
import enum
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, InputError
from ..io._safety import check_npy_header, check_zip_member

__all__ = ["ExitCode", "UsageError", "add_override_option", "parse_overrides", "read_arrays",
           "emit_json", "summarise"]


class UsageError(InputError):
    """The command line itself is wrong (a missing argument, a malformed option)."""


class ExitCode(enum.IntEnum):
    """Exit statuses of the CLI."""

    OK = 0
    MISMATCH = 1
    USAGE = 2
    UNSUPPORTED = 3
    FRAMEWORK_MISSING = 4
    BAD_INPUT = 5
    INTERNAL = 70
    INTERRUPTED = 130


EXIT_CODE_HELP = (
    "exit codes: 0 ok; 1 mismatch found (verify, diagnose); 2 usage; 3 unsupported "
    "feature; 4 framework or extra missing; 5 bad input (file, shape, value); 70 internal "
    "error (a bug: please report it); 130 interrupted"
)


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """Read ``.npy`` (one unnamed array, key ``""``) or ``.npz`` (named arrays).

    Pickled object arrays are refused: loading them could run code from the file.
    """
    p = Path(path)
    if not p.exists():
        raise FormatError(f"input file {path!r} does not exist")
    if not p.is_file():
        raise FormatError(f"input {path!r} is not a file; expected a .npy or .npz file")
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as data:
                return {key: _npz_member(data, key, path) for key in data.files}
        if p.suffix.lower() == ".npy":
            with open(p, "rb") as stream:
                check_npy_header(repr(path), "the array", stream, p.stat().st_size)
            return {"": np.load(p, allow_pickle=False)}
    except FormatError:
        raise
    except ValueError as err:
        if "pickle" in str(err).lower():
            raise FormatError(f"{path!r} holds pickled objects; expected plain numeric "
                              "arrays (object arrays are never unpickled)") from err
        raise FormatError(f"{path!r} is not a readable NumPy file: {err}") from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise FormatError(f"{path!r} is not a readable NumPy file: {err}") from err
    raise InputError(f"input {path!r} must be a .npy or .npz file")


def _npz_member(data: Any, key: str, path: str) -> np.ndarray:
    """One array of an open .npz, its declared size checked before NumPy allocates it."""
    member = key + ".npy" if key + ".npy" in data.zip.namelist() else key
    info = data.zip.getinfo(member)
    check_zip_member(repr(path), info)
    with data.zip.open(member) as stream:
        check_npy_header(repr(path), repr(key), stream, info.file_size)
    value = data[key]
    if not isinstance(value, np.ndarray):
        raise FormatError(f"{path!r}: member {key!r} is not an .npy array; expected arrays "
                          "written by numpy.savez")
    return value


def summarise(array: np.ndarray) -> dict[str, Any]:
    """Shape, dtype and a few statistics; arrays are never dumped whole."""
    a = np.asarray(array)
    return {
        "shape": list(a.shape),
        "dtype": str(a.dtype),
        "min": float(a.min()) if a.size else None,
        "max": float(a.max()) if a.size else None,
        "mean": float(a.mean()) if a.size else None,
    }


def emit_json(command: str, exit_code: int, result: Any = None,
              error: dict[str, Any] | None = None) -> None:
    body: dict[str, Any] = {"schema_version": 1, "command": command, "exit_code": exit_code}
    if error is not None:
        body["error"] = error
    else:
        body["result"] = result
    json.dump(body, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def add_override_option(parser: argparse.ArgumentParser, what: str = "the file") -> None:
    """``--override KEY=VALUE`` (repeatable): facts a model file does not pin down."""
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help=f"a fact {what} does not pin down, e.g. units=64, "
                        "recurrent_activation=sigmoid, keras_version=2.2.0 (repeatable)")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["units=64", "keys={...}"]`` -> ``{"units": 64, "keys": {...}}`` (JSON values)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--override {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides
