"""The benchmark suite: rnnparity against PyTorch, onnxruntime, TensorFlow and onnx.reference.

Every implementation of a workload runs in this one process, interleaved repeat by repeat
(this matters on machines whose speed drifts), after a warm-up and after checking that its
outputs agree with rnnparity's NumPy path. Peers are imported lazily; a missing one is
reported as skipped. ``rnnparity bench`` (:mod:`rnnparity.cli.bench`) prints the results.

Workloads (float32, random weights and nonzero biases, zero initial state):

- W1 LSTM input 64, hidden 256, batch 64, 200 steps, all outputs;
- W2 LSTM input 512, hidden 1024, batch 32, 100 steps;
- W3 LSTM input 40, hidden 128, batch 1, one step per call;
- W4 GRU input 64, hidden 256, batch 64, 200 steps;
- W5 LSTM input 1, hidden 8, batch 1, one step per call;
- W6 W1 with variable lengths (100..200 valid steps, masked / packed);
- W7 LSTM input 1, hidden 8, batch 1, 10**6 steps keeping only the final state (rnnparity
  only: time and memory of long sequences).

Batch rows are compared with torch, streaming rows with onnxruntime (see ``TARGETS``).
"""

from __future__ import annotations

import gc
import logging
import os
import platform
import resource
import statistics
import time
import tracemalloc
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .core.cells import PreparedCell, fast_default
from .core.scan import lengths_to_mask, scan
from .spec import CellSpec, CellWeights, permute_gates

__all__ = ["Workload", "WORKLOADS", "TARGETS", "run_suite", "machine", "to_markdown"]

logger = logging.getLogger(__name__)

ATOL = 1e-5
# Pause before each timed run so that the thread pools of the run before (OpenBLAS,
# OpenMP, onnxruntime, Eigen) stop spinning and do not steal the cores.
GAP_SECONDS = 0.02
THREADS = 0  # set by run_suite


@dataclass(frozen=True)
class Workload:
    """One benchmark case.

    Args:
        key: short name (W1...).
        kind: ``"lstm"`` or ``"gru"``.
        input_size, hidden_size, batch, steps: sizes; ``steps`` is the sequence length,
            or the number of calls for a streaming case.
        stream: one step per call.
        masked: variable lengths (the shorter sequences padded at the end).
        final_only: keep only the final state (no sequence output).
        quick_steps: ``steps`` under ``--quick``.
    """

    key: str
    kind: str
    input_size: int
    hidden_size: int
    batch: int
    steps: int
    stream: bool = False
    masked: bool = False
    final_only: bool = False
    quick_steps: int = 0

    @property
    def reference_peer(self) -> str:
        return "onnxruntime" if self.stream else "torch"

    def describe(self) -> str:
        what = "one step per call" if self.stream else f"{self.steps} steps"
        extra = ", variable lengths" if self.masked else ""
        extra += ", final state only" if self.final_only else ""
        return (f"{self.kind.upper()} in {self.input_size}, hidden {self.hidden_size}, "
                f"batch {self.batch}, {what}{extra}")

    def flops(self, steps: int) -> float:
        gates = 4 if self.kind == "lstm" else 3
        width = self.input_size + self.hidden_size
        return 2.0 * steps * self.batch * gates * self.hidden_size * width


WORKLOADS = [
    Workload("W1", "lstm", 64, 256, 64, 200, quick_steps=50),
    Workload("W2", "lstm", 512, 1024, 32, 100, quick_steps=20),
    Workload("W3", "lstm", 40, 128, 1, 400, stream=True, quick_steps=200),
    Workload("W4", "gru", 64, 256, 64, 200, quick_steps=50),
    Workload("W5", "lstm", 1, 8, 1, 400, stream=True, quick_steps=200),
    Workload("W6", "lstm", 64, 256, 64, 200, masked=True, quick_steps=50),
    Workload("W7", "lstm", 1, 8, 1, 10**6, final_only=True, quick_steps=10**5),
]

