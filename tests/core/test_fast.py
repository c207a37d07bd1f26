"""The compiled fast path (numba) against the NumPy path, over every CellSpec feature.

The NumPy path is the oracle here (tests/core/test_cells.py and tests/parity check it
against the equations and the frameworks); the fast path must equal it to 1e-6, relative
to the size of values above 1 (unbounded functions such as relu or linear gates carry the
one-ulp tanh differences into large cell states).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnparity.core.cells as cells
from rnnparity.activations import Activation
from rnnparity.core.cells import FAST_ACTIVATIONS, PreparedCell, fast_default
from rnnparity.core.scan import lengths_to_mask, scan
from rnnparity.errors import MissingFrameworkError, ShapeError
from rnnparity.spec import CellSpec, CellWeights

FAST_ATOL = 1e-6


def test_import_loads_no_framework_and_no_numba() -> None:
    code = ("import sys, rnnparity, rnnparity.core.cells; "
            "print(','.join(sorted(m for m in ('torch', 'tensorflow', 'keras', 'tf_keras', "
            "'onnx', 'onnxruntime', 'numba', 'h5py', 'safetensors') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == ""


def test_switched_off_by_environment_and_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = CellSpec("lstm", 3, 4)
    weights = random_weights(spec, np.random.default_rng(0))
    monkeypatch.setenv(cells.FAST_ENV, "0")
    assert not fast_default()
    assert not PreparedCell(spec, weights, np.float32).fast
    monkeypatch.delenv(cells.FAST_ENV)
    assert not PreparedCell(spec, weights, np.float32, fast=False).fast


@pytest.fixture(scope="module")
def kernels():
    """The compiled kernels module; skips (fails in CI lanes requiring numba) if absent."""
    require("numba", "numba (rnnparity[fast]) provides the compiled path")
    from rnnparity.core import _fast

    return _fast


def test_tanh_within_one_ulp_of_numpy(kernels) -> None:
    x = np.concatenate([np.linspace(-12, 12, 2_000_001, dtype=np.float32),
                        np.geomspace(1e-30, 1, 20_000).astype(np.float32)])
    x = np.concatenate([x, -x[-20_000:]])
    got = np.empty_like(x)
    kernels.tanh_array(x, got)
    want = np.tanh(x)
    ulp = np.spacing(np.abs(want)).astype(np.float32)
    assert np.all(np.abs(got - want) <= ulp)
    assert np.abs(got - np.tanh(x.astype(np.float64))).max() < 6.5e-8


def test_tanh_keeps_nan_and_saturates(kernels) -> None:
    x = np.array([np.nan, np.inf, -np.inf, 40.0, -40.0], np.float32)
    got = np.empty_like(x)
    kernels.tanh_array(x, got)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], [1, -1, 1, -1])


def test_fast_true_without_numba_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)
    with pytest.raises(MissingFrameworkError, match="rnnparity\\[fast\\]"):
        PreparedCell(CellSpec("gru", 2, 3), random_weights(CellSpec("gru", 2, 3),
                                                           np.random.default_rng(0)),
                     np.float32, fast=True)


def test_float64_and_other_functions_use_numpy(kernels) -> None:
    rng = np.random.default_rng(1)
    spec = CellSpec("lstm", 3, 4)
    assert not PreparedCell(spec, random_weights(spec, rng), np.float64, fast=True).fast
    soft = spec.with_(activation=Activation("softsign"))
    assert not PreparedCell(soft, random_weights(soft, rng), np.float32, fast=True).fast
    assert PreparedCell(spec, random_weights(spec, rng), np.float32, fast=True).fast


def random_weights(spec: CellSpec, rng: np.random.Generator, peephole: bool = False,
                   bias: bool = True) -> CellWeights:
    G, H, I, P = spec.num_gates, spec.hidden_size, spec.input_size, spec.proj_size
    # Gains of order 1: larger ones make the recurrence chaotic, where rounding alone
    # separates any two implementations.
    scale = min(0.8, 1.5 / np.sqrt(H + I))

    def draw(*shape: int) -> np.ndarray:
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    return CellWeights(
        w_ih=draw(G * H, I), w_hh=draw(G * H, P or H),
        b_ih=draw(G * H) if bias else None, b_hh=draw(G * H) if bias else None,
        peephole=draw(3, H) if peephole else None, w_hr=draw(P, H) if P else None)


ACTIVATIONS = [Activation.of(name) for name in FAST_ACTIVATIONS if name != "scaled_tanh"]
ACTIVATIONS += [Activation.of("scaled_tanh", 1.2, 0.7), Activation.of("hard_sigmoid", 0.25,
                                                                       0.45)]
# Gates squashed into [0, 1]: an unbounded gate (relu, linear) makes the recurrence blow
# up, where any two summation orders drift apart, so it shows nothing about the kernels.
GATE_ACTIVATIONS = [a for a in ACTIVATIONS if a.name in ("sigmoid", "hard_sigmoid")]


@st.composite
def cases(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(["lstm", "gru", "rnn"]))
    lstm = kind == "lstm"
    spec = CellSpec(
        kind, draw(st.integers(1, 6)), draw(st.integers(1, 9)),
        proj_size=draw(st.sampled_from([0, 0, 3])) if lstm else 0,
        gate_activation=draw(st.sampled_from(GATE_ACTIVATIONS)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        cell_activation=draw(st.sampled_from([None, *ACTIVATIONS])) if lstm else None,
        reset_after=draw(st.booleans()),
        forget_bias=draw(st.sampled_from([0.0, 1.0])) if lstm else 0.0,
        cell_clip=draw(st.sampled_from([None, 0.7])) if lstm else None,
        proj_clip=draw(st.sampled_from([None, 0.5])),
        clip=draw(st.sampled_from([None, 0.9])),
        clip_cell_output=draw(st.booleans()),
        input_forget=draw(st.booleans()) if lstm else False,
    )
    if not spec.proj_size:
        spec = spec.with_(proj_clip=None)
    return dict(
        spec=spec, peephole=lstm and draw(st.booleans()), bias=draw(st.booleans()),
        batch=draw(st.integers(1, 4)), seq_len=draw(st.integers(1, 7)),
        reverse=draw(st.booleans()), masked=draw(st.booleans()),
        masked_output=draw(st.sampled_from(["previous", "zero"])),
        prev_output=draw(st.booleans()), initial=draw(st.booleans()),
        return_sequences=draw(st.booleans()), small=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


@settings(max_examples=60, deadline=None)
@given(case=cases())
def test_fast_scan_equals_numpy_scan(kernels, case: dict) -> None:
    spec, rng = case["spec"], np.random.default_rng(case["seed"])
    weights = random_weights(spec, rng, case["peephole"], case["bias"])
    batch, seq_len = case["batch"], case["seq_len"]
    x = rng.standard_normal((batch, seq_len, spec.input_size)).astype(np.float32) * 1.5
    h0 = rng.standard_normal((batch, spec.hidden_out)).astype(np.float32)
    c0 = rng.standard_normal((batch, spec.hidden_size)).astype(np.float32)
    mask = None
    if case["masked"]:
        mask = lengths_to_mask(rng.integers(0, seq_len + 1, batch), seq_len)
    kwargs = dict(
        h0=h0 if case["initial"] else None,
        c0=c0 if case["initial"] and spec.kind == "lstm" else None,
        reverse=case["reverse"], mask=mask, masked_output=case["masked_output"],
        prev_output=h0 * 0.5 if case["prev_output"] else None,
        return_sequences=case["return_sequences"],
    )
    numpy_cell = PreparedCell(spec, weights, np.float32, fast=False)
    fast_cell = PreparedCell(spec, weights, np.float32, fast=True)
    assert fast_cell.fast
    want = scan(numpy_cell, x, **kwargs)
    # Both branches: products in the compiled step (small) or in NumPy's BLAS.
    limit = 1 << 40 if case["small"] else 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cells, "SMALL_STEP_MACS", limit)
        got = scan(fast_cell, x, **kwargs)
    for name in ("y", "h", "c", "last_output"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=FAST_ATOL, atol=FAST_ATOL, err_msg=name)


@settings(max_examples=25, deadline=None)
@given(case=cases())
def test_stepper_equals_scan(kernels, case: dict) -> None:
    spec, rng = case["spec"], np.random.default_rng(case["seed"])
    weights = random_weights(spec, rng, case["peephole"], case["bias"])
    batch, seq_len = case["batch"], case["seq_len"]
    x = rng.standard_normal((batch, seq_len, spec.input_size)).astype(np.float32)
    h0 = rng.standard_normal((batch, spec.hidden_out)).astype(np.float32)
    c0 = rng.standard_normal((batch, spec.hidden_size)).astype(np.float32)
    if spec.kind != "lstm":
        c0 = None
    want = scan(PreparedCell(spec, weights, np.float32, fast=False), x, h0, c0)
    for fast in (False, True):
        step = PreparedCell(spec, weights, np.float32, fast=fast).stepper(batch, h0, c0)
        outs = [step(x[:, t]).copy() for t in range(seq_len)]
        np.testing.assert_allclose(np.stack(outs, 1), want.y, rtol=FAST_ATOL, atol=FAST_ATOL)
        np.testing.assert_allclose(step.h, want.h, rtol=FAST_ATOL, atol=FAST_ATOL)
        if c0 is not None:
            np.testing.assert_allclose(step.c, want.c, rtol=FAST_ATOL, atol=FAST_ATOL)


def test_stepper_checks_the_input_shape() -> None:
    spec = CellSpec("lstm", 3, 4)
    step = PreparedCell(spec, random_weights(spec, np.random.default_rng(2)),
                        np.float32).stepper(2)
    with pytest.raises(ShapeError, match="expected \\(batch, input_size\\) = \\(2, 3\\)"):
        step(np.zeros((2, 4), np.float32))


def test_large_batch_uses_blas_and_matches(kernels) -> None:
    # Sizes past SMALL_STEP_MACS: recurrent products in BLAS, element-wise compiled.
    rng = np.random.default_rng(3)
    for kind, reset_after in (("lstm", True), ("gru", True), ("gru", False), ("rnn", True)):
        spec = CellSpec(kind, 16, 64, reset_after=reset_after)
        weights = random_weights(spec, rng)
        x = rng.standard_normal((40, 5, 16)).astype(np.float32)
        fast_cell = PreparedCell(spec, weights, np.float32, fast=True)
        got = scan(fast_cell, x)
        assert not fast_cell._small
        want = scan(PreparedCell(spec, weights, np.float32, fast=False), x)
        np.testing.assert_allclose(got.y, want.y, rtol=FAST_ATOL, atol=FAST_ATOL)


@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_lean_numpy_stepper_equals_scan(forget_bias: float) -> None:
    # The plain LSTM streams through one fused product on the NumPy path.
    rng = np.random.default_rng(4)
    spec = CellSpec("lstm", 5, 7, forget_bias=forget_bias)
    weights = random_weights(spec, rng)
    x = rng.standard_normal((3, 9, 5)).astype(np.float32)
    h0 = rng.standard_normal((3, 7)).astype(np.float32)
    c0 = rng.standard_normal((3, 7)).astype(np.float32)
    cell = PreparedCell(spec, weights, np.float32, fast=False)
    want = scan(cell, x, h0, c0)
    step = cell.stepper(3, h0, c0)
    assert step._lean is not None
    outs = [step(x[:, t]).copy() for t in range(9)]
    np.testing.assert_allclose(np.stack(outs, 1), want.y, rtol=FAST_ATOL, atol=FAST_ATOL)
    np.testing.assert_allclose(step.c, want.c, rtol=FAST_ATOL, atol=FAST_ATOL)


@pytest.mark.parametrize("fast", [False, None])
def test_stepper_reset_starts_again(fast: bool | None) -> None:
    rng = np.random.default_rng(5)
    spec = CellSpec("lstm", 2, 3)
    step = PreparedCell(spec, random_weights(spec, rng), np.float32, fast=fast).stepper(2)
    x = rng.standard_normal((4, 2, 2)).astype(np.float32)
    first = [step(x_t).copy() for x_t in x]
    step.reset()
    again = [step(x_t).copy() for x_t in x]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
