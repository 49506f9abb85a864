"""The PPU's golden model against the TFLite / gemmlowp definitions it claims to implement."""

import numpy as np
import pytest

from sim.golden.ppu import (CLAMP, INT32_MAX, INT32_MIN, NONE, RELU, activation_bounds,
                            quantize_multiplier, requantize, rounding_divide_by_pot, srdhm)


# Slow references written straight from the definitions, in unbounded Python ints.

def srdhm_reference(a, b):
    if a == b == INT32_MIN:
        return INT32_MAX
    ab = a * b
    nudge = 2**30 if ab >= 0 else 1 - 2**30
    total = ab + nudge
    quotient = abs(total) // 2**31                      # division truncating toward zero
    return quotient if total >= 0 else -quotient


def rdbp_reference(x, exponent):
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


EDGES = sorted({INT32_MIN, INT32_MIN + 1, INT32_MIN + 2, -2**30 - 1, -2**30, -2**30 + 1,
                -65536, -3, -2, -1, 0, 1, 2, 3, 65536, 2**30 - 1, 2**30, 2**30 + 1,
                INT32_MAX - 1, INT32_MAX})


def random_int32(rng, count):
    """Uniform int32 values mixed with values of random magnitude, so small ones show up too."""
    uniform = rng.integers(INT32_MIN, INT32_MAX + 1, size=count)
    bits = rng.integers(0, 32, size=count)
    scaled = rng.integers(-(2**31), 2**31, size=count) >> (31 - bits)
    return np.where(rng.random(count) < 0.5, uniform, scaled)


# Hand-derived spot checks of the definitions.

@pytest.mark.parametrize("a, b, expected", [
    (INT32_MIN, INT32_MIN, INT32_MAX),      # the one saturating case
    (INT32_MIN, INT32_MAX, -INT32_MAX),     # -2**31 + 0.5 + tiny, truncated toward zero
    (INT32_MAX, INT32_MAX, INT32_MAX - 1),  # (2**31 - 1)**2 / 2**31 = 2**31 - 2 + 2**-31
    (1, 2**30, 1),                          # 0.5 rounds up
    (-1, 2**30, 0),                         # -0.5 rounds up too (nudge is 1 - 2**30)
    (3, 2**30, 2),                          # 1.5
    (-3, 2**30, -1),                        # -1.5
    (-5, 2**30, -2),                        # -2.5
    (2**30, 2**30, 2**29),                  # exactly 2**29: the nudge's 0.5 truncates away
    (0, INT32_MIN, 0),
])
def test_srdhm_spot_checks(a, b, expected):
    assert int(srdhm(a, b)) == expected
    assert srdhm_reference(a, b) == expected


@pytest.mark.parametrize("x, exponent, expected", [
    (5, 1, 3),                  # 2.5 -> 3
    (-5, 1, -3),                # -2.5 -> -3: halves away from zero
    (3, 1, 2),                  # 1.5 -> 2
    (-3, 1, -2),                # -1.5 -> -2
    (-6, 2, -2),                # -1.5 -> -2
    (-5, 2, -1),                # -1.25 -> -1
    (-7, 2, -2),                # -1.75 -> -2
    (6, 2, 2),                  # 1.5 -> 2
    (-4, 1, -2),
    (-1, 1, -1),                # -0.5 -> -1
    (-1, 2, 0),                 # -0.25 -> 0
    (1234567, 0, 1234567),
    (INT32_MIN, 0, INT32_MIN),
    (INT32_MIN, 31, -1),
    (INT32_MAX, 31, 1),         # 0.99999... -> 1
    (2**30, 31, 1),             # 0.5 -> 1
    (-(2**30), 31, -1),         # -0.5 -> -1
    (2**30 - 1, 31, 0),
])
def test_rounding_divide_by_pot_spot_checks(x, exponent, expected):
    assert int(rounding_divide_by_pot(x, exponent)) == expected
    assert rdbp_reference(x, exponent) == expected


