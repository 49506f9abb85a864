"""Bit-exact model of the post-processing unit (:class:`rtl.ppu.PostProcessor`).

The arithmetic is TFLite's / gemmlowp's integer requantization::

    x = wrap32(acc + bias)
    y = SaturatingRoundingDoublingHighMul(x, multiplier)
    z = RoundingDivideByPOT(y, shift)
    q = clamp(z + zero_point, lo, hi)

Every function works element-wise on numpy integer arrays (or Python ints) and computes in int64,
where no intermediate can overflow: the largest product is ``(-2**31)**2 = 2**62``.

Two points go beyond what the C++ reference defines (there, signed overflow is undefined):
``acc + bias`` wraps modulo 2**32, and ``z + zero_point`` is exact (it cannot wrap) before it
is clamped, so an output saturates instead of wrapping.
"""

import math
import numbers

import numpy as np

__all__ = [
    "INT32_MIN", "INT32_MAX", "NONE", "RELU", "CLAMP",
    "srdhm", "rounding_divide_by_pot", "activation_bounds", "requantize", "quantize_multiplier",
]

INT32_MIN = -2**31
INT32_MAX = 2**31 - 1

#: Activation codes; the same values as the members of :class:`rtl.ppu.Activation`.
NONE, RELU, CLAMP = 0, 1, 2


def _int_array(name, value, minimum, maximum):
    """``value`` as an int64 array, after checking every element lies in ``minimum..maximum``."""
    array = np.asarray(value)
    if array.dtype == object:                           # Python ints beyond int64, or junk
        if not all(isinstance(v, numbers.Integral) for v in array.flat):
            raise TypeError(f"{name} must hold integers")
    elif not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not {array.dtype}")
    if array.size and (int(array.min()) < minimum or int(array.max()) > maximum):
        raise ValueError(f"{name} must lie between {minimum} and {maximum}")
    return array.astype(np.int64)


def srdhm(a, b):
    """``SaturatingRoundingDoublingHighMul(a, b)`` of int32 values, element-wise, as int32.

    The high 32 bits of ``2 * a * b``, rounded: ``(a * b + nudge) / 2**31`` truncated toward
    zero, with ``nudge = 2**30`` if ``a * b >= 0`` else ``1 - 2**30``. The one product that does
    not fit, ``INT32_MIN * INT32_MIN``, saturates to ``INT32_MAX``.
    """
    a = _int_array("a", a, INT32_MIN, INT32_MAX)
    b = _int_array("b", b, INT32_MIN, INT32_MAX)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b                                          # |ab| <= 2**62: fits int64
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    total = ab + nudge
    # Truncating division by 2**31, toward zero (``>>`` alone would floor).
    high = np.where(total >= 0, total >> 31, -((-total) >> 31))
    return np.where(overflow, INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x, exponent):
    """``RoundingDivideByPOT(x, exponent)`` of int32 values, element-wise, as int32.

    ``x / 2**exponent`` rounded to the nearest integer, halves away from zero, computed as the
    reference does: ``(x >> e) + (1 if (x & mask) > (mask >> 1) + (x < 0) else 0)`` with
    ``mask = 2**e - 1``. ``exponent`` lies in 0..31.
    """
    x = _int_array("x", x, INT32_MIN, INT32_MAX)
    exponent = _int_array("exponent", exponent, 0, 31)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return ((x >> exponent) + (remainder > threshold)).astype(np.int32)


def _activation_code(activation):
    code = getattr(activation, "value", activation)     # an rtl.ppu.Activation member, or int
    if not isinstance(code, numbers.Integral) or isinstance(code, bool) or \
            code not in (NONE, RELU, CLAMP):
        raise ValueError(f"activation must be NONE (0), RELU (1) or CLAMP (2), not "
                         f"{activation!r}")
    return int(code)


def activation_bounds(activation, zero_point, clamp_max):
    """The output range ``(lo, hi)`` of an activation mode.

    ``NONE`` gives the int8 range, ``RELU`` ``[max(zero_point, -128), 127]`` and ``CLAMP``
    ``[zero_point, clamp_max]``. Outputs are clamped as ``min(max(q, lo), hi)``, so when
    ``hi < lo`` the upper bound wins and every output is ``hi`` (as in TFLite).
    """
    code = _activation_code(activation)
    if code == RELU:
        return max(zero_point, -128), 127
    if code == CLAMP:
        return zero_point, clamp_max
    return -128, 127


