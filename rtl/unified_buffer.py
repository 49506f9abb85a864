"""Unified buffer: the on-chip memory of activation rows, and the row memory it is built on."""

from amaranth.hdl import Module, Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .params import check_int

__all__ = [
    "MAX_DEPTH", "MAX_WIDTH", "RowWrite", "ReadRequest", "ReadResponse", "connect_read_port",
    "RowMemory", "UnifiedBuffer",
]

#: The largest number of entries of any on-chip memory (16 Mi rows).
MAX_DEPTH = 1 << 24
#: The largest number of elements in one row, as for the MXU's columns.
MAX_WIDTH = 1 << 16


class RowWrite(data.StructLayout):
    """A write of one row, whole or (with ``masked``) only some of its elements.

    Parameters
    ----------
    row : ArrayLayout
        The layout of a row.
    depth : int
        Number of entries.
    masked : bool
        Add the ``mask`` member: a per-element write enable.

    Members
    -------
    addr : unsigned(ceil_log2(depth))
        The entry written.
    data : row
        Its new contents.
    mask : unsigned(row.length)
        Only if ``masked``: bit k set writes element k; elements whose bit is clear keep their
        old contents.
    """
    def __init__(self, row, depth, *, masked=False):
        fields = {"addr": range(depth), "data": row}
        if masked:
            fields["mask"] = unsigned(row.length)
        super().__init__(fields)


class ReadRequest(data.StructLayout):
    """A request to read one row.

    Members
    -------
    addr : unsigned(ceil_log2(depth))
        The entry read.
    last : unsigned(1)
        Carried through unchanged to the response, e.g. to mark the end of a tile.
    """
    def __init__(self, depth):
        super().__init__({"addr": range(depth), "last": 1})


class ReadResponse(data.StructLayout):
    """The row a read request returned.

    Members
    -------
    data : row
        The entry's contents when the request was accepted.
    last : unsigned(1)
        The ``last`` flag of the request.
    """
    def __init__(self, row):
        super().__init__({"data": row, "last": 1})


def connect_read_port(m, port, request, response):
    """Serve ``request`` (a :class:`ReadRequest` stream) from the synchronous read ``port``.

    The port's output register is the only response buffer: a request is accepted only if that
    register will be free at the next clock edge, i.e. it is empty or its response is being
    taken. While the response waits, the port's enable is low so the register holds its data.
    This gives a read latency of one cycle and one read per cycle while ``response.ready`` is
    high, without a skid buffer, at the cost of a combinational path from ``response.ready`` to
    ``request.ready``. The port stays a plain synchronous read port with a clock enable, which
    FPGA block RAMs provide.

    Make the port transparent for the memory's write port: block RAMs leave a read of the entry
    being written (through another port) undefined, so Yosys emulates either choice, and a
    transparent port needs one register for the row plus a multiplexer, while the default
    (return the old row) also delays every write by a cycle.
    """
    m.d.comb += [
        request.ready.eq(~response.valid | response.ready),
        port.addr.eq(request.payload.addr),
        port.en.eq(request.valid & request.ready),
        response.payload.data.eq(port.data),
    ]
    with m.If(request.ready):
        m.d.sync += [
            response.valid.eq(request.valid),
            response.payload.last.eq(request.payload.last),
        ]


