"""``rnnparity verify``: run rnnparity and the real framework on the same input, compare."""

from __future__ import annotations

import argparse
import sys

from ..errors import InputError
from ..tolerances import ATOL
from .common import ExitCode, add_override_option, emit_json, parse_overrides, read_arrays

NAME = "verify"
HELP = "prove parity on your data: compare rnnparity with the framework, per output and step"
DESCRIPTION = f"""\
Run MODEL in rnnparity and in its own framework on the same input - Keras 3 for .keras and
Keras-3 .h5, tf_keras for Keras 2 .h5, PyTorch for state_dicts, onnxruntime for .onnx - or
compare with outputs you stored where the framework runs (--expected, an .npz keyed by
output names or one .npy), and report the max abs and relative difference per output and
per time step, and the first step where it exceeds --atol (default {ATOL:g}). Exits 0 when
every output is within --atol, 1 otherwise. --plot draws framework vs rnnparity per unit
over time and the error curve. A weights-only .h5 holds no architecture: without
--expected the framework runs tf_keras layers rebuilt from rnnparity's reading (said so)."""
EXAMPLES = """\
examples:
  $ rnnparity verify model.h5 --input x.npy --plot parity.png
  $ rnnparity verify lstm.safetensors --input x.npy --json
  $ rnnparity verify model.onnx --input x.npz --expected y_from_ort.npz --atol 1e-6"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.h5, .keras, .onnx, .safetensors, .npz, "
                        ".pt)")
    parser.add_argument("--input", required=True, help="input .npy, or .npz keyed by input "
                        "names")
    parser.add_argument("--expected", help="the framework's outputs (.npz keyed by output "
                        "names, or .npy for the first output); no framework is run")
    parser.add_argument("--layer", help="compare one layer (Keras layer name, state_dict "
                        "prefix)")
    parser.add_argument("--node", help="compare one ONNX node (needs --expected)")
    parser.add_argument("--atol", type=float, default=ATOL,
                        help=f"max abs difference allowed (default {ATOL:g})")
    parser.add_argument("--plot", help="write a PNG: both runs per unit over time and the "
                        "error curve")
    add_override_option(parser)


def execute(args: argparse.Namespace) -> int:
    from ..verify import plot, verify

    if args.atol < 0:
        raise InputError(f"--atol must be >= 0, got {args.atol}")
    inputs = read_arrays(args.input)
    expected = None
    if args.expected:
        stored = read_arrays(args.expected)
        expected = stored[""] if set(stored) == {""} else stored
    report = verify(args.model, inputs[""] if set(inputs) == {""} else inputs,
                    expected=expected, layer=args.node or args.layer, atol=args.atol,
                    progress=not args.json and sys.stderr.isatty(),
                    overrides=parse_overrides(args.override))
    code = ExitCode.OK if report.ok else ExitCode.MISMATCH
    plot_path = str(plot(report, args.plot)) if args.plot else None
    if args.json:
        result = report.to_dict()
        result["plot"] = plot_path
        emit_json(NAME, int(code), result)
        return code
    print("\n".join(report.lines()))
    if plot_path:
        print(f"wrote {plot_path}")
    return code