def test_srdhm_matches_reference():
    rng = np.random.default_rng(0)
    a = np.concatenate([random_int32(rng, 6000), np.repeat(EDGES, len(EDGES))])
    b = np.concatenate([random_int32(rng, 6000), np.tile(EDGES, len(EDGES))])
    # M0-like multipliers, the common case.
    b[:2000] = rng.integers(2**30, 2**31, size=2000)
    result = srdhm(a, b)
    assert result.dtype == np.int32
    expected = [srdhm_reference(int(x), int(y)) for x, y in zip(a, b)]
    assert result.tolist() == expected


def test_rounding_divide_by_pot_matches_reference():
    rng = np.random.default_rng(1)
    x = np.concatenate([random_int32(rng, 6000), np.repeat(EDGES, 32)])
    exponent = np.concatenate([rng.integers(0, 32, size=6000), np.tile(np.arange(32), len(EDGES))])
    # Exact halves and their neighbours for every exponent, both signs.
    halves = [(sign * ((k << e) + (1 << e >> 1)) + delta, e)
              for e in range(1, 32) for k in (0, 1, 5) for sign in (1, -1) for delta in (-1, 0, 1)
              if INT32_MIN <= sign * ((k << e) + (1 << e >> 1)) + delta <= INT32_MAX]
    x = np.concatenate([x, [h for h, _ in halves]])
    exponent = np.concatenate([exponent, [e for _, e in halves]])
    result = rounding_divide_by_pot(x, exponent)
    assert result.dtype == np.int32
    assert result.tolist() == [rdbp_reference(int(v), int(e)) for v, e in zip(x, exponent)]


def requantize_reference(acc, bias, multiplier, shift, zero_point, activation, clamp_max):
    x = (acc + bias + 2**31) % 2**32 - 2**31
    q = rdbp_reference(srdhm_reference(x, multiplier), shift) + zero_point
    lo, hi = {NONE: (-128, 127), RELU: (max(zero_point, -128), 127),
              CLAMP: (zero_point, clamp_max)}[activation]
    return min(max(q, lo), hi)


@pytest.mark.parametrize("activation", [NONE, RELU, CLAMP])
def test_requantize_matches_reference(activation):
    rng = np.random.default_rng(10 + activation)
    for _ in range(40):
        acc = random_int32(rng, 50)
        bias = random_int32(rng, 50)
        multiplier = int(rng.choice([rng.integers(2**30, 2**31), random_int32(rng, 1)[0]]))
        shift = int(rng.integers(0, 32))
        zero_point, clamp_max = (int(v) for v in rng.integers(-128, 128, size=2))
        result = requantize(acc, bias, multiplier, shift, zero_point, activation, clamp_max)
        assert result.dtype == np.int8
        expected = [requantize_reference(int(a), int(b), multiplier, shift, zero_point,
                                         activation, clamp_max) for a, b in zip(acc, bias)]
        assert result.tolist() == expected


def test_requantize_spot_checks():
    half = 2**30                                        # M0 for a real multiplier of 0.5
    # (100 + 28) * 0.5 / 2 = 32, plus the zero point.
    assert requantize([100], [28], half, 1, -3).tolist() == [29]
    # The bias add wraps: INT32_MAX + 1 is INT32_MIN, which scales to a negative number.
    assert requantize([INT32_MAX], [1], half, 30, 0).tolist() == [-1]
    # Saturation at both ends, and no int32 wrap in z + zero_point: z = INT32_MAX here.
    assert requantize([INT32_MIN, INT32_MAX, 0], [INT32_MIN, 0, 0], INT32_MIN, 0, 127).tolist() \
        == [127, -128, 127]
    assert requantize([-1000, 1000], 0, INT32_MAX, 0, -128).tolist() == [-128, 127]
    # RELU clamps below at the zero point; CLAMP also above at clamp_max.
    assert requantize([-1000, 40, 1000], 0, half, 0, 10, RELU).tolist() == [10, 30, 127]
    assert requantize([-1000, 40, 1000], 0, half, 0, 10, CLAMP, 50).tolist() == [10, 30, 50]
    # clamp_max below the zero point: the upper bound wins everywhere.
    assert requantize([-1000, 0, 1000], 0, half, 0, 10, CLAMP, -20).tolist() == [-20] * 3
    assert activation_bounds(CLAMP, 10, -20) == (10, -20)


