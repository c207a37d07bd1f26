"""``rnnparity verify`` through the CLI: exit codes, JSON schema, plot file, mismatches."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from conftest import require

from rnnparity.cli.main import main
from rnnparity.tolerances import ATOL

BATCH, SEQ_LEN, INPUT_SIZE, UNITS = 3, 6, 4, 5


def _run_json(capsys, args: list[str]) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(args + ["--json"])
    return code, json.loads(capsys.readouterr().out)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    torch = require("torch", "PyTorch is the oracle for state_dicts")
    require("safetensors", "safetensors writes the state_dict")
    from safetensors.torch import save_file

    torch.manual_seed(3)
    module = torch.nn.GRU(INPUT_SIZE, UNITS, num_layers=2, bidirectional=True,
                          batch_first=True)
    with torch.no_grad():
        for p in module.parameters():
            p.uniform_(-0.6, 0.6)
    folder = tmp_path_factory.mktemp("verify_torch")
    path = folder / "gru.safetensors"
    save_file({f"rnn.{k}": v.contiguous() for k, v in module.state_dict().items()}, str(path))
    x = np.random.default_rng(5).normal(size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32)
    np.save(folder / "x.npy", x)
    with torch.no_grad():
        y, h_n = module(torch.from_numpy(x))
    return path, folder / "x.npy", y.numpy(), h_n.numpy()


@pytest.mark.torch
def test_torch_state_dict_passes_with_json_schema(torch_file, capsys):
    path, x_path, _, _ = torch_file
    code, body = _run_json(capsys, ["verify", str(path), "--input", str(x_path)])
    assert code == 0
    assert set(body) == {"schema_version", "command", "exit_code", "result"}
    assert (body["schema_version"], body["command"], body["exit_code"]) == (1, "verify", 0)
    result = body["result"]
    assert result["ok"] is True and result["reference"].startswith("torch")
    assert result["max_abs_diff"] <= ATOL
    names = [o["name"] for o in result["outputs"]]
    assert names == ["output", "h_n"]
    output = result["outputs"][0]
    assert output["shape"] == [BATCH, SEQ_LEN, 2 * UNITS]
    assert len(output["max_abs_diff_per_step"]) == SEQ_LEN
    assert output["first_step_over_atol"] is None
    assert result["outputs"][1]["max_abs_diff_per_step"] is None  # h_n has no time axis


@pytest.mark.torch
def test_perturbed_expected_is_a_mismatch_at_that_step(torch_file, tmp_path, capsys):
    path, x_path, y, h_n = torch_file
    y = y.copy()
    y[1, 4, 2] += 10 * ATOL
    np.savez(tmp_path / "y.npz", output=y, h_n=h_n)
    code, body = _run_json(capsys, ["verify", str(path), "--input", str(x_path),
                                    "--expected", str(tmp_path / "y.npz")])
    assert code == 1 and body["exit_code"] == 1
    output = body["result"]["outputs"][0]
    assert output["first_step_over_atol"] == 4
    assert output["max_abs_diff"] > ATOL
    assert body["result"]["reference"] == "stored outputs (expected)"

    y[1, 4, 2] -= 10 * ATOL
    np.savez(tmp_path / "y.npz", output=y, h_n=h_n)
    code, _ = _run_json(capsys, ["verify", str(path), "--input", str(x_path),
                                 "--expected", str(tmp_path / "y.npz")])
    assert code == 0
    # A looser --atol accepts the perturbation.
    y[1, 4, 2] += 10 * ATOL
    np.savez(tmp_path / "y.npz", output=y, h_n=h_n)
    code, _ = _run_json(capsys, ["verify", str(path), "--input", str(x_path), "--expected",
                                 str(tmp_path / "y.npz"), "--atol", str(100 * ATOL)])
    assert code == 0


@pytest.mark.keras
def test_keras_h5_text_table_and_plot(tmp_path, capsys):
    require("tensorflow", "TensorFlow runs the tf_keras oracle")
    tf_keras = require("tf_keras", "tf_keras loads Keras 2 .h5 files")
    rng = np.random.default_rng(11)
    inputs = tf_keras.Input((SEQ_LEN, INPUT_SIZE))
    hidden = tf_keras.layers.LSTM(UNITS, return_sequences=True, name="enc")(inputs)
    outputs = tf_keras.layers.GRU(3, return_sequences=True, reset_after=False,
                                  name="dec")(hidden)
    model = tf_keras.Model(inputs, outputs)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    path = tmp_path / "model.h5"
    model.save(str(path))
    x = rng.normal(size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    plot = tmp_path / "parity.png"

    capsys.readouterr()
    code = main(["verify", str(path), "--input", str(tmp_path / "x.npy"), "--plot", str(plot)])
    out = capsys.readouterr().out
    assert code == 0
    assert "PASS" in out and "tf_keras" in out
    assert "step  max_abs_diff" in out
    assert out.count("\n     ") >= SEQ_LEN  # one table row per step
    assert plot.stat().st_size > 10_000
    width, height = _png_size(plot)
    assert 600 <= width <= 2000 and 400 <= height <= 2000


@pytest.mark.onnx
def test_onnx_model_against_onnxruntime(tmp_path, capsys):
    onnx = require("onnx", "onnx writes the model")
    require("onnxruntime", "onnxruntime is the ONNX oracle")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    arrays = {"W": rng.uniform(-0.5, 0.5, (1, 4 * UNITS, INPUT_SIZE)),
              "R": rng.uniform(-0.5, 0.5, (1, 4 * UNITS, UNITS)),
              "B": rng.uniform(-0.5, 0.5, (1, 8 * UNITS))}
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h"], hidden_size=UNITS)
    graph = helper.make_graph(
        [node], "lstm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [SEQ_LEN, BATCH, INPUT_SIZE])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [SEQ_LEN, 1, BATCH, UNITS]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, BATCH, UNITS])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    path = tmp_path / "lstm.onnx"
    onnx.save(model, str(path))
    np.save(tmp_path / "x.npy", rng.normal(size=(SEQ_LEN, BATCH, INPUT_SIZE)).astype(np.float32))
    code, body = _run_json(capsys, ["verify", str(path), "--input", str(tmp_path / "x.npy")])
    assert code == 0
    result = body["result"]
    assert result["reference"].startswith("onnxruntime")
    y = result["outputs"][0]
    assert y["name"] == "Y" and y["time_axis"] == 0
    assert len(y["max_abs_diff_per_step"]) == SEQ_LEN


def test_bad_input_reports_json_error(tmp_path, capsys):
    path = tmp_path / "missing.safetensors"
    code, body = _run_json(capsys, ["verify", str(path), "--input", str(tmp_path / "x.npy")])
    assert code == 5
    assert body["exit_code"] == 5 and body["error"]["type"] in ("FormatError", "InputError")


def test_help_has_examples(capsys):
    assert main(["verify", "--help"]) == 0
    text = capsys.readouterr().out
    assert "$ rnnparity verify" in text and "--plot" in text


@pytest.mark.torch
def test_long_runs_in_batch_chunks_give_the_same_report(torch_file, monkeypatch):
    import rnnparity.verify as verify_module

    path, x_path, y, h_n = torch_file
    x = np.load(x_path)
    whole = verify_module.verify(path, x)
    monkeypatch.setattr(verify_module, "LONG_RUN", 1)
    chunked = verify_module.verify(path, x, progress=True)
    assert chunked.ok and whole.ok
    for name in ("output", "h_n"):
        np.testing.assert_array_equal(chunked.ours[name], whole.ours[name])
        np.testing.assert_allclose(chunked.theirs[name], whole.theirs[name], rtol=0,
                                   atol=1e-6)
    assert chunked.ours["h_n"].shape == h_n.shape


@pytest.mark.torch
def test_missing_framework_asks_for_expected(torch_file, monkeypatch, capsys):
    import rnnparity.verify as verify_module
    from rnnparity.errors import MissingFrameworkError

    real = verify_module.import_optional

    def without_torch(name):
        if name == "torch":
            raise MissingFrameworkError("torch is needed but is not installed")
        return real(name)

    monkeypatch.setattr(verify_module, "import_optional", without_torch)
    path, x_path, _, _ = torch_file
    code, body = _run_json(capsys, ["verify", str(path), "--input", str(x_path)])
    assert code == 4
    assert body["error"]["type"] == "MissingFrameworkError"
    assert "--expected" in body["error"]["message"]


@pytest.mark.keras
def test_keras3_file(tmp_path, capsys):
    require("tensorflow", "TensorFlow is Keras 3's backend here")
    keras = require("keras", "Keras 3 loads .keras files")
    rng = np.random.default_rng(4)
    model = keras.Sequential([keras.Input((SEQ_LEN, INPUT_SIZE)),
                              keras.layers.GRU(UNITS, return_sequences=True)])
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    path = tmp_path / "gru.keras"
    model.save(str(path))
    np.save(tmp_path / "x.npy", rng.normal(size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32))
    code, body = _run_json(capsys, ["verify", str(path), "--input", str(tmp_path / "x.npy")])
    assert code == 0
    assert body["result"]["reference"].startswith("keras 3")
    assert body["result"]["outputs"][0]["shape"] == [BATCH, SEQ_LEN, UNITS]


@pytest.mark.torch
def test_root_state_dict_in_a_pt_file(tmp_path, capsys):
    torch = require("torch", "PyTorch is the oracle for state_dicts")
    torch.manual_seed(9)
    module = torch.nn.LSTM(INPUT_SIZE, UNITS, batch_first=True)
    torch.save(module.state_dict(), str(tmp_path / "lstm.pt"))
    np.save(tmp_path / "x.npy", np.random.default_rng(1).normal(
        size=(BATCH, SEQ_LEN, INPUT_SIZE)).astype(np.float32))
    code, body = _run_json(capsys, ["verify", str(tmp_path / "lstm.pt"), "--input",
                                    str(tmp_path / "x.npy")])
    assert code == 0
    assert [o["name"] for o in body["result"]["outputs"]] == ["output", "h_n", "c_n"]


@pytest.mark.parametrize("example", ["cudnn_lstm_1x2", "cudnn_gru_3x4"])
def test_cudnn_file_verifies_on_a_cpu_through_keras_own_conversion(example, capsys):
    require("tf_keras", "tf_keras is the reference for Keras 2 files")
    tf = require("tensorflow", "TensorFlow runs the reference")
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present: the real cuDNN kernel is the reference there")
    import rnnparity

    model = str(rnnparity.example_path(f"{example}.h5"))
    x = str(rnnparity.example_path(f"{example}.input.npy"))
    code, body = _run_json(capsys, ["verify", model, "--input", x])
    assert code == 0, body
    assert any("no GPU" in note for note in body["result"]["notes"])
    assert body["result"]["ok"] and body["result"]["max_abs_diff"] <= ATOL


def test_onnx_node_of_a_torch_export_against_onnxruntime(tmp_path, capsys):
    torch = require("torch", "PyTorch exports the ONNX model")
    require("onnx", "onnx reads the model")
    require("onnxruntime", "onnxruntime is the ONNX oracle")
    import warnings

    torch.manual_seed(2)
    module = torch.nn.LSTM(INPUT_SIZE, UNITS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(SEQ_LEN, BATCH, INPUT_SIZE),),
                          str(tmp_path / "lstm.onnx"), dynamo=False)
    x = np.random.default_rng(2).normal(size=(SEQ_LEN, BATCH, INPUT_SIZE))
    np.savez(tmp_path / "in.npz", X=x.astype(np.float32))
    code, body = _run_json(capsys, ["verify", str(tmp_path / "lstm.onnx"), "--node", "/LSTM",
                                    "--input", str(tmp_path / "in.npz")])
    assert code == 0, body
    assert body["result"]["reference"].startswith("onnxruntime")
    assert {o["name"] for o in body["result"]["outputs"]} >= {"Y", "Y_h", "Y_c"}
    assert body["result"]["max_abs_diff"] <= ATOL
