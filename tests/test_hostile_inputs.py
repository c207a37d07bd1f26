"""Bad and hostile input: every case fails with a specific rnnparity error, never silently.

Each file below is forged by hand (h5py, zipfile, onnx.helper, numpy, safetensors, pickle):
truncated or corrupt files, wrong types in configs and attributes, units that do not fit
the weights, external links, zip and array bombs, pickles that would run code. The API
must raise a subclass of RnnParityError naming what was expected and what was found; the
CLI must exit non-zero with one ``rnnparity: error:`` line and no traceback. No framework
is the oracle here: what is checked is that nothing is computed from bad input.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import require

import rnnparity
from rnnparity.cli.common import ExitCode
from rnnparity.cli.main import main
from rnnparity.errors import (
    FormatError,
    InputError,
    RnnParityError,
    ShapeError,
    UnsupportedFeatureError,
)

RNG = np.random.default_rng(11)


def arr(*shape: int) -> np.ndarray:
    return RNG.uniform(-0.5, 0.5, shape).astype(np.float32)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line(code: int, err: str, fragment: str, expected_code: int | None = None):
    assert code != 0
    if expected_code is not None:
        assert code == expected_code, err
    assert err.count("\n") == 1 and err.startswith("rnnparity: error: "), err
    assert "Traceback" not in err
    assert fragment.lower() in err.lower(), err


# ------------------------------------------------------------------------------ builders

LSTM_CONFIG = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
    {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 5, 3],
                                            "dtype": "float32", "name": "in"}},
    {"class_name": "LSTM", "config": {"name": "lstm", "units": 2, "return_sequences": True,
                                      "activation": "tanh", "recurrent_activation": "sigmoid",
                                      "use_bias": True}}]}}
WEIGHT_NAMES = ("lstm/lstm_cell/kernel:0", "lstm/lstm_cell/recurrent_kernel:0",
                "lstm/lstm_cell/bias:0")
BIAS = WEIGHT_NAMES[2]


def lstm_config(**changes):
    config = json.loads(json.dumps(LSTM_CONFIG))
    config["config"]["layers"][1]["config"].update(changes)
    return config


def write_h5(path: Path, config=LSTM_CONFIG, weights=None, mutate=None) -> Path:
    """A tf_keras-style .h5: full model (model_config) or, with config=None, weights only."""
    h5py = require("h5py", "h5py writes the forged Keras files")
    weights = list(zip(WEIGHT_NAMES, (arr(3, 8), arr(2, 8), arr(8))) if weights is None
                   else weights)
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["backend"] = "tensorflow"
        root = f
        if config is not None:
            f.attrs["model_config"] = (config if isinstance(config, (str, int))
                                       else json.dumps(config))
            root = f.create_group("model_weights")
        root.attrs["layer_names"] = [b"lstm"]
        group = root.create_group("lstm")
        group.attrs["weight_names"] = [n.encode() for n, _ in weights]
        for name, value in weights:
            group.create_dataset(name, data=value)
        if mutate:
            mutate(h5py, f, group)
    return path


def replace_bias(**dataset):
    def mutate(h5py, f, group):
        del group[BIAS]
        if "link" in dataset:
            group[BIAS] = dataset["link"](h5py)
        else:
            group.create_dataset(BIAS, **dataset)
    return mutate


def gru_weights_h5(arrays=None) -> bytes:
    h5py = require("h5py", "h5py writes the forged Keras files")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        variables = f.create_group("layers/gru/cell/vars")
        variables.attrs["name"] = "gru_cell"
        for key, value in (arrays or {"0": arr(3, 6), "1": arr(2, 6), "2": arr(2, 6)}).items():
            variables.create_dataset(key, data=value)
        f.create_group("layers/gru/vars").attrs["name"] = "gru"
    return buffer.getvalue()


GRU_CONFIG = {"class_name": "Sequential", "config": {"name": "s", "layers": [
    {"class_name": "InputLayer", "config": {"batch_shape": [None, 5, 3], "name": "in"}},
    {"class_name": "GRU", "config": {"name": "gru", "units": 2, "return_sequences": True,
                                     "reset_after": True}}]}}


def write_keras(path: Path, config=GRU_CONFIG, metadata=None, weights=None, extra=(),
                skip=()) -> Path:
    members = {"config.json": config if isinstance(config, (str, bytes)) else json.dumps(config),
               "metadata.json": metadata or json.dumps({"keras_version": "3.15.1"}),
               "model.weights.h5": gru_weights_h5() if weights is None else weights}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in list(members.items()) + list(extra):
            if name not in skip:
                archive.writestr(name, data)
    return path


def write_onnx(path: Path, attrs=None, mutate=None, hidden=2, inputs=3) -> Path:
    onnx = require("onnx", "onnx writes the forged ONNX files")
    from onnx import TensorProto, helper, numpy_helper

    tensors = {"W": arr(1, 4 * hidden, inputs), "R": arr(1, 4 * hidden, hidden),
               "B": arr(1, 8 * hidden)}
    node = helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"], name="lstm",
                            hidden_size=hidden, **(attrs or {}))
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
               for n in ("Y", "Y_h", "Y_c")]
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, inputs])],
        outputs, [numpy_helper.from_array(v, k) for k, v in tensors.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    if mutate:
        mutate(model, helper, numpy_helper, TensorProto)
    path.write_bytes(model.SerializeToString())
    assert onnx  # the module is only needed to build the proto
    return path


def set_attribute(name, value):
    def mutate(model, helper, numpy_helper, TensorProto):
        node = model.graph.node[0]
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute(name, value)])
    return mutate


def replace_w(make):
    def mutate(model, helper, numpy_helper, TensorProto):
        index = next(k for k, t in enumerate(model.graph.initializer) if t.name == "W")
        model.graph.initializer[index].CopyFrom(make(helper, numpy_helper, TensorProto))
    return mutate


def external_w(location):
    def mutate(model, helper, numpy_helper, TensorProto):
        tensor = next(t for t in model.graph.initializer if t.name == "W")
        tensor.ClearField("raw_data")
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", location
    return mutate


def w_through(op, *extra_inputs, **attrs):
    """W reaches the LSTM through a node ``op`` (with extra constant inputs)."""
    def mutate(model, helper, numpy_helper, TensorProto):
        names = []
        for k, value in enumerate(extra_inputs):
            names.append(f"c{k}")
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), f"c{k}"))
        model.graph.node[0].input[1] = "W2"
        model.graph.node.insert(0, helper.make_node(op, ["W", *names], ["W2"], name="pre",
                                                    **attrs))
    return mutate


def torch_sd(hidden=2, inputs=3, gates=4, **changes):
    sd = {"weight_ih_l0": arr(gates * hidden, inputs), "weight_hh_l0": arr(gates * hidden, hidden),
          "bias_ih_l0": arr(gates * hidden), "bias_hh_l0": arr(gates * hidden)}
    sd.update(changes)
    return sd


def write_npz(path: Path, sd) -> Path:
    np.savez(path, **sd)
    return path


def forged_npy(shape) -> bytes:
    """A valid .npy header declaring ``shape`` followed by 64 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    return buffer.getvalue() + bytes(64)


