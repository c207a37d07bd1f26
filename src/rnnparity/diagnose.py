"""Explain why a replica disagrees with a framework: search the conventions that fit.

Given the weight arrays of one recurrent layer as a user holds them (a Keras
``get_weights()`` list, a PyTorch state_dict, ONNX initializers, TF1 variables), an input
and the outputs they got, :func:`diagnose` tries every reading of the arrays that some
framework (or a common mistake) uses - which array is which, gate order, per-gate block
layout (plain, transposed, cuDNN's reinterpretation), bias arrangement, activation
definitions, forget-bias constant, GRU reset placement and update convention, direction,
time/batch layout - runs each through the engine and ranks those that reproduce the
outputs. It then says in words how the best one differs from what the weights were
labelled as.

The search is exhaustive but pruned: with zero initial state the first step does not
involve the recurrent weights, so every input-side choice is settled on step 0; the
survivors are checked on two steps, then on the whole sequence. Candidates are evaluated
many at a time: ``M`` candidates of ``hidden_size`` units run as one engine cell of
``M * hidden_size`` units whose recurrent matrix is block diagonal, which is exactly ``M``
independent cells.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .activations import HARD_SIGMOID_KERAS2, HARD_SIGMOID_KERAS3, RELU, SIGMOID, TANH
from .engine import Direction, RecurrentStack
from .errors import FormatError, InputError, UnsupportedFeatureError
from .spec import GATES, CellSpec, CellWeights, gate_permutation

__all__ = ["diagnose", "Diagnosis", "Candidate", "read_weight_arrays", "DEFAULT_ATOL",
           "LABELS"]

logger = logging.getLogger(__name__)

# Outputs to explain may come from a float32 replica or framework; float32 rounding over a
# recurrence stays far below this, while every convention difference is far above it.
DEFAULT_ATOL = 1e-4
# Candidates kept past a stage even when they do not fit, so "closest" can be reported.
KEEP_CLOSEST = 12
# Units per batched engine call (M candidates * hidden_size).
_BATCH_UNITS = 64
# Units per call on the first step, whose recurrent matrix is left zero (cheaper to build).
_PROBE_UNITS = 128
# Partial choices expanded and scored at a time past step 0.
_COMBOS_PER_CHUNK = 512

LABELS = ("keras", "keras1", "cudnn", "torch", "onnx", "tf1")

_KIND_OF_GATES = {4: "lstm", 3: "gru", 1: "rnn"}
_GATE_WORDS = {"i": "input", "f": "forget", "g": "cell", "o": "output", "r": "reset",
               "z": "update", "n": "candidate", "h": "state"}
# Stored gate orders frameworks use, in canonical letters (LSTM i f g o, GRU r z n).
_KNOWN_ORDERS = {
    "lstm": {"ifgo": "Keras / PyTorch / cuDNN", "iofg": "ONNX",
             "igfo": "TF1 cells (i j f o) / Keras 1 files", "ifog": "MIOpen"},
    "gru": {"zrn": "Keras / ONNX", "rzn": "PyTorch / cuDNN / TF1"},
    "rnn": {"h": ""},
}
_GATE_ACTIVATIONS = {
    "sigmoid": (SIGMOID, "sigmoid"),
    "hard_sigmoid_keras2": (HARD_SIGMOID_KERAS2,
                            "hard_sigmoid clip(0.2x + 0.5) (Keras 1/2, tf.keras)"),
    "hard_sigmoid_keras3": (HARD_SIGMOID_KERAS3, "hard_sigmoid clip(x/6 + 0.5) (Keras 3)"),
}
_ACTIVATIONS = {"tanh": (TANH, "tanh"), "relu": (RELU, "relu")}

_ATTR_TITLES = {
    "arrays": "arrays", "input": "input weights", "recurrent": "recurrent weights",
    "order": "gate order", "bias": "biases", "gate_activation": "gate activation",
    "activation": "activation", "forget_bias": "forget bias", "reset": "GRU reset",
    "update": "GRU update", "direction": "direction", "layout": "time/batch layout",
    "output": "output",
}


def _order_words(kind: str, order: str) -> str:
    letters = " ".join("c" if g == "g" and kind == "lstm" else g for g in order)
    named = ", ".join(_GATE_WORDS[g] for g in order)
    known = _KNOWN_ORDERS[kind].get(order)
    return f"{letters} ({named}{'; ' + known if known else ''})"


# Fixed words for attribute values; orders and arrays get theirs from the candidate.
_WORDS = {
    ("input", "plain"): "used as stored",
    ("input", "cudnn"): "each gate block reinterpreted as cuDNN does: K_g.reshape(units, "
                        "input).T",
    ("input", "cudnn_inverse"): "each gate block reinterpreted: K_g.T.reshape(input, units) "
                                "(cuDNN's reinterpretation undone twice)",
    ("input", "reinterpret"): "each (units, input) gate block read as row-major (input, "
                              "units) without transposing",
    ("recurrent", "plain"): "used as stored",
    ("recurrent", "transposed"): "each gate block transposed",
    ("bias", "none"): "none",
    ("bias", "single"): "one bias vector",
    ("bias", "halves"): "first half input bias, second half recurrent bias (cuDNN / ONNX "
                        "B / Keras GRU rows)",
    ("bias", "halves_summed"): "both halves added on the input side (the recurrent "
                               "candidate bias moved outside the reset product)",
    ("bias", "halves_swapped"): "halves swapped: second half on the input side",
    ("bias", "first_half"): "only the first half (input bias) used",
    ("bias", "second_half"): "only the second half (recurrent bias) used",
    ("bias", "column_major"): "(2, gates*units) flattened column-major before splitting",
    ("bias", "pair"): "first array input bias, second recurrent bias (bias_ih, bias_hh)",
    ("bias", "pair_summed"): "both biases added on the input side (the recurrent "
                             "candidate bias moved outside the reset product)",
    ("bias", "pair_swapped"): "the two bias arrays swapped",
    ("bias", "first_only"): "only the first bias array used",
    ("bias", "second_only"): "only the second bias array used",
    ("forget_bias", "0"): "none added at run time",
    ("forget_bias", "1"): "1.0 added to the forget gate at run time (TF1 forget_bias, "
                          "or Keras unit_forget_bias applied twice)",
    ("reset", "after"): "reset after the recurrent matmul: r * (h @ R_n + b_hn) (Keras "
                        "reset_after=True, PyTorch, cuDNN, ONNX linear_before_reset=1)",
    ("reset", "before"): "reset before the recurrent matmul: (r * h) @ R_n (Keras "
                         "reset_after=False, TF1 GRUCell, ONNX default)",
    ("update", "standard"): "h = z * h_prev + (1 - z) * candidate (every framework)",
    ("update", "flipped"): "h = (1 - z) * h_prev + z * candidate (z weights the new "
                           "candidate)",
    ("direction", "forward"): "forward",
    ("direction", "go_backwards"): "time processed backwards, outputs in processing order "
                                   "(Keras go_backwards)",
    ("direction", "reverse"): "time processed backwards, outputs aligned with the input "
                              "(PyTorch / ONNX reverse direction)",
    ("direction", "backwards"): "time processed backwards (go_backwards / reverse)",
    ("layout", "batch_major"): "(batch, seq_len, features)",
    ("layout", "time_major"): "(seq_len, batch, features)",
    ("output", "h"): "hidden state h",
    ("output", "c"): "LSTM cell state c, not h (TF1 LSTMStateTuple is (c, h))",
    ("arrays", "labelled"): "in the labelled order",
}
# Words that depend on how the array is stored: "row" (input_size or units, gates*units)
# arrays act as x @ K (Keras, TF1); "col" (gates*units, input_size or units) as x @ W.T.
_FORM_WORDS = {
    ("input", "plain", "row"): "x @ kernel as stored (Keras layout)",
    ("input", "plain", "col"): "x @ W.T as stored (PyTorch / ONNX layout)",
    ("recurrent", "plain", "row"): "h @ recurrent_kernel as stored (Keras layout)",
    ("recurrent", "plain", "col"): "h @ W_hh.T as stored (PyTorch / ONNX layout)",
    ("recurrent", "transposed", "row"): "each gate block transposed, h @ R_g.T (how cuDNN "
                                        "reads Keras-shaped blocks)",
    ("recurrent", "transposed", "col"): "each gate block used untransposed, h @ W_g "
                                        "(PyTorch-shaped blocks read the Keras way)",
}
for _key, (_, _text) in _GATE_ACTIVATIONS.items():
    _WORDS[("gate_activation", _key)] = _text
for _key, (_, _text) in _ACTIVATIONS.items():
    _WORDS[("activation", _key)] = _text


@dataclass(frozen=True)
class _Convention:
    """A named convention: attribute -> allowed values (absent attributes: any)."""

    key: str
    words: str
    attrs: Mapping[str, frozenset[str]]


def _conv(key: str, words: str, **attrs: str | Iterable[str]) -> _Convention:
    return _Convention(key, words, {k: frozenset([v] if isinstance(v, str) else v)
                                    for k, v in attrs.items()})


_COMMON = dict(input="plain", recurrent="plain", gate_activation="sigmoid",
               activation="tanh", forget_bias="0", update="standard", output="h",
               arrays="labelled", direction="forward")


def _conventions(kind: str) -> dict[str, _Convention]:
    """Named conventions for ``kind``; the first one per label key is its reference."""
    c = _COMMON
    if kind == "lstm":
        items = [
            _conv("keras", "Keras LSTM (x @ K + h @ R + b, gates i f c o)",
                  **{**c, "order": "ifgo", "bias": "single", "layout": "batch_major"}),
            _conv("keras1", "Keras 1 LSTM files (per-gate arrays stored i c f o, "
                  "hard_sigmoid)", **{**c, "order": "igfo", "bias": "single",
                                      "gate_activation": "hard_sigmoid_keras2",
                                      "layout": "batch_major"}),
            _conv("cudnn", "CuDNNLSTM as cuDNN computes it (recurrent gate blocks "
                  "transposed, input blocks reinterpreted, both bias halves added)",
                  **{**c, "input": "cudnn", "recurrent": "transposed", "order": "ifgo",
                     "bias": "halves", "layout": "batch_major"}),
            _conv("keras_summed", "plain Keras layout with the two bias halves summed "
                  "(x @ K + h @ R + b[:4u] + b[4u:]: the naive CuDNNLSTM replica)",
                  **{**c, "order": "ifgo", "bias": "halves", "layout": "batch_major"}),
            _conv("torch", "PyTorch LSTM (W_ih, W_hh, b_ih + b_hh, gates i f g o)",
                  **{**c, "order": "ifgo", "bias": "pair",
                     "layout": ("time_major", "batch_major")}),
            _conv("onnx", "ONNX LSTM (W, R, B = [Wb, Rb], gates i o f c)",
                  **{**c, "order": "iofg", "bias": "halves", "layout": "time_major"}),
            _conv("tf1", "TF1 LSTMCell / BasicLSTMCell (one kernel on [x, h], gates "
                  "i j f o, forget_bias 1.0)", **{**c, "order": "igfo", "bias": "single",
                                                   "forget_bias": "1",
                                                   "layout": "batch_major"}),
            _conv("tf1_cudnn", "TF1 CudnnCompatibleLSTMCell (gates i c f o, forget_bias "
                  "0)", **{**c, "order": "igfo", "bias": "single", "layout": "batch_major"}),
        ]
    elif kind == "gru":
        items = [
            _conv("keras", "Keras GRU reset_after=True (gates z r h, bias rows input / "
                  "recurrent)", **{**c, "order": "zrn", "bias": "halves", "reset": "after",
                                   "layout": "batch_major"}),
            _conv("keras_v1", "Keras GRU reset_after=False (gates z r h, one bias)",
                  **{**c, "order": "zrn", "bias": "single", "reset": "before",
                     "layout": "batch_major"}),
            _conv("keras1", "Keras 1 GRU files (per-gate arrays z r h, hard_sigmoid)",
                  **{**c, "order": "zrn", "bias": "single", "reset": "before",
                     "gate_activation": "hard_sigmoid_keras2", "layout": "batch_major"}),
            _conv("cudnn", "CuDNNGRU as cuDNN computes it (recurrent gate blocks "
                  "transposed, input blocks reinterpreted)",
                  **{**c, "input": "cudnn", "recurrent": "transposed", "order": "zrn",
                     "bias": "halves", "reset": "after", "layout": "batch_major"}),
            _conv("torch", "PyTorch GRU (gates r z n, b_hn inside the reset product)",
                  **{**c, "order": "rzn", "bias": "pair", "reset": "after",
                     "layout": ("time_major", "batch_major")}),
            _conv("onnx", "ONNX GRU linear_before_reset=0 (the default; gates z r h)",
                  **{**c, "order": "zrn", "bias": "halves", "reset": "before",
                     "layout": "time_major"}),
            _conv("onnx_lbr", "ONNX GRU linear_before_reset=1 (gates z r h)",
                  **{**c, "order": "zrn", "bias": "halves", "reset": "after",
                     "layout": "time_major"}),
            _conv("tf1", "TF1 GRUCell (gates r u, reset before the matmul)",
                  **{**c, "order": "rzn", "bias": "single", "reset": "before",
                     "layout": "batch_major"}),
        ]
    else:
        items = [
            _conv("keras", "Keras SimpleRNN", **{**c, "order": "h", "bias": "single",
                                                  "activation": ("tanh", "relu"),
                                                  "layout": "batch_major"}),
            _conv("torch", "PyTorch RNN", **{**c, "order": "h", "bias": "pair",
                                              "activation": ("tanh", "relu"),
                                              "layout": ("time_major", "batch_major")}),
            _conv("onnx", "ONNX RNN", **{**c, "order": "h", "bias": "halves",
                                          "activation": ("tanh", "relu"),
                                          "layout": "time_major"}),
            _conv("tf1", "TF1 BasicRNNCell", **{**c, "order": "h", "bias": "single",
                                                 "layout": "batch_major"}),
        ]
    return {item.key: item for item in items}


def _reference(kind: str, label: str, single_bias: bool) -> _Convention:
    """The convention a label stands for, given the kind found and the bias arrays."""
    conventions = _conventions(kind)
    if kind == "gru" and label == "keras" and single_bias:
        label = "keras_v1"
    if kind == "rnn" and label in ("keras1", "cudnn"):
        label = "keras"
    return conventions[label]


@dataclass(frozen=True)
class Choice:
    """One attribute's value in a candidate convention."""

    attr: str
    value: str
    words: str
    cost: int = 1