# (workload, rnnparity implementation, peer, largest time ratio) from the issue.
TARGETS = [
    ("W1", "rnnparity-numpy", "torch", 2.0),
    ("W4", "rnnparity-numpy", "torch", 1.3),
    ("W3", "rnnparity-numpy", "onnxruntime", 0.5),
    ("W5", "rnnparity-numpy", "onnxruntime", 0.45),
    ("W1", "rnnparity-fast", "torch", 1.3),
    ("W2", "rnnparity-fast", "torch", 1.7),
    ("W4", "rnnparity-fast", "torch", 0.9),
    ("W4", "rnnparity-fast", "onnxruntime", 1.0),
    ("W3", "rnnparity-fast", "onnxruntime", 0.4),
    ("W5", "rnnparity-fast", "onnxruntime", 0.1),
]


@dataclass
class Case:
    """Canonical weights and inputs of one workload, shared by every implementation."""

    work: Workload
    steps: int
    weights: CellWeights
    x: np.ndarray  # (batch, steps, input_size)
    lengths: np.ndarray | None
    spec: CellSpec = field(init=False)

    def __post_init__(self) -> None:
        self.spec = CellSpec(self.work.kind, self.work.input_size, self.work.hidden_size)


def make_case(work: Workload, quick: bool, seed: int = 0) -> Case:
    rng = np.random.default_rng(seed)
    steps = work.quick_steps if quick and work.quick_steps else work.steps
    G = 4 if work.kind == "lstm" else 3
    H, I = work.hidden_size, work.input_size
    scale = 1.0 / np.sqrt(H)

    def uniform(*shape: int) -> np.ndarray:
        return rng.uniform(-scale, scale, shape).astype(np.float32)

    weights = CellWeights(uniform(G * H, I), uniform(G * H, H), uniform(G * H), uniform(G * H))
    x = rng.standard_normal((work.batch, steps, I)).astype(np.float32)
    lengths = None
    if work.masked:
        lengths = rng.integers(steps // 2, steps + 1, work.batch)
        lengths[0] = steps
    return Case(work, steps, weights, x, lengths)


# --- implementations: each returns (run, outputs) -------------------------------------
# run() does the timed work; outputs() returns (y or None, h_n) from the last run, with y
# (batch, steps, hidden) for sequences and the stacked step outputs for streaming.

Impl = Callable[[Case], tuple[Callable[[], Any], Callable[[], tuple[Any, np.ndarray]]]]


def _rnnparity(fast: bool) -> Impl:
    def build(case: Case) -> tuple[Callable[[], Any], Callable[[], Any]]:
        cell = PreparedCell(case.spec, case.weights, np.float32, fast=fast)
        work = case.work
        result: dict[str, Any] = {}
        if work.stream:
            xs = [np.ascontiguousarray(case.x[:, t]) for t in range(case.steps)]
            step = cell.stepper(work.batch)

            def run() -> None:
                step.reset()
                for x_t in xs:
                    step(x_t)
                result["h"] = step.h.copy()

            def outputs() -> tuple[Any, np.ndarray]:
                step.reset()
                seen = [step(x_t).copy() for x_t in xs[:8]]
                return np.stack(seen, 1), result["h"]

            return run, outputs

        mask = None if case.lengths is None else lengths_to_mask(case.lengths, case.steps)

        def run_seq() -> None:
            result["r"] = scan(cell, case.x, mask=mask, masked_output="zero",
                               return_sequences=not work.final_only)

        return run_seq, lambda: (result["r"].y, result["r"].h)

    return build


def _torch(case: Case) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import torch

    torch.set_grad_enabled(False)
    if THREADS:
        torch.set_num_threads(THREADS)
    work, w = case.work, case.weights
    names = dict(weight_ih_l0=w.w_ih, weight_hh_l0=w.w_hh, bias_ih_l0=w.b_ih,
                 bias_hh_l0=w.b_hh)
    result: dict[str, Any] = {}
    if work.stream:
        cell = (torch.nn.LSTMCell if work.kind == "lstm" else torch.nn.GRUCell)(
            work.input_size, work.hidden_size)
        for name, value in names.items():
            getattr(cell, name.replace("_l0", "")).copy_(torch.from_numpy(value))
        xs = [torch.from_numpy(np.ascontiguousarray(case.x[:, t])) for t in range(case.steps)]

        def run() -> None:
            state = None
            outs = []
            for x_t in xs:
                state = cell(x_t, state)
                outs.append(state)
            result["outs"] = outs

        def outputs() -> tuple[Any, np.ndarray]:
            hs = [s[0] if isinstance(s, tuple) else s for s in result["outs"]]
            return torch.stack(hs[:8], 1).numpy(), hs[-1].numpy()

        return run, outputs

    module = (torch.nn.LSTM if work.kind == "lstm" else torch.nn.GRU)(
        work.input_size, work.hidden_size, batch_first=True)
    for name, value in names.items():
        getattr(module, name).copy_(torch.from_numpy(value))
    x = torch.from_numpy(case.x)

    def run_seq() -> None:
        if case.lengths is None:
            result["out"] = module(x)
            return
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.from_numpy(case.lengths), batch_first=True, enforce_sorted=False)
        y, state = module(packed)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True,
                                                      total_length=case.steps)
        result["out"] = (y, state)

    def outputs_seq() -> tuple[Any, np.ndarray]:
        y, state = result["out"]
        h_n = state[0] if isinstance(state, tuple) else state
        return y.numpy(), h_n[0].numpy()

    return run_seq, outputs_seq


