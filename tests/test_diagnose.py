"""diagnose names the convention behind outputs made by the real frameworks.

Each case takes weights as a user holds them, outputs computed by the real framework (or
by the naive replica, run by the real framework with the naive weights), and checks that
the best reading is the framework's convention, for the traps of CONVENTIONS section 9.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require, tf1_rnn_cell_module

tf = require("tensorflow", "TensorFlow (tf_keras, TF1 cells) is the oracle for diagnose")
tf_keras = require("tf_keras", "tf_keras is the oracle for Keras 2 conventions")

from rnnparity.cli.main import main  # noqa: E402
from rnnparity.diagnose import diagnose  # noqa: E402

pytestmark = [
    pytest.mark.keras,
    # The TF1 cell classes warn that they are deprecated, attributing it to the caller.
    pytest.mark.filterwarnings("ignore:`tf.nn.rnn_cell:UserWarning"),
]

B, T = 3, 5


def _rand(rng, *shape, scale=0.6):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def _keras2_layer(layer, x, weights):
    layer.build((None, x.shape[1], x.shape[2]))
    layer.set_weights(weights)
    return np.asarray(layer(x))


def _cudnn_case(rng, kind, n, u):
    """CuDNN-layout weights and the output of Keras' own h5 converter + Keras layer."""
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    G = 4 if kind == "lstm" else 3
    cudnn = [_rand(rng, n, G * u), _rand(rng, u, G * u), _rand(rng, 2 * G * u, scale=0.3)]
    x = _rand(rng, B, T, n, scale=1.0)
    if kind == "lstm":
        layer = tf_keras.layers.LSTM(u, return_sequences=True)
    else:
        layer = tf_keras.layers.GRU(u, return_sequences=True, reset_after=True)
    layer.build((None, T, n))
    converted = preprocess_weights_for_loading(layer, cudnn)
    layer.set_weights(converted)
    return cudnn, x, np.asarray(layer(x)), layer


def test_cudnn_lstm_framework_output_names_cudnn_layout(rng):
    """Motivating case, framework side: 1 input, 2 units, Keras' converter output."""
    weights, x, y, _ = _cudnn_case(rng, "lstm", 1, 2)
    result = diagnose(weights, x, y, framework="keras")
    best = result.best
    assert result.fits and best.error < 1e-5
    assert best.value("recurrent") == "transposed"
    assert best.value("bias") == "halves"
    assert any("CuDNNLSTM" in m for m in best.matches)
    assert any("recurrent weights" in d for d in result.differences(best))

    as_cudnn = diagnose(weights, x, y, framework="cudnn")
    assert as_cudnn.best.cost == 0
    assert "it is the labelled convention" in "\n".join(as_cudnn.explain())
    assert as_cudnn.seconds < 10


def test_cudnn_lstm_naive_replica_names_plain_keras_layout(rng):
    """Motivating case, replica side: x@K + h@R + b[:4u] + b[4u:], gates i f c o."""
    weights, x, _, layer = _cudnn_case(rng, "lstm", 1, 2)
    kernel, recurrent, bias = weights
    layer.set_weights([kernel, recurrent, bias[:8] + bias[8:]])
    y_naive = np.asarray(layer(x))
    result = diagnose(weights, x, y_naive, framework="cudnn")
    best = result.best
    assert result.fits
    assert best.value("recurrent") == "plain"
    assert any("naive CuDNNLSTM replica" in m for m in best.matches)
    # The labelled cuDNN reading agrees at step 0 (h0 = 0) and departs at step 1.
    assert result.labelled is not None and result.labelled.error > 1e-3
    assert result.labelled.first_departure["step"] == 1


def test_cudnn_lstm_input_scramble_when_both_sizes_exceed_one(rng):
    weights, x, y, _ = _cudnn_case(rng, "lstm", 3, 2)
    best = diagnose(weights, x, y, framework="keras").best
    assert best.error < 1e-5
    assert best.value("input") == "cudnn"
    assert best.value("recurrent") == "transposed"


