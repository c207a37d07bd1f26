"""Padded steps, reversed directions and final states across Keras, PyTorch and ONNX.

One set of weights is loaded into Keras (tf_keras and Keras 3), torch and an ONNX node
(run by onnxruntime), so the three frameworks compute the same function and differ only in
their sequence semantics. For hypothesis-drawn lengths (1, the full length and all-padded
rows included) each test checks

- rnnparity against each framework (its own model, its own way of giving lengths:
  Keras masks, torch packed sequences, ONNX ``sequence_lens``), and
- the frameworks against each other, which pins down what the README states: where a
  backward pass starts, what padded steps hold, in which order reversed outputs come out
  and how final states are stacked.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnparity
from rnnparity.errors import InputError
from rnnparity.spec import permute_gates
from rnnparity.tolerances import ATOL

tf = require("tensorflow", "TensorFlow is the oracle for Keras sequence semantics")
torch = require("torch", "PyTorch is the oracle for packed sequences")
onnx = require("onnx", "onnx writes the ONNX oracle models")
ort = require("onnxruntime", "onnxruntime is the oracle for ONNX sequence_lens")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = [pytest.mark.keras, pytest.mark.torch, pytest.mark.onnx]

INPUT, HIDDEN = 3, 4
# Gate letters of each framework, with torch's g / n written as Keras' c / h.
TORCH_ORDER = {"LSTM": "ifco", "GRU": "rzh"}
KERAS_ORDER = {"LSTM": "ifco", "GRU": "zrh"}
ONNX_ORDER = {"LSTM": "iofc", "GRU": "zrh"}


def torch_weights(kind: str, seed: int) -> list[dict[str, np.ndarray]]:
    """Forward and backward weights in torch's layout, biases non-zero."""
    rng = np.random.default_rng(seed)
    G = len(TORCH_ORDER[kind])
    return [{"w_ih": rng.uniform(-0.7, 0.7, (G * HIDDEN, INPUT)).astype(np.float32),
             "w_hh": rng.uniform(-0.7, 0.7, (G * HIDDEN, HIDDEN)).astype(np.float32),
             "b_ih": rng.uniform(-0.5, 0.5, G * HIDDEN).astype(np.float32),
             "b_hh": rng.uniform(-0.5, 0.5, G * HIDDEN).astype(np.float32)}
            for _ in range(2)]


def keras_arrays(kind: str, w: dict[str, np.ndarray]) -> list[np.ndarray]:
    src, dst = TORCH_ORDER[kind], KERAS_ORDER[kind]
    kernel = permute_gates(w["w_ih"], src, dst).T
    recurrent = permute_gates(w["w_hh"], src, dst).T
    if kind == "LSTM":
        bias = w["b_ih"] + w["b_hh"]
    else:  # reset_after=True: input bias row, then recurrent bias row
        bias = np.stack([permute_gates(w["b_ih"], src, dst), permute_gates(w["b_hh"], src, dst)])
    return [kernel, recurrent, bias]


def torch_module(kind: str, weights: list[dict[str, np.ndarray]]):
    module = getattr(torch.nn, kind)(INPUT, HIDDEN, batch_first=True, bidirectional=True)
    state = {}
    for w, sfx in zip(weights, ("", "_reverse")):
        state.update({f"weight_ih_l0{sfx}": w["w_ih"], f"weight_hh_l0{sfx}": w["w_hh"],
                      f"bias_ih_l0{sfx}": w["b_ih"], f"bias_hh_l0{sfx}": w["b_hh"]})
    module.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    return module.eval()