def write_zip(path: Path, members, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def raw_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def safetensors_raw(path: Path, header: bytes, body: bytes = b"") -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header + body)
    return path


class Marker:
    """Unpickling this creates a file: it must never happen."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# ------------------------------------------------------------------- hostile model files

F, S, I, U = FormatError, ShapeError, InputError, UnsupportedFeatureError

# id -> (builder(tmp) -> path, layer, overrides, error class, message fragment)
FILE_CASES = {
    # Keras HDF5: corrupt containers
    "h5_empty": (lambda t: raw_file(t / "m.h5", b""), None, {}, F,
                 "not a readable Keras HDF5"),
    "h5_garbage": (lambda t: raw_file(t / "m.h5", os.urandom(2048)),
                   None, {}, F, "not a readable Keras HDF5"),
    "h5_truncated": (lambda t: raw_file(t / "m.h5", 
        write_h5(t / "ok.h5").read_bytes()[:1500]), None, {}, F,
        "not a readable"),
    "h5_is_onnx": (lambda t: raw_file(t / "m.h5", 
        write_onnx(t / "x.onnx").read_bytes()), None, {}, F, "HDF5"),
    # Keras HDF5: model_config of the wrong shape
    "config_not_json": (lambda t: write_h5(t / "m.h5", config="{nope"), None, {}, F,
                        "model_config is not valid JSON"),
    "config_json_list": (lambda t: write_h5(t / "m.h5", config="[1, 2]"), None, {}, F,
                         "holds a JSON list; expected an object"),
    "config_int_attr": (lambda t: write_h5(t / "m.h5", config=7), None, {}, F,
                        "holds a JSON int"),
    "config_layers_not_list": (lambda t: write_h5(t / "m.h5", config={
        "class_name": "Sequential", "config": {"layers": 5}}), None, {}, F,
        "config.layers to be a list"),
    "config_layer_is_string": (lambda t: write_h5(t / "m.h5", config={
        "class_name": "Sequential", "config": {"layers": ["lstm"]}}), None, {}, F,
        "each layer to be an object"),
    "config_layer_without_config": (lambda t: write_h5(t / "m.h5", config={
        "class_name": "Sequential", "config": {"layers": [{"class_name": "LSTM"}]}}),
        None, {}, F, "class_name (a string) and config"),
    "config_functional_garbage": (lambda t: write_h5(t / "m.h5", config={
        "class_name": "Functional", "config": {"layers": [
            {"class_name": "LSTM", "name": "lstm", "config": {"name": "lstm"},
             "inbound_nodes": 5}], "input_layers": 3, "output_layers": []}}),
        None, {}, F, "not a readable .h5 model"),
    "config_unknown_layer_class": (lambda t: write_h5(t / "m.h5", config=json.loads(
        json.dumps(LSTM_CONFIG).replace('"LSTM"', '"Conv1D"'))), None, {}, U,
        "'Conv1D'"),
    # Keras HDF5: layer config values
    "units_negative": (lambda t: write_h5(t / "m.h5", lstm_config(units=-2)), None, {}, I,
                       "units=-2; expected a positive integer"),
    "units_zero": (lambda t: write_h5(t / "m.h5", lstm_config(units=0)), None, {}, I,
                   "units=0"),
    "units_float": (lambda t: write_h5(t / "m.h5", lstm_config(units=2.5)), None, {}, I,
                    "units=2.5"),
    "units_string": (lambda t: write_h5(t / "m.h5", lstm_config(units="two")), None, {}, I,
                     "units='two'"),
    "units_bool": (lambda t: write_h5(t / "m.h5", lstm_config(units=True)), None, {}, I,
                   "units=True"),
    "units_do_not_fit": (lambda t: write_h5(t / "m.h5", lstm_config(units=1)), None, {}, S,
                         "kernel has shape (3, 8); expected (input_size, 4 * units) = (3, 4)"),
    "units_absurd": (lambda t: write_h5(t / "m.h5", lstm_config(units=10**9)), None, {}, S,
                     "units=1000000000"),
    "activation_unknown": (lambda t: write_h5(t / "m.h5", lstm_config(activation="swishy")),
                           None, {}, U, "'swishy'"),
    "activation_dict_without_name": (lambda t: write_h5(t / "m.h5", lstm_config(
        activation={"a": 1})), None, {}, U, "names no function"),
    "return_sequences_string": (lambda t: write_h5(t / "m.h5", lstm_config(
        return_sequences="no")), None, {}, I, "return_sequences='no'; expected true or false"),
    # Keras HDF5: weights that are not weights
    "weights_strings": (lambda t: write_h5(t / "m.h5", weights=list(zip(
        WEIGHT_NAMES, (np.array([b"abc"] * 24).reshape(3, 8), arr(2, 8), arr(8))))),
        None, {}, F, "expected numeric weights"),
    "weights_vlen_strings": (lambda t: write_h5(t / "m.h5", mutate=lambda h5py, f, g: (
        g.__delitem__(BIAS), g.create_dataset(BIAS, data=np.array(["a"] * 8, dtype=object),
                                              dtype=h5py.string_dtype()))), None, {}, F,
        "dtype object; expected numeric weights"),
    "weights_compound": (lambda t: write_h5(t / "m.h5", mutate=replace_bias(
        data=np.zeros(8, dtype=[("a", "f4"), ("b", "i4")]))), None, {}, F,
        "expected numeric weights"),
    "weight_dataset_missing": (lambda t: write_h5(t / "m.h5", mutate=lambda h5py, f, g:
                                                  g.__delitem__(BIAS)), None, {}, F,
                               "no entry 'lstm/lstm_cell/bias:0'"),
    "weight_names_not_strings": (lambda t: write_h5(t / "m.h5", mutate=lambda h5py, f, g:
                                                    g.attrs.__setitem__("weight_names", 5)),
                                 None, {}, F, "expected weight names (strings)"),
    "weight_name_is_a_group": (lambda t: write_h5(t / "m.h5", mutate=lambda h5py, f, g:
                                                  g.attrs.__setitem__("weight_names",
                                                                      [b"lstm"])),
                               None, {}, F, "is a Group; expected a dataset"),
    "external_link": (lambda t: write_h5(t / "m.h5", mutate=replace_bias(
        link=lambda h5py: h5py.ExternalLink(str(write_h5(t / "other.h5")),
                                            "/model_weights/lstm/" + BIAS))), None, {}, F,
        "is an external link to"),
    "external_storage": (lambda t: write_h5(t / "m.h5", mutate=replace_bias(
        shape=(8,), dtype="f4", external=[(str(t / "secret.bin"), 0, 32)])), None, {}, F,
        "keeps its data outside this file"),
    "soft_link_cycle": (lambda t: write_h5(t / "m.h5", mutate=replace_bias(
        link=lambda h5py: h5py.SoftLink("/model_weights/lstm/" + BIAS))), None, {}, F,
        "cannot read 'lstm/lstm_cell/bias:0'"),
    "huge_declared_dataset": (lambda t: write_h5(t / "m.h5", mutate=replace_bias(
        shape=(10**6, 10**6), dtype="f4", chunks=(1, 1024))), None, {}, F,
        "expected at most 4.0 GiB per array"),
    # Keras HDF5 weights only: overrides
    "wo_units_absurd": (lambda t: write_h5(t / "m.h5", config=None), None,
                        {"units": 10**9}, S, "units=1000000000"),
    "wo_units_do_not_fit": (lambda t: write_h5(t / "m.h5", config=None), None, {"units": 1},
                            S, "expected (input_size, 4 * units) = (3, 4)"),
    "wo_units_string": (lambda t: write_h5(t / "m.h5", config=None), None, {"units": "abc"},
                        I, "units='abc'; expected a positive integer"),
    "wo_kind_unknown": (lambda t: write_h5(t / "m.h5", config=None), None,
                        {"kind": "Transformer"}, I, "kind='Transformer'; expected one of"),
    "wo_activation_unknown": (lambda t: write_h5(t / "m.h5", config=None), None,
                              {"recurrent_activation": "nope"}, U, "'nope'"),
    "wo_version_garbage": (lambda t: write_h5(t / "m.h5", config=None), None,
                           {"keras_version": "banana"}, I, "is not a version"),
    "wo_kernel_3d": (lambda t: write_h5(t / "m.h5", config=None, weights=[
        ("k/kernel:0", arr(3, 8, 1)), ("k/recurrent_kernel:0", arr(2, 8)),
        ("k/bias:0", arr(8))]), None, {}, S, "expected 2 dimensions"),
    "wo_five_gates": (lambda t: write_h5(t / "m.h5", config=None, weights=[
        ("k/kernel:0", arr(3, 10)), ("k/recurrent_kernel:0", arr(2, 10)),
        ("k/bias:0", arr(10))]), None, {}, S, "G = 4 (LSTM), 3 (GRU) or 1"),
    "override_unknown_key": (lambda t: write_h5(t / "m.h5"), None, {"colour": "red"}, I,
                             "unknown override(s) ['colour']"),
    "override_bad_merge_mode": (lambda t: write_h5(t / "m.h5"), None, {"merge_mode": "xor"},
                                I, "merge_mode='xor'"),
    "override_bad_boolean": (lambda t: write_h5(t / "m.h5"), None, {"reset_after": "yes"}, I,
                             "reset_after='yes'; expected true or false"),
    "override_bad_dtype": (lambda t: write_h5(t / "m.h5"), None, {"dtype": "int8"}, I,
                           "expected float32 or float64"),
    "unknown_layer": (lambda t: write_h5(t / "m.h5"), "nope", {}, I,
                      "no layer named 'nope'"),
    "wo_unknown_layer": (lambda t: write_h5(t / "m.h5", config=None), "nope", {}, I,
                         "no layer named 'nope'"),
    # Keras 3 .keras archives
    "keras_not_a_zip": (lambda t: raw_file(t / "m.keras", b"hello"),
                        None, {}, F, "is not a zip archive"),
    "keras_no_config": (lambda t: write_keras(t / "m.keras", skip=("config.json",)), None,
                        {}, F, "has no config.json"),
    "keras_no_weights": (lambda t: write_keras(t / "m.keras", skip=("model.weights.h5",)),
                         None, {}, F, "has no model.weights.h5"),
    "keras_config_garbage": (lambda t: write_keras(t / "m.keras", config=b"\xff{{"), None,
                             {}, F, "is not valid JSON"),
    "keras_config_list": (lambda t: write_keras(t / "m.keras", config="[1]"), None, {}, F,
                          "expected an object with class_name and config; found list"),
    "keras_metadata_list": (lambda t: write_keras(t / "m.keras", metadata="[1]"), None, {},
                            F, "metadata.json holds a JSON list"),
    "keras_weights_garbage": (lambda t: write_keras(t / "m.keras", weights=b"junk" * 64),
                              None, {}, F, "is not a readable model.weights.h5"),
    "keras_vars_not_numbered": (lambda t: write_keras(t / "m.keras", weights=gru_weights_h5(
        {"a": arr(3, 6), "b": arr(2, 6)})), None, {}, F, "expected variables named 0, 1, 2"),
    "keras_config_only_under_traversal_name": (lambda t: write_keras(
        t / "m.keras", skip=("config.json",), extra=[("../config.json", "{}")]), None, {},
        F, "has no config.json"),
    "keras_config_deeply_nested": (lambda t: write_keras(t / "m.keras", config="[" * 10**5
                                                         + "]" * 10**5), None, {}, F,
                                   "maximum recursion depth"),
    "keras_units_do_not_fit": (lambda t: write_keras(t / "m.keras"), None, {"units": 5}, S,
                               "expected (input_size, 3 * units) = (3, 15)"),
    "keras_member_declares_huge_size": (lambda t: write_zip(t / "m.keras", {
        "config.json": b"[" + b" " * (70 << 20) + b"]", "model.weights.h5": b"x"},
        zipfile.ZIP_DEFLATED), None, {}, F, "declares"),
    # ONNX
    "onnx_garbage": (lambda t: raw_file(t / "m.onnx", os.urandom(3000)),
                     None, {}, F, "is not a readable ONNX model"),
    "onnx_empty_file": (lambda t: raw_file(t / "m.onnx", b""), None, {},
                        F, "holds no graph nodes"),
    "onnx_is_h5": (lambda t: (t / "m.onnx").write_bytes(write_h5(t / "x.h5").read_bytes())
                   and t / "m.onnx", None, {}, F, "not a readable ONNX model"),
    "onnx_missing_required_input": (lambda t: write_onnx(t / "m.onnx", mutate=lambda m, *_:
                                                         m.graph.node[0].input.__setitem__(
                                                             1, "")), None, {}, F,
                                    "required input W is missing"),
    "onnx_node_missing_required_input": (lambda t: write_onnx(
        t / "m.onnx", mutate=lambda m, *_: m.graph.node[0].input.__setitem__(2, "")), "lstm",
        {}, F, "required input R is missing"),
    "onnx_unsupported_activation": (lambda t: write_onnx(t / "m.onnx", attrs={
        "activations": ["Sigmoid", "Gelu", "Tanh"]}), None, {}, U, "activation 'Gelu'"),
    "onnx_W_not_constant": (lambda t: write_onnx(t / "m.onnx", mutate=w_through("Relu")),
                            "lstm", {}, U, "W is not a constant"),
    "onnx_W_dangling": (lambda t: write_onnx(t / "m.onnx", mutate=lambda m, *_:
                                             m.graph.node[0].input.__setitem__(1, "gone")),
                        None, {}, U, "is produced by nothing"),
    "onnx_huge_declared_tensor": (lambda t: write_onnx(t / "m.onnx", mutate=lambda m, *_: (
        m.graph.initializer[0].ClearField("dims"),
        m.graph.initializer[0].dims.extend([10**6, 10**6, 3]))), None, {}, F,
        "cannot be read"),
    "onnx_W_strings": (lambda t: write_onnx(t / "m.onnx", mutate=replace_w(
        lambda helper, nh, TP: helper.make_tensor("W", TP.STRING, [1, 8, 3], [b"a"] * 24))),
        None, {}, F, "expected a float tensor"),
    "onnx_W_ints": (lambda t: write_onnx(t / "m.onnx", mutate=replace_w(
        lambda helper, nh, TP: nh.from_array(np.ones((1, 8, 3), np.int32), "W"))), None, {},
        F, "has dtype int32; expected a float tensor"),
    "onnx_hidden_size_string": (lambda t: write_onnx(t / "m.onnx", mutate=set_attribute(
        "hidden_size", "two")), None, {}, I, "hidden_size='two'; expected an int"),
    "onnx_hidden_size_float": (lambda t: write_onnx(t / "m.onnx", mutate=set_attribute(
        "hidden_size", 2.5)), None, {}, I, "expected an int"),
    "onnx_hidden_size_negative": (lambda t: write_onnx(t / "m.onnx", mutate=set_attribute(
        "hidden_size", -2)), None, {}, I, "hidden_size=-2"),
    "onnx_hidden_size_do_not_fit": (lambda t: write_onnx(t / "m.onnx", mutate=set_attribute(
        "hidden_size", 3)), None, {}, S, "R has shape (1, 8, 2) but hidden_size=3"),
    "onnx_clip_negative": (lambda t: write_onnx(t / "m.onnx", attrs={"clip": -1.0}), None,
                           {}, I, "clip=-1.0; expected a positive threshold"),
    "onnx_direction_unknown": (lambda t: write_onnx(t / "m.onnx", attrs={
        "direction": "sideways"}), None, {}, I, "direction='sideways'"),
    "onnx_unknown_attribute": (lambda t: write_onnx(t / "m.onnx", attrs={"frobnicate": 1}),
                               None, {}, U, "['frobnicate']"),
    "onnx_external_data_traversal": (lambda t: write_onnx(t / "m.onnx", mutate=external_w(
        "../../../../etc/passwd")), None, {}, F, "external tensor data refused"),
    "onnx_external_data_absolute": (lambda t: write_onnx(t / "m.onnx", mutate=external_w(
        "/etc/passwd")), None, {}, F, "external tensor data refused"),
    "onnx_fold_bad_reshape": (lambda t: write_onnx(t / "m.onnx", mutate=w_through(
        "Reshape", np.array([7, 7], np.int64))), "lstm", {}, F, "cannot be folded"),
    "onnx_fold_gather_out_of_range": (lambda t: write_onnx(t / "m.onnx", mutate=w_through(
        "Gather", np.array([5], np.int64))), "lstm", {}, F, "out of bounds"),
    "onnx_fold_cycle": (lambda t: write_onnx(t / "m.onnx", mutate=lambda m, helper, *_: (
        m.graph.node[0].input.__setitem__(1, "A"),
        m.graph.node.insert(0, helper.make_node("Identity", ["B2"], ["A"])),
        m.graph.node.insert(0, helper.make_node("Identity", ["A"], ["B2"])))), "lstm", {},
        F, "depends on itself"),
    "onnx_unknown_node": (lambda t: write_onnx(t / "m.onnx"), "nope", {}, I,
                          "no LSTM/GRU/RNN node named 'nope'"),
    "onnx_override_dtype": (lambda t: write_onnx(t / "m.onnx"), None, {"dtype": "banana"}, I,
                            "dtype='banana'; expected float32 or float64"),
    "onnx_override_unknown": (lambda t: write_onnx(t / "m.onnx"), None, {"colour": 1}, I,
                              "unknown override(s) ['colour']"),
    # PyTorch state_dicts
    "pt_garbage": (lambda t: raw_file(t / "m.pt", os.urandom(500)), None,
                   {}, F, "refused"),
    "pt_list": (lambda t: _torch_save(t / "m.pt", "list"), None, {}, F, "holds a list"),
    "pt_nested_dict": (lambda t: _torch_save(t / "m.pt", "nested"), None, {}, F,
                       "not a plain state_dict"),
    "npz_object_array": (lambda t: write_npz(t / "m.npz", torch_sd(bias_hh_l0=np.array(
        [Marker(str(t / "marker"))], dtype=object))), None, {}, F, "holds pickled objects"),
    "npz_strings": (lambda t: write_npz(t / "m.npz", torch_sd(bias_hh_l0=np.array(["a"] * 8))),
                    None, {}, F, "expected numbers"),
    "npz_member_not_npy": (lambda t: write_zip(t / "m.npz", {
        "weight_ih_l0.npy": b"garbage", "weight_hh_l0.npy": b"garbage"}), None, {}, F,
        "is not a readable .npy array"),
    "npz_member_declares_huge_array": (lambda t: write_zip(t / "m.npz", {
        "weight_ih_l0.npy": forged_npy((10**5, 10**5)),
        "weight_hh_l0.npy": forged_npy((8, 2))}), None, {}, F, "expected at most 4.0 GiB"),
    "npz_member_truncated": (lambda t: write_zip(t / "m.npz", {
        "weight_ih_l0.npy": forged_npy((8, 3)), "weight_hh_l0.npy": forged_npy((800, 200))}),
        None, {}, F, "holds 64 bytes"),
    "npz_is_npy": (lambda t: raw_file(t / "m.npz", _npy_bytes(arr(3))),
                   None, {}, F, "holds one array"),
    "npz_contradicting_bias": (lambda t: write_npz(t / "m.npz", torch_sd(bias_hh_l0=arr(12))),
                               None, {}, S, "bias_hh_l0 has shape (12,)"),
    "npz_contradicting_rows": (lambda t: write_npz(t / "m.npz", torch_sd(
        weight_ih_l0=arr(12, 3))), None, {}, S, "weight_ih_l0 has 12 rows"),
    "npz_layer_gap": (lambda t: write_npz(t / "m.npz", {
        **torch_sd(), **{k.replace("l0", "l2"): v for k, v in torch_sd(inputs=2).items()}}),
        None, {}, F, "without gaps"),
    "npz_kind_contradicts_shapes": (lambda t: write_npz(t / "m.npz", torch_sd()), None,
                                    {"kind": "GRU"}, S, "shape is that of an LSTM"),
    "npz_bad_keys_override": (lambda t: write_npz(t / "m.npz", torch_sd()), None,
                              {"keys": "{bad"}, I, "keys must be a JSON object"),
    "npz_unknown_module": (lambda t: write_npz(t / "m.npz", torch_sd()), "enc", {}, I,
                           "matches none of the recurrent modules"),
    "safetensors_garbage": (lambda t: (t / "m.safetensors").write_bytes(os.urandom(100))
                            and t / "m.safetensors", None, {}, F, "not a readable .safetensors"),
    "safetensors_header_huge": (lambda t: raw_file(t / "m.safetensors", struct.pack(
        "<Q", 2**60) + b"{}"), None, {}, F, "header too large"),
    "safetensors_header_not_json": (lambda t: safetensors_raw(t / "m.safetensors",
                                                              b"{not json}"), None, {}, F,
                                    "not a readable .safetensors"),
    "safetensors_shape_contradicts_data": (lambda t: safetensors_raw(
        t / "m.safetensors", json.dumps({"weight_ih_l0": {
            "dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 8]}}).encode(),
        bytes(8)), None, {}, F, "not a readable .safetensors"),
    "safetensors_contradicting_shapes": (lambda t: _safetensors(t / "m.safetensors", torch_sd(
        weight_hh_l0=arr(8, 5))), None, {}, S, "weight_hh_l0 has shape (8, 5)"),
    # paths
    "missing_file": (lambda t: t / "nope.onnx", None, {}, F, "does not exist"),
    "directory_as_model": (lambda t: (t / "d.h5").mkdir() or t / "d.h5", None, {}, F,
                           "is not a file"),
    "unknown_suffix": (lambda t: raw_file(t / "m.tflite", b"x"), None,
                       {}, F, "cannot tell the format"),
}

NEEDS = {"pt_": "torch", "safetensors_": "safetensors", "onnx_": "onnx"}


def _torch_save(path: Path, what: str) -> Path:
    torch = require("torch", "torch writes the forged .pt files")
    tensors = {k: torch.from_numpy(v) for k, v in torch_sd().items()}
    torch.save([torch.zeros(3)] if what == "list" else {"model": tensors}, path)
    return path


def _safetensors(path: Path, sd) -> Path:
    require("safetensors", "safetensors writes the forged files")
    from safetensors.numpy import save_file

    save_file(sd, str(path))
    return path


def _npy_bytes(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


def _needs(case: str) -> None:
    for prefix, module in NEEDS.items():
        if case.startswith(prefix):
            require(module, f"{module} is needed to write or read this forged file")
    if case.startswith(("h5", "config", "units", "activation", "return", "weight", "external",
                        "soft", "huge", "wo_", "override", "unknown_layer", "keras")):
        require("h5py", "h5py reads Keras files")


@pytest.mark.parametrize("case", sorted(FILE_CASES))
def test_hostile_file_raises_specific_error(case, tmp_path, capsys):
    _needs(case)
    build, layer, overrides, error, fragment = FILE_CASES[case]
    path = build(tmp_path)
    with pytest.raises(error) as raised:
        rnnparity.load(path, layer=layer, **overrides)
    assert isinstance(raised.value, RnnParityError)
    assert fragment.lower() in str(raised.value).lower()
    assert "\n" not in str(raised.value)

    argv = ["inspect", path] + (["--layer", layer] if layer else [])
    argv += [f"--override={k}={json.dumps(v)}" for k, v in overrides.items()]
    code, err = run_cli(capsys, *argv)
    assert_one_line(code, err, fragment)
    assert code in (ExitCode.UNSUPPORTED, ExitCode.BAD_INPUT)


@pytest.mark.parametrize("how", ["plain_pickle", "torch_save"])
def test_pickle_that_builds_objects_never_runs(how, tmp_path, capsys):
    torch = require("torch", "torch.load(weights_only=True) is what refuses the pickle")
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    payload = {"weight_ih_l0": Marker(str(marker))}
    if how == "plain_pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    with pytest.raises(FormatError, match="refused"):
        rnnparity.load(path)
    code, err = run_cli(capsys, "inspect", path)
    assert_one_line(code, err, "refused", ExitCode.BAD_INPUT)
    assert "\x1b" not in err
    assert not marker.exists()


def test_npz_object_array_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"
    path = write_npz(tmp_path / "m.npz", torch_sd(bias_hh_l0=np.array(
        [Marker(str(marker))], dtype=object)))
    with pytest.raises(FormatError):
        rnnparity.load(path)
    assert not marker.exists()


def test_keras_archive_is_never_extracted(tmp_path, capsys):
    """Members named ../x or /abs are only read in memory: nothing appears on disk."""
    require("h5py", "h5py reads the weights inside .keras")
    outside = tmp_path / "outside"
    outside.mkdir()
    path = write_keras(tmp_path / "m.keras", extra=[("../outside/pwned.txt", b"x"),
                              (str(outside / "abs.txt"), b"y")])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    model = rnnparity.load(path)
    assert model(arr(2, 5, 3)).shape == (2, 5, 2)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert not list(outside.iterdir())


def test_zip_bomb_fails_fast_with_bounded_memory(tmp_path):
    """model.weights.h5 inflating 1000x is refused from its declared size, unread."""
    require("h5py", "h5py reads the weights inside .keras")
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", json.dumps(GRU_CONFIG))
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            block = bytes(1 << 20)
            for _ in range(64):
                member.write(block)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="decompression bomb"):
            rnnparity.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


def test_huge_declared_dataset_allocates_nothing(tmp_path):
    path = write_h5(tmp_path / "m.h5", mutate=replace_bias(shape=(10**5, 10**5), dtype="f4",
                                                           chunks=(1, 1024)))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="declares shape"):
            rnnparity.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


# --------------------------------------------------------------------- hostile inputs


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(path, input features, time-major) for a Keras, a PyTorch and an ONNX model."""
    root = tmp_path_factory.mktemp("models")
    found = {"keras": (rnnparity.example_path("cudnn_lstm_1x2.h5"), 1, False),
             "torch": (write_npz(root / "t.npz", torch_sd()), 3, False)}
    try:
        require("onnx", "onnx reads the ONNX model")
    except pytest.skip.Exception:
        return found  # the ONNX cases then skip on their own
    found["onnx"] = (write_onnx(root / "o.onnx"), 3, True)
    return found