def test_cudnn_gru_layout(rng):
    weights, x, y, _ = _cudnn_case(rng, "gru", 3, 2)
    result = diagnose(weights, x, y)
    best = result.best
    assert result.label == "cudnn" and result.kind == "gru"
    assert best.error < 1e-5 and best.cost == 0
    assert (best.value("input"), best.value("recurrent"), best.value("reset")) == (
        "cudnn", "transposed", "after")


@pytest.fixture(scope="module")
def keras2_lstm_hard_sigmoid():
    rng = np.random.default_rng(7)
    n, u = 3, 4
    weights = [_rand(rng, n, 4 * u), _rand(rng, u, 4 * u), _rand(rng, 4 * u, scale=0.3)]
    x = _rand(rng, B, T, n, scale=1.5)
    layer = tf_keras.layers.LSTM(u, return_sequences=True, recurrent_activation="hard_sigmoid")
    return weights, x, _keras2_layer(layer, x, weights)


def test_hard_sigmoid_of_keras2(keras2_lstm_hard_sigmoid):
    weights, x, y = keras2_lstm_hard_sigmoid
    result = diagnose(weights, x, y, framework="keras")
    assert result.best.value("gate_activation") == "hard_sigmoid_keras2"
    assert any("0.2x" in d for d in result.differences(result.best))


def test_hard_sigmoid_of_keras3(rng):
    keras = require("keras", "Keras 3 is the oracle for its hard_sigmoid")
    n, u = 2, 3
    weights = [_rand(rng, n, 4 * u), _rand(rng, u, 4 * u), _rand(rng, 4 * u, scale=0.3)]
    x = _rand(rng, B, T, n, scale=1.5)
    layer = keras.layers.LSTM(u, return_sequences=True, recurrent_activation="hard_sigmoid")
    layer.build((None, T, n))
    layer.set_weights(weights)
    y = np.asarray(layer(x))
    best = diagnose(weights, x, y, framework="keras").best
    assert best.error < 1e-5
    assert best.value("gate_activation") == "hard_sigmoid_keras3"


@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_reset_placement_and_bias_rows(rng, reset_after):
    n, u = 3, 2
    bias_shape = (2, 3 * u) if reset_after else (3 * u,)
    weights = [_rand(rng, n, 3 * u), _rand(rng, u, 3 * u), _rand(rng, *bias_shape, scale=0.5)]
    x = _rand(rng, B, T, n, scale=1.0)
    layer = tf_keras.layers.GRU(u, return_sequences=True, reset_after=reset_after)
    y = _keras2_layer(layer, x, weights)
    # Labelled as PyTorch: the gate order (trap 7) and, for reset_after=False, the reset
    # placement (trap 5) must be named as differences.
    result = diagnose(weights, x, y, framework="torch")
    best = result.best
    assert best.error < 1e-5
    assert best.value("order") == "zrn"
    assert best.value("reset") == ("after" if reset_after else "before")
    assert best.value("bias") == ("halves" if reset_after else "single")  # trap 6
    diffs = "\n".join(result.differences(best))
    assert "gate order" in diffs
    assert ("GRU reset" in diffs) is (not reset_after)