@dataclass
class _Source:
    """One reading of which array is the input matrix, the recurrent matrix, the biases."""

    kind: str
    w_in: np.ndarray
    in_form: str  # "row": (input, G*units) acting as x @ w; "col": (G*units, input)
    w_rec: np.ndarray
    rec_form: str
    biases: list[np.ndarray]
    bias_2d: bool
    choice: Choice


@dataclass
class Candidate:
    """A full convention, its canonical weights and how well it reproduces the outputs."""

    kind: str
    choices: dict[str, Choice]
    spec: CellSpec
    weights: CellWeights
    error: float = float("inf")
    cost: int = 0
    prediction: np.ndarray | None = None
    equivalents: int = 0
    matches: list[str] = field(default_factory=list)
    first_departure: dict[str, Any] | None = None

    def value(self, attr: str) -> str | None:
        choice = self.choices.get(attr)
        return None if choice is None else choice.value

    def describe(self) -> list[str]:
        """One line per attribute, in plain words."""
        return [f"{_ATTR_TITLES[a]}: {c.words}" for a, c in self.choices.items()
                if not (a == "order" and self.kind == "rnn")]


@dataclass
class Diagnosis:
    """What :func:`diagnose` found.

    Attributes:
        kind: ``"lstm"``, ``"gru"`` or ``"rnn"`` (from the gate count).
        input_size, hidden_size: sizes read from the arrays and the outputs.
        label: the convention the weights were labelled as (given or guessed).
        label_guessed: True when no label was given.
        label_words: that convention in words.
        atol: the max abs error under which a candidate fits.
        fits: True when at least one candidate reproduces the outputs within ``atol``.
        candidates: ranked: fitting ones by distance from the label then error, others
            by error; distinct outputs only.
        searched: candidates evaluated, per stage.
        seconds: time the search took.
        mode: ``"sequence"`` (outputs per step) or ``"last"`` (final output only).
    """

    kind: str
    input_size: int
    hidden_size: int
    label: str
    label_guessed: bool
    label_words: str
    atol: float
    fits: bool
    candidates: list[Candidate]
    searched: dict[str, int]
    seconds: float
    mode: str
    reference: _Convention = field(repr=False, default=None)  # type: ignore[assignment]
    labelled: Candidate | None = field(repr=False, default=None)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def differences(self, candidate: Candidate) -> list[str]:
        """Sentences naming how ``candidate`` departs from the labelled convention."""
        lines = []
        for attr, choice in candidate.choices.items():
            allowed = self.reference.attrs.get(attr)
            if allowed is None or choice.value in allowed:
                continue
            if attr == "arrays":
                lines.append(f"arrays: {choice.words} - not the order {self.label} lists "
                             "them (input weights, recurrent weights, biases); h5py lists "
                             "a group's datasets alphabetically: use its weight_names order")
                continue
            expected = ", ".join(_WORDS.get((attr, v), v) if attr != "order"
                                 else _order_words(self.kind, v) for v in sorted(allowed))
            lines.append(f"{_ATTR_TITLES[attr]}: {choice.words} - {self.label}: "
                         f"{expected}")
        return lines

    def explain(self) -> list[str]:
        """The report, as lines of plain text."""
        best = self.best
        head = (f"{self.kind.upper()} input_size={self.input_size} "
                f"units={self.hidden_size}; weights labelled {self.label}"
                f"{' (guessed from the arrays)' if self.label_guessed else ''}: "
                f"{self.label_words}")
        total = sum(v for k, v in self.searched.items() if "skipped" not in k)
        lines = [head, f"evaluated {total} candidate conventions in {self.seconds:.2f} s "
                 f"({', '.join(f'{k}: {v}' for k, v in self.searched.items())})"]
        if best is None:
            return lines + ["no reading of the arrays could be evaluated"]
        if self.fits:
            lines.append(f"best fit: max abs error {best.error:.3g} (fits, atol "
                         f"{self.atol:g})")
        else:
            lines.append(f"nothing fits within atol {self.atol:g}; closest: max abs error "
                         f"{best.error:.3g}")
        if best.matches:
            lines.append("  = " + "; = ".join(best.matches))
        lines += ["  " + text for text in best.describe()]
        diffs = self.differences(best)
        if diffs:
            lines.append(f"how it differs from {self.label}:")
            lines += ["  - " + d for d in diffs]
        else:
            lines.append(f"it is the labelled convention ({self.label}) itself")
        if best.first_departure:
            lines.append("  first departure: " + _departure_words(best.first_departure))
        lab = self.labelled
        if lab is not None and lab is not best:
            where = (f", first departs at {_departure_words(lab.first_departure)}"
                     if lab.first_departure else "")
            lines.append(f"the labelled convention ({self.label}) itself: max abs error "
                         f"{lab.error:.3g}{where}")
        others = self.candidates[1:5]
        if others:
            lines.append("next candidates:")
            for rank, cand in enumerate(others, 2):
                diff = self.differences(cand)
                where = (f"; first departs at {_departure_words(cand.first_departure)}"
                         if cand.first_departure else "")
                lines.append(f"  {rank}. max abs error {cand.error:.3g}{where}")
                lines += ["       " + d for d in (diff or ["the labelled convention"])]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        def cand(c: Candidate, rank: int) -> dict[str, Any]:
            return {
                "rank": rank, "max_abs_error": c.error, "fits": c.error <= self.atol,
                "distance_from_label": c.cost,
                "convention": {a: ch.value for a, ch in c.choices.items()},
                "description": c.describe(), "differences": self.differences(c),
                "matches": c.matches, "equivalent_readings": c.equivalents,
                "first_departure": c.first_departure,
            }

        return {
            "kind": self.kind, "input_size": self.input_size, "units": self.hidden_size,
            "label": self.label, "label_guessed": self.label_guessed,
            "label_description": self.label_words, "atol": self.atol, "fits": self.fits,
            "mode": self.mode, "searched": self.searched, "seconds": self.seconds,
            "candidates": [cand(c, k) for k, c in enumerate(self.candidates[:10], 1)],
            "labelled": None if self.labelled is None else cand(
                self.labelled, self.candidates.index(self.labelled) + 1),
        }


