"""``rnnparity convert``: write recurrent weights in the layout another framework loads."""

from __future__ import annotations

import argparse

from .common import ExitCode, add_override_option, emit_json, parse_overrides

NAME = "convert"
HELP = "convert recurrent weights to Keras 3, tf_keras, PyTorch, ONNX or the cuDNN layout"
DESCRIPTION = """\
Read IN (any file rnnparity runs: Keras .h5/.keras, PyTorch state_dict, ONNX) and write its
recurrent layers so that the target framework loads them directly, with its own numbers
unchanged: --to keras (Keras 3 .keras / .weights.h5 / .h5), keras2 (tf_keras .h5),
torch (state_dict .safetensors, or .pt with torch installed; load into
nn.LSTM/GRU/RNN(..., batch_first=True)), onnx (.onnx with one LSTM/GRU/RNN node per layer,
time-major input X) or cudnn (tf_keras CuDNNLSTM/CuDNNGRU layout .h5). Gate orders, bias
splits and the cuDNN block layout are handled; what the target cannot compute (a GRU
resetting before the matmul into torch, peepholes into Keras, hard_sigmoid into torch...)
is refused with exit code 3 and the missing feature named. Keras files are written with
the Keras package itself (keras / tf_keras must be installed)."""
EXAMPLES = """\
examples:
  $ rnnparity convert model.h5 --to torch -o lstm.safetensors
  $ rnnparity convert lstm.safetensors --to keras -o lstm.keras
  $ rnnparity convert cudnn_model.h5 --to onnx -o model.onnx --layer cu_dnnlstm"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="IN", help="model file to convert")
    parser.add_argument("--to", required=True, dest="target",
                        choices=["keras", "keras2", "torch", "onnx", "cudnn"],
                        help="target framework / layout")
    parser.add_argument("-o", "--output", required=True, help="file to write")
    parser.add_argument("--layer", help="convert only this layer (Keras name, state_dict "
                        "prefix, ONNX node)")
    add_override_option(parser, "the source file")


def execute(args: argparse.Namespace) -> int:
    from ..convert import convert

    result = convert(args.source, args.target, args.output, layer=args.layer,
                     overrides=parse_overrides(args.override))
    if args.json:
        emit_json(NAME, int(ExitCode.OK), result.to_dict())
        return ExitCode.OK
    print(f"wrote {result.path} ({result.target})")
    for block in result.blocks:
        print(f"  {block['name']}: {block['kind'].upper()} input_size={block['input_size']} "
              f"hidden_size={block['hidden_size']} num_layers={block['num_layers']}"
              f"{' bidirectional' if block['bidirectional'] else ''}")
    for note in result.notes:
        print(f"note: {note}")
    return ExitCode.OK
