"""PyTorch state_dict files: structure inferred from keys and shapes, key mapping, refusals.

Numbers against torch are in tests/parity/test_torch.py; here files are written with NumPy
and safetensors alone (torch only for the .pt cases), and what is checked is what the
reader infers, that every format gives the same model, and that bad files fail cleanly
without running anything from them.
"""

from __future__ import annotations

import builtins
import json
import pickle
import subprocess
import sys

import numpy as np
import pytest

import rnnparity
from rnnparity.activations import HARD_SIGMOID_KERAS2, RELU, SIGMOID
from rnnparity.cli.common import ExitCode
from rnnparity.cli.main import main
from rnnparity.dialects import torch as dialect
from rnnparity.errors import (
    FormatError,
    InputError,
    ShapeError,
    UnsupportedFeatureError,
)
from rnnparity.spec import CellSpec, CellWeights

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def state_dict(kind, input_size, hidden_size, *, num_layers=1, bidirectional=False,
               proj_size=0, bias=True, prefix="", seed=0):
    """Random arrays under torch's parameter names, shaped as torch would make them."""
    rng = np.random.default_rng(seed)
    cell = kind.endswith("Cell")
    gates = GATES[kind.removesuffix("Cell")] * hidden_size
    hidden_out = proj_size or hidden_size
    out = {}
    for layer in range(1 if cell else num_layers):
        width = input_size if layer == 0 else (1 + bidirectional) * hidden_out
        for reverse in (False, True)[: 1 + bidirectional]:
            sfx = "" if cell else f"_l{layer}{'_reverse' if reverse else ''}"
            shapes = {"weight_ih": (gates, width), "weight_hh": (gates, hidden_out)}
            if bias:
                shapes.update(bias_ih=(gates,), bias_hh=(gates,))
            if proj_size:
                shapes["weight_hr"] = (proj_size, hidden_size)
            for name, shape in shapes.items():
                out[f"{prefix}{name}{sfx}"] = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    return out


def save(arrays, path):
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    else:
        np.savez(path, **arrays)
    return path


@pytest.fixture
def x(rng):
    return rng.standard_normal((2, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("kind,options,expected", [
    ("LSTM", dict(num_layers=2, bidirectional=True, proj_size=2),
     "LSTM input_size=5 hidden_size=3 num_layers=2 bidirectional=True proj_size=2 bias=True"),
    ("GRU", dict(bias=False), "GRU input_size=5 hidden_size=3 num_layers=1 "
     "bidirectional=False bias=False"),
    ("RNN", dict(num_layers=3), "RNN input_size=5 hidden_size=3 num_layers=3 "
     "bidirectional=False bias=True"),
    ("LSTMCell", {}, "LSTMCell input_size=5 hidden_size=3 bias=True"),
])
def test_structure_is_inferred_from_keys_and_shapes(kind, options, expected, tmp_path, x):
    path = save(state_dict(kind, 5, 3, prefix="net.rnn.", **options),
                tmp_path / "m.safetensors")
    model = rnnparity.load(path)
    assert model.meta["modules"] == [f"net.rnn: {expected}"]
    assert model.meta["module_kind"] == kind
    info = model.describe()["layers"][0]
    assert info["kind"] == f"torch.nn.{kind}"
    assert info["hidden_size"] == 3 and info["input_size"] == 5
    if not kind.endswith("Cell"):
        out = model(x)
        directions = 1 + options.get("bidirectional", False)
        hidden_out = options.get("proj_size") or 3
        assert out["output"].shape == (2, 4, directions * hidden_out)
        assert out["h_n"].shape == (options.get("num_layers", 1) * directions, 2, hidden_out)


def test_formats_give_identical_models(tmp_path, x):
    arrays = state_dict("GRU", 5, 4, num_layers=2, bidirectional=True)
    a = rnnparity.load(save(arrays, tmp_path / "a.safetensors"))(x)
    b = rnnparity.load(save(arrays, tmp_path / "b.npz"))(x)
    for name in ("output", "h_n"):
        np.testing.assert_array_equal(a[name], b[name])


def test_assumptions_are_recorded_and_overridable(tmp_path, x):
    path = save(state_dict("RNN", 5, 3), tmp_path / "rnn.npz")
    model = rnnparity.load(path)
    notes = " ".join(model.meta["assumed"])
    assert "nonlinearity='tanh'" in notes and "batch_first=True" in notes
    relu = rnnparity.load(path, nonlinearity="relu", batch_first=False)
    assert relu.meta["assumed"] == []
    assert relu.describe()["layers"][0]["nonlinearity"] == "relu"
    time_major = relu(x.transpose(1, 0, 2))["output"]
    assert time_major.shape == (4, 2, 3)
    assert (time_major >= 0).all() and not np.allclose(time_major.transpose(1, 0, 2),
                                                       model(x)["output"])


def test_several_modules_need_a_layer(tmp_path):
    arrays = {**state_dict("LSTM", 5, 3, prefix="encoder.rnn."),
              **state_dict("GRUCell", 3, 2, prefix="decoder.cell.", seed=1),
              "head.weight": np.zeros((2, 2), np.float32)}
    path = save(arrays, tmp_path / "big.safetensors")
    with pytest.raises(InputError, match="2 recurrent modules: decoder.cell .cell.; "
                                         "encoder.rnn .module."):
        rnnparity.load(path)
    assert rnnparity.load(path, layer="encoder.rnn.").meta["module"] == "encoder.rnn"
    assert rnnparity.load(path, layer="cell").meta["module_kind"] == "GRUCell"
    with pytest.raises(InputError, match="matches none"):
        rnnparity.load(path, layer="rnn2")


def test_key_mapping_matches_torch_names(tmp_path, x):
    arrays = state_dict("GRU", 5, 4)
    stored = {f"enc_{k.removesuffix('_l0')}": v for k, v in arrays.items()}
    stored["enc_emb"] = np.zeros((7, 5), np.float32)
    path = save(stored, tmp_path / "g2p_like.npz")
    keys = {k: f"enc_{k.removesuffix('_l0')}" for k in arrays}
    with pytest.raises(FormatError, match="no recurrent module found.*keys="):
        rnnparity.load(path)

    mapped = rnnparity.load(path, keys=keys)
    direct = rnnparity.load(save(arrays, tmp_path / "plain.npz"))
    np.testing.assert_array_equal(mapped(x)["output"], direct(x)["output"])
    assert mapped.meta["keys"] == keys

    out = tmp_path / "y.npz"
    np.save(tmp_path / "x.npy", x)
    code = main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--output", str(out),
                 "--override", f"keys={json.dumps(keys)}"])
    assert code == 0
    with np.load(out) as got:
        np.testing.assert_array_equal(got["output"], direct(x)["output"])