def _departure_words(dep: dict[str, Any]) -> str:
    if dep.get("step") is None:
        return f"unit {dep['unit']} of sample {dep['sample']} (error {dep['error']:.3g})"
    before = "; the steps before it fit" if dep["processed"] else ""
    return (f"step {dep['step']}, unit {dep['unit']}, sample {dep['sample']} "
            f"(error {dep['error']:.3g}{before})")


# --------------------------------------------------------------------------- reading arrays


def read_weight_arrays(path: str | Path) -> list[tuple[str, np.ndarray]]:
    """Read the arrays of one layer from ``.npz``, ``.safetensors`` or ``.pt``.

    An ``.npz`` written by ``np.savez(path, *layer.get_weights())`` holds ``arr_0, arr_1,
    ...`` in file order; named PyTorch parameters are put in the module's own order
    (weight_ih, weight_hh, bias_ih, bias_hh), since safetensors sorts names alphabetically.
    Object arrays are refused.
    """
    return _torch_order(_read_pairs(path))


_TORCH_ROLES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _torch_order(pairs: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
    def role(name: str) -> int | None:
        last = name.rsplit(".", 1)[-1]
        return next((k for k, r in enumerate(_TORCH_ROLES) if last.startswith(r)), None)

    if not pairs or any(role(name) is None for name, _ in pairs):
        return pairs
    return sorted(pairs, key=lambda pair: role(pair[0]))


def _read_pairs(path: str | Path) -> list[tuple[str, np.ndarray]]:
    p = Path(path)
    if not p.is_file():
        raise FormatError(f"weights file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as data:
                return [(k, np.asarray(data[k])) for k in data.files]
        except (ValueError, OSError) as err:
            raise FormatError(f"{p.name!r} is not a readable .npz of plain arrays: "
                              f"{err}") from err
    if suffix == ".safetensors":
        from ._optional import import_optional

        numpy_st = import_optional("safetensors.numpy")
        return list(numpy_st.load_file(str(p)).items())
    if suffix in (".pt", ".pth"):
        from ._optional import import_optional

        torch = import_optional("torch")
        state = torch.load(str(p), map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise FormatError(f"{p.name!r} does not hold a state_dict")
        return [(k, v.detach().cpu().numpy()) for k, v in state.items()]
    raise FormatError(f"weights file {p.name!r}: expected .npz, .safetensors or .pt")


def _guess_label(names: list[str], arrays: list[np.ndarray], n: int, u: int) -> str:
    lowered = [name.lower() for name in names]
    if any("weight_ih" in name for name in lowered):
        return "torch"
    if any(a.ndim == 3 for a in arrays) or set(names) >= {"W", "R"}:
        return "onnx"
    if len(arrays) in (9, 12):
        return "keras1"
    if any(a.ndim == 2 and a.shape[0] == n + u and a.shape[0] != n for a in arrays):
        return "tf1"
    if any(a.ndim == 1 and a.shape[0] in (8 * u, 6 * u) for a in arrays) \
            and any(a.ndim == 2 and a.shape[1] in (4 * u, 3 * u) for a in arrays):
        return "cudnn"
    return "keras"


def _squeeze(name: str, array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] != 1:
        raise UnsupportedFeatureError(
            f"array {name!r} has shape {array.shape}: {array.shape[0]} directions; diagnose "
            "examines one direction: pass W[0], R[0], B[0] (or [1] for the backward one)")
    return array[0] if array.ndim == 3 else array


def _assemble_special(names: list[str], arrays: list[np.ndarray], n: int,
                      u: int) -> list[tuple[str, list[np.ndarray], str]] | None:
    """Keras 1 per-gate arrays and TF1 GRUCell's four variables, joined in file order."""
    shapes = [a.shape for a in arrays]
    triplet = [(n, u), (u, u), (u,)]
    if len(arrays) in (9, 12) and all(shapes[k] == triplet[k % 3] for k in range(len(shapes))):
        kernel = np.concatenate(arrays[0::3], axis=1)
        recurrent = np.concatenate(arrays[1::3], axis=1)
        bias = np.concatenate(arrays[2::3])
        return [("kernel (per-gate W joined in file order)", [kernel, recurrent, bias],
                 "keras1")]
    tf1_gru = [(n + u, 2 * u), (2 * u,), (n + u, u), (u,)]
    if len(arrays) == 4 and sorted(shapes) == sorted(tf1_gru):
        by_shape = {a.shape: a for a in arrays}
        kernel = np.concatenate([by_shape[(n + u, 2 * u)], by_shape[(n + u, u)]], axis=1)
        bias = np.concatenate([by_shape[(2 * u,)], by_shape[(u,)]])
        return [("TF1 GRUCell gates + candidate kernels joined", [kernel, bias], "tf1")]
    return None


def _sources(names: list[str], arrays: list[np.ndarray], n: int, u: int) -> list[_Source]:
    """Every assignment of array roles consistent with the shapes, for each gate count."""
    found: list[_Source] = []
    for num_gates, kind in _KIND_OF_GATES.items():
        k = num_gates * u
        roles = []
        for a in arrays:
            r = set()
            if a.ndim == 2:
                if a.shape == (n, k):
                    r.add("in_row")
                if a.shape == (k, n):
                    r.add("in_col")
                if a.shape == (u, k):
                    r.add("rec_row")
                if a.shape == (k, u):
                    r.add("rec_col")
                if a.shape == (n + u, k):
                    r.add("cat")
                if a.shape in ((2, k), (1, 2 * k)):
                    r.add("bias2")
            elif a.ndim == 1:
                if a.shape[0] == k:
                    r.add("bias1")
                if a.shape[0] == 2 * k:
                    r.add("bias2")
            roles.append(r)
        found += _assignments(kind, names, arrays, roles, n, u)
    return found


def _assignments(kind: str, names: list[str], arrays: list[np.ndarray], roles: list[set],
                 n: int, u: int) -> list[_Source]:
    out = []
    count = len(arrays)
    for i_in, i_rec in itertools.permutations(range(count), 2):
        for in_form, rec_form in (("row", "row"), ("col", "col"), ("row", "col"),
                                  ("col", "row")):
            if f"in_{in_form}" in roles[i_in] and f"rec_{rec_form}" in roles[i_rec]:
                rest = [k for k in range(count) if k not in (i_in, i_rec)]
                source = _with_biases(kind, names, arrays, roles, rest,
                                      arrays[i_in], in_form, arrays[i_rec], rec_form,
                                      [i_in, i_rec])
                if source is not None:
                    out.append(source)
    for i_cat in range(count):
        if "cat" not in roles[i_cat]:
            continue
        rest = [k for k in range(count) if k != i_cat]
        cat = arrays[i_cat]
        for first, cost in (("x", 0), ("h", 1)):
            w_in, w_rec = (cat[:n], cat[n:]) if first == "x" else (cat[u:], cat[:u])
            source = _with_biases(kind, names, arrays, roles, rest, w_in, "row", w_rec,
                                  "row", [i_cat], cat_first=first, cat_cost=cost)
            if source is not None:
                out.append(source)
    return out


def _with_biases(kind, names, arrays, roles, rest, w_in, in_form, w_rec, rec_form, used,
                 cat_first: str | None = None, cat_cost: int = 0) -> _Source | None:
    if len(rest) > 2:
        return None
    if len(rest) == 2 and not all("bias1" in roles[k] for k in rest):
        return None
    if len(rest) == 1 and not roles[rest[0]] & {"bias1", "bias2"}:
        return None
    order = used + rest
    in_order = order == sorted(order)
    if cat_first is None:
        words = (f"input weights {names[used[0]]!r}, recurrent weights {names[used[1]]!r}"
                 + "".join(f", bias {names[k]!r}" for k in rest))
    else:
        rows = "x rows first, then h rows" if cat_first == "x" else "h rows first, then x"
        words = (f"one kernel {names[used[0]]!r} on the concatenation [x, h] ({rows})"
                 + "".join(f", bias {names[k]!r}" for k in rest))
    cost = (0 if in_order else 1) + cat_cost
    value = "labelled" if cost == 0 else "reordered"
    biases = [np.asarray(arrays[k]).reshape(-1) for k in rest]
    bias_2d = len(rest) == 1 and arrays[rest[0]].ndim == 2 and arrays[rest[0]].shape[0] == 2
    return _Source(kind, w_in, in_form, w_rec, rec_form, biases, bias_2d,
                   Choice("arrays", value, words, cost))


# --------------------------------------------------------------------------- choices


def _blocks(matrix: np.ndarray, form: str, num_gates: int) -> list[np.ndarray]:
    axis = 1 if form == "row" else 0
    return np.split(matrix, num_gates, axis=axis)


def _input_options(src: _Source, n: int, u: int, G: int) -> list[tuple[Choice, np.ndarray]]:
    """(choice, input weights (G*u, n) in stored gate order, canonical orientation)."""
    blocks = _blocks(src.w_in, src.in_form, G)
    if src.in_form == "row":
        variants = {
            "plain": [b.T for b in blocks],
            "cudnn": [b.reshape(u, n) for b in blocks],
            "cudnn_inverse": [b.T.reshape(n, u).T for b in blocks],
        }
    else:
        variants = {"plain": blocks, "reinterpret": [b.reshape(n, u).T for b in blocks]}
    costs = {"plain": 0, "cudnn": 1, "cudnn_inverse": 2, "reinterpret": 2}
    plain = np.concatenate(variants["plain"])
    options = []
    for key, blocks_ in variants.items():
        matrix = np.concatenate(blocks_)
        words = _FORM_WORDS.get(("input", key, src.in_form), _WORDS[("input", key)])
        if key != "plain" and np.array_equal(matrix, plain):
            words += f" (the same as stored here: input_size={n}, units={u})"
        options.append((Choice("input", key, words, costs[key]), matrix))
    return options


def _recurrent_options(src: _Source, u: int, G: int) -> list[tuple[Choice, np.ndarray]]:
    blocks = _blocks(src.w_rec, src.rec_form, G)
    plain = [b.T for b in blocks] if src.rec_form == "row" else blocks
    form = src.rec_form
    options = [(Choice("recurrent", "plain", _FORM_WORDS["recurrent", "plain", form], 0),
                np.concatenate(plain))]
    if u > 1:
        options.append((Choice("recurrent", "transposed",
                               _FORM_WORDS["recurrent", "transposed", form], 1),
                        np.concatenate([b.T for b in plain])))
    return options


def _bias_options(src: _Source, G: int, u: int) -> list[tuple[Choice, np.ndarray | None,
                                                              np.ndarray | None]]:
    gru = src.kind == "gru"
    k = G * u

    def opt(value: str, b_ih, b_hh, cost: int = 1):
        return (Choice("bias", value, _WORDS[("bias", value)], cost), b_ih, b_hh)

    if not src.biases:
        return [opt("none", None, None, 0)]
    if len(src.biases) == 2:
        a, b = src.biases
        options = [opt("pair", a, b, 0), opt("first_only", a, None), opt("second_only", b, None)]
        if gru:
            options += [opt("pair_summed", a + b, None), opt("pair_swapped", b, a)]
        return options
    (bias,) = src.biases
    if bias.size == k:
        return [opt("single", bias, None, 0)]
    first, second = bias[:k], bias[k:]
    options = [opt("halves", first, second, 0), opt("first_half", first, None),
               opt("second_half", second, None)]
    if gru:
        options += [opt("halves_summed", first + second, None),
                    opt("halves_swapped", second, first)]
    if src.bias_2d:
        mixed = bias.reshape(2, k).T.reshape(-1)
        options.append(opt("column_major", mixed[:k], mixed[k:], 2))
    return options


def _orders(kind: str) -> list[Choice]:
    letters = GATES[kind]
    known = _KNOWN_ORDERS[kind]
    out = [Choice("order", o, _order_words(kind, o), 1) for o in known]
    for perm in itertools.permutations(letters):
        o = "".join(perm)
        if o not in known:
            out.append(Choice("order", o, _order_words(kind, o), 2))
    return out


def _choice(attr: str, value: str, cost: int = 1) -> Choice:
    return Choice(attr, value, _WORDS[(attr, value)], cost)


def _reorder(array: np.ndarray, stored: str, canonical: tuple[str, ...]) -> np.ndarray:
    index = gate_permutation(stored, canonical)
    G = len(canonical)
    return array.reshape(G, -1, *array.shape[1:])[index].reshape(array.shape)


# --------------------------------------------------------------------------- evaluation


@dataclass
class _Problem:
    x: dict[str, np.ndarray]          # layout -> (batch, seq_len, input_size) float64
    y: dict[str, np.ndarray]          # layout -> (batch, seq_len, units) or (batch, units)
    mode: str                         # "sequence" | "last"
    n: int
    u: int


def _problem(x: np.ndarray, y: np.ndarray) -> _Problem:
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise InputError(f"input has shape {x.shape}; expected (batch, seq_len, input_size) "
                         "or (seq_len, input_size)")
    if y.ndim == 0 or y.shape[-1] < 1:
        raise InputError(f"outputs have shape {y.shape}; expected (batch, seq_len, units)")
    n, u = x.shape[2], y.shape[-1]
    a, b = x.shape[:2]
    layouts = {"batch_major": x}
    if a > 1 and b > 1:
        layouts["time_major"] = x.transpose(1, 0, 2)
    ys: dict[str, np.ndarray] = {}
    modes: dict[str, str] = {}
    for name, xs in layouts.items():
        batch, steps = xs.shape[:2]
        if y.ndim == 3:
            yy = y if name == "batch_major" else y.transpose(1, 0, 2)
            if yy.shape[:2] == (batch, steps):
                ys[name], modes[name] = yy, "sequence"
        elif y.ndim == 2 and batch == 1 and y.shape[0] == steps and steps > 1:
            ys[name], modes[name] = y[None], "sequence"
        elif y.ndim == 2 and y.shape[0] == batch:
            ys[name], modes[name] = y, "last"
        elif y.ndim == 1 and batch == 1:
            ys[name], modes[name] = y[None], "last"
    if not ys:
        raise InputError(f"expected outputs of shape (batch, seq_len, units) or (batch, "
                         f"units) matching input {x.shape}; got {y.shape}")
    mode = "sequence" if "sequence" in modes.values() else "last"
    ys = {k: v for k, v in ys.items() if modes[k] == mode}
    return _Problem({k: layouts[k] for k in ys}, ys, mode, n, u)


def _combined(cands: Sequence[Candidate], recurrent: bool = True
              ) -> tuple[CellSpec, CellWeights]:
    """``len(cands)`` cells of the same spec as one cell with block-diagonal recurrence.

    With ``recurrent=False`` the recurrent matrix is left zero: enough for a first step
    from zero state, where it multiplies zeros.
    """
    first = cands[0].spec
    M, G, u = len(cands), first.num_gates, first.hidden_size
    w_ih = np.stack([c.weights.w_ih.reshape(G, u, -1) for c in cands], axis=1)
    b_ih = np.stack([c.weights.b_ih.reshape(G, u) for c in cands], axis=1)
    b_hh = np.stack([c.weights.b_hh.reshape(G, u) for c in cands], axis=1)
    w_hh = np.zeros((G, M, u, M, u))
    if recurrent:
        index = np.arange(M)
        w_hh[:, index, :, index, :] = np.stack([c.weights.w_hh.reshape(G, u, u)
                                                for c in cands])
    spec = first.with_(hidden_size=M * u, convention="diagnose candidates")
    weights = CellWeights(w_ih.reshape(G * M * u, -1), w_hh.reshape(G * M * u, M * u),
                          b_ih.reshape(-1), b_hh.reshape(-1))
    return spec, weights


def _run(cands: Sequence[Candidate], x: np.ndarray, reverse: bool, recurrent: bool = True
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Outputs (M, batch, seq_len, units), final h (M, batch, units), final c or None."""
    spec, weights = _combined(cands, recurrent)
    stack = RecurrentStack([[Direction(spec, weights, reverse)]], dtype=np.float64,
                           name="diagnose")
    result = stack(x)
    M, u = len(cands), cands[0].spec.hidden_size
    batch, steps = x.shape[:2]
    y = result.y.reshape(batch, steps, M, u).transpose(2, 0, 1, 3)
    h = result.h_n[0].reshape(batch, M, u).transpose(1, 0, 2)
    c = None if result.c_n is None else result.c_n[0].reshape(batch, M, u).transpose(1, 0, 2)
    return y, h, c


def _groups(cands: Iterable[Candidate]) -> dict[tuple, list[Candidate]]:
    groups: dict[tuple, list[Candidate]] = {}
    for c in cands:
        key = (c.spec, c.value("layout"), c.value("direction"))
        groups.setdefault(key, []).append(c)
    return groups


def _chunks(items: list[Candidate], u: int) -> Iterable[list[Candidate]]:
    size = max(1, _BATCH_UNITS // u)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _score(cands: list[Candidate], problem: _Problem, steps: int | None,
           keep_prediction: bool = False) -> None:
    """Set ``error`` of each candidate from a run over the first ``steps`` processed steps."""
    for (_, layout, direction), members in _groups(cands).items():
        x, y = problem.x[layout], problem.y[layout]
        T = x.shape[1]
        k = T if steps is None else min(steps, T)
        backwards = direction != "forward"
        x_sub = x[:, T - k:] if backwards else x[:, :k]
        for chunk in _chunks(members, problem.u):
            pred, h, c = _run(chunk, x_sub, backwards)
            if problem.mode == "last":
                outs = [c if cand.value("output") == "c" else h for cand in chunk]
                for j, cand in enumerate(chunk):
                    cand.error = float(np.abs(outs[j][j] - y).max())
                    if keep_prediction:
                        cand.prediction = outs[j][j]
                continue
            target = {"forward": y[:, :k], "reverse": y[:, T - k:],
                      "go_backwards": y[:, :k][:, ::-1]}[direction]
            errors = np.abs(pred - target[None]).max(axis=(1, 2, 3))
            for j, cand in enumerate(chunk):
                cand.error = float(errors[j])
                if keep_prediction:
                    cand.prediction = pred[j]


def _cost(cand: Candidate, reference: _Convention, skip: Sequence[str] = ()) -> int:
    """How far ``cand`` is from the labelled convention (0: it is the label)."""
    return sum(0 if ch.value in reference.attrs.get(a, (ch.value,)) else max(ch.cost, 1)
               for a, ch in cand.choices.items() if a not in skip)


def _prune(cands: list[Candidate], atol: float) -> list[Candidate]:
    """Keep what fits, what is closest, and the labelled convention itself."""
    fit = [c for c in cands if c.error <= atol or c.cost == 0]
    rest = sorted((c for c in cands if c.error > atol and c.cost != 0),
                  key=lambda c: (c.error, c.cost))
    return fit + rest[:KEEP_CLOSEST]


# --------------------------------------------------------------------------- the search


@dataclass
class _Partial:
    """The input-side choices: everything step 0 can judge (with zero initial state)."""

    src: _Source
    choices: dict[str, Choice]
    spec: CellSpec
    w_in: np.ndarray           # stored gate order, shared by many partials
    b_ih: np.ndarray           # canonical gate order, update flip applied
    b_hh: np.ndarray
    order: str
    flipped: bool
    error0: dict[tuple[str, str], float] = field(default_factory=dict)

    def w_ih(self) -> np.ndarray:
        """Input weights in canonical order; built on demand to bound memory."""
        w = _reorder(self.w_in, self.order, GATES[self.src.kind])
        return _flip_update(self.spec.hidden_size, w)[0] if self.flipped else w


def _flip_update(u: int, *arrays: np.ndarray) -> list[np.ndarray]:
    # 1 - s(a) = s(-a) for sigmoid and both hard sigmoids, so a GRU whose update gate
    # weights the new candidate is the standard cell with the z block negated.
    z = GATES["gru"].index("z")
    out = []
    for a in arrays:
        a = a.copy()
        a[z * u:(z + 1) * u] *= -1
        out.append(a)
    return out


def _partials(src: _Source, n: int, u: int) -> list[_Partial]:
    kind = src.kind
    canonical = GATES[kind]
    G = len(canonical)
    zeros = np.zeros(G * u)
    gate_acts = list(_GATE_ACTIVATIONS) if kind != "rnn" else ["sigmoid"]
    acts = ["tanh", "relu"] if kind == "rnn" else ["tanh"]
    resets = ["after", "before"] if kind == "gru" else ["after"]
    updates = ["standard", "flipped"] if kind == "gru" else ["standard"]
    specs = {}
    for ga, act, reset in itertools.product(gate_acts, acts, resets):
        specs[ga, act, reset] = CellSpec(
            kind, n, u, gate_activation=_GATE_ACTIVATIONS[ga][0],
            activation=_ACTIVATIONS[act][0], reset_after=reset == "after",
            convention="diagnose candidate")
    out = []
    for (c_in, w_in), (c_bias, b_ih, b_hh), order in itertools.product(
            _input_options(src, n, u, G), _bias_options(src, G, u), _orders(kind)):
        bi = zeros if b_ih is None else _reorder(b_ih, order.value, canonical)
        bh = zeros if b_hh is None else _reorder(b_hh, order.value, canonical)
        for update in updates:
            flipped = update == "flipped"
            biases = _flip_update(u, bi, bh) if flipped else (bi, bh)
            for (ga, act, reset), spec in specs.items():
                choices = {"arrays": src.choice, "input": c_in, "order": order,
                           "bias": c_bias}
                if kind != "rnn":
                    choices["gate_activation"] = _choice("gate_activation", ga,
                                                         0 if ga == "sigmoid" else 1)
                choices["activation"] = _choice("activation", act, 0 if act == "tanh" else 1)
                if kind == "gru":
                    choices["reset"] = _choice("reset", reset)
                    choices["update"] = _choice("update", update, 0 if not flipped else 1)
                out.append(_Partial(src, choices, spec, w_in, *biases, order.value, flipped))
    return out


class _RecurrentCache:
    """Recurrent weights per (source, layout choice, gate order, update flip), built once."""

    def __init__(self) -> None:
        self._options: dict[int, list[tuple[Choice, np.ndarray]]] = {}
        self._arrays: dict[tuple, np.ndarray] = {}

    def options(self, part: _Partial) -> list[tuple[Choice, np.ndarray]]:
        src, u = part.src, part.spec.hidden_size
        key = id(src)
        if key not in self._options:
            self._options[key] = _recurrent_options(src, u, len(GATES[src.kind]))
        out = []
        for choice, stored in self._options[key]:
            akey = (key, choice.value, part.order, part.flipped)
            if akey not in self._arrays:
                w = _reorder(stored, part.order, GATES[src.kind])
                self._arrays[akey] = _flip_update(u, w)[0] if part.flipped else w
            out.append((choice, self._arrays[akey]))
        return out


_FORGET_GATE = GATES["lstm"].index("f")


def _complete(part: _Partial, layout: str, direction: str, outputs: list[str | None],
              cache: _RecurrentCache, first_only: bool = False) -> list[Candidate]:
    """Candidates that add recurrent layout, forget bias, output, direction and layout."""
    kind, u = part.src.kind, part.spec.hidden_size
    forget = ["0", "1"] if kind == "lstm" else [None]
    b_ih_fb = None
    w_ih = part.w_ih()
    out = []
    for (c_rec, w_hh), fb, output in itertools.product(cache.options(part), forget, outputs):
        choices = dict(part.choices)
        choices["recurrent"] = c_rec
        b_ih = part.b_ih
        if fb is not None:
            choices["forget_bias"] = _choice("forget_bias", fb, 0 if fb == "0" else 1)
            if fb == "1":
                if b_ih_fb is None:
                    b_ih_fb = part.b_ih.copy()
                    f = _FORGET_GATE
                    b_ih_fb[f * u:(f + 1) * u] += 1.0
                b_ih = b_ih_fb
        choices["direction"] = _choice("direction", direction, 0 if direction == "forward"
                                       else 1)
        choices["layout"] = _choice("layout", layout, 0 if layout == "batch_major" else 1)
        if output is not None:
            choices["output"] = _choice("output", output, 0 if output == "h" else 1)
        ordered = {a: choices[a] for a in _ATTR_TITLES if a in choices}
        out.append(Candidate(kind, ordered, part.spec,
                             CellWeights(w_ih, w_hh, b_ih, part.b_hh)))
        if first_only:
            break
    return out


def _score_first_step(parts: list[_Partial], problem: _Problem, cache: _RecurrentCache
                      ) -> None:
    """Error at the first processed step for every layout and direction, per partial."""
    groups: dict[CellSpec, list[int]] = {}
    for k, part in enumerate(parts):
        groups.setdefault(part.spec, []).append(k)
    # Every first step (x[:, 0] forward, x[:, -1] backwards, per layout) as one batch.
    pieces, where, start = [], {}, 0
    for layout, x in problem.x.items():
        for end in ("first", "last"):
            pieces.append(x[:, :1] if end == "first" else x[:, -1:])
            where[layout, end] = slice(start, start + x.shape[0])
            start += x.shape[0]
    steps = np.concatenate(pieces, axis=0)
    size = max(1, _PROBE_UNITS // problem.u)
    for members in groups.values():
        for begin in range(0, len(members), size):
            chunk = members[begin:begin + size]
            # Probes are built per chunk so that memory stays bounded for large layers.
            probes = [_complete(parts[k], "batch_major", "forward", [None], cache,
                                first_only=True)[0] for k in chunk]
            out, _, _ = _run(probes, steps, False, recurrent=False)
            for layout, y in problem.y.items():
                first = out[:, where[layout, "first"], 0]
                last = out[:, where[layout, "last"], 0]
                errors = {
                    "forward": np.abs(first - y[None, :, 0]).max(axis=(1, 2)),
                    "reverse": np.abs(last - y[None, :, -1]).max(axis=(1, 2)),
                    "go_backwards": np.abs(last - y[None, :, 0]).max(axis=(1, 2)),
                }
                for direction, errs in errors.items():
                    for j, k in enumerate(chunk):
                        parts[k].error0[layout, direction] = float(errs[j])


def diagnose(
    weights: Sequence[np.ndarray] | Mapping[str, np.ndarray] | Sequence[tuple[str, np.ndarray]],
    x: np.ndarray,
    y: np.ndarray,
    framework: str | None = None,
    atol: float = DEFAULT_ATOL,
    max_seconds: float = 60.0,
) -> Diagnosis:
    """Find the conventions under which ``weights`` turn ``x`` into ``y``.

    Args:
        weights: the layer's arrays as held: a list (Keras ``get_weights()``), a dict
            (state_dict, ONNX initializers), or (name, array) pairs, in their order.
        x: input, (batch, seq_len, input_size) or (seq_len, input_size); time-major
            layouts are tried too.
        y: the outputs to explain: (batch, seq_len, units) for every step, or
            (batch, units) for the last output only.
        framework: what the weights are labelled as: ``keras``, ``keras1``, ``cudnn``,
            ``torch``, ``onnx`` or ``tf1``; guessed from names and shapes when None.
        atol: max abs error under which a candidate counts as reproducing ``y``.
        max_seconds: stop expanding readings after this long (only reached with final
            outputs alone, which allow no pruning by steps, on large layers).

    Returns:
        A :class:`Diagnosis`; ``.explain()`` gives the report as lines.

    Raises:
        InputError: arrays, input and outputs whose shapes no convention relates.
    """
    started = time.perf_counter()
    pairs = _pairs(weights)
    names = [p[0] for p in pairs]
    arrays = [_squeeze(name, np.asarray(a, np.float64)) for name, a in pairs]
    problem = _problem(x, y)
    n, u = problem.n, problem.u
    if framework is not None and framework not in LABELS:
        raise InputError(f"framework {framework!r} is not known; expected one of "
                         f"{', '.join(LABELS)}")

    special = _assemble_special(names, arrays, n, u)
    label = framework
    if special:
        (words, joined, special_label) = special[0]
        label = label or special_label
        names = ["kernel", "recurrent_kernel", "bias"][:len(joined)] if len(joined) == 3 \
            else ["kernel", "bias"]
        arrays = joined
    sources = _sources(names, arrays, n, u)
    if not sources:
        raise InputError(_no_source_message(names, arrays, n, u))
    guessed = label is None
    label = label or _guess_label(names, arrays, n, u)

    kinds = sorted({s.kind for s in sources}, key=["lstm", "gru", "rnn"].index)
    references = {}
    for kind in kinds:
        single_bias = any(len(s.biases) == 1 and s.biases[0].size == len(GATES[kind]) * u
                          for s in sources if s.kind == kind)
        references[kind] = _reference(kind, label, single_bias)
    searched: dict[str, int] = {}
    results: list[Candidate] = []
    for kind in kinds:
        results += _search(kind, [s for s in sources if s.kind == kind], problem, atol,
                           searched, references[kind], max_seconds)
    kind = min(results, key=lambda c: c.error).kind if results else kinds[0]
    reference = references[kind]
    ranked = _rank([c for c in results if c.kind == kind], reference, atol)
    labelled = next((c for c in ranked if c.cost == 0), None)
    if labelled is None:
        # The label may compute the same outputs as a better-named candidate.
        labelled = next((c for c in ranked if reference.words in c.matches), None)
    for cand in ranked[:5] + ([labelled] if labelled is not None else []):
        if cand.first_departure is None:
            _first_departure(cand, problem, atol)
    return Diagnosis(kind, n, u, label, guessed, reference.words, atol,
                     bool(ranked) and ranked[0].error <= atol, ranked, searched,
                     time.perf_counter() - started, problem.mode, reference, labelled)


def _pairs(weights: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(weights, Mapping):
        return [(str(k), np.asarray(v)) for k, v in weights.items()]
    items = list(weights)
    if items and isinstance(items[0], tuple) and len(items[0]) == 2 \
            and isinstance(items[0][0], str):
        return [(k, np.asarray(v)) for k, v in items]
    return [(f"arr_{k}", np.asarray(v)) for k, v in enumerate(items)]


def _no_source_message(names, arrays, n, u) -> str:
    shapes = ", ".join(f"{name} {tuple(a.shape)}" for name, a in zip(names, arrays))
    hint = ""
    if any(re.search(r"_l[1-9]\d*|_reverse", name) for name in names):
        hint = ("; diagnose examines one direction of one layer: pass only its arrays "
                "(e.g. weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0) and the outputs "
                "of that layer and direction")
    elif u % 2 == 0 and any(a.ndim == 2 and u // 2 in a.shape for a in arrays):
        hint = (f"; the outputs have {u} features: if they come from a bidirectional layer, "
                f"pass one direction's outputs (units={u // 2})")
    return (f"no reading of the arrays ({shapes}) fits input_size={n} and units={u} (from the "
            f"outputs' last axis) for an LSTM, GRU or simple RNN{hint}")


def _search(kind: str, sources: list[_Source], problem: _Problem, atol: float,
            searched: dict[str, int], reference: _Convention,
            max_seconds: float) -> list[Candidate]:
    last = problem.mode == "last"
    directions = ["forward", "backwards"] if last else ["forward", "go_backwards", "reverse"]
    outputs: list[str | None] = ["h", "c"] if last and kind == "lstm" else [None]
    parts = [p for src in sources for p in _partials(src, problem.n, problem.u)]
    cache = _RecurrentCache()
    combos = [(p, layout, d) for p in parts for layout in problem.x for d in directions]
    if not last:
        # Step 0 with zero state: recurrent weights and forget bias do not matter yet.
        _score_first_step(parts, problem, cache)
        _count(searched, f"{kind} step 0", len(combos))
        combos = _prune_first_step(combos, reference, atol)
    two_steps = not last and any(x.shape[1] > 2 for x in problem.x.values())
    # Nearest the label first: once something fits, combos whose input-side choices
    # alone cost more cannot rank above it, so the rest is skipped.
    costs = _combo_costs(combos, reference)
    order = sorted(range(len(combos)), key=costs.__getitem__)
    combos = [combos[k] for k in order]
    costs = [costs[k] for k in order]
    kept: list[Candidate] = []
    started = time.perf_counter()
    # In chunks of partial choices, so memory stays bounded when nothing was pruned yet;
    # smaller chunks for wide layers, where each candidate costs more.
    step = max(8, 2 * _COMBOS_PER_CHUNK // problem.u)
    for start in range(0, len(combos), step):
        fits = [c.cost for c in kept if c.error <= atol]
        if fits and costs[start] > min(fits):
            _count(searched, f"{kind} skipped (cannot rank above a fit)", len(combos) - start)
            break
        if time.perf_counter() - started > max_seconds:
            _count(searched, f"{kind} skipped (time budget)", len(combos) - start)
            logger.warning("diagnose: stopped after %.0f s with %d %s readings left; give "
                           "outputs for every step to let the search prune", max_seconds,
                           len(combos) - start, kind)
            break
        cands = [c for p, layout, d in combos[start:start + step]
                 for c in _complete(p, layout, d, outputs, cache)]
        for cand in cands:
            cand.cost = _cost(cand, reference)
        if two_steps:
            _score(cands, problem, steps=2)
            _count(searched, f"{kind} steps 0-1", len(cands))
            cands = _prune(cands, atol)
        _score(cands, problem, steps=None)
        _count(searched, f"{kind} full", len(cands))
        kept = _prune(kept + cands, atol)
    logger.debug("diagnose %s: %d candidates kept", kind, len(kept))
    return kept


def _combo_costs(combos: list[tuple[_Partial, str, str]], reference: _Convention
                 ) -> list[int]:
    """Distance from the label of each (partial, layout, direction), recurrent part open."""
    base: dict[int, int] = {}

    def cost(p: _Partial, layout: str, direction: str) -> int:
        if id(p) not in base:
            base[id(p)] = sum(0 if ch.value in reference.attrs.get(a, (ch.value,))
                              else max(ch.cost, 1) for a, ch in p.choices.items())
        return (base[id(p)] + (layout not in reference.attrs.get("layout", (layout,)))
                + (direction not in reference.attrs.get("direction", (direction,))))

    return [cost(*combo) for combo in combos]


def _prune_first_step(combos: list[tuple[_Partial, str, str]], reference: _Convention,
                      atol: float) -> list[tuple[_Partial, str, str]]:
    """Keep what fits step 0, the closest, and the label (recurrent choices still open)."""
    costs = _combo_costs(combos, reference)
    scored = [(p.error0[layout, d], combo) for combo in combos
              for p, layout, d in [combo]]
    keep = [combo for (err, combo), cost in zip(scored, costs) if err <= atol or cost == 0]
    rest = sorted((item for item in scored if item[0] > atol), key=lambda item: item[0])
    seen = {id(c) for c in keep}
    keep += [combo for _, combo in rest[:KEEP_CLOSEST] if id(combo) not in seen]
    return keep


def _count(searched: dict[str, int], key: str, value: int) -> None:
    searched[key] = searched.get(key, 0) + value


def _rank(cands: list[Candidate], reference: _Convention, atol: float) -> list[Candidate]:
    conventions = _conventions(cands[0].kind) if cands else {}
    for c in cands:
        c.cost = _cost(c, reference)
    fits = sorted((c for c in cands if c.error <= atol), key=lambda c: (c.cost, c.error))
    rest = sorted((c for c in cands if c.error > atol), key=lambda c: (c.error, c.cost))
    ranked: list[Candidate] = []
    seen: dict[str, Candidate] = {}
    for c in fits + rest:
        key = _fingerprint(c)
        if key in seen:
            seen[key].equivalents += 1
            _add_matches(seen[key], c, conventions)
            continue
        seen[key] = c
        _add_matches(c, c, conventions)
        ranked.append(c)
    return ranked


def _fingerprint(c: Candidate) -> str:
    """Candidates with the same effective weights and spec compute the same function."""
    w = c.weights
    digest = hashlib.sha1(repr((c.spec, c.value("layout"), c.value("direction"),
                                c.value("output"))).encode())
    if c.kind == "gru":
        u = c.spec.hidden_size
        bias_x = w.b_ih + np.concatenate([w.b_hh[:2 * u], np.zeros(u)])
        parts = (w.w_ih, w.w_hh, bias_x, w.b_hh[2 * u:])
    else:
        parts = (w.w_ih, w.w_hh, w.b_ih + w.b_hh)
    for part in parts:
        digest.update(np.round(part, 12).tobytes())
    return digest.hexdigest()


def _add_matches(target: Candidate, member: Candidate,
                 conventions: Mapping[str, _Convention]) -> None:
    for conv in conventions.values():
        if conv.words in target.matches:
            continue
        # Which arrays were used is not part of a convention's math.
        if all(member.value(a) in allowed for a, allowed in conv.attrs.items()
               if member.value(a) is not None and a != "arrays"):
            target.matches.append(conv.words)


def _first_departure(cand: Candidate, problem: _Problem, atol: float) -> None:
    """Where the candidate's outputs first leave ``y`` by more than ``atol``."""
    layout, direction = cand.value("layout"), cand.value("direction")
    x, y = problem.x[layout], problem.y[layout]
    pred, h, c = _run([cand], x, direction != "forward")
    if problem.mode == "last":
        out = (c if cand.value("output") == "c" else h)[0]
        err = np.abs(out - y)
        if err.max() <= atol:
            return
        sample, unit = np.unravel_index(int(np.argmax(err > atol)), err.shape)
        cand.first_departure = {"step": None, "sample": int(sample), "unit": int(unit),
                                "error": float(err[sample, unit])}
        return
    pred = pred[0]
    if direction == "go_backwards":
        pred = pred[:, ::-1]
    err = np.abs(pred - y)  # (batch, seq_len, units)
    over = err > atol
    if not over.any():
        return
    # The first step in processing order where any sample or unit departs.
    per_step = over.any(axis=(0, 2))
    steps = np.flatnonzero(per_step)
    step = int(steps[-1] if direction == "reverse" else steps[0])
    processed = (len(per_step) - 1 - step) if direction == "reverse" else step
    sample, unit = np.unravel_index(int(np.argmax(err[:, step])), err[:, step].shape)
    cand.first_departure = {"step": step, "processed": processed, "sample": int(sample),
                            "unit": int(unit),
                            "error": float(err[sample, step, unit]),
                            "error_by_step": [float(e) for e in err.max(axis=(0, 2))]}
