"""The UART line model: frames where the definition puts them, and a decoder that reads them."""

import math
import random

import numpy as np
import pytest

from sim.golden.uart import decode, encode, flip_bit, frames, glitch, invert

RATIOS = [1, 2.5, 4, 5.3, 16, 65 / 3, 1e7 / 96_000]


def reference_line(data, period, starts):
    """A frame-by-frame line straight from the definition: frame ``f`` starts at ``starts[f]``
    (a float), and its bit ``k`` at ``round(starts[f] + k * period)``."""
    levels = []
    for byte, start in zip(data, starts):
        bits = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        for k, bit in enumerate(bits):
            begin = math.floor(start + k * period + 0.5)
            end = math.floor(start + (k + 1) * period + 0.5)
            levels += [1] * (begin - len(levels)) + [bit] * (end - begin)
    return levels


@pytest.mark.parametrize("period", RATIOS)
def test_back_to_back_edges(period):
    """One burst: bit k of the burst starts at round(k * period), whatever the frame."""
    rng = random.Random(period)
    data = [rng.randrange(256) for _ in range(50)]
    levels, edges = encode(data, period, return_edges=True)
    assert levels.dtype == np.uint8 and len(levels) == math.floor(500 * period + 0.5)
    assert levels.tolist() == reference_line(data, period, [10 * f * period for f in range(50)])
    bits = np.arange(500).reshape(50, 10)
    assert (edges[:, :-1] == np.floor(bits * period + 0.5)).all()
    assert (edges[:-1, -1] == edges[1:, 0]).all()
    lengths = set(np.diff(edges, axis=1).flat)
    assert lengths <= {math.floor(period), math.ceil(period)}


@pytest.mark.parametrize("period", RATIOS)
def test_gaps_restart_the_timeline(period):
    """After a gap, a new burst starts ``idle`` cycles after the previous frame's last cycle."""
    rng = random.Random(period)
    data = [rng.randrange(256) for _ in range(30)]
    gaps = [rng.choice([0, 0, 1, 7, 100]) for _ in data]
    levels, edges = encode(data, period, idle=gaps, return_edges=True)
    starts, end, burst = [], 0, 0.0
    for index, gap in enumerate(gaps):
        if gap or not index:
            burst, frame = end + gap, 0
        starts.append(burst + 10 * frame * period)
        frame += 1
        end = math.floor(starts[-1] + 10 * period + 0.5)
    assert levels.tolist() == reference_line(data, period, starts)
    assert edges[:, 0].tolist() == [math.floor(s + 0.5) for s in starts]
    assert levels[:gaps[0]].all() and len(levels) == end


@pytest.mark.parametrize("period", RATIOS[2:])
def test_round_trip(period):
    rng = random.Random(period)
    data = [rng.randrange(256) for _ in range(100)]
    gaps = [rng.choice([0, 0, 1, 2, 3 * round(period)]) for _ in data]
    levels = encode(data, period, idle=gaps)
    assert decode(levels, period) == [(byte, False) for byte in data]
    found = frames(levels, period)
    assert [frame.start for frame in found] == encode(data, period, idle=gaps,
                                                      return_edges=True)[1][:, 0].tolist()


@pytest.mark.parametrize("period, error", [
    (period, error) for period in [4, 16, 65 / 3] for error in [-0.04, -0.02, 0.02, 0.04]
    if period > 4 or abs(error) <= 0.02             # at 4, a sample step is a quarter bit
])
def test_sender_off_by_a_few_percent(period, error):
    """An ideal receiver reads a sender whose baud rate is off by a few percent, even back to
    back."""
    rng = random.Random(f"{period} {error}")
    data = [rng.randrange(256) for _ in range(50)]
    levels = encode(data, period / (1 + error), idle=[rng.choice([0, 0, 5]) for _ in data])
    assert decode(levels, period) == [(byte, False) for byte in data]


def test_far_off_sender_fails():
    """The decoder is no oracle: at 10 % off, the last bits are sampled in the wrong place."""
    data = [0x0f, 0xf0, 0x55]
    assert decode(encode(data, 16 / 1.1, idle=5), 16) != [(byte, False) for byte in data]


