"""Quantized neural-network layers on the accelerator: dense, and conv2d through im2col.

A layer follows TFLite's integer scheme. Real values are ``scale * (q - zero_point)``; weights
are symmetric int8 (zero point 0), inputs and outputs int8 with a zero point, biases int32 in
units of ``input_scale * weight_scale``. The accelerator computes, for each output element::

    acc = sum_k x[k] * w[k][n]                    (MXU, exact; accumulators wrap mod 2^32)
    out = requantize(acc + bias'[n])              (PPU: docs/architecture.md)

where ``bias' = bias - input_zero_point * sum_k w[k][n]`` folds the input zero point into the
bias, so the MXU multiplies the raw int8 inputs. The output is bit-exact with
:meth:`Dense.reference`.
"""

from dataclasses import dataclass

import numpy as np

from sim.golden.ppu import quantize_multiplier, requantize

from .compiler import CompiledMatmul, check_operands, emit_tiles, plan_matmul
from .isa import Geometry, Instruction, Opcode, ppu_config_bytes

__all__ = ["NONE", "RELU", "CLAMP", "Requantization", "Dense", "Conv2D", "CompiledLayer",
           "compile_dense", "im2col"]

NONE, RELU, CLAMP = 0, 1, 2


@dataclass(frozen=True)
class Requantization:
    """How a layer's int32 accumulators become int8 outputs (the PPU's configuration)."""
    multiplier: int
    shift: int
    zero_point: int = 0
    activation: int = NONE
    clamp_max: int = 127

    @classmethod
    def from_scale(cls, scale, zero_point=0, activation=NONE, clamp_max=127):
        """From the real scale ``input_scale * weight_scale / output_scale`` (0 < scale < 1)."""
        multiplier, shift = quantize_multiplier(scale)
        return cls(multiplier, shift, zero_point, activation, clamp_max)

    def apply(self, acc, bias):
        return requantize(acc, bias, self.multiplier, self.shift, self.zero_point,
                          self.activation, self.clamp_max)


@dataclass(frozen=True)
class Dense:
    """A fully connected layer: ``y = requant(x @ weights + bias)``.

    Attributes
    ----------
    weights : numpy.ndarray of int8, K x N
    bias : numpy.ndarray of int32, N
    input_zero_point : int
        The zero point of the int8 inputs.
    requant : Requantization
    """
    weights: np.ndarray
    bias: np.ndarray
    input_zero_point: int
    requant: Requantization

    def __post_init__(self):
        w, bias = self.weights, self.bias
        if not isinstance(w, np.ndarray) or w.dtype != np.int8 or w.ndim != 2 or 0 in w.shape:
            raise ValueError(f"Dense weights must be a non-empty 2-D int8 array, not "
                             f"{getattr(w, 'dtype', type(w).__name__)} "
                             f"{getattr(w, 'shape', '')}")
        if not isinstance(bias, np.ndarray) or bias.dtype != np.int32 or \
                bias.shape != (w.shape[1],):
            raise ValueError(f"Dense bias must be an int32 array of shape ({w.shape[1]},), not "
                             f"{getattr(bias, 'dtype', type(bias).__name__)} "
                             f"{getattr(bias, 'shape', '')}")
        if not -128 <= self.input_zero_point <= 127:
            raise ValueError(f"input zero point must be in -128..127, not "
                             f"{self.input_zero_point}")
        folded = self.bias.astype(np.int64) - \
            self.input_zero_point * w.astype(np.int64).sum(axis=0)
        if folded.min() < -2**31 or folded.max() >= 2**31:
            raise ValueError("the bias with the input zero point folded in overflows int32")

    @property
    def folded_bias(self):
        """``bias - input_zero_point * column sums of weights``, as int32."""
        return (self.bias.astype(np.int64) -
                self.input_zero_point * self.weights.astype(np.int64).sum(axis=0)
                ).astype(np.int32)

    def reference(self, x):
        """The golden int8 output for int8 input rows ``x`` (M x K), in numpy."""
        check_operands(x, self.weights)
        if x.dtype != np.int8:
            raise ValueError(f"layer inputs must be int8, not {x.dtype}")
        acc = (x.astype(np.int64) @ self.weights.astype(np.int64))
        acc = ((acc + 2**31) % 2**32 - 2**31).astype(np.int64)
        return self.requant.apply(acc, self.folded_bias)


class CompiledLayer(CompiledMatmul):
    """A program computing a layer; :meth:`collect` returns its int8 outputs."""

    # ACTIVATE writes a row of C int8 into a unified-buffer row, which READ_UB sends whole.
    element = np.dtype(np.int8)

    def row_length(self):
        return self.geometry.rows

