"""Accumulator memory: rows of int32 sums that MXU results overwrite or add to."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .params import check_int
from .unified_buffer import MAX_DEPTH, MAX_WIDTH, ReadRequest, ReadResponse, connect_read_port

__all__ = ["AccumulatorWrite", "AccumulatorMemory"]


class AccumulatorWrite(data.StructLayout):
    """A write of one row of sums into the accumulator memory.

    Members
    -------
    addr : unsigned(ceil_log2(depth))
        The entry written.
    data : ArrayLayout(signed(32), cols)
        The row to store or to add.
    accumulate : unsigned(1)
        Store ``old + data`` (each element wrapping modulo 2**32) if set, ``data`` otherwise.
    """
    def __init__(self, cols, depth):
        super().__init__({
            "addr":       range(depth),
            "data":       data.ArrayLayout(signed(32), cols),
            "accumulate": 1,
        })


class AccumulatorMemory(wiring.Component):
    """``depth`` rows of ``cols`` int32 sums, overwritten or accumulated into a row at a time.

    A write with ``accumulate`` clear stores its row; with ``accumulate`` set it stores the
    element-wise sum of the old row and its row. Sums wrap around like two's complement int32:
    they are taken modulo 2**32 into -2**31..2**31-1, so 2**31-1 + 1 gives -2**31. The MXU never
    overflows, but adding many K tiles can; saturation, if wanted, is for the post-processing
    unit. Entries start as zero.

    Writes are always accepted (``w.ready`` is constantly high), one per cycle, in any mix of
    addresses. Each is a three-stage read-modify-write: read the old row (synchronous read
    port) in the cycle the write is accepted, add in the next, write the sum in the third.
    Back-to-back accumulates to the same entry are exact: a write one cycle behind another to
    its entry takes that one's pending sum instead of the stale row (forwarding), and a write
    two cycles behind reads the row as it is being written (transparent read port).

    Reads use a second read port of the same storage (synthesis duplicates the block RAM for
    it) and behave as in :class:`rtl.unified_buffer.RowMemory`: one-cycle latency, one per
    cycle, responses held until taken.

    Ordering: a read accepted in cycle t returns the row as updated by exactly the writes
    accepted in cycles up to t - 2 (``write_latency`` = 2 cycles or more before the read); more
    recent writes are still in the pipeline and are not seen.

    Parameters
    ----------
    cols : int
        C, sums per row (the MXU's column count), 1 to ``MAX_WIDTH``.
    depth : int
        Number of rows, 1 to ``MAX_DEPTH``.

    Members
    -------
    w : In(stream.Signature(AccumulatorWrite(cols, depth)))
        Row writes and accumulates.
    r_addr : In(stream.Signature(ReadRequest(depth)))
        Read requests.
    r_data : Out(stream.Signature(ReadResponse(ArrayLayout(signed(32), cols))))
        Read responses, one per request, in order.
    """
    def __init__(self, cols=8, depth=1024):
        check_int(self, "Column count", cols, 1, MAX_WIDTH)
        check_int(self, "Depth", depth, 1, MAX_DEPTH)
        self._cols = cols
        self._depth = depth
        self._row = data.ArrayLayout(signed(32), cols)
        super().__init__({
            "w":      In(stream.Signature(AccumulatorWrite(cols, depth))),
            "r_addr": In(stream.Signature(ReadRequest(depth))),
            "r_data": Out(stream.Signature(ReadResponse(self._row))),
        })

    @property
    def cols(self):
        return self._cols

    @property
    def depth(self):
        return self._depth

    @property
    def row_layout(self):
        """The layout of one row, ``ArrayLayout(signed(32), cols)``."""
        return self._row

    @property
    def read_latency(self):
        """Cycles from accepting a read request to presenting its response (no stall)."""
        return 1

    @property
    def write_latency(self):
        """A read accepted this many cycles or more after a write sees it."""
        return 2

    def elaborate(self, platform):
        m = Module()
        cols, depth = self._cols, self._depth

        m.submodules.memory = memory = Memory(shape=self._row, depth=depth, init=[])
        write = memory.write_port()
        # Both read ports are transparent: a read sees the write done in the same cycle.
        rmw_read = memory.read_port(transparent_for=(write,))
        out_read = memory.read_port(transparent_for=(write,))

        # Pipeline registers, by stage: `b_` reads the old row and adds, `c_` writes the sum
        # (stage `a` is the write being accepted on `w`). Only the valid bits need a reset.
        b = Signal(AccumulatorWrite(cols, depth), name="b_write", reset_less=True)
        b_valid = Signal(name="b_valid")
        c = Signal(data.StructLayout({"addr": range(depth), "row": self._row}), name="c_write",
                   reset_less=True)
        c_valid = Signal(name="c_valid")

        m.d.comb += [
            self.w.ready.eq(1),
            rmw_read.en.eq(self.w.valid),
            rmw_read.addr.eq(self.w.payload.addr),
        ]
        m.d.sync += [
            b_valid.eq(self.w.valid),
            b.eq(self.w.payload),
        ]

        # The row `b` adds to. Its read, a cycle ago, saw every write up to the one done then;
        # only the sum in `c`, written now, is missing: forward it. Whether to is decided a
        # stage early, as the write is accepted (the one in `b` then is the one in `c` now), so
        # the address compare is not in the path into the adders.
        b_forward = Signal(name="b_forward")
        m.d.sync += b_forward.eq(b_valid & (b.addr == self.w.payload.addr))
        old = Signal(self._row, name="b_old")
        with m.If(b_forward):
            m.d.comb += old.eq(c.row)
        with m.Else():
            m.d.comb += old.eq(rmw_read.data)

        # Assigning to a 32-bit element drops the carry: the wrap-around is two's complement.
        m.d.sync += [
            c_valid.eq(b_valid),
            c.addr.eq(b.addr),
        ]
        for j in range(cols):
            m.d.sync += c.row[j].eq(Mux(b.accumulate, old[j], 0) + b.data[j])

        m.d.comb += [
            write.en.eq(c_valid),
            write.addr.eq(c.addr),
            write.data.eq(c.row),
        ]

        connect_read_port(m, out_read, self.r_addr, self.r_data)

        return m
