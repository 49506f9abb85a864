"""Serial post-processing unit: the PPU's requantization, one element at a time, in little area."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int
from .ppu import AccumulatorRow, Activation, PostProcessorConfig, QuantizedRow

__all__ = ["SerialPostProcessor"]

#: Width of the carry-save vectors: 4 * multiplier needs 34 bits (see the class docstring).
WIDTH = 34
#: The working register's value when a column starts: the nudge, 2**30 of the product, which
#: the multiplicand's scale of 4 and the 32 right shifts turn into 2**32.
NUDGE = 1 << 32


#: The first step from which q's top bit may leave: bit 32 - shift of q, its sign for shifts up
#: to 23, leaves at step 66 (shift + 34 + 32 - shift).
LATE = 66
#: q_res's value when a column starts: the sentinel reaches bit 0 when q's bits 0 to 8 are in.
SENTINEL = 1 << 9


class Phase(enum.Enum, shape=2):
    """What the datapath does in a cycle of a column."""
    WL  = 0     #: Write the previous column's byte, load x (1 cycle; the idle unit waits here).
    MUL = 1     #: Carry-save multiply, one bit of x a cycle (32 cycles).
    POT = 2     #: RoundingDivideByPOT, one bit a cycle (shift + 1 cycles).
    OUT = 3     #: q = z + zero_point + round, one bit a cycle (max(33 - shift, 10) cycles).


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
        return max(LATE + 1, shift + 44)

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
        multiplier = cfg.multiplier

        # Sequencing: the row in progress, the column loaded next, the phase and the cycle of
        # the column (WL is step 0). Flags decoded from w_step a cycle ahead, so that no
        # comparator lies in front of the datapath.
        w_busy  = Signal()
        w_col   = Signal(range(cols))
        w_final = Signal()                      # w_col has wrapped: the row's last column
        w_phase = Signal(Phase, init=Phase.WL)
        w_wl    = Signal(init=1)                # w_phase == WL, as a flip-flop of its own
        w_step  = Signal(range(LATE + 45))
        f_sign  = Signal()                      # step 32: x's sign bit, weight -2**31
        f_frac  = Signal()                      # step 33: the fraction bit leaves
        f_round = Signal()                      # step 33 + shift: the rounding bit leaves
        f_late  = Signal()                      # step LATE or later

        # Datapath: x, shifted out LSB first; the carry-save pair; RoundingDivideByPOT's
        # sign and sticky bit; the serial adder of q = z + zero_point + round; q's low bits.
        x_sr    = Signal(32)
        s_vec   = Signal(WIDTH, init=NUDGE)
        c_vec   = Signal(WIDTH)
        x_sign  = Signal()
        sticky  = Signal()
        zp_sr   = Signal(signed(8))
        q_carry = Signal()
        q_res   = Signal(10, init=SENTINEL)     # q's bits 0 to 8 above a sentinel bit
        q_big   = Signal()                      # a bit of q above bit 8 differs from bit 8
        below   = Signal()                      # q < lo
        above   = Signal()                      # q > hi, or lo > hi

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
        wl = w_wl
        out = w_phase == Phase.OUT
        # The row is read until its last column is loaded.
        m.d.comb += self.i.ready.eq(run & wl & ~w_final & last_col)

        # The clamp's bounds and whether the upper one wins, registered (`c_` signals) so that
        # none of this logic lies in series with the compares: they follow cfg a cycle late,
        # and are first used some 60 cycles after a row starts.
        lo, hi = Signal(signed(8)), Signal(signed(8))
        with m.Switch(cfg.activation):
            with m.Case(Activation.RELU):
                m.d.comb += [lo.eq(cfg.zero_point), hi.eq(127)]
            with m.Case(Activation.CLAMP):
                m.d.comb += [lo.eq(cfg.zero_point), hi.eq(cfg.clamp_max)]
            with m.Default():
                m.d.comb += [lo.eq(-128), hi.eq(127)]
        # They are kept inverted, as the compares need them (an adder cannot invert an operand
        # by itself: on the iCE40 that would take a LUT a bit); the output byte's multiplexer
        # inverts them back for free. lo > hi only with CLAMP, where ~lo is ~zero_point.
        lo_n = Signal(signed(8))
        m.d.comb += lo_n.eq(~lo)
        c_lo_n, c_hi_n, c_hi_wins = Signal(signed(8)), Signal(signed(8)), Signal()
        m.d.sync += [
            c_lo_n.eq(lo_n),
            c_hi_n.eq(~hi),
            c_hi_wins.eq((cfg.activation == Activation.CLAMP) &
                         (cfg.clamp_max + lo_n + 1)[-1]),               # clamp_max - lo < 0
        ]

        # The step flags, a cycle ahead.
        m.d.sync += [
            f_sign.eq(w_step == 31),
            f_frac.eq(w_step == 32),
            f_round.eq(w_step == 32 + cfg.shift),
            f_late.eq(~wl & (f_late | (w_step == LATE - 1))),
        ]

        # The carry-save step: s + c + a = sum + 2 * carry, bit by bit (a 3:2 compressor), then
        # a right shift: sum's bit 0 leaves, final; s takes sum's other bits, c the carries.
        bit = s_vec[0] ^ c_vec[0]                       # a's bit 0 is always 0
        addend = Signal(WIDTH)
        m.d.comb += addend.eq(Cat(
            Const(0, 1),
            f_frac & x_sign,                            # -4 M = (~M << 2) + 4: the + 4
            Mux(x_sr[0], multiplier ^ f_sign.replicate(32), 0)))    # 4 M, or ~M << 2
        total = s_vec ^ c_vec ^ addend
        carry = (s_vec & c_vec) | (s_vec & addend) | (c_vec & addend)
        with m.If(wl):
            m.d.sync += [s_vec.eq(NUDGE), c_vec.eq(0)]
        with m.Else():
            m.d.sync += [s_vec.eq(total.as_signed() >> 1), c_vec.eq(carry)]

        # x = acc + bias of the column, loaded in WL and shifted out. No multiplexer between
        # the adder and x_sr: the operands are 0 outside WL, and x_sr is 0 in WL (after a
        # column's 32 shifts, or cleared), so one OR makes both.
        acc_op = Mux(wl, self.i.payload.data[w_col], 0)
        bias_op = Mux(wl, cfg.bias[w_col], 0)
        with m.If(~run | (wl & w_final)):
            m.d.sync += x_sr.eq(0)
        with m.Else():
            m.d.sync += x_sr.eq((acc_op + bias_op)[:32] | (x_sr >> 1))

        # RoundingDivideByPOT: the sticky bit collects y's bits below the rounding bit; y's
        # sign is taken as the product's (they differ only where y = 0, which never rounds).
        with m.If(f_sign):
            m.d.sync += x_sign.eq(x_sr[0])
        with m.If(w_phase == Phase.POT):
            m.d.sync += sticky.eq((sticky | bit) & ~f_frac)
        negative = x_sign ^ multiplier[31]
        rounding = bit & ~f_frac & (~negative | sticky)

        # q = z + zero_point + round, bit-serially: the rounding increment is the carry in.
        zp_bit = zp_sr[0]
        q_bit = bit ^ zp_bit ^ q_carry
        with m.If(wl):
            m.d.sync += [zp_sr.eq(cfg.zero_point), q_res.eq(SENTINEL), q_big.eq(0)]
        with m.If(f_round):
            m.d.sync += q_carry.eq(rounding)
        with m.If(out):
            m.d.sync += [
                zp_sr.eq(zp_sr >> 1),
                q_carry.eq((bit & zp_bit) | (bit & q_carry) | (zp_bit & q_carry)),
            ]
            with m.If(~q_res[0]):
                m.d.sync += q_res.eq(Cat(q_res[1:], q_bit))
            with m.Else():
                m.d.sync += q_big.eq(q_big | (q_bit ^ q_res[9]))
            # The clamp's compares, valid in OUT's last cycle (q_res then holds bits 0 to 8).
            big = q_big | (q_res[0] & (q_bit ^ q_res[9]))
            q9 = q_res[1:].as_signed()
            m.d.sync += [
                below.eq(Mux(big, q_bit, (q9 + c_lo_n + 1)[-1])),     # q - lo < 0
                above.eq(Mux(big, ~q_bit, ~(q9 + c_hi_n)[-1])),       # q - hi - 1 >= 0
            ]

        with m.If(wl):
            m.d.sync += w_step.eq(1)
        with m.Else():
            m.d.sync += w_step.eq(w_step + 1)

        with m.If(run):
            with m.Switch(w_phase):
                with m.Case(Phase.WL):
                    # The previous column's byte enters the output row (at a row's first WL,
                    # a byte that the row's own bytes push out); the next column is loaded.
                    byte = Mux(above | c_hi_wins, ~c_hi_n, Mux(below, ~c_lo_n, q_res[1:9]))
                    m.d.sync += o_data.eq(Cat(o_data.as_value()[8:], byte))
                    with m.If(w_final):
                        m.d.sync += [w_final.eq(0), w_busy.eq(0), o_valid.eq(1)]
                    with m.Else():
                        m.d.sync += [
                            w_busy.eq(1),
                            w_phase.eq(Phase.MUL),
                            w_wl.eq(0),
                            w_col.eq(Mux(last_col, 0, w_col + 1)),
                            w_final.eq(last_col),
                        ]
                        with m.If(last_col):
                            m.d.sync += o_last.eq(self.i.payload.last)
                with m.Case(Phase.MUL):
                    with m.If(f_sign):
                        m.d.sync += w_phase.eq(Phase.POT)
                with m.Case(Phase.POT):
                    with m.If(f_round):
                        m.d.sync += w_phase.eq(Phase.OUT)
                with m.Case(Phase.OUT):
                    with m.If(q_res[0] & f_late):
                        m.d.sync += [w_phase.eq(Phase.WL), w_wl.eq(1)]
        return m