def compile_dense(x, layer, geometry, *, sync=True):
    """Compile ``layer`` applied to int8 input rows ``x`` (M x K) into a program.

    Each N tile's accumulators go through the PPU (SET_PPU with that tile's biases, then
    ACTIVATE) into spare unified-buffer rows, and READ_UB brings the int8 outputs home.
    """
    if not isinstance(layer, Dense):
        raise TypeError(f"layer must be a Dense, not {layer!r}")
    check_operands(x, layer.weights)
    if x.dtype != np.int8:
        raise ValueError(f"layer inputs must be int8, not {x.dtype}")
    g = geometry
    if g.cols > g.rows:
        raise ValueError(f"layers need cols <= rows so that a row of C outputs fits in a "
                         f"unified-buffer row, but the geometry is {g.rows} x {g.cols}")
    t = plan_matmul(x.shape[0], x.shape[1], layer.weights.shape[1], g, output_rows=True)
    program = CompiledLayer([], t, g)
    out_row = t.kc * t.mb
    bias = np.zeros(t.nt * g.cols, dtype=np.int64)
    bias[:t.n] = layer.folded_bias
    r = layer.requant

    def activate(acc_row, j, m0, m1):
        emit = program.instructions.append
        emit(Instruction(Opcode.SET_PPU, payload=ppu_config_bytes(
            bias[j * g.cols:(j + 1) * g.cols], r.multiplier, r.shift, r.zero_point,
            r.activation, r.clamp_max)))
        emit(Instruction(Opcode.ACTIVATE, a=acc_row, b=out_row, n=m1 - m0))
        emit(Instruction(Opcode.READ_UB, a=out_row, n=m1 - m0))
        program.outputs.append((m0, m1, j * g.cols, min((j + 1) * g.cols, t.n)))

    emit_tiles(program, x, layer.weights, t, activate)
    if sync:
        program.instructions.append(Instruction.sync())
    return program


def im2col(x, kernel, stride=1, padding=0, pad_value=0):
    """Patches of an NHWC int8 tensor as rows: (N * Ho * Wo) x (kh * kw * C).

    Padding uses ``pad_value`` (a layer pads with its input zero point, i.e. real zero).
    """
    if not isinstance(x, np.ndarray) or x.ndim != 4:
        raise ValueError(f"conv2d input must be a 4-D NHWC array, not "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    kh, kw = kernel
    if stride < 1 or padding < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, not {stride} and {padding}")
    n, h, w, c = x.shape
    padded = np.full((n, h + 2 * padding, w + 2 * padding, c), pad_value, dtype=x.dtype)
    padded[:, padding:padding + h, padding:padding + w] = x
    ho = (h + 2 * padding - kh) // stride + 1
    wo = (w + 2 * padding - kw) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"a {kh} x {kw} kernel does not fit a {h} x {w} input with padding "
                         f"{padding}")
    patches = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            patches[:, :, :, i, j] = padded[:, i:i + stride * ho:stride,
                                            j:j + stride * wo:stride]
    return patches.reshape(n * ho * wo, kh * kw * c), (n, ho, wo)


@dataclass(frozen=True)
class Conv2D:
    """A 2-D convolution on NHWC int8 tensors, run as a dense layer over im2col patches.

    Attributes
    ----------
    weights : numpy.ndarray of int8, kh x kw x C_in x C_out
    bias : numpy.ndarray of int32, C_out
    input_zero_point : int
    requant : Requantization
    stride, padding : int
    """
    weights: np.ndarray
    bias: np.ndarray
    input_zero_point: int
    requant: Requantization
    stride: int = 1
    padding: int = 0

    def __post_init__(self):
        if not isinstance(self.weights, np.ndarray) or self.weights.ndim != 4:
            raise ValueError(f"Conv2D weights must be a 4-D (kh, kw, C_in, C_out) array, not "
                             f"{getattr(self.weights, 'shape', type(self.weights).__name__)}")

    @property
    def dense(self):
        kh, kw, cin, cout = self.weights.shape
        return Dense(self.weights.reshape(kh * kw * cin, cout), self.bias,
                     self.input_zero_point, self.requant)

    def patches(self, x):
        if x.shape[-1] != self.weights.shape[2]:
            raise ValueError(f"input has {x.shape[-1]} channels, the kernel expects "
                             f"{self.weights.shape[2]}")
        return im2col(x, self.weights.shape[:2], self.stride, self.padding,
                      self.input_zero_point)

    def reference(self, x):
        rows, shape = self.patches(x)
        return self.dense.reference(rows).reshape(*shape, -1)

    def compile(self, x, geometry, *, sync=True):
        """A program for this convolution of ``x``, and the output's NHWC shape."""
        rows, shape = self.patches(x)
        return compile_dense(rows, self.dense, geometry, sync=sync), (*shape,
                                                                      self.weights.shape[3])
