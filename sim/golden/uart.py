"""Bit-level model of a UART line (8 data bits, no parity, 1 or more stop bits).

A line is a sequence of levels, one per clock cycle of the receiving side (1 is high, the idle
level). :func:`encode` plays a sender: its bit period ``cycles_per_bit`` is a float, which is how
a sender with a different clock (or baud rate) looks from the receiver's clock, and each bit edge
falls on the cycle nearest its exact time. :func:`decode` plays an ideal receiver that samples
each bit once, at its centre. The fault helpers (:func:`invert`, :func:`flip_bit`,
:func:`glitch`) corrupt a line to test receivers.

Rounding is half up everywhere: ``floor(x + 1/2)``.
"""

import math
import numbers
from typing import NamedTuple

import numpy as np

__all__ = ["DATA_BITS", "Frame", "encode", "frames", "decode", "invert", "flip_bit", "glitch"]

DATA_BITS = 8


def _round(x):
    """``x`` rounded half up to an int."""
    return math.floor(x + 0.5)


def _check_period(cycles_per_bit):
    if not isinstance(cycles_per_bit, numbers.Real) or isinstance(cycles_per_bit, bool):
        raise TypeError(f"cycles_per_bit must be a number, not {cycles_per_bit!r}")
    if not (math.isfinite(cycles_per_bit) and cycles_per_bit >= 1):
        raise ValueError(f"cycles_per_bit must be at least 1, not {cycles_per_bit!r}")
    return float(cycles_per_bit)


def _levels(levels):
    array = np.asarray(levels)
    if array.ndim != 1 or (array.size and not np.isin(array, (0, 1)).all()):
        raise ValueError("levels must be a 1-D sequence of 0s and 1s")
    return array.astype(np.uint8)


def encode(data, cycles_per_bit, *, idle=0, stop_bits=1, return_edges=False):
    """The line levels of a sender sending ``data``, one per cycle.

    Frames follow each other on one time line. Within a burst of frames sent with no gap, bit
    ``k`` of the burst (counted across its frames) starts ``round(k * cycles_per_bit)`` cycles
    after the burst's first start bit, so the average bit period is exact. A gap of ``idle``
    cycles before a frame starts a new burst ``idle`` cycles after the end of the previous frame
    (a sender that went idle restarts its bit timer on one of its clock edges); a gap before the
    first frame is line idle time at the start.

    Parameters
    ----------
    data : sequence of int
        Bytes, 0..255.
    cycles_per_bit : float
        The sender's bit period, in cycles of the receiver's clock; 1 or more.
    idle : int or sequence of int
        High cycles before each frame: one number for all frames, or one per frame.
    stop_bits : int
        Stop bits per frame, 1 or more.
    return_edges : bool
        Also return the edges of every bit.

    Returns
    -------
    levels : numpy.ndarray of uint8
        The line, from cycle 0 to the end of the last stop bit.
    edges : numpy.ndarray of int, shape (len(data), 10 + stop_bits - 1)
        Only with ``return_edges``: ``edges[f, k]`` is the first cycle of bit ``k`` of frame ``f``
        (0 the start bit, 1 to 8 the data bits LSB first, then the stop bits), and
        ``edges[f, -1]`` the cycle after the frame.
    """
    period = _check_period(cycles_per_bit)
    data = list(data)
    for byte in data:
        if not isinstance(byte, numbers.Integral) or not 0 <= byte <= 255:
            raise ValueError(f"data must hold bytes (0..255), not {byte!r}")
    if not isinstance(stop_bits, numbers.Integral) or stop_bits < 1:
        raise ValueError(f"stop_bits must be an integer of at least 1, not {stop_bits!r}")
    gaps = [idle] * len(data) if isinstance(idle, numbers.Integral) else list(idle)
    if len(gaps) != len(data):
        raise ValueError(f"idle must be one number or one per byte ({len(data)}), "
                         f"not {len(gaps)} numbers")
    for gap in gaps:
        if not isinstance(gap, numbers.Integral) or gap < 0:
            raise ValueError(f"idle gaps must be non-negative integers, not {gap!r}")

    bits = 1 + DATA_BITS + stop_bits
    edges = np.zeros((len(data), bits + 1), dtype=np.int64)
    burst_start, burst_bits, end = 0, 0, 0
    for index, (byte, gap) in enumerate(zip(data, gaps)):
        if gap or index == 0:
            burst_start, burst_bits = end + int(gap), 0
        edges[index] = [burst_start + _round((burst_bits + k) * period) for k in range(bits + 1)]
        burst_bits += bits
        end = int(edges[index, -1])

    levels = np.ones(end, dtype=np.uint8)
    for byte, frame in zip(data, edges):
        values = [0] + [(byte >> i) & 1 for i in range(DATA_BITS)] + [1] * stop_bits
        for value, begin, stop in zip(values, frame[:-1], frame[1:]):
            levels[begin:stop] = value
    return (levels, edges) if return_edges else levels


