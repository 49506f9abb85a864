import numpy as np
import pytest

from sim.golden.mxu import matmul
from sim.mxu_driver import mxu_matmul


@pytest.mark.parametrize("m, k, n, rows, cols", [
    (1, 1, 1, 1, 1),
    (5, 7, 3, 2, 2),     # neither K nor N a multiple of the array
    (9, 16, 8, 4, 4),
    (3, 4, 11, 4, 3),
])
def test_tiled_product(m, k, n, rows, cols):
    rng = np.random.default_rng(m * k * n)
    a = rng.integers(-128, 128, size=(m, k), dtype=np.int8)
    b = rng.integers(0, 256, size=(k, n), dtype=np.uint8)
    c, cycles = mxu_matmul(a, b, rows=rows, cols=cols)
    assert c.dtype == np.int32
    assert np.array_equal(c, matmul(a, b, a_signed=True, b_signed=False))
    assert cycles > 0


@pytest.mark.parametrize("a, b, error, message", [
    ([[1]], np.ones((1, 1), np.int8), ValueError, "A must be a numpy array, not list"),
    (np.ones((1, 1), np.int16), np.ones((1, 1), np.int8), ValueError,
     "A must have dtype int8 or uint8"),
    (np.ones(3, np.int8), np.ones((3, 1), np.int8), ValueError, "A must be a 2-D matrix"),
    (np.ones((2, 3), np.int8), np.ones((2, 3), np.int8), ValueError, "columns must equal"),
    (np.ones((0, 3), np.int8), np.ones((3, 3), np.int8), ValueError, "must not be empty"),
])
def test_bad_operands(a, b, error, message):
    with pytest.raises(error, match=message):
        mxu_matmul(a, b)
