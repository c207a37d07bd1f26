"""PyTorch parity: rnnparity against torch on CPU, over shapes and every module option.

torch is the oracle: random weights (torch's own init, biases included), batch >= 2,
seq_len >= 3, input_size != hidden_size. Packed sequences are run in torch with
pack_padded_sequence / pad_packed_sequence(total_length=seq_len).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require
from hypothesis import given, settings
from hypothesis import strategies as st

torch = require("torch", "PyTorch is the oracle for the torch dialect")

import rnnparity  # noqa: E402
from rnnparity.cli.main import main  # noqa: E402
from rnnparity.dialects import torch as dialect  # noqa: E402
from rnnparity.errors import (  # noqa: E402
    InputError,
    RnnParityWarning,
    UnsupportedFeatureError,
)
from rnnparity.tolerances import ATOL, ATOL_FLOAT64  # noqa: E402

pytestmark = pytest.mark.torch

MODULES = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}
CELLS = {"LSTMCell": torch.nn.LSTMCell, "GRUCell": torch.nn.GRUCell,
         "RNNCell": torch.nn.RNNCell}


def make_module(kind, input_size, hidden_size, *, seed=0, nonlinearity="tanh", **options):
    """A torch module in eval mode with every parameter (biases too) drawn at random."""
    torch.manual_seed(seed)
    if kind in ("RNN", "RNNCell"):
        options["nonlinearity"] = nonlinearity
    cls = MODULES.get(kind) or CELLS[kind]
    module = cls(input_size, hidden_size, **options).eval()
    with torch.no_grad():
        for param in module.parameters():
            param.uniform_(-0.6, 0.6)
    return module


def torch_run(module, x, lengths=None, h0=None, c0=None):
    """Run a torch module; with lengths as a packed sequence padded back to seq_len."""
    batch_first = module.batch_first
    seq_len = x.shape[1] if batch_first else x.shape[0]
    xt = torch.from_numpy(x)
    hx = None
    if h0 is not None:
        hx = (torch.from_numpy(h0), torch.from_numpy(c0)) if c0 is not None else \
            torch.from_numpy(h0)
    with torch.no_grad():
        if lengths is not None:
            xt = torch.nn.utils.rnn.pack_padded_sequence(
                xt, torch.as_tensor(lengths, dtype=torch.int64), batch_first=batch_first,
                enforce_sorted=False)
        y, state = module(xt, hx)
        if lengths is not None:
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(
                y, batch_first=batch_first, total_length=seq_len)
    states = list(state) if isinstance(state, tuple) else [state]
    return [y.numpy()] + [s.numpy() for s in states]


def max_diff(ours, theirs):
    return max(float(np.abs(np.asarray(a) - b).max()) for a, b in zip(ours, theirs))


def by_name(model, out):
    """Model outputs as a dict even when the model has a single output."""
    return out if isinstance(out, dict) else {model.outputs[0]: out}


def ours_run(model, x, lengths=None, h0=None, c0=None):
    feeds = {"input": x}
    if h0 is not None:
        feeds["h0"] = h0
    if c0 is not None:
        feeds["c0"] = c0
    out = by_name(model, model(feeds, lengths=lengths))
    return [out[name] for name in model.outputs]


def initial_states(rng, kind, num_states, batch, hidden_size, proj_size):
    h0 = rng.standard_normal((num_states, batch, proj_size or hidden_size)).astype(np.float32)
    c0 = rng.standard_normal((num_states, batch, hidden_size)).astype(np.float32) \
        if kind == "LSTM" else None
    return h0, c0


@st.composite
def module_cases(draw):
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN", "RNN_relu"]))
    hidden_size = draw(st.integers(1, 6))
    case = dict(
        kind=kind.split("_")[0],
        nonlinearity="relu" if kind.endswith("relu") else "tanh",
        input_size=hidden_size + draw(st.integers(1, 3)),
        hidden_size=hidden_size,
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden_size - 1)) if kind == "LSTM" else 0,
        batch=draw(st.integers(2, 4)),
        seq_len=draw(st.integers(3, 6)),
        initial_state=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )
    if draw(st.booleans()):
        # include the extremes 1 and seq_len explicitly, then anything in between
        lengths = draw(st.lists(st.integers(1, case["seq_len"]), min_size=case["batch"] - 2,
                                max_size=case["batch"] - 2))
        case["lengths"] = draw(st.permutations([1, case["seq_len"]] + lengths))
    return case


def check_case(case):
    kind = case["kind"]
    options = dict(num_layers=case["num_layers"], bidirectional=case["bidirectional"],
                   batch_first=case["batch_first"], bias=case["bias"])
    if case["proj_size"]:
        options["proj_size"] = case["proj_size"]
    module = make_module(kind, case["input_size"], case["hidden_size"], seed=case["seed"],
                         nonlinearity=case["nonlinearity"], **options)
    rng = np.random.default_rng(case["seed"])
    batch, seq_len = case["batch"], case["seq_len"]
    shape = (batch, seq_len) if case["batch_first"] else (seq_len, batch)
    x = rng.standard_normal(shape + (case["input_size"],)).astype(np.float32)
    h0 = c0 = None
    if case["initial_state"]:
        num_states = case["num_layers"] * (1 + case["bidirectional"])
        h0, c0 = initial_states(rng, kind, num_states, batch, case["hidden_size"],
                                case["proj_size"])
    lengths = case.get("lengths")

    expected = torch_run(module, x, lengths, h0, c0)
    got = ours_run(rnnparity.from_torch(module), x, lengths, h0, c0)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert max_diff(got, expected) <= ATOL, case


@settings(max_examples=25, deadline=None)
@given(module_cases())
def test_modules_match_torch_over_drawn_options(case):
    check_case(case)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_lengths_with_states_every_kind(kind, bidirectional):
    # Every kind with both directions, two layers, initial states and lengths 1..full.
    case = dict(kind=kind, nonlinearity="tanh", input_size=5, hidden_size=3, num_layers=2,
                bidirectional=bidirectional, batch_first=True, bias=True,
                proj_size=2 if kind == "LSTM" else 0, batch=4, seq_len=6,
                initial_state=True, seed=7, lengths=[6, 1, 4, 2])
    check_case(case)


def test_relu_rnn_time_major_without_bias():
    case = dict(kind="RNN", nonlinearity="relu", input_size=4, hidden_size=6, num_layers=2,
                bidirectional=True, batch_first=False, bias=False, proj_size=0, batch=3,
                seq_len=5, initial_state=False, seed=3, lengths=[5, 3, 1])
    check_case(case)


def test_unbatched_input_matches_torch(rng):
    module = make_module("LSTM", 4, 3, num_layers=2, bidirectional=True)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    expected = torch_run(module, x)
    got = ours_run(rnnparity.from_torch(module), x)
    assert [g.shape for g in got] == [e.shape for e in expected]
    assert max_diff(got, expected) <= ATOL


@pytest.mark.parametrize("kind,nonlinearity", [("LSTMCell", "tanh"), ("GRUCell", "tanh"),
                                               ("RNNCell", "tanh"), ("RNNCell", "relu")])
def test_cells_one_step_and_over_a_sequence(kind, nonlinearity, rng):
    module = make_module(kind, 5, 3, nonlinearity=nonlinearity)
    model = rnnparity.from_torch(module)
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    h0 = rng.standard_normal((2, 3)).astype(np.float32)
    c0 = rng.standard_normal((2, 3)).astype(np.float32)
    lstm = kind == "LSTMCell"

    # one step: (batch, input_size) with explicit states, exactly the cell's call
    with torch.no_grad():
        hx = (torch.from_numpy(h0), torch.from_numpy(c0)) if lstm else torch.from_numpy(h0)
        one = module(torch.from_numpy(x[:, 0]), hx)
    one = [t.numpy() for t in (one if lstm else (one,))]
    feeds = {"input": x[:, 0], "h0": h0, **({"c0": c0} if lstm else {})}
    got = by_name(model, model(feeds))
    assert max_diff([got[n] for n in model.outputs], one) <= ATOL

    # a sequence: the cell stepped in a Python loop, state carried, every step's h kept
    state = None
    steps = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            state = module(torch.from_numpy(x[:, t]), state)
            steps.append((state[0] if lstm else state).numpy())
    got = by_name(model, model(x))
    h = got["h"]
    assert h.shape == (2, 4, 3)
    assert float(np.abs(h - np.stack(steps, axis=1)).max()) <= ATOL
    if lstm:
        assert float(np.abs(got["c"] - state[1].numpy()).max()) <= ATOL


def test_unbatched_cell_step(rng):
    module = make_module("GRUCell", 4, 2)
    x = rng.standard_normal(4).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got = rnnparity.from_torch(module)(x)
    assert got.shape == expected.shape == (2,)
    assert float(np.abs(got - expected).max()) <= ATOL


def test_from_live_submodule_by_name(rng):
    outer = torch.nn.Sequential()
    outer.add_module("enc", make_module("GRU", 3, 4, batch_first=True))
    model = rnnparity.from_torch(outer, layer="enc")
    x = rng.standard_normal((2, 3, 3)).astype(np.float32)
    assert max_diff(ours_run(model, x), torch_run(outer.enc, x)) <= ATOL
    with pytest.raises(UnsupportedFeatureError, match="not a torch recurrent module"):
        rnnparity.from_torch(outer)
    with pytest.raises(InputError, match="recurrent submodules: \\['enc'\\]"):
        rnnparity.from_torch(outer, layer="dec")


def save_state_dict(module, path):
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix == ".npz":
        np.savez(path, **{k: v.numpy() for k, v in state.items()})
    else:
        torch.save(module.state_dict(), path)


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".pt"])
def test_files_match_torch(suffix, tmp_path, rng):
    # a module inside a bigger model: picked by its prefix, structure inferred from keys
    outer = torch.nn.Module()
    outer.encoder = torch.nn.Module()
    outer.encoder.rnn = make_module("LSTM", 5, 4, num_layers=2, bidirectional=True,
                                    proj_size=3, batch_first=True, seed=11)
    outer.head = torch.nn.Linear(6, 2)
    path = tmp_path / f"model{suffix}"
    save_state_dict(outer, path)

    model = rnnparity.load(path, layer="encoder.rnn")
    x = rng.standard_normal((3, 6, 5)).astype(np.float32)
    lengths = [6, 2, 1]
    h0, c0 = initial_states(rng, "LSTM", 4, 3, 4, 3)
    expected = torch_run(outer.encoder.rnn, x, lengths, h0, c0)
    assert max_diff(ours_run(model, x, lengths, h0, c0), expected) <= ATOL
    assert model.meta["module_kind"] == "LSTM"


@pytest.mark.parametrize("kind", ["RNN", "GRUCell"])
def test_files_with_overrides(kind, tmp_path, rng):
    module = make_module(kind, 3, 5, nonlinearity="relu", seed=5)
    path = tmp_path / "m.safetensors"
    save_state_dict(module, path)
    if kind == "RNN":
        # time-major and relu, as the module was built: neither is in a state_dict
        model = rnnparity.load(path, nonlinearity="relu", batch_first=False)
        x = rng.standard_normal((4, 2, 3)).astype(np.float32)
        assert max_diff(ours_run(model, x), torch_run(module, x)) <= ATOL
        tanh = rnnparity.load(path)
        assert any("nonlinearity='tanh'" in note for note in tanh.meta["assumed"])
        assert max_diff(ours_run(tanh, x.transpose(1, 0, 2)),
                        [a.transpose(1, 0, 2) for a in torch_run(module, x)[:1]]) > ATOL
    else:
        model = rnnparity.load(path)
        x = rng.standard_normal((2, 3)).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        assert float(np.abs(model(x) - expected).max()) <= ATOL


def test_stream_chunks_equal_whole_sequence_and_torch_states(rng):
    module = make_module("LSTM", 4, 3, num_layers=2, proj_size=2, batch_first=True)
    model = rnnparity.from_torch(module)
    x = rng.standard_normal((2, 7, 4)).astype(np.float32)
    whole = model(x)
    stream = model.stream(batch_size=2)
    parts = [stream.chunk(x[:, :3]), stream.step(x[:, 3]), stream.chunk(x[:, 4:])]
    joined = np.concatenate([parts[0]["output"], parts[1]["output"][:, None],
                             parts[2]["output"]], axis=1)
    assert float(np.abs(joined - whole["output"]).max()) <= ATOL
    h_n, c_n = stream.states[model.layers[0].name]
    expected = torch_run(module, x)
    assert float(np.abs(h_n - expected[1]).max()) <= ATOL
    assert float(np.abs(c_n - expected[2]).max()) <= ATOL
    assert parts[1]["h_n"].shape == (2, 2, 2)  # a state, not split along time

    bidirectional = rnnparity.from_torch(make_module("GRU", 4, 3, bidirectional=True))
    with pytest.raises(UnsupportedFeatureError, match="cannot stream"):
        bidirectional.stream()


def test_cell_stream_carries_state(rng):
    module = make_module("LSTMCell", 4, 3)
    model = rnnparity.from_torch(module)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    stream = model.stream(batch_size=2)
    state = None
    with torch.no_grad():
        for t in range(5):
            got = by_name(model, stream.step(x[:, t]))
            state = module(torch.from_numpy(x[:, t]), state)
            assert float(np.abs(got["h"] - state[0].numpy()).max()) <= ATOL
            assert float(np.abs(got["c"] - state[1].numpy()).max()) <= ATOL


def test_cli_run_with_lengths_and_chunks(tmp_path, rng, capsys):
    module = make_module("GRU", 4, 3, num_layers=2, batch_first=True, seed=2)
    path = tmp_path / "gru.safetensors"
    save_state_dict(module, path)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    lengths = np.array([5, 1, 3])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "lengths.npy", lengths)

    out = tmp_path / "y.npz"
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--lengths",
                 str(tmp_path / "lengths.npy"), "--output", str(out)]) == 0
    expected = torch_run(module, x, lengths)
    with np.load(out) as got:
        assert max_diff([got["output"], got["h_n"]], expected) <= ATOL

    chunked = tmp_path / "chunked.npz"
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--chunk", "2",
                 "--output", str(chunked)]) == 0
    with np.load(chunked) as got:
        assert max_diff([got["output"], got["h_n"]], torch_run(module, x)) <= ATOL
    capsys.readouterr()


def test_round_trip_through_canonical_is_exact():
    for kind in ("LSTM", "GRU", "RNN", "LSTMCell"):
        options = {"proj_size": 2} if kind == "LSTM" else {}
        module = make_module(kind, 4, 3, **options)
        arrays = {k: v.detach().numpy() for k, v in module.named_parameters()}
        if kind == "LSTMCell":
            picked = arrays
        else:
            picked = {k.removesuffix("_l0"): v for k, v in arrays.items()}
        spec, weights = dialect.to_canonical(kind, picked)
        back = dialect.from_canonical(spec, weights, kind=kind)
        assert sorted(back) == sorted(picked)
        for name, value in picked.items():
            np.testing.assert_array_equal(back[name], value)


def test_lengths_torch_refuses_are_refused(rng):
    module = make_module("GRU", 4, 3, batch_first=True)
    model = rnnparity.from_torch(module)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    with pytest.raises(RuntimeError, match="greater than 0"):
        torch_run(module, x, [5, 0])
    with pytest.raises(InputError, match="must lie in \\[1, seq_len=5\\]"):
        model(x, lengths=[5, 0])
    with pytest.raises(InputError, match="must lie in"):
        model(x, lengths=[6, 2])


def test_time_major_model_streams_along_axis_0(rng):
    module = make_module("LSTM", 4, 3, batch_first=False)
    model = rnnparity.from_torch(module)
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)  # (seq_len, batch, input_size)
    stream = model.stream(batch_size=2)
    steps = [stream.step(x[t])["output"] for t in range(5)]  # each (batch, hidden)
    assert max_diff([np.stack(steps)], torch_run(module, x)) <= ATOL


def test_live_module_with_parametrized_weights(rng):
    from torch.nn.utils.parametrizations import weight_norm

    module = weight_norm(make_module("GRU", 3, 4, batch_first=True), name="weight_hh_l0")
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    assert max_diff(ours_run(rnnparity.from_torch(module), x), torch_run(module, x)) <= ATOL


def test_training_mode_dropout_warns():
    module = torch.nn.LSTM(3, 4, num_layers=2, dropout=0.5)  # modules start in training mode
    with pytest.warns(RnnParityWarning, match="training mode with dropout=0.5"):
        model = rnnparity.from_torch(module)
    assert "not applied" in model.describe()["layers"][0]["dropout"]


def test_float64_live_module_matches_torch_double(rng):
    module = make_module("LSTM", 4, 5, num_layers=2, bidirectional=True, batch_first=True)
    module = module.double()
    model = rnnparity.from_torch(module, dtype="float64")
    x = rng.standard_normal((3, 6, 4))
    got = ours_run(model, x, lengths=[6, 1, 3])
    assert got[0].dtype == np.float64
    assert max_diff(got, torch_run(module, x, [6, 1, 3])) <= ATOL_FLOAT64