@pytest.mark.parametrize("keys,message", [
    ({"weight_ih_l0": "missing_name"}, "'missing_name' .for weight_ih_l0. is not in the file"),
    ({"kernel": "enc_weight_ih"}, "'kernel' is not a torch recurrent parameter name"),
    (["weight_ih_l0"], "keys must map torch parameter names"),
])
def test_bad_key_mappings(keys, message, tmp_path):
    path = save({"enc_weight_ih": np.zeros((3, 2), np.float32)}, tmp_path / "m.npz")
    with pytest.raises(InputError, match=message):
        rnnparity.load(path, keys=keys)


def test_unknown_override_lists_the_known_ones(tmp_path):
    path = save(state_dict("GRU", 5, 4), tmp_path / "m.npz")
    with pytest.raises(InputError, match="unknown overrides \\['units'\\].*'keys'"):
        rnnparity.load(path, units=4)


def broken(name, value):
    arrays = state_dict("LSTM", 5, 3, num_layers=2)
    arrays[name] = value
    return arrays


@pytest.mark.parametrize("arrays,error,message", [
    (broken("weight_ih_l0", np.zeros((8, 5), np.float32)), ShapeError,
     "weight_ih_l0 has 8 rows but weight_hh_l0 has 12"),
    (broken("bias_hh_l1", np.zeros((11,), np.float32)), ShapeError,
     "bias_hh_l1 has shape \\(11,\\); expected \\(4 \\* hidden_size,\\) = \\(12,\\)"),
    (broken("weight_ih_l1", np.zeros((12, 5), np.float32)), ShapeError,
     "weight_ih_l1 has shape \\(12, 5\\); expected .* = \\(12, 3\\)"),
    (broken("weight_hh_l0", np.zeros((12, 5), np.float32)), ShapeError,
     "weight_hh_l0 has shape \\(12, 5\\); expected \\(num_gates \\* hidden_size"),
    ({k: v for k, v in state_dict("GRU", 5, 3).items() if k != "bias_hh_l0"}, FormatError,
     "\\['bias_hh_l0'\\] are missing"),
    ({k: v for k, v in state_dict("GRU", 5, 3, num_layers=3).items() if "_l1" not in k},
     FormatError, "layers \\[0, 2\\] found"),
])
def test_contradicting_shapes_are_named(arrays, error, message, tmp_path):
    path = save(arrays, tmp_path / "bad.safetensors")
    with pytest.raises(error, match=message):
        rnnparity.load(path)


def test_kind_override_contradicting_the_shapes(tmp_path):
    path = save(state_dict("GRU", 5, 3), tmp_path / "gru.npz")
    with pytest.raises(ShapeError, match="hint: weight_hh_l0's shape is that of a GRU"):
        rnnparity.load(path, kind="RNN")
    assert rnnparity.load(path, kind="GRU").meta["module_kind"] == "GRU"


