"""A radix-4 Booth multiplier in logic, built on the FPGA's carry chains, over two stages."""

from amaranth.hdl import C, Cat, EnableInserter, Module, Mux, Signal, signed
from amaranth.lib import wiring

from .params import check_int
from .pe import MultiplierSignature

__all__ = ["BoothMultiplier"]


class BoothMultiplier(wiring.Component):
    """``p = a * b`` in logic, two cycles after ``a`` and ``b``, as radix-4 Booth digits of ``b``.

    For the array cells that get no DSP block. ``b`` is recoded into ``d`` digits in -2..2
    (``b`` sign-extended to ``2 * d`` bits, ``d`` odd), each selecting ``0``, ``a`` or
    ``2 * a``, inverted when negative. The +1 that completes each negation goes into a bit
    that a later row leaves zero, so every sum has two operands and maps to a carry chain.
    Yosys's own ``booth`` pass builds the same digits but sums them in a tree of full adders
    made of LUTs: for the PE's 9 x 9 on ECP5, this one takes about half its logic.

    The first stage registers the operands (``m_a``, ``m_b``) and sums the digit rows in pairs
    (``p_pair<j>``, ``p_neg<j>``); the second stage's sum of the pairs leaves on ``p``
    unregistered, for the PE's ``q_`` register to take, so the latency is that of
    :class:`rtl.pe.MultiplierSignature`. Each partial sum of the second stage is a wire of its
    own marked ``keep``: Yosys would otherwise merge the chain into one multi-operand adder
    and build it from LUTs.

    Parameters
    ----------
    width : int
        Width of the signed operands, 2 to 64 (default 9, the PE's).

    Members
    -------
    a, b, en, p
        As :class:`rtl.pe.MultiplierSignature` of ``width``; both stages advance while ``en``
        is set.
    """
    def __init__(self, width=9):
        check_int(self, "Operand width", width, 2, 64)
        self._width = width
        super().__init__(MultiplierSignature(width))

    @property
    def width(self):
        return self._width

    @property
    def digits(self):
        """Booth digits of ``b``: the smallest odd ``d`` with ``2 * d >= width``. (With an odd
        count the last row pairs with none, and the rows' +1s all find a place.)"""
        return (self._width + 1) // 2 | 1

    def elaborate(self, platform):
        m = Module()
        width, digits = self._width, self.digits

        # No reset, as in the PE's own stages: nothing reads them before valid data passed.
        m_a = Signal(signed(width), reset_less=True)
        m_b = Signal(signed(width), reset_less=True)
        m.d.sync += [m_a.eq(self.a), m_b.eq(self.b)]

        # Digit k looks at bits 2k+1, 2k and 2k-1 of b (bit -1 is 0): -2*hi + mid + lo.
        bits = Cat(C(0, 1), m_b, m_b[-1].replicate(2 * digits - width))
        rows, negs = [], []
        for k in range(digits):
            lo, mid, hi = bits[2 * k], bits[2 * k + 1], bits[2 * k + 2]
            one = lo ^ mid
            two = Mux(hi, ~lo & ~mid, lo & mid)
            neg = hi & ~(lo & mid)
            magnitude = Mux(two, m_a << 1, Mux(one, m_a, 0))
            # ~magnitude is -magnitude - 1; the row's +1 is neg, added in below.
            row = Signal(signed(width + 1), name=f"m_row{k}")
            m.d.comb += row.eq(Mux(neg, ~magnitude, magnitude))
            rows.append(row)
            negs.append(neg)

        # Row 2j + 1 sits two bits above row 2j, so its two zero low bits hold row 2j's +1.
        pairs, pair_negs = [], []
        for j in range(digits // 2):
            pair = Signal(signed(width + 4), name=f"p_pair{j}", reset_less=True)
            upper = Cat(negs[2 * j], C(0, 1), rows[2 * j + 1]).as_signed()
            m.d.sync += pair.eq(rows[2 * j] + upper)
            pairs.append(pair)
            pair_neg = Signal(name=f"p_neg{j}", reset_less=True)
            m.d.sync += pair_neg.eq(negs[2 * j + 1])
            pair_negs.append(pair_neg)
        last = Signal(signed(width + 2), name=f"p_pair{digits // 2}", reset_less=True)
        m.d.sync += last.eq(rows[-1] + negs[-1])
        pairs.append(last)

        # Pair j sits 4j bits up; the +1 of the odd row below it goes two bits under it.
        total = pairs[0]
        for j in range(1, len(pairs)):
            term = Cat(C(0, 4 * j - 2), pair_negs[j - 1], C(0, 1), pairs[j]).as_signed()
            partial = Signal(signed(2 * width), name=f"p_sum{j}", attrs={"keep": 1})
            m.d.comb += partial.eq(total + term)
            total = partial
        m.d.comb += self.p.eq(total)

        return EnableInserter(self.en)(m)
