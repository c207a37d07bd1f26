"""Streaming in every framework: chunks of any size give the whole-sequence result.

A :class:`rnnparity.Stream` fed a sequence in pieces (hypothesis-drawn splits, steps of
one included) must return, piece by piece, what the real framework returns for the whole
sequence, and hold after every piece the states the framework has after that prefix, in
the framework's own layout. Layers that need the whole sequence must refuse to stream.
The frameworks are oracles: Keras 2 (tf_keras) and Keras 3 models saved to files, torch
modules and cells, onnxruntime sessions.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnparity
from rnnparity.cli.main import main
from rnnparity.errors import InputError, ShapeError, UnsupportedFeatureError
from rnnparity.tolerances import ATOL

# Chunked and whole runs do the same float operations in the same order.
STREAM_ATOL = 1e-6
SEQ_LEN = 9
KERAS_BACKENDS = ["tf_keras", "keras"]


@st.composite
def splits(draw, seq_len: int = SEQ_LEN) -> list[tuple[int, int]]:
    """(start, stop) pieces covering range(seq_len): any sizes, ones and uneven included."""
    cuts = draw(st.sets(st.integers(1, seq_len - 1)))
    bounds = [0, *sorted(cuts), seq_len]
    return list(zip(bounds[:-1], bounds[1:]))


def as_dict(model, out) -> dict[str, np.ndarray]:
    return out if isinstance(out, dict) else {model.outputs[0]: out}


def feed_pieces(model, stream, feeds, pieces, on_piece=None) -> dict[str, np.ndarray]:
    """Feed ``feeds`` (time axis 1) piece by piece, one-step pieces through ``step``."""
    probe = as_dict(model, model.stream(stream.batch_size).chunk(
        {k: v[:, :1] for k, v in feeds.items()}))
    sequence = {k: model.has_time_axis(k, v) for k, v in probe.items()}
    parts: dict[str, list[np.ndarray]] = {}
    for start, stop in pieces:
        if stop - start == 1:
            out = as_dict(model, stream.step({k: v[:, start] for k, v in feeds.items()}))
            out = {k: np.expand_dims(v, model.time_axis(k)) if sequence[k] else v
                   for k, v in out.items()}
        else:
            out = as_dict(model, stream.chunk({k: v[:, start:stop] for k, v in feeds.items()}))
        if on_piece is not None:
            on_piece(stop, out)
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
    return {name: np.concatenate(v, axis=model.time_axis(name))
            if model.has_time_axis(name, v[0]) else v[-1] for name, v in parts.items()}


def assert_close(got, expected, atol=ATOL, what=""):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} != {expected.shape}"
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    assert diff <= atol, f"{what}: max abs diff {diff:.3g} > {atol}"


# --------------------------------------------------------------------------------- Keras

def _randomize(model, rng) -> None:
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(w.dtype)
                               for w in weights])


def _keras_models(K, rng) -> dict:
    L = K.layers
    inp = K.Input((None, 3))
    seq = L.Dense(2)(L.SimpleRNN(3, return_sequences=True)(
        L.GRU(4, return_sequences=True, reset_after=False)(
            L.LSTM(5, return_sequences=True)(L.Masking()(inp)))))
    ids = K.Input((None,), dtype="int32")
    last = L.Dense(3, activation="tanh")(L.LSTM(5)(L.GRU(4, return_sequences=True)(
        L.Embedding(11, 3, mask_zero=True)(ids))))
    states_in = K.Input((None, 3))
    y, h, c = L.LSTM(4, return_sequences=True, return_state=True)(states_in)
    models = {"masked_stack": K.Model(inp, seq), "embedding_last": K.Model(ids, last),
              "lstm_states": K.Model(states_in, [y, h, c])}
    for model in models.values():
        _randomize(model, rng)
    return models


def _keras_inputs(rng) -> dict[str, np.ndarray]:
    x = rng.normal(size=(4, SEQ_LEN, 3)).astype(np.float32)
    x[0, 3:5] = 0  # a masked gap in the middle
    x[1, 6:] = 0  # right padding
    x[2, :2] = 0  # left padding
    x[3] = 0  # a fully masked row (Keras allows it)
    ids = rng.integers(1, 11, size=(3, SEQ_LEN)).astype(np.int32)
    ids[0, 5:] = 0
    ids[1, :3] = 0
    ids[2, 4] = 0
    return {"masked_stack": x, "embedding_last": ids,
            "lstm_states": rng.normal(size=(2, SEQ_LEN, 3)).astype(np.float32)}


@pytest.fixture(scope="module", params=KERAS_BACKENDS)
def keras_case(request, tmp_path_factory):
    """Per backend: models saved to files, loaded by rnnparity, and Keras' outputs for
    every prefix of the inputs (what a stream must hold after each piece)."""
    require("tensorflow", "TensorFlow is the oracle for Keras streaming")
    K = require(request.param, f"{request.param} is the oracle for Keras streaming")
    rng = np.random.default_rng(7)
    folder = tmp_path_factory.mktemp(request.param)
    suffix = ".h5" if request.param == "tf_keras" else ".keras"
    inputs = _keras_inputs(rng)
    case = {}
    for name, model in _keras_models(K, rng).items():
        path = folder / f"{name}{suffix}"
        model.save(str(path))
        x = inputs[name]
        prefixes = {t: [np.asarray(o) for o in _as_list(model(x[:, :t], training=False))]
                    for t in range(1, SEQ_LEN + 1)}
        case[name] = (rnnparity.load(path), x, prefixes)
    return request.param, case


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@pytest.mark.keras
@pytest.mark.parametrize("name", ["masked_stack", "embedding_last", "lstm_states"])
@settings(max_examples=8, deadline=None)
@given(pieces=splits())
def test_keras_model_in_pieces_equals_keras_on_every_prefix(keras_case, name, pieces):
    backend, case = keras_case
    model, x, prefixes = case[name]
    whole = as_dict(model, model(x))
    final = prefixes[SEQ_LEN]
    for out_name, expected in zip(model.outputs, final):
        assert_close(whole[out_name], expected, what=f"{backend} {name} {out_name} whole")

    stream = model.stream(batch_size=x.shape[0])
    recurrent = [layer.name for layer in model.layers if hasattr(layer, "spec")]

    def check_prefix(stop, out):
        expected = prefixes[stop]
        if name == "embedding_last":  # return_sequences=False: the last output so far
            assert_close(out[model.outputs[0]], expected[0], what=f"{backend} prefix {stop}")
        if name == "lstm_states":  # Keras [h, c] after the prefix
            h, c = stream.states[recurrent[0]]
            assert_close(h, expected[1], what=f"{backend} h after {stop}")
            assert_close(c, expected[2], what=f"{backend} c after {stop}")

    joined = feed_pieces(model, stream, {model.inputs[0]: x}, pieces, check_prefix)
    for out_name, expected in zip(model.outputs, final):
        assert_close(joined[out_name], whole[out_name], STREAM_ATOL,
                     f"{backend} {name} {out_name} chunked vs whole")
        assert_close(joined[out_name], expected, what=f"{backend} {name} {out_name} vs Keras")


@pytest.mark.keras
@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_keras_stateful_layer_carries_state_across_calls_like_keras(backend, tmp_path):
    require("tensorflow", "TensorFlow is the oracle for Keras stateful layers")
    K = require(backend, f"{backend} is the oracle for Keras stateful layers")
    rng = np.random.default_rng(3)
    inp = K.Input(batch_shape=(2, None, 3))
    out = K.layers.GRU(4, stateful=True, return_sequences=True)(
        K.layers.LSTM(5, stateful=True, return_sequences=True)(K.layers.Masking()(inp)))
    keras_model = K.Model(inp, out)
    _randomize(keras_model, rng)
    path = tmp_path / ("stateful.h5" if backend == "tf_keras" else "stateful.keras")
    keras_model.save(str(path))
    ours = rnnparity.load(path)

    first = rng.normal(size=(2, 4, 3)).astype(np.float32)
    second = rng.normal(size=(2, 5, 3)).astype(np.float32)
    second[0, :2] = 0  # leading masked steps in the second call: Keras emits zeros there
    second[1, 3:] = 0
    expected = [np.asarray(keras_model(first)), np.asarray(keras_model(second))]
    got = [ours(first), ours(second)]
    for e, g, call in zip(expected, got, ("first", "second")):
        assert_close(g, e, what=f"{backend} stateful {call} call")
    assert float(np.abs(got[1][0, :2]).max()) == 0.0

    for layer in keras_model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()
    ours.reset_states()
    assert_close(ours(second), np.asarray(keras_model(second)), what=f"{backend} after reset")

    # A stream over first+second carries the previous OUTPUT too (one long sequence), so
    # unlike two stateful calls it repeats the last output at the leading masked steps.
    stream = ours.stream(batch_size=2)
    stream.chunk(first)
    streamed = stream.chunk(second)
    whole = ours.stream(batch_size=2).chunk(np.concatenate([first, second], axis=1))
    assert_close(streamed, whole[:, 4:], STREAM_ATOL, f"{backend} stream across the calls")
    assert_close(streamed[1], got[1][1], what="unmasked start: same as stateful calls")


@pytest.mark.keras
@pytest.mark.parametrize("backend", KERAS_BACKENDS)
def test_keras_layers_that_need_the_whole_sequence_refuse_to_stream(backend):
    require("tensorflow", "TensorFlow builds the Keras layers")
    K = require(backend, f"{backend} builds the layers")
    bidirectional = K.layers.Bidirectional(K.layers.LSTM(3, return_sequences=True))
    bidirectional.build((2, 5, 4))
    backwards = K.layers.GRU(3, go_backwards=True)
    backwards.build((2, 5, 4))
    for layer, why in ((bidirectional, "cannot stream"), (backwards, "cannot stream")):
        model = rnnparity.from_keras(layer)
        with pytest.raises(UnsupportedFeatureError, match=why):
            model.stream(batch_size=2)
        assert model(np.ones((2, 5, 4), np.float32)).shape[0] == 2  # whole runs still work


@pytest.mark.keras
def test_keras_flatten_over_time_refuses_to_stream(tmp_path):
    require("tensorflow", "TensorFlow builds the Keras model")
    K = require("tf_keras", "tf_keras builds the model")
    inp = K.Input((6, 3))
    out = K.layers.Dense(2)(K.layers.Flatten()(K.layers.LSTM(4, return_sequences=True)(inp)))
    path = tmp_path / "flatten.h5"
    K.Model(inp, out).save(str(path))
    model = rnnparity.load(path)
    x = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    assert model(x).shape == (2, 2)
    with pytest.raises(UnsupportedFeatureError, match="flattens the time axis"):
        model.stream(batch_size=2).feed(x, chunk_size=2)


# --------------------------------------------------------------------------------- torch

@pytest.fixture(scope="module")
def torch():
    return require("torch", "PyTorch is the oracle for torch streaming")


def _torch_module(torch, kind, seed=0, **options):
    torch.manual_seed(seed)
    module = getattr(torch.nn, kind)(4, 6, **options).eval()
    with torch.no_grad():
        for param in module.parameters():
            param.uniform_(-0.6, 0.6)
    return module


TORCH_MODULES = {
    "lstm_2_layers_proj": ("LSTM", dict(num_layers=2, proj_size=3, batch_first=True)),
    "gru_2_layers": ("GRU", dict(num_layers=2, batch_first=True)),
    "rnn_relu": ("RNN", dict(nonlinearity="relu", batch_first=True)),
}


@pytest.mark.torch
@pytest.mark.parametrize("key", sorted(TORCH_MODULES))
@settings(max_examples=8, deadline=None)
@given(pieces=splits(), seed=st.integers(0, 2**16))
def test_torch_module_in_pieces_equals_torch_on_every_prefix(torch, key, pieces, seed):
    kind, options = TORCH_MODULES[key]
    module = _torch_module(torch, kind, **options)
    model = rnnparity.from_torch(module)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, SEQ_LEN, 4)).astype(np.float32)
    states_shape = [(options.get("num_layers", 1), 2, options.get("proj_size") or 6)]
    if kind == "LSTM":
        states_shape.append((options["num_layers"], 2, 6))
    initial = [rng.normal(size=s).astype(np.float32) for s in states_shape]

    def torch_run(t):
        hx = tuple(map(torch.from_numpy, initial)) if kind == "LSTM" else \
            torch.from_numpy(initial[0])
        with torch.no_grad():
            y, state = module(torch.from_numpy(x[:, :t]), hx)
        return y.numpy(), [s.numpy() for s in (state if kind == "LSTM" else (state,))]

    stream = model.stream(batch_size=2)
    stream.set_state(model.layers[0].name, initial)  # (layers, batch, hidden), as torch

    def check_prefix(stop, out):
        _, states = torch_run(stop)
        for got, expected, label in zip(stream.states[model.layers[0].name], states,
                                         ("h_n", "c_n")):
            assert_close(got, expected, what=f"{key} {label} after {stop} steps")
            assert_close(out[label], expected, STREAM_ATOL, f"{key} {label} output")

    joined = feed_pieces(model, stream, {"input": x}, pieces, check_prefix)
    y, _ = torch_run(SEQ_LEN)
    assert_close(joined["output"], y, what=f"{key} output vs torch")
    whole = model(x, h0=initial[0], **({"c0": initial[1]} if kind == "LSTM" else {}))
    assert_close(joined["output"], whole["output"], STREAM_ATOL, f"{key} chunked vs whole")


@pytest.mark.torch
def test_torch_states_given_with_a_chunk_replace_the_carried_ones(torch):
    module = _torch_module(torch, "LSTM", num_layers=2, batch_first=True)
    model = rnnparity.from_torch(module)
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, SEQ_LEN, 4)).astype(np.float32)
    h0, c0 = (rng.normal(size=(2, 2, 6)).astype(np.float32) for _ in range(2))

    def torch_run(x_part):
        with torch.no_grad():
            y, (h, c) = module(torch.from_numpy(x_part),
                               (torch.from_numpy(h0), torch.from_numpy(c0)))
        return y.numpy(), h.numpy(), c.numpy()

    stream = model.stream(batch_size=2)
    first = stream.chunk(input=x[:, :3], h0=h0, c0=c0)
    rest = stream.chunk(x[:, 3:])
    y, h, c = torch_run(x)
    assert_close(np.concatenate([first["output"], rest["output"]], axis=1), y, what="y")
    assert_close(rest["c_n"], c, what="c_n after the stream")
    again = stream.chunk(input=x[:, 3:], h0=h0, c0=c0)  # mid-stream: a fresh start
    assert_close(again["output"], torch_run(x[:, 3:])[0], what="given states win")


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["LSTMCell", "GRUCell", "RNNCell"])
def test_torch_cell_stream_equals_the_cell_loop(torch, kind):
    module = _torch_module(torch, kind)
    model = rnnparity.from_torch(module)
    x = np.random.default_rng(5).normal(size=(3, SEQ_LEN, 4)).astype(np.float32)
    stream = model.stream(batch_size=3)
    state = None
    pieces = [(0, 1), (1, 4), (4, 5), (5, SEQ_LEN)]
    with torch.no_grad():
        hs = []
        for t in range(SEQ_LEN):
            state = module(torch.from_numpy(x[:, t]), state)
            hs.append((state[0] if kind == "LSTMCell" else state).numpy())
    joined = feed_pieces(model, stream, {"input": x}, pieces)
    assert_close(joined["h"], np.stack(hs, axis=1), what=f"{kind} h per step")
    assert_close(stream.states[model.layers[0].name][0], hs[-1], what=f"{kind} final h")
    if kind == "LSTMCell":
        assert_close(joined["c"], state[1].numpy(), what="LSTMCell final c")


@pytest.mark.torch
def test_torch_bidirectional_refuses_and_time_major_streams_or_refuses(torch):
    model = rnnparity.from_torch(_torch_module(torch, "LSTM", bidirectional=True,
                                               batch_first=True))
    with pytest.raises(UnsupportedFeatureError, match="cannot stream"):
        model.stream(batch_size=2)

    module = _torch_module(torch, "GRU")  # batch_first=False, torch's default
    model = rnnparity.from_torch(module)
    x = np.random.default_rng(2).normal(size=(SEQ_LEN, 2, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    try:
        stream = model.stream(batch_size=2)
        got = np.concatenate([stream.chunk(x[:4])["output"], stream.chunk(x[4:])["output"]])
    except UnsupportedFeatureError as err:  # a clear refusal is acceptable, a wrong answer not
        assert "batch_first" in str(err)
    else:
        assert_close(got, expected, what="time-major torch stream")


# ---------------------------------------------------------------------------------- ONNX

@pytest.fixture(scope="module")
def ort():
    require("onnx", "onnx writes the test models")
    return require("onnxruntime", "onnxruntime is the oracle for ONNX streaming")


def _onnx_file(path, op, direction="forward", layout=0, seed=0, hidden=5, inputs=4,
               states=False):
    """A one-node ONNX model with random W, R, B; graph inputs X (and, with ``states``,
    initial_h / initial_c)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    D = 2 if direction == "bidirectional" else 1
    weights = {"W": rng.uniform(-0.6, 0.6, (D, gates * hidden, inputs)),
               "R": rng.uniform(-0.6, 0.6, (D, gates * hidden, hidden)),
               "B": rng.uniform(-0.5, 0.5, (D, 2 * gates * hidden))}
    attributes = dict(hidden_size=hidden, direction=direction, layout=layout)
    if op == "GRU":
        attributes["linear_before_reset"] = 1
    outputs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    state_names = (["initial_h"] + (["initial_c"] if op == "LSTM" else [])) if states else []
    node = helper.make_node(op, ["X", "W", "R", "B", ""] + state_names, outputs, name="rnn",
                            **attributes)
    x_shape = ["batch", "steps", inputs] if layout else ["steps", "batch", inputs]
    s_shape = ["batch", D, hidden] if layout else [D, "batch", hidden]
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
        + [helper.make_tensor_value_info(n, TensorProto.FLOAT, s_shape) for n in state_names],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.onnx
