"""A UART (8N1) for the board's host link: a transmitter and a receiver of byte streams.

Both units run in the ``sync`` domain and time bits with a fractional bit-period accumulator, so
any ratio of clock frequency to baud rate of 4 or more works, integer or not (48 MHz / 3 Mbaud =
16 cycles per bit, 65 MHz / 3 Mbaud = 21.67).

Bit timing
----------
The bit period is kept in fixed point with :data:`FRACTION_BITS` fraction bits::

    cycles_per_bit = round(clk_freq / baud * 2**FRACTION_BITS) / 2**FRACTION_BITS

so the average bit period is within ``2**-(FRACTION_BITS + 1)`` cycles of ``clk_freq / baud``
(under 0.05 % for every allowed ratio). A down-counter ``acc`` in the same fixed point loses one
cycle per clock; the cycle where its integer part is 0 is a bit event, and ``cycles_per_bit`` is
added back. Events after a start value ``x0`` therefore fall at cycles ``floor(x0 + k *
cycles_per_bit)``: each bit lasts ``floor(cycles_per_bit)`` or ``ceil(cycles_per_bit)`` cycles
(one cycle of jitter at most) and the error never accumulates.

The transmitter's bit ``k`` of a burst (counted across back-to-back frames) starts
``floor(k * cycles_per_bit + 1/2)`` cycles after the burst's first start bit, as
:func:`sim.golden.uart.encode` places them.
"""

import math
import numbers

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from .params import check_int

__all__ = ["FRACTION_BITS", "MIN_CYCLES_PER_BIT", "RxByte", "UARTTransmitter", "UARTReceiver"]

#: Fraction bits of the bit-period accumulator.
FRACTION_BITS = 8

#: The smallest ``clk_freq / baud`` allowed: the receiver needs a few samples per bit.
MIN_CYCLES_PER_BIT = 4


class RxByte(data.StructLayout):
    """One byte delivered by :class:`UARTReceiver`, with what went wrong on the line.

    Members
    -------
    data : unsigned(8)
        The byte, as received (also when ``framing_error`` is set).
    framing_error : unsigned(1)
        The stop bit was sampled low: the byte is suspect, or the line is in a break (a break
        gives one byte 0x00 with this flag, then nothing until the line goes high again).
    overrun : unsigned(1)
        One or more whole bytes were dropped just before this one, because ``o`` still held an
        untaken byte when they arrived. Set on the first byte delivered after the loss.
    """
    def __init__(self):
        super().__init__({"data": 8, "framing_error": 1, "overrun": 1})


def _bit_period(owner, clk_freq, baud):
    """Check the constructor arguments; return the bit period in fixed point."""
    try:
        if not isinstance(clk_freq, numbers.Real) or isinstance(clk_freq, bool):
            raise TypeError(f"clk_freq must be a number of Hz (int or float), not {clk_freq!r}")
        if not (math.isfinite(clk_freq) and clk_freq > 0):
            raise ValueError(f"clk_freq must be a positive, finite number of Hz, not {clk_freq!r}")
        check_int(owner, "baud", baud, 1)
        ratio = clk_freq / baud
        if ratio < MIN_CYCLES_PER_BIT:
            raise ValueError(f"clk_freq / baud must be at least {MIN_CYCLES_PER_BIT} cycles per "
                             f"bit, not {clk_freq!r} / {baud!r} = {ratio:.4g}")
    except Exception:
        owner._MustUse__silence = True
        raise
    return round(clk_freq * 2**FRACTION_BITS / baud)