def good(features: int) -> np.ndarray:
    return RNG.normal(size=(2, 4, features)).astype(np.float32)


def with_value(features: int, value: float) -> np.ndarray:
    x = good(features)
    x[1, 2, 0] = value
    return x


# id -> (make(features) -> input, error class, fragment)
INPUT_CASES = {
    "wrong_feature_count": (lambda f: good(f + 1), S, "expected"),
    "rank_4": (lambda f: good(f)[None], S, "has shape (1, 2, 4,"),
    "rank_0": (lambda f: np.float32(1.0), S, "has shape ()"),
    "zero_steps": (lambda f: np.zeros((2, 0, f), np.float32), S, "at least one"),
    "zero_batch": (lambda f: np.zeros((0, 4, f), np.float32), S, "at least one"),
    "zero_features": (lambda f: np.zeros((2, 4, 0), np.float32), S, "input_size"),
    "nan": (lambda f: with_value(f, np.nan), I, "non-finite value at index"),
    "inf": (lambda f: with_value(f, -np.inf), I, "non-finite value at index"),
    "overflows_float32": (lambda f: np.full((2, 4, f), 1e300), I, "too large for float32"),
    "complex": (lambda f: good(f).astype(np.complex64), I, "dtype complex64"),
    "strings": (lambda f: np.full((2, 4, f), "a"), I, "dtype <U1"),
    "datetimes": (lambda f: np.zeros((2, 4, f), "datetime64[s]"), I, "datetime64"),
    "structured": (lambda f: np.zeros((2, 4, f), dtype=[("a", "f4")]), I, "expected a real"),
    "objects": (lambda f: np.array([object()] * 8 * f).reshape(2, 4, f), I, "dtype object"),
    "ragged_lists": (lambda f: [[[1.0] * f] * 4, [[1.0] * f] * 3], I,
                     "cannot be read as an array"),
}
CLI_INPUTS = {"wrong_feature_count", "rank_4", "zero_steps", "zero_batch", "nan", "inf",
              "complex", "strings", "structured"}