@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("layout", [0, 1])
@settings(max_examples=6, deadline=None)
@given(pieces=splits())
def test_onnx_forward_node_in_pieces_equals_onnxruntime(ort, tmp_path_factory, op, layout,
                                                        pieces):
    path = _onnx_file(tmp_path_factory.mktemp("onnx") / f"{op}.onnx", op, layout=layout)
    model = rnnparity.load(path)
    x = np.random.default_rng(4).normal(size=(3, SEQ_LEN, 4)).astype(np.float32)
    feed_x = x if layout else x.transpose(1, 0, 2)
    if layout == 1:  # onnxruntime's CPU kernels refuse layout=1: the spec says "transposed"
        expected = _ort_run(ort, _onnx_file(path.with_name("t0.onnx"), op), x.transpose(1, 0, 2))
        expected = {"Y": expected["Y"].transpose(2, 0, 1, 3),
                    **{k: v.transpose(1, 0, 2) for k, v in expected.items() if k != "Y"}}
    else:
        expected = _ort_run(ort, path, feed_x)
    stream = model.stream(batch_size=3)
    parts: dict[str, list] = {}
    time_axis = 1 if layout else 0
    assert model.time_axis("X") == model.time_axis("Y") == time_axis
    for start, stop in pieces:
        if stop - start == 1:  # one step: (batch, input_size) in, Y without its time axis
            out = as_dict(model, stream.step(np.take(feed_x, start, axis=time_axis)))
            out["Y"] = np.expand_dims(out["Y"], time_axis)
        else:
            out = as_dict(model, stream.chunk(feed_x[:, start:stop] if layout
                                              else feed_x[start:stop]))
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
    assert_close(np.concatenate(parts["Y"], axis=time_axis), expected["Y"], what=f"{op} Y")
    for name in outputs_of(op)[1:]:
        assert_close(parts[name][-1], expected[name], what=f"{op} {name}")
    for got, name in zip(stream.states["rnn"], outputs_of(op)[1:]):
        assert_close(got, expected[name], what=f"{op} stream.states vs {name}")


