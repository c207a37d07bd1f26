"""``rnnparity diagnose``: explain why a replica's outputs differ from a framework's."""

from __future__ import annotations

import argparse

from ..errors import InputError
from .common import ExitCode, emit_json, read_arrays

NAME = "diagnose"
HELP = "find the weight convention (gate order, layout, biases, ...) that reproduces outputs"
DESCRIPTION = """\
Given one recurrent layer's weight arrays as you hold them (an .npz of Keras get_weights(),
a state_dict as .npz/.safetensors/.pt, ONNX W, R, B), an input and the outputs you got
(from the framework or from your own replica, every step or the last one), search the
conventions frameworks use - which array is which, gate order, per-gate block layout
including cuDNN's, one/two/summed biases, activation definitions, forget-bias constant,
GRU reset placement, direction, time/batch layout - for the ones that reproduce the
outputs, rank them, and say in words how the best one differs from what the weights are
labelled as (--framework; guessed from names and shapes otherwise). Exits 0 when a
convention fits within --atol, 1 when nothing does (then the closest ones are shown with
the step and unit where they first depart)."""
EXAMPLES = """\
examples:
  $ rnnparity diagnose --weights cudnn_weights.npz --input x.npy --expected y_replica.npy
  $ rnnparity diagnose --weights state_dict.safetensors --input x.npy --expected y.npy \\
        --framework torch --json"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="the layer's arrays: .npz (arr_0, arr_1, ... or named), "
                        ".safetensors or .pt state_dict")
    parser.add_argument("--input", required=True,
                        help=".npy/.npz input, (batch, seq_len, input_size) or (seq_len, "
                        "input_size)")
    parser.add_argument("--expected", required=True,
                        help=".npy/.npz outputs to explain: (batch, seq_len, units) or "
                        "(batch, units)")
    parser.add_argument("--framework", choices=["keras", "keras1", "cudnn", "torch", "onnx",
                                                "tf1"],
                        help="what the weights are labelled as (default: guessed)")
    parser.add_argument("--atol", type=float, default=None,
                        help="max abs error that counts as reproducing (default 1e-4)")


def _single(path: str, what: str):
    arrays = read_arrays(path)
    if len(arrays) != 1:
        raise InputError(f"{what} file {path!r} holds {len(arrays)} arrays "
                         f"({', '.join(arrays)}); expected one")
    return next(iter(arrays.values()))


def execute(args: argparse.Namespace) -> int:
    from ..diagnose import DEFAULT_ATOL, diagnose, read_weight_arrays

    weights = read_weight_arrays(args.weights)
    x = _single(args.input, "input")
    y = _single(args.expected, "expected-output")
    atol = DEFAULT_ATOL if args.atol is None else args.atol
    result = diagnose(weights, x, y, framework=args.framework, atol=atol)
    code = ExitCode.OK if result.fits else ExitCode.MISMATCH
    if args.json:
        emit_json(NAME, int(code), result.to_dict())
    else:
        print("\n".join(result.explain()))
    return code