def _onnx_model(case: Case, steps: int | None) -> Any:
    """An ONNX LSTM/GRU node; ``steps=1`` with state inputs and outputs for streaming."""
    from onnx import TensorProto, helper, numpy_helper

    work, w = case.work, case.weights
    order = "iofc" if work.kind == "lstm" else "zrh"
    canonical = "ifco" if work.kind == "lstm" else "rzh"
    W = permute_gates(w.w_ih, canonical, order)[None]
    R = permute_gates(w.w_hh, canonical, order)[None]
    B = np.concatenate([permute_gates(w.b_ih, canonical, order),
                        permute_gates(w.b_hh, canonical, order)])[None]
    H, batch = work.hidden_size, work.batch
    seq = steps if steps is not None else case.steps
    value = helper.make_tensor_value_info
    inputs = [value("X", TensorProto.FLOAT, [seq, batch, work.input_size])]
    node_inputs = ["X", "W", "R", "B", "", "", ""]
    if case.lengths is not None:
        inputs.append(value("L", TensorProto.INT32, [batch]))
        node_inputs[4] = "L"
    if steps == 1:
        states = ["h0", "c0"] if work.kind == "lstm" else ["h0"]
        for slot, name in enumerate(states, 5):
            node_inputs[slot] = name
            inputs.append(value(name, TensorProto.FLOAT, [1, batch, H]))
    while not node_inputs[-1]:
        node_inputs.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if work.kind == "lstm" else [])
    attrs = {"hidden_size": H}
    if work.kind == "gru":
        attrs["linear_before_reset"] = 1
    node = helper.make_node("LSTM" if work.kind == "lstm" else "GRU", node_inputs, outs,
                            **attrs)
    inits = [numpy_helper.from_array(a.astype(np.float32), n)
             for a, n in ((W, "W"), (R, "R"), (B, "B"))]
    graph = helper.make_graph(
        [node], "bench", inputs,
        [value(n, TensorProto.FLOAT, None) for n in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8  # readable by older onnxruntime releases too
    return model


def _onnx_feeds(case: Case) -> dict[str, np.ndarray]:
    feeds = {"X": np.ascontiguousarray(case.x.transpose(1, 0, 2))}
    if case.lengths is not None:
        feeds["L"] = case.lengths.astype(np.int32)
    return feeds


def _ort(case: Case) -> tuple[Callable[[], Any], Callable[[], Any]]:
    import onnxruntime as ort

    work = case.work
    result: dict[str, Any] = {}
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if THREADS:
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = 1
    model = _onnx_model(case, 1 if work.stream else None)
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    if work.stream:
        H, batch = work.hidden_size, work.batch
        xs = [np.ascontiguousarray(case.x[:, t][None]) for t in range(case.steps)]
        lstm = work.kind == "lstm"

        def run() -> None:
            h = np.zeros((1, batch, H), np.float32)
            c = np.zeros((1, batch, H), np.float32)
            outs = []
            for x_t in xs:
                feeds = {"X": x_t, "h0": h, "c0": c} if lstm else {"X": x_t, "h0": h}
                got = session.run(None, feeds)
                h = got[1]
                c = got[2] if lstm else c
                outs.append(h)
            result["outs"] = outs

        def outputs() -> tuple[Any, np.ndarray]:
            hs = [h[0] for h in result["outs"]]
            return np.stack(hs[:8], 1), hs[-1]

        return run, outputs

    feeds = _onnx_feeds(case)

    def run_seq() -> None:
        result["out"] = session.run(None, feeds)

    return run_seq, lambda: (result["out"][0][:, 0].transpose(1, 0, 2), result["out"][1][0])


def _onnx_reference(case: Case) -> tuple[Callable[[], Any], Callable[[], Any]]:
    from onnx.reference import ReferenceEvaluator

    if case.work.stream:
        raise _Skip("onnx.reference is not timed one step per call")
    if case.lengths is not None:
        raise _Skip("onnx.reference's LSTM ignores sequence_lens")
    evaluator = ReferenceEvaluator(_onnx_model(case, None))
    feeds = _onnx_feeds(case)
    result: dict[str, Any] = {}

    def run() -> None:
        result["out"] = evaluator.run(None, feeds)

    return run, lambda: (result["out"][0][:, 0].transpose(1, 0, 2), result["out"][1][0])


def _tensorflow(case: Case) -> tuple[Callable[[], Any], Callable[[], Any]]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras

    if THREADS:
        try:  # only possible before TensorFlow starts its thread pools
            tf.config.threading.set_intra_op_parallelism_threads(THREADS)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass

    work, w = case.work, case.weights
    result: dict[str, Any] = {}
    H = work.hidden_size
    if work.kind == "lstm":
        layer = keras.layers.LSTM(H, return_sequences=True, return_state=True)
        layer.build((None, None, work.input_size))
        layer.set_weights([w.w_ih.T, w.w_hh.T,
                           w.b_ih + w.b_hh])
    else:
        layer = keras.layers.GRU(H, return_sequences=True, return_state=True,
                                 reset_after=True)
        layer.build((None, None, work.input_size))
        layer.set_weights([permute_gates(w.w_ih, "rzn", "zrn").T,
                           permute_gates(w.w_hh, "rzn", "zrn").T,
                           np.stack([permute_gates(w.b_ih, "rzn", "zrn"),
                                     permute_gates(w.b_hh, "rzn", "zrn")])])
    if work.stream:
        states = [tf.Variable(tf.zeros((work.batch, H)))
                  for _ in range(2 if work.kind == "lstm" else 1)]

        @tf.function(reduce_retracing=True)
        def one(x_t: Any) -> Any:
            out = layer(x_t, initial_state=[s.value() for s in states])
            for var, new in zip(states, out[1:]):
                var.assign(new)
            return out[1]

        xs = [tf.constant(case.x[:, t : t + 1]) for t in range(case.steps)]

        def run() -> None:
            for s in states:
                s.assign(tf.zeros_like(s))
            result["outs"] = [one(x_t) for x_t in xs]

        def outputs() -> tuple[Any, np.ndarray]:
            hs = [h.numpy() for h in result["outs"]]
            return np.stack(hs[:8], 1), hs[-1]

        return run, outputs

    x = tf.constant(case.x)
    mask = None
    if case.lengths is not None:
        mask = tf.constant(lengths_to_mask(case.lengths, case.steps))

    @tf.function
    def call() -> Any:
        return layer(x, mask=mask)

    def run_seq() -> None:
        result["out"] = call()

    def outputs_seq() -> tuple[Any, np.ndarray]:
        y = result["out"][0].numpy()
        if case.lengths is not None:  # Keras repeats the last output at masked steps
            y = np.where(lengths_to_mask(case.lengths, case.steps)[..., None], y, 0)
        return y, result["out"][1].numpy()

    return run_seq, outputs_seq


class _Skip(Exception):
    """This implementation does not run this workload."""


# name -> (module whose absence means skipped, builder)
IMPLEMENTATIONS: dict[str, tuple[str | None, Impl]] = {
    "rnnparity-numpy": (None, _rnnparity(False)),
    "rnnparity-fast": ("numba", _rnnparity(True)),
    "torch": ("torch", _torch),
    "onnxruntime": ("onnxruntime", _ort),
    "tensorflow": ("tensorflow", _tensorflow),
    "onnx.reference": ("onnx", _onnx_reference),
}


def _importable(module: str | None) -> bool:
    import importlib.util

    return module is None or importlib.util.find_spec(module) is not None


def _gemm(size: int = 1024) -> Callable[[], Any]:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), np.float32)
    b = rng.standard_normal((size, size), np.float32)
    out = np.empty_like(a)
    return lambda: np.matmul(a, b, out=out)


