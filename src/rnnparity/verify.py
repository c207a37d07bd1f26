"""Prove parity on the user's own data: run rnnparity and the real framework, compare.

:func:`verify` loads a model file with :func:`rnnparity.load`, runs it, runs the same file
in its own framework (Keras 3 for ``.keras`` and Keras-3 ``.h5``, tf_keras for Keras 2
``.h5``, PyTorch for state_dicts, onnxruntime for ``.onnx``) or takes stored outputs
(``expected``), and reports the max abs / relative error per output and per time step and
the first step where the error exceeds the tolerance. :func:`plot` draws both runs and the
error curve.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._optional import import_optional
from .errors import (
    FormatError,
    InputError,
    MissingFrameworkError,
    RnnParityError,
    UnsupportedFeatureError,
)
from .model import Model
from .tolerances import ATOL

__all__ = ["verify", "plot", "VerifyReport", "OutputReport", "LONG_RUN"]

logger = logging.getLogger(__name__)

# batch * seq_len above which the runs are split into batch chunks with a progress bar.
LONG_RUN = 20_000

# A framework run: feeds by input name -> outputs in the model's output order.
_Runner = Callable[[Mapping[str, np.ndarray]], list[np.ndarray]]


@dataclass
class OutputReport:
    """How one output compares.

    Attributes:
        name: the output's name in rnnparity's model.
        shape: its shape.
        max_abs: max |rnnparity - reference|.
        max_rel: max_abs / max |reference| (0 when the reference is all zeros).
        time_axis: the axis holding time steps, or None (final states, last outputs).
        per_step: max abs error at each time step (None without a time axis).
        first_step_over: the first time step whose error exceeds the tolerance, or None.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    time_axis: int | None = None
    per_step: list[float] | None = None
    first_step_over: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "max_abs_diff": self.max_abs,
                "max_rel_diff": self.max_rel, "time_axis": self.time_axis,
                "first_step_over_atol": self.first_step_over,
                "max_abs_diff_per_step": self.per_step}


@dataclass
class VerifyReport:
    """Result of :func:`verify`.

    Attributes:
        model: the model file.
        reference: what produced the reference outputs (framework and version, or file).
        notes: caveats about how the reference was produced.
        atol: the tolerance.
        outputs: one :class:`OutputReport` per compared output.
        ok: every output within ``atol``.
        seconds: time spent running both.
        ours, theirs: the compared arrays by output name (for :func:`plot`).
    """

    model: str
    reference: str
    notes: list[str]
    atol: float
    outputs: list[OutputReport]
    seconds: float
    ours: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    theirs: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(o.max_abs <= self.atol for o in self.outputs)

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "reference": self.reference, "notes": self.notes,
                "atol": self.atol, "ok": self.ok, "max_abs_diff": self.max_abs,
                "seconds": self.seconds, "outputs": [o.to_dict() for o in self.outputs]}

    def lines(self, max_steps: int = 20) -> list[str]:
        """A text report with a per-step table."""
        verdict = "PASS" if self.ok else "FAIL"
        out = [f"model: {self.model}", f"reference: {self.reference}"]
        out += [f"note: {note}" for note in self.notes]
        out.append(f"{verdict}: max abs difference {self.max_abs:.3g} (atol {self.atol:g})")
        for o in self.outputs:
            where = ("" if o.first_step_over is None
                     else f"; first step over atol: {o.first_step_over}")
            out.append(f"output {o.name!r} {tuple(o.shape)}: max abs {o.max_abs:.3g}, "
                       f"max rel {o.max_rel:.3g}{where}")
            if o.per_step is not None:
                out.append("  step  max_abs_diff")
                steps = _shown_steps(len(o.per_step), o.first_step_over, max_steps)
                previous = -1
                for t in steps:
                    if t != previous + 1:
                        out.append("   ...")
                    mark = "  <- over atol" if o.per_step[t] > self.atol else ""
                    out.append(f"  {t:4d}  {o.per_step[t]:.3g}{mark}")
                    previous = t
                if steps and steps[-1] != len(o.per_step) - 1:
                    out.append("   ...")
        return out