def test_requantize_broadcasts_bias_per_column():
    acc = np.arange(12).reshape(4, 3) * 1000
    bias = np.array([0, 10_000, -10_000])
    result = requantize(acc, bias, 2**30, 4, 0)
    assert result.shape == (4, 3)
    assert np.array_equal(result[:, 1], requantize(acc[:, 1] + 10_000, 0, 2**30, 4, 0))


@pytest.mark.parametrize("real", [0.5, 0.75, 0.1, 1e-3, 0.999999, 2.0**-31, 2.0**-32,
                                  0.0078125, 3.3e-7, 1 - 2.0**-33])
def test_quantize_multiplier(real):
    m0, shift = quantize_multiplier(real)
    assert isinstance(m0, int) and isinstance(shift, int)
    assert 2**30 <= m0 < 2**31 and 0 <= shift <= 31
    # The representation is as close as a 31-bit mantissa allows.
    assert abs(m0 * 2.0**(-31 - shift) - real) <= 2.0**(-31 - shift)


def test_quantize_multiplier_exact_values():
    assert quantize_multiplier(0.5) == (2**30, 0)
    assert quantize_multiplier(0.25) == (2**30, 1)
    assert quantize_multiplier(0.75) == (3 * 2**29, 0)
    assert quantize_multiplier(2.0**-32) == (2**30, 31)
    # Rounds up to 1.0: the closest multiplier the PPU can hold.
    assert quantize_multiplier(1 - 2.0**-40) == (INT32_MAX, 0)


def test_quantize_multiplier_scales_like_the_real_number():
    rng = np.random.default_rng(5)
    for real in rng.uniform(1e-6, 1, size=200):
        m0, shift = quantize_multiplier(real)
        acc = random_int32(rng, 100)
        acc = acc[np.abs(acc * real) < 100]              # outputs well inside int8
        result = requantize(acc, 0, m0, shift, 0).astype(np.int64)
        # Two roundings: the high multiply's (half an LSB of y) and the shift's.
        assert np.all(np.abs(result - acc * real) <= 0.5 + 0.5 / 2**shift + 1e-6)


@pytest.mark.parametrize("real, error, message", [
    (1.0, ValueError, "must be below 1, not 1.0: the PPU shifts right only"),
    (1.5, ValueError, "must be below 1"),
    (0.0, ValueError, "must be positive and finite, not 0.0"),
    (-0.5, ValueError, "must be positive"),
    (float("nan"), ValueError, "must be positive and finite"),
    (float("inf"), ValueError, "must be positive and finite"),
    (2.0**-33, ValueError, r"below 2\*\*-32"),
    ("0.5", TypeError, "must be a real number, not '0.5'"),
    (True, TypeError, "must be a real number"),
])
def test_quantize_multiplier_rejects(real, error, message):
    with pytest.raises(error, match=message):
        quantize_multiplier(real)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"acc": [2**31]}, ValueError, "acc must lie between"),
    ({"bias": [INT32_MIN - 1]}, ValueError, "bias must lie between"),
    ({"acc": [0.5]}, TypeError, "acc must hold integers, not float64"),
    ({"acc": [2**70]}, ValueError, "acc must lie between"),
    ({"multiplier": 2**31}, ValueError, "multiplier must lie between"),
    ({"shift": 32}, ValueError, "shift must lie between 0 and 31"),
    ({"shift": -1}, ValueError, "shift must lie between 0 and 31"),
    ({"zero_point": 128}, ValueError, "zero_point must lie between -128 and 127"),
    ({"clamp_max": -129}, ValueError, "clamp_max must lie between -128 and 127"),
    ({"activation": 3}, ValueError, "activation must be NONE"),
    ({"activation": "relu"}, ValueError, "activation must be NONE"),
])
def test_requantize_rejects(kwargs, error, message):
    args = {"acc": [0], "bias": [0], "multiplier": 2**30, "shift": 0, "zero_point": 0,
            "activation": NONE, "clamp_max": 127} | kwargs
    with pytest.raises(error, match=message):
        requantize(**args)
