"""Keras dialect conversions without a framework: exact round trips and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnparity import InputError, ShapeError, UnsupportedFeatureError
from rnnparity.activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3, SIGMOID
from rnnparity.dialects import keras as kd
from rnnparity.spec import CellWeights

GATES = {"LSTM": 4, "GRU": 3, "SimpleRNN": 1, "CuDNNLSTM": 4, "CuDNNGRU": 3}


def keras_arrays(kind: str, n: int, u: int, seed: int, reset_after: bool = True,
                 use_bias: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    g = GATES[kind]
    arrays = {"kernel": rng.normal(size=(n, g * u)).astype(np.float32),
              "recurrent_kernel": rng.normal(size=(u, g * u)).astype(np.float32)}
    if use_bias:
        if kind.startswith("CuDNN"):
            shape: tuple[int, ...] = (2 * g * u,)
        elif kind == "GRU" and reset_after:
            shape = (2, 3 * u)
        else:
            shape = (g * u,)
        arrays["bias"] = rng.normal(size=shape).astype(np.float32)
    return arrays


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU"]),
       n=st.integers(1, 6), u=st.integers(1, 6), reset_after=st.booleans(),
       use_bias=st.booleans(), seed=st.integers(0, 1000))
def test_round_trip_is_exact(kind, n, u, reset_after, use_bias, seed):
    use_bias = use_bias or kind.startswith("CuDNN")
    arrays = keras_arrays(kind, n, u, seed, reset_after, use_bias)
    spec, weights = kd.to_canonical(kind, arrays, keras_version="2.21.0")
    assert (spec.input_size, spec.hidden_size) == (n, u)
    back = kd.from_canonical(spec, weights, kind=kind, keras_version="2.21.0")
    assert sorted(back) == sorted(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)


def test_cudnn_lstm_is_keras_lstm_with_converted_blocks():
    """CuDNNLSTM weights and their Keras-converted LSTM weights give one canonical cell."""
    n, u = 3, 2
    raw = keras_arrays("CuDNNLSTM", n, u, seed=3)
    blocks = range(4)
    converted = {
        "kernel": np.concatenate([raw["kernel"][:, g * u:(g + 1) * u].reshape(u, n).T
                                  for g in blocks], axis=1),
        "recurrent_kernel": np.concatenate([raw["recurrent_kernel"][:, g * u:(g + 1) * u].T
                                            for g in blocks], axis=1),
    }
    _, cudnn = kd.to_canonical("CuDNNLSTM", raw)
    _, plain = kd.to_canonical("LSTM", converted, recurrent_activation="sigmoid")
    np.testing.assert_array_equal(cudnn.w_ih, plain.w_ih)
    np.testing.assert_array_equal(cudnn.w_hh, plain.w_hh)


def test_units_that_do_not_fit_the_weights():
    arrays = keras_arrays("CuDNNLSTM", 1, 2, seed=1)
    with pytest.raises(ShapeError, match=r"has shape \(1, 8\); expected .*= \(1, 4\)"):
        kd.to_canonical("CuDNNLSTM", arrays, units=1)


def test_gru_bias_must_match_reset_after():
    arrays = keras_arrays("GRU", 3, 2, seed=1, reset_after=True)
    with pytest.raises(ShapeError, match="bias"):
        kd.to_canonical("GRU", arrays, reset_after=False)


def test_unknown_option_and_kind():
    arrays = keras_arrays("LSTM", 3, 2, seed=1)
    with pytest.raises(InputError, match="units"):
        kd.to_canonical("LSTM", arrays, unitz=2)
    with pytest.raises(UnsupportedFeatureError, match="ConvLSTM2D"):
        kd.to_canonical("ConvLSTM2D", arrays)


def test_activations_per_version():
    assert kd.resolve_activation("hard_sigmoid", "2.2.0") == HARD_SIGMOID_KERAS2
    assert kd.resolve_activation("hard_sigmoid", "3") == HARD_SIGMOID_KERAS3
    assert kd.default_recurrent_activation("2.2.0") == "hard_sigmoid"
    assert kd.default_recurrent_activation("2.2.4-tf") == "hard_sigmoid"
    assert kd.default_recurrent_activation("2.3.0") == "sigmoid"
    assert kd.default_recurrent_activation("3.15.1") == "sigmoid"
    spec, _ = kd.to_canonical("LSTM", keras_arrays("LSTM", 3, 2, seed=1),
                              keras_version="2.1.6")
    assert spec.gate_activation == HARD_SIGMOID_KERAS2
    assert any("recurrent_activation=hard_sigmoid" in note for note in spec.notes)
    with pytest.raises(UnsupportedFeatureError, match="gelu"):
        kd.resolve_activation("gelu")


def _lstm(n=3, u=2):
    return kd.to_canonical("LSTM", keras_arrays("LSTM", n, u, seed=2),
                           recurrent_activation="sigmoid")


@pytest.mark.parametrize("change,feature", [
    (dict(cell_clip=3.0), "cell_clip"),
    (dict(forget_bias=1.0), "forget_bias"),
    (dict(input_forget=True), "input_forget"),
    (dict(gate_activation=HARD_SIGMOID_KERAS2), "hard_sigmoid"),
])
def test_from_canonical_refuses_what_keras_cannot_express(change, feature):
    spec, weights = _lstm()
    with pytest.raises(UnsupportedFeatureError, match=feature):
        kd.from_canonical(spec.with_(**change), weights, "LSTM", keras_version="3")


def test_from_canonical_refuses_peepholes_projection_and_gru_variant():
    spec, weights = _lstm()
    peep = CellWeights(weights.w_ih, weights.w_hh, weights.b_ih, None,
                       peephole=np.ones((3, 2), np.float32))
    with pytest.raises(UnsupportedFeatureError, match="peephole"):
        kd.from_canonical(spec, peep)
    gru_spec, gru = kd.to_canonical("GRU", keras_arrays("GRU", 3, 2, 1, reset_after=False))
    with pytest.raises(UnsupportedFeatureError, match="reset_after=False"):
        kd.from_canonical(gru_spec, gru, "CuDNNGRU")
    with pytest.raises(UnsupportedFeatureError, match="cannot be written"):
        kd.from_canonical(gru_spec, gru, "LSTM")


def test_keras2_hard_sigmoid_writes_to_keras2_only():
    spec, weights = kd.to_canonical("GRU", keras_arrays("GRU", 3, 2, 4),
                                    recurrent_activation="hard_sigmoid", keras_version="2")
    assert kd.keras_config(spec, "GRU", "2")["recurrent_activation"] == "hard_sigmoid"
    kd.from_canonical(spec, weights, "GRU", keras_version="2")
    with pytest.raises(UnsupportedFeatureError, match="Keras 3"):
        kd.from_canonical(spec, weights, "GRU", keras_version="3")
    assert spec.with_(gate_activation=SIGMOID).gate_activation == SIGMOID
