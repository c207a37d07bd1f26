"""Models: a small graph of layers, run on NumPy arrays, whole sequences or in chunks.

Every loader returns a :class:`Model`. A model has named inputs and outputs; calling it
with one array (one input) or a dict (several) returns one array (one output) or a dict
name -> array. Layers are :class:`Layer` objects wired by tensor names in :class:`Node`s,
in topological order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .errors import InputError, RnnParityError, ShapeError, UnsupportedFeatureError

__all__ = ["Layer", "Node", "Model", "CallContext", "Stream"]

logger = logging.getLogger(__name__)


@dataclass
class CallContext:
    """What one model call carries besides the tensors.

    Attributes:
        states: layer name -> list of state arrays. Read as initial states when present,
            written with final states when ``keep_state`` is true (streaming, stateful).
        keep_state: write final states back.
        streaming: the call is one chunk of a longer sequence.
        lengths: (batch,) valid steps per sequence, for layers whose framework takes
            lengths outside the tensor (PyTorch packed sequences, ONNX sequence_lens).
        extra: loader-specific inputs (e.g. ONNX initial states by graph input name).
    """

    states: dict[str, list[np.ndarray]] = field(default_factory=dict)
    keep_state: bool = False
    streaming: bool = False
    lengths: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Layer:
    """One operation of a model. Subclasses set ``kind`` and implement :meth:`call`."""

    kind = "layer"
    stateful = False
    # Reads CallContext.lengths (PyTorch packed sequences, ONNX sequence_lens); a model
    # with no such layer refuses lengths rather than ignoring them.
    takes_lengths = False

    def __init__(self, name: str) -> None:
        self.name = name

    def call(
        self, inputs: list[np.ndarray], masks: list[np.ndarray | None], ctx: CallContext
    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Compute the outputs (and their masks) from the inputs (and theirs)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What ``inspect`` shows: kind, shapes, the convention applied, defaults assumed."""
        return {"name": self.name, "kind": self.kind}


@dataclass
class Node:
    """A layer applied to named tensors, producing named tensors."""

    layer: Layer
    inputs: list[str]
    outputs: list[str]


