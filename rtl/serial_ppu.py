"""Serial post-processing unit: the PPU's requantization, one element at a time, in little area."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int
from .ppu import AccumulatorRow, Activation, PostProcessorConfig, QuantizedRow, clamp_bounds

__all__ = ["SerialPostProcessor"]

#: Width of the carry-save vectors: 4 * multiplier needs 34 bits (see the class docstring).
WIDTH = 34
#: s_vec's value when a column starts: the nudge, 2**30 of the product, which the
#: multiplicand's scale of 4 and the 32 right shifts turn into 2**32.
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
    byte every hundred cycles). There is no multiplier, no wide multiplexer and no long
    carry chain: x is added bit-serially, the multiply keeps its sum in carry-save form, and
    the only adders are the clamp's 9-bit compares. Each column takes ``max(67, 44 + shift)``
    cycles:

    ``WL`` (1 cycle, step 0)
        Writes the previous column's byte into ``o_data`` and loads ``acc_sr`` and
        ``bias_sr`` with column ``w_col``'s accumulator and bias. ``x = acc + bias`` is never
        formed whole: a one-bit full adder (carry ``x_carry``) makes its bits from the two
        registers' bottom bits as they shift out, LSB first, so the wrap modulo 2**32 is free
        and no carry chain follows the accumulator memory's read port (a 32-bit add there
        was the iCEBreaker's critical path, 30.7 ns).
        ``s_vec`` and ``c_vec`` are reset (the flip-flops' own reset).
    ``MUL`` (32 cycles, steps 1 to 32)
        ``acc_sr`` and ``bias_sr`` shift right, so bit ``i`` of x is ``x_bit`` in step ``i + 1``.
        The running
        value ``V = s_vec + c_vec`` is kept in carry-save form, two 34-bit vectors read as
        signed, starting at the nudge, ``s_vec = 2**32``. Each cycle adds the addend ``a =
        x_i * 4 * multiplier`` with a 3:2 compressor, bit by bit (``sum = s ^ c ^ a``,
        ``carry = majority(s, c, a)``), so that ``s + c + a = sum + 2 * carry`` exactly, even
        at the top bits, whose weights are negative in all five vectors; then halves it:
        ``s_vec`` takes ``sum >> 1`` (arithmetic) and ``c_vec`` the carries, and sum's bit 0,
        final as nothing is added below it any more, leaves (``bit``). The value is exact for
        any width that holds the addends and the nudge, so 34 bits do (4 M lies in
        ``[-2**33, 2**33)``); V itself never needs more than 35. x's sign bit weighs
        ``-2**31``: its cycle adds ``~M << 2`` instead of ``4 M`` (``M ^ f_sign``, no adder),
        and the missing 4 (as ``-4 M = (~M << 2) + 4``), 2**33 in step 31's units, goes in
        as bit 1 of the next (``POT``'s first) cycle's addend, which is otherwise 0. After
        the 32 cycles ``V = floor((4 x M + 2**32) / 2**32) = floor((x M + 2**30) / 2**30)``:
        SaturatingRoundingDoublingHighMul's ``y`` with one fraction bit below it
        (``floor((x M + 2**30) / 2**31)`` equals its nudged, truncated division).
        INT32_MIN * INT32_MIN gives ``y = 2**31`` without saturation, which rounds and clamps
        exactly as INT32_MAX does.
    ``POT`` (``shift + 1`` cycles, steps 33 to 33 + shift)
        The same step with ``a = 0``: the first cycle drops the fraction bit, the next
        ``shift`` the bits of ``y`` that RoundingDivideByPOT divides away, so ``V = y >>
        shift`` after them. Its rounding increment is a bit test: the last bit dropped is set
        and ``y`` is not negative or a bit dropped before it (``sticky``) is set. ``y``'s sign
        is taken as the product's, ``x_sign ^ M``'s sign bit: they differ only where ``x M``
        is 0 or in ``[-2**30, 0)``, where ``y = 0``, whose dropped bits are all 0 and never
        round. The increment is kept in ``q_carry``.
    ``OUT`` (``max(33 - shift, 10)`` cycles, steps 34 + shift to ``max(66, 43 + shift)``)
        Still the same step with ``a = 0``: the bits of V leave LSB first, resolved (the
        bottom of the carry-save pair is a serial adder, ``c_vec[0]`` its carry), and a
        one-bit adder adds ``zero_point`` (``zp_sr``, shifted out with sign extension) and
        the increment (``q_carry``'s initial value) to them: ``q = z + zero_point + round``,
        exact, LSB first. ``q_res`` collects q's bits 0 to 8 above a sentinel bit, which
        stops it when it reaches bit 0; every later bit is compared with bit 8 (``q_big``: q
        lies outside -256 .. 255). q needs ``33 - shift`` bits for shifts up to 23 (``|y| <=
        2**31``) and 10 above, hence the length; ``f_late`` (step 66 on) and the sentinel end
        the phase. Every ``OUT`` cycle registers the clamp's compares (``below``: q < lo,
        ``above``: q > hi), 9-bit adds of ``q_res`` and the registered, inverted bounds, or
        q's sign when ``q_big``; the last cycle's are the column's.

    ``WL`` is also the next column's first cycle, and the idle unit waits in it: the byte it
    writes is ``hi`` if ``above`` or ``lo > hi`` (the upper bound wins), else ``lo`` if
    ``below``, else q's low byte; it enters ``o_data`` at the top and the bytes move down one
    per column (a row's first ``WL`` writes a byte that its own ones push out). A row takes
    ``C * max(67, 44 + shift) + 1`` cycles, the last ``WL`` presenting it. The row is read
    from ``i.payload`` while it waits (the stream rules keep it stable while ``i.valid`` is
    high), so there is no input register: ``i.ready`` rises in the cycle that loads the last
    column (its ``WL``), and its ``last`` flag is kept in ``o_last``. When the last column is
    done the row is presented on ``o`` until it is taken; the next row starts only once the
    output row is free (in the cycle it is taken, at the earliest), so rows do not overlap. A
    row offered to an idle unit starts in the cycle ``i.valid`` rises and is presented
    ``row_cycles(shift)`` cycles later; with an input always valid and an output always ready,
    one row leaves every ``row_cycles(shift)`` cycles.

    The flags that the datapath reads (``f_sign``, ``f_frac``, ``f_round``, ``f_late``) are
    decoded from the step counter a cycle ahead, and ``w_wl`` is a flip-flop of its own, so
    that no comparator lies in front of the adders.

    ``cfg`` must stay stable from the cycle in which the first row of a layer is offered on
    ``i`` (it may change in that very cycle) until the last row of the layer has left on
    ``o``, as for :class:`rtl.ppu.PostProcessor`: every field is read while a row is in
    flight. The bounds (``c_lo_n``, ``c_hi_n``, kept inverted as the compares need them) and
    ``c_hi_wins`` follow it a cycle late, and are used from step 34 on.

    Parameters
    ----------
    cols : int
        C, the length of a row, 1 or more.

    Members
    -------
    i : In(stream.Signature(AccumulatorRow(cols)))
        Accumulator rows; each is read while it waits, and taken when its last column is
        loaded.
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
        """Cycles one column takes with ``cfg.shift == shift``: 1 to load, 32 to multiply,
        ``shift + 1`` to divide, ``max(33 - shift, 10)`` to add the zero point and compare."""
        if not isinstance(shift, int) or isinstance(shift, bool):
            raise TypeError(f"Shift must be an integer, not {shift!r}")
        if not 0 <= shift <= 31:
            raise ValueError(f"Shift must be between 0 and 31, not {shift!r}")
        return max(LATE + 1, shift + 44)

    def row_cycles(self, shift):
        """Cycles a row takes with ``cfg.shift == shift``: ``C * max(67, 44 + shift) + 1``.

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
        # the column (WL is step 0: it sets w_step to 1 for the first MUL cycle; the longest
        # column, shift 31, ends in step 74). Flags decoded from w_step a cycle ahead, so
        # that no comparator lies in front of the datapath.
        w_busy  = Signal()
        w_col   = Signal(range(cols))
        w_final = Signal()                      # w_col has wrapped: the row's last column
        w_phase = Signal(Phase, init=Phase.WL)
        w_wl    = Signal(init=1)                # w_phase == WL, as a flip-flop of its own
        w_step  = Signal(range(76))
        f_sign  = Signal()                      # step 32: x's sign bit, weight -2**31
        f_frac  = Signal()                      # step 33: the fraction bit leaves
        f_round = Signal()                      # step 33 + shift: the rounding bit leaves
        f_late  = Signal()                      # step LATE or later

        # Datapath: x, shifted out LSB first; the carry-save pair; x's sign bit (for -4 M and
        # y's sign) and RoundingDivideByPOT's sticky bit; the serial adder of q = z +
        # zero_point + round; q's low bits; the clamp's compares.
        acc_sr  = Signal(32)
        bias_sr = Signal(32)
        x_carry = Signal()
        s_vec   = Signal(WIDTH, init=NUDGE)
        c_vec   = Signal(WIDTH)
        x_sign  = Signal()
        sticky  = Signal()
        zp_sr   = Signal(signed(8))
        q_carry = Signal()
        q_res   = Signal(10, init=SENTINEL)     # q's bits 0 to 8 above a sentinel bit
        q_big   = Signal()                      # a bit of q above bit 8 differs from bit 8
        below   = Signal()                      # q < lo
        above   = Signal()                      # q > hi

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
        lo, hi = clamp_bounds(m, cfg)
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

        # x's next bit, from the bottom bits of acc_sr and bias_sr and the carry of those below.
        x_bit = acc_sr[0] ^ bias_sr[0] ^ x_carry

        # The carry-save step: s + c + a = sum + 2 * carry, bit by bit (a 3:2 compressor), then
        # a right shift: sum's bit 0 leaves, final; s takes sum's other bits, c the carries.
        bit = s_vec[0] ^ c_vec[0]                       # a's bit 0 is always 0
        addend = Signal(WIDTH)
        m.d.comb += addend.eq(Cat(
            Const(0, 1),
            f_frac & x_sign,                            # -4 M = (~M << 2) + 4: the + 4
            Mux(x_bit, multiplier ^ f_sign.replicate(32), 0)))    # 4 M, or ~M << 2
        total = s_vec ^ c_vec ^ addend
        carry = (s_vec & c_vec) | (s_vec & addend) | (c_vec & addend)
        with m.If(wl):
            m.d.sync += [s_vec.eq(NUDGE), c_vec.eq(0)]
        with m.Else():
            m.d.sync += [s_vec.eq(total.as_signed() >> 1), c_vec.eq(carry)]

        # The column's operands, loaded in WL and shifted out, one bit of x a cycle.
        with m.If(wl):
            m.d.sync += [
                acc_sr.eq(self.i.payload.data[w_col]),
                bias_sr.eq(cfg.bias[w_col]),
                x_carry.eq(0),
            ]
        with m.Else():
            m.d.sync += [
                acc_sr.eq(acc_sr >> 1),
                bias_sr.eq(bias_sr >> 1),
                # Dropped after bit 31 (the wrap), so that x_bit is 0 once x is out.
                x_carry.eq(~f_sign & ((acc_sr[0] & bias_sr[0]) |
                                      (x_carry & (acc_sr[0] ^ bias_sr[0])))),
            ]

        # RoundingDivideByPOT: the sticky bit collects y's bits below the rounding bit; y's
        # sign is taken as the product's (they differ only where y = 0, which never rounds).
        with m.If(f_sign):
            m.d.sync += x_sign.eq(x_bit)
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