@pytest.mark.onnx
def test_onnx_initial_states_as_inputs_are_read_once(ort, tmp_path):
    """Node model (``layer=``): optional initial_h / initial_c given with the first chunk.
    Whole model: initial_h / initial_c are required graph inputs, fed with every chunk and
    read only while the stream carries no state (onnxruntime's silero-style loop feeds the
    carried states back, which gives the same result)."""
    path = _onnx_file(tmp_path / "lstm.onnx", "LSTM", states=True)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(SEQ_LEN, 2, 4)).astype(np.float32)
    h0, c0 = (rng.normal(size=(1, 2, 5)).astype(np.float32) for _ in range(2))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"X": x, "initial_h": h0, "initial_c": c0})

    node = rnnparity.load(path, layer="rnn")
    got = node.stream(batch_size=2).feed(X=x, initial_h=h0, initial_c=c0, chunk_size=4)
    for value, name in zip(expected, node.outputs):
        assert_close(got[name], value, what=f"node model {name}")

    whole = rnnparity.load(path)
    assert whole.state_inputs == ["initial_h", "initial_c"]
    stream = whole.stream(batch_size=2)
    parts = [stream.chunk(X=x[a:b], initial_h=h0, initial_c=c0)
             for a, b in ((0, 1), (1, 5), (5, SEQ_LEN))]
    assert_close(np.concatenate([p["Y"] for p in parts]), expected[0], what="whole model Y")
    assert_close(parts[-1]["Y_c"], expected[2], what="whole model Y_c")


