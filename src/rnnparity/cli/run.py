"""``rnnparity run``: run a model file on inputs from .npy / .npz files."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError
from .common import (
    ExitCode,
    UsageError,
    add_override_option,
    emit_json,
    parse_overrides,
    read_arrays,
    summarise,
)

NAME = "run"
HELP = "run a model file on an input array and print or save its outputs"
DESCRIPTION = """\
Run a recurrent model (Keras .h5/.keras, ONNX .onnx, PyTorch .safetensors/.npz/.pt state
dict) on the arrays of an .npy or .npz file, in NumPy alone, with the framework's numbers.
An .npy input feeds the model's only input; an .npz is keyed by input names (or holds one
array). Outputs are written to --output as .npz keyed by output names, one array each.
Which convention was applied (gate order, bias layout, activations, defaults assumed) is
shown by `rnnparity inspect` and, with -v, logged here."""
EXAMPLES = """\
examples:
  $ rnnparity run --example cudnn_lstm_1x2
  $ rnnparity run model.h5 --input x.npy --output y.npz
  $ rnnparity run weights.h5 --layer lstm_2 --input x.npz --override units=64"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="model file (.h5, .keras, .onnx, "
                        ".safetensors, .npz, .pt)")
    parser.add_argument("--input", "-i", dest="input", help="input .npy or .npz")
    parser.add_argument("--output", "-o", help="write outputs to this .npz")
    parser.add_argument("--layer", help="run only this layer (Keras layer name, state_dict "
                        "prefix)")
    parser.add_argument("--node", help="run only this ONNX node (inputs keyed X, "
                        "sequence_lens, initial_h, initial_c)")
    parser.add_argument("--lengths", help=".npy of per-sequence lengths (PyTorch packed "
                        "sequences, ONNX sequence_lens)")
    parser.add_argument("--chunk", type=int, help="feed N steps at a time, carrying state")
    add_override_option(parser)
    parser.add_argument("--float64", action="store_true", help="compute in float64")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="run inputs holding NaN/inf instead of refusing them")
    parser.add_argument("--example", help="run an example shipped with the package on its "
                        "shipped input and compare with the framework's stored output: "
                        "cudnn_lstm_1x2, cudnn_lstm_3x5, cudnn_gru_3x4 (files in "
                        "rnnparity/examples; rnnparity.example_path(name) gives a path)")


def _example(name: str) -> tuple[str, str, str | None]:
    from .. import example_path

    stem = name.removesuffix(".h5")
    folder = Path(__file__).resolve().parent.parent / "examples"
    names = sorted(p.stem for p in folder.glob("*.h5"))
    if stem not in names:
        raise UsageError(f"no example named {name!r}; examples: {', '.join(names)}")
    model = example_path(f"{stem}.h5")
    expected = model.with_name(f"{stem}.expected.npz")
    return (str(model), str(model.with_name(f"{stem}.input.npy")),
            str(expected) if expected.exists() else None)


def load_model(args: argparse.Namespace):
    from .. import load

    overrides = parse_overrides(args.override)
    if args.float64:
        overrides["dtype"] = "float64"
    if args.node and args.layer and args.node != args.layer:
        raise InputError(f"--node {args.node!r} and --layer {args.layer!r} both name what to "
                         "run; give one")
    layer = args.node or args.layer
    return load(args.model, layer=layer, **overrides)