def _onnx_model(op, W, R, Bias, **attrs):
    onnx = require("onnx", "onnx builds the oracle model")
    from onnx import TensorProto, helper, numpy_helper

    hidden = R.shape[-1]
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y"], hidden_size=hidden, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, None])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [T, 1, B, hidden])],
        [numpy_helper.from_array(a, name) for a, name in ((W, "W"), (R, "R"), (Bias, "B"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _ort_run(model_bytes, x_time_major):
    ort = require("onnxruntime", "onnxruntime is the ONNX oracle")
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x_time_major})[0][:, 0]  # (T, B, H)


@pytest.mark.onnx
@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_onnx_gru_linear_before_reset(rng, linear_before_reset):
    n, u = 3, 2
    W, R, Bias = _rand(rng, 1, 3 * u, n), _rand(rng, 1, 3 * u, u), _rand(rng, 1, 6 * u)
    x = _rand(rng, T, B, n, scale=1.0)
    y = _ort_run(_onnx_model("GRU", W, R, Bias, linear_before_reset=linear_before_reset), x)
    result = diagnose({"W": W, "R": R, "B": Bias}, x, y)
    assert result.label == "onnx"
    best = result.best
    assert best.error < 1e-5 and best.value("layout") == "time_major"
    assert best.value("reset") == ("after" if linear_before_reset else "before")
    assert best.value("order") == "zrn"


@pytest.mark.onnx
def test_onnx_lstm_gate_order_labelled_torch(rng):
    n, u = 3, 2
    W, R, Bias = _rand(rng, 1, 4 * u, n), _rand(rng, 1, 4 * u, u), _rand(rng, 1, 8 * u)
    x = _rand(rng, T, B, n, scale=1.0)
    y = _ort_run(_onnx_model("LSTM", W, R, Bias), x)
    result = diagnose({"weight_ih_l0": W[0], "weight_hh_l0": R[0],
                       "bias_ih_l0": Bias[0, :4 * u], "bias_hh_l0": Bias[0, 4 * u:]}, x, y)
    assert result.label == "torch"
    assert result.best.error < 1e-5
    assert result.best.value("order") == "iofg"
    assert any("gate order" in d for d in result.differences(result.best))


def _tf1_run(make_cell, x, rng):
    """Run a TF1 cell with dynamic_rnn in graph mode on random variables."""
    graph = tf.Graph()
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, x.shape)
        outputs, state = tf.compat.v1.nn.dynamic_rnn(make_cell(), inputs, dtype=tf.float32)
        variables = tf.compat.v1.global_variables()
        with tf.compat.v1.Session(graph=graph) as sess:
            values = [_rand(rng, *v.shape.as_list(), scale=0.6) for v in variables]
            sess.run([v.assign(a) for v, a in zip(variables, values)])
            out, st = sess.run([outputs, state], {inputs: x})
    named = [(v.name.split(":")[0], a) for v, a in zip(variables, values)]
    return named, out, st


@pytest.mark.parametrize("forget_bias", [1.0, 0.0])
def test_tf1_lstm_gate_order_and_forget_bias(rng, forget_bias):
    n, u = 3, 2
    x = _rand(rng, B, T, n, scale=1.0)
    arrays, y, _ = _tf1_run(
        lambda: tf1_rnn_cell_module(tf).LSTMCell(u, forget_bias=forget_bias), x, rng)
    result = diagnose(arrays, x, y, framework="keras")
    best = result.best
    assert best.error < 1e-5
    assert best.value("order") == "igfo"
    assert best.value("forget_bias") == ("1" if forget_bias else "0")
    assert "one kernel" in best.choices["arrays"].words


def test_tf1_lstm_state_is_c_first(rng):
    n, u = 2, 3
    x = _rand(rng, B, T, n, scale=1.0)
    arrays, _, state = _tf1_run(lambda: tf1_rnn_cell_module(tf).LSTMCell(u), x, rng)
    c_final = state[0]
    result = diagnose(arrays, x, c_final, framework="tf1")
    assert result.mode == "last"
    assert result.best.error < 1e-5 and result.best.value("output") == "c"


def test_tf1_gru_cell(rng):
    n, u = 3, 2
    x = _rand(rng, B, T, n, scale=1.0)
    arrays, y, _ = _tf1_run(lambda: tf1_rnn_cell_module(tf).GRUCell(u), x, rng)
    result = diagnose(arrays, x, y)
    assert result.label == "tf1" and result.kind == "gru"
    assert result.best.error < 1e-5 and result.best.cost == 0
    assert result.best.value("reset") == "before"