def outputs_of(op: str) -> list[str]:
    return ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]


def _ort_run(ort, path, x) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"X": x})))


@pytest.mark.onnx
@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_onnx_reverse_and_bidirectional_nodes_refuse_to_stream(ort, tmp_path, direction,
                                                               layout):
    path = _onnx_file(tmp_path / "r.onnx", "GRU", direction=direction, layout=layout)
    model = rnnparity.load(path)
    with pytest.raises(UnsupportedFeatureError, match="cannot stream"):
        model.stream(batch_size=2)


# ----------------------------------------------------------------------------------- CLI

def _cli_models(tmp_path) -> list[tuple]:
    """(model file, input array) for each framework whose writer is installed."""
    cases = []
    rng = np.random.default_rng(11)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        module = _torch_module(torch, "LSTM", num_layers=2, proj_size=2, batch_first=True)
        path = tmp_path / "lstm.npz"
        np.savez(path, **{k: v.detach().numpy() for k, v in module.state_dict().items()})
        cases.append((path, rng.normal(size=(2, 7, 4)).astype(np.float32)))
    try:
        import tf_keras as K
    except ImportError:
        K = None
    if K is not None:
        model = _keras_models(K, rng)["masked_stack"]
        path = tmp_path / "masked.h5"
        model.save(str(path))
        cases.append((path, _keras_inputs(rng)["masked_stack"][:, :7]))
    try:
        import onnx  # noqa: F401
    except ImportError:
        onnx = None
    if onnx is not None:
        cases.append((_onnx_file(tmp_path / "gru.onnx", "GRU"),
                      rng.normal(size=(7, 2, 4)).astype(np.float32)))
    return cases


