"""ONNX reader: recurrent nodes of ``.onnx`` files, run on the canonical engine.

Only tensors are read from the file; no operator of the model is executed. Two modes:

- whole model (``layer=None``): a graph that is one ``LSTM`` / ``GRU`` / ``RNN`` node (plus
  constants) runs as it is, inputs keyed by graph input names (initializers are not
  inputs), outputs by graph output names;
- one node (``layer=NAME``, CLI ``--node NAME``): any recurrent node, including one inside
  ``If`` / ``Loop`` / ``Scan`` bodies, runs alone with inputs ``X`` (required),
  ``sequence_lens``, ``initial_h``, ``initial_c`` (optional) and outputs ``Y``, ``Y_h``,
  ``Y_c``. Its ``W`` / ``R`` / ``B`` / ``P`` must be constants: initializers, ``Constant``
  nodes, or chains of Identity / Cast / Slice / Concat / Unsqueeze / Squeeze / Reshape /
  Transpose / Gather / Split over them (as exporters write them), which are folded here
  with NumPy.

An unnamed recurrent node is called ``<op_type>_<k>`` (k counts nodes of that type in graph
order, subgraphs included); ``inspect`` lists every recurrent node with its subgraph path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import import_optional
from ..dialects.onnx import OP_KINDS, SEMANTICS, OnnxRecurrent
from ..errors import FormatError, InputError, UnsupportedFeatureError
from ..model import CallContext, Layer, Model, Node

__all__ = ["load", "extract_node", "FOLDABLE_OPS", "OVERRIDES"]

logger = logging.getLogger(__name__)

OVERRIDES = {
    "semantics": f"one of {SEMANTICS}: follow the ONNX spec text (default) or onnxruntime",
    "dtype": "float32 (default; float64 when W is double) or float64",
}
FOLDABLE_OPS = ("Constant", "Identity", "Cast", "Slice", "Concat", "Unsqueeze", "Squeeze",
                "Reshape", "Transpose", "Gather", "Split")
_NODE_INPUTS = ("X", "sequence_lens", "initial_h", "initial_c")


@dataclass
class _Found:
    """A recurrent node, the graphs enclosing it (outermost first) and its path."""

    name: str
    node: Any
    scopes: list[Any]
    path: list[str]

    def where(self) -> str:
        return " > ".join(self.path) if self.path else "main graph"


class _NotConstant(Exception):
    """A tensor that cannot be folded; the message says why."""


def _options(overrides: dict[str, Any]) -> tuple[str, np.dtype | None]:
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in OVERRIDES.items())
        raise InputError(f"ONNX reader: unknown override(s) {unknown}; known: {known}")
    semantics = str(overrides.get("semantics", "spec"))
    if semantics not in SEMANTICS:
        raise InputError(f"ONNX reader: semantics={semantics!r}; expected one of {SEMANTICS}")
    dtype = overrides.get("dtype")
    if dtype is not None and str(dtype) not in ("float32", "float64"):
        raise InputError(f"ONNX reader: dtype={dtype!r}; expected float32 or float64")
    return semantics, None if dtype is None else np.dtype(dtype)


def _read(path: Path) -> Any:
    onnx = import_optional("onnx")
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load(str(path))
    except (DecodeError, OSError, ValueError, RuntimeError) as err:
        raise FormatError(f"{path.name!r} is not a readable ONNX model: {err}") from err
    except onnx.checker.ValidationError as err:  # external data outside the model's folder
        raise FormatError(f"{path.name!r}: external tensor data refused: {err}") from err
    if not proto.graph.node:
        raise FormatError(f"{path.name!r} holds no graph nodes (an empty or truncated "
                          "file?); expected an ONNX model with an LSTM, GRU or RNN node")
    return proto


def _attributes(node: Any) -> dict[str, Any]:
    from onnx import AttributeProto, helper

    values = {}
    for attribute in node.attribute:
        if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            continue
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        values[attribute.name] = value
    return values


def _subgraphs(node: Any) -> list[tuple[str, Any]]:
    from onnx import AttributeProto

    found = []
    for attribute in node.attribute:
        if attribute.type == AttributeProto.GRAPH:
            found.append((attribute.name, attribute.g))
        elif attribute.type == AttributeProto.GRAPHS:
            found.extend((f"{attribute.name}[{k}]", g) for k, g in enumerate(attribute.graphs))
    return found


def _walk(graph: Any, scopes: list[Any], path: list[str], counts: dict[str, int],
          found: list[_Found]) -> None:
    scopes = scopes + [graph]
    for node in graph.node:
        if node.op_type in OP_KINDS and node.domain in ("", "ai.onnx"):
            index = counts.get(node.op_type, 0)
            counts[node.op_type] = index + 1
            found.append(_Found(node.name or f"{node.op_type}_{index}", node, scopes, path))
        for attribute, subgraph in _subgraphs(node):
            label = f"{node.name or node.op_type}.{attribute}"
            _walk(subgraph, scopes, path + [label], counts, found)


def _recurrent_nodes(proto: Any) -> list[_Found]:
    found: list[_Found] = []
    _walk(proto.graph, [], [], {}, found)
    return found


class _Folder:
    """Folds constant tensors of the scopes enclosing a node (inner scopes shadow outer)."""

    def __init__(self, scopes: list[Any]) -> None:
        self.producers: dict[str, tuple[str, Any]] = {}
        for graph in scopes:
            initialized = {t.name for t in graph.initializer}
            for tensor in graph.initializer:
                self.producers[tensor.name] = ("initializer", tensor)
            for value in graph.input:
                if value.name not in initialized:
                    self.producers[value.name] = ("input", graph.name)
            for node in graph.node:
                for k, output in enumerate(node.output):
                    if output:
                        self.producers[output] = ("node", (node, k))
        self.cache: dict[str, np.ndarray] = {}
        self.active: set[str] = set()

    def fold(self, name: str) -> np.ndarray:
        if name in self.cache:
            return self.cache[name]
        kind, item = self.producers.get(name, (None, None))
        if kind is None:
            raise _NotConstant(f"{name!r} is produced by nothing in scope")
        if kind == "input":
            raise _NotConstant(f"{name!r} is an input of graph {item!r}")
        if name in self.active:
            raise FormatError(f"tensor {name!r} depends on itself (a cycle in the graph)")
        self.active.add(name)
        try:
            value = self._compute(name, kind, item)
        finally:
            self.active.discard(name)
        self.cache[name] = value
        return value

    def _compute(self, name: str, kind: str, item: Any) -> np.ndarray:
        from onnx import numpy_helper

        if kind == "initializer":
            try:
                return numpy_helper.to_array(item)
            except (ValueError, TypeError, KeyError, OSError) as err:
                raise FormatError(f"initializer {name!r} (dims {list(item.dims)}) cannot be "
                                  f"read: {err}") from err
        node, k = item
        if node.op_type not in FOLDABLE_OPS or node.domain not in ("", "ai.onnx"):
            raise _NotConstant(f"{name!r} is computed at run time by {node.op_type} node "
                               f"{node.name!r}")
        inputs = [None if i == "" else self.fold(i) for i in node.input]
        try:
            return _fold_op(node, inputs, _attributes(node), k)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as err:
            shapes = [None if v is None else list(np.shape(v)) for v in inputs]
            raise FormatError(f"{node.op_type} node {node.name!r} cannot be folded on inputs "
                              f"of shapes {shapes}: {err}") from err


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _fold_op(node: Any, inputs: list[np.ndarray | None], attrs: dict[str, Any],
             output_index: int) -> np.ndarray:
    """NumPy versions of the shape-only operators exporters put between weights and RNNs."""
    from onnx import helper, numpy_helper

    op = node.op_type
    x = inputs[0] if inputs else None
    if op == "Constant":
        if "value" in attrs:
            return numpy_helper.to_array(attrs["value"])
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in attrs:
                return np.asarray(attrs[key], dtype=dtype)
        raise _NotConstant(f"Constant node {node.name!r} holds {sorted(attrs)}, not a tensor")
    if op == "Identity":
        return x
    if op == "Cast":
        return x.astype(helper.tensor_dtype_to_np_dtype(int(attrs["to"])))
    if op == "Concat":
        return np.concatenate([v for v in inputs if v is not None], axis=int(attrs["axis"]))
    if op == "Unsqueeze":
        axes = attrs.get("axes", inputs[1] if len(inputs) > 1 else None)
        return np.expand_dims(x, tuple(_ints(axes)))
    if op == "Squeeze":
        axes = attrs.get("axes", inputs[1] if len(inputs) > 1 else None)
        return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(_ints(axes)))
    if op == "Reshape":
        shape = _ints(attrs["shape"] if "shape" in attrs else inputs[1])
        if not attrs.get("allowzero", 0):
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)
    if op == "Transpose":
        return x.transpose(attrs.get("perm", list(range(x.ndim))[::-1]))
    if op == "Gather":
        return np.take(x, np.asarray(inputs[1]).astype(np.int64), axis=int(attrs.get("axis", 0)))
    if op == "Slice":
        return _slice(x, inputs, attrs)
    return _split(x, inputs, attrs, len(node.output))[output_index]


def _slice(x: np.ndarray, inputs: list[Any], attrs: dict[str, Any]) -> np.ndarray:
    if len(inputs) >= 3:
        starts, ends = _ints(inputs[1]), _ints(inputs[2])
        axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else None
        steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else None
    else:
        starts, ends = _ints(attrs["starts"]), _ints(attrs["ends"])
        axes, steps = (_ints(attrs["axes"]) if "axes" in attrs else None), None
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for axis, start, end, step in zip(axes, starts, ends, steps):
        index[axis] = slice(start, end, step)
    return x[tuple(index)]


def _split(x: np.ndarray, inputs: list[Any], attrs: dict[str, Any],
           count: int) -> list[np.ndarray]:
    axis = int(attrs.get("axis", 0))
    sizes = attrs.get("split", inputs[1] if len(inputs) > 1 else None)
    if sizes is None:
        parts = int(attrs.get("num_outputs", count))
        step = -(-x.shape[axis] // parts)
        sizes = [min(step, x.shape[axis] - k * step) for k in range(parts)]
    bounds = np.cumsum(_ints(sizes))[:-1]
    return np.split(x, bounds, axis=axis)


def _dtype_for(weights: np.ndarray, chosen: np.dtype | None) -> np.dtype:
    if chosen is not None:
        return chosen
    return np.dtype(np.float64) if weights.dtype == np.float64 else np.dtype(np.float32)


def _opset(proto: Any) -> int:
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _meta(proto: Any, found: list[_Found], semantics: str) -> dict[str, Any]:
    producer = f"{proto.producer_name} {proto.producer_version}".strip()
    return {
        "framework": "onnx",
        "producer": producer or "unknown",
        "opset": _opset(proto),
        "semantics": semantics,
        "recurrent_nodes": [f"{f.name} ({f.node.op_type}) in {f.where()}" for f in found],
    }


def load(path: Path, layer: str | None = None, **overrides: Any) -> Model:
    """Read an ONNX model: the whole model, or one recurrent node (``layer``).

    Args:
        path: the ``.onnx`` file.
        layer: name of a recurrent node to run alone (CLI ``--node``).
        **overrides: ``semantics`` (``"spec"`` or ``"onnxruntime"``), ``dtype``.

    Returns:
        A :class:`Model`. A whole model that is not a single recurrent node still loads
        (``inspect`` lists its recurrent nodes) but refuses to run, naming ``--node``.

    Raises:
        FormatError: unreadable file, or a recurrent node missing a required input.
        InputError: unknown node name (the message lists the recurrent nodes found) or
            override.
        UnsupportedFeatureError: a weight that is not constant, an unsupported attribute
            or activation.
    """
    path = Path(path)
    semantics, dtype = _options(overrides)
    proto = _read(path)
    found = _recurrent_nodes(proto)
    meta = _meta(proto, found, semantics)
    if layer is None:
        return _whole_model(proto, found, path, meta, semantics, dtype)

    matches = [f for f in found if f.name == layer]
    if not matches:
        listing = "; ".join(meta["recurrent_nodes"]) or "none"
        raise InputError(f"{path.name}: no LSTM/GRU/RNN node named {layer!r}; recurrent "
                         f"nodes: {listing}")
    if len(matches) > 1:
        raise InputError(f"{path.name}: {len(matches)} recurrent nodes are named {layer!r}; "
                         "rnnparity needs unique names")
    return _node_model(matches[0], path, meta, semantics, dtype)


def _fold_or_raise(folder: _Folder, tensor: str, slot: str, context: str) -> np.ndarray:
    try:
        value = folder.fold(tensor)
    except FormatError as err:
        raise FormatError(f"{context}: {slot}: {err}") from err
    except _NotConstant as err:
        ops = ", ".join(FOLDABLE_OPS)
        raise UnsupportedFeatureError(
            f"{context}: {slot} is not a constant ({err}); only initializers and tensors "
            f"computed from them by {ops} can be folded"
        ) from None
    if value.dtype.kind != "f":
        raise FormatError(f"{context}: {slot} ({tensor!r}) has dtype {value.dtype}; expected "
                          "a float tensor (the operator's type T)")
    return value


def _constants(found: _Found, runtime: set[str], context: str,
               ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Slot -> folded array for W/R/B/P (required constant) and defaults of the others."""
    node = found.node
    names = dict(zip(("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"),
                     list(node.input) + [""] * 8))
    for slot in ("X", "W", "R"):
        if not names[slot]:
            raise FormatError(f"{context}: required input {slot} is missing (input "
                              f"{list(names).index(slot)} is empty)")
    folder = _Folder(found.scopes)
    constants: dict[str, np.ndarray] = {}
    for slot, tensor in names.items():
        if not tensor or slot in runtime:
            continue
        if slot in ("W", "R", "B", "P"):
            constants[slot] = _fold_or_raise(folder, tensor, slot, context)
        else:
            try:
                constants[slot] = folder.fold(tensor)
            except _NotConstant:
                logger.debug("%s: %s (%s) is computed at run time", context, slot, tensor)
            except FormatError as err:
                raise FormatError(f"{context}: {slot}: {err}") from err
    return constants, names


