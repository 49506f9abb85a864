"""A behavioural pipelined multiplier: what a platform's DSP block does for the PE and the PPU.

:class:`rtl.pe.MultiplierSignature` describes the blocks that a platform may put in place of a
unit's own operand and product registers. This model is that behaviour and nothing else, for
simulating the units with platform multipliers; ``sim/models/mult18x18d.v`` is the ECP5
primitive, for netlists.
"""

from amaranth.hdl import EnableInserter, Module, Signal, signed
from amaranth.lib import wiring

from rtl.pe import MultiplierSignature

__all__ = ["PipelinedMultiplier"]


class PipelinedMultiplier(wiring.Component):
    """``p = a * b`` through an operand register and a product register, both enabled by
    ``en``, neither reset.

    Parameters
    ----------
    width : int
        Operand width (:class:`rtl.pe.MultiplierSignature`).

    Members
    -------
    a, b, en, p
        As :class:`rtl.pe.MultiplierSignature` of ``width``.
    """
    def __init__(self, width=9):
        self._width = width
        super().__init__(MultiplierSignature(width))

    def elaborate(self, platform):
        m = Module()
        a = Signal(signed(self._width), name="m_a", reset_less=True)
        b = Signal(signed(self._width), name="m_b", reset_less=True)
        p = Signal(signed(2 * self._width), name="p_product", reset_less=True)
        m.d.sync += [a.eq(self.a), b.eq(self.b), p.eq(a * b)]
        m.d.comb += self.p.eq(p)
        return EnableInserter(self.en)(m)