def onnx_file(path, kind: str, weights: list[dict[str, np.ndarray]]):
    """A bidirectional node with a ``sequence_lens`` graph input; layout 0."""
    src, dst = TORCH_ORDER[kind], ONNX_ORDER[kind]
    W = np.stack([permute_gates(w["w_ih"], src, dst) for w in weights])
    R = np.stack([permute_gates(w["w_hh"], src, dst) for w in weights])
    B = np.stack([np.concatenate([permute_gates(w["b_ih"], src, dst),
                                  permute_gates(w["b_hh"], src, dst)]) for w in weights])
    outputs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
    attributes = dict(hidden_size=HIDDEN, direction="bidirectional")
    if kind == "GRU":
        attributes["linear_before_reset"] = 1  # torch's and Keras reset_after's GRU
    node = helper.make_node(kind, ["X", "W", "R", "B", "sequence_lens"], outputs,
                            name="rnn", **attributes)
    graph = helper.make_graph(
        [node], "semantics",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", INPUT]),
         helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["N"])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in
         (("W", W), ("R", R), ("B", B))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def keras_model(K, kind: str, weights: list[dict[str, np.ndarray]]):
    """Masking, then a Bidirectional layer, a bare forward layer and a go_backwards layer
    sharing the forward / backward weights, every state returned."""
    layer = getattr(K.layers, kind)
    inp = K.Input((None, INPUT))
    masked = K.layers.Masking()(inp)
    both = K.layers.Bidirectional(layer(HIDDEN, return_sequences=True, return_state=True))
    bare = layer(HIDDEN, return_sequences=True, return_state=True)
    backwards = layer(HIDDEN, return_sequences=True, return_state=True, go_backwards=True)
    outputs = list(both(masked)) + list(bare(masked)) + list(backwards(masked))
    model = K.Model(inp, outputs)
    forward, backward = (keras_arrays(kind, w) for w in weights)
    both.set_weights(forward + backward)
    bare.set_weights(forward)
    backwards.set_weights(backward)
    return model


@pytest.fixture(scope="module", params=["LSTM", "GRU"])
def oracles(request, tmp_path_factory):
    kind = request.param
    weights = torch_weights(kind, seed=5 if kind == "LSTM" else 6)
    path = onnx_file(tmp_path_factory.mktemp("semantics") / f"{kind}.onnx", kind, weights)
    keras = {}
    for backend in ("tf_keras", "keras"):
        K = require(backend, f"{backend} is the oracle for Keras masks")
        model = keras_model(K, kind, weights)
        keras[backend] = (model, rnnparity.from_keras(model))
    module = torch_module(kind, weights)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return kind, keras, (module, rnnparity.from_torch(module)), (session,
                                                                  rnnparity.load(path))


@st.composite
def padded_batch(draw):
    """(x, lengths): right-padded rows; lengths 0, 1 and seq_len always present."""
    seq_len = draw(st.integers(3, 6))
    extra = draw(st.lists(st.integers(0, seq_len), min_size=1, max_size=2))
    lengths = np.array(draw(st.permutations([0, 1, seq_len] + extra)))
    seed = draw(st.integers(0, 2**16))
    x = np.random.default_rng(seed).normal(size=(len(lengths), seq_len, INPUT))
    x = x.astype(np.float32)
    for row, length in enumerate(lengths):
        x[row, length:] = 0  # what Masking masks; torch / ONNX never read these steps
    return x, lengths


def assert_close(got, expected, what: str) -> None:
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape, f"{what}: shape {got.shape} vs {expected.shape}"
    diff = float(np.abs(got - expected).max()) if got.size else 0.0
    assert diff <= ATOL, f"{what}: max abs diff {diff:.3g}"


def outputs_of(model, result) -> list[np.ndarray]:
    return [result[n] for n in model.outputs] if isinstance(result, dict) else [result]


def run_torch(module, x, lengths):
    """Packed sequences (torch refuses length 0: those rows are left out)."""
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        torch.from_numpy(x), torch.as_tensor(lengths), batch_first=True,
        enforce_sorted=False)
    with torch.no_grad():
        y, state = module(packed)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True,
                                                  total_length=x.shape[1])
    states = state if isinstance(state, tuple) else (state,)
    return [y.numpy()] + [s.numpy() for s in states]