def feeds_for(model, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # One array feeds a one-input model whatever its key (e.g. a previous run's output).
    if len(arrays) == 1 and (len(model.inputs) == 1 or set(arrays) <= {"", "arr_0"}):
        if len(model.inputs) != 1:
            raise InputError(f"the model has inputs {model.inputs}; give an .npz keyed by "
                             "those names")
        return {model.inputs[0]: next(iter(arrays.values()))}
    return arrays


def execute(args: argparse.Namespace) -> int:
    expected_path = None
    if args.example:
        args.model, example_input, expected_path = _example(args.example)
        args.input = args.input or example_input
    if not args.model or not args.input:
        raise UsageError("run needs MODEL and --input (or --example NAME); see rnnparity run "
                         "--help")

    model = load_model(args)
    feeds = feeds_for(model, read_arrays(args.input))
    lengths = None if args.lengths is None else _read_lengths(args.lengths)
    if args.chunk is not None and lengths is not None:
        raise InputError("--chunk and --lengths cannot be combined: a stream cannot know "
                         "each sequence's end in advance; run whole sequences with --lengths")
    if args.chunk is not None:
        outputs = run_in_chunks(model, feeds, args.chunk, not args.allow_nonfinite)
    else:
        outputs = model.run(feeds, _context(lengths), check_finite=not args.allow_nonfinite)
    if args.output:
        _save(args.output, outputs)

    comparison = None
    if expected_path:
        expected = read_arrays(expected_path)
        comparison = {k: float(np.abs(outputs[k] - expected[k]).max())
                      for k in outputs if k in expected}
    if args.json:
        emit_json("run", 0, {"model": args.model, "outputs": {
            k: summarise(v) for k, v in outputs.items()}, "max_abs_diff_vs_expected":
            comparison, "output_file": args.output})
        return ExitCode.OK
    _print_outputs(model, outputs, args.output, comparison)
    return ExitCode.OK


def _save(path: str, outputs: dict[str, np.ndarray]) -> None:
    try:
        np.savez(path, **outputs)
    except OSError as err:
        raise FormatError(f"cannot write --output {path!r}: {err.strerror or err}; expected "
                          "a writable .npz path") from err


def _read_lengths(path: str) -> np.ndarray:
    arrays = read_arrays(path)
    if len(arrays) == 1:
        lengths = next(iter(arrays.values()))
    elif "lengths" in arrays:
        lengths = arrays["lengths"]
    else:
        raise InputError(f"--lengths {path!r} holds {sorted(arrays)}; expected one array "
                         "or one named 'lengths'")
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise InputError(f"--lengths must be a 1-D integer array (batch,); got shape "
                         f"{lengths.shape} dtype {lengths.dtype}")
    return lengths


def _context(lengths):
    from ..model import CallContext

    return CallContext(lengths=lengths)


def run_in_chunks(model, feeds: dict[str, np.ndarray], chunk: int,
                  check_finite: bool) -> dict[str, np.ndarray]:
    """Feed ``chunk`` steps at a time through a stream; join the per-step outputs."""
    if chunk < 1:
        raise InputError(f"--chunk must be >= 1, got {chunk}")
    sequences = [k for k in model.inputs if k in feeds and k not in model.optional_inputs
                 and k not in model.state_inputs]
    if not sequences:
        raise InputError(f"--chunk needs the sequence input(s) {model.inputs}; got "
                         f"{sorted(feeds)}")
    first = np.asarray(feeds[sequences[0]])
    batch_axis = 1 if model.time_axis(sequences[0]) == 0 else 0
    if first.ndim < 2:
        raise InputError(f"--chunk needs batched sequences; input {sequences[0]!r} has "
                         f"shape {first.shape}")
    stream = model.stream(batch_size=first.shape[batch_axis])
    out = stream.feed(feeds, chunk_size=chunk, check_finite=check_finite)
    return out if isinstance(out, dict) else {model.outputs[0]: out}


def _print_outputs(model, outputs, output_file, comparison) -> None:
    print(f"model: {model.source}")
    for layer in model.describe()["layers"]:
        convention = layer.get("convention")
        if convention:
            print(f"  {layer['name']}: {convention}")
    for name, value in outputs.items():
        s = summarise(value)
        if s["min"] is None:
            print(f"output {name!r}: shape {tuple(s['shape'])} {s['dtype']} (empty)")
            continue
        print(f"output {name!r}: shape {tuple(s['shape'])} {s['dtype']} "
              f"min {s['min']:.6g} max {s['max']:.6g} mean {s['mean']:.6g}")
        flat = np.asarray(value).reshape(-1)
        print("  first values: " + " ".join(f"{v:.7g}" for v in flat[:6]))
    if comparison:
        for name, diff in comparison.items():
            print(f"max abs difference from the framework's stored output {name!r}: {diff:.3g}")
    if output_file:
        print(f"wrote {output_file}")