def requantize(acc, bias, multiplier, shift, zero_point, activation=NONE, clamp_max=127):
    """Requantize int32 accumulators to int8 as the PPU does, element-wise.

    Parameters
    ----------
    acc : array of int
        Accumulators, int32 values; rows of the matrix along the last axis.
    bias : array of int
        int32 biases, broadcast against ``acc`` (one per column).
    multiplier : int
        ``M0``, any int32 (``quantize_multiplier`` gives one in ``[2**30, 2**31)``).
    shift : int
        Right shift, 0 to 31.
    zero_point : int
        Output zero point, -128 to 127.
    activation : int or rtl.ppu.Activation
        ``NONE`` (0), ``RELU`` (1) or ``CLAMP`` (2).
    clamp_max : int
        Upper bound in ``CLAMP`` mode, -128 to 127.

    Returns
    -------
    numpy.ndarray of int8
    """
    acc = _int_array("acc", acc, INT32_MIN, INT32_MAX)
    bias = _int_array("bias", bias, INT32_MIN, INT32_MAX)
    multiplier = int(_int_array("multiplier", multiplier, INT32_MIN, INT32_MAX))
    shift = int(_int_array("shift", shift, 0, 31))
    zero_point = int(_int_array("zero_point", zero_point, -128, 127))
    clamp_max = int(_int_array("clamp_max", clamp_max, -128, 127))
    lo, hi = activation_bounds(activation, zero_point, clamp_max)

    x = ((acc + bias - INT32_MIN) & 0xffff_ffff) + INT32_MIN    # wraps modulo 2**32
    y = srdhm(x, multiplier)
    z = rounding_divide_by_pot(y, shift).astype(np.int64)
    q = z + zero_point                                          # exact: no int32 wrap
    return np.minimum(np.maximum(q, lo), hi).astype(np.int8)


def quantize_multiplier(real):
    """Split a real multiplier ``0 < real < 1`` into ``(M0, shift)`` for the PPU.

    ``real ~= M0 * 2**-31 * 2**-shift`` with ``M0`` in ``[2**30, 2**31)`` and ``shift`` in
    0..31, found as TFLite's ``QuantizeMultiplier`` does: ``real = q * 2**e`` with ``q`` in
    ``[0.5, 1)``, ``M0 = round(q * 2**31)`` (halves away from zero), ``shift = -e``.

    Only multipliers below 1 are supported: the PPU shifts right only, which is all an int8
    layer needs when the output scale exceeds ``input_scale * weight_scale``, and it saves a
    left shifter and its saturation in front of the multiply. A ``real`` so close to 1 that
    ``M0`` rounds up to ``2**31`` gives ``(2**31 - 1, 0)``, the nearest multiplier the PPU can
    hold. A ``real`` below ``2**-32`` would need a shift beyond 31 (the 5-bit ``shift`` field)
    and is rejected; it would map every accumulator to ``zero_point`` anyway.

    Raises
    ------
    TypeError
        If ``real`` is not a real number.
    ValueError
        If ``real`` is not finite, not below 1, or below ``2**-32``.
    """
    if not isinstance(real, numbers.Real) or isinstance(real, bool):
        raise TypeError(f"real multiplier must be a real number, not {real!r}")
    real = float(real)
    if not math.isfinite(real) or real <= 0:
        raise ValueError(f"real multiplier must be positive and finite, not {real!r}")
    if real >= 1:
        raise ValueError(f"real multiplier must be below 1, not {real!r}: the PPU shifts right "
                         f"only, so multipliers of 1 or more are not supported")
    fraction, exponent = math.frexp(real)               # real = fraction * 2**exponent
    m0 = math.floor(fraction * 2**31 + 0.5)             # exact scaling; halves away from zero
    if m0 == 2**31:
        m0, exponent = 2**30, exponent + 1
    shift = -exponent
    if shift < 0:
        return INT32_MAX, 0
    if shift > 31:
        raise ValueError(f"real multiplier {real!r} is below 2**-32: it would need a right "
                         f"shift beyond 31")
    return m0, shift
