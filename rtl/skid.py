"""A skid buffer: a stream register slice that cuts the combinational path of ``ready``."""

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SkidBuffer"]


class SkidBuffer(wiring.Component):
    """Passes a stream through two registers at full rate, with ``i.ready`` a flip-flop.

    A payload offered on ``i`` appears on ``o`` one cycle later. When ``o`` stalls, the
    payload that was already accepted waits in the second ("skid") register, and ``i.ready``
    falls in the next cycle. So neither ``o.valid``, ``o.payload`` nor ``i.ready`` depends on
    the other side in the same cycle: a wide register that feeds ``i`` can take its clock
    enable from ``i.ready`` without the consumer's logic in series.

    Parameters
    ----------
    shape : shape-like
        The payload's shape.

    Members
    -------
    i : In(stream.Signature(shape))
    o : Out(stream.Signature(shape))
    """
    def __init__(self, shape):
        try:
            Shape.cast(shape)
        except TypeError as error:
            self._MustUse__silence = True
            raise TypeError(f"shape must be a shape-like object, not {shape!r}") from error
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.o.payload, name="skid")

        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(~self.o.valid | self.o.ready):
            # The output register is free: it takes the waiting payload, or the new one.
            with m.If(skid_valid):
                m.d.sync += [self.o.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.payload.eq(self.i.payload),
                             self.o.valid.eq(self.i.valid)]
        with m.Elif(self.i.valid & self.i.ready):
            # The output is stuck: the payload already accepted skids into the second register.
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m