class RowMemory(wiring.Component):
    """A memory of ``depth`` rows of ``width`` raw bytes, written and read a row at a time.

    Writes replace whole rows, unless the memory is built with ``masked``: then every write
    carries a byte mask and replaces only the bytes it selects (the write port has a byte-wide
    granularity, which block RAMs provide as byte enables). The storage is one
    :class:`~amaranth.lib.memory.Memory` with one write port and one synchronous read port, so
    synthesis maps it to block RAM. Entries start as zero.

    Writes are always accepted (``w.ready`` is constantly high) and take effect at the end of
    the cycle that accepts them. Reads are served in order: the response to a request accepted
    in cycle t is presented from cycle t + 1 (``read_latency``), and is held, unchanged, until
    taken. While ``r_data.ready`` stays high, a request is accepted every cycle.

    Ordering: a read returns the row as written by every write accepted in the same cycle or
    earlier (``write_latency`` = 0 cycles or more before the read). Writes accepted later, even
    while the response still waits, do not change it.

    Parameters
    ----------
    width : int
        Bytes per row, 1 to ``MAX_WIDTH``.
    depth : int
        Number of rows, 1 to ``MAX_DEPTH``.
    masked : bool
        Writes carry a byte mask (``RowWrite(..., masked=True)``).

    Members
    -------
    w : In(stream.Signature(RowWrite(ArrayLayout(unsigned(8), width), depth, masked=masked)))
        Row writes.
    r_addr : In(stream.Signature(ReadRequest(depth)))
        Read requests.
    r_data : Out(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), width))))
        Read responses, one per request, in order.
    """
    def __init__(self, width, depth, *, masked=False):
        check_int(self, "Width", width, 1, MAX_WIDTH)
        check_int(self, "Depth", depth, 1, MAX_DEPTH)
        if not isinstance(masked, bool):
            self._MustUse__silence = True
            raise TypeError(f"masked must be a bool, not {masked!r}")
        self._width = width
        self._depth = depth
        self._masked = masked
        self._row = data.ArrayLayout(unsigned(8), width)
        super().__init__({
            "w":      In(stream.Signature(RowWrite(self._row, depth, masked=masked))),
            "r_addr": In(stream.Signature(ReadRequest(depth))),
            "r_data": Out(stream.Signature(ReadResponse(self._row))),
        })

    @property
    def width(self):
        return self._width

    @property
    def depth(self):
        return self._depth

    @property
    def masked(self):
        """Whether writes carry a byte mask."""
        return self._masked

    @property
    def row_layout(self):
        """The layout of one row, ``ArrayLayout(unsigned(8), width)``."""
        return self._row

    @property
    def read_latency(self):
        """Cycles from accepting a read request to presenting its response (no stall)."""
        return 1

    @property
    def write_latency(self):
        """A read accepted this many cycles or more after a write sees it."""
        return 0

    def elaborate(self, platform):
        m = Module()

        m.submodules.memory = memory = Memory(shape=self._row, depth=self._depth, init=[])
        # A masked memory enables each byte on its own (granularity: one array element).
        write = memory.write_port(granularity=1 if self._masked else None)
        # Transparent: a read in the cycle of a write to the same entry returns the new row.
        read = memory.read_port(transparent_for=(write,))

        m.d.comb += [
            self.w.ready.eq(1),
            write.addr.eq(self.w.payload.addr),
            write.data.eq(self.w.payload.data),
        ]
        if self._masked:
            m.d.comb += write.en.eq(Mux(self.w.valid, self.w.payload.mask, 0))
        else:
            m.d.comb += write.en.eq(self.w.valid)
        connect_read_port(m, read, self.r_addr, self.r_data)

        return m


class UnifiedBuffer(RowMemory):
    """The unified buffer: ``depth`` activation rows of ``rows`` raw bytes.

    A :class:`RowMemory` whose rows are the ``data`` field of an
    :class:`rtl.mxu.ActivationRow`; whether the bytes are int8 or uint8 is up to the reader.
    It holds the inputs of a layer, and receives the outputs of the post-processing unit.

    Parameters
    ----------
    rows : int
        R, bytes per row (the MXU's row count), 1 to ``MAX_WIDTH``.
    depth : int
        Number of rows, 1 to ``MAX_DEPTH``.
    masked : bool
        Writes carry a byte mask, so that the post-processing unit can write C bytes at a lane
        offset into a row of R bytes and leave the others as they are.

    Members
    -------
    w : In(stream.Signature(RowWrite(ArrayLayout(unsigned(8), rows), depth, masked=masked)))
        Row writes.
    r_addr : In(stream.Signature(ReadRequest(depth)))
        Read requests.
    r_data : Out(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), rows))))
        Read responses, one per request, in order.
    """
    def __init__(self, rows=8, depth=1024, *, masked=False):
        check_int(self, "Row count", rows, 1, MAX_WIDTH)
        super().__init__(rows, depth, masked=masked)

    @property
    def rows(self):
        return self.width
