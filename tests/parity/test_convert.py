"""convert: the real target framework loads the written file and reproduces the source.

For each pair of Keras 3, tf_keras, PyTorch, ONNX and the cuDNN layout, a source file is
written by the source framework with random weights, converted with ``rnnparity
convert``, loaded by the target framework itself, run on the same input, and compared with
the source framework's own outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require

tf = require("tensorflow", "TensorFlow runs the Keras oracles")
tf_keras = require("tf_keras", "tf_keras is the Keras 2 oracle")
keras = require("keras", "Keras 3 is an oracle")
torch = require("torch", "PyTorch is an oracle")
onnx = require("onnx", "onnx writes the ONNX source")
ort = require("onnxruntime", "onnxruntime is the ONNX oracle")
require("safetensors", "safetensors holds the torch state_dicts")

from rnnparity.cli.main import main  # noqa: E402
from rnnparity.convert import convert  # noqa: E402
from rnnparity.errors import UnsupportedFeatureError  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch, pytest.mark.onnx]

BATCH, SEQ_LEN, INPUT_SIZE, UNITS = 3, 6, 4, 5
FRAMEWORKS = ["keras", "keras2", "torch", "onnx", "cudnn"]
SUFFIX = {"keras": ".keras", "keras2": ".h5", "torch": ".safetensors", "onnx": ".onnx",
          "cudnn": ".h5"}
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
KERAS_NAME = {"lstm": "LSTM", "gru": "GRU", "rnn": "SimpleRNN"}


def _uniform(rng, shape, scale=0.5):
    return rng.uniform(-scale, scale, shape).astype(np.float32)


def _cudnn_class(kind):
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM

    return CuDNNLSTM if kind == "lstm" else CuDNNGRU


def _keras_model(module, kind, cudnn=False):
    if cudnn:
        layer = _cudnn_class(kind)(UNITS, return_sequences=True)
    else:
        layer = getattr(module.layers, KERAS_NAME[kind])(UNITS, return_sequences=True)
    return module.Sequential([module.Input((SEQ_LEN, INPUT_SIZE)), layer])


def _onnx_source(path, kind, rng):
    from onnx import TensorProto, helper, numpy_helper

    G = GATES[kind]
    arrays = {"W": _uniform(rng, (1, G * UNITS, INPUT_SIZE)),
              "R": _uniform(rng, (1, G * UNITS, UNITS)), "B": _uniform(rng, (1, 2 * G * UNITS))}
    attrs = {"linear_before_reset": 1} if kind == "gru" else {}
    node = helper.make_node(kind.upper(), ["X", "W", "R", "B"], ["Y"], hidden_size=UNITS,
                            **attrs)
    graph = helper.make_graph(
        [node], "src",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [SEQ_LEN, BATCH, INPUT_SIZE])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [SEQ_LEN, 1, BATCH, UNITS])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = session.run(None, {session.get_inputs()[0].name: x.transpose(1, 0, 2)})[0]
    if y.ndim == 4:  # (seq_len, num_directions, batch, hidden)
        y = y.transpose(0, 2, 1, 3).reshape(SEQ_LEN, BATCH, -1)
    return y.transpose(1, 0, 2)


def _torch_module(kind):
    return getattr(torch.nn, kind.upper())(INPUT_SIZE, UNITS, batch_first=True)


def _run_torch_file(path, kind, x):
    from safetensors.torch import load_file

    module = _torch_module(kind)
    module.load_state_dict(load_file(str(path)), strict=True)
    with torch.no_grad():
        return module(torch.from_numpy(x))[0].numpy()


def _run_cudnn_file(path, kind, x):
    """tf_keras' own loader converts cuDNN-layout weights into a plain layer."""
    layer = getattr(tf_keras.layers, kind.upper())
    options = {"reset_after": True} if kind == "gru" else {}
    model = tf_keras.Sequential([tf_keras.Input((SEQ_LEN, INPUT_SIZE)),
                                 layer(UNITS, return_sequences=True, **options)])
    model.load_weights(str(path))
    return np.asarray(model(x))


def run_target(framework, path, kind, x):
    if framework == "keras":
        return np.asarray(keras.saving.load_model(str(path), compile=False)(x))
    if framework == "keras2":
        return np.asarray(tf_keras.models.load_model(str(path), compile=False)(x))
    if framework == "torch":
        return _run_torch_file(path, kind, x)
    if framework == "onnx":
        return _run_onnx(path, x)
    return _run_cudnn_file(path, kind, x)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """(framework, kind) -> (source file, the source framework's outputs on ``x``)."""
    folder = tmp_path_factory.mktemp("convert_sources")
    rng = np.random.default_rng(21)
    x = rng.normal(size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32)
    made = {}
    for kind in GATES:
        for framework in FRAMEWORKS:
            if kind == "rnn" and framework == "cudnn":
                continue  # cuDNN layers are LSTM / GRU only
            path = folder / f"{kind}_{framework}{SUFFIX[framework]}"
            if framework in ("keras", "keras2", "cudnn"):
                module = keras if framework == "keras" else tf_keras
                model = _keras_model(module, kind, cudnn=framework == "cudnn")
                model.set_weights([_uniform(rng, w.shape) for w in model.get_weights()])
                model.save(str(path))
                y = (_run_cudnn_file(path, kind, x) if framework == "cudnn"
                     else np.asarray(model(x)))
            elif framework == "torch":
                from safetensors.torch import save_file

                module = _torch_module(kind)
                with torch.no_grad():
                    for p in module.parameters():
                        p.uniform_(-0.5, 0.5)
                    y = module(torch.from_numpy(x))[0].numpy()
                save_file({k: v.contiguous() for k, v in module.state_dict().items()},
                          str(path))
            else:
                _onnx_source(path, kind, rng)
                y = _run_onnx(path, x)
            made[framework, kind] = (path, y)
    return x, made