def _shown_steps(count: int, first_over: int | None, limit: int) -> list[int]:
    if count <= limit:
        return list(range(count))
    picked = set(range(limit // 2)) | set(range(count - limit // 4, count))
    if first_over is not None:
        picked |= set(range(max(0, first_over - 2), min(count, first_over + 3)))
    return sorted(picked)


# --------------------------------------------------------------------------- entry point


def verify(
    model_path: str | Path,
    inputs: np.ndarray | Mapping[str, np.ndarray],
    expected: np.ndarray | Mapping[str, np.ndarray] | None = None,
    layer: str | None = None,
    atol: float = ATOL,
    progress: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> VerifyReport:
    """Run ``model_path`` in rnnparity and in its framework (or against ``expected``).

    Args:
        model_path: ``.h5``, ``.keras``, ``.onnx``, ``.safetensors``, ``.npz`` or ``.pt``.
        inputs: one array for a one-input model, or input name -> array.
        expected: the framework's outputs stored by the user: one array (the first
            output) or output name -> array; when given, no framework is run.
        layer: compare one layer (Keras layer name, state_dict prefix, ONNX node).
        atol: max abs difference allowed (``rnnparity.tolerances.ATOL`` by default).
        progress: show a progress bar (stderr) on long runs.
        overrides: facts the file does not pin down, passed to :func:`rnnparity.load`.

    Returns:
        A :class:`VerifyReport`.

    Raises:
        MissingFrameworkError: the framework is not installed and no ``expected`` given.
        InputError: inputs or expected outputs that do not fit the model.
    """
    from . import load

    started = time.perf_counter()
    path = Path(model_path)
    model = load(path, layer=layer, **dict(overrides or {}))
    feeds = _feeds(model, inputs)
    notes: list[str] = list(model.meta.get("assumed", []))
    stateful = any(getattr(lay, "stateful", False) for lay in model.layers)
    batch_axis = _batch_axis(model)

    if expected is not None:
        reference = "stored outputs (expected)"
        theirs = _expected(model, expected)
    else:
        runner, reference, batch_axis_fw, more = _framework(path, model, layer)
        runner = _guarded(runner, reference)
        notes += more
        theirs_list = _chunked(runner, feeds, batch_axis_fw, progress and not stateful,
                               "framework")
        theirs = _name_outputs(model, theirs_list, reference)

    def ours_run(chunk: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = model.run(chunk)
        return [result[name] for name in model.outputs]

    ours_list = _chunked(ours_run, feeds, batch_axis, progress and not stateful, "rnnparity")
    ours = dict(zip(model.outputs, ours_list))

    time_major = _time_major(model)
    seq_len = _seq_len(feeds, model, time_major)
    reports = []
    for name, value in ours.items():
        if name not in theirs:
            continue
        reports.append(_compare(name, value, theirs[name], atol, time_major, seq_len))
    if not reports:
        raise InputError(f"no output to compare: rnnparity's outputs are {model.outputs}, "
                         f"the reference has {sorted(theirs)}")
    return VerifyReport(str(path), reference, notes, atol, reports,
                        time.perf_counter() - started, ours, theirs)


def _guarded(runner: _Runner, reference: str) -> _Runner:
    """Report the framework refusing the input as bad input, not as a crash."""
    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return runner(feeds)
        except RnnParityError:
            raise
        except Exception as err:  # each framework raises its own types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"{reference} could not run the input: {first}") from err

    return run


def _feeds(model: Model, inputs: Any) -> dict[str, np.ndarray]:
    if isinstance(inputs, Mapping):
        arrays = {k: np.asarray(v) for k, v in inputs.items()}
        # One array feeds a one-input model whatever its key, as `rnnparity run` does.
        if len(arrays) == 1 and len(model.inputs) == 1:
            return {model.inputs[0]: next(iter(arrays.values()))}
        missing = [name for name in model.inputs if name not in arrays]
        if missing:
            raise InputError(f"the model has inputs {model.inputs}; the input file has "
                             f"{sorted(arrays)} (missing {missing})")
        return {name: arrays[name] for name in model.inputs}
    if len(model.inputs) != 1:
        raise InputError(f"the model has inputs {model.inputs}; pass a dict / .npz keyed by "
                         "those names")
    return {model.inputs[0]: np.asarray(inputs)}


def _expected(model: Model, expected: Any) -> dict[str, np.ndarray]:
    if not isinstance(expected, Mapping):
        return {model.outputs[0]: np.asarray(expected)}
    arrays = {k: np.asarray(v) for k, v in expected.items()}
    named = {k: v for k, v in arrays.items() if k in model.outputs}
    if named:
        return named
    if len(arrays) <= len(model.outputs):
        # Unnamed (arr_0, ...) or single-array files: outputs in the model's order.
        return dict(zip(model.outputs, arrays.values()))
    raise InputError(f"expected outputs {sorted(arrays)} do not name the model's outputs "
                     f"{model.outputs}")


def _name_outputs(model: Model, values: list[np.ndarray], reference: str
                  ) -> dict[str, np.ndarray]:
    if len(values) < len(model.outputs):
        logger.info("%s returned %d outputs for rnnparity's %d; comparing the first ones",
                    reference, len(values), len(model.outputs))
    return dict(zip(model.outputs, values))


def _batch_axis(model: Model) -> int:
    return 1 if _time_major(model) else 0


def _time_major(model: Model) -> bool:
    for layer in model.layers:
        if getattr(layer, "batch_first", True) is False:
            return True
        if type(layer).__name__ == "OnnxRecurrent":
            return True
        options = getattr(layer, "options", None)
        if getattr(options, "time_major", False):
            return True
    return model.meta.get("framework") == "onnx"


def _seq_len(feeds: Mapping[str, np.ndarray], model: Model, time_major: bool) -> int | None:
    first = feeds[model.inputs[0]]
    if first.ndim < 2:
        return None
    return int(first.shape[0] if time_major else first.shape[1])


def _chunked(run: Callable[[Mapping[str, np.ndarray]], list[np.ndarray]],
             feeds: Mapping[str, np.ndarray], batch_axis: int, progress: bool,
             what: str) -> list[np.ndarray]:
    """Run whole, or (long runs with progress) in batch chunks under a progress bar."""
    first = next(iter(feeds.values()))
    batch = first.shape[batch_axis] if first.ndim == 3 else 1
    work = int(np.prod(first.shape[:2])) if first.ndim == 3 else 0
    if not progress or batch < 2 or work < LONG_RUN:
        return [np.asarray(v) for v in run(feeds)]
    tqdm = import_optional("tqdm").tqdm
    size = max(1, batch // 20)
    pieces: list[list[np.ndarray]] = []
    for start in tqdm(range(0, batch, size), desc=what, unit="chunk", leave=False):
        index = [slice(None)] * 3
        index[batch_axis] = slice(start, start + size)
        chunk = {k: v[tuple(index)] if v.ndim == 3 else v for k, v in feeds.items()}
        pieces.append([np.asarray(v) for v in run(chunk)])
    return [_join(parts, batch_axis, batch) for parts in zip(*pieces)]


def _join(parts: Sequence[np.ndarray], batch_axis: int, batch: int) -> np.ndarray:
    # Sequences carry batch on batch_axis; final states (layers*dirs, batch, h) on axis 1.
    for axis in (batch_axis, 1, 0):
        if parts[0].ndim > axis and sum(p.shape[axis] for p in parts) == batch:
            return np.concatenate(parts, axis=axis)
    return np.concatenate(parts, axis=0)


def _compare(name: str, ours: np.ndarray, theirs: np.ndarray, atol: float, time_major: bool,
             seq_len: int | None) -> OutputReport:
    ours = np.asarray(ours, np.float64)
    theirs = np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        if ours.size == theirs.size and np.squeeze(ours).shape == np.squeeze(theirs).shape:
            theirs = theirs.reshape(ours.shape)
        else:
            raise InputError(f"output {name!r}: rnnparity gives shape {ours.shape}, the "
                             f"reference {theirs.shape}")
    diff = np.abs(ours - theirs)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(theirs).max()) if theirs.size else 0.0
    report = OutputReport(name, tuple(ours.shape), max_abs,
                          max_abs / scale if scale else 0.0)
    axis = 0 if time_major else 1
    if seq_len is not None and ours.ndim >= 3 and ours.shape[axis] == seq_len:
        other = tuple(a for a in range(ours.ndim) if a != axis)
        per_step = diff.max(axis=other)
        over = np.flatnonzero(per_step > atol)
        report.time_axis = axis
        report.per_step = [float(v) for v in per_step]
        report.first_step_over = int(over[0]) if over.size else None
    return report


# --------------------------------------------------------------------------- frameworks

def _framework(path: Path, model: Model, layer: str | None
               ) -> tuple[_Runner, str, int, list[str]]:
    """A function running the real framework, its name, its batch axis, notes."""
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _onnxruntime(path, model, layer)
    if suffix in (".safetensors", ".npz", ".pt", ".pth", ".bin"):
        return _torch(path, model)
    if suffix == ".keras":
        return _keras(path, model, layer, "keras")
    if suffix in (".h5", ".hdf5"):
        return _keras_h5(path, model, layer)
    raise FormatError(f"no framework known for {path.name!r}")


def _missing(framework: str, err: Exception) -> MissingFrameworkError:
    return MissingFrameworkError(
        f"{framework} is needed to run the reference but is not installed ({err}); install "
        "it, or pass the framework's outputs with --expected",
        hint="pass --expected Y.npz with outputs saved where the framework runs")


def _keras_h5(path: Path, model: Model, layer: str | None
              ) -> tuple[_Runner, str, int, list[str]]:
    h5py = import_optional("h5py")
    with h5py.File(path, "r") as f:
        has_config = "model_config" in f.attrs
        version = f.attrs.get("keras_version", b"")
    version = version.decode() if isinstance(version, bytes) else str(version)
    if not has_config:
        return _equivalent_keras(model)
    module = "keras" if version.startswith("3") else "tf_keras"
    return _keras(path, model, layer, module)


def _keras(path: Path, model: Model, layer: str | None, module: str
           ) -> tuple[_Runner, str, int, list[str]]:
    try:
        keras = import_optional(module)
    except MissingFrameworkError as err:
        raise _missing(module, err) from err
    custom_objects, notes = _cudnn_on_cpu(model, module, keras)
    try:
        loaded = keras.models.load_model(str(path), compile=False,
                                         custom_objects=custom_objects)
    except Exception as err:  # the framework's own loader; its errors vary by version
        raise FormatError(f"{module} could not load {path.name!r}: {err}") from err
    target = loaded if layer is None else loaded.get_layer(layer)
    name = f"{module} {getattr(keras, '__version__', '')}".strip()

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        args = [feeds[k] for k in model.inputs]
        result = target(args[0] if len(args) == 1 else args, training=False)
        items = result if isinstance(result, (list, tuple)) else [result]
        if isinstance(result, dict):
            items = list(result.values())
        return [np.asarray(item) for item in items]

    return run, name, 0, notes


def _cudnn_on_cpu(model: Model, module: str, keras: Any) -> tuple[dict[str, Any] | None,
                                                                   list[str]]:
    """Without a GPU, Keras cannot run CuDNNLSTM / CuDNNGRU: load them as LSTM / GRU.

    Keras' own h5 loader then converts the cuDNN weights on load (the converter the tests
    check against), so the reference stays Keras' arithmetic, not rnnparity's.
    """
    kinds = {layer.kind for layer in model.layers} & {"CuDNNLSTM", "CuDNNGRU"}
    if not kinds or module != "tf_keras":
        return None, []
    tf = import_optional("tensorflow")
    if tf.config.list_physical_devices("GPU"):
        return None, []
    layers = keras.layers
    custom = {"CuDNNLSTM": lambda **config: layers.LSTM(**config),
              "CuDNNGRU": lambda **config: layers.GRU(reset_after=True, **config)}
    note = (f"no GPU: {', '.join(sorted(kinds))} ran as tf_keras LSTM/GRU(reset_after=True) "
            "with the weights converted by Keras' own h5 loader, since cuDNN kernels need a "
            "GPU")
    return custom, [note]


def _equivalent_keras(model: Model) -> tuple[_Runner, str, int, list[str]]:
    """tf_keras layers built from rnnparity's reading of a weights-only file."""
    from .dialects import keras as dialect

    try:
        tf_keras = import_optional("tf_keras")
    except MissingFrameworkError as err:
        raise _missing("tf_keras", err) from err
    layers = []
    for layer in model.layers:
        if type(layer).__name__ != "KerasRecurrent":
            raise UnsupportedFeatureError(
                f"a weights-only .h5 holds no architecture and layer {layer.name!r} is "
                f"{layer.kind}; verify can rebuild only chains of LSTM/GRU/SimpleRNN "
                "layers: pass the framework's outputs with --expected")
        kind = {"CuDNNLSTM": "LSTM", "CuDNNGRU": "GRU"}.get(layer.kind, layer.kind)
        arrays = dialect.from_canonical(layer.spec, layer.weights, kind, "2")
        config = dialect.keras_config(layer.spec, kind, "2", use_bias="bias" in arrays)
        cls = getattr(tf_keras.layers, kind)
        built = cls(**config, return_sequences=layer.options.return_sequences,
                    go_backwards=layer.options.go_backwards, name=layer.name)
        layers.append((built, [arrays[k] for k in ("kernel", "recurrent_kernel", "bias")
                               if k in arrays]))
    note = ("the file holds weights only (no architecture): the framework ran tf_keras "
            "layers built from rnnparity's reading of them (kind, units, activations, "
            "cuDNN conversion); pass --expected to compare with the original model")

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds[model.inputs[0]]
        for built, weights in layers:
            if not built.built:
                built.build((None, None, x.shape[-1]))
                built.set_weights(weights)
            x = np.asarray(built(x))
        return [x]

    return run, f"tf_keras {tf_keras.__version__} (equivalent layers)", 0, [note]


def _torch(path: Path, model: Model) -> tuple[_Runner, str, int, list[str]]:
    from .io.torch_file import read_state_dict

    try:
        torch = import_optional("torch")
    except MissingFrameworkError as err:
        raise _missing("torch", err) from err
    (layer,) = model.layers
    info = layer.describe()
    kind = getattr(layer, "module_kind", None)
    if kind not in ("LSTM", "GRU", "RNN"):
        raise UnsupportedFeatureError(f"verify runs torch LSTM/GRU/RNN modules, not {kind}; "
                                      "pass the framework's outputs with --expected")
    kwargs: dict[str, Any] = dict(
        input_size=info["input_size"], hidden_size=info["hidden_size"],
        num_layers=info["num_layers"], bias=info["bias"], batch_first=info["batch_first"],
        bidirectional=info["bidirectional"])
    if kind == "LSTM" and info.get("proj_size"):
        kwargs["proj_size"] = info["proj_size"]
    if kind == "RNN":
        kwargs["nonlinearity"] = info.get("nonlinearity", "tanh")
    module = getattr(torch.nn, kind)(**kwargs)
    module_name = model.meta.get("module") or ""
    prefix = "" if module_name in ("", "(root)") else f"{module_name}."
    state = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in
             read_state_dict(path).items() if k.startswith(prefix)}
    # torch reads the file's arrays itself: nothing of rnnparity's mapping is involved.
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:  # torch lists missing / unexpected keys and bad shapes
        raise FormatError(f"torch could not load {path.name!r} into nn.{kind}"
                          f"({kwargs}): {str(err).splitlines()[0]}") from err
    module.eval()
    dtype = next(module.parameters()).dtype

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feeds[model.inputs[0]])).to(dtype)
        with torch.no_grad():
            output, state_n = module(x)
        states = list(state_n) if isinstance(state_n, tuple) else [state_n]
        return [t.numpy() for t in [output, *states]]

    return run, f"torch {torch.__version__}", 0 if info["batch_first"] else 1, []


def _onnxruntime(path: Path, model: Model, layer: str | None
                 ) -> tuple[_Runner, str, int, list[str]]:
    try:
        ort = import_optional("onnxruntime")
    except MissingFrameworkError as err:
        raise _missing("onnxruntime", err) from err
    notes = []
    source: Any = str(path)
    if layer is not None:
        # onnxruntime runs whole graphs: give it the node alone, its weights folded to
        # constants by the same reader rnnparity uses (the arithmetic stays onnxruntime's).
        from .io.onnx_file import extract_node

        proto = extract_node(path, layer)
        source = proto.SerializeToString()
        notes.append(f"onnxruntime ran node {layer!r} alone, its W/R/B/P folded to constants")
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    zero_states = _zero_states(proto) if layer is not None else None
    names = [o.name for o in session.get_outputs()]
    types = {i.name: i.type for i in session.get_inputs()}

    def run(feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        cast = {k: np.asarray(v, np.float64 if types.get(k) == "tensor(double)" else
                              (np.int32 if types.get(k) == "tensor(int32)" else np.float32))
                for k, v in feeds.items() if k in types}
        if zero_states is not None:
            for name in set(types) - set(cast):
                if name in ("initial_h", "initial_c"):
                    cast[name] = zero_states(cast["X"])
        values = dict(zip(names, session.run(names, cast)))
        return [values[name] for name in model.outputs if name in values]

    return run, f"onnxruntime {ort.__version__}", 1, notes


def _zero_states(proto: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Zeros for a node's left-out initial_h / initial_c, as rnnparity assumes for them."""
    node = proto.graph.node[0]
    attrs = {a.name: a for a in node.attribute}
    hidden = attrs["hidden_size"].i
    batch_major = "layout" in attrs and attrs["layout"].i == 1
    weights = next(t for t in proto.graph.initializer if t.name == node.input[1])
    directions = weights.dims[0]

    def zeros(x: np.ndarray) -> np.ndarray:
        batch = x.shape[0] if batch_major else x.shape[1]
        shape = (batch, directions, hidden) if batch_major else (directions, batch, hidden)
        return np.zeros(shape, x.dtype)

    return zeros


# --------------------------------------------------------------------------- plot


def plot(report: VerifyReport, path: str | Path, output: str | None = None,
         sample: int = 0, max_units: int = 8) -> Path:
    """Draw framework vs rnnparity per unit over time, and the error curve, to a PNG.

    Args:
        report: a :class:`VerifyReport`.
        path: the image file to write.
        output: which output to draw (default: the first one with a time axis).
        sample: which sequence of the batch to draw.
        max_units: draw at most this many units.
    """
    matplotlib = import_optional("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    del matplotlib  # the object API below needs no global backend switch
    chosen = next((o for o in report.outputs if (output is None and o.time_axis is not None)
                   or o.name == output), report.outputs[0])
    ours = np.asarray(report.ours[chosen.name], np.float64)
    theirs = np.asarray(report.theirs[chosen.name], np.float64).reshape(ours.shape)
    series_ours = _series(ours, chosen.time_axis, sample)
    series_theirs = _series(theirs, chosen.time_axis, sample)
    units = min(series_ours.shape[1], max_units)

    figure = Figure(figsize=(10, 7), dpi=100)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=chosen.time_axis is not None)
    steps = np.arange(series_ours.shape[0])
    for unit in range(units):
        line, = top.plot(steps, series_theirs[:, unit], "-", linewidth=1.5,
                         label=f"unit {unit} framework")
        top.plot(steps, series_ours[:, unit], "o", markersize=3, color=line.get_color(),
                 label=f"unit {unit} rnnparity")
    top.set_title(f"{Path(report.model).name}: output {chosen.name!r}, sample {sample} "
                  f"(lines: {report.reference}; dots: rnnparity)", fontsize=9)
    top.set_ylabel("value")
    if units <= 4:
        top.legend(fontsize=7, ncol=2)
    error = np.abs(series_ours - series_theirs).max(axis=1)
    floor = np.finfo(np.float64).tiny
    bottom.semilogy(steps, np.maximum(error, floor), "-", label="max abs error (this sample)")
    if chosen.per_step is not None:
        bottom.semilogy(steps, np.maximum(np.asarray(chosen.per_step), floor), ":",
                        label="max abs error (all samples)")
    bottom.axhline(report.atol, color="red", linestyle="--", label=f"atol {report.atol:g}")
    bottom.set_xlabel("time step" if chosen.time_axis is not None else "index")
    bottom.set_ylabel("|rnnparity - framework|")
    bottom.legend(fontsize=7)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, format="png")
    return path


def _series(array: np.ndarray, time_axis: int | None, sample: int) -> np.ndarray:
    """(steps, units) for one sample: time on rows, features (flattened) on columns."""
    if time_axis is None:
        return array.reshape(-1, array.shape[-1]) if array.ndim > 1 else array[:, None]
    moved = np.moveaxis(array, time_axis, 0)  # (steps, ...)
    if moved.ndim >= 3:
        batch_axis = moved.ndim - 2
        sample = min(sample, moved.shape[batch_axis] - 1)
        moved = np.take(moved, sample, axis=batch_axis)
    return moved.reshape(moved.shape[0], -1)