def _node_model(found: _Found, path: Path, meta: dict[str, Any], semantics: str,
                dtype: np.dtype | None) -> Model:
    node = found.node
    context = f"ONNX {node.op_type} node {found.name!r}"
    constants, _ = _constants(found, {"X"}, context)
    lstm = node.op_type == "LSTM"
    slots = [s for s in _NODE_INPUTS if lstm or s != "initial_c"]
    outputs = ["Y", "Y_h", "Y_c"] if lstm else ["Y", "Y_h"]
    attributes = _attributes(node)
    layer = OnnxRecurrent(found.name, node.op_type, attributes, constants, slots, outputs,
                          semantics=semantics, dtype=_dtype_for(constants["W"], dtype))
    meta = dict(meta, node=found.name, node_path=found.where(),
                node_constants={k: list(v.shape) for k, v in constants.items()})
    return Model([Node(layer, slots, outputs)], inputs=["X"], outputs=outputs,
                 source=str(path), meta=meta, dtype=layer.dtype, optional_inputs=slots[1:],
                 sequence_outputs=["Y"], time_axes={"X": layer.time_axis,
                                                    "Y": layer.time_axis})


class _NotRunnable(Layer):
    """Stands for a graph that is more than one recurrent node: describes, refuses to run."""

    kind = "onnx graph"
    can_stream = False

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name)
        self.reason = reason
        self.stream_refusal = reason

    def call(self, inputs: list[Any], masks: list[Any], ctx: CallContext,
             ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        raise UnsupportedFeatureError(self.reason)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "runs": self.reason}