class Frame(NamedTuple):
    """A frame found by :func:`frames`."""
    start: int              #: Cycle of the falling edge of its start bit.
    byte: int               #: The data bits, sampled at their centres.
    framing_error: bool     #: The stop bit was low at its centre.


def frames(levels, cycles_per_bit):
    """The frames an ideal receiver finds on a line; see :func:`decode`."""
    period = _check_period(cycles_per_bit)
    levels = _levels(levels)
    found = []
    # Before cycle 0 the line counts as high. `high` says whether it has been seen high since
    # the last framing error, so that a break gives one frame, not a stream of them.
    position, high = 0, True
    while position < len(levels):
        if not high:
            rest = np.flatnonzero(levels[position:])
            if not rest.size:
                break
            position += int(rest[0])
            high = True
        lows = np.flatnonzero(levels[position:] == 0)
        if not lows.size:
            break
        start = position + int(lows[0])
        samples = [start + math.floor((k + 0.5) * period) for k in range(1 + DATA_BITS + 1)]
        if samples[-1] >= len(levels):
            break                                       # an unfinished frame
        values = [int(levels[s]) for s in samples]
        if values[0]:                                   # a glitch, not a start bit
            position = samples[0]
            continue
        byte = sum(bit << i for i, bit in enumerate(values[1:1 + DATA_BITS]))
        framing_error = not values[-1]
        found.append(Frame(start, byte, framing_error))
        position = samples[-1] + 1
        high = not framing_error
    return found


def decode(levels, cycles_per_bit):
    """The bytes an ideal receiver reads from a line, as a list of ``(byte, framing_error)``.

    A start bit is the first low level after the line was high (the line counts as high before
    cycle 0). Bit ``k`` of the frame (0 the start bit, 9 the first stop bit) is sampled once, at
    ``floor((k + 1/2) * cycles_per_bit)`` cycles after the edge: the centre of the bit, rounded
    half up. A start bit that is high at its centre was a glitch and is skipped. A low stop bit
    is a framing error; the byte is reported, and the next start bit is looked for only after
    the line has been high again. A frame cut short by the end of ``levels`` is left out.
    """
    return [(frame.byte, frame.framing_error) for frame in frames(levels, cycles_per_bit)]


def invert(levels, begin, end=None):
    """A copy of ``levels`` with the cycles ``begin`` up to ``end`` inverted (one if no end)."""
    levels = _levels(levels).copy()
    end = begin + 1 if end is None else end
    if not 0 <= begin <= end <= len(levels):
        raise ValueError(f"cycles {begin}..{end} are not within the {len(levels)} of the line")
    levels[begin:end] ^= 1
    return levels


def flip_bit(levels, edges, frame, bit):
    """A copy of ``levels`` with bit ``bit`` of frame ``frame`` inverted, ``edges`` being what
    :func:`encode` returned with ``return_edges``: e.g. bit 9 makes a framing error."""
    return invert(levels, int(edges[frame, bit]), int(edges[frame, bit + 1]))


def glitch(levels, at, length=1, level=0):
    """A copy of ``levels`` forced to ``level`` for ``length`` cycles from cycle ``at``."""
    levels = _levels(levels).copy()
    if not 0 <= at <= at + length <= len(levels):
        raise ValueError(f"cycles {at}..{at + length} are not within the {len(levels)} of the "
                         f"line")
    levels[at:at + length] = level
    return levels
