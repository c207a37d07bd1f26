"""TensorFlow 1 recurrent cells (``tf.compat.v1.nn.rnn_cell``, ``tf.contrib.rnn``) as data.

A TF1 cell stores one kernel applied to ``concat([x, h_prev])``: its first ``input_size``
rows act on the input, the rest on the previous output. This module maps a cell's
variables (by their names inside the cell's scope, e.g. ``kernel``, ``bias``,
``w_f_diag``, ``projection/kernel``, ``gates/kernel``) onto the canonical
:class:`~rnnparity.spec.CellSpec` / :class:`~rnnparity.spec.CellWeights`, and back.

Cells and what they compute (``fb`` = forget_bias, added at run time, never stored):

====================== ============ ===================================================
cell                    gate order   notes
====================== ============ ===================================================
BasicRNNCell            -            ``h = act(concat(x, h) @ kernel + bias)``
BasicLSTMCell           i j f o      ``j`` = candidate; ``fb`` 1.0; state ``(c, h)``
LSTMCell                i j f o      + peepholes, cell_clip (clips the stored c),
                                     num_proj / proj_clip, ``fb`` 1.0
LSTMBlockCell           i c f o      op-based; ``fb`` 1.0; cell_clip, see below
CudnnCompatibleLSTMCell i c f o      LSTMBlockCell with ``fb`` 0 and no clip
GRUCell                 r u          reset before the candidate matmul
CudnnCompatibleGRUCell  r u          candidate split into input / hidden projections,
                                     reset applied after the hidden matmul (cuDNN)
====================== ============ ===================================================

LSTMBlockCell's ``cell_clip``: the op clips the cell state only when ``cell_clip > 0``;
the op's own default is 3.0. Python wrappers since TF 1.5 pass -1 (no clip) when
``cell_clip`` is None, which is the default here; early contrib wrappers that had no
``cell_clip`` argument (or ``clip_cell=True``) left the op default, so models made with
them clipped at +-3: pass ``cell_clip=3.0`` (or ``clip_cell=True``) for those.

In TF1 every cell's update gate weights the old state: ``h = u * h_prev + (1 - u) * c``,
the canonical GRU blend with ``z = u``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from ..activations import SIGMOID, TANH, Activation
from ..errors import InputError, LayoutError, ShapeError, UnsupportedFeatureError
from ..spec import CellSpec, CellWeights, permute_gates

__all__ = [
    "GATE_ORDER",
    "CELLS",
    "SUPPORTED_ATTRIBUTES",
    "LSTM_BLOCK_DEFAULT_CELL_CLIP",
    "to_canonical",
    "from_canonical",
    "cell_arrays",
]

logger = logging.getLogger(__name__)

# TF1 names the LSTM candidate ``j`` (rnn_cell_impl) or ``c`` (lstm_ops); both sit second.
# ``c`` here is the candidate, the canonical ``g``. The GRU's update gate ``u`` is ``z``.
GATE_ORDER = {"lstm": "icfo", "gru": "ru", "rnn": "h"}
_CANONICAL_NAMES = str.maketrans({"c": "g", "u": "z"})

# The op's default when a wrapper passes no cell_clip (see the module docstring).
LSTM_BLOCK_DEFAULT_CELL_CLIP = 3.0

# cell class name -> (kind, default forget_bias, options accepted)
CELLS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "BasicRNNCell": ("rnn", 0.0, ("activation",)),
    "BasicLSTMCell": ("lstm", 1.0, ("forget_bias", "activation")),
    "LSTMCell": ("lstm", 1.0, ("forget_bias", "activation", "use_peepholes", "cell_clip",
                               "num_proj", "proj_clip")),
    "LSTMBlockCell": ("lstm", 1.0, ("forget_bias", "use_peephole", "cell_clip", "clip_cell")),
    "LSTMBlockFusedCell": ("lstm", 1.0, ("forget_bias", "use_peephole", "cell_clip",
                                         "clip_cell")),
    "CudnnCompatibleLSTMCell": ("lstm", 0.0, ()),
    "GRUCell": ("gru", 0.0, ("activation",)),
    "CudnnCompatibleGRUCell": ("gru", 0.0, ()),
}
SUPPORTED_ATTRIBUTES = {name: options for name, (_, _, options) in CELLS.items()}

_PEEPHOLES = ("w_i_diag", "w_f_diag", "w_o_diag")
_GRU_VARIABLES = ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")
_CUDNN_GRU_VARIABLES = ("gates/kernel", "gates/bias", "candidate/input_projection/kernel",
                        "candidate/input_projection/bias",
                        "candidate/hidden_projection/kernel",
                        "candidate/hidden_projection/bias")


def _variables(cell: str) -> tuple[str, ...]:
    """The variable names ``cell`` can hold inside its scope."""
    if cell == "GRUCell":
        return _GRU_VARIABLES
    if cell == "CudnnCompatibleGRUCell":
        return _CUDNN_GRU_VARIABLES
    names = ("kernel", "bias")
    if cell in ("LSTMCell", "LSTMBlockCell", "LSTMBlockFusedCell"):
        names += _PEEPHOLES
    if cell == "LSTMCell":
        names += ("projection/kernel",)
    return names


def cell_arrays(variables: Mapping[str, Any], scope: str) -> dict[str, np.ndarray]:
    """The variables under ``scope``, keyed by their name inside it (``:0`` dropped).

    Example:
        >>> sorted(cell_arrays({"rnn/lstm_cell/kernel:0": 1, "rnn/lstm_cell/bias:0": 2,
        ...                     "other/bias": 3}, "rnn/lstm_cell"))
        ['bias', 'kernel']
    """
    prefix = scope.rstrip("/") + "/"
    found = {}
    for name, value in variables.items():
        if name.startswith(prefix):
            found[name[len(prefix):].removesuffix(":0")] = np.asarray(value)
    if not found:
        raise InputError(f"no variables under scope {scope!r}; names start with "
                         f"{sorted({n.split('/')[0] for n in variables})}")
    return found


def to_canonical(
    cell: str, arrays: Mapping[str, Any], input_size: int, **options: Any
) -> tuple[CellSpec, CellWeights]:
    """Map a TF1 cell's variables onto the canonical spec and weights.

    Args:
        cell: the cell class name, e.g. ``"LSTMCell"`` (see :data:`CELLS`).
        arrays: the cell's variables by name inside its scope: ``kernel``, ``bias``,
            ``w_i_diag``/``w_f_diag``/``w_o_diag``, ``projection/kernel`` (LSTM);
            ``gates/kernel``, ``gates/bias``, ``candidate/kernel``, ``candidate/bias``
            (GRUCell); ``candidate/input_projection/kernel`` ... (CudnnCompatibleGRUCell).
            :func:`cell_arrays` extracts them from a checkpoint's variable dict.
        input_size: features per time step (the kernel's first rows act on them).
        **options: the cell's constructor arguments that change the math and are not
            stored: ``forget_bias``, ``activation`` (a name), ``cell_clip``, ``proj_clip``;
            ``use_peepholes`` / ``num_proj`` are checked against the arrays.

    Returns:
        ``(spec, weights)`` for :class:`rnnparity.engine.Direction`.

    Raises:
        UnsupportedFeatureError: an unknown cell or option.
        ShapeError: an array does not fit ``input_size`` and the cell.
        LayoutError: a variable the cell needs is missing.
    """
    if cell not in CELLS:
        raise UnsupportedFeatureError(
            f"TF1 cell {cell!r} is not supported; supported: {', '.join(CELLS)}")
    kind, default_forget_bias, accepted = CELLS[cell]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UnsupportedFeatureError(
            f"TF1 {cell}: option(s) {unknown} not supported; accepted: {list(accepted)}")
    arrays = {name.removesuffix(":0"): np.asarray(value) for name, value in arrays.items()}
    extra = sorted(set(arrays) - set(_variables(cell)))
    if extra:
        raise LayoutError(f"TF1 {cell} has no variable(s) {extra}; it holds "
                          f"{list(_variables(cell))}")
    if kind == "rnn":
        return _rnn(cell, arrays, input_size, options)
    if kind == "gru":
        return _gru(cell, arrays, input_size, options)
    return _lstm(cell, arrays, input_size, default_forget_bias, options)


def from_canonical(cell: str, spec: CellSpec, weights: CellWeights) -> dict[str, np.ndarray]:
    """The TF1 variables (names inside the cell scope) holding ``weights``.

    The run-time constants (``forget_bias``, clips) are not variables: TF1 takes them as
    constructor arguments, so ``spec`` must match what the cell will be built with.
    """
    if cell not in CELLS:
        raise UnsupportedFeatureError(
            f"TF1 cell {cell!r} is not supported; supported: {', '.join(CELLS)}")
    kind = CELLS[cell][0]
    if kind != spec.kind:
        raise LayoutError(f"TF1 {cell} holds a {kind}, not a {spec.kind}")
    if kind == "gru":
        return _gru_from_canonical(cell, spec, weights)
    if weights.peephole is not None and "w_i_diag" not in _variables(cell):
        raise LayoutError(f"TF1 {cell} has no peepholes; use LSTMCell or LSTMBlockCell")
    if weights.w_hr is not None and cell != "LSTMCell":
        raise LayoutError(f"TF1 {cell} has no projection; use LSTMCell")
    order = _order(kind)
    w_ih = permute_gates(weights.w_ih, _canonical_order(kind), order)
    w_hh = permute_gates(weights.w_hh, _canonical_order(kind), order)
    bias = _bias_sum(weights, w_ih.shape[0], w_ih.dtype)
    out = {"kernel": np.concatenate([w_ih.T, w_hh.T]),
           "bias": permute_gates(bias, _canonical_order(kind), order)}
    if weights.peephole is not None:
        out.update(zip(("w_i_diag", "w_f_diag", "w_o_diag"), weights.peephole))
    if weights.w_hr is not None:
        out["projection/kernel"] = weights.w_hr.T
    return out


def _order(kind: str) -> str:
    return GATE_ORDER[kind].translate(_CANONICAL_NAMES)


def _canonical_order(kind: str) -> str:
    return {"lstm": "ifgo", "rnn": "h"}[kind]


def _bias_sum(weights: CellWeights, size: int, dtype: np.dtype) -> np.ndarray:
    bias = np.zeros(size, dtype)
    for part in (weights.b_ih, weights.b_hh):
        if part is not None:
            bias = bias + part
    return bias


def _require(cell: str, arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in arrays:
        raise LayoutError(f"TF1 {cell}: variable {name!r} is missing; found {sorted(arrays)}")
    return arrays[name]


def _split_kernel(cell: str, name: str, kernel: np.ndarray, input_size: int,
                  hidden_in: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a ``(input_size + hidden_in, columns)`` kernel into its x and h rows."""
    expected = (input_size + hidden_in, columns)
    if kernel.shape != expected:
        raise ShapeError(
            f"TF1 {cell}: {name} has shape {kernel.shape}; expected (input_size + "
            f"hidden, columns) = {expected} (input_size={input_size}, hidden={hidden_in})")
    return kernel[:input_size], kernel[input_size:]


def _activation(options: dict[str, Any]) -> Activation:
    value = options.get("activation")
    if value is None:
        return TANH
    if isinstance(value, Activation):
        return value
    return Activation.of(str(value).removeprefix("tf.").removeprefix("nn."))


def _rnn(cell: str, arrays: dict[str, np.ndarray], input_size: int,
         options: dict[str, Any]) -> tuple[CellSpec, CellWeights]:
    bias = _require(cell, arrays, "bias")
    hidden = bias.shape[0]
    w_x, w_h = _split_kernel(cell, "kernel", _require(cell, arrays, "kernel"), input_size,
                             hidden, hidden)
    spec = CellSpec("rnn", input_size, hidden, activation=_activation(options),
                    convention=f"TF1 {cell}")
    return spec, CellWeights(w_x.T, w_h.T, b_ih=bias)


def _lstm(cell: str, arrays: dict[str, np.ndarray], input_size: int,
          default_forget_bias: float, options: dict[str, Any]) -> tuple[CellSpec, CellWeights]:
    bias = _require(cell, arrays, "bias")
    if bias.ndim != 1 or bias.shape[0] % 4:
        raise ShapeError(f"TF1 {cell}: bias has shape {bias.shape}; expected (4 * num_units,)")
    hidden = bias.shape[0] // 4
    projection = arrays.get("projection/kernel")
    proj_size = 0 if projection is None else int(projection.shape[-1])
    if options.get("num_proj") not in (None, proj_size):
        raise LayoutError(f"TF1 {cell}: num_proj={options['num_proj']} but the variables "
                          f"hold {'no projection' if not proj_size else proj_size}")
    w_x, w_h = _split_kernel(cell, "kernel", _require(cell, arrays, "kernel"), input_size,
                             proj_size or hidden, 4 * hidden)

    order = _order("lstm")
    w_ih = permute_gates(w_x.T, order, "ifgo")
    w_hh = permute_gates(w_h.T, order, "ifgo")
    b_ih = permute_gates(bias, order, "ifgo")
    peephole = _peepholes(cell, arrays, hidden, options)
    w_hr = None
    if projection is not None:
        if projection.shape != (hidden, proj_size):
            raise ShapeError(f"TF1 {cell}: projection/kernel has shape {projection.shape}; "
                             f"expected (num_units, num_proj) = ({hidden}, {proj_size})")
        w_hr = projection.T

    activation = _activation(options)
    spec = CellSpec(
        "lstm", input_size, hidden, proj_size=proj_size, gate_activation=SIGMOID,
        activation=activation,
        forget_bias=float(options.get("forget_bias", default_forget_bias)),
        cell_clip=_cell_clip(cell, options), proj_clip=_positive(options.get("proj_clip")),
        convention=f"TF1 {cell} (kernel on concat(x, h), gates i c f o)",
    )
    logger.debug("TF1 %s -> %s", cell, spec.describe())
    return spec, CellWeights(w_ih, w_hh, b_ih=b_ih, peephole=peephole, w_hr=w_hr)


def _peepholes(cell: str, arrays: dict[str, np.ndarray], hidden: int,
               options: dict[str, Any]) -> np.ndarray | None:
    present = [name for name in _PEEPHOLES if name in arrays]
    wanted = options.get("use_peepholes", options.get("use_peephole"))
    if wanted is None:
        wanted = bool(present)
    if not wanted:
        return None
    if len(present) != 3:
        missing = [name for name in _PEEPHOLES if name not in arrays]
        raise LayoutError(f"TF1 {cell}: peepholes asked for but {missing} missing")
    peephole = np.stack([np.asarray(arrays[name]).reshape(-1) for name in _PEEPHOLES])
    if peephole.shape != (3, hidden):
        raise ShapeError(f"TF1 {cell}: peephole vectors have {peephole.shape[1]} entries; "
                         f"expected num_units={hidden}")
    return peephole


def _positive(value: Any) -> float | None:
    return None if value is None or float(value) <= 0 else float(value)


def _cell_clip(cell: str, options: dict[str, Any]) -> float | None:
    if cell in ("LSTMBlockCell", "LSTMBlockFusedCell"):
        # The op clips only for cell_clip > 0; clip_cell=True meant "use the op default".
        if options.get("clip_cell") and options.get("cell_clip") is None:
            return LSTM_BLOCK_DEFAULT_CELL_CLIP
        return _positive(options.get("cell_clip"))
    value = options.get("cell_clip")
    return None if value is None else float(value)


def _gru(cell: str, arrays: dict[str, np.ndarray], input_size: int,
         options: dict[str, Any]) -> tuple[CellSpec, CellWeights]:
    gates_bias = _require(cell, arrays, "gates/bias")
    if gates_bias.ndim != 1 or gates_bias.shape[0] % 2:
        raise ShapeError(f"TF1 {cell}: gates/bias has shape {gates_bias.shape}; expected "
                         "(2 * num_units,)")
    hidden = gates_bias.shape[0] // 2
    g_x, g_h = _split_kernel(cell, "gates/kernel", _require(cell, arrays, "gates/kernel"),
                             input_size, hidden, 2 * hidden)
    rz_ih = permute_gates(g_x.T, _order("gru"), "rz")
    rz_hh = permute_gates(g_h.T, _order("gru"), "rz")
    rz_b = permute_gates(gates_bias, _order("gru"), "rz")

    if cell == "CudnnCompatibleGRUCell":
        n_ih = _require(cell, arrays, "candidate/input_projection/kernel")
        n_hh = _require(cell, arrays, "candidate/hidden_projection/kernel")
        for name, array, rows in (("input_projection", n_ih, input_size),
                                  ("hidden_projection", n_hh, hidden)):
            if array.shape != (rows, hidden):
                raise ShapeError(f"TF1 {cell}: candidate/{name}/kernel has shape "
                                 f"{array.shape}; expected ({rows}, {hidden})")
        b_in = _require(cell, arrays, "candidate/input_projection/bias")
        b_hn = _require(cell, arrays, "candidate/hidden_projection/bias")
        zeros = np.zeros(2 * hidden, gates_bias.dtype)
        weights = CellWeights(
            np.concatenate([rz_ih, n_ih.T]), np.concatenate([rz_hh, n_hh.T]),
            b_ih=np.concatenate([rz_b, b_in]), b_hh=np.concatenate([zeros, b_hn]))
        reset_after = True
    else:
        n_x, n_h = _split_kernel(cell, "candidate/kernel",
                                 _require(cell, arrays, "candidate/kernel"), input_size,
                                 hidden, hidden)
        b_n = _require(cell, arrays, "candidate/bias")
        weights = CellWeights(np.concatenate([rz_ih, n_x.T]), np.concatenate([rz_hh, n_h.T]),
                              b_ih=np.concatenate([rz_b, b_n]))
        reset_after = False

    spec = CellSpec("gru", input_size, hidden, gate_activation=SIGMOID,
                    activation=_activation(options), reset_after=reset_after,
                    convention=f"TF1 {cell} (gates r u, reset "
                               f"{'after' if reset_after else 'before'} the matmul)")
    return spec, weights


def _gru_from_canonical(cell: str, spec: CellSpec, weights: CellWeights) -> dict[str, np.ndarray]:
    H = spec.hidden_size
    order = _order("gru")
    zeros = np.zeros(3 * H, weights.w_ih.dtype)
    b_ih = zeros if weights.b_ih is None else weights.b_ih
    b_hh = zeros if weights.b_hh is None else weights.b_hh
    rz_bias = b_ih[: 2 * H] + b_hh[: 2 * H]
    gates_kernel = np.concatenate([weights.w_ih[: 2 * H].T, weights.w_hh[: 2 * H].T])
    out = {"gates/kernel": permute_gates(gates_kernel, "rz", order, axis=1),
           "gates/bias": permute_gates(rz_bias, "rz", order)}
    if cell == "CudnnCompatibleGRUCell":
        if not spec.reset_after:
            raise LayoutError(f"TF1 {cell} applies the reset after the matmul; the spec "
                              "resets before it")
        out.update({
            "candidate/input_projection/kernel": weights.w_ih[2 * H:].T,
            "candidate/input_projection/bias": b_ih[2 * H:],
            "candidate/hidden_projection/kernel": weights.w_hh[2 * H:].T,
            "candidate/hidden_projection/bias": b_hh[2 * H:],
        })
        return out
    if spec.reset_after or np.any(b_hh[2 * H:]):
        raise LayoutError(f"TF1 {cell} resets before the matmul and has no recurrent "
                          "candidate bias; the spec needs CudnnCompatibleGRUCell")
    out["candidate/kernel"] = np.concatenate([weights.w_ih[2 * H:].T, weights.w_hh[2 * H:].T])
    out["candidate/bias"] = b_ih[2 * H:]
    return out
