"""TF1 cells (tf.compat.v1 rnn_cell, LSTMBlockCell ops) against TensorFlow itself.

TF1 cells run in graph mode under ``tf.compat.v1.nn.dynamic_rnn`` with random variables;
rnnparity maps the same variables with :mod:`rnnparity.dialects.tf1` and runs them on the
engine. LSTMBlockCell has no Python class in TF 2, so its oracle is the op it wrapped
(``tf.raw_ops.BlockLSTM``); CudnnCompatibleGRUCell has neither, so its oracle is the Keras
GRU that cuDNN's GRU equals (``reset_after=True``), fed the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require, tf1_rnn_cell_module

tf = require("tensorflow", "TensorFlow is the oracle for TF1 cells")
tf_keras = require("tf_keras", "tf_keras provides the TF1 rnn_cell classes in TF 2")

from rnnparity.dialects import tf1  # noqa: E402
from rnnparity.engine import Direction, RecurrentStack  # noqa: E402
from rnnparity.errors import LayoutError, ShapeError, UnsupportedFeatureError  # noqa: E402
from rnnparity.tolerances import ATOL  # noqa: E402

pytestmark = [
    pytest.mark.keras,
    # The TF1 cell classes warn that they are deprecated, attributing it to the caller.
    pytest.mark.filterwarnings("ignore:`tf.nn.rnn_cell:UserWarning"),
]

BATCH, SEQ_LEN, INPUT_SIZE, UNITS = 3, 5, 4, 6


def run_dynamic_rnn(make_cell, x: np.ndarray, seed: int):
    """Run ``make_cell()`` through dynamic_rnn with random variables.

    Returns (outputs, final state tuple, variables by name inside the cell scope).
    """
    graph = tf.Graph()
    rng = np.random.default_rng(seed)
    with graph.as_default():
        inputs = tf.compat.v1.placeholder(tf.float32, x.shape)
        cell = make_cell()
        outputs, state = tf.compat.v1.nn.dynamic_rnn(cell, inputs, dtype=tf.float32)
        variables = tf.compat.v1.global_variables()
        values = {v.name: rng.uniform(-0.7, 0.7, v.shape.as_list()).astype(np.float32)
                  for v in variables}
        with tf.compat.v1.Session(graph=graph) as session:
            session.run([v.assign(values[v.name]) for v in variables])
            y, final = session.run([outputs, state], {inputs: x})
    # dynamic_rnn puts the cell's variables under rnn/<cell name>/.
    scope = "/".join(variables[0].name.split("/")[:2])
    return y, final, tf1.cell_arrays(values, scope)


def run_rnnparity(cell: str, arrays, **options):
    spec, weights = tf1.to_canonical(cell, arrays, INPUT_SIZE, **options)
    return RecurrentStack([[Direction(spec, weights)]])


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(7).normal(0, 1.5, (BATCH, SEQ_LEN, INPUT_SIZE)).astype(
        np.float32)


CASES = {
    "basic_rnn": ("BasicRNNCell", lambda m: m.BasicRNNCell(UNITS), {}),
    "basic_rnn_relu": ("BasicRNNCell", lambda m: m.BasicRNNCell(UNITS, activation=tf.nn.relu),
                       {"activation": "relu"}),
    "basic_lstm": ("BasicLSTMCell", lambda m: m.BasicLSTMCell(UNITS), {}),
    "basic_lstm_fb": ("BasicLSTMCell", lambda m: m.BasicLSTMCell(UNITS, forget_bias=0.3),
                      {"forget_bias": 0.3}),
    "lstm": ("LSTMCell", lambda m: m.LSTMCell(UNITS), {}),
    "lstm_all_options": (
        "LSTMCell",
        lambda m: m.LSTMCell(UNITS, use_peepholes=True, cell_clip=0.4, num_proj=3,
                             proj_clip=0.25, forget_bias=0.7),
        {"cell_clip": 0.4, "proj_clip": 0.25, "forget_bias": 0.7},
    ),
    "lstm_peepholes": ("LSTMCell", lambda m: m.LSTMCell(UNITS, use_peepholes=True), {}),
    "lstm_proj": ("LSTMCell", lambda m: m.LSTMCell(UNITS, num_proj=2), {}),
    "gru": ("GRUCell", lambda m: m.GRUCell(UNITS), {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rnn_cell_matches_dynamic_rnn(case, x):
    cell, make_cell, options = CASES[case]
    module = tf1_rnn_cell_module(tf)
    y_tf, final, arrays = run_dynamic_rnn(lambda: make_cell(module), x, seed=len(case))

    result = run_rnnparity(cell, arrays, **options)(x)

    assert np.abs(result.y - y_tf).max() <= ATOL
    if isinstance(final, tuple):  # LSTMStateTuple(c, h): c first
        assert np.abs(result.c_n[0] - final[0]).max() <= ATOL
        assert np.abs(result.h_n[0] - final[1]).max() <= ATOL
    else:
        assert np.abs(result.h_n[0] - final).max() <= ATOL


def test_forget_bias_is_needed(x):
    """The forget bias is not stored: leaving it out changes the outputs."""
    module = tf1_rnn_cell_module(tf)
    y_tf, _, arrays = run_dynamic_rnn(lambda: module.BasicLSTMCell(UNITS), x, seed=3)
    without = run_rnnparity("BasicLSTMCell", arrays, forget_bias=0.0)(x).y
    assert np.abs(without - y_tf).max() > 1e-3


def block_lstm(x, arrays, forget_bias, cell_clip, use_peephole):
    """TensorFlow's LSTMBlockCell op, run over the sequence (time-major inside)."""
    units = arrays["bias"].shape[0] // 4
    zeros = np.zeros((x.shape[0], units), np.float32)
    peep = [arrays.get(n, np.zeros(units, np.float32)) for n in ("w_i_diag", "w_f_diag",
                                                                 "w_o_diag")]
    out = tf.raw_ops.BlockLSTM(
        seq_len_max=np.int64(x.shape[1]), x=np.transpose(x, (1, 0, 2)), cs_prev=zeros,
        h_prev=zeros, w=arrays["kernel"], wci=peep[0], wcf=peep[1], wco=peep[2],
        b=arrays["bias"], forget_bias=forget_bias, cell_clip=cell_clip,
        use_peephole=use_peephole)
    return np.transpose(out.h.numpy(), (1, 0, 2)), np.transpose(out.cs.numpy(), (1, 0, 2))