class Model:
    """A runnable graph of layers.

    Args:
        nodes: in topological order.
        inputs: graph input tensor names.
        outputs: graph output tensor names.
        source: where it came from (a path, or ``"live keras object"``).
        meta: facts about the file for ``inspect`` (framework, version, assumptions).
        dtype: computation dtype.
        optional_inputs: inputs that may be left out (initial states); a layer receives
            None for one that was not fed.
        sequence_outputs: outputs with a time axis, which streaming splits and joins;
            None means every 3-D output.
        time_axes: tensor name -> position of the time axis, for the inputs and sequence
            outputs whose time axis is not 1 (time-major layouts such as ONNX layout=0).
        state_inputs: required inputs without a time axis (graph inputs wired to ONNX
            ``initial_h``, ``sequence_lens`` or weights); streaming does not split them.
    """

    def __init__(self, nodes: list[Node], inputs: list[str], outputs: list[str],
                 source: str = "", meta: dict[str, Any] | None = None,
                 dtype: np.dtype = np.float32, optional_inputs: list[str] | None = None,
                 sequence_outputs: list[str] | None = None,
                 time_axes: Mapping[str, int] | None = None,
                 state_inputs: list[str] | None = None) -> None:
        self.nodes = nodes
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.optional_inputs = list(optional_inputs or [])
        self.sequence_outputs = None if sequence_outputs is None else list(sequence_outputs)
        self.time_axes = dict(time_axes or {})
        self.state_inputs = list(state_inputs or [])
        self.source = source
        self.meta = dict(meta or {})
        self.dtype = np.dtype(dtype)
        self._persistent: dict[str, list[np.ndarray]] = {}

    @property
    def layers(self) -> list[Layer]:
        return [node.layer for node in self.nodes]

    def layer(self, name: str) -> Layer:
        for node in self.nodes:
            if node.layer.name == name:
                return node.layer
        known = ", ".join(n.layer.name for n in self.nodes)
        raise InputError(f"no layer named {name!r}; layers: {known}")

    def __call__(self, x: Any = None, /, *, lengths: Any = None, check_finite: bool = True,
                 **named: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Run whole sequences.

        Args:
            x: the input array (batch, seq_len, features) when the model has one input, or
                a dict input name -> array.
            lengths: (batch,) valid steps per sequence, for PyTorch / ONNX style models.
            check_finite: refuse NaN / inf in the inputs (the default; see README).
            **named: inputs by name, instead of a dict.

        Returns:
            One array if the model has one output, else a dict output name -> array.
        """
        feeds = self._feeds(x, named)
        ctx = CallContext(lengths=None if lengths is None else _as_array(lengths, "lengths"))
        ctx.states.update(self._persistent)
        ctx.keep_state = any(layer.stateful for layer in self.layers)
        results = self.run(feeds, ctx, check_finite=check_finite)
        if ctx.keep_state:
            self._persistent = {k: v for k, v in ctx.states.items()
                                if getattr(self._by_name(k), "stateful", False)}
        return results[self.outputs[0]] if len(self.outputs) == 1 else results

    def reset_states(self) -> None:
        """Forget what Keras ``stateful`` layers carried over from earlier calls."""
        self._persistent.clear()

    def _by_name(self, name: str) -> Layer | None:
        return next((n.layer for n in self.nodes if n.layer.name == name), None)

    def _feeds(self, x: Any, named: Mapping[str, Any]) -> dict[str, Any]:
        feeds: dict[str, Any] = {}
        if isinstance(x, Mapping):
            feeds.update(x)
        elif x is not None:
            feeds[self.inputs[0]] = x
        feeds.update(named)
        return feeds

    def run(self, feeds: Mapping[str, Any], ctx: CallContext | None = None,
            check_finite: bool = True) -> dict[str, np.ndarray]:
        """Run the graph on ``feeds`` (input name -> array); return every output by name."""
        from .engine import as_float_input

        ctx = ctx or CallContext()
        unknown = sorted(set(feeds) - set(self.inputs) - set(self.optional_inputs)
                         - set(ctx.extra))
        missing = [name for name in self.inputs if name not in feeds]
        if unknown or missing:
            raise InputError(
                f"model inputs are {self.inputs}; got {sorted(feeds)}"
                + (f" (unknown: {unknown})" if unknown else "")
                + (f" (missing: {missing})" if missing else "")
            )
        if ctx.lengths is not None and not any(layer.takes_lengths for layer in self.layers):
            raise InputError(
                "lengths were given but no layer of this model takes them (only PyTorch "
                "modules and ONNX nodes do); Keras models mark padding with a mask "
                "(Masking or Embedding mask_zero) in the input itself")
        values: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray | None] = {}
        for name in self.inputs:
            raw = _as_array(feeds[name], name)
            keep_ints = raw.dtype.kind in "iu" and self._feeds_integer_layer(name)
            values[name] = raw if keep_ints else as_float_input(raw, self.dtype, name,
                                                                  check_finite)
            masks[name] = None
        for name in self.optional_inputs:
            given = feeds.get(name)
            values[name] = None if given is None else as_float_input(
                given, self.dtype, name, check_finite)
            masks[name] = None

        for node in self.nodes:
            try:
                outs, out_masks = node.layer.call(
                    [values[t] for t in node.inputs], [masks[t] for t in node.inputs], ctx)
            except RnnParityError as err:
                if node.layer.name in str(err):
                    raise
                raise type(err)(f"layer {node.layer.name!r}: {err}", hint=err.hint) from err
            except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as err:
                # No check foresaw these inputs: still one specific error naming the layer.
                shapes = [None if values[t] is None else tuple(np.shape(values[t]))
                          for t in node.inputs]
                raise InputError(f"layer {node.layer.name!r} ({node.layer.kind}) cannot run "
                                 f"on inputs of shapes {shapes}: {type(err).__name__}: "
                                 f"{err}") from err
            for tensor, value, mask in zip(node.outputs, outs, out_masks):
                values[tensor] = value
                masks[tensor] = mask
        return {name: values[name] for name in self.outputs}

    def has_time_axis(self, name: str, value: Any) -> bool:
        """Whether output ``name`` is a sequence ``(batch, seq_len, ...)`` (see __init__)."""
        if self.sequence_outputs is not None:
            return name in self.sequence_outputs
        return np.ndim(value) == 3

    def time_axis(self, name: str) -> int:
        """Position of the time axis of input or sequence output ``name`` (1 by default)."""
        return self.time_axes.get(name, 1)

    def _feeds_integer_layer(self, tensor: str) -> bool:
        return any(tensor in n.inputs and getattr(n.layer, "takes_integers", False)
                   for n in self.nodes)

    def stepper(self, batch_size: int = 1, h0: Any = None, c0: Any = None,
                check_finite: bool = True) -> Any:
        """The low-latency path for a model that is one recurrent cell.

        For a model whose only node is a one-layer, one-direction, forward recurrent layer
        (a Keras LSTM/GRU/SimpleRNN/CuDNN layer, a PyTorch module with ``num_layers=1`` or
        a cell, an ONNX forward node), returns a :class:`rnnparity.core.Stepper`:
        ``stepper(x_t)`` takes one step ``(batch, input_size)`` and returns the new hidden
        state ``(batch, hidden)`` (a buffer reused by the next call: copy it to keep it),
        with no per-call allocation; ``stepper.h``, ``stepper.c`` and ``stepper.reset()``
        give and set the state. Same numbers as :meth:`stream`, several times faster per
        step. Anything else raises UnsupportedFeatureError: use :meth:`stream`.

        Args:
            batch_size: sequences stepped together.
            h0: (batch, hidden) initial hidden state; zeros if None.
            c0: (batch, hidden_size) initial LSTM cell state; zeros if None.
            check_finite: refuse NaN / inf in each step's input, as every other entry
                point does; False saves about a microsecond a step.
        """
        layer = self.nodes[0].layer if len(self.nodes) == 1 else None
        stack_of = getattr(layer, "recurrent_stack", None)
        if stack_of is None:
            raise UnsupportedFeatureError(
                f"stepper() needs a model that is one recurrent layer; this one has "
                f"{len(self.nodes)} node(s) ({', '.join(n.layer.kind for n in self.nodes)}): "
                "use stream()")
        stack = stack_of(self.dtype)
        if len(stack.layers) != 1 or stack.num_directions != 1 or stack.layers[0][0].reverse:
            raise UnsupportedFeatureError(
                f"stepper() needs one layer of one forward direction; {layer.name!r} has "
                f"{len(stack.layers)} layer(s), {stack.num_directions} direction(s): use "
                "stream() (a reverse direction cannot stream at all)")
        return stack.cells[0][0].stepper(batch_size, h0, c0, check_finite)

    def stream(self, batch_size: int = 1) -> Stream:
        """A :class:`Stream` that feeds this model a few steps at a time, carrying state.

        Raises:
            UnsupportedFeatureError: a layer needs the whole sequence (a backward or
                bidirectional layer), naming the layer and why.
        """
        for layer in self.layers:
            if not getattr(layer, "can_stream", True):
                reason = getattr(layer, "stream_refusal", None) or (
                    "it needs the whole sequence (a backward direction starts at the end)")
                raise UnsupportedFeatureError(
                    f"layer {layer.name!r} ({layer.kind}) cannot stream: {reason}")
        return Stream(self, batch_size)

    def describe(self) -> dict[str, Any]:
        """Everything ``rnnparity inspect`` prints, as plain data."""
        return {
            "source": self.source,
            "inputs": self.inputs,
            **({"optional_inputs": self.optional_inputs} if self.optional_inputs else {}),
            "outputs": self.outputs,
            "dtype": str(self.dtype),
            **self.meta,
            "layers": [node.layer.describe() for node in self.nodes],
        }


def _as_array(value: Any, name: str) -> np.ndarray:
    """``np.asarray(value)``, with ragged nested lists refused as an InputError."""
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise InputError(f"{name} cannot be read as an array ({err}); expected a "
                         "rectangular array of numbers") from err


class Stream:
    """Feeds a model a few steps at a time, carrying every recurrent state between calls.

    Made by :meth:`Model.stream`. :meth:`step` runs one step and returns that step's
    outputs; :meth:`chunk` runs several; :meth:`feed` runs a whole sequence in chunks.
    Feeding a sequence in chunks of any size gives the whole-sequence result: outputs
    with a time axis come chunk by chunk, the others (a Keras ``return_sequences=False``
    output, PyTorch ``h_n``, ONNX ``Y_h``) hold the value after the last step fed so far.

    :attr:`states` maps each recurrent layer's name to its current states, in that
    framework's layout: Keras ``[h, c]`` (LSTM) or ``[h]``, each ``(batch, units)``;
    PyTorch modules ``[h_n, c_n]``, ``(num_layers, batch, hidden)``; PyTorch cells
    ``[h, c]``, ``(batch, hidden_size)``; ONNX ``[Y_h, Y_c]``, ``(1, batch, hidden_size)``
    (``(batch, 1, hidden_size)`` with layout=1). :meth:`set_state` takes the same.

    Args:
        model: the model to feed.
        batch_size: how many sequences run side by side; every call must have this batch.

    Shapes:
        step input: (batch, features) per sequence input (integer ids: (batch,)).
        chunk input: (batch, steps, features); time-major models (ONNX layout=0, PyTorch
            batch_first=False): (steps, batch, features).
    """

    def __init__(self, model: Model, batch_size: int = 1) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = int(batch_size)
        self.ctx = CallContext(keep_state=True, streaming=True)
        self.steps_fed = 0

    @property
    def states(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> current state arrays (see the class docstring for the layouts)."""
        return self.ctx.states

    def set_state(self, layer: str, arrays: Any) -> None:
        """Replace the states of recurrent layer ``layer`` before the next step.

        Args:
            layer: the layer's name (as in :attr:`states` and ``rnnparity inspect``).
            arrays: the states in the layer's framework layout and order (one array, or a
                list such as Keras ``[h, c]``, PyTorch ``[h_n, c_n]``); the layer checks
                their shapes when it next runs.
        """
        from .engine import as_float_input

        self.model.layer(layer)  # InputError listing the layers when unknown
        items = [arrays] if isinstance(arrays, np.ndarray) else list(arrays)
        self._forget(layer)
        self.ctx.states[layer] = [as_float_input(a, self.model.dtype, f"state of {layer!r}",
                                                 True) for a in items]

    def reset(self) -> None:
        """Start a new sequence: zero states, as a fresh stream."""
        self.ctx = CallContext(keep_state=True, streaming=True)
        self.steps_fed = 0

    def chunk(self, x: Any = None, /, *, check_finite: bool = True,
              **named: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Run the next steps of every sequence.

        Args:
            x: (batch, steps, features) for a one-input model ((steps, batch, features)
                when time-major), or a dict name -> array. Optional state inputs
                (PyTorch ``h0``, ONNX node ``initial_h``, Keras ``initial_state``) given
                here replace the carried states, like :meth:`set_state`.
            check_finite: refuse NaN / inf (as :meth:`Model.__call__`).
            **named: inputs by name.

        Returns:
            What the model returns for these steps: one array or a dict by output name.
        """
        feeds = self.model._feeds(x, named)
        steps = self._check_chunk(feeds)
        self._replace_fed_states(feeds)
        results = self.model.run(feeds, self.ctx, check_finite=check_finite)
        self.steps_fed += steps
        return results[self.model.outputs[0]] if len(results) == 1 else results

    def step(self, x_t: Any = None, /, *, check_finite: bool = True,
             **named: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Run one step: inputs (batch, features) without a time axis; outputs likewise."""
        feeds = self.model._feeds(x_t, named)
        expanded = {}
        for name, value in feeds.items():
            if name not in self._sequence_inputs():
                expanded[name] = value
                continue
            array = _as_array(value, name)
            if array.ndim < 1:
                raise ShapeError(f"step input {name!r} has shape {array.shape}; expected "
                                 "(batch, features), or (batch,) ids for an Embedding")
            expanded[name] = np.expand_dims(array, self.model.time_axis(name))
        out = self.chunk(expanded, check_finite=check_finite)
        if isinstance(out, dict):
            return {k: self._first_step(k, v) for k, v in out.items()}
        return self._first_step(self.model.outputs[0], out)

    def feed(self, x: Any = None, /, *, chunk_size: int = 1, check_finite: bool = True,
             **named: Any) -> np.ndarray | dict[str, np.ndarray]:
        """Run whole sequences ``chunk_size`` steps at a time; return the joined outputs.

        Sequence outputs are concatenated along their time axis; the others are the last
        chunk's. Equals the whole-sequence call of the model (states carry on afterwards).
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
                or chunk_size < 1:
            raise InputError(f"chunk size must be a positive integer, got {chunk_size!r}")
        feeds = self.model._feeds(x, named)
        sequences = {k: np.asarray(v) for k, v in feeds.items()
                     if k in self._sequence_inputs()}
        total = self._check_chunk(feeds)
        pieces: dict[str, list[np.ndarray]] = {}
        for start in range(0, total, chunk_size):
            part = dict(feeds) if start == 0 else {k: v for k, v in feeds.items()
                                                   if k not in self.model.optional_inputs}
            for name, value in sequences.items():
                index = (slice(None),) * self.model.time_axis(name) + (
                    slice(start, start + chunk_size),)
                part[name] = value[index]
            out = self.chunk(part, check_finite=check_finite)
            for name, value in (out if isinstance(out, dict)
                                else {self.model.outputs[0]: out}).items():
                kept = pieces.setdefault(name, [])
                if not self.model.has_time_axis(name, value):
                    kept.clear()  # only the latest matters: memory stays flat on long runs
                kept.append(value)
        joined = {name: np.concatenate(parts, axis=self.model.time_axis(name))
                  if len(parts) > 1 else parts[0] for name, parts in pieces.items()}
        return joined[self.model.outputs[0]] if len(joined) == 1 else joined

    def _sequence_inputs(self) -> list[str]:
        skip = set(self.model.optional_inputs) | set(self.model.state_inputs)
        return [name for name in self.model.inputs if name not in skip]

    def _check_chunk(self, feeds: Mapping[str, Any]) -> int:
        """Check batch and step counts of the sequence inputs; return the step count."""
        counts = {}
        for name in self._sequence_inputs():
            if name not in feeds:
                continue  # Model.run names what is missing
            shape = _as_array(feeds[name], name).shape
            axis = self.model.time_axis(name)
            order = "(steps, batch, ...)" if axis == 0 else "(batch, steps, ...)"
            if len(shape) < 2:
                raise ShapeError(f"stream input {name!r} has shape {shape}; expected "
                                 f"{order} (use step() for one step without a time axis)")
            batch = shape[1] if axis == 0 else shape[0]
            if batch != self.batch_size:
                raise ShapeError(f"stream input {name!r} has shape {shape}: batch {batch}; "
                                 f"expected batch_size={self.batch_size} in {order}")
            counts[name] = shape[axis]
        if len(set(counts.values())) > 1:
            raise ShapeError(f"stream inputs differ in their number of steps: {counts}")
        steps = next(iter(counts.values()), 1)
        if steps < 1:
            raise ShapeError("a stream chunk needs at least one step; got 0")
        return steps

    def _replace_fed_states(self, feeds: Mapping[str, Any]) -> None:
        """Optional state inputs given with a chunk win over carried states, whatever
        order the dialect would pick."""
        given = {name for name in self.model.optional_inputs if feeds.get(name) is not None}
        for node in self.model.nodes:
            if given & set(node.inputs):
                self._forget(node.layer.name)

    def _forget(self, layer: str) -> None:
        """Drop what ``layer`` carries: its states and per-layer extras (the previous
        output a Keras layer repeats at masked steps), as at the start of a call."""
        self.ctx.states.pop(layer, None)
        for carried in self.ctx.extra.values():
            if isinstance(carried, dict):
                carried.pop(layer, None)

    def _first_step(self, name: str, value: np.ndarray) -> np.ndarray:
        if self.model.has_time_axis(name, value):
            return np.take(value, 0, axis=self.model.time_axis(name))
        return value
