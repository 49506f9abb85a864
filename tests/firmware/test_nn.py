import numpy as np
import pytest

from firmware.isa import Geometry
from firmware.nn import CLAMP, NONE, RELU, Conv2D, Dense, Requantization, compile_dense, im2col
from sim.golden.accelerator import AcceleratorModel


def random_dense(rng, k, n, activation):
    weights = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-5000, 5000, n).astype(np.int32)
    requant = Requantization.from_scale(rng.uniform(0.0005, 0.01),
                                        zero_point=int(rng.integers(-20, 20)),
                                        activation=activation, clamp_max=100)
    return Dense(weights, bias, int(rng.integers(-128, 128)), requant)


@pytest.mark.parametrize("m, k, n, geometry", [
    (1, 1, 1, Geometry(1, 1, 2, 1, 1)),
    (10, 20, 7, Geometry(4, 4, 32, 8, 16)),
    (33, 64, 10, Geometry(8, 8, 64, 32, 32)),
    (7, 13, 9, Geometry(4, 2, 16, 8, 8)),       # C < R: outputs use part of a UB row
])
@pytest.mark.parametrize("activation", [NONE, RELU, CLAMP])
def test_dense_matches_reference(m, k, n, geometry, activation):
    rng = np.random.default_rng(m + k + n + activation)
    layer = random_dense(rng, k, n, activation)
    x = rng.integers(-128, 128, (m, k), dtype=np.int8)
    program = compile_dense(x, layer, geometry)
    y = program.collect(AcceleratorModel(geometry).run(program.encode()))
    expected = layer.reference(x)
    assert np.array_equal(y, expected)
    # The outputs really saturate and clamp, rather than all being one value.
    assert len(np.unique(expected)) > 1 or m * n == 1


def test_reference_folds_input_zero_point():
    # Against the real-valued definition: (x - zx) @ w + bias, requantized.
    rng = np.random.default_rng(5)
    layer = random_dense(rng, 12, 6, NONE)
    x = rng.integers(-128, 128, (9, 12), dtype=np.int8)
    acc = (x.astype(np.int64) - layer.input_zero_point) @ layer.weights.astype(np.int64)
    expected = layer.requant.apply(acc, layer.bias)
    assert np.array_equal(layer.reference(x), expected)


def test_im2col_matches_direct_convolution():
    rng = np.random.default_rng(6)
    x = rng.integers(-128, 128, (2, 6, 5, 3), dtype=np.int8)
    w = rng.integers(-128, 128, (3, 2, 3, 4), dtype=np.int8)
    rows, (n, ho, wo) = im2col(x, (3, 2), stride=2, padding=1, pad_value=-7)
    got = (rows.astype(np.int64) @ w.reshape(-1, 4).astype(np.int64)).reshape(n, ho, wo, 4)
    padded = np.pad(x.astype(np.int64), ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-7)
    direct = np.zeros_like(got)
    for i in range(ho):
        for j in range(wo):
            patch = padded[:, 2 * i:2 * i + 3, 2 * j:2 * j + 2, :]
            direct[:, i, j] = np.einsum("nhwc,hwco->no", patch, w.astype(np.int64))
    assert np.array_equal(got, direct)


def test_conv2d_on_the_model():
    rng = np.random.default_rng(7)
    w = rng.integers(-128, 128, (3, 3, 2, 5), dtype=np.int8)
    layer = Conv2D(w, rng.integers(-100, 100, 5).astype(np.int32), 3,
                   Requantization.from_scale(0.002, 4, RELU), stride=1, padding=1)
    x = rng.integers(-128, 128, (1, 5, 6, 2), dtype=np.int8)
    geometry = Geometry(8, 8, 64, 32, 32)
    program, shape = layer.compile(x, geometry)
    y = program.collect(AcceleratorModel(geometry).run(program.encode())).reshape(shape)
    assert y.shape == (1, 5, 6, 5)
    assert np.array_equal(y, layer.reference(x))


@pytest.mark.parametrize("make, message", [
    (lambda: Dense(np.ones((2, 2), np.int16), np.zeros(2, np.int32), 0,
                   Requantization(2**30, 1)), "weights must be a non-empty 2-D int8 array"),
    (lambda: Dense(np.ones((2, 2), np.int8), np.zeros(3, np.int32), 0,
                   Requantization(2**30, 1)), r"bias must be an int32 array of shape \(2,\)"),
    (lambda: Dense(np.ones((2, 2), np.int8), np.zeros(2, np.int32), 300,
                   Requantization(2**30, 1)), "input zero point must be in -128..127"),
    (lambda: Requantization.from_scale(1.5), "1"),
    (lambda: im2col(np.ones((2, 2), np.int8), (1, 1)), "4-D NHWC"),
    (lambda: im2col(np.ones((1, 2, 2, 1), np.int8), (3, 3)), "does not fit"),
])
def test_bad_layers(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_dense_needs_cols_not_above_rows():
    layer = Dense(np.ones((2, 2), np.int8), np.zeros(2, np.int32), 0, Requantization(2**30, 1))
    with pytest.raises(ValueError, match="layers need cols <= rows"):
        compile_dense(np.ones((1, 2), np.int8), layer, Geometry(2, 4, 8, 8, 8))
    with pytest.raises(ValueError, match="layer inputs must be int8"):
        compile_dense(np.ones((1, 2), np.uint8), layer, Geometry())