class _GraphModel(Model):
    """A model rnnparity can describe but not run as a whole (see :class:`_NotRunnable`)."""

    def run(self, feeds: Any, ctx: CallContext | None = None,
            check_finite: bool = True) -> dict[str, np.ndarray]:
        raise UnsupportedFeatureError(self.nodes[0].layer.reason)


def _whole_model(proto: Any, found: list[_Found], path: Path, meta: dict[str, Any],
                 semantics: str, dtype: np.dtype | None) -> Model:
    graph = proto.graph
    initialized = {t.name for t in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in initialized]
    outputs = [v.name for v in graph.output]
    top = [f for f in found if not f.path]
    others = [n.op_type for n in graph.node
              if n.op_type not in OP_KINDS and n.op_type not in FOLDABLE_OPS]
    if len(found) != 1 or len(top) != 1 or others:
        listing = "; ".join(meta["recurrent_nodes"]) or "none"
        reason = (f"{path.name} is not a single recurrent node ({len(graph.node)} nodes at "
                  f"the top level); run one recurrent node with --node NAME (layer=NAME); "
                  f"recurrent nodes: {listing}")
        layer = _NotRunnable(graph.name or path.stem, reason)
        return _GraphModel([Node(layer, inputs, outputs)], inputs, outputs, source=str(path),
                           meta=meta)

    found_node = top[0]
    node = found_node.node
    context = f"ONNX {node.op_type} node {found_node.name!r}"
    runtime = {slot for slot, tensor in zip(
        ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"), node.input)
        if tensor in inputs}
    constants, names = _constants(found_node, runtime, context)
    if names["X"] not in inputs:
        raise UnsupportedFeatureError(f"{context}: X ({names['X']!r}) is not a graph input")
    for slot, tensor in names.items():
        if tensor and slot not in runtime and slot not in constants:
            raise UnsupportedFeatureError(f"{context}: {slot} ({tensor!r}) is neither a graph "
                                          "input nor a constant")
    slots = [s for s in names if s in runtime]
    produced = [(slot, tensor) for slot, tensor in zip(("Y", "Y_h", "Y_c"), node.output)
                if tensor]
    missing = [o for o in outputs if o not in {t for _, t in produced}]
    if missing:
        raise UnsupportedFeatureError(f"{path.name}: graph outputs {missing} are not outputs "
                                      f"of {context}")
    attributes = _attributes(node)
    weights = constants.get("W")
    if weights is None:
        elem = next(v.type.tensor_type.elem_type for v in graph.input if v.name == names["W"])
        weights = np.zeros(0, np.float64 if elem == 11 else np.float32)
    layer = OnnxRecurrent(found_node.name, node.op_type, attributes, constants, slots,
                          [s for s, _ in produced], semantics=semantics,
                          dtype=_dtype_for(weights, dtype))
    y_name = dict(produced).get("Y")
    sequences = [t for t in (names["X"], y_name) if t]
    return Model([Node(layer, [names[s] for s in slots], [t for _, t in produced])],
                 inputs, outputs, source=str(path), meta=dict(meta, node=found_node.name),
                 dtype=layer.dtype, sequence_outputs=[y_name] if y_name else [],
                 time_axes={t: layer.time_axis for t in sequences},
                 state_inputs=[names[s] for s in slots if s != "X"])


def extract_node(path: str | Path, name: str) -> Any:
    """A one-node ``onnx.ModelProto`` holding recurrent node ``name`` with folded weights.

    Its inputs are ``X`` and whichever of ``sequence_lens``, ``initial_h``, ``initial_c``
    the node uses; W/R/B/P (and constant optional inputs) become initializers; outputs are
    ``Y``, ``Y_h`` (and ``Y_c``). Useful to run the same node in onnxruntime.
    """
    onnx = import_optional("onnx")
    from onnx import helper, numpy_helper

    path = Path(path)
    proto = _read(path)
    matches = [f for f in _recurrent_nodes(proto) if f.name == name]
    if len(matches) != 1:
        raise InputError(f"{path.name}: expected one recurrent node named {name!r}, found "
                         f"{len(matches)}")
    found = matches[0]
    context = f"ONNX {found.node.op_type} node {name!r}"
    constants, names = _constants(found, {"X"}, context)
    float_type = helper.np_dtype_to_tensor_dtype(constants["W"].dtype)
    node_inputs, graph_inputs, initializers = [], [], []
    for slot in names:
        if slot in constants:
            initializers.append(numpy_helper.from_array(constants[slot], slot))
            node_inputs.append(slot)
        elif names[slot]:
            elem = onnx.TensorProto.INT32 if slot == "sequence_lens" else float_type
            graph_inputs.append(helper.make_tensor_value_info(slot, elem, None))
            node_inputs.append(slot)
        else:
            node_inputs.append("")
    while node_inputs and not node_inputs[-1]:
        node_inputs.pop()
    outputs = ["Y", "Y_h", "Y_c"][: 3 if found.node.op_type == "LSTM" else 2]
    node = helper.make_node(found.node.op_type, node_inputs, outputs, name=name)
    node.attribute.extend(a for a in found.node.attribute)
    graph = helper.make_graph(
        [node], name, graph_inputs,
        [helper.make_tensor_value_info(o, float_type, None) for o in outputs], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", _opset(proto))],
                             ir_version=proto.ir_version)
