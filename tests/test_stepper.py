"""``Model.stepper``: the low-latency one-step path equals the stream and the framework."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

import rnnparity
from rnnparity.errors import UnsupportedFeatureError
from rnnparity.tolerances import ATOL


def test_stepper_equals_whole_run_on_the_shipped_cudnn_example():
    model = rnnparity.load(rnnparity.example_path("cudnn_lstm_3x5.h5"))
    x = np.load(rnnparity.example_path("cudnn_lstm_3x5.input.npy"))
    expected = np.load(rnnparity.example_path("cudnn_lstm_3x5.expected.npz"))["cudnn_lstm"]
    whole = model(x)
    stepper = model.stepper(batch_size=x.shape[0])
    steps = np.stack([stepper(x[:, t]).copy() for t in range(x.shape[1])], axis=1)
    np.testing.assert_allclose(steps, whole, atol=1e-6)
    assert np.abs(steps - expected).max() <= ATOL
    stepper.reset()
    np.testing.assert_allclose(stepper(x[:, 0]), whole[:, 0], atol=1e-6)


def test_stepper_from_torch_state_dict_equals_torch_cell(tmp_path, rng):
    torch = require("torch", "PyTorch is the oracle")
    require("safetensors", "safetensors writes the state_dict")
    from safetensors.torch import save_file

    torch.manual_seed(0)
    module = torch.nn.LSTM(4, 6, batch_first=True)
    save_file(module.state_dict(), tmp_path / "lstm.safetensors")
    x = rng.normal(size=(2, 7, 4)).astype(np.float32)
    h0 = rng.normal(size=(2, 6)).astype(np.float32)
    c0 = rng.normal(size=(2, 6)).astype(np.float32)

    stepper = rnnparity.load(tmp_path / "lstm.safetensors").stepper(2, h0, c0)
    ours = np.stack([stepper(x[:, t]).copy() for t in range(7)], axis=1)
    with torch.no_grad():
        theirs, (h_n, c_n) = module(torch.from_numpy(x), (torch.from_numpy(h0)[None],
                                                          torch.from_numpy(c0)[None]))
    assert np.abs(ours - theirs.numpy()).max() <= ATOL
    assert np.abs(stepper.c - c_n[0].numpy()).max() <= ATOL


def test_stepper_refuses_models_that_are_not_one_cell(tmp_path, rng):
    torch = require("torch", "PyTorch builds the module")
    require("safetensors", "safetensors writes the state_dict")
    from safetensors.torch import save_file

    save_file(torch.nn.GRU(3, 4, bidirectional=True).state_dict(), tmp_path / "bi.safetensors")
    with pytest.raises(UnsupportedFeatureError, match="one forward direction"):
        rnnparity.load(tmp_path / "bi.safetensors").stepper()


def test_stepper_refuses_nan_and_non_arrays_like_every_entry_point():
    from rnnparity.errors import InputError

    stepper = rnnparity.load(rnnparity.example_path("cudnn_lstm_1x2.h5")).stepper()
    with pytest.raises(InputError, match="non-finite value at index"):
        stepper(np.array([[np.nan]], np.float32))
    with pytest.raises(InputError, match="cannot be read as an array"):
        stepper([[1.0], [2.0, 3.0]])
    np.testing.assert_array_equal(stepper.h, 0)  # the refused steps changed nothing
    assert stepper([[0.5]]).shape == (1, 2)
