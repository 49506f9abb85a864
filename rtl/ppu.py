"""Post-processing unit (PPU): requantizes rows of int32 accumulators to int8."""

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int

__all__ = [
    "Activation", "AccumulatorRow", "QuantizedRow", "PostProcessorConfig", "PostProcessor",
]

INT32_MIN = -2**31
INT32_MAX = 2**31 - 1

#: The pipeline's register stages, by signal prefix; one cycle of latency each.
STAGES = ("b", "h", "s", "d", "r", "q")


class Activation(enum.Enum, shape=2):
    """The activation applied by the final clamp; the reserved value 3 behaves as ``NONE``."""
    NONE  = 0   #: Clamp to the int8 range only.
    RELU  = 1   #: Clamp to ``[zero_point, 127]`` (real values below 0 become 0).
    CLAMP = 2   #: Clamp to ``[zero_point, clamp_max]`` (ReLU6 and friends).


class AccumulatorRow(data.StructLayout):
    """One row of int32 accumulators entering the PPU (the MXU's ``ResultRow``).

    Members
    -------
    data : ArrayLayout(signed(32), cols)
        The accumulators.
    last : unsigned(1)
        Carried through unchanged to the output row.
    """
    def __init__(self, cols):
        super().__init__({"data": data.ArrayLayout(signed(32), cols), "last": 1})


class QuantizedRow(data.StructLayout):
    """One row of int8 outputs leaving the PPU.

    Members
    -------
    data : ArrayLayout(signed(8), cols)
        The requantized values.
    last : unsigned(1)
        The ``last`` flag of the accumulator row this output belongs to.
    """
    def __init__(self, cols):
        super().__init__({"data": data.ArrayLayout(signed(8), cols), "last": 1})


class PostProcessorConfig(data.StructLayout):
    """The requantization parameters of one layer.

    The real scale ``M = multiplier * 2**-31 * 2**-shift`` (``sim.golden.ppu.quantize_multiplier``
    derives ``multiplier`` and ``shift`` from it).

    Members
    -------
    bias : ArrayLayout(signed(32), cols)
        Added to each column's accumulator, modulo 2**32.
    multiplier : signed(32)
        ``M0``, the fixed-point multiplier; normally in ``[2**30, 2**31)``, but any value works.
    shift : unsigned(5)
        Rounding right shift, 0 to 31.
    zero_point : signed(8)
        Output zero point.
    activation : Activation
        Which clamp to apply.
    clamp_max : signed(8)
        Upper bound in ``CLAMP`` mode.
    """
    def __init__(self, cols):
        super().__init__({
            "bias":       data.ArrayLayout(signed(32), cols),
            "multiplier": signed(32),
            "shift":      unsigned(5),
            "zero_point": signed(8),
            "activation": Activation,
            "clamp_max":  signed(8),
        })


