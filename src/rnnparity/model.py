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

from .errors import InputError, RnnParityError, UnsupportedFeatureError

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
    """

    def __init__(self, nodes: list[Node], inputs: list[str], outputs: list[str],
                 source: str = "", meta: dict[str, Any] | None = None,
                 dtype: np.dtype = np.float32, optional_inputs: list[str] | None = None,
                 sequence_outputs: list[str] | None = None,
                 time_axes: Mapping[str, int] | None = None) -> None:
        self.nodes = nodes
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.optional_inputs = list(optional_inputs or [])
        self.sequence_outputs = None if sequence_outputs is None else list(sequence_outputs)
        self.time_axes = dict(time_axes or {})
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
        ctx = CallContext(lengths=None if lengths is None else np.asarray(lengths))
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
        values: dict[str, np.ndarray] = {}
        masks: dict[str, np.ndarray | None] = {}
        for name in self.inputs:
            raw = np.asarray(feeds[name])
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

    def stream(self, batch_size: int = 1) -> Stream:
        """A :class:`Stream` that feeds this model a few steps at a time, carrying state."""
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


class Stream:
    """Feeds a model a chunk of steps at a time; state carries over between calls.

    ``step(x_t)`` takes one step ``(batch, features)``; ``chunk(x)`` several
    ``(batch, steps, features)``. Feeding a sequence in chunks of any size gives the
    whole-sequence result.
    """

    def __init__(self, model: Model, batch_size: int = 1) -> None:
        self.model = model
        self.batch_size = batch_size
        self.ctx = CallContext(keep_state=True, streaming=True)

    @property
    def states(self) -> dict[str, list[np.ndarray]]:
        """Layer name -> current state arrays, in the layer's framework order."""
        return self.ctx.states

    def set_state(self, layer: str, arrays: list[np.ndarray]) -> None:
        self.model.layer(layer)
        self.ctx.states[layer] = [np.asarray(a, self.model.dtype) for a in arrays]

    def reset(self) -> None:
        self.ctx.states.clear()

    def chunk(self, x: Any = None, /, **named: Any) -> np.ndarray | dict[str, np.ndarray]:
        feeds = self.model._feeds(x, named)
        for name, value in feeds.items():
            if name in self.model.optional_inputs:
                continue  # initial states: (layers, batch, hidden), checked by the layer
            batch = np.shape(value)[0]
            if batch != self.batch_size:
                raise InputError(f"stream input {name!r} has batch {batch}; expected "
                                 f"batch_size={self.batch_size}")
        results = self.model.run(feeds, self.ctx)
        return results[self.model.outputs[0]] if len(results) == 1 else results

    def step(self, x_t: Any = None, /, **named: Any) -> np.ndarray | dict[str, np.ndarray]:
        feeds = self.model._feeds(x_t, named)
        chunked = {k: v if k in self.model.optional_inputs else np.asarray(v)[:, None]
                   for k, v in feeds.items()}
        out = self.chunk(chunked)
        if isinstance(out, dict):
            return {k: v[:, 0] if self.model.has_time_axis(k, v) else v
                    for k, v in out.items()}
        name = self.model.outputs[0]
        return out[:, 0] if self.model.has_time_axis(name, out) else out
