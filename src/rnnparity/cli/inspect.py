"""``rnnparity inspect``: what a model file holds and which conventions will be applied."""

from __future__ import annotations

import argparse

from .common import ExitCode, UsageError, add_override_option, emit_json, parse_overrides

NAME = "inspect"
HELP = "list a model file's layers, shapes and the conventions that will be applied"
DESCRIPTION = """\
Read a model file without running it and print its framework and version, its inputs and
outputs, and for each layer the kind, sizes, gate order, bias layout and activations that
rnnparity will apply, marking every default that the file did not pin down (such as the
recurrent activation of a weights-only Keras file, taken from the Keras version it
records)."""
EXAMPLES = """\
examples:
  $ rnnparity inspect model.h5
  $ rnnparity inspect state_dict.safetensors --json"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file")
    parser.add_argument("--layer", help="only this layer / module prefix / ONNX node")
    parser.add_argument("--node", help="only this ONNX node (same as --layer)")
    add_override_option(parser)


def execute(args: argparse.Namespace) -> int:
    from .. import load

    if args.node and args.layer and args.node != args.layer:
        raise UsageError(f"--layer {args.layer!r} and --node {args.node!r} name different "
                         "things; give one")
    model = load(args.model, layer=args.node or args.layer, **parse_overrides(args.override))
    info = model.describe()
    if args.json:
        emit_json("inspect", 0, info)
        return ExitCode.OK
    layers = info.pop("layers")
    for key, value in info.items():
        if key == "assumed":
            continue
        print(f"{key}: {value}")
    for note in info.get("assumed", []):
        print(f"assumed: {note}")
    print(f"layers ({len(layers)}):")
    for layer in layers:
        layer = dict(layer)
        print(f"  {layer.pop('name')} [{layer.pop('kind')}]")
        for key, value in layer.items():
            if isinstance(value, list):
                for item in value:
                    print(f"      {key}: {item}")
            else:
                print(f"      {key}: {value}")
    return ExitCode.OK
