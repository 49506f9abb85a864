"""The digits demo: a small MLP, trained in seconds, quantized to int8, run on the accelerator.

1. Train a 64-32-10 MLP (ReLU) on scikit-learn's bundled 8 x 8 digits, deterministically.
2. Quantize it TFLite-style: symmetric per-tensor int8 weights, int32 biases, int8 activations
   with zero points, output scales calibrated on the training set (:func:`quantize_mlp`).
3. Run the test split through the accelerator, layer by layer (:func:`firmware.nn.compile_dense`),
   and through the int8 golden model; the logits must agree to the bit.
"""

import warnings
from dataclasses import dataclass

import numpy as np

from .nn import NONE, RELU, Dense, Requantization

__all__ = ["DigitsModel", "train_digits", "quantize_mlp", "run_layers"]

#: Inputs are pixel intensities 0..16 scaled to [0, 1], quantized with this scale and zero point.
INPUT_SCALE = 1 / 255
INPUT_ZERO_POINT = -128


@dataclass
class DigitsModel:
    """A trained MLP, its int8 version and the data it was tested on."""
    float_accuracy: float
    layers: list            # of firmware.nn.Dense, in order
    x_test: np.ndarray      # int8, N x 64
    y_test: np.ndarray      # labels, N

    def golden_logits(self, x=None):
        """The int8 logits of the quantized network, computed in numpy."""
        h = self.x_test if x is None else x
        for layer in self.layers:
            h = layer.reference(h)
        return h


def _quantize_input(x):
    return np.clip(np.round(x / INPUT_SCALE) + INPUT_ZERO_POINT, -128, 127).astype(np.int8)


def quantize_mlp(coefs, intercepts, x_calibration):
    """Quantize a ReLU MLP (hidden layers ReLU, last layer linear) to :class:`Dense` layers.

    Each layer's output scale is calibrated on ``x_calibration`` (float inputs in [0, 1]):
    hidden layers map [0, max] onto the int8 range with zero point -128, the last layer maps
    [-max|logit|, max|logit|] with zero point 0.
    """
    layers = []
    in_scale, in_zero_point = INPUT_SCALE, INPUT_ZERO_POINT
    h_float = x_calibration
    for index, (w, b) in enumerate(zip(coefs, intercepts)):
        last = index == len(coefs) - 1
        w_scale = np.abs(w).max() / 127
        w_q = np.clip(np.round(w / w_scale), -127, 127).astype(np.int8)
        b_q = np.round(b / (in_scale * w_scale)).astype(np.int32)
        h_float = h_float @ w + b
        if last:
            out_scale, out_zero_point, activation = np.abs(h_float).max() / 127, 0, NONE
        else:
            h_float = np.maximum(h_float, 0)
            out_scale, out_zero_point, activation = h_float.max() / 255, -128, RELU
        requant = Requantization.from_scale(in_scale * w_scale / out_scale, out_zero_point,
                                            activation)
        layers.append(Dense(w_q, b_q, in_zero_point, requant))
        in_scale, in_zero_point = out_scale, out_zero_point
    return layers


def train_digits(hidden=32, seed=0):
    """Train and quantize the demo's MLP; deterministic for a given ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = digits.data / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)
    clf = MLPClassifier(hidden_layer_sizes=(hidden,), random_state=seed, max_iter=200)
    with warnings.catch_warnings():
        # 200 Adam epochs reach ~97 %; sklearn would still say it has not fully converged.
        warnings.simplefilter("ignore")
        clf.fit(x_train, y_train)
    layers = quantize_mlp(clf.coefs_, clf.intercepts_, x_train)
    return DigitsModel(float(clf.score(x_test, y_test)), layers, _quantize_input(x_test),
                       y_test)


def run_layers(device, layers, x, *, batch=64, progress=None):
    """Run ``layers`` on ``device`` over the int8 rows ``x``, ``batch`` rows per program.

    Returns the int8 outputs and the statistics summed over every program: ``cycles`` (None
    on an untimed backend), ``mxu_busy_cycles``, ``macs``, ``programs``, ``wall_seconds``.
    ``progress(layer_index, rows_done)`` is called after each program.
    """
    from .nn import compile_dense

    totals = {"cycles": 0, "mxu_busy_cycles": 0, "macs": 0, "programs": 0, "wall_seconds": 0}
    h = x
    for index, layer in enumerate(layers):
        outputs = []
        for start in range(0, len(h), batch):
            program = compile_dense(h[start:start + batch], layer, device.geometry)
            outputs.append(program.collect(device.run(program.encode())))
            stats = device.last_stats
            totals["cycles"] = None if stats["cycles"] is None or totals["cycles"] is None \
                else totals["cycles"] + stats["cycles"]
            totals["mxu_busy_cycles"] += stats["mxu_busy_cycles"]
            totals["macs"] += program.tiling.macs
            totals["programs"] += 1
            totals["wall_seconds"] += stats["wall_seconds"]
            if progress:
                progress(index, min(start + batch, len(h)))
        h = np.concatenate(outputs)
    return h, totals