@settings(max_examples=10, deadline=None)
@given(case=padded_batch())
def test_bidirectional_with_lengths_agrees_across_frameworks(oracles, case):
    kind, keras, (module, ours_torch), (session, ours_onnx) = oracles
    x, lengths = case
    batch, seq_len = len(lengths), x.shape[1]
    lstm = kind == "LSTM"
    ns = 2 if lstm else 1  # states per direction
    rows = lengths > 0

    # ONNX: Y (T, 2, N, H), Y_h / Y_c (2, N, H); onnxruntime and rnnparity.
    feeds = {"X": np.ascontiguousarray(x.transpose(1, 0, 2)),
             "sequence_lens": lengths.astype(np.int32)}
    onnx_out = session.run(None, feeds)
    for name, got, expected in zip(ours_onnx.outputs, outputs_of(ours_onnx, ours_onnx.run(
            feeds)), onnx_out):
        assert_close(got, expected, f"rnnparity vs onnxruntime {name}")
    y_onnx = onnx_out[0].transpose(2, 0, 1, 3).reshape(batch, seq_len, 2 * HIDDEN)
    finals_onnx = [s[d] for d in range(2) for s in onnx_out[1:]]  # fwd h (c), bwd h (c)

    # torch packed: output (N, T, 2H) with zeros past each length; h_n (2, N, H).
    torch_out = run_torch(module, x[rows], lengths[rows])
    ours = ours_torch({"input": x[rows]}, lengths=lengths[rows])
    for name, got, expected in zip(ours_torch.outputs, outputs_of(ours_torch, ours),
                                   torch_out):
        assert_close(got, expected, f"rnnparity vs torch {name}")
    with pytest.raises(InputError, match="must lie in"):
        ours_torch({"input": x}, lengths=lengths)  # a 0 length: torch refuses, so do we

    # Every framework: padded steps are zeros and the backward pass starts at each
    # sequence's own end, so the three bidirectional outputs are the same array.
    assert_close(torch_out[0], y_onnx[rows], "torch output vs ONNX Y")
    assert float(np.abs(y_onnx[~rows]).max()) == 0.0  # all-padded rows: zeros
    finals_torch = [s[d] for d in range(2) for s in torch_out[1:]]
    for a, b in zip(finals_torch, finals_onnx):
        assert_close(a, b[rows], "torch h_n/c_n vs ONNX Y_h/Y_c (direction-major)")

    for backend, (model, ours_keras) in keras.items():
        expected = [np.asarray(o) for o in model(x)]
        got = outputs_of(ours_keras, ours_keras(x))
        for index, (g, e) in enumerate(zip(got, expected)):
            assert_close(g, e, f"rnnparity vs {backend} output {index}")
        both, finals = expected[0], expected[1:1 + 2 * ns]
        bare_y, bare_states = expected[1 + 2 * ns], expected[2 + 2 * ns:2 + 3 * ns]
        back_y, back_states = expected[2 + 3 * ns], expected[3 + 3 * ns:]

        # Keras Bidirectional (zero_output_for_mask forced): the ONNX / torch array;
        # states [fwd h, (fwd c), bwd h, (bwd c)] = ONNX Y_h[0], (Y_c[0]), Y_h[1], ...
        assert_close(both, y_onnx, f"{backend} Bidirectional vs ONNX Y")
        for a, b in zip(finals, finals_onnx):
            assert_close(a, b, f"{backend} Bidirectional states vs ONNX")

        # A bare masked layer repeats its last valid output at padded steps (zeros for
        # an all-padded row); its states stop at the last valid step.
        for row, length in enumerate(lengths):
            forward = y_onnx[row, :, :HIDDEN]
            hold = forward[length - 1] if length else np.zeros(HIDDEN, np.float32)
            assert_close(bare_y[row, :length], forward[:length], f"{backend} bare valid")
            assert_close(bare_y[row, length:], np.broadcast_to(hold, (seq_len - length,
                         HIDDEN)), f"{backend} bare padded steps hold the last output")
        assert_close(bare_states[0], finals_onnx[0], f"{backend} bare h")

        # go_backwards returns PROCESSING order: the padded tail comes first (zeros, the
        # previous output starts at zero), then the valid steps from last to first;
        # ONNX / torch reverse outputs are aligned with input time instead.
        for row, length in enumerate(lengths):
            reverse = y_onnx[row, :length, HIDDEN:]
            assert float(np.abs(back_y[row, :seq_len - length]).max(initial=0)) == 0.0
            assert_close(back_y[row, seq_len - length:], reverse[::-1],
                         f"{backend} go_backwards vs ONNX reverse, flipped")
        for a, b in zip(back_states, finals_onnx[ns:]):
            assert_close(a, b, f"{backend} go_backwards states vs ONNX backward states")


@pytest.mark.parametrize("backend", ["tf_keras", "keras"])
def test_go_backwards_full_length_is_reverse_flipped(oracles, backend):
    """Without padding: Keras go_backwards y[:, k] is ONNX reverse Y[T - 1 - k]."""
    kind, keras, _, (session, ours_onnx) = oracles
    x = np.random.default_rng(9).normal(size=(2, 5, INPUT)).astype(np.float32)
    lengths = np.full(2, 5, np.int32)
    y = session.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2)),
                           "sequence_lens": lengths})[0]
    model, ours = keras[backend]
    ns = 2 if kind == "LSTM" else 1
    back_y = outputs_of(ours, ours(x))[2 + 3 * ns]
    assert_close(back_y, y[::-1, 1].transpose(1, 0, 2), f"{backend} go_backwards order")
    assert_close(back_y, np.asarray(model(x)[2 + 3 * ns]), f"{backend} oracle")
