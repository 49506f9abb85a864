"""Status lights: a heartbeat and pulse stretchers for a board's LEDs."""

import math
from fractions import Fraction

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StatusLights", "Lights", "light_timing"]

#: The timers' tick rate, in Hz, at the least: the tick period is the largest power of two of
#: clock cycles up to 1/TICK_HZ seconds, so more than 1/(2 TICK_HZ) (one cycle when the clock is
#: slower than TICK_HZ).
TICK_HZ = 200
#: The heartbeat's half period and a stretched pulse, in seconds.
BLINK_HALF = Fraction(1, 2)
STRETCH = Fraction(1, 20)


class StatusLights(data.StructLayout):
    """What a board shows on its LEDs.

    Members
    -------
    alive : unsigned(1)
        Blinks at about 1 Hz while the clock runs and reset is released.
    ok : unsigned(1)
        Lit for about 50 ms after each good frame.
    error : unsigned(1)
        Lit for about 50 ms after each rejected frame.
    busy : unsigned(1)
        The accelerator is not idle (one cycle late).
    """
    def __init__(self):
        super().__init__({"alive": 1, "ok": 1, "error": 1, "busy": 1})


def light_timing(clk_freq):
    """The timers of :class:`Lights` at ``clk_freq`` Hz: ``(tick_bits, half, stretch)``.

    Rounding: ``half`` is the nearest whole number of ticks (half up), ``stretch`` rounds up.

    A tick comes every ``2 ** tick_bits`` cycles; ``alive`` toggles every ``half`` ticks and a
    pulse lights ``ok`` or ``error`` for ``stretch`` ticks (less the part of a tick already
    gone when it came).
    """
    if isinstance(clk_freq, bool) or not isinstance(clk_freq, (int, float)) or \
            not clk_freq > 0:
        raise TypeError(f"clk_freq must be a positive number of Hz, not {clk_freq!r}")
    tick_bits = max(0, int(clk_freq // TICK_HZ).bit_length() - 1)
    ticks_per_second = Fraction(clk_freq) / (1 << tick_bits)       # exact, unlike floats
    half = max(1, math.floor(BLINK_HALF * ticks_per_second + Fraction(1, 2)))
    stretch = max(1, math.ceil(STRETCH * ticks_per_second))
    return tick_bits, half, stretch


class Lights(wiring.Component):
    """A heartbeat, two pulse stretchers and a registered busy light.

    The timers count ticks of a free-running prescaler, not clock cycles, so that each is a
    few bits wide: a 20-bit down-counter per light was the longest path of an iCE40 build.

    Parameters
    ----------
    clk_freq : int or float
        Frequency of the ``sync`` clock in Hz (see :func:`light_timing`).

    Members
    -------
    ok : In(1)
        A pulse: a good frame.
    error : In(1)
        A pulse: a rejected frame.
    busy : In(1)
        The accelerator is not idle.
    lights : Out(StatusLights)
        To the LEDs. No light depends on the inputs in the same cycle.
    """
    ok: In(1)
    error: In(1)
    busy: In(1)
    lights: Out(StatusLights())

    def __init__(self, *, clk_freq):
        try:
            self._timing = light_timing(clk_freq)
        except TypeError:
            self._MustUse__silence = True
            raise
        self._clk_freq = clk_freq
        super().__init__()

    @property
    def clk_freq(self):
        return self._clk_freq

    def elaborate(self, platform):
        m = Module()
        tick_bits, half, stretch = self._timing

        # A tick in the last cycle of each prescaler period, registered, and a copy for each
        # timer: a board's LEDs can sit at opposite corners of the die (the ULX3S's ok and
        # error lights: the tick's decode between them was its critical path, 9.5 ns of
        # routing), and a copy per timer lets the placer put each next to its own.
        ticks = {name: Signal(name=f"tick_{name}", attrs={"keep": 1})
                 for name in ("alive", "ok", "error")}
        if tick_bits:
            prescaler = Signal(tick_bits)
            m.d.sync += prescaler.eq(prescaler + 1)
            for tick in ticks.values():
                m.d.sync += tick.eq(prescaler == 2**tick_bits - 2)
        else:
            for tick in ticks.values():
                m.d.comb += tick.eq(1)

        alive = Signal()
        alive_count = Signal(range(half))
        with m.If(ticks["alive"]):
            with m.If(alive_count == half - 1):
                m.d.sync += [alive_count.eq(0), alive.eq(~alive)]
            with m.Else():
                m.d.sync += alive_count.eq(alive_count + 1)

        lit = {}
        for name in ("ok", "error"):
            left = Signal(range(stretch + 1), name=f"{name}_left")
            with m.If(getattr(self, name)):
                m.d.sync += left.eq(stretch)
            with m.Elif(ticks[name] & (left != 0)):
                m.d.sync += left.eq(left - 1)
            lit[name] = left != 0

        busy = Signal()
        m.d.sync += busy.eq(self.busy)
        m.d.comb += [
            self.lights.alive.eq(alive),
            self.lights.ok.eq(lit["ok"]),
            self.lights.error.eq(lit["error"]),
            self.lights.busy.eq(busy),
        ]
        return m
