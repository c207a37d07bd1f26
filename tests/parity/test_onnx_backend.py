"""The onnx package's own backend node test cases for LSTM, GRU and RNN, run by rnnparity.

Each case is a one-node model with its inputs and expected outputs. Releases that ship the
generated data keep them under ``onnx/backend/test/data/node/test_{lstm,gru,rnn,simple_rnn}_*``
(``model.onnx``, ``test_data_set_0/input_*.pb``, ``output_*.pb``); wheels without that
folder (onnx 1.23.2 has none) still ship the scripts that generate them,
``onnx.backend.test.case.node.{lstm,gru,rnn}``, which are collected instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import require

onnx = require("onnx", "the onnx package holds the backend test cases")

from onnx import numpy_helper  # noqa: E402

import rnnparity  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = pytest.mark.onnx

PREFIXES = ("test_lstm_", "test_gru_", "test_rnn_", "test_simple_rnn_")
RECURRENT = ("LSTM", "GRU", "RNN")


def _from_data_folder() -> dict[str, tuple[object, list, list]]:
    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
    cases = {}
    for folder in sorted(root.glob("test_*")) if root.is_dir() else []:
        if not folder.name.startswith(PREFIXES) or "expanded" in folder.name:
            continue
        data = folder / "test_data_set_0"

        def tensors(kind: str) -> list[np.ndarray]:
            files = sorted(data.glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
            return [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in files]

        cases[folder.name] = (onnx.load(str(folder / "model.onnx")), tensors("input"),
                              tensors("output"))
    return cases


def _from_case_scripts() -> dict[str, tuple[object, list, list]]:
    import importlib

    from onnx.backend.test.case import node

    # Importing a case module runs its exports, which append to node._NodeTestCases.
    for module in ("lstm", "gru", "rnn"):
        importlib.import_module(f"onnx.backend.test.case.node.{module}")
    cases = {}
    for case in node._NodeTestCases:
        nodes = case.model.graph.node
        if len(nodes) == 1 and nodes[0].op_type in RECURRENT:
            inputs, outputs = case.data_sets[0]
            cases[case.name] = (case.model, list(inputs), list(outputs))
    return cases


CASES = _from_data_folder() or _from_case_scripts()


def test_the_backend_cases_were_found():
    kinds = {model.graph.node[0].op_type for model, _, _ in CASES.values()}
    assert kinds == set(RECURRENT), sorted(CASES)
    assert len(CASES) >= 15, sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("semantics", ["spec", "onnxruntime"])
def test_backend_case(name, semantics, tmp_path):
    model_proto, inputs, outputs = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(model_proto, str(path))
    model = rnnparity.load(path, semantics=semantics)
    assert len(model.inputs) == len(inputs)
    results = model.run(dict(zip(model.inputs, inputs)))
    assert len(model.outputs) == len(outputs)
    for output_name, expected in zip(model.outputs, outputs):
        got = results[output_name]
        assert got.shape == expected.shape, (output_name, got.shape, expected.shape)
        diff = float(np.abs(got - expected).max())
        assert diff <= ATOL, f"{name} {output_name}: max abs diff {diff:.3g}"