def test_cli_chunk_equals_the_whole_sequence_run(tmp_path, capsys):
    cases = _cli_models(tmp_path)
    if not cases:
        pytest.skip("no framework installed to write a model file")
    for path, x in cases:
        np.save(tmp_path / "x.npy", x)
        whole = tmp_path / f"{path.stem}_whole.npz"
        assert main(["run", str(path), "--input", str(tmp_path / "x.npy"),
                     "--output", str(whole)]) == 0, capsys.readouterr().err
        with np.load(whole) as expected:
            expected = dict(expected)
        for chunk in (1, 3, 7):
            out = tmp_path / f"{path.stem}_{chunk}.npz"
            code = main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--chunk",
                         str(chunk), "--output", str(out)])
            assert code == 0, capsys.readouterr().err
            with np.load(out) as got:
                assert sorted(got) == sorted(expected)
                for name in expected:
                    assert_close(got[name], expected[name], STREAM_ATOL,
                                 f"{path.name} --chunk {chunk} {name}")
    capsys.readouterr()


def test_cli_chunk_refuses_a_bidirectional_model(tmp_path, capsys):
    torch = require("torch", "PyTorch writes the bidirectional state dict")
    module = _torch_module(torch, "GRU", bidirectional=True, batch_first=True)
    path = tmp_path / "bi.npz"
    np.savez(path, **{k: v.detach().numpy() for k, v in module.state_dict().items()})
    np.save(tmp_path / "x.npy", np.ones((2, 5, 4), np.float32))
    code = main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--chunk", "2"])
    assert code == 3  # unsupported feature
    assert "cannot stream" in capsys.readouterr().err