class _BitTimer:
    """The fixed-point bit-period accumulator that both units share (see the module docs).

    ``acc`` holds the cycles left until the next event; ``event`` is high in the event's cycle,
    that is while ``acc``'s integer part is 0. ``step(m)`` counts one cycle down (adding the
    period back on an event); ``load(m, x0)`` makes the next cycle's value ``x0`` cycles, so
    events follow at ``floor(x0 + k * period)`` cycles from the next cycle on.

    ``event`` is a flip-flop, set a cycle ahead, so that what a unit decides on it is one gate
    from registers: a step lands on 0 only from 1 (after an event, and after a load, the integer
    part is at least 2, as a bit lasts 4 cycles or more).
    """
    def __init__(self, period):
        self.period = period
        self.acc = Signal(range(period + 1))
        self.event = Signal(init=1)

    def step(self, m):
        one = 1 << FRACTION_BITS
        m.d.sync += [
            self.acc.eq(Mux(self.event, self.acc + (self.period - one), self.acc - one)),
            self.event.eq(self.acc[FRACTION_BITS:] == 1),
        ]

    def load(self, m, x0):
        assert x0 >> FRACTION_BITS > 0
        m.d.sync += [self.acc.eq(x0), self.event.eq(0)]


class _Timed(wiring.Component):
    """What :class:`UARTTransmitter` and :class:`UARTReceiver` share: parameters and timing."""
    def __init__(self, clk_freq, baud, signature):
        self._period = _bit_period(self, clk_freq, baud)
        self._clk_freq = clk_freq
        self._baud = baud
        super().__init__(signature)

    @property
    def clk_freq(self):
        return self._clk_freq

    @property
    def baud(self):
        return self._baud

    @property
    def cycles_per_bit(self):
        """The bit period the hardware keeps, in cycles: ``clk_freq / baud`` rounded to
        ``2**-FRACTION_BITS`` (see the module docs)."""
        return self._period / 2**FRACTION_BITS