class PostProcessor(wiring.Component):
    """Requantizes each row of int32 accumulators to int8, as TFLite and gemmlowp do.

    For every element, with the parameters on ``cfg``::

        x = acc + bias                                      (int32, wraps modulo 2**32)
        y = SaturatingRoundingDoublingHighMul(x, multiplier)
        z = RoundingDivideByPOT(y, shift)                   (halves away from zero)
        q = min(max(z + zero_point, lo), hi)                (exact add, then saturate)

    where ``[lo, hi]`` is ``[-128, 127]`` for ``NONE``, ``[max(zero_point, -128), 127]`` for
    ``RELU`` and ``[zero_point, clamp_max]`` for ``CLAMP``. If ``clamp_max < zero_point`` the
    upper bound wins and every output is ``clamp_max`` (as TFLite's ``min(max(q, lo), hi)``).
    :mod:`sim.golden.ppu` is the bit-exact model.

    Six register stages, named by prefix, split the 32 x 32 multiply in two cycles so that
    neither holds more than one DSP multiply or one adder: ``b_`` the biased value ``x``;
    ``h_`` the four partial products of ``x * multiplier`` (16 x 16 bits, each one 18 x 18 DSP
    block on ECP5 and one SB_MAC16 on iCE40); ``s_`` their sum, the 64-bit product; ``d_`` the
    doubled high half ``y``; ``r_`` ``y`` shifted right and its rounding bit; ``q_`` the
    clamped output. When the output is not taken (``o.ready`` low while ``o.valid``), the whole
    pipeline holds still.

    With ``lanes`` L = C (the default) every column has its own copy of that arithmetic and the
    unit accepts one row per cycle. With L < C there are L copies (lanes), time-shared: a row
    goes through them in P = ceil(C / L) passes of L columns each, one pass per cycle, so the
    unit accepts one row every P cycles (``interval``). The row waits on ``i`` while its passes
    are read from the payload (which the stream rules keep stable while ``i.valid`` is high, so
    the unit needs no input row register): pass ``p`` (counted by ``i_pass``) takes columns
    ``p * L .. p * L + L - 1``, and ``i.ready`` rises in the last pass. Each pass carries its
    number (``group``) with its flags; at the output the first P - 1 passes are collected in
    ``o_collect`` and the row is presented, whole, when its last pass leaves ``q_``. Lanes left
    over in the last pass (when L does not divide C) compute on zeros, and their results are
    dropped. ``latency`` counts from the accepting cycle, so it is 6 whatever L; a row offered
    to an idle unit comes out ``interval - 1 + latency`` cycles after ``i.valid`` rises.

    ``cfg`` is sampled by every stage, so it must stay stable from the first row of a layer
    entering on ``i`` until the last one has left on ``o``.

    Parameters
    ----------
    cols : int
        C, the length of a row, 1 or more.
    lanes : int or None
        L, copies of the arithmetic (one 32 x 32 multiplier each), 1 to C; None means C.

    Members
    -------
    i : In(stream.Signature(AccumulatorRow(cols)))
        Accumulator rows; with L < C each is read while it waits, and taken ``interval - 1``
        cycles after it is offered at the earliest.
    o : Out(stream.Signature(QuantizedRow(cols)))
        Output rows, in order, ``latency`` cycles after their input (without stalls).
    cfg : In(PostProcessorConfig(cols))
        Requantization parameters; static while rows are in flight.
    """
    def __init__(self, cols=8, lanes=None):
        check_int(self, "Column count", cols, 1, 1 << 16)
        if lanes is None:
            lanes = cols
        check_int(self, "Lane count", lanes, 1, cols)
        self._cols = cols
        self._lanes = lanes
        super().__init__({
            "i":      In(stream.Signature(AccumulatorRow(cols))),
            "o":      Out(stream.Signature(QuantizedRow(cols))),
            "cfg":    In(PostProcessorConfig(cols)),
        })

    @property
    def cols(self):
        return self._cols

    @property
    def lanes(self):
        """L, the copies of the arithmetic pipeline (C unless fewer were asked for)."""
        return self._lanes

    @property
    def interval(self):
        """Cycles between accepted rows at full rate: P = ceil(C / L) passes a row."""
        return -(-self._cols // self._lanes)

    @property
    def latency(self):
        """Cycles from accepting a row to presenting its output (without stalls)."""
        return len(STAGES)

    def elaborate(self, platform):
        m = Module()
        cols, lanes, passes = self._cols, self._lanes, self.interval
        cfg = self.cfg

        # The pipeline advances only while the output can move; a stalled one holds still.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        if passes == 1:
            m.d.comb += self.i.ready.eq(advance)
        else:
            # The row on `i` is taken in its last pass.
            i_pass = Signal(range(passes))
            m.d.comb += self.i.ready.eq(advance & (i_pass == passes - 1))
            with m.If(self.i.valid):
                m.d.sync += i_pass.eq(Mux(i_pass == passes - 1, 0, i_pass + 1))

        # Per-layer constants, derived from the static config outside the row pipeline.
        round_mask = Signal(unsigned(32))       # the bits RoundingDivideByPOT shifts out
        lo = Signal(signed(8))
        hi = Signal(signed(8))
        m.d.comb += round_mask.eq((Const(1, 33) << cfg.shift) - 1)
        with m.Switch(cfg.activation):
            with m.Case(Activation.RELU):
                # zero_point is already >= -128, so max(zero_point, -128) is zero_point.
                m.d.comb += [lo.eq(cfg.zero_point), hi.eq(127)]
            with m.Case(Activation.CLAMP):
                m.d.comb += [lo.eq(cfg.zero_point), hi.eq(cfg.clamp_max)]
            with m.Default():
                m.d.comb += [lo.eq(-128), hi.eq(127)]

        # What enters each lane: column j itself, or with passes, the lane's column of this
        # pass (zero for the lanes left over in the last one).
        if passes == 1:
            lane_acc = [self.i.payload.data[j] for j in range(cols)]
            lane_bias = [cfg.bias[j] for j in range(cols)]
        else:
            i_acc  = Signal(data.ArrayLayout(signed(32), lanes))
            i_bias = Signal(data.ArrayLayout(signed(32), lanes))
            with m.Switch(i_pass):
                for p in range(passes):
                    # The last pass as the default: i_pass never goes beyond it.
                    with (m.Case(p) if p < passes - 1 else m.Default()):
                        for j in range(p * lanes, min((p + 1) * lanes, cols)):
                            m.d.comb += [
                                i_acc[j - p * lanes].eq(self.i.payload.data[j]),
                                i_bias[j - p * lanes].eq(cfg.bias[j]),
                            ]
            lane_acc, lane_bias = list(i_acc), list(i_bias)

        b_x     = Signal(data.ArrayLayout(signed(32), lanes))
        h_hh    = Signal(data.ArrayLayout(signed(32), lanes))
        h_hl    = Signal(data.ArrayLayout(signed(32), lanes))
        h_lh    = Signal(data.ArrayLayout(signed(32), lanes))
        h_ll    = Signal(data.ArrayLayout(unsigned(32), lanes))
        h_sat   = Signal(data.ArrayLayout(unsigned(1), lanes))
        s_prod  = Signal(data.ArrayLayout(signed(64), lanes))
        s_sat   = Signal(data.ArrayLayout(unsigned(1), lanes))
        d_y     = Signal(data.ArrayLayout(signed(32), lanes))
        r_z     = Signal(data.ArrayLayout(signed(32), lanes))
        r_round = Signal(data.ArrayLayout(unsigned(1), lanes))
        q_out   = Signal(data.ArrayLayout(signed(8), lanes))

        # Both factors split as a signed high half and an unsigned low half, x = xh * 2**16 + xl:
        # every partial product is 16 x 16 bits with the signedness of its halves, which one
        # MULT18X18D (as 17 x 17 signed) or one SB_MAC16 (signed or not per operand) holds.
        mul_hi, mul_lo = cfg.multiplier[16:].as_signed(), cfg.multiplier[:16]

        for j in range(lanes):
            # b_: the 33-bit sum is truncated to 32 bits, so the bias add wraps.
            m.d.sync += b_x[j].eq(lane_acc[j] + lane_bias[j])

            # h_: the four partial products alone, one DSP multiply each; the mixed ones fit 32
            # signed bits (|xh * ml| <= 2**15 * (2**16 - 1)). The only product whose doubled
            # high half overflows is INT32_MIN * INT32_MIN; flag it for saturation.
            x_hi, x_lo = b_x[j][16:].as_signed(), b_x[j][:16]
            m.d.sync += [
                h_hh[j].eq(x_hi * mul_hi),
                h_hl[j].eq(x_hi * mul_lo),
                h_lh[j].eq(x_lo * mul_hi),
                h_ll[j].eq(x_lo * mul_lo),
                h_sat[j].eq((b_x[j] == INT32_MIN) & (cfg.multiplier == INT32_MIN)),
            ]

            # s_: p = hh * 2**32 + (hl + lh) * 2**16 + ll. The outer two do not overlap, so
            # they concatenate: a three-operand add over bits 16 to 63, instead of the adder
            # tree that follows the DSP blocks of a single-cycle multiply.
            m.d.sync += [
                s_prod[j].eq(Cat(h_ll[j], h_hh[j]).as_signed() + ((h_hl[j] + h_lh[j]) << 16)),
                s_sat[j].eq(h_sat[j]),
            ]

            # d_: trunc((p + nudge) / 2**31) with nudge = 2**30 or 1 - 2**30 by sign equals
            # floor((p + 2**30) / 2**31), i.e. ((p >> 30) + 1) >> 1: a 34-bit add, not 64.
            m.d.sync += d_y[j].eq(Mux(s_sat[j], INT32_MAX, ((s_prod[j] >> 30) + 1) >> 1))

            # r_: RoundingDivideByPOT as the reference writes it; the increment is deferred
            # to the carry-in of the zero-point add.
            remainder = d_y[j].as_unsigned() & round_mask
            threshold = (round_mask >> 1) + d_y[j][31]
            m.d.sync += [
                r_z[j].eq(d_y[j] >> cfg.shift),
                r_round[j].eq(remainder > threshold),
            ]

            # q_: the add is exact (34 bits), so out-of-range values saturate and never wrap.
            # Lower bound first, then upper: the upper bound wins if hi < lo.
            q = r_z[j] + cfg.zero_point + r_round[j]
            q_lo = Mux(q < lo, lo, q)
            m.d.sync += q_out[j].eq(Mux(q_lo > hi, hi, q_lo))

        # Valid and `last` (and with passes, the pass number) travel beside the data, one
        # register per stage.
        if passes == 1:
            flags = Signal(data.StructLayout({"valid": 1, "last": 1}), name="i_flags")
            m.d.comb += [
                flags.valid.eq(self.i.valid & self.i.ready),
                flags.last.eq(self.i.payload.last),
            ]
        else:
            flags = Signal(data.StructLayout({"valid": 1, "last": 1, "group": range(passes)}),
                           name="i_flags")
            m.d.comb += [
                flags.valid.eq(self.i.valid),       # each pass (the stages move on advance)
                flags.last.eq(self.i.payload.last),
                flags.group.eq(i_pass),
            ]
        for stage in STAGES:
            delayed = Signal.like(flags, name=f"{stage}_flags")
            m.d.sync += delayed.eq(flags)
            flags = delayed

        if passes == 1:
            m.d.comb += [
                self.o.valid.eq(flags.valid),
                self.o.payload.data.eq(q_out),
            ]
        else:
            # The first P - 1 passes of a row wait in o_collect (a pass leaves q_ on the
            # next cycle: o.valid is low, so the pipeline advances); the row is presented with
            # its last pass in q_.
            o_collect = Signal(data.ArrayLayout(data.ArrayLayout(signed(8), lanes), passes - 1))
            for p in range(passes - 1):
                with m.If(flags.valid & (flags.group == p)):
                    m.d.sync += o_collect[p].eq(q_out)
            m.d.comb += self.o.valid.eq(flags.valid & (flags.group == passes - 1))
            for j in range(cols):
                p, lane = divmod(j, lanes)
                group = q_out if p == passes - 1 else o_collect[p]
                m.d.comb += self.o.payload.data[j].eq(group[lane])
        m.d.comb += self.o.payload.last.eq(flags.last)

        return EnableInserter(advance)(m)
