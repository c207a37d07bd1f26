"""``rnnparity bench``: time rnnparity against the installed frameworks in one process."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..errors import InputError
from .common import ExitCode, emit_json

NAME = "bench"
HELP = "time rnnparity against PyTorch, onnxruntime, TensorFlow and onnx.reference"
DESCRIPTION = """\
Run the benchmark workloads W1-W7 (batch LSTM/GRU, one step per call, variable lengths, a
10**6-step sequence) with rnnparity's NumPy and compiled paths and every installed peer,
interleaved in this one process after a warm-up. Each implementation must first agree with
rnnparity (max abs diff <= 1e-5). Reports medians of the repeats: time, steps/s, GFLOP/s,
the fraction of this machine's float32 GEMM speed measured in the same run, peak traced
memory, and time ratios between all implementations. Missing peers are listed as skipped.
Thread counts follow OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS. A full run
takes about ten minutes; --quick about one."""
EXAMPLES = """\
examples:
  $ rnnparity bench --quick
  $ rnnparity bench --markdown --update docs/performance.md
  $ rnnparity bench --only W3,W5 --impl rnnparity-fast,onnxruntime --json"""

_START, _END = "<!-- bench:start -->", "<!-- bench:end -->"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--repeats", type=int, default=0,
                        help="timed repeats per implementation (default 7, quick 5)")
    parser.add_argument("--only", default="", metavar="W1,W3",
                        help="comma-separated workload keys")
    parser.add_argument("--impl", default="", metavar="NAME,...",
                        help="implementations to run: rnnparity-numpy, rnnparity-fast, "
                        "torch, onnxruntime, tensorflow, onnx.reference (default all)")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads for every implementation (NumPy's BLAS, torch, "
                        "onnxruntime, TensorFlow); default: each library's own")
    parser.add_argument("--markdown", action="store_true", help="print the README tables")
    parser.add_argument("--update", metavar="FILE",
                        help=f"with --markdown: replace the text between {_START} and "
                        f"{_END} in FILE")


def execute(args: argparse.Namespace) -> int:
    from .. import bench

    only = [k.strip() for k in args.only.split(",") if k.strip()]
    impls = [k.strip() for k in args.impl.split(",") if k.strip()]
    known = [w.key for w in bench.WORKLOADS]
    if any(k not in known for k in only):
        raise InputError(f"--only {args.only!r}: workloads are {', '.join(known)}")
    if any(n not in bench.IMPLEMENTATIONS for n in impls):
        raise InputError(f"--impl {args.impl!r}: implementations are "
                         f"{', '.join(bench.IMPLEMENTATIONS)}")
    if args.repeats < 0 or args.threads < 0:
        raise InputError(f"--repeats and --threads must be >= 0, got {args.repeats} and "
                         f"{args.threads}")

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    report = bench.run_suite(quick=args.quick, repeats=args.repeats, only=only or None,
                             implementations=impls or None, threads=args.threads,
                             progress=progress)
    if args.json:
        emit_json(NAME, ExitCode.OK, report)
        return ExitCode.OK
    text = bench.to_markdown(report)
    if args.update:
        _update(Path(args.update), text)
    if args.markdown or not args.update:
        print(text, end="")
    return ExitCode.OK


def _update(path: Path, text: str) -> None:
    if not path.is_file():
        raise InputError(f"--update {str(path)!r} does not exist")
    old = path.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(_START) + ".*?" + re.escape(_END), re.S)
    if not pattern.search(old):
        raise InputError(f"{str(path)!r} has no {_START} ... {_END} section to replace")
    path.write_text(pattern.sub(lambda _: f"{_START}\n{text}{_END}", old), encoding="utf-8")
