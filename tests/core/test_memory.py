"""Memory of long runs: constant when only the final state is kept, one output otherwise.

tracemalloc sees NumPy's allocations. The input array is made before tracing starts, so
the peaks below are the engine's own work memory.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from rnnparity.core.cells import PreparedCell, fast_default
from rnnparity.core.scan import TIME_BLOCK, scan
from rnnparity.spec import CellSpec, CellWeights

SPEC = CellSpec("lstm", input_size=1, hidden_size=8)


def weights(rng: np.random.Generator) -> CellWeights:
    return CellWeights(*(rng.uniform(-0.5, 0.5, shape).astype(np.float32)
                         for shape in ((32, 1), (32, 8), (32,), (32,))))


def traced_peak(cell: PreparedCell, x: np.ndarray, **kwargs) -> tuple[int, object]:
    tracemalloc.start()
    try:
        result = scan(cell, x, **kwargs)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


# 10**5 steps here (a few seconds under tracemalloc, which slows every Python-level
# allocation); the benchmark's W7 runs 10**6 steps with both paths.
@pytest.mark.parametrize("fast", [False, True], ids=["numpy", "fast"])
def test_final_state_only_does_not_grow_with_steps(fast: bool) -> None:
    if fast and not fast_default():
        pytest.skip("numba (rnnparity[fast]) is not installed or RNNPARITY_FAST=0")
    rng = np.random.default_rng(0)
    cell = PreparedCell(SPEC, weights(rng), np.float32, fast=fast)
    long_steps = 10**5
    short = rng.standard_normal((1, 10**4, 1)).astype(np.float32)
    long = rng.standard_normal((1, long_steps, 1)).astype(np.float32)
    scan(cell, short[:, :10], return_sequences=False)  # buffers, kernels

    short_peak, _ = traced_peak(cell, short, return_sequences=False)
    long_peak, result = traced_peak(cell, long, return_sequences=False)

    assert result.y is None and np.all(np.isfinite(result.h))
    # Same work buffers for 10**4 and 10**5 steps (a few KiB of Python objects aside).
    assert long_peak - short_peak < 16 * 1024
    assert long_peak < 64 * 1024 + TIME_BLOCK * 32 * 4 * 2


def test_all_steps_allocate_the_output_once() -> None:
    rng = np.random.default_rng(1)
    cell = PreparedCell(SPEC, weights(rng), np.float32)
    x = rng.standard_normal((2, 20_000, 1)).astype(np.float32)
    scan(cell, x[:, :10])

    peak, result = traced_peak(cell, x)

    output_bytes = result.y.nbytes
    assert result.y.shape == (2, 20_000, 8)
    # The output, plus one time block of projections and inputs, never a second copy.
    block_bytes = TIME_BLOCK * 2 * (32 + 1) * 4
    assert output_bytes <= peak < output_bytes + 2 * block_bytes + 64 * 1024