def _traced_peak(run: Callable[[], Any]) -> int:
    """Peak bytes NumPy and Python allocated during one call (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _compare(got: tuple[Any, np.ndarray], want: tuple[Any, np.ndarray], case: Case) -> float:
    y, h = got
    y_ref, h_ref = want
    diff = float(np.max(np.abs(np.asarray(h) - h_ref)))
    if y is not None and y_ref is not None:
        if case.lengths is not None:  # padded steps differ between conventions
            valid = lengths_to_mask(case.lengths, case.steps)[..., None]
            y, y_ref = np.where(valid, y, 0), np.where(valid, y_ref, 0)
        diff = max(diff, float(np.max(np.abs(np.asarray(y) - y_ref))))
    return diff


def run_suite(quick: bool = False, repeats: int = 0, only: list[str] | None = None,
              implementations: list[str] | None = None, threads: int = 0,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the workloads; return a JSON-ready dict (see ``rnnparity bench --json``).

    Args:
        quick: fewer steps and repeats (a smoke run, minutes -> seconds).
        repeats: timed repeats per implementation (median reported); 0 = 5 quick, 7 full.
        only: workload keys to run (default all).
        implementations: names from ``IMPLEMENTATIONS`` (default all).
        threads: if > 0, the thread count of every implementation (NumPy's BLAS, torch,
            onnxruntime, TensorFlow); 0 leaves each library's default.
        progress: called with one line per finished workload.
    """
    repeats = repeats or (5 if quick else 7)
    global THREADS
    THREADS = threads
    if threads:
        _set_blas_threads(threads)
    names = implementations or list(IMPLEMENTATIONS)
    skipped = {n: f"{IMPLEMENTATIONS[n][0]} is not installed" for n in names
               if not _importable(IMPLEMENTATIONS[n][0])}
    if "rnnparity-fast" in names and "rnnparity-fast" not in skipped and not fast_default():
        skipped["rnnparity-fast"] = "switched off by RNNPARITY_FAST"
    results = []
    for work in WORKLOADS:
        if only and work.key not in only:
            continue
        results.append(_run_workload(work, quick, repeats,
                                     [n for n in names if n not in skipped]))
        if progress:
            progress(_progress_line(results[-1]))
    return {"machine": machine(), "quick": quick, "repeats": repeats, "threads": threads,
            "skipped": skipped, "workloads": results, "targets": _targets(results)}


