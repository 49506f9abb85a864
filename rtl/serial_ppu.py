"""Serial post-processing unit: the PPU's requantization, one element at a time, in little area."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int
from .ppu import AccumulatorRow, Activation, PostProcessorConfig, QuantizedRow

__all__ = ["SerialPostProcessor"]

#: Width of the working register: 4 * multiplier needs 34 bits, and the partial sums of the
#: shift-add multiply stay within twice that (see the class docstring).
WIDTH = 35
#: The working register's value when a column starts: the nudge, 2**30 of the product, which
#: the multiplicand's scale of 4 and the 32 right shifts turn into 2**32.
NUDGE = 1 << 32


class Phase(enum.Enum, shape=2):
    """What the datapath does in a cycle of a column."""
    MUL = 0     #: Shift-add multiply, one bit of x a cycle (32 cycles).
    POT = 1     #: RoundingDivideByPOT, one bit a cycle, then the zero point (shift + 1 cycles).
    LO  = 2     #: Compare with the lower bound; write max(q, lo) (1 cycle).
    HI  = 3     #: Compare with the upper bound; write hi if above (1 cycle).


class SerialPostProcessor(wiring.Component):
    """Requantizes rows of int32 accumulators to int8 one element at a time, in little logic.

    The same arithmetic as :class:`rtl.ppu.PostProcessor` (bit-exact with
    :mod:`sim.golden.ppu`), the same ports and the same ``cfg`` contract, for FPGAs where the
    PPU's throughput does not matter but its area does (the iCEBreaker, whose UART brings a
    byte every hundred cycles). There is no multiplier: one 35-bit adder and its register
    ``w_acc`` do everything, over ``35 + shift`` cycles a column:

    ``MUL`` (32 cycles)
        ``x = acc + bias`` is never formed whole: a one-bit full adder (carry in ``x_carry``)
        makes its bit ``i`` from the two bits picked out of the payload and ``cfg.bias``, LSB
        first, a cycle before it is used (into ``x_bit``, so that the multiplexers do not lie
        in series with the adder); the wrap modulo 2**32 comes for free. Each cycle adds
        ``x_i * 4 * multiplier`` to ``w_acc`` (the last one, with the sign bit's weight
        ``-2**31``, subtracts it) and shifts it right by one. ``w_acc`` starts at 2**32, so
        after 32 cycles it holds ``floor((4 x M + 2**32) / 2**32) = floor((x M + 2**30) /
        2**30)``: SaturatingRoundingDoublingHighMul's ``y``, as ``floor((x M + 2**30) /
        2**31)`` equals its nudged, truncated division, with one more (fraction) bit below it.
        The scale of 4 keeps that bit, so that every later step can shift too (the register
        needs no multiplexer between shifting and not). The partial sums stay within
        ``(-2**34, 2**34)``. INT32_MIN * INT32_MIN gives ``y = 2**31`` without saturation,
        which rounds and clamps exactly as INT32_MAX does.
    ``POT`` (``shift + 1`` cycles)
        Shifts right one bit a cycle: the first drops the fraction bit, the next ``shift``
        the bits of ``y`` that RoundingDivideByPOT divides away. Its rounding increment is a
        bit test: the last bit dropped is set and ``y`` is not negative or a bit dropped
        before it (``w_sticky``) is set. The last cycle adds ``2 * zero_point`` and, as the
        carry in, that increment (the bit it joins is set whenever the increment is 1), so
        ``w_acc`` ends at ``q = z + zero_point``, exact on 35 bits.
    ``LO``, ``HI`` (one cycle each)
        The adder compares ``q`` with ``lo`` and then with ``hi`` (its sign bit; ``w_acc``
        holds still). ``LO`` writes ``max(q, lo)`` into the column's byte of ``o_data``,
        ``HI`` overwrites it with ``hi`` if ``q > hi`` or ``lo > hi`` (the upper bound wins).
        (The bytes enter ``o_data`` at the top and move down one per column.)

    ``HI`` also resets ``w_acc`` to 2**32 and reads bit 0 of the next column: it is the
    first cycle of every column but the first, whose first cycle is a row's own ``HI`` (the
    idle unit waits in ``HI``), hence ``C * (35 + shift) + 1`` cycles a row. The row is read
    from ``i.payload`` while it waits (the stream rules keep it stable while ``i.valid`` is
    high), so there is no input register: ``i.ready`` rises in the cycle that reads the last
    column's bit 31 (the next-to-last ``MUL`` cycle), and its ``last`` flag is kept in
    ``o_last``. When the last column is done the row is presented on
    ``o`` until it is taken; the next row starts only once the output row is free (in the
    cycle it is taken, at the earliest), so rows do not overlap. A row offered to an idle unit
    starts in the cycle ``i.valid`` rises and is presented ``row_cycles(shift)`` cycles later;
    with an input always valid and an output always ready, one row leaves every
    ``row_cycles(shift)`` cycles.

    ``cfg`` must stay stable from the cycle in which the first row of a layer is offered on
    ``i`` (it may change in that very cycle) until the last row of the layer has left on
    ``o``, as for :class:`rtl.ppu.PostProcessor`: every field is read while a row is in
    flight.

    Parameters
    ----------
    cols : int
        C, the length of a row, 1 or more.

    Members
    -------
    i : In(stream.Signature(AccumulatorRow(cols)))
        Accumulator rows; each is read while it waits, and taken in its last column's last
        multiply cycle.
    o : Out(stream.Signature(QuantizedRow(cols)))
        Output rows, in order, each held until taken.
    cfg : In(PostProcessorConfig(cols))
        Requantization parameters; static while rows are in flight.
    """
    def __init__(self, cols=8):
        check_int(self, "Column count", cols, 1, 1 << 16)
        self._cols = cols
        super().__init__({
            "i":   In(stream.Signature(AccumulatorRow(cols))),
            "o":   Out(stream.Signature(QuantizedRow(cols))),
            "cfg": In(PostProcessorConfig(cols)),
        })

    @property
    def cols(self):
        return self._cols

    @staticmethod
    def column_cycles(shift):
        """Cycles one column takes with ``cfg.shift == shift``: 32 to multiply, ``shift + 1`` to
        shift, 2 to clamp."""
        if not isinstance(shift, int) or isinstance(shift, bool):
            raise TypeError(f"Shift must be an integer, not {shift!r}")
        if not 0 <= shift <= 31:
            raise ValueError(f"Shift must be between 0 and 31, not {shift!r}")
        return 32 + shift + 1 + 2

    def row_cycles(self, shift):
        """Cycles a row takes with ``cfg.shift == shift``: ``C * (35 + shift) + 1``.

        From the cycle in which a row starts (the one in which ``i.valid`` rises, if the unit
        is idle) to the one in which it is presented on ``o``; and the interval between rows at
        full rate (input always valid, output always ready).
        """
        return self._cols * self.column_cycles(shift) + 1

    def elaborate(self, platform):
        m = Module()
        cols = self._cols
        cfg = self.cfg

        # Sequencing: the row in progress, the column whose bits are read, the phase and the
        # cycle within it. In MUL, w_step is one ahead (it names the bit of x read for the next
        # cycle), so the multiply's last cycle has w_step 0, and HI reads the next column's
        # bit 0: HI is also the next column's first cycle, and the idle unit waits in HI.
        w_busy  = Signal()
        w_col   = Signal(range(cols))
        w_final = Signal()                      # w_col has wrapped: the row's last column
        w_phase = Signal(Phase, init=Phase.HI)
        w_step  = Signal(unsigned(5))

        # Datapath: the working register, x's next bit and the bit-serial bias add's carry, and
        # RoundingDivideByPOT's sticky bit.
        w_acc    = Signal(WIDTH, init=NUDGE)
        x_bit    = Signal()
        x_carry  = Signal()
        w_sticky = Signal()

        # The output row: each column's byte enters at the top and moves down a byte per
        # column, so after C columns byte j holds column j.
        o_valid = Signal()
        o_data  = Signal(data.ArrayLayout(signed(8), cols))
        o_last  = Signal()
        m.d.comb += [
            self.o.valid.eq(o_valid),
            self.o.payload.data.eq(o_data),
            self.o.payload.last.eq(o_last),
        ]

        # A row starts when one is offered and the output row is free (or leaves this cycle);
        # from then on the unit runs until the row is presented.
        free = ~o_valid | self.o.ready
        run = w_busy | (self.i.valid & free)
        with m.If(o_valid & self.o.ready):
            m.d.sync += o_valid.eq(0)

        last_col = w_col == cols - 1
        mul = w_phase == Phase.MUL
        lo_phase, hi_phase = w_phase == Phase.LO, w_phase == Phase.HI
        mul_last = w_step == 0                          # x's sign bit goes in
        pot_last = w_step == cfg.shift                  # the zero point goes in

        # The next bit of x = acc + bias, LSB first: bit `w_step` of column `w_col` of the
        # payload and of the biases, added with the carry of the bits below. Registered, so
        # that these multiplexers do not lie in series with the adder.
        index = Cat(w_step, w_col)
        acc_bit = self.i.payload.data.as_value().bit_select(index, 1)
        bias_bit = cfg.bias.as_value().bit_select(index, 1)
        # The row is read until its last column's bit 31.
        m.d.comb += self.i.ready.eq(run & mul & (w_step == 31) & last_col)

        # The clamp's bounds.
        lo, hi = Signal(signed(8)), Signal(signed(8))
        with m.Switch(cfg.activation):
            with m.Case(Activation.RELU):
                m.d.comb += [lo.eq(cfg.zero_point), hi.eq(127)]
            with m.Case(Activation.CLAMP):
                m.d.comb += [lo.eq(cfg.zero_point), hi.eq(cfg.clamp_max)]
            with m.Default():
                m.d.comb += [lo.eq(-128), hi.eq(127)]
        hi_wins = (cfg.activation == Activation.CLAMP) & (cfg.clamp_max < cfg.zero_point)

        # RoundingDivideByPOT's increment, in the last POT cycle: the bit about to be dropped
        # is y's bit shift - 1; never for shift 0, where it is the fraction bit.
        negative = w_acc[WIDTH - 1]
        rounding = w_acc[0] & (~negative | w_sticky) & (w_step != 0)

        # The adder's second operand and carry in, by phase.
        multiplicand = Cat(Const(0, 2), cfg.multiplier).as_signed()     # 4 * multiplier
        addend = Signal(WIDTH)
        carry_in = Signal()
        with m.Switch(w_phase):
            with m.Case(Phase.MUL):
                with m.If(mul_last):
                    m.d.comb += [addend.eq(Mux(x_bit, ~multiplicand, 0)), carry_in.eq(x_bit)]
                with m.Else():
                    m.d.comb += addend.eq(Mux(x_bit, multiplicand, 0))
            with m.Case(Phase.POT):
                with m.If(pot_last):
                    m.d.comb += [addend.eq(Cat(Const(0, 1), cfg.zero_point).as_signed()),
                                 carry_in.eq(rounding)]
            with m.Case(Phase.LO):
                m.d.comb += [addend.eq(~lo), carry_in.eq(1)]                # q - lo
            with m.Case(Phase.HI):
                m.d.comb += addend.eq(~hi)                                  # q - hi - 1
        total = Signal(WIDTH)
        m.d.comb += total.eq(w_acc + addend + carry_in)
        below = total[WIDTH - 1]                        # LO: q < lo
        above = ~total[WIDTH - 1]                       # HI: q > hi

        with m.If(run):
            # x's bits are read in HI (bit 0) and MUL (bits 1 to 31, then nothing).
            # (Bit 0 has no carry in: whatever HI's reading at a row's end left in x_carry.)
            carry = x_carry & mul
            with m.If(mul | hi_phase):
                m.d.sync += [
                    x_bit.eq(acc_bit ^ bias_bit ^ carry),
                    x_carry.eq((acc_bit & bias_bit) | (carry & (acc_bit ^ bias_bit))),
                ]
            with m.Switch(w_phase):
                with m.Case(Phase.MUL):
                    m.d.sync += [
                        w_acc.eq(total.as_signed() >> 1),
                        w_step.eq(w_step + 1),
                    ]
                    with m.If(w_step == 31):
                        with m.If(last_col):
                            m.d.sync += o_last.eq(self.i.payload.last)
                    with m.If(mul_last):
                        m.d.sync += [
                            w_col.eq(Mux(last_col, 0, w_col + 1)),
                            w_final.eq(last_col),
                            w_phase.eq(Phase.POT),
                            w_step.eq(0),
                        ]
                with m.Case(Phase.POT):
                    m.d.sync += [
                        w_acc.eq(total.as_signed() >> 1),
                        w_sticky.eq((w_sticky | w_acc[0]) & (w_step != 0)),
                        w_step.eq(w_step + 1),
                    ]
                    with m.If(pot_last):
                        m.d.sync += [w_step.eq(0), w_phase.eq(Phase.LO)]
                with m.Case(Phase.LO):
                    # max(q, lo) enters the output row.
                    m.d.sync += [
                        o_data.eq(Cat(o_data.as_value()[8:], Mux(below, lo, w_acc[:8]))),
                        w_phase.eq(Phase.HI),
                    ]
                with m.Case(Phase.HI):
                    # hi if q > hi or lo > hi; and the next column (or row) begins.
                    with m.If(above | hi_wins):
                        m.d.sync += o_data[cols - 1].eq(hi)
                    m.d.sync += [w_acc.eq(NUDGE), w_busy.eq(1), w_phase.eq(Phase.MUL),
                                 w_step.eq(1)]
                    with m.If(w_final):
                        m.d.sync += [w_final.eq(0), w_busy.eq(0), o_valid.eq(1),
                                     w_phase.eq(Phase.HI), w_step.eq(0)]
        return m
