"""silero-vad 6.2.3 ``silero_vad.onnx``: its LSTM nodes, inside If branches, run alone.

Each LSTM node's W/R/B are cut out of constants by Slice/Concat/Unsqueeze chains in outer
scopes. The oracle is onnxruntime running the same node alone, with W/R/B computed by
onnx's reference evaluator from the same constant subgraph (not by rnnparity's folder).
Inputs are shaped like the decoder's: non-negative encoder features of width 128, and
states carried over from an earlier chunk, as silero feeds them between calls.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

onnx = require("onnx", "onnx reads the silero-vad model for the oracle")
ort = require("onnxruntime", "onnxruntime is the oracle for the ONNX dialect")

from onnx import AttributeProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import rnnparity  # noqa: E402
from rnnparity.cli.main import main  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = pytest.mark.models


def find_lstms(graph, scopes=()):
    """(node, enclosing graphs outermost first) for every LSTM node, subgraphs included."""
    scopes = (*scopes, graph)
    for node in graph.node:
        if node.op_type == "LSTM":
            yield node, scopes
        for attribute in node.attribute:
            if attribute.type == AttributeProto.GRAPH:
                yield from find_lstms(attribute.g, scopes)


def reference_constants(node, scopes, slots=(1, 2, 3)):
    """W, R, B of ``node`` evaluated by onnx.reference over the nodes that produce them."""
    producers, initializers = {}, {}
    for graph in scopes:
        for tensor in graph.initializer:
            initializers[tensor.name] = tensor
        for n in graph.node:
            for output in n.output:
                producers[output] = n
    needed, order, seen = [node.input[k] for k in slots], [], set()

    def visit(name):
        if not name or name in seen or name in initializers:
            return
        seen.add(name)
        producer = producers[name]
        for i in producer.input:
            visit(i)
        if producer not in order:
            order.append(producer)

    for name in needed:
        visit(name)
    graph = helper.make_graph(order, "constants", [], [
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in needed],
        list(initializers.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])
    return ReferenceEvaluator(model).run(None, {})


def single_lstm(node, W, R, B):
    inputs = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
              for n in ("X", "initial_h", "initial_c")]
    lstm = helper.make_node("LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c"],
                            ["Y", "Y_h", "Y_c"])
    lstm.attribute.extend(node.attribute)
    graph = helper.make_graph(
        [lstm], "one_lstm", inputs,
        [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
         for n in ("Y", "Y_h", "Y_c")],
        [numpy_helper.from_array(a, n) for a, n in ((W, "W"), (R, "R"), (B, "B"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)],
                              ir_version=8)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def silero(registry_model):
    path = registry_model("silero_vad_onnx")
    nodes = list(find_lstms(onnx.load(str(path)).graph))
    assert len(nodes) == 4, [n.name for n, _ in nodes]
    return path, nodes


def decoder_inputs(rng, seq_len, batch=2):
    x = np.maximum(rng.normal(0.2, 0.6, (seq_len, batch, 128)), 0).astype(np.float32)
    return x


def test_every_lstm_node_equals_onnxruntime(silero):
    path, nodes = silero
    rng = np.random.default_rng(2024)
    for node, scopes in nodes:
        W, R, B = reference_constants(node, scopes)
        session = single_lstm(node, W, R, B)
        model = rnnparity.load(path, layer=node.name)
        assert model.describe()["node_path"].startswith("If_0.")

        warm_up = {"X": decoder_inputs(rng, 20), "initial_h": np.zeros((1, 2, 128), np.float32),
                   "initial_c": np.zeros((1, 2, 128), np.float32)}
        _, h, c = session.run(None, warm_up)
        feeds = {"X": decoder_inputs(rng, 12), "initial_h": h, "initial_c": c}
        expected = dict(zip(("Y", "Y_h", "Y_c"), session.run(None, feeds)))
        got = model.run(feeds)
        for key, value in expected.items():
            diff = float(np.abs(got[key] - value).max())
            assert diff <= ATOL, f"{node.name} {key}: max abs diff {diff:.3g}"
        assert float(np.abs(expected["Y_c"]).max()) > 0.5  # states that matter

        # silero steps one frame per call: chunks of one step carry the same state.
        zeros = {"X": feeds["X"][:1]}
        expected_first = dict(zip(("Y", "Y_h", "Y_c"), session.run(None, dict(
            zeros, initial_h=np.zeros((1, 2, 128), np.float32),
            initial_c=np.zeros((1, 2, 128), np.float32)))))
        got_first = model.run(zeros)
        assert float(np.abs(got_first["Y_h"] - expected_first["Y_h"]).max()) <= ATOL


def test_cli_runs_one_node(silero, tmp_path, capsys):
    path, nodes = silero
    node, scopes = nodes[-1]
    rng = np.random.default_rng(7)
    feeds = {"X": decoder_inputs(rng, 8, batch=1),
             "initial_h": rng.normal(0, 0.3, (1, 1, 128)).astype(np.float32),
             "initial_c": rng.normal(0, 1.0, (1, 1, 128)).astype(np.float32)}
    inputs, outputs = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(inputs, **feeds)
    code = main(["run", str(path), "--node", node.name, "--input", str(inputs),
                 "--output", str(outputs)])
    assert code == 0, capsys.readouterr().err
    expected = single_lstm(node, *reference_constants(node, scopes)).run(None, feeds)
    with np.load(outputs) as got:
        for key, value in zip(("Y", "Y_h", "Y_c"), expected):
            assert float(np.abs(got[key] - value).max()) <= ATOL

    assert main(["inspect", str(path)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("(LSTM) in If_0.") >= 4  # every node with its subgraph path
    assert main(["run", str(path), "--input", str(inputs)]) != 0
    assert "--node" in capsys.readouterr().err
