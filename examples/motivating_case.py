"""Why a hand-written CuDNNLSTM replica drifts, and rnnparity does not.

The case from the issue: a Keras ``CuDNNLSTM`` with 1 input and 2 units, replicated in
NumPy the obvious way::

    gates = x @ kernel + h @ recurrent_kernel + bias[:4u] + bias[4u:]    # i, f, c, o

The replica matches Keras at the first time step and then drifts. cuDNN reads each stored
gate block without transposing it, so the recurrent blocks act transposed (invisible at
step 0, where h = 0) and, with more than one input, the input blocks are scrambled too.

This script uses the example shipped with rnnparity (``cudnn_lstm_1x2``): a tf_keras model
saved as .h5, an input, and the output Keras computed for it (Keras converts the CuDNN
weights when it loads the file; see scripts/make_examples.py). It needs numpy and h5py
only; with ``--live`` it recomputes the Keras output with tf_keras instead.

Usage::

    python examples/motivating_case.py [--live]
"""

from __future__ import annotations

import argparse

import h5py
import numpy as np

import rnnparity

NAME = "cudnn_lstm_1x2"


def read_cudnn_weights(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The layer's stored kernel, recurrent_kernel and bias, exactly as in the file."""
    with h5py.File(path, "r") as f:
        group = f["model_weights"]["cudnn_lstm"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        kernel, recurrent, bias = (np.asarray(group[n]) for n in names)
    return kernel, recurrent, bias, "cudnn_lstm"


def naive_replica(x: np.ndarray, kernel, recurrent, bias) -> np.ndarray:
    """The replica from the issue: Keras' LSTM equations on the raw CuDNN arrays."""
    units = recurrent.shape[0]
    h = np.zeros((x.shape[0], units), np.float32)
    c = np.zeros_like(h)
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    outputs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias[: 4 * units] + bias[4 * units:]
        i, f, g, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def keras_live(path, x: np.ndarray) -> np.ndarray:
    """Keras' own answer: load the file into the CPU LSTM that Keras converts CuDNN into."""
    import tf_keras

    units = read_cudnn_weights(path)[1].shape[0]
    inputs = tf_keras.Input(shape=(None, x.shape[-1]), name="input")
    layer = tf_keras.layers.LSTM(units, recurrent_activation="sigmoid",
                                 return_sequences=True, name="cudnn_lstm")
    model = tf_keras.Model(inputs, layer(inputs))
    model.load_weights(path)
    return model(x).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CuDNNLSTM 1 input / 2 units: naive "
                                     "replica vs rnnparity, per time step")
    parser.add_argument("--live", action="store_true",
                        help="recompute Keras' output with tf_keras")
    args = parser.parse_args(argv)

    path = rnnparity.example_path(f"{NAME}.h5")
    x = np.load(rnnparity.example_path(f"{NAME}.input.npy"))
    kernel, recurrent, bias, layer = read_cudnn_weights(path)
    if args.live:
        keras = keras_live(path, x)
        source = "tf_keras, computed now"
    else:
        with np.load(rnnparity.example_path(f"{NAME}.expected.npz")) as expected:
            keras = expected[layer]
        source = f"{NAME}.expected.npz"

    naive = naive_replica(x, kernel, recurrent, bias)
    ours = rnnparity.load(path)(x)

    print(f"CuDNNLSTM input_size={kernel.shape[0]} units={recurrent.shape[0]}; "
          f"Keras reference: {source}")
    print(f"{'step':>4}  {'keras[0, t, 0]':>15}  {'naive replica error':>20}  "
          f"{'rnnparity error':>16}")
    for t in range(x.shape[1]):
        naive_err = np.abs(naive[:, t] - keras[:, t]).max()
        ours_err = np.abs(ours[:, t] - keras[:, t]).max()
        print(f"{t:>4}  {keras[0, t, 0]:>15.7f}  {naive_err:>20.3e}  {ours_err:>16.3e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