# Every (source, target, kind) but a simple RNN from the cuDNN layout, which has none.
PAIRS = [(s, t, k) for k in GATES for s in FRAMEWORKS for t in FRAMEWORKS
         if not (k == "rnn" and s == "cudnn")]


@pytest.mark.parametrize(("source", "target", "kind"), PAIRS)
def test_target_framework_reproduces_source(sources, tmp_path, source, target, kind):
    x, made = sources
    out = tmp_path / f"converted{SUFFIX[target]}"
    if kind == "rnn" and target == "cudnn":
        with pytest.raises(UnsupportedFeatureError, match="simple RNN"):
            convert(made[source, kind][0], target, out)
        return
    path, expected = made[source, kind]
    convert(path, target, out)
    got = run_target(target, out, kind, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_bidirectional_two_layer_torch_into_keras_and_onnx(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(4)
    module = torch.nn.LSTM(INPUT_SIZE, UNITS, num_layers=2, bidirectional=True,
                           batch_first=True)
    x = np.random.default_rng(8).normal(size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    source = tmp_path / "bi.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(source))
    for target in ("keras2", "onnx"):
        out = tmp_path / f"bi{SUFFIX[target]}"
        convert(source, target, out)
        got = run_target(target, out, "lstm", x)
        np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_refusals_name_the_missing_feature(tmp_path, capsys):
    gru = tf_keras.Sequential([tf_keras.Input((SEQ_LEN, INPUT_SIZE)),
                               tf_keras.layers.GRU(UNITS, reset_after=False)])
    gru_path = tmp_path / "gru_v1.h5"
    gru.save(str(gru_path))
    with pytest.raises(UnsupportedFeatureError, match="reset"):
        convert(gru_path, "torch", tmp_path / "out.safetensors")

    hard = tf_keras.Sequential([tf_keras.Input((SEQ_LEN, INPUT_SIZE)),
                                tf_keras.layers.LSTM(UNITS,
                                                     recurrent_activation="hard_sigmoid")])
    hard_path = tmp_path / "hard.h5"
    hard.save(str(hard_path))
    with pytest.raises(UnsupportedFeatureError, match="hard_sigmoid|sigmoid"):
        convert(hard_path, "torch", tmp_path / "out.safetensors")

    capsys.readouterr()
    code = main(["convert", str(gru_path), "--to", "torch", "-o",
                 str(tmp_path / "out.safetensors"), "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 3 and body["exit_code"] == 3
    assert body["error"]["type"] == "UnsupportedFeatureError"


def test_peepholes_into_keras_are_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    arrays = {"W": _uniform(rng, (1, 4 * UNITS, INPUT_SIZE)),
              "R": _uniform(rng, (1, 4 * UNITS, UNITS)), "B": _uniform(rng, (1, 8 * UNITS)),
              "P": _uniform(rng, (1, 3 * UNITS))}
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", "", "", "P"], ["Y"],
                            hidden_size=UNITS)
    graph = helper.make_graph(
        [node], "p",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [SEQ_LEN, BATCH, INPUT_SIZE])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [SEQ_LEN, 1, BATCH, UNITS])],
        [numpy_helper.from_array(v, k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    path = tmp_path / "peep.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedFeatureError, match="peephole"):
        convert(path, "keras", tmp_path / "out.keras")
    # ONNX -> ONNX keeps them, and onnxruntime agrees with the source.
    out = tmp_path / "peep_out.onnx"
    convert(path, "onnx", out)
    x = rng.normal(size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32)
    np.testing.assert_allclose(_run_onnx(out, x), _run_onnx(path, x), rtol=0, atol=ATOL)


def test_cli_json_result(sources, tmp_path, capsys):
    _, made = sources
    path, _ = made["keras2", "gru"]
    out = tmp_path / "gru.safetensors"
    capsys.readouterr()
    code = main(["convert", str(path), "--to", "torch", "-o", str(out), "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0 and body["exit_code"] == 0 and body["command"] == "convert"
    (layer,) = body["result"]["layers"]
    assert (layer["kind"], layer["hidden_size"]) == ("gru", UNITS)
    assert out.stat().st_size > 0


def test_keras3_weights_file_is_written_without_keras_and_loads(tmp_path):
    """``.weights.h5`` comes from h5py alone; Keras 3 loads it into the same layers."""
    from safetensors.torch import save_file

    torch.manual_seed(6)
    module = torch.nn.GRU(INPUT_SIZE, UNITS, num_layers=2, bidirectional=True,
                          batch_first=True)
    x = np.random.default_rng(9).normal(size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    source = tmp_path / "gru.safetensors"
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(source))
    out = tmp_path / "gru.weights.h5"
    result = convert(source, "keras", out)
    assert "Bidirectional(GRU(" in result.notes[0]

    def layer():
        return keras.layers.Bidirectional(
            keras.layers.GRU(UNITS, return_sequences=True, reset_after=True))

    model = keras.Sequential([keras.Input((SEQ_LEN, INPUT_SIZE)), layer(), layer()])
    model.load_weights(str(out))
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=0, atol=ATOL)