def random_block_arrays(seed: int, peephole: bool) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {"kernel": rng.uniform(-1, 1, (INPUT_SIZE + UNITS, 4 * UNITS)),
              "bias": rng.uniform(-1, 1, 4 * UNITS)}
    if peephole:
        arrays.update({n: rng.uniform(-1, 1, UNITS) for n in ("w_i_diag", "w_f_diag",
                                                               "w_o_diag")})
    return {k: v.astype(np.float32) for k, v in arrays.items()}


BLOCK_CASES = {
    # name: (cell, options for rnnparity, op forget_bias, op cell_clip, peephole)
    "wrapper_default_no_clip": ("LSTMBlockCell", {}, 1.0, -1.0, False),
    "explicit_clip": ("LSTMBlockCell", {"cell_clip": 0.5}, 1.0, 0.5, False),
    "old_wrapper_op_default": ("LSTMBlockCell", {"clip_cell": True}, 1.0, 3.0, False),
    "peephole_fb": ("LSTMBlockCell", {"forget_bias": 0.2, "cell_clip": 1.5}, 0.2, 1.5, True),
    "cudnn_compatible": ("CudnnCompatibleLSTMCell", {}, 0.0, -1.0, False),
}


@pytest.mark.parametrize("case", sorted(BLOCK_CASES))
def test_lstm_block_cell_matches_op(case, x):
    cell, options, forget_bias, cell_clip, peephole = BLOCK_CASES[case]
    arrays = random_block_arrays(len(case), peephole)
    # Large inputs drive |c| past the clip values, so clipping shows.
    big = 3.0 * x
    h_tf, cs_tf = block_lstm(big, arrays, forget_bias, cell_clip, peephole)

    result = run_rnnparity(cell, arrays, **options)(big)

    assert np.abs(result.y - h_tf).max() <= ATOL
    assert np.abs(result.c_n[0] - cs_tf[:, -1]).max() <= ATOL


def test_lstm_block_op_default_clips_at_three(x):
    """Without a cell_clip argument the op clips at 3.0 (what old wrappers relied on)."""
    arrays = random_block_arrays(11, False)
    # Gates i, c, f saturated open: c grows by about 1 a step, past 3 by the end.
    arrays["bias"][: 3 * UNITS] = 5.0
    zeros = np.zeros((BATCH, UNITS), np.float32)
    out = tf.raw_ops.BlockLSTM(
        seq_len_max=np.int64(SEQ_LEN), x=np.transpose(3 * x, (1, 0, 2)), cs_prev=zeros,
        h_prev=zeros, w=arrays["kernel"], wci=zeros[0], wcf=zeros[0], wco=zeros[0],
        b=arrays["bias"])
    cs = out.cs.numpy()
    clipped = run_rnnparity("LSTMBlockCell", arrays, clip_cell=True)(3 * x)
    unclipped = run_rnnparity("LSTMBlockCell", arrays)(3 * x)

    assert np.abs(cs).max() == pytest.approx(tf1.LSTM_BLOCK_DEFAULT_CELL_CLIP)
    assert np.abs(clipped.c_n[0] - cs[-1]).max() <= ATOL
    assert np.abs(unclipped.c_n[0] - cs[-1]).max() > 1e-2