def _layout(x, time_major):
    if time_major and isinstance(x, np.ndarray) and x.ndim == 3:
        return np.swapaxes(x, 0, 1)
    return x


@pytest.mark.parametrize("framework", ["keras", "torch", "onnx"])
@pytest.mark.parametrize("case", sorted(INPUT_CASES))
def test_bad_input_raises_specific_error(framework, case, models, tmp_path, capsys):
    if framework not in models:
        pytest.skip("onnx is not installed")
    path, features, time_major = models[framework]
    make, error, fragment = INPUT_CASES[case]
    x = _layout(make(features), time_major)
    model = rnnparity.load(path)
    with pytest.raises(error) as raised:
        model(x)
    assert fragment.lower() in str(raised.value).lower()
    if case in CLI_INPUTS:
        np.save(tmp_path / "x.npy", x)
        code, err = run_cli(capsys, "run", path, "--input", tmp_path / "x.npy")
        assert_one_line(code, err, fragment, ExitCode.BAD_INPUT)


def test_nonfinite_passes_when_allowed(models, tmp_path, capsys):
    path, features, _ = models["keras"]
    x = with_value(features, np.nan)
    y = rnnparity.load(path)(x, check_finite=False)
    assert np.isnan(y[1, 2:]).all() and np.isfinite(y[0]).all()
    np.save(tmp_path / "x.npy", x)
    code, err = run_cli(capsys, "run", path, "--input", tmp_path / "x.npy",
                        "--allow-nonfinite")
    assert code == ExitCode.OK, err