@pytest.mark.parametrize("period", [4, 16, 65 / 3])
def test_flipped_bits(period):
    rng = random.Random(period)
    data = [rng.randrange(256) for _ in range(20)]
    levels, edges = encode(data, period, idle=3, return_edges=True)
    expected = [(byte, False) for byte in data]
    for frame in range(0, 20, 2):
        bit = rng.randrange(1, 9)
        levels = flip_bit(levels, edges, frame, bit)
        expected[frame] = (data[frame] ^ (1 << (bit - 1)), False)
    levels = flip_bit(levels, edges, 5, 9)                  # a low stop bit
    expected[5] = (data[5], True)
    assert decode(levels, period) == expected


def test_framing_error_waits_for_high():
    """After a low stop bit, a frame that follows at once is not seen at its start: the decoder
    waits for the line to be high first, as a receiver that just saw a break must."""
    levels, edges = encode([0x00, 0x00, 0xff], 16, return_edges=True)
    levels = flip_bit(levels, edges, 0, 9)
    # Frame 0 has a framing error; frame 1 (all zeros, back to back) shows no high level until
    # its stop bit: it is lost, and frame 2 is the next one found.
    assert frames(levels, 16) == [(0, 0x00, True), (edges[2, 0], 0xff, False)]


def test_break():
    period = 10
    levels = np.concatenate([encode([0x41], period, idle=2), np.zeros(300, np.uint8),
                             np.ones(3, np.uint8), encode([0x42], period)])
    assert decode(levels, period) == [(0x41, False), (0x00, True), (0x42, False)]
    # A line low from cycle 0 on is a break too (the line counts as high before it).
    assert decode(np.zeros(500, np.uint8), period) == [(0x00, True)]
    assert decode(np.ones(500, np.uint8), period) == []


def test_glitches():
    period = 16
    line = np.ones(400, np.uint8)
    assert decode(glitch(line, 50), period) == []
    assert decode(glitch(line, 50, 7), period) == []        # ends before the centre
    assert decode(glitch(line, 50, 9), period) == [(0xff, False)]
    # A glitch right after a glitch is a start bit found again.
    assert [f.start for f in frames(glitch(glitch(line, 50), 60, 9), period)] == [60]


def test_unfinished_frame_is_left_out():
    levels = encode([0x12, 0x34], 8)
    assert decode(levels[:-4], 8) == [(0x12, False)]        # 0x34's stop centre is cut off
    assert decode(levels[:-3], 8) == [(0x12, False), (0x34, False)]


def test_two_stop_bits():
    levels, edges = encode([0x12, 0x34], 8, stop_bits=2, return_edges=True)
    assert edges.shape == (2, 12) and len(levels) == 22 * 8
    assert decode(levels, 8) == [(0x12, False), (0x34, False)]


def test_fault_helpers():
    line = np.array([1, 1, 0, 0, 1], np.uint8)
    assert invert(line, 1).tolist() == [1, 0, 0, 0, 1]
    assert invert(line, 1, 4).tolist() == [1, 0, 1, 1, 1]
    assert glitch(line, 3, 2, level=1).tolist() == [1, 1, 0, 1, 1]
    assert line.tolist() == [1, 1, 0, 0, 1]                 # copies, not in place
    with pytest.raises(ValueError, match="not within"):
        invert(line, 4, 6)
    with pytest.raises(ValueError, match="not within"):
        glitch(line, -1)


@pytest.mark.parametrize("call, error, message", [
    (lambda: encode([256], 8), ValueError, r"bytes \(0..255\), not 256"),
    (lambda: encode([1.5], 8), ValueError, r"not 1.5"),
    (lambda: encode([1], "8"), TypeError, r"cycles_per_bit must be a number, not '8'"),
    (lambda: encode([1], 0.5), ValueError, r"at least 1, not 0.5"),
    (lambda: encode([1], float("inf")), ValueError, r"at least 1, not inf"),
    (lambda: encode([1, 2], 8, idle=[1]), ValueError, r"one per byte \(2\), not 1"),
    (lambda: encode([1], 8, idle=[-1]), ValueError, r"non-negative integers, not -1"),
    (lambda: encode([1], 8, stop_bits=0), ValueError, r"stop_bits .* not 0"),
    (lambda: decode([0, 2], 8), ValueError, r"0s and 1s"),
    (lambda: decode([[1]], 8), ValueError, r"1-D"),
])
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()