# ---------------------------------------------------------------------- real models

def _first_input_size(model) -> int:
    layer = model.layers[0]
    if hasattr(layer, "spec"):  # Keras
        return layer.spec.input_size
    if hasattr(layer, "stack"):  # PyTorch
        return layer.stack.input_size
    return int(layer.constants["W"].shape[-1])  # ONNX node


def _registry_models(registry_model):
    """(label, model) for every pretrained recurrent model the tests pin."""
    g2p_keys = {"weight_ih_l0": "enc_w_ih", "weight_hh_l0": "enc_w_hh",
                "bias_ih_l0": "enc_b_ih", "bias_hh_l0": "enc_b_hh"}
    yield "textgenrnn", rnnparity.load(registry_model("textgenrnn"))
    yield "chars2vec", rnnparity.load(registry_model("chars2vec_eng_50"))
    yield "silero cell", rnnparity.load(registry_model("silero_vad_safetensors"),
                                        layer="lstm_cell")
    yield "g2p_en GRU", rnnparity.load(registry_model("g2p_en"), keys=g2p_keys)
    path = registry_model("silero_vad_onnx")
    for entry in rnnparity.load(path).meta["recurrent_nodes"]:
        node = entry.split(" (")[0]
        yield f"silero ONNX {node}", rnnparity.load(path, layer=node)


