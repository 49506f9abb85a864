"""Post-processing unit (PPU): requantizes rows of int32 accumulators to int8."""

from amaranth.hdl import Cat, Const, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_bool, check_int
from .pe import MultiplierSignature

__all__ = [
    "Activation", "AccumulatorRow", "QuantizedRow", "PostProcessorConfig", "PostProcessor",
    "clamp_bounds",
]

INT32_MIN = -2**31
INT32_MAX = 2**31 - 1

#: The pipeline's register stages, by signal prefix; one cycle of latency each.
STAGES = ("b", "m", "h", "s", "d", "r", "q")
#: The partial products of ``x * multiplier``, by halves (high/low of each): one DSP block each.
PARTS = ("hh", "hl", "lh", "ll")
#: Operand width of a platform's partial-product multiplier: 16 bits, sign- or zero-extended.
PART_WIDTH = 17


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


def clamp_bounds(m, cfg):
    """The final clamp's bounds ``(lo, hi)`` for the config ``cfg`` (a
    :class:`PostProcessorConfig` view), as signals that ``m`` drives combinationally:
    ``[-128, 127]`` for ``NONE`` (and the reserved value 3), ``[zero_point, 127]`` for ``RELU``
    and ``[zero_point, clamp_max]`` for ``CLAMP``. (``lo > hi`` is possible with ``CLAMP``:
    the units let ``hi`` win.)"""
    # Unnamed, so that the measured builds' netlists stay as they were.
    lo, hi = Signal(signed(8)), Signal(signed(8))
    with m.Switch(cfg.activation):
        with m.Case(Activation.RELU):
            # zero_point is already >= -128, so max(zero_point, -128) is zero_point.
            m.d.comb += [lo.eq(cfg.zero_point), hi.eq(127)]
        with m.Case(Activation.CLAMP):
            m.d.comb += [lo.eq(cfg.zero_point), hi.eq(cfg.clamp_max)]
        with m.Default():
            m.d.comb += [lo.eq(-128), hi.eq(127)]
    return lo, hi


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

    Seven register stages (six without ``operand_stage``), named by prefix, split the 32 x 32
    multiply in two cycles so that neither holds more than one DSP multiply or one adder:
    ``b_`` the biased value ``x``; ``m_`` the operands of the four partial products of
    ``x * multiplier`` (16 x 16 bits of one signedness, each one 18 x 18 DSP block on ECP5 and
    one SB_MAC16 on iCE40, whose input registers these are), and a small correction for the
    halves taken as signed; ``h_`` the partial products; ``s_`` their sum, the 64-bit product;
    ``d_`` the doubled high half ``y``; ``r_`` ``y`` shifted right, its rounding bit (a bit test, no
    carry chain) and whether the shifted value lies in -256 .. 255; ``q_`` the clamped output,
    where both bound checks compare the shifted value alone (on 9 bits) with the bounds less
    the zero point, in parallel with each other and with an 8-bit ``z + zero_point + round``.
    When the output is not taken (``o.ready`` low while ``o.valid``), the whole pipeline holds
    still.

    The constants that ``r_`` and ``q_`` derive from ``cfg`` (the bounds, the bounds less the
    zero point, whether ``lo > hi``, the rounding masks) are registered, ``c_`` signals, so
    that none of that logic lies in series with the pipeline: they follow ``cfg`` one
    (advancing) cycle late, and are used at least four advancing cycles after a row is taken.

    With ``lanes`` L = C (the default) every column has its own copy of that arithmetic and the
    unit accepts one row per cycle. With L < C there are L copies (lanes), time-shared: a row
    goes through them in P = ceil(C / L) passes of L columns each, one pass per cycle, so the
    unit accepts one row every P cycles (``interval``). The row waits on ``i`` while its passes
    are read from the payload (which the stream rules keep stable while ``i.valid`` is high, so
    the unit needs no input row register): pass ``p`` (counted by ``i_pass``) takes columns
    ``p * L .. p * L + L - 1``, and ``i.ready`` rises in the last pass. Pass 0 takes its columns
    straight from the payload; with three passes or more, every pass loads the next one's
    columns and biases into ``i_next_acc`` and ``i_next_bias`` (L values each), so that the
    C-to-L multiplexer ends at a register and only a 2-to-1 multiplexer precedes the bias add
    (with two passes that multiplexer is 2-to-1 already, on the pass number). Each pass carries its
    number (``group``) with its flags; at the output the first P - 1 passes are collected in
    ``o_collect`` and the row is presented, whole, when its last pass leaves ``q_``. Lanes left
    over in the last pass (when L does not divide C) compute on zeros, and their results are
    dropped. ``latency`` counts from the accepting cycle, so it is 7 (6) whatever L; a row
    offered to an idle unit comes out ``interval - 1 + latency`` cycles after ``i.valid`` rises.

    ``cfg`` must stay stable from the cycle in which the first row of a layer is offered on
    ``i`` (it may change in that very cycle) until the last row of the layer has left on
    ``o``. (The bias and multiplier are read as a row enters; the registered constants have
    caught up long before the row reaches ``r_``.)

    A platform may supply the four partial products of each lane as DSP blocks with their own
    registers: its ``get_ppu_multiplier(lane, part)``, with ``part`` one of ``PARTS``, returns
    a component with :class:`rtl.pe.MultiplierSignature` of width 17 (the operands' 16 bits,
    sign- or zero-extended), or None for the unit's own. The block's operand registers are then
    the ``m_`` stage and its product register the ``h_`` stage; the unit drives its ``en`` with
    its own advance. The platform gives all of them or none.

    Parameters
    ----------
    cols : int
        C, the length of a row, 1 or more.
    lanes : int or None
        L, copies of the arithmetic (one 32 x 32 multiplier each), 1 to C; None means C.
    operand_stage : bool
        Register the partial products' operands in an ``m_`` stage of their own (default
        True). Without it ``h_`` multiplies ``b_x``'s halves directly, the latency is 6, and
        the platform is not asked for multipliers: that saves the flip-flops that Yosys does
        not fold into iCE40 DSP blocks, which the smallest FPGA has no room for.

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
    def __init__(self, cols=8, lanes=None, *, operand_stage=True):
        check_int(self, "Column count", cols, 1, 1 << 16)
        if lanes is None:
            lanes = cols
        check_int(self, "Lane count", lanes, 1, cols)
        check_bool(self, "Operand stage", operand_stage)
        self._cols = cols
        self._lanes = lanes
        self._operand_stage = operand_stage
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
        return len(self.stages)

    @property
    def operand_stage(self):
        return self._operand_stage

    @property
    def stages(self):
        """The register stages, by signal prefix (``STAGES``, less ``m`` without the operand
        stage)."""
        return STAGES if self._operand_stage else tuple(s for s in STAGES if s != "m")

    def _platform_multipliers(self, platform):
        """The platform's multipliers, ``[{part: component}]`` by lane, or None."""
        get = getattr(platform, "get_ppu_multiplier", None)
        if get is None or not self._operand_stage:
            return None
        given = [{part: get(lane, part) for part in PARTS} for lane in range(self._lanes)]
        found = [multiplier for lane in given for multiplier in lane.values()]
        if all(multiplier is None for multiplier in found):
            return None
        for multiplier in found:
            if not (isinstance(multiplier, wiring.Component) and
                    multiplier.signature == MultiplierSignature(PART_WIDTH)):
                for unused in found:
                    if isinstance(unused, wiring.Component):
                        unused._MustUse__silence = True
                raise TypeError(f"get_ppu_multiplier must give every part a component with "
                                f"MultiplierSignature({PART_WIDTH}) or none of them, "
                                f"not {multiplier!r}")
        return given

    def elaborate(self, platform):
        multipliers = self._platform_multipliers(platform)
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

        # Per-layer constants, derived from the static config and registered (`c_` signals), so
        # that none of this logic lies in series with the row pipeline. They are used from the
        # `r_` stage on, at least four advancing cycles after a row is accepted, and they load
        # in every advancing cycle (the accepting one included), so they always match the cfg
        # that the row's `b_` and `h_` stages saw.
        lo, hi = clamp_bounds(m, cfg)
        c_shift    = Signal(unsigned(5))
        c_half     = Signal(unsigned(32))       # 2**(shift - 1): the rounding bit (0 if shift 0)
        c_below    = Signal(unsigned(32))       # 2**(shift - 1) - 1: the bits below it
        c_zero     = Signal(signed(8))          # zero_point
        c_lo       = Signal(signed(8))
        c_hi       = Signal(signed(8))
        c_hi_wins  = Signal()                   # lo > hi: every output is hi
        # The bounds moved to z's side of the compares, both within -255 .. 255.
        c_lo_z     = Signal(signed(9))          # lo - zero_point
        c_hi_z     = Signal(signed(9))          # hi - zero_point
        c_top      = Signal(unsigned(32))       # bits 8 + shift up: y >> shift is in -256 .. 255
                                                # if they all equal the sign
        ones = Const(2**32 - 1, 32)
        m.d.sync += [
            c_shift.eq(cfg.shift),
            c_half.eq(Const(1, 32) << cfg.shift >> 1),
            c_below.eq((~(ones << cfg.shift))[:32] >> 1),       # decoders, no carry chain
            c_zero.eq(cfg.zero_point),
            c_lo.eq(lo),
            c_hi.eq(hi),
            c_hi_wins.eq(lo > hi),
            c_lo_z.eq(lo - cfg.zero_point),
            c_hi_z.eq(hi - cfg.zero_point),
            c_top.eq(ones << 8 << cfg.shift),
        ]

        # What enters each lane: column j itself, or with passes, the lane's column of this
        # pass (zero for the lanes left over in the last one).
        def group(values, p):
            return [values[j] if j < cols else 0 for j in range(p * lanes, (p + 1) * lanes)]

        if passes == 1:
            lane_acc = [self.i.payload.data[j] for j in range(cols)]
            lane_bias = [cfg.bias[j] for j in range(cols)]
        elif passes == 2:
            # Registers for the next pass's columns (below) would only replace this 2-to-1
            # multiplexer with another one.
            lane_acc = [Mux(i_pass, acc_1, acc_0) for acc_0, acc_1 in
                        zip(group(self.i.payload.data, 0), group(self.i.payload.data, 1))]
            lane_bias = [Mux(i_pass, bias_1, bias_0) for bias_0, bias_1 in
                         zip(group(cfg.bias, 0), group(cfg.bias, 1))]
        else:
            # The first pass takes columns 0 .. L - 1 straight from the payload. Every pass
            # also loads the columns of the next one into i_next_acc and i_next_bias (the
            # payload is stable until the row is taken, and cfg is static), so that the
            # C-to-L multiplexer, on i_pass, ends at a register; after it only a 2-to-1 one,
            # on i_first, lies in series with the bias add.
            i_first     = Signal(init=1)                # i_pass == 0
            i_next_acc  = Signal(data.ArrayLayout(signed(32), lanes))
            i_next_bias = Signal(data.ArrayLayout(signed(32), lanes))
            with m.If(self.i.valid):
                m.d.sync += i_first.eq(i_pass == passes - 1)
            with m.Switch(i_pass):
                for p in range(passes - 1):
                    # In pass P - 1 the next pass is the first one of the next row: the
                    # registers are not used then, so pass P - 2's case serves it too.
                    with (m.Case(p) if p < passes - 2 else m.Default()):
                        for lane, (acc, bias) in enumerate(zip(
                                group(self.i.payload.data, p + 1), group(cfg.bias, p + 1))):
                            m.d.sync += [i_next_acc[lane].eq(acc), i_next_bias[lane].eq(bias)]
            lane_acc = [Mux(i_first, acc, i_next_acc[lane])
                        for lane, acc in enumerate(group(self.i.payload.data, 0))]
            lane_bias = [Mux(i_first, bias, i_next_bias[lane])
                         for lane, bias in enumerate(group(cfg.bias, 0))]

        b_x     = Signal(data.ArrayLayout(signed(32), lanes))
        # The products keep their reset, which keeps Yosys from folding them into the SB_MAC16s:
        # without it, Yosys 0.70 merged two of them and their sum into one SB_MAC16 whose adder
        # input was left undefined, a wrong netlist (tests/boards/test_dsp_mapping.py).
        h_hh    = Signal(data.ArrayLayout(signed(32), lanes))
        h_hl    = Signal(data.ArrayLayout(signed(32), lanes))
        h_lh    = Signal(data.ArrayLayout(signed(32), lanes))
        h_ll    = Signal(data.ArrayLayout(unsigned(32), lanes))
        h_fix   = Signal(data.ArrayLayout(signed(17), lanes))
        h_sat   = Signal(data.ArrayLayout(unsigned(1), lanes))
        s_prod  = Signal(data.ArrayLayout(signed(64), lanes))
        s_sat   = Signal(data.ArrayLayout(unsigned(1), lanes))
        d_y     = Signal(data.ArrayLayout(signed(32), lanes))
        r_z     = Signal(data.ArrayLayout(signed(32), lanes))
        r_round = Signal(data.ArrayLayout(unsigned(1), lanes))
        r_small = Signal(data.ArrayLayout(unsigned(1), lanes))
        q_out   = Signal(data.ArrayLayout(signed(8), lanes))

        # Both factors split as a signed high half and an unsigned low half, x = xh * 2**16 + xl.
        # A product of mixed signedness (xh * ml, xl * mh) is 17 x 16 bits to Yosys, two
        # SB_MAC16s on iCE40; so the low halves enter the cross products as signed, xl =
        # xl_s + 2**16 * xl[15], and what that leaves out, (xl[15] * mh + ml[15] * xh) * 2**32,
        # is added to the high product beside the middle sum. Every product is then 16 x 16
        # bits of one signedness: one MULT18X18D or one SB_MAC16.
        mul_hi, mul_lo = cfg.multiplier[16:].as_signed(), cfg.multiplier[:16]

        for j in range(lanes):
            # b_: the 33-bit sum is truncated to 32 bits, so the bias add wraps.
            m.d.sync += b_x[j].eq(lane_acc[j] + lane_bias[j])

            # m_ (with the operand stage): each partial product's own operands (a DSP block's
            # input registers), and the correction. The only product whose doubled high half
            # overflows is INT32_MIN * INT32_MIN; flag it for saturation.
            x_hi, x_lo = b_x[j][16:].as_signed(), b_x[j][:16]
            operands = {"hh": (x_hi, mul_hi), "hl": (x_hi, mul_lo.as_signed()),
                        "lh": (x_lo.as_signed(), mul_hi), "ll": (x_lo, mul_lo)}
            fix = Mux(x_lo[15], mul_hi, 0) + Mux(mul_lo[15], x_hi, 0)
            sat = (b_x[j] == INT32_MIN) & (cfg.multiplier == INT32_MIN)
            if self._operand_stage:
                m_fix = Signal(signed(17), name=f"m_fix_{j}")
                m_sat = Signal(name=f"m_sat_{j}")
                m.d.sync += [m_fix.eq(fix), m_sat.eq(sat)]
                fix, sat = m_fix, m_sat

            # h_: the four partial products alone, one DSP multiply each.
            m.d.sync += [h_fix[j].eq(fix), h_sat[j].eq(sat)]
            products = {"hh": h_hh[j], "hl": h_hl[j], "lh": h_lh[j], "ll": h_ll[j]}
            for part, (a, b) in operands.items():
                if multipliers is None:
                    if self._operand_stage:
                        m_a = Signal.like(a, name=f"m_{part}_a_{j}", reset_less=True)
                        m_b = Signal.like(b, name=f"m_{part}_b_{j}", reset_less=True)
                        m.d.sync += [m_a.eq(a), m_b.eq(b)]
                        a, b = m_a, m_b
                    m.d.sync += products[part].eq(a * b)
                else:
                    m.submodules[f"multiplier_{j}_{part}"] = multiplier = multipliers[j][part]
                    m.d.comb += [
                        multiplier.a.eq(a),
                        multiplier.b.eq(b),
                        multiplier.en.eq(advance),
                        products[part].eq(multiplier.p),
                    ]

            # s_: p = (hh + fix) * 2**32 + (hl + lh) * 2**16 + ll. The outer two do not overlap,
            # so they concatenate: a three-operand add over bits 16 to 63, instead of the adder
            # tree that follows the DSP blocks of a single-cycle multiply; hh + fix runs beside
            # hl + lh, not in series. (Bits past 63 are dropped: p itself fits.)
            high = Signal(signed(33), name=f"s_high_{j}")
            middle = Signal(signed(33), name=f"s_middle_{j}")
            m.d.comb += [high.eq(h_hh[j] + h_fix[j]), middle.eq(h_hl[j] + h_lh[j])]
            m.d.sync += [
                s_prod[j].eq(Cat(h_ll[j], high).as_signed() + (middle << 16)),
                s_sat[j].eq(h_sat[j]),
            ]

            # d_: trunc((p + nudge) / 2**31) with nudge = 2**30 or 1 - 2**30 by sign equals
            # floor((p + 2**30) / 2**31), i.e. ((p >> 30) + 1) >> 1: a 34-bit add, not 64.
            m.d.sync += d_y[j].eq(Mux(s_sat[j], INT32_MAX, ((s_prod[j] >> 30) + 1) >> 1))

            # r_: RoundingDivideByPOT. The reference's `(y & mask) > (mask >> 1) + (y < 0)`,
            # with mask = 2**shift - 1, is a bit test: bit shift - 1 of y is set, and y is not
            # negative or a bit below that one is set (never true for shift 0, where c_half is
            # 0). The increment is deferred to q_. Beside the shifter, whether z = y >> shift
            # lies in -256 .. 255: whether y's bits from 8 + shift up all equal its sign.
            y = d_y[j].as_unsigned()
            sign = d_y[j][31].replicate(32)
            m.d.sync += [
                r_z[j].eq(d_y[j] >> c_shift),
                r_round[j].eq((y & c_half).any() & (~d_y[j][31] | (y & c_below).any())),
                r_small[j].eq(~((y ^ sign) & c_top).any()),
            ]

            # q_: min(max(q, lo), hi) with q = z + zero_point + round exact, so out-of-range
            # values saturate and never wrap. The bound checks compare z alone with the bounds
            # less zero_point, in parallel with each other and with the add: z < lo - zero_point
            # and z >= hi - zero_point, on 9 bits when z is small, else its sign decides. They
            # leave round out: where that matters (z + round = lo - zero_point, or z = hi -
            # zero_point with round 0), q is exactly the bound it is clamped to. The add needs
            # only 8 bits, as an output within [lo, hi] is an int8. The upper bound wins if
            # hi < lo.
            z, rnd = r_z[j], r_round[j]
            z9 = z[:9].as_signed()
            below = Mux(r_small[j], z9 < c_lo_z, z[31])
            above = Mux(r_small[j], z9 >= c_hi_z, ~z[31])
            q = (z[:8] + c_zero + rnd)[:8]
            m.d.sync += q_out[j].eq(Mux(above | c_hi_wins, c_hi, Mux(below, c_lo, q)))

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
        for stage in self.stages:
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