def _run_workload(work: Workload, quick: bool, repeats: int,
                  names: list[str]) -> dict[str, Any]:
    case = make_case(work, quick)
    if work.final_only:  # a long sequence: rnnparity only, fewer repeats
        names = [n for n in names if n.startswith("rnnparity")]
        repeats = 3
    runners, notes = {}, {}
    reference = None
    for name in names:
        try:
            run, outputs = IMPLEMENTATIONS[name][1](case)
            for _ in range(1 if work.final_only else 2):
                run()  # warm-up (compiles, traces)
        except _Skip as why:
            notes[name] = str(why)
            continue
        except Exception as err:  # a peer's own failure is reported, not fatal
            logger.warning("%s failed on %s: %s", name, work.key, err)
            notes[name] = f"failed: {type(err).__name__}: {str(err)[:200]}"
            continue
        if reference is None:
            reference = outputs()
            diff = 0.0
        else:
            diff = _compare(outputs(), reference, case)
        if diff > ATOL:
            notes[name] = f"disagrees with rnnparity: max abs diff {diff:.2e}; not timed"
            continue
        runners[name] = (run, diff)

    gemm = _gemm()
    gemm()
    times: dict[str, list[float]] = {name: [] for name in runners}
    times["gemm"] = []
    for _ in range(repeats):
        for name, fn in [*((n, r[0]) for n, r in runners.items()), ("gemm", gemm)]:
            time.sleep(GAP_SECONDS)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    gemm_gflops = 2 * 1024**3 / statistics.median(times.pop("gemm")) / 1e9

    rows = {}
    for name, (run, diff) in runners.items():
        seconds = statistics.median(times[name])
        per_step = seconds / case.steps
        gflops = work.flops(case.steps) / seconds / 1e9
        peak = _traced_peak(run) if name.startswith(("rnnparity", "onnx.")) else None
        rows[name] = {
            "seconds": seconds,
            "seconds_min": min(times[name]),
            "seconds_per_step": per_step,
            "steps_per_second": case.steps / seconds,
            "gflops": gflops,
            "gemm_fraction": gflops / gemm_gflops,
            "peak_traced_bytes": peak,
            "max_abs_diff": diff,
        }
    for name, row in rows.items():
        row["ratio"] = {peer: row["seconds"] / rows[peer]["seconds"] for peer in rows}
    return {"key": work.key, "description": work.describe(), "steps": case.steps,
            "stream": work.stream, "reference_peer": work.reference_peer,
            "gemm_gflops": gemm_gflops, "results": rows, "notes": notes}