class UARTTransmitter(_Timed):
    """Sends bytes as 8N1 frames: a low start bit, 8 data bits LSB first, a high stop bit.

    A byte accepted on ``i`` at cycle ``h`` starts its start bit on ``tx`` at ``h + 1``. ``i`` is
    ready while the line is idle and in the last cycle of each stop bit, so bytes offered without
    a pause go out back to back with no idle time between frames; the bit timer then runs on
    across the frames, so the average bit period stays exact over a whole burst. Bit ``k`` of a
    burst starts ``floor(k * cycles_per_bit + 1/2)`` cycles after its first start bit.

    ``tx`` comes straight from a register, so it never glitches.

    Parameters
    ----------
    clk_freq : int or float
        Frequency of the ``sync`` clock, in Hz.
    baud : int
        Bits per second; ``clk_freq / baud`` must be at least 4.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1, init=1)
        The serial line; high when idle.
    busy : Out(1)
        A frame is on the line (high from the cycle after a byte is accepted to the end of the
        last stop bit).
    """
    def __init__(self, *, clk_freq, baud):
        super().__init__(clk_freq, baud, {
            "i":    In(stream.Signature(8)),
            "tx":   Out(1, init=1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        timer = _BitTimer(self._period)

        shreg = Signal(9)                   # the bits after the one on the line, stop bit last
        left = Signal(range(10))            # bits after the one on the line
        last = Signal()                     # left == 0: the stop bit is on the line
        end = Signal()                      # last cycle of a stop bit
        # From flip-flops only: i.ready is on the path of the sender's every decision.
        m.d.comb += [
            end.eq(self.busy & timer.event & last),
            self.i.ready.eq(~self.busy | end),
        ]

        with m.If(self.busy):
            timer.step(m)
            with m.If(timer.event):
                m.d.sync += [
                    self.tx.eq(shreg[0]),
                    shreg.eq(Cat(shreg[1:], 1)),
                    left.eq(left - 1),
                    last.eq(left == 1),
                ]
            with m.If(end):
                m.d.sync += [self.tx.eq(1), self.busy.eq(0)]

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                self.tx.eq(0),
                shreg.eq(Cat(self.i.payload, Const(1, 1))),
                left.eq(9),
                last.eq(0),
                self.busy.eq(1),
            ]
            with m.If(~self.busy):
                # A new burst: its start bit ends at floor(cycles_per_bit - 1/2), so that bit k
                # starts at floor(k * cycles_per_bit + 1/2). Back to back, the timer runs on.
                timer.load(m, self._period - (1 << (FRACTION_BITS - 1)))
        return m


class UARTReceiver(_Timed):
    """Receives 8N1 frames from an asynchronous serial line and delivers their bytes.

    ``rx`` passes through a 2-flip-flop synchronizer (it may come straight from a pin). A start
    bit is the first low sample after the line was seen high. Each bit, the start bit included,
    is then read as the majority of 3 consecutive samples centred on the bit's middle, at
    ``floor((k + 1/2) * cycles_per_bit)`` cycles after the falling edge was seen (with the edge
    uniformly placed within a clock cycle, that is the middle on average). The majority filters
    one-cycle glitches and costs no margin: when the middle sample is inside its bit, so is one of
    its neighbours.

    * A start bit that is not low at its middle was a glitch: it is ignored.
    * A byte whose stop bit is low is delivered with ``framing_error`` set; the receiver then
      waits for the line to be high before it looks for a start bit, so a break (the line held
      low) gives a single byte 0x00 with ``framing_error``.
    * A frame starts being looked for right at its predecessor's stop-bit sample, so a sender
      whose clock runs fast does not lose time frame after frame. Senders within +-2 % of the
      baud rate are received, back to back, at every ratio (4 included).
    * ``o`` holds one byte. A byte that arrives while ``o`` still holds an untaken one is dropped
      (a stream payload may not change while it is valid), and the next byte delivered carries
      ``overrun``.

    The latency from the middle of the stop bit to ``o.valid`` is 4 cycles (2 in the synchronizer,
    1 to centre the majority, 1 output register).

    Parameters
    ----------
    clk_freq : int or float
        Frequency of the ``sync`` clock, in Hz.
    baud : int
        Bits per second; ``clk_freq / baud`` must be at least 4.

    Members
    -------
    rx : In(1)
        The serial line (asynchronous).
    o : Out(stream.Signature(RxByte()))
        Received bytes and their error flags.
    """
    def __init__(self, *, clk_freq, baud):
        super().__init__(clk_freq, baud, {
            "rx": In(1),
            "o":  Out(stream.Signature(RxByte())),
        })

    def elaborate(self, platform):
        m = Module()
        timer = _BitTimer(self._period)

        line = Signal(init=1)
        m.submodules.synchronizer = FFSynchronizer(self.rx, line, init=1)
        # The two samples before `line`: the majority of the three is centred one cycle back,
        # which the timer's start value makes up for.
        history = Signal(2, init=0b11)
        m.d.sync += history.eq(Cat(line, history[0]))
        vote = Signal()
        m.d.comb += vote.eq((line & history[0]) | (line & history[1]) | (history[0] & history[1]))

        shreg = Signal(8)
        left = Signal(range(8))
        deliver = Signal()
        framing_error = Signal()
        lost = Signal()                     # bytes were dropped since the last delivery

        def start():
            # The edge was first seen this cycle, d. Events then fall at d + 1 +
            # floor((k + 1/2) * cycles_per_bit): the one cycle of the load is the one by which
            # the majority lags, so it is centred on floor((k + 1/2) * cycles_per_bit) after d.
            timer.load(m, self._period >> 1)

        timer.step(m)
        with m.FSM(init="IDLE"):
            with m.State("IDLE"):
                with m.If(~line):
                    start()
                    m.next = "START"
            with m.State("START"):
                with m.If(timer.event):
                    with m.If(vote):
                        m.next = "IDLE"     # a glitch
                    with m.Else():
                        m.d.sync += left.eq(7)
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer.event):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], vote)), left.eq(left - 1)]
                    with m.If(left == 0):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer.event):
                    m.d.comb += [deliver.eq(1), framing_error.eq(~vote)]
                    with m.If(~vote):
                        m.next = "BREAK"
                    with m.Elif(~line):
                        # The stop bit was high, so this low sample is the next start bit's
                        # edge (a fast sender): start right away rather than a cycle late.
                        start()
                        m.next = "START"
                    with m.Else():
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(deliver):
            with m.If(self.o.valid & ~self.o.ready):
                m.d.sync += lost.eq(1)
            with m.Else():
                m.d.sync += [
                    self.o.valid.eq(1),
                    self.o.payload.data.eq(shreg),
                    self.o.payload.framing_error.eq(framing_error),
                    self.o.payload.overrun.eq(lost),
                    lost.eq(0),
                ]
        return m
