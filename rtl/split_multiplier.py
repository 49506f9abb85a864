"""A multiplier in logic whose product is spread over both stages of a pipelined multiplier."""

from amaranth.hdl import EnableInserter, Module, Signal, signed
from amaranth.lib import wiring

from .params import check_int
from .pe import MultiplierSignature

__all__ = ["SplitMultiplier"]


class SplitMultiplier(wiring.Component):
    """``p = a * b`` in logic, two cycles after ``a`` and ``b``, with the work split in two.

    A PE's own product is a whole ``width`` x ``width`` multiplier between its operand and
    product registers, and on a device without DSP blocks for every cell that multiplier in
    logic is the longest path of the array. Here the first stage multiplies ``a`` by the low
    ``low`` bits of ``b`` (unsigned) and by the others (signed) into two registered partial
    products, and the second adds them: ``a * b == a * b_low + 2**low * (a * b_high)``. Each
    stage then has about half the logic. The sum leaves on ``p`` unregistered, for the PE's
    ``q_`` register to take it, so the latency is that of :class:`rtl.pe.MultiplierSignature`.

    The ULX3S build gives it to the array cells whose products stay in logic
    (boards/build.py); a platform may give it to any cell through ``get_multiplier``.

    Parameters
    ----------
    width : int
        Width of the signed operands, 2 to 64 (default 9, the PE's).
    low : int or None
        Bits of ``b`` in the low partial product, 1 to ``width - 1`` (default ``width // 2``).

    Members
    -------
    a, b, en, p
        As :class:`rtl.pe.MultiplierSignature` of ``width``; both stages advance while ``en``
        is set, and ``p`` comes from the partial-product registers through an adder.
    """
    def __init__(self, width=9, *, low=None):
        check_int(self, "Operand width", width, 2, 64)
        if low is None:
            low = width // 2
        check_int(self, "Low part width", low, 1, width - 1)
        self._width = width
        self._low = low
        super().__init__(MultiplierSignature(width))

    @property
    def width(self):
        return self._width

    @property
    def low(self):
        return self._low

    def elaborate(self, platform):
        m = Module()
        width, low = self._width, self._low

        # No reset, as in the PE's own stages: nothing reads them before valid data passed.
        m_a = Signal(signed(width), reset_less=True)
        m_b = Signal(signed(width), reset_less=True)
        m.d.sync += [m_a.eq(self.a), m_b.eq(self.b)]

        # b_low is unsigned, so a * b_low fits width + low signed bits; b_high is signed.
        p_low = Signal(signed(width + low), reset_less=True)
        p_high = Signal(signed(2 * width - low), reset_less=True)
        m.d.sync += [
            p_low.eq(m_a * m_b[:low]),
            p_high.eq(m_a * m_b[low:].as_signed()),
        ]
        m.d.comb += self.p.eq(p_low + (p_high << low))

        return EnableInserter(self.en)(m)
