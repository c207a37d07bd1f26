"""The one tolerance table, shared by ``verify`` and the tests."""

from __future__ import annotations

__all__ = ["ATOL", "RTOL", "ATOL_FLOAT64"]

# Max abs difference allowed between rnnparity and a framework on float32 data: float32
# rounding over long recurrences stays well below it (typically ~1e-7).
ATOL = 1e-5
RTOL = 0.0
ATOL_FLOAT64 = 1e-10