@pytest.mark.models
def test_pretrained_models_stream_one_step_at_a_time_like_the_whole_run(registry_model):
    """``--chunk 1`` on real files: the streamed outputs equal the whole-sequence run."""
    for label, model in _registry_models(registry_model):
        rng = np.random.default_rng(len(label))
        size = _first_input_size(model)
        x = rng.normal(0, 0.5, (2, 12, size)).astype(np.float32)
        if model.time_axis(model.inputs[0]) == 0:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        whole = as_dict(model, model(x))
        for chunk_size in (1, 5):
            got = as_dict(model, model.stream(batch_size=2).feed(x, chunk_size=chunk_size))
            assert sorted(got) == sorted(whole), label
            for name, value in whole.items():
                assert_close(got[name], value, STREAM_ATOL,
                             f"{label} {name} in chunks of {chunk_size}")


# ---------------------------------------------------------------------- the Stream object

def _numpy_lstm_model(return_sequences: bool = True):
    """A Keras-style LSTM model built from arrays alone (no framework needed)."""
    from rnnparity.dialects import keras as kd

    rng = np.random.default_rng(0)
    arrays = {"kernel": rng.uniform(-0.5, 0.5, (3, 16)).astype(np.float32),
              "recurrent_kernel": rng.uniform(-0.5, 0.5, (4, 16)).astype(np.float32),
              "bias": rng.uniform(-0.5, 0.5, (16,)).astype(np.float32)}
    spec, weights = kd.to_canonical("LSTM", arrays, keras_version="3")
    layer = kd.KerasRecurrent("lstm", "LSTM", spec, weights,
                              kd.RecurrentOptions(return_sequences=return_sequences))
    return kd.single_layer_model(layer, "arrays", {})