def test_cli_bad_state_dict_is_one_line(tmp_path, capsys):
    path = save(broken("weight_ih_l0", np.zeros((8, 5), np.float32)), tmp_path / "bad.npz")
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 5), np.float32))
    code = main(["run", str(path), "--input", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT
    assert err.count("\n") == 1 and "weight_ih_l0" in err and "Traceback" not in err


def test_object_arrays_in_npz_are_refused(tmp_path):
    path = tmp_path / "objects.npz"
    weights = state_dict("GRU", 5, 3)
    weights["weight_ih_l0"] = np.array([{"a": 1}] * 3, dtype=object)
    np.savez(path, **weights)
    with pytest.raises(FormatError, match="pickled objects"):
        rnnparity.load(path)


def test_library_imports_without_frameworks():
    code = ("import sys, rnnparity, rnnparity.io.torch_file, rnnparity.dialects.torch; "
            "bad = [m for m in ('torch', 'safetensors', 'tensorflow') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


# --- the canonical mapping (no framework needed) -----------------------------------------

def canonical(kind="lstm", **changes):
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
    rng = np.random.default_rng(0)
    spec = CellSpec(kind=kind, input_size=4, hidden_size=3).with_(**changes)
    weights = CellWeights(rng.standard_normal((gates * 3, 4)),
                          rng.standard_normal((gates * 3, 3)),
                          b_ih=rng.standard_normal(gates * 3))
    return spec, weights


@pytest.mark.parametrize("kind,changes,feature", [
    ("gru", dict(reset_after=False), "reset gate applied before"),
    ("lstm", dict(gate_activation=HARD_SIGMOID_KERAS2), "gate_activation=hard_sigmoid"),
    ("lstm", dict(activation=RELU), "activation=relu"),
    ("lstm", dict(forget_bias=1.0), "forget_bias=1"),
    ("lstm", dict(cell_clip=3.0), "cell_clip=3"),
    ("gru", dict(clip=2.0), "clip=2"),
    ("lstm", dict(input_forget=True), "input_forget"),
])
def test_from_canonical_names_what_torch_cannot_express(kind, changes, feature):
    spec, weights = canonical(kind, **changes)
    with pytest.raises(UnsupportedFeatureError, match=feature):
        dialect.from_canonical(spec, weights)


def test_from_canonical_peepholes_and_single_bias():
    spec, weights = canonical("lstm")
    arrays = dialect.from_canonical(spec, weights)
    np.testing.assert_array_equal(arrays["bias_ih"], weights.b_ih)
    np.testing.assert_array_equal(arrays["bias_hh"], np.zeros(12))
    weights.peephole = np.ones((3, 3))
    with pytest.raises(UnsupportedFeatureError, match="peephole"):
        dialect.from_canonical(spec, weights)
    relu_rnn, rnn_weights = canonical("rnn", activation=RELU)
    assert set(dialect.from_canonical(relu_rnn, rnn_weights, kind="RNNCell")) == {
        "weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    assert relu_rnn.gate_activation == SIGMOID


def test_params_round_trip_through_layers():
    arrays = state_dict("LSTM", 5, 3, num_layers=2, bidirectional=True, proj_size=2)
    layers = dialect.layers_from_params("LSTM", arrays, num_layers=2, bidirectional=True)
    back = dialect.params_from_layers("LSTM", layers)
    assert sorted(back) == sorted(arrays)
    for name, value in arrays.items():
        assert back[name] is value


# --- .pt files: torch.load(weights_only=True) and nothing else -----------------------------

class Hostile:
    """Unpickling this object opens (creates) a file: the marker that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


@pytest.fixture
def torch():
    from conftest import require

    return require("torch", "PyTorch reads .pt files")


@pytest.mark.torch
def test_pt_state_dict_loads(torch, tmp_path, x):
    arrays = state_dict("LSTM", 5, 3, num_layers=2)
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, tmp_path / "m.pt")
    got = rnnparity.load(tmp_path / "m.pt")(x)
    expected = rnnparity.load(save(arrays, tmp_path / "m.npz"))(x)
    np.testing.assert_array_equal(got["output"], expected["output"])


@pytest.mark.torch
@pytest.mark.parametrize("how", ["torch.save", "pickle"])
def test_hostile_pickle_is_refused_and_never_runs(how, torch, tmp_path, capsys):
    marker = tmp_path / "marker"
    path = tmp_path / "hostile.pt"
    payload = {"weight_ih_l0": torch.zeros(4, 2), "evil": Hostile(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    assert b"open" in path.read_bytes()  # the payload really is in the file

    with pytest.raises(FormatError, match="refused"):
        rnnparity.load(path)
    assert not marker.exists()

    np.save(tmp_path / "x.npy", np.zeros((1, 2, 2), np.float32))
    code = main(["run", str(path), "--input", str(tmp_path / "x.npy")])
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT and err.count("\n") == 1 and "refused" in err
    assert not marker.exists()


@pytest.mark.torch
def test_pt_that_is_not_a_flat_state_dict(torch, tmp_path):
    nested = {"model": {"weight_ih_l0": torch.zeros(4, 2)}, "epoch": 3}
    torch.save(nested, tmp_path / "checkpoint.pt")
    with pytest.raises(FormatError, match="not a plain state_dict"):
        rnnparity.load(tmp_path / "checkpoint.pt")
    torch.save(torch.nn.GRU(2, 3), tmp_path / "module.pt")
    with pytest.raises(FormatError, match="refused"):
        rnnparity.load(tmp_path / "module.pt")
