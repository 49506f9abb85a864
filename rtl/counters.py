"""Performance counters: seven event counters that READ_COUNTERS reads and clears."""

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from firmware.isa import Counter
from .params import check_int

__all__ = ["COUNTER_BITS", "CounterEvents", "CounterValues", "PerformanceCounters"]

#: Width of every counter as READ_COUNTERS sends it (a little-endian u64 each).
COUNTER_BITS = 64


class CounterEvents(data.StructLayout):
    """One bit per counted event, for one clock cycle; ``CYCLES`` counts every cycle.

    The members are the :class:`firmware.isa.Counter` names after ``CYCLES``, in lower case.

    Members
    -------
    mxu_busy, stall_weights, stall_hazard, stall_host_in, stall_host_out, instructions : 1
        The event happens in this cycle (see :class:`PerformanceCounters`).
    """
    def __init__(self):
        super().__init__({counter.name.lower(): 1 for counter in Counter
                          if counter != Counter.CYCLES})


class CounterValues(data.ArrayLayout):
    """The counters, indexed by :class:`firmware.isa.Counter`; as raw bits, exactly the
    READ_COUNTERS payload (each counter a little-endian u64, in :class:`Counter` order)."""
    def __init__(self):
        super().__init__(unsigned(COUNTER_BITS), len(Counter))


class PerformanceCounters(wiring.Component):
    """Seven free-running counters of clock cycles and events.

    Every counter adds 1 at the end of each cycle in which its event is set (``CYCLES``: every
    cycle) and wraps around modulo ``2**bits``. ``clear`` zeroes them all at the end of its
    cycle and wins over that cycle's events. ``values`` shows the registers (zero-extended to
    64 bits), so they do not yet include the current cycle.

    Parameters
    ----------
    bits : int
        Width of each counter, 16 to 64. Narrower counters save logic on small FPGAs (a 32-bit
        CYCLES wraps after 89 s at 48 MHz); the host sees the same 64-bit values, wrapped.

    Members
    -------
    events : In(CounterEvents())
        This cycle's events.
    clear : In(1)
        Zero every counter.
    values : Out(CounterValues())
        The counters, in :class:`firmware.isa.Counter` order.
    """
    def __init__(self, bits=COUNTER_BITS):
        check_int(self, "Counter width", bits, 16, COUNTER_BITS)
        self._bits = bits
        super().__init__({
            "events": In(CounterEvents()),
            "clear":  In(1),
            "values": Out(CounterValues()),
        })

    @property
    def bits(self):
        return self._bits

    def elaborate(self, platform):
        m = Module()
        for counter in Counter:
            name = counter.name.lower()
            value = Signal(self._bits, name=f"count_{name}")
            event = 1 if counter == Counter.CYCLES else getattr(self.events, name)
            with m.If(self.clear):
                m.d.sync += value.eq(0)
            with m.Elif(event):
                m.d.sync += value.eq(value + 1)
            m.d.comb += self.values[counter].eq(value)
        return m