def test_h5_alphabetical_order(tmp_path, rng):
    h5py = require("h5py", "h5py reads the Keras file")
    n, u = 3, 2
    layer = tf_keras.layers.LSTM(u, return_sequences=True, name="lstm")
    model = tf_keras.Sequential([tf_keras.Input((T, n)), layer])
    layer.set_weights([_rand(rng, n, 4 * u), _rand(rng, u, 4 * u), _rand(rng, 4 * u)])
    path = tmp_path / "w.h5"
    model.save_weights(str(path))
    x = _rand(rng, B, T, n, scale=1.0)
    y = np.asarray(model(x))
    arrays = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: arrays.append(np.asarray(obj))
                     if isinstance(obj, h5py.Dataset) else None)
    result = diagnose(arrays, x, y, framework="keras")
    best = result.best
    assert best.error < 1e-5
    assert best.value("arrays") == "reordered"
    assert "bias 'arr_0'" in best.choices["arrays"].words
    assert any("arrays" in d for d in result.differences(best))


def test_keras1_per_gate_arrays_in_file_order(keras2_lstm_hard_sigmoid):
    weights, x, y = keras2_lstm_hard_sigmoid
    kernel, recurrent, bias = weights
    u = recurrent.shape[0]
    gate = {g: slice(k * u, (k + 1) * u) for k, g in enumerate("ifco")}
    files = [a for g in "icfo" for a in (kernel[:, gate[g]], recurrent[:, gate[g]],
                                         bias[gate[g]])]
    result = diagnose(files, x, y)
    assert result.label == "keras1" and result.best.cost == 0 and result.fits
    # Concatenated in file order and labelled as Keras 2: the order is the difference.
    joined = [np.concatenate(files[0::3], 1), np.concatenate(files[1::3], 1),
              np.concatenate(files[2::3])]
    result = diagnose(joined, x, y, framework="keras")
    assert result.best.value("order") == "igfo"


def test_unit_forget_bias_is_not_added_at_run_time(rng):
    n, u = 3, 2
    layer = tf_keras.layers.LSTM(u, return_sequences=True, unit_forget_bias=True)
    layer.build((None, T, n))
    kernel, recurrent, bias = layer.get_weights()
    weights = [_rand(rng, n, 4 * u), _rand(rng, u, 4 * u), bias]  # bias[u:2u] == 1
    x = _rand(rng, B, T, n, scale=1.0)
    y = _keras2_layer(layer, x, weights)
    result = diagnose(weights, x, y, framework="keras")
    assert result.best.value("forget_bias") == "0" and result.best.cost == 0


def test_go_backwards_and_last_output(rng):
    n, u = 3, 2
    weights = [_rand(rng, n, 4 * u), _rand(rng, u, 4 * u), _rand(rng, 4 * u)]
    x = _rand(rng, B, T, n, scale=1.0)
    y = _keras2_layer(tf_keras.layers.LSTM(u, return_sequences=True, go_backwards=True), x,
                      weights)
    assert diagnose(weights, x, y).best.value("direction") == "go_backwards"
    last = _keras2_layer(tf_keras.layers.LSTM(u), x, weights)
    result = diagnose(weights, x, last)
    assert result.mode == "last" and result.best.cost == 0 and result.fits


@pytest.mark.torch
def test_torch_gru_time_major_labelled_keras(rng):
    torch = require("torch", "PyTorch is the oracle for its GRU")
    n, u = 3, 2
    torch.manual_seed(0)
    gru = torch.nn.GRU(n, u)
    x = _rand(rng, T, B, n, scale=1.0)
    with torch.no_grad():
        y = gru(torch.from_numpy(x))[0].numpy()
    state = {k: v.detach().numpy() for k, v in gru.state_dict().items()}
    result = diagnose(state, x, y, framework="keras")
    best = result.best
    assert best.error < 1e-5
    assert (best.value("order"), best.value("layout"), best.value("bias")) == (
        "rzn", "time_major", "pair")
    assert any("PyTorch GRU" in m for m in best.matches)