def _targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_key = {r["key"]: r["results"] for r in results}
    out = []
    for key, impl, peer, limit in TARGETS:
        rows = by_key.get(key, {})
        ratio = rows[impl]["ratio"].get(peer) if impl in rows and peer in rows else None
        out.append({"workload": key, "implementation": impl, "peer": peer, "limit": limit,
                    "ratio": ratio, "met": None if ratio is None else ratio <= limit})
    return out


def _progress_line(result: dict[str, Any]) -> str:
    field_ = "seconds_per_step" if result["stream"] else "seconds"
    parts = [f"{name} {_human(row[field_])}" for name, row in result["results"].items()]
    return f"{result['key']}: " + ", ".join(parts)


def _human(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def machine() -> dict[str, Any]:
    """The machine and library versions the numbers belong to."""
    info: dict[str, Any] = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas(),
        "threads_env": {k: os.environ[k] for k in (
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ},
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # Other processes' load: on a shared machine, multi-threaded BLAS suffers most.
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    from importlib import metadata

    for package in ("numba", "torch", "onnxruntime", "tensorflow", "keras", "onnx"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _openblas() -> Any:
    import ctypes
    import glob

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs",
                                  "*openblas*"))
    return ctypes.CDLL(libs[0]) if libs else None


def _openblas_function(lib: Any, name: str) -> Any:
    for prefix, suffix in (("scipy_", "64_"), ("", ""), ("", "64_")):
        function = getattr(lib, f"{prefix}{name}{suffix}", None)
        if function is not None:
            return function
    return None


def _set_blas_threads(threads: int) -> None:
    """Set NumPy's BLAS threads (threadpoolctl if installed, else OpenBLAS directly)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
        return
    except ImportError:
        pass
    lib = _openblas()
    setter = None if lib is None else _openblas_function(lib, "openblas_set_num_threads")
    if setter is None:
        logger.warning("could not set NumPy's BLAS threads; set OPENBLAS_NUM_THREADS")
    else:
        setter(threads)


def _blas() -> dict[str, Any]:
    """BLAS library, kernel and threads (threadpoolctl if installed, else OpenBLAS)."""
    try:
        from threadpoolctl import threadpool_info

        return {"pools": [{k: p.get(k) for k in ("internal_api", "version", "num_threads",
                                                   "architecture")}
                          for p in threadpool_info()]}
    except ImportError:
        pass
    import ctypes

    lib = _openblas()
    corename = None if lib is None else _openblas_function(lib, "openblas_get_corename")
    threads = None if lib is None else _openblas_function(lib, "openblas_get_num_threads")
    found: dict[str, Any] = {}
    if corename is not None:
        corename.restype = ctypes.c_char_p
        found = {"library": "openblas", "kernel": corename().decode(),
                 "num_threads": threads() if threads is not None else None}
    return found


def to_markdown(report: dict[str, Any]) -> str:
    """The README table: time per run (per step for streaming) and the ratio to the
    workload's reference peer, then the targets with their verdicts."""
    names = [n for n in IMPLEMENTATIONS if any(n in w["results"] for w in report["workloads"])]
    head = "| workload | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for w in report["workloads"]:
        cells = []
        for name in names:
            row = w["results"].get(name)
            if row is None:
                cells.append("-")
                continue
            t = row["seconds_per_step"] if w["stream"] else row["seconds"]
            ratio = row["ratio"].get(w["reference_peer"])
            cells.append(_human(t) + (f" ({ratio:.2f}x)" if ratio is not None else ""))
        lines.append(f"| {w['key']} {w['description']} | " + " | ".join(cells) + " |")
    lines += ["", "Ratios are to torch for whole sequences and to onnxruntime for one step "
              "per call; streaming times are per step.", "",
              "| workload | rnnparity path | vs | target | measured | met |",
              "|---|---|---|---|---|---|"]
    for t in report["targets"]:
        ratio = "-" if t["ratio"] is None else f"{t['ratio']:.2f}x"
        met = {True: "yes", False: "**no**", None: "not run"}[t["met"]]
        lines.append(f"| {t['workload']} | {t['implementation']} | {t['peer']} | "
                     f"<= {t['limit']}x | {ratio} | {met} |")
    lines += ["", "| workload | implementation | GFLOP/s | of GEMM peak | steps/s | "
              "peak traced memory |", "|---|---|---|---|---|---|"]
    for w in report["workloads"]:
        for name, row in w["results"].items():
            peak = row["peak_traced_bytes"]
            peak_text = "-" if peak is None else f"{peak / 2**20:.2f} MiB"
            lines.append(f"| {w['key']} | {name} | {row['gflops']:.1f} | "
                         f"{row['gemm_fraction']:.0%} | {row['steps_per_second']:.3g} | "
                         f"{peak_text} |")
    m = report["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, "
              f"NumPy {m['numpy']} ({_blas_text(m['blas'])}); "
              + ", ".join(f"{p} {m[p]}" for p in ("numba", "torch", "onnxruntime",
                                                  "tensorflow", "onnx") if p in m)
              + (f". float32 GEMM {report['workloads'][0]['gemm_gflops']:.0f} GFLOP/s"
                 if report["workloads"] else ""),
              f"Threads: {report['threads'] or 'each library default'}; medians of "
              f"{report['repeats']} repeats{' (--quick: fewer steps)' if report['quick'] else ''}"
              f"; environment: {m['threads_env'] or 'no thread variables set'}; load "
              f"average at the end {m.get('load_average', '?')}."]
    if report["skipped"]:
        lines.append("Skipped: " + "; ".join(f"{k} ({v})" for k, v in
                                             report["skipped"].items()))
    notes = [f"{w['key']} {k}: {v}" for w in report["workloads"] for k, v in
             w["notes"].items()]
    if notes:
        lines.append("Notes: " + "; ".join(notes))
    return "\n".join(lines) + "\n"


def _blas_text(blas: dict[str, Any]) -> str:
    if "pools" in blas:
        return ", ".join(f"{p['internal_api']} {p['architecture']} x{p['num_threads']}"
                         for p in blas["pools"])
    if blas:
        return f"{blas['library']} {blas['kernel']} x{blas['num_threads']}"
    return "BLAS unknown"
