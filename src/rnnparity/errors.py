"""Exception and warning classes, and the one shape check every boundary uses."""

from __future__ import annotations

import functools
from typing import Any, Sequence

__all__ = [
    "RnnParityError",
    "ShapeError",
    "LayoutError",
    "FormatError",
    "UnsupportedFeatureError",
    "MissingFrameworkError",
    "InputError",
    "RnnParityWarning",
    "check_shape",
]


class RnnParityError(Exception):
    """Root of every error rnnparity raises on purpose."""

    hint: str | None = None

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ShapeError(RnnParityError, ValueError):
    """An array's shape does not fit the layer it is meant for."""


class LayoutError(RnnParityError, ValueError):
    """Weights do not follow any layout the named convention allows."""


class FormatError(RnnParityError, ValueError):
    """A file is missing, corrupt or not of the kind expected."""


class InputError(RnnParityError, ValueError):
    """The data passed to a model cannot be run (wrong name, NaN, wrong dtype)."""


class UnsupportedFeatureError(RnnParityError, NotImplementedError):
    """A layer, attribute or value that rnnparity does not implement."""


class MissingFrameworkError(RnnParityError, ImportError):
    """An optional dependency is needed for this call and is not installed."""


class RnnParityWarning(UserWarning):
    """The result is valid, but the user should act on something."""


def _format_shape(shape: Sequence[Any]) -> str:
    inner = ", ".join(str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


@functools.lru_cache(maxsize=512)
def _compiled(expression: str) -> Any:
    """Compile a shape expression once: streams check shapes on every step."""
    return compile(expression, "<shape>", "eval")


def check_shape(
    context: str,
    name: str,
    shape: Sequence[int],
    expected: Sequence[str | int],
    **sizes: int,
) -> None:
    """Raise ShapeError unless ``shape`` equals ``expected`` evaluated with ``sizes``.

    ``expected`` holds symbolic entries such as ``"4 * hidden_size"`` or plain ints; they are
    evaluated with ``sizes`` only to build the numbers, never with user strings.
    """
    numeric = tuple(
        int(eval(_compiled(e), {"__builtins__": {}}, dict(sizes))) if isinstance(e, str)
        else int(e)
        for e in expected
    )
    if tuple(int(s) for s in shape) == numeric:
        return

    symbolic = _format_shape([str(e) for e in expected])
    size_text = ", ".join(f"{k}={v}" for k, v in sizes.items())
    message = (
        f"{context}: {name} has shape {_format_shape(tuple(shape))}; "
        f"expected {symbolic} = {_format_shape(numeric)}"
    )
    if size_text:
        message += f" ({size_text})"

    hint = None
    if len(shape) == 2 and tuple(shape[::-1]) == numeric:
        hint = f"{name} looks transposed"
    raise ShapeError(message + (f"; hint: {hint}" if hint else ""), hint=hint)
