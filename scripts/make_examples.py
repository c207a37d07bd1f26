"""Rebuild the examples shipped in ``src/rnnparity/examples`` (needs tf_keras).

Each example is a tf_keras model made of one CuDNN layer with seeded random weights, saved
as a full legacy ``.h5`` model, plus an input (``<name>.input.npy``, (batch, seq_len,
features)) and the output TensorFlow computes for it (``<name>.expected.npz``, keyed by the
model's output name).

cuDNN kernels do not run on a CPU, so the expected output comes from Keras itself: the
saved file is loaded with ``load_weights`` into the equivalent CPU layer (``LSTM`` or
``GRU(reset_after=True)`` with sigmoid gates), which makes Keras apply its own CuDNN ->
LSTM/GRU weight conversion, and that model is run on the input.

Usage::

    python scripts/make_examples.py [--out DIR]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# name -> (layer kind, input features, units, seed)
EXAMPLES = {
    "cudnn_lstm_1x2": ("lstm", 1, 2, 12),
    "cudnn_lstm_3x5": ("lstm", 3, 5, 35),
    "cudnn_gru_3x4": ("gru", 3, 4, 34),
}
BATCH, SEQ_LEN = 2, 6
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "rnnparity" / "examples"


def cudnn_layers():
    """The tf_keras CuDNNLSTM and CuDNNGRU classes.

    ``tf.compat.v1.keras.layers`` holds them only when TensorFlow is bound to tf_keras
    (TF_USE_LEGACY_KERAS=1); otherwise they are reached through tf_keras' v1 API.
    """
    import tensorflow as tf

    layers = tf.compat.v1.keras.layers
    if not hasattr(layers, "CuDNNLSTM"):
        from tf_keras.api._v1.keras import layers
    return layers.CuDNNLSTM, layers.CuDNNGRU


def random_weights(layer, rng: np.random.Generator) -> list[np.ndarray]:
    """Nonzero random values for every weight of ``layer``, biases included."""
    return [rng.uniform(-0.8, 0.8, w.shape).astype(np.float32) for w in layer.get_weights()]


def build_cudnn(kind: str, features: int, units: int, name: str):
    import tf_keras

    lstm, gru = cudnn_layers()
    cls = lstm if kind == "lstm" else gru
    inputs = tf_keras.Input(shape=(None, features), name="input")
    outputs = cls(units, return_sequences=True, name=name)(inputs)
    return tf_keras.Model(inputs, outputs, name=f"{name}_model")


def build_equivalent(kind: str, features: int, units: int, name: str):
    """The CPU layer Keras converts CuDNN weights into when loading an .h5 file."""
    import tf_keras

    inputs = tf_keras.Input(shape=(None, features), name="input")
    if kind == "lstm":
        layer = tf_keras.layers.LSTM(units, recurrent_activation="sigmoid",
                                     return_sequences=True, name=name)
    else:
        layer = tf_keras.layers.GRU(units, recurrent_activation="sigmoid", reset_after=True,
                                    return_sequences=True, name=name)
    return tf_keras.Model(inputs, layer(inputs), name=f"{name}_model")


def make_example(name: str, out: Path) -> dict[str, float]:
    """Write ``name``'s model, input and expected output into ``out``; return stats."""
    kind, features, units, seed = EXAMPLES[name]
    rng = np.random.default_rng(seed)
    layer_name = f"cudnn_{kind}"

    model = build_cudnn(kind, features, units, layer_name)
    model.get_layer(layer_name).set_weights(random_weights(model.get_layer(layer_name), rng))
    model_path = out / f"{name}.h5"
    model.save(model_path, save_format="h5", include_optimizer=False)

    x = rng.normal(0.0, 1.0, (BATCH, SEQ_LEN, features)).astype(np.float32)
    np.save(out / f"{name}.input.npy", x)

    reference = build_equivalent(kind, features, units, layer_name)
    reference.load_weights(model_path)
    y = reference(x).numpy()
    np.savez(out / f"{name}.expected.npz", **{model.output_names[0]: y})
    return {"max_abs_output": float(np.abs(y).max()), "bytes": model_path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLES:
        stats = make_example(name, args.out)
        print(f"{name}: {stats['bytes']} bytes, max |y| {stats['max_abs_output']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
