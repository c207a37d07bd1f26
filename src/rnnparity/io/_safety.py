"""Limits that keep a hostile or corrupt file from exhausting memory, shared by the readers.

A file declares sizes before it holds data: an HDF5 dataset or an ``.npy`` header its
shape, a zip member its uncompressed size. Each is checked against these limits *before*
anything is allocated, so a 4-byte file that claims a (10**6, 10**6) array fails at once.
The limits are module attributes; raise them for a truly huge model.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..errors import FormatError

__all__ = ["MAX_ARRAY_BYTES", "MAX_MEMBER_BYTES", "MAX_JSON_BYTES", "MAX_COMPRESSION_RATIO",
           "check_array_size", "check_zip_member"]

# Far above any recurrent layer's weights (an LSTM with 8192 units: 2 GiB in float32).
MAX_ARRAY_BYTES = 1 << 32
MAX_MEMBER_BYTES = 1 << 33
MAX_JSON_BYTES = 64 << 20
# Weights compress ~1.1x, JSON ~10x; a zip bomb 1000x. Small members are never refused.
MAX_COMPRESSION_RATIO = 200
_RATIO_FLOOR = 16 << 20


def _size_text(count: int) -> str:
    return f"{count / (1 << 30):.1f} GiB" if count >= 1 << 30 else f"{count} bytes"


def check_array_size(context: str, name: str, shape: Sequence[int], itemsize: int,
                     stored: int | None = None) -> None:
    """Refuse an array whose declared size is over the limit or far beyond what is stored.

    Args:
        context: the file (and layer) for the message.
        name: the array's name.
        shape: declared shape.
        itemsize: bytes per element.
        stored: bytes the file really holds for it (HDF5 storage size), when known.
    """
    declared = math.prod(int(s) for s in shape) * int(itemsize)
    if declared > MAX_ARRAY_BYTES:
        raise FormatError(
            f"{context}: {name} declares shape {tuple(int(s) for s in shape)} "
            f"({_size_text(declared)}); expected at most {_size_text(MAX_ARRAY_BYTES)} "
            "per array (raise rnnparity.io._safety.MAX_ARRAY_BYTES for a larger model)")
    if stored is None or declared == 0:
        return
    if stored == 0:
        raise FormatError(f"{context}: {name} declares shape {tuple(shape)} but the file "
                          "stores no data for it; expected written weights")
    if declared > _RATIO_FLOOR and declared > MAX_COMPRESSION_RATIO * stored:
        raise FormatError(
            f"{context}: {name} declares {_size_text(declared)} from {stored} stored bytes "
            f"(ratio {declared // stored}); expected at most {MAX_COMPRESSION_RATIO}x for "
            "weights (a decompression bomb?)")


def check_zip_member(context: str, info: Any, limit: int = MAX_MEMBER_BYTES) -> None:
    """Refuse a zip member that declares more than ``limit`` bytes or a bomb-like ratio.

    ``zipfile`` never returns more than the declared size, so checking it bounds memory.
    """
    size, packed = int(info.file_size), int(info.compress_size)
    if size > limit:
        raise FormatError(f"{context}: member {info.filename!r} declares "
                          f"{_size_text(size)}; expected at most {_size_text(limit)}")
    if size > _RATIO_FLOOR and size > MAX_COMPRESSION_RATIO * max(packed, 1):
        raise FormatError(
            f"{context}: member {info.filename!r} declares {_size_text(size)} from {packed} "
            f"compressed bytes (ratio {size // max(packed, 1)}); expected at most "
            f"{MAX_COMPRESSION_RATIO}x (a decompression bomb?)")


def check_npy_header(context: str, name: str, stream: Any, available: int) -> None:
    """Read an ``.npy`` header from ``stream``; refuse a shape its bytes cannot hold.

    NumPy allocates the declared shape before reading, so a 200-byte file claiming
    (10**5, 10**5) would otherwise reserve 40 GB.

    Args:
        context: the file, for the message.
        name: the array's name.
        stream: a binary file object positioned at the start of the ``.npy`` data.
        available: total bytes of the ``.npy`` data (header included).
    """
    import numpy as np

    try:
        version = np.lib.format.read_magic(stream)
        reader = {(1, 0): np.lib.format.read_array_header_1_0,
                  (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if reader is None:
            return  # NumPy itself names the unsupported version
        shape, _, dtype = reader(stream)
    except (ValueError, EOFError, OSError, SyntaxError) as err:
        raise FormatError(f"{context}: {name} is not a readable .npy array ({err})") from err
    if dtype.hasobject:
        return  # refused as pickled objects when loaded (allow_pickle=False)
    check_array_size(context, name, shape, dtype.itemsize)
    declared = math.prod(shape) * dtype.itemsize
    if declared > available - stream.tell():
        raise FormatError(f"{context}: {name} declares shape {tuple(shape)} ({declared} "
                          f"bytes) but holds {available - stream.tell()} bytes; expected a "
                          "complete array (a truncated or forged file?)")