def test_cudnn_compatible_gru_matches_keras_reset_after(x):
    rng = np.random.default_rng(5)
    u = UNITS
    arrays = {
        "gates/kernel": rng.uniform(-1, 1, (INPUT_SIZE + u, 2 * u)),
        "gates/bias": rng.uniform(-1, 1, 2 * u),
        "candidate/input_projection/kernel": rng.uniform(-1, 1, (INPUT_SIZE, u)),
        "candidate/input_projection/bias": rng.uniform(-1, 1, u),
        "candidate/hidden_projection/kernel": rng.uniform(-1, 1, (u, u)),
        "candidate/hidden_projection/bias": rng.uniform(-1, 1, u),
    }
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    # Keras GRU blocks are z, r, h; the TF1 gates kernel holds r then u (= z).
    gates_x, gates_h = arrays["gates/kernel"][:INPUT_SIZE], arrays["gates/kernel"][INPUT_SIZE:]
    r_b, z_b = arrays["gates/bias"][:u], arrays["gates/bias"][u:]
    kernel = np.hstack([gates_x[:, u:], gates_x[:, :u],
                        arrays["candidate/input_projection/kernel"]])
    recurrent = np.hstack([gates_h[:, u:], gates_h[:, :u],
                           arrays["candidate/hidden_projection/kernel"]])
    bias = np.stack([np.concatenate([z_b, r_b, arrays["candidate/input_projection/bias"]]),
                     np.concatenate([np.zeros(2 * u, np.float32),
                                     arrays["candidate/hidden_projection/bias"]])])
    layer = tf_keras.layers.GRU(u, reset_after=True, recurrent_activation="sigmoid",
                                return_sequences=True)
    layer.build((None, None, INPUT_SIZE))
    layer.set_weights([kernel, recurrent, bias])
    y_keras = layer(x).numpy()

    result = run_rnnparity("CudnnCompatibleGRUCell", arrays)(x)
    plain = run_rnnparity("GRUCell", {
        "gates/kernel": arrays["gates/kernel"], "gates/bias": arrays["gates/bias"],
        "candidate/kernel": np.vstack([arrays["candidate/input_projection/kernel"],
                                       arrays["candidate/hidden_projection/kernel"]]),
        "candidate/bias": arrays["candidate/input_projection/bias"]})(x)

    assert np.abs(result.y - y_keras).max() <= ATOL
    assert np.abs(plain.y - y_keras).max() > 1e-3  # reset placement matters


@pytest.mark.parametrize("cell", ["BasicRNNCell", "LSTMCell", "GRUCell",
                                  "CudnnCompatibleGRUCell"])
def test_round_trip_is_exact(cell, x):
    rng = np.random.default_rng(9)
    if cell == "BasicRNNCell":
        arrays = {"kernel": rng.normal(size=(INPUT_SIZE + UNITS, UNITS)),
                  "bias": rng.normal(size=UNITS)}
    elif cell == "LSTMCell":
        arrays = {"kernel": rng.normal(size=(INPUT_SIZE + 2, 4 * UNITS)),
                  "bias": rng.normal(size=4 * UNITS), "projection/kernel":
                  rng.normal(size=(UNITS, 2)),
                  **{n: rng.normal(size=UNITS) for n in ("w_i_diag", "w_f_diag", "w_o_diag")}}
    elif cell == "GRUCell":
        arrays = {"gates/kernel": rng.normal(size=(INPUT_SIZE + UNITS, 2 * UNITS)),
                  "gates/bias": rng.normal(size=2 * UNITS),
                  "candidate/kernel": rng.normal(size=(INPUT_SIZE + UNITS, UNITS)),
                  "candidate/bias": rng.normal(size=UNITS)}
    else:
        arrays = {"gates/kernel": rng.normal(size=(INPUT_SIZE + UNITS, 2 * UNITS)),
                  "gates/bias": rng.normal(size=2 * UNITS),
                  "candidate/input_projection/kernel": rng.normal(size=(INPUT_SIZE, UNITS)),
                  "candidate/input_projection/bias": rng.normal(size=UNITS),
                  "candidate/hidden_projection/kernel": rng.normal(size=(UNITS, UNITS)),
                  "candidate/hidden_projection/bias": rng.normal(size=UNITS)}
    spec, weights = tf1.to_canonical(cell, arrays, INPUT_SIZE)
    back = tf1.from_canonical(cell, spec, weights)

    assert sorted(back) == sorted(arrays)
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)


def test_bad_variables_raise():
    rng = np.random.default_rng(0)
    good = {"kernel": rng.normal(size=(INPUT_SIZE + UNITS, 4 * UNITS)),
            "bias": rng.normal(size=4 * UNITS)}
    with pytest.raises(ShapeError, match="input_size"):
        tf1.to_canonical("LSTMCell", good, INPUT_SIZE + 1)
    with pytest.raises(LayoutError, match="'bias' is missing"):
        tf1.to_canonical("LSTMCell", {"kernel": good["kernel"]}, INPUT_SIZE)
    with pytest.raises(LayoutError, match="peepholes"):
        tf1.to_canonical("LSTMCell", good, INPUT_SIZE, use_peepholes=True)
    with pytest.raises(UnsupportedFeatureError, match="NASCell"):
        tf1.to_canonical("NASCell", good, INPUT_SIZE)
    with pytest.raises(LayoutError, match="w_i_diag"):
        tf1.to_canonical("BasicLSTMCell", {**good, "w_i_diag": good["bias"][:UNITS]},
                         INPUT_SIZE)
    with pytest.raises(UnsupportedFeatureError, match="num_proj"):
        tf1.to_canonical("BasicLSTMCell", good, INPUT_SIZE, num_proj=2)
