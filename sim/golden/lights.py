"""Cycle model of :class:`rtl.lights.Lights`: what the LEDs show, cycle by cycle."""

import numpy as np

from rtl.lights import light_timing

__all__ = ["lights"]


def lights(clk_freq, ok, error, busy):
    """The lights for input sequences ``ok``, ``error`` and ``busy`` (one value per cycle).

    Returns an ``(n, 4)`` array of ``alive, ok, error, busy`` as the outputs show them in each
    cycle, from reset. The timers count ticks that come every ``2 ** tick_bits`` cycles (at the
    end of cycles ``2 ** tick_bits - 1``, ``2 * 2 ** tick_bits - 1``, ...); a pulse reloads a
    stretcher, which counts down on ticks; ``busy`` shows one cycle late.
    """
    ok, error, busy = (np.asarray(x, dtype=bool) for x in (ok, error, busy))
    if not ok.shape == error.shape == busy.shape or ok.ndim != 1:
        raise ValueError("ok, error and busy must be sequences of the same length")
    tick_bits, half, stretch = light_timing(clk_freq)
    period = 1 << tick_bits
    out = np.zeros((len(ok), 4), dtype=np.uint8)
    alive = count = 0
    left = [0, 0]
    late_busy = 0
    for cycle in range(len(ok)):
        out[cycle] = alive, left[0] != 0, left[1] != 0, late_busy
        tick = cycle % period == period - 1
        if tick:
            count += 1
            if count == half:
                count, alive = 0, alive ^ 1
        for index, pulse in enumerate((ok[cycle], error[cycle])):
            if pulse:
                left[index] = stretch
            elif tick and left[index]:
                left[index] -= 1
        late_busy = int(busy[cycle])
    return out