def test_stream_refuses_bad_input(models):
    path, features, _ = models["torch"]
    stream = rnnparity.load(path).stream(batch_size=2)
    with pytest.raises(ShapeError, match="batch_size=2"):
        stream.chunk(good(features)[:1])
    with pytest.raises(InputError, match="non-finite"):
        stream.step(with_value(features, np.inf)[:, 2])
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        rnnparity.load(path).stream(batch_size=0)


# -------------------------------------------------------------------- CLI arguments


def _cli_files(root: Path, models) -> dict[str, Path]:
    files = {}
    for name, value in {"x1": good(1), "x3": good(3), "len_long": np.array([9, 2]),
                        "len_negative": np.array([-1, 2]), "len_batch": np.array([2, 2, 2]),
                        "len_float": np.array([2.0, 2.0]), "len_ok": np.array([3, 4])}.items():
        files[name] = root / f"{name}.npy"
        np.save(files[name], value)
    files["forged_npy"] = root / "forged.npy"
    files["forged_npy"].write_bytes(forged_npy((10**5, 10**5, 3)))
    files["dir_npy"] = root / "dir.npy"
    files["dir_npy"].mkdir(exist_ok=True)
    files["text"] = root / "x.txt"
    files["text"].write_text("1 2 3")
    return files


# id -> (argv with {keras}/{torch}/{x1}... placeholders, exit code, fragment)
CLI_CASES = {
    "chunk_zero": ("run {keras} --input {x1} --chunk 0", 5, "--chunk must be >= 1, got 0"),
    "chunk_negative": ("run {keras} --input {x1} --chunk -3", 5, "--chunk must be >= 1"),
    "chunk_not_a_number": ("run {keras} --input {x1} --chunk abc", 2, "invalid int value"),
    "lengths_longer_than_seq_len": ("run {torch} --input {x3} --lengths {len_long}", 5,
                                    "must lie in [1, seq_len=4]"),
    "lengths_negative": ("run {torch} --input {x3} --lengths {len_negative}", 5,
                         "must lie in"),
    "lengths_wrong_batch": ("run {torch} --input {x3} --lengths {len_batch}", 5,
                            "expected (batch,) = (2,)"),
    "lengths_float": ("run {torch} --input {x3} --lengths {len_float}", 5,
                      "1-D integer array"),
    "lengths_on_keras": ("run {keras} --input {x1} --lengths {len_ok}", 5,
                         "no layer of this model takes them"),
    "lengths_with_chunk": ("run {torch} --input {x3} --lengths {len_ok} --chunk 2", 5,
                           "cannot be combined"),
    "override_without_equals": ("run {keras} --input {x1} --override units", 2,
                                "expected KEY=VALUE"),
    "override_without_key": ("run {keras} --input {x1} --override =3", 2,
                             "expected KEY=VALUE"),
    "override_unknown_key": ("run {keras} --input {x1} --override colour=red", 5,
                             "unknown override(s) ['colour']"),
    "override_units_word": ("run {keras} --input {x1} --override units=abc", 5,
                            "units='abc'; expected a positive integer"),
    "override_units_float": ("run {keras} --input {x1} --override units=2.5", 5,
                             "units=2.5"),
    "override_units_zero": ("run {keras} --input {x1} --override units=0", 5, "units=0"),
    "override_units_nan": ("run {keras} --input {x1} --override units=NaN", 5, "units=nan"),
    "override_units_list": ("run {keras} --input {x1} --override units=[2]", 5,
                            "units=[2]"),
    "override_units_misfit": ("run {keras} --input {x1} --override units=1", 5,
                              "expected (input_size, 4 * units) = (1, 4)"),
    "override_boolean_word": ("run {keras} --input {x1} --override return_sequences=maybe",
                              5, "expected true or false"),
    "override_version_garbage": ("run {keras} --input {x1} --override keras_version=abc", 5,
                                 "is not a version"),
    "override_activation_unknown": ("run {keras} --input {x1} --override "
                                    "recurrent_activation=foo", 3, "'foo'"),
    "override_torch_keys_not_a_map": ("run {torch} --input {x3} --override keys=[1]", 5,
                                      "keys must map"),
    "unknown_layer": ("run {keras} --input {x1} --layer nope", 5, "no layer named 'nope'"),
    "unknown_module": ("run {torch} --input {x3} --layer nope", 5, "matches none"),
    "layer_and_node_disagree": ("run {torch} --input {x3} --layer a --node b", 5,
                                "give one"),
    "input_missing": ("run {keras} --input {root}/nope.npy", 5, "does not exist"),
    "input_directory": ("run {keras} --input {dir_npy}", 5, "is not a file"),
    "input_not_numpy": ("run {keras} --input {text}", 5, "must be a .npy or .npz"),
    "input_forged_header": ("run {keras} --input {forged_npy}", 5, "expected at most"),
    "input_wrong_name": ("run {torch} --input {root}/named.npz", 5, "unknown: ['bogus', 'extra']"),
    "output_unwritable": ("run {keras} --input {x1} --output {root}/no/such/dir/y.npz", 5,
                          "cannot write --output"),
    "model_directory": ("run {root} --input {x1}", 5, "is not a file"),
    "no_input": ("run {keras}", 2, "run needs MODEL and --input"),
    "unknown_example": ("run --example nope", 2, "no example named"),
    "unknown_command_option": ("run {keras} --bogus", 2, "unrecognized arguments"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_cli_bad_arguments_one_line(case, models, tmp_path, capsys):
    files = _cli_files(tmp_path, models)
    np.savez(tmp_path / "named.npz", bogus=good(3), extra=good(3))
    names = {k: str(v) for k, v in files.items()}
    names.update(keras=str(models["keras"][0]), torch=str(models["torch"][0]),
                 root=str(tmp_path))
    template, expected_code, fragment = CLI_CASES[case]
    argv = [part.format(**names) for part in template.split()]
    code, err = run_cli(capsys, *argv)
    assert_one_line(code, err, fragment, expected_code)


# id -> (call(models) that misuses the API, error class, fragment)
API_MISUSE = {
    "path_none": (lambda m: rnnparity.load(None), I, "must be a str or Path"),
    "path_int": (lambda m: rnnparity.load(123), I, "must be a str or Path"),
    "layer_not_a_name": (lambda m: rnnparity.load(m["torch"][0], layer=5), I,
                         "layer must be a name"),
    "lengths_ragged": (lambda m: rnnparity.load(m["torch"][0])(good(3), lengths=[[1], [2, 3]]),
                       I, "lengths cannot be read as an array"),
    "lengths_scalar": (lambda m: rnnparity.load(m["torch"][0])(good(3), lengths=3), I,
                       "expected (batch,) integers"),
    "lengths_on_keras": (lambda m: rnnparity.load(m["keras"][0])(good(1), lengths=[4, 4]),
                         I, "no layer of this model takes them"),
    "initial_state_ragged": (lambda m: rnnparity.load(m["torch"][0])(good(3), h0=[[1], [2, 3]]),
                             I, "h0 cannot be read as an array"),
    "initial_state_wrong_shape": (lambda m: rnnparity.load(m["torch"][0])(
        good(3), h0=np.zeros((5, 2, 2))), S, "initial h has shape (5, 2, 2)"),
    "unknown_input_name": (lambda m: rnnparity.load(m["torch"][0])({"bogus": good(3)}), I,
                           "unknown: ['bogus']"),
    "from_keras_not_keras": (lambda m: rnnparity.from_keras(object()), I,
                             "expected a live Keras layer or model"),
    "stream_batch_zero": (lambda m: rnnparity.load(m["torch"][0]).stream(batch_size=0), I,
                          "batch_size must be a positive integer"),
    "stream_chunk_zero": (lambda m: rnnparity.load(m["torch"][0]).stream(2).feed(
        good(3), chunk_size=0), I, "chunk size must be a positive integer"),
    "stream_unknown_layer_state": (lambda m: rnnparity.load(m["torch"][0]).stream(2).set_state(
        "nope", np.zeros((1, 2, 2))), I, "no layer named 'nope'"),
}


@pytest.mark.parametrize("case", sorted(API_MISUSE))
def test_api_misuse_raises_specific_error(case, models):
    call, error, fragment = API_MISUSE[case]
    with pytest.raises(error) as raised:
        call(models)
    assert isinstance(raised.value, RnnParityError)
    assert fragment.lower() in str(raised.value).lower()


def test_unexpected_exception_is_one_line_without_traceback(models, tmp_path, capsys,
                                                            monkeypatch):
    """A bug (a raw exception from a layer) still gives one line and exit code 70."""
    from rnnparity.cli import run as run_command

    def broken(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(run_command, "read_arrays", broken)
    code, err = run_cli(capsys, "run", models["keras"][0], "--input", tmp_path / "x.npy")
    assert_one_line(code, err, "internal error: KeyError", ExitCode.INTERNAL)
