"""ONNX parity: rnnparity against onnxruntime over shapes and every operator attribute.

onnxruntime (CPU) is the oracle: single-node models built with onnx.helper, random weights
with biases, batch >= 2, seq_len >= 3, input_size != hidden_size. Both semantics are run:
``onnxruntime`` must always equal it; ``spec`` must equal it wherever the two agree. Where
they differ (clip on the cell state, defaults of missing activation parameters, length-0
sequences, layout=1 which onnxruntime refuses) the spec reading is checked against
onnxruntime runs that express the spec's equations another way.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

onnx = require("onnx", "onnx builds the models under test")
ort = require("onnxruntime", "onnxruntime is the oracle for the ONNX dialect")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rnnparity  # noqa: E402
from rnnparity.cli.main import main  # noqa: E402
from rnnparity.dialects import onnx as dialect  # noqa: E402
from rnnparity.engine import Direction, RecurrentStack  # noqa: E402
from rnnparity.errors import (  # noqa: E402
    FormatError,
    InputError,
    UnsupportedFeatureError,
)
from rnnparity.io.onnx_file import extract_node  # noqa: E402
from rnnparity.spec import CellSpec, CellWeights  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = pytest.mark.onnx

OPSET, IR_VERSION = 22, 10
NUM_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
NUM_FUNCTIONS = {"LSTM": 3, "GRU": 2, "RNN": 1}
RUNTIME = ("X", "sequence_lens", "initial_h", "initial_c")
ACTIVATIONS = ["Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu",
               "ScaledTanh", "HardSigmoid", "Elu", "Softsign", "Softplus"]
# (takes alpha, takes beta) per function, from the operator text.
PARAMETERS = {"Affine": (1, 1), "LeakyRelu": (1, 0), "ThresholdedRelu": (1, 0),
              "ScaledTanh": (1, 1), "HardSigmoid": (1, 1), "Elu": (1, 0)}
# Functions whose missing parameters default differently in the spec and onnxruntime.
DEFAULTS_DIFFER = {"Affine", "ThresholdedRelu", "ScaledTanh"}


def build(op, attributes, arrays, outputs=("Y", "Y_h", "Y_c"), runtime=RUNTIME):
    """A one-node model: slots in ``runtime`` are graph inputs, the rest initializers."""
    inputs, graph_inputs, initializers = [], [], []
    for slot in dialect.INPUT_SLOTS:
        if arrays.get(slot) is None:
            inputs.append("")
        elif slot in runtime:
            inputs.append(slot)
            elem = TensorProto.INT32 if slot == "sequence_lens" else TensorProto.FLOAT
            graph_inputs.append(helper.make_tensor_value_info(slot, elem, arrays[slot].shape))
        else:
            inputs.append(slot)
            initializers.append(numpy_helper.from_array(arrays[slot], slot))
    while not inputs[-1]:
        inputs.pop()
    outputs = list(outputs)[: 3 if op == "LSTM" else 2]
    node = helper.make_node(op, inputs, outputs, name=f"{op.lower()}_node", **attributes)
    graph = helper.make_graph(
        [node], "g", graph_inputs,
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs if o],
        initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR_VERSION)


def feeds_of(arrays, runtime=RUNTIME):
    return {k: v for k, v in arrays.items() if k in runtime and v is not None}


def ort_run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def ours(model, folder, feeds, semantics="spec", layer=None):
    path = folder / f"m{len(list(folder.iterdir()))}.onnx"
    onnx.save(model, str(path))
    loaded = rnnparity.load(path, layer=layer, semantics=semantics)
    return loaded.run(feeds)


def assert_close(actual, expected, context=""):
    """Outputs within ATOL; outputs above 1 (unbounded activations such as Relu, Affine,
    Softplus grow them) within ATOL relative to their magnitude, as float32 rounding is."""
    assert set(expected) <= set(actual), (sorted(actual), sorted(expected))
    for key, value in expected.items():
        assert actual[key].shape == value.shape, (key, actual[key].shape, value.shape)
        scale = max(1.0, float(np.abs(value).max(initial=0)))
        diff = float(np.abs(actual[key] - value).max(initial=0))
        assert diff <= ATOL * scale, f"{context} {key}: max abs diff {diff:.3g}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_models")


def random_arrays(rng, op, num_directions, batch, seq_len, input_size, hidden_size, *,
                  bias=True, peepholes=False, initial_h=False, initial_c=False, lengths=None,
                  layout=0):
    G = NUM_GATES[op]
    f32 = np.float32
    x_shape = (batch, seq_len, input_size) if layout else (seq_len, batch, input_size)
    s_shape = ((batch, num_directions, hidden_size) if layout
               else (num_directions, batch, hidden_size))
    arrays = {
        "X": rng.normal(size=x_shape).astype(f32),
        "W": rng.uniform(-0.7, 0.7, (num_directions, G * hidden_size, input_size)).astype(f32),
        "R": rng.uniform(-0.7, 0.7, (num_directions, G * hidden_size, hidden_size)).astype(f32),
        "B": rng.uniform(-0.5, 0.5, (num_directions, 2 * G * hidden_size)).astype(f32)
        if bias else None,
        "P": rng.uniform(-0.5, 0.5, (num_directions, 3 * hidden_size)).astype(f32)
        if peepholes else None,
        "initial_h": rng.normal(size=s_shape).astype(f32) if initial_h else None,
        "initial_c": rng.normal(size=s_shape).astype(f32) if initial_c else None,
        "sequence_lens": None if lengths is None else np.asarray(lengths, np.int32),
    }
    return arrays


@st.composite
def cases(draw):
    op = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    direction = draw(st.sampled_from(["forward", "reverse", "bidirectional"]))
    num_directions = 2 if direction == "bidirectional" else 1
    batch, seq_len = draw(st.integers(2, 3)), draw(st.integers(3, 5))
    input_size = draw(st.integers(1, 5))
    hidden_size = draw(st.integers(1, 5).filter(lambda h: h != input_size))
    lengths = None
    if draw(st.booleans()):
        lengths = draw(st.lists(st.sampled_from([0, 1, seq_len, seq_len - 1]),
                                min_size=batch, max_size=batch))
    lstm = op == "LSTM"
    arrays = random_arrays(
        np.random.default_rng(draw(st.integers(0, 2**16))), op, num_directions, batch,
        seq_len, input_size, hidden_size, bias=draw(st.booleans()),
        peepholes=lstm and draw(st.booleans()), initial_h=draw(st.booleans()),
        initial_c=lstm and draw(st.booleans()), lengths=lengths)
    attributes = {"hidden_size": hidden_size, "direction": direction}
    if draw(st.booleans()):
        attributes["clip"] = draw(st.floats(0.3, 3.0))
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(ACTIVATIONS),
                              min_size=NUM_FUNCTIONS[op] * num_directions,
                              max_size=NUM_FUNCTIONS[op] * num_directions))
        attributes["activations"] = names
        wanted_alpha = sum(PARAMETERS.get(n, (0, 0))[0] for n in names)
        wanted_beta = sum(PARAMETERS.get(n, (0, 0))[1] for n in names)
        alpha = draw(st.lists(st.floats(0.1, 1.5), max_size=wanted_alpha))
        beta = draw(st.lists(st.floats(-0.5, 0.9), max_size=wanted_beta))
        if alpha:
            attributes["activation_alpha"] = alpha
        if beta:
            attributes["activation_beta"] = beta
    if lstm and draw(st.booleans()):
        attributes["input_forget"] = 1
    if op == "GRU":
        attributes["linear_before_reset"] = draw(st.integers(0, 1))
    outputs = draw(st.sampled_from([("Y", "Y_h", "Y_c"), ("", "Y_h", "Y_c"), ("Y", "", ""),
                                    ("Y", "Y_h", "")]))
    return op, attributes, arrays, outputs


def missing_parameters(attributes):
    """Functions that find no value left in activation_alpha / activation_beta."""
    alpha = len(attributes.get("activation_alpha", []))
    beta = len(attributes.get("activation_beta", []))
    missing = set()
    for name in attributes.get("activations", []):
        takes_alpha, takes_beta = PARAMETERS.get(name, (0, 0))
        if (takes_alpha and alpha < 1) or (takes_beta and beta < 1):
            missing.add(name)
        alpha, beta = alpha - takes_alpha, beta - takes_beta
    return missing


def spec_agrees_with_onnxruntime(op, attributes, arrays):
    lengths = arrays["sequence_lens"]
    return not ((op == "LSTM" and "clip" in attributes)
                or (lengths is not None and (lengths == 0).any())
                or missing_parameters(attributes) & DEFAULTS_DIFFER)


@settings(max_examples=40, deadline=None)
@given(case=cases())
def test_every_attribute_matches_onnxruntime(case, folder):
    op, attributes, arrays, outputs = case
    model = build(op, attributes, arrays, outputs)
    feeds = feeds_of(arrays)
    expected = ort_run(model, feeds)
    assert_close(ours(model, folder, feeds, "onnxruntime"), expected, f"{op} {attributes}")

    if "ScaledTanh" in missing_parameters(attributes):
        with pytest.raises(UnsupportedFeatureError, match="ScaledTanh"):
            ours(model, folder, feeds, "spec")
    elif spec_agrees_with_onnxruntime(op, attributes, arrays):
        assert_close(ours(model, folder, feeds, "spec"), expected, f"spec {op} {attributes}")


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout_1_equals_transposed_layout_0(op, direction, folder):
    rng = np.random.default_rng(3)
    D = 2 if direction == "bidirectional" else 1
    arrays = random_arrays(rng, op, D, 3, 4, 5, 2, peepholes=op == "LSTM", initial_h=True,
                           initial_c=op == "LSTM", lengths=[4, 2, 1], layout=1)
    attributes = {"hidden_size": 2, "direction": direction}
    batchwise = build(op, dict(attributes, layout=1), arrays)
    with pytest.raises(Exception, match="layout"):
        ort_run(batchwise, feeds_of(arrays))  # onnxruntime's CPU kernels refuse layout=1

    time_major = dict(arrays, X=arrays["X"].transpose(1, 0, 2))
    for state in ("initial_h", "initial_c"):
        if arrays[state] is not None:
            time_major[state] = arrays[state].transpose(1, 0, 2)
    reference = ort_run(build(op, attributes, time_major), feeds_of(time_major))
    expected = {"Y": reference["Y"].transpose(2, 0, 1, 3)}
    expected.update({k: reference[k].transpose(1, 0, 2) for k in ("Y_h", "Y_c")
                     if k in reference})
    for semantics in ("spec", "onnxruntime"):
        assert_close(ours(batchwise, folder, feeds_of(arrays), semantics), expected)


def test_clip_bounds_the_cell_state_before_h_in_the_spec(folder):
    """Spec: H = o * h(clip(C)). Checked step by step with onnxruntime giving o and C."""
    rng = np.random.default_rng(7)
    clip = 0.4
    arrays = random_arrays(rng, "LSTM", 1, 3, 5, 4, 3, peepholes=True, initial_h=True,
                           initial_c=True)
    arrays["initial_c"] *= 3  # so |C| exceeds the clip
    attributes = {"hidden_size": 3, "clip": clip}
    # h = Affine(alpha=0, beta=1) makes onnxruntime's H the output gate o itself.
    gate_only = dict(attributes, activations=["Sigmoid", "Tanh", "Affine"],
                     activation_alpha=[0.0], activation_beta=[1.0])
    h, c = arrays["initial_h"], arrays["initial_c"]
    ys, clipped = [], False
    for t in range(arrays["X"].shape[0]):
        step = dict(arrays, X=arrays["X"][t : t + 1], initial_h=h, initial_c=c)
        c = ort_run(build("LSTM", attributes, step), feeds_of(step))["Y_c"]
        o = ort_run(build("LSTM", gate_only, step), feeds_of(step))["Y_h"]
        clipped |= bool((np.abs(c) > clip).any())
        h = (o * np.tanh(np.clip(c, -clip, clip))).astype(np.float32)
        ys.append(h)
    assert clipped, "the test needs a cell state beyond the clip"
    expected = {"Y": np.stack(ys), "Y_h": h, "Y_c": c}
    model = build("LSTM", attributes, arrays)
    assert_close(ours(model, folder, feeds_of(arrays), "spec"), expected)

    runtime = ort_run(model, feeds_of(arrays))
    assert_close(ours(model, folder, feeds_of(arrays), "onnxruntime"), runtime)
    assert np.abs(runtime["Y"] - expected["Y"]).max() > 1e-3  # the two readings differ


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_length_zero_keeps_initial_state_in_spec_and_zeros_in_onnxruntime(op, folder):
    rng = np.random.default_rng(11)
    lstm = op == "LSTM"
    arrays = random_arrays(rng, op, 2, 3, 4, 3, 2, initial_h=True, initial_c=lstm,
                           lengths=[4, 0, 2])
    model = build(op, {"hidden_size": 2, "direction": "bidirectional"}, arrays)
    expected = ort_run(model, feeds_of(arrays))
    assert_close(ours(model, folder, feeds_of(arrays), "onnxruntime"), expected)
    assert not expected["Y_h"][:, 1].any()

    spec = ours(model, folder, feeds_of(arrays), "spec")
    np.testing.assert_array_equal(spec["Y_h"][:, 1], arrays["initial_h"][:, 1])
    if lstm:
        np.testing.assert_array_equal(spec["Y_c"][:, 1], arrays["initial_c"][:, 1])
    rows = [0, 2]
    assert_close({"Y": spec["Y"][:, :, rows], "Y_h": spec["Y_h"][:, rows]},
                 {"Y": expected["Y"][:, :, rows], "Y_h": expected["Y_h"][:, rows]})
    assert not spec["Y"][:, :, 1].any()


@pytest.mark.parametrize("name, spec_alpha, spec_beta", [
    ("ThresholdedRelu", [1.0], []), ("Affine", [1.0], [0.0])])
def test_missing_parameters_take_operator_defaults_in_spec(name, spec_alpha, spec_beta,
                                                            folder):
    rng = np.random.default_rng(5)
    arrays = random_arrays(rng, "GRU", 1, 2, 4, 3, 4, initial_h=True)
    attributes = {"hidden_size": 4, "activations": ["Sigmoid", name]}
    model = build("GRU", attributes, arrays)
    assert_close(ours(model, folder, feeds_of(arrays), "onnxruntime"),
                 ort_run(model, feeds_of(arrays)))
    explicit = dict(attributes, activation_alpha=spec_alpha)
    if spec_beta:
        explicit["activation_beta"] = spec_beta
    expected = ort_run(build("GRU", explicit, arrays), feeds_of(arrays))
    assert_close(ours(model, folder, feeds_of(arrays), "spec"), expected)


def test_scaled_tanh_without_parameters_is_refused_in_spec(folder):
    arrays = random_arrays(np.random.default_rng(0), "RNN", 1, 2, 3, 3, 2)
    model = build("RNN", {"hidden_size": 2, "activations": ["ScaledTanh"]}, arrays)
    with pytest.raises(UnsupportedFeatureError, match="no default"):
        ours(model, folder, feeds_of(arrays), "spec")


def test_alpha_and_beta_are_consumed_by_parameterised_functions_only(folder):
    rng = np.random.default_rng(9)
    arrays = random_arrays(rng, "LSTM", 2, 2, 4, 3, 2)
    attributes = {"hidden_size": 2, "direction": "bidirectional",
                  "activations": ["HardSigmoid", "Tanh", "LeakyRelu",
                                  "Sigmoid", "ScaledTanh", "Elu"],
                  "activation_alpha": [0.3, 0.05, 1.5, 0.7], "activation_beta": [0.6, 0.8]}
    model = build("LSTM", attributes, arrays)
    expected = ort_run(model, feeds_of(arrays))
    for semantics in ("spec", "onnxruntime"):
        assert_close(ours(model, folder, feeds_of(arrays), semantics), expected)
    functions = dialect.resolve_activations("lstm", attributes["activations"],
                                            attributes["activation_alpha"],
                                            attributes["activation_beta"], 2)
    assert [(f.name, f.alpha, f.beta) for f in functions if f.alpha or f.beta] == [
        ("hard_sigmoid", pytest.approx(0.3), pytest.approx(0.6)),
        ("leaky_relu", pytest.approx(0.05), 0.0),
        ("scaled_tanh", pytest.approx(1.5), pytest.approx(0.8)),
        ("elu", pytest.approx(0.7), 0.0)]


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_streaming_in_chunks_equals_the_whole_sequence(op, folder):
    rng = np.random.default_rng(13)
    lstm = op == "LSTM"
    arrays = random_arrays(rng, op, 1, 2, 7, 3, 4, peepholes=lstm, initial_h=True,
                           initial_c=lstm, layout=1)
    path = folder / f"stream_{op}.onnx"
    onnx.save(build(op, {"hidden_size": 4, "layout": 1}, arrays), str(path))
    model = rnnparity.load(path, layer=f"{op.lower()}_node")
    whole = model.run(feeds_of(arrays))
    states = [arrays["initial_h"]] + ([arrays["initial_c"]] if lstm else [])
    for size in (1, 3):
        stream = model.stream(batch_size=2)
        stream.set_state(model.layers[0].name, states)  # states in the node's layout
        parts = [stream.chunk(arrays["X"][:, s : s + size]) for s in range(0, 7, size)]
        np.testing.assert_allclose(np.concatenate([p["Y"] for p in parts], axis=1),
                                   whole["Y"], atol=1e-6)
        np.testing.assert_allclose(parts[-1]["Y_h"], whole["Y_h"], atol=1e-6)
        carried = stream.states[model.layers[0].name]
        np.testing.assert_allclose(carried[0], whole["Y_h"], atol=1e-6)
        if lstm:
            np.testing.assert_allclose(carried[1], whole["Y_c"], atol=1e-6)


def test_bidirectional_and_reverse_nodes_refuse_to_stream(folder):
    # layout=0 (time-major) nodes stream along axis 0: tests/test_streaming.py
    for attributes in ({"direction": "bidirectional", "layout": 1},
                       {"direction": "reverse", "layout": 0}):
        D = 2 if attributes["direction"] == "bidirectional" else 1
        arrays = random_arrays(np.random.default_rng(0), "GRU", D, 2, 3, 3, 2,
                               layout=attributes["layout"])
        path = folder / f"nostream{D}.onnx"
        onnx.save(build("GRU", dict(attributes, hidden_size=2), arrays), str(path))
        reason = "bidirectional" if D == 2 else "reverse"
        with pytest.raises(UnsupportedFeatureError, match=f"cannot stream: .*{reason}"):
            rnnparity.load(path).stream(batch_size=2)


@settings(max_examples=15, deadline=None)
@given(op=st.sampled_from(["LSTM", "GRU", "RNN"]), seed=st.integers(0, 2**16),
       bidirectional=st.booleans(), hidden_size=st.integers(1, 4),
       input_size=st.integers(1, 4), peepholes=st.booleans(), lbr=st.integers(0, 1))
def test_to_canonical_and_back_is_exact(op, seed, bidirectional, hidden_size, input_size,
                                        peepholes, lbr):
    rng = np.random.default_rng(seed)
    D = 2 if bidirectional else 1
    arrays = random_arrays(rng, op, D, 2, 3, input_size, hidden_size,
                           peepholes=peepholes and op == "LSTM")
    attributes = {"hidden_size": hidden_size,
                  "direction": "bidirectional" if bidirectional else "forward"}
    if op == "GRU" and lbr:
        attributes["linear_before_reset"] = 1
    for d in range(D):
        spec, weights = dialect.to_canonical(op, arrays, d, **attributes)
        back, back_attributes = dialect.from_canonical(spec, weights)
        for slot in ("W", "R", "B", "P"):
            if arrays[slot] is None:
                assert back[slot] is None
            else:
                np.testing.assert_array_equal(back[slot], arrays[slot][d])
        assert back_attributes == {k: v for k, v in attributes.items() if k != "direction"}


@pytest.mark.parametrize("kind, options", [
    ("lstm", {}), ("lstm", {"peephole": True}), ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}), ("rnn", {})])
def test_from_canonical_builds_an_equivalent_onnx_node(kind, options):
    rng = np.random.default_rng(17)
    H, n, G = 3, 4, {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    spec = CellSpec(kind, n, H, reset_after=options.get("reset_after", True))
    weights = CellWeights(*(rng.uniform(-0.6, 0.6, s).astype(np.float32) for s in
                            [(G * H, n), (G * H, H), (G * H,), (G * H,)]))
    if options.get("peephole"):
        weights.peephole = rng.uniform(-0.5, 0.5, (3, H)).astype(np.float32)
    x = rng.normal(size=(2, 5, n)).astype(np.float32)
    expected = RecurrentStack([[Direction(spec, weights)]])(x).y

    native, attributes = dialect.from_canonical(spec, weights)
    arrays = {k: None if v is None else v[None] for k, v in native.items()}
    arrays["X"] = x.transpose(1, 0, 2)
    op = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}[kind]
    got = ort_run(build(op, attributes, arrays, ("Y", "", "")), {"X": arrays["X"]})["Y"]
    assert_close({"Y": got[:, 0].transpose(1, 0, 2)}, {"Y": expected})


@pytest.mark.parametrize("change, feature", [
    ({"proj_size": 2}, "projection"), ({"forget_bias": 1.0}, "forget_bias"),
    ({"cell_clip": 3.0}, "cell_clip"), ({"clip": 1.0, "clip_cell_output": False}, "clip")])
def test_from_canonical_names_what_onnx_cannot_express(change, feature):
    H, n = 3, 2
    spec = CellSpec("lstm", n, H).with_(**change)
    weights = CellWeights(np.zeros((4 * H, n)), np.zeros((4 * H, spec.hidden_out)),
                          w_hr=np.zeros((spec.proj_size, H)) if spec.proj_size else None)
    with pytest.raises(UnsupportedFeatureError, match=feature):
        dialect.from_canonical(spec, weights)


# --- models whose recurrent node sits deep inside a bigger graph --------------------------

def nested_model(arrays, hidden_size):
    """A Loop whose body holds an LSTM; W/R/B are cut from outer initializers by exporters'
    chains (Transpose, Slice, Concat, Gather, Reshape, Cast, Unsqueeze, Squeeze, Split)."""
    W, R, B = arrays["W"][0], arrays["R"][0], arrays["B"][0]
    H = hidden_size

    def const(name, values, dtype=np.int64):
        return helper.make_node("Constant", [], [name], name=name,
                                value=numpy_helper.from_array(np.asarray(values, dtype)))

    outer_init = [numpy_helper.from_array(W.T.copy(), "w_t"),  # stored transposed
                  numpy_helper.from_array(R.astype(np.float64), "r64"),
                  numpy_helper.from_array(B.reshape(2, -1), "b2")]
    body_nodes = [
        helper.make_node("Transpose", ["w_t"], ["w"], perm=[1, 0]),
        const("s0", [0]), const("s1", [H]), const("e1", [2 * H]), const("big", [4 * H]),
        const("ax0", [0]),
        helper.make_node("Slice", ["w", "s0", "s1", "ax0"], ["w_a"]),
        helper.make_node("Slice", ["w", "s1", "big", "ax0"], ["w_b"]),
        helper.make_node("Concat", ["w_a", "w_b"], ["w_cat"], axis=0),
        helper.make_node("Unsqueeze", ["w_cat", "ax0"], ["W3"]),
        helper.make_node("Cast", ["r64"], ["r32"], to=TensorProto.FLOAT),
        helper.make_node("Split", ["r32"], ["r_a", "r_b"], axis=0, num_outputs=2),
        helper.make_node("Concat", ["r_a", "r_b"], ["r_cat"], axis=0),
        const("shape", [1, 4 * H, H]),
        helper.make_node("Reshape", ["r_cat", "shape"], ["R3"]),
        const("idx", [[0, 1]]),
        helper.make_node("Gather", ["b2", "idx"], ["b_g"], axis=0),
        const("flat", [1, -1]),
        helper.make_node("Reshape", ["b_g", "flat"], ["b_r"]),
        helper.make_node("Identity", ["b_r"], ["B2"]),
        helper.make_node("Unsqueeze", ["B2", "ax0"], ["B3"]),
        helper.make_node("Squeeze", ["B3", "ax0"], ["B"]),
        helper.make_node("LSTM", ["x_in", "W3", "R3", "B"], ["Y", "Y_h", "Y_c"],
                         name="deep_lstm", hidden_size=H),
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
    ]
    body = helper.make_graph(
        body_nodes, "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    loop = helper.make_node("Loop", ["trip", "cond", "x"], ["x_final"], name="loop",
                            body=body)
    graph = helper.make_graph(
        [loop], "outer",
        [helper.make_tensor_value_info("trip", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("x_final", TensorProto.FLOAT, None)], outer_init)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                             ir_version=IR_VERSION)


def test_node_inside_a_loop_body_with_folded_weights(folder):
    rng = np.random.default_rng(21)
    H = 3
    arrays = random_arrays(rng, "LSTM", 1, 2, 4, 5, H, initial_h=True, initial_c=True)
    path = folder / "nested.onnx"
    onnx.save(nested_model(arrays, H), str(path))
    model = rnnparity.load(path, layer="deep_lstm")
    assert any("deep_lstm (LSTM) in loop.body" in n for n in model.meta["recurrent_nodes"])
    feeds = feeds_of(arrays)
    expected = ort_run(build("LSTM", {"hidden_size": H}, arrays), feeds)
    assert_close(model.run(feeds), expected)
    assert_close(model.run({"X": arrays["X"]}),
                 ort_run(build("LSTM", {"hidden_size": H}, dict(arrays, initial_h=None,
                                                                initial_c=None)),
                         {"X": arrays["X"]}))
    extracted = extract_node(path, "deep_lstm")  # the node alone, weights folded
    assert_close(ort_run(extracted, {"X": arrays["X"]}), model.run({"X": arrays["X"]}))
    with pytest.raises(UnsupportedFeatureError, match="--node"):
        rnnparity.load(path).run({"trip": np.array(1), "cond": np.array(True),
                                  "x": arrays["X"]})


def test_unknown_node_lists_the_recurrent_nodes(folder):
    path = folder / "nested_names.onnx"
    arrays = random_arrays(np.random.default_rng(0), "LSTM", 1, 2, 3, 2, 3)
    onnx.save(nested_model(arrays, 3), str(path))
    with pytest.raises(InputError, match="deep_lstm"):
        rnnparity.load(path, layer="nope")


def test_bad_nodes_give_one_line_errors(folder):
    arrays = random_arrays(np.random.default_rng(0), "GRU", 1, 2, 3, 2, 3)
    missing_w = build("GRU", {"hidden_size": 3}, dict(arrays, W=None))
    with pytest.raises(FormatError, match="required input W"):
        ours(missing_w, folder, {"X": arrays["X"]})

    gelu = build("GRU", {"hidden_size": 3, "activations": ["Sigmoid", "Gelu"]}, arrays)
    with pytest.raises(UnsupportedFeatureError, match="activation 'Gelu'"):
        ours(gelu, folder, {"X": arrays["X"]})

    computed = build("GRU", {"hidden_size": 3}, arrays, runtime=("X", "W"))
    path = folder / "w_input.onnx"
    onnx.save(computed, str(path))
    with pytest.raises(UnsupportedFeatureError, match="W is not a constant"):
        rnnparity.load(path, layer="gru_node")
    # As a whole model, a W fed at run time is fine (onnx's backend tests do it).
    assert_close(rnnparity.load(path).run({"X": arrays["X"], "W": arrays["W"]}),
                 ort_run(computed, {"X": arrays["X"], "W": arrays["W"]}))

    with pytest.raises(InputError, match="sequence_lens"):
        ours(build("GRU", {"hidden_size": 3}, arrays), folder,
             {"X": arrays["X"], "sequence_lens": np.array([4, 1], np.int32)})
    with pytest.raises(InputError, match="semantics"):
        rnnparity.load(path, semantics="tensorrt")
    with pytest.raises(InputError, match="unknown override"):
        rnnparity.load(path, units=3)
    for error in (FormatError, UnsupportedFeatureError, InputError):
        assert "\n" not in str(error("x"))


def test_cli_runs_a_node_and_an_onnxruntime_override(folder, capsys):
    rng = np.random.default_rng(4)
    arrays = random_arrays(rng, "LSTM", 1, 2, 4, 3, 2, initial_h=True, initial_c=True)
    arrays["initial_c"] *= 4
    attributes = {"hidden_size": 2, "clip": 0.5}
    path = folder / "cli_nested.onnx"
    onnx.save(build("LSTM", attributes, arrays), str(path))
    inputs = folder / "in.npz"
    np.savez(inputs, X=arrays["X"], initial_h=arrays["initial_h"],
             initial_c=arrays["initial_c"])
    expected = ort_run(build("LSTM", attributes, arrays), feeds_of(arrays))
    for semantics, should_match in (("onnxruntime", True), ("spec", False)):
        out = folder / f"out_{semantics}.npz"
        code = main(["run", str(path), "--node", "lstm_node", "--input", str(inputs),
                     "--output", str(out), "--override", f"semantics={semantics}"])
        assert code == 0
        with np.load(out) as got:
            diff = float(np.abs(got["Y"] - expected["Y"]).max())
        assert (diff <= ATOL) == should_match, (semantics, diff)
    assert main(["inspect", str(path), "--layer", "lstm_node"]) == 0
    assert "lstm_node (LSTM) in main graph" in capsys.readouterr().out
    assert main(["run", str(path), "--node", "other", "--input", str(inputs)]) == 5
    assert "lstm_node" in capsys.readouterr().err


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_every_schema_attribute_is_handled_and_others_refused(op, folder):
    for version in (1, 7, 14, OPSET):
        schema = onnx.defs.get_schema(op, version)
        assert set(schema.attributes) <= set(dialect.SUPPORTED_ATTRIBUTES[op]), version
    arrays = random_arrays(np.random.default_rng(0), op, 1, 2, 3, 2, 3)
    odd = build(op, {"hidden_size": 3, "peephole_mode": 2}, arrays)
    with pytest.raises(UnsupportedFeatureError, match="peephole_mode"):
        ours(odd, folder, {"X": arrays["X"]})