def test_nothing_fits_reports_first_departure(tmp_path, rng, capsys):
    n, u = 3, 2
    weights = [_rand(rng, n, 4 * u), _rand(rng, u, 4 * u), _rand(rng, 4 * u)]
    x = _rand(rng, B, T, n, scale=1.0)
    y = _keras2_layer(tf_keras.layers.LSTM(u, return_sequences=True), x, weights).copy()
    y[:, 3:] += 0.05  # a replica that breaks from step 3 on
    result = diagnose(weights, x, y, framework="keras")
    assert not result.fits
    assert result.best.first_departure["step"] == 3
    assert "nothing fits" in "\n".join(result.explain())

    np.savez(tmp_path / "w.npz", *weights)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    args = ["diagnose", "--weights", str(tmp_path / "w.npz"), "--input",
            str(tmp_path / "x.npy"), "--expected", str(tmp_path / "y.npy"), "--json"]
    capsys.readouterr()
    assert main(args) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["command"] == "diagnose" and body["exit_code"] == 1
    assert body["result"]["fits"] is False
    assert body["result"]["candidates"][0]["first_departure"]["step"] == 3


def test_cli_text_and_exit_zero(tmp_path, rng, capsys):
    weights, x, y, _ = _cudnn_case(rng, "lstm", 1, 2)
    np.savez(tmp_path / "w.npz", *weights)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    capsys.readouterr()
    code = main(["diagnose", "--weights", str(tmp_path / "w.npz"), "--input",
                 str(tmp_path / "x.npy"), "--expected", str(tmp_path / "y.npy")])
    out = capsys.readouterr().out
    assert code == 0
    assert "best fit" in out and "CuDNNLSTM" in out


def test_gru_bias_row_added_on_the_input_side(rng):
    """Trap 6 from the replica's side: row 1 (recurrent bias) added to the input bias."""
    n, u = 3, 2
    kernel, recurrent = _rand(rng, n, 3 * u), _rand(rng, u, 3 * u)
    bias = _rand(rng, 2, 3 * u, scale=0.8)
    x = _rand(rng, B, T, n, scale=1.0)
    layer = tf_keras.layers.GRU(u, return_sequences=True, reset_after=True)
    # The replica's math, run by Keras itself: both rows on the input side.
    merged = np.stack([bias[0] + bias[1], np.zeros(3 * u, np.float32)])
    y_replica = _keras2_layer(layer, x, [kernel, recurrent, merged])
    result = diagnose([kernel, recurrent, bias], x, y_replica, framework="keras")
    assert result.best.error < 1e-5
    assert result.best.value("bias") == "halves_summed"
    assert result.labelled is not None and result.labelled.error > 1e-3


def test_safetensors_state_dict_is_read_in_the_module_order(tmp_path, capsys):
    torch = require("torch", "PyTorch makes the state_dict and the replica's reference")
    require("safetensors", "safetensors writes the state_dict")
    from safetensors.torch import save_file

    from rnnparity.diagnose import read_weight_arrays

    torch.manual_seed(5)
    module = torch.nn.LSTM(3, 4, batch_first=True)
    save_file(module.state_dict(), tmp_path / "w.safetensors")
    names = [name for name, _ in read_weight_arrays(tmp_path / "w.safetensors")]
    assert names == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]

    # A replica that forgot bias_hh: torch itself computes it once bias_hh is zeroed.
    x = np.random.default_rng(5).normal(size=(2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        module.bias_hh_l0.zero_()
        y = module(torch.from_numpy(x))[0].numpy()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    code = main(["diagnose", "--weights", str(tmp_path / "w.safetensors"), "--input",
                 str(tmp_path / "x.npy"), "--expected", str(tmp_path / "y.npy"),
                 "--framework", "torch", "--json"])
    body = json.loads(capsys.readouterr().out)
    assert code == 0
    assert "only the first bias array used" in json.dumps(body["result"])