def test_stream_reset_set_state_and_input_checks():
    model = _numpy_lstm_model()
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype(np.float32)
    x[0, 3:] = 0  # zero rows are data here (no Masking layer)
    whole = model(x)

    stream = model.stream(batch_size=2)
    stream.chunk(x[:, :4])
    stream.reset()
    assert stream.states == {} and stream.steps_fed == 0
    assert_close(stream.feed(x, chunk_size=4), whole, STREAM_ATOL, "after reset")
    assert stream.steps_fed == 6

    h, c = stream.states["lstm"]
    assert h.shape == c.shape == (2, 4)
    again = model.stream(batch_size=2)
    again.set_state("lstm", [h, c])
    continued = again.chunk(x)
    assert_close(continued, model.stream(batch_size=2).feed(
        np.concatenate([x, x], axis=1), chunk_size=5)[:, 6:], STREAM_ATOL, "set_state")

    with pytest.raises(ShapeError, match="batch_size=2"):
        stream.chunk(x[:1])
    with pytest.raises(ShapeError, match="at least one step"):
        stream.chunk(x[:, :0])
    with pytest.raises(ShapeError, match="use step"):
        stream.chunk(x[:, 0, 0])
    with pytest.raises(InputError, match="chunk size"):
        stream.feed(x, chunk_size=0)
    with pytest.raises(InputError, match="no layer named 'nope'"):
        stream.set_state("nope", [h, c])
    with pytest.raises(InputError, match="batch_size"):
        model.stream(batch_size=0)
    with pytest.raises(InputError, match="takes 2 initial state"):
        bad = model.stream(batch_size=2)
        bad.set_state("lstm", [h])
        bad.step(x[:, 0])


def test_return_sequences_false_stream_returns_the_last_output_so_far():
    sequences, last = _numpy_lstm_model(True), _numpy_lstm_model(False)
    x = np.random.default_rng(2).normal(size=(2, 7, 3)).astype(np.float32)
    every_step = sequences(x)
    stream = last.stream(batch_size=2)
    for t in range(7):
        assert_close(stream.step(x[:, t]), every_step[:, t], STREAM_ATOL, f"step {t}")
    assert_close(last(x), every_step[:, -1], STREAM_ATOL, "whole run")


# --------------------------------------------------------------------------- long input

def _peak_bytes(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("how", ["whole_call", "stream"])
def test_long_input_memory_does_not_grow_with_the_number_of_steps(how):
    """A return_sequences=False run keeps O(1) memory in seq_len beyond its input."""
    model = _numpy_lstm_model(return_sequences=False)
    short_steps, long_steps = 2_000, 100_000
    x = np.random.default_rng(3).normal(size=(1, long_steps, 3)).astype(np.float32)

    def run(steps):
        if how == "whole_call":
            return lambda: model(x[:, :steps])
        stream = model.stream(batch_size=1)
        return lambda: stream.feed(x[:, :steps], chunk_size=1000)

    run(short_steps)()  # warm-up: compiled kernels, caches
    short, long = _peak_bytes(run(short_steps)), _peak_bytes(run(long_steps))
    # 50x the steps; one byte per step kept anywhere would add ~98 KB.
    assert long - short < 64 * 1024, f"peak {short} B for {short_steps} steps, {long} B " \
                                   f"for {long_steps}"
    assert np.isfinite(model(x[:, :10])).all()
