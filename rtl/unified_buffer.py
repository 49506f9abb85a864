"""Unified buffer: the on-chip memory of activation rows, and the row memory it is built on."""

from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .params import check_bool, check_int

__all__ = [
    "MAX_DEPTH", "MAX_WIDTH", "COLLISIONS_BYPASSED", "RowWrite", "ReadRequest", "ReadResponse",
    "connect_read_port", "check_read_options", "read_latency", "RowMemory", "UnifiedBuffer",
]

#: The largest number of entries of any on-chip memory (16 Mi rows).
MAX_DEPTH = 1 << 24
#: The largest number of elements in one row, as for the MXU's columns.
MAX_WIDTH = 1 << 16
#: Attribute of a memory whose read ports repair their own collisions with its write port
#: (:func:`connect_read_port` with ``output_register``): the build flow tells Yosys that such
#: a read returns undefined data, so that it adds no logic after the block RAM.
COLLISIONS_BYPASSED = "puce_collisions_bypassed"


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

    Parameters
    ----------
    depth : int
        Number of entries.
    tag : shape-castable or None
        Add the ``tag`` member.

    Members
    -------
    addr : unsigned(ceil_log2(depth))
        The entry read.
    last : unsigned(1)
        Carried through unchanged to the response, e.g. to mark the end of a tile.
    tag : tag
        Only with ``tag``: carried through unchanged to the response, so that the requester
        keeps no record of its requests in flight.
    """
    def __init__(self, depth, *, tag=None):
        fields = {"addr": range(depth), "last": 1}
        if tag is not None:
            fields["tag"] = tag
        super().__init__(fields)


class ReadResponse(data.StructLayout):
    """The row a read request returned.

    Parameters
    ----------
    row : ArrayLayout
        The layout of a row.
    tag : shape-castable or None
        Add the ``tag`` member.

    Members
    -------
    data : row
        The entry's contents when the request was accepted.
    last : unsigned(1)
        The ``last`` flag of the request.
    tag : tag
        Only with ``tag``: the ``tag`` of the request.
    """
    def __init__(self, row, *, tag=None):
        fields = {"data": row, "last": 1}
        if tag is not None:
            fields["tag"] = tag
        super().__init__(fields)


def connect_read_port(m, port, request, response, *, name, buffer=True, output_register=False,
                      write_port=None):
    """Serve ``request`` (a :class:`ReadRequest` stream) from the synchronous read ``port``.

    The block RAM reads in the cycle a request is accepted, into its output latch; one
    request is accepted per cycle while responses are taken. (It also reads in a cycle with no
    request but room in the latch: its enable is ``request.ready`` alone.)

    Without ``buffer`` (for the smallest FPGAs), that latch is the response: it is presented a
    cycle after the request (read latency 1) and held, with the block RAM's enable low, until
    taken. A request is accepted when the latch is empty or its response is being taken, so
    ``request.ready`` follows ``response.ready`` combinationally.

    With ``buffer``, every row moves on from the block RAM, in the cycle after its read, into a
    two-entry queue of registers (``{name}_out0`` and ``{name}_out1``) that presents the
    responses (read latency 2). A row waits in the block RAM only while the queue is full. So
    a request is accepted unless the block RAM and the queue are both full: ``request.ready``,
    the block RAM's enable and the queue's write enables are flip-flops and the requester's
    ``valid``, never the consumer's ``response.ready``. The price is two registers per bit of a
    row and a cycle of latency.

    With ``output_register`` as well, a row passes the block RAM's own output register on its
    way (``{name}_p_row``, read latency 3): a register that takes the latch's output and
    nothing else, with a clock enable from flip-flops, so that the build flow can fold it into
    the block RAM (ECP5: ``DP16KD`` with ``REGMODE`` ``OUTREG``, whose output leaves about 1 ns
    after the clock instead of 5.8; boards/bram.py). Such a register cannot sit behind the
    multiplexer that emulates a transparent read, so ``port`` must not be transparent for the
    memory's ``write_port``, and a row read in the cycle its entry is written is repaired here
    instead: the written elements are registered with the read, travel beside it and replace
    the block RAM's (possibly undefined) ones as the row enters the queue. The memory carries
    the attribute :data:`COLLISIONS_BYPASSED` so that synthesis emulates nothing for such
    reads. Up to four responses are due.

    Without ``output_register``, make the port transparent for the memory's write port: block
    RAMs leave a read of the entry being written (through another port) undefined, so Yosys
    emulates either choice, and a transparent port needs one register for the row plus a
    multiplexer, while the default (return the old row) also delays every write by a cycle.
    """
    if output_register and not buffer:
        raise ValueError("The block RAM's output register needs the read buffer")
    if output_register and write_port is None:
        raise ValueError("The block RAM's output register needs the write port it bypasses")
    # `port_`: the row in the block RAM's output latch. Every request field but the address
    # (`last`, `tag`) goes along with it.
    side = data.StructLayout({key: field.shape for key, field in request.payload.shape()
                              if key != "addr"})
    port_valid = Signal(name=f"{name}_port_valid")
    port_side  = Signal(side, name=f"{name}_port_side")

    # The block RAM reads whenever its latch is free to take a row, wanted or not: its enable
    # is then `request.ready` alone, not the requester's `valid` logic as well (on the ULX3S
    # that logic ran across the die into the weight memory's eight clock enables, 11.7 ns).
    # A row read without a request is never presented (`port_valid` follows `accept`).
    accept = request.valid & request.ready
    m.d.comb += [
        port.addr.eq(request.payload.addr),
        port.en.eq(request.ready),
    ]
    with m.If(accept):
        m.d.sync += [port_side[key].eq(request.payload[key]) for key, _ in side]

    if not buffer:
        m.d.comb += [
            request.ready.eq(~port_valid | response.ready),
            response.valid.eq(port_valid),
            response.payload.data.eq(port.data),
            *(response.payload[key].eq(port_side[key]) for key, _ in side),
        ]
        with m.If(request.ready):
            m.d.sync += port_valid.eq(request.valid)
        return

    # The queue: entries written at `out_write` and presented from `out_read`, `out_count` of
    # them in use (its bit 1 alone says "full": it counts to 2 at most).
    out = [Signal(response.payload.shape(), name=f"{name}_out{k}", reset_less=True)
           for k in range(2)]
    out_write = Signal(name=f"{name}_out_write")
    out_read  = Signal(name=f"{name}_out_read")
    out_count = Signal(range(3), name=f"{name}_out_count")
    out_full  = out_count[1]

    if not output_register:
        # The row in the latch enters the queue.
        move = port_valid & ~out_full
        m.d.comb += request.ready.eq(~(port_valid & out_full))
        with m.If(accept):
            m.d.sync += port_valid.eq(1)
        with m.Elif(move):
            m.d.sync += port_valid.eq(0)
        row, row_side = port.data, port_side
    else:
        # `p_`: the row in the output register, with the elements written while it was read
        # (`hit`: one bit per write enable, `new`: the written row), registered at the read
        # in `port_` and moved along with it.
        granules = len(write_port.en)
        port_hit = Signal(granules, name=f"{name}_port_hit")
        port_new = Signal(port.data.shape(), name=f"{name}_port_new", reset_less=True)
        p_valid = Signal(name=f"{name}_p_valid")
        p_side  = Signal(side, name=f"{name}_p_side")
        p_hit   = Signal(granules, name=f"{name}_p_hit")
        p_new   = Signal(port.data.shape(), name=f"{name}_p_new", reset_less=True)
        p_row   = Signal(port.data.shape(), name=f"{name}_p_row", reset_less=True)

        move = p_valid & ~out_full                   # the output register's row enters the queue
        advance = port_valid & (~p_valid | ~out_full)    # the latch's row enters it
        m.d.comb += request.ready.eq(~port_valid | ~p_valid | ~out_full)
        with m.If(accept):
            m.d.sync += [
                port_valid.eq(1),
                port_hit.eq(Mux(write_port.addr == request.payload.addr, write_port.en, 0)),
                port_new.eq(write_port.data),
            ]
        with m.Elif(advance):
            m.d.sync += port_valid.eq(0)
        with m.If(advance):
            m.d.sync += [
                p_valid.eq(1),
                p_side.eq(port_side),
                p_hit.eq(port_hit),
                p_new.eq(port_new),
                p_row.eq(port.data),
            ]
        with m.Elif(move):
            m.d.sync += p_valid.eq(0)
        if granules == 1:
            row = Mux(p_hit, p_new, p_row)
        else:
            row = Signal(port.data.shape(), name=f"{name}_p_merged")
            for k in range(granules):
                m.d.comb += row[k].eq(Mux(p_hit[k], p_new[k], p_row[k]))
        row_side = p_side

    take = response.valid & response.ready
    m.d.comb += [
        response.valid.eq(out_count != 0),
        response.payload.eq(Mux(out_read, out[1], out[0])),
    ]
    for k in range(2):
        with m.If(move & (out_write == k)):
            m.d.sync += [out[k].data.eq(row),
                         *(out[k][key].eq(row_side[key]) for key, _ in side)]
    with m.If(move):
        m.d.sync += out_write.eq(~out_write)
    with m.If(take):
        m.d.sync += out_read.eq(~out_read)
    m.d.sync += out_count.eq(out_count + move - take)


def check_read_options(owner, read_buffer, output_register):
    """Raise a clear error unless the read port options ``read_buffer`` and ``output_register``
    are bools that go together (the output register needs the buffer)."""
    for name, value in (("read_buffer", read_buffer), ("output_register", output_register)):
        check_bool(owner, name, value)
    if output_register and not read_buffer:
        owner._MustUse__silence = True
        raise ValueError("output_register needs read_buffer")


def read_latency(read_buffer, output_register):
    """Cycles from accepting a read request to presenting its response, with no stall."""
    return 1 + read_buffer + output_register


class RowMemory(wiring.Component):
    """A memory of ``depth`` rows of ``width`` raw bytes, written and read a row at a time.

    Writes replace whole rows, unless the memory is built with ``masked``: then every write
    carries a byte mask and replaces only the bytes it selects (the write port has a byte-wide
    granularity, which block RAMs provide as byte enables). The storage is one
    :class:`~amaranth.lib.memory.Memory` with one write port and one synchronous read port, so
    synthesis maps it to block RAM. Entries start as zero.

    Writes are always accepted (``w.ready`` is constantly high) and take effect at the end of
    the cycle that accepts them. Reads are served in order: the response to a request accepted
    in cycle t is presented from cycle t + ``read_latency``, and is held, unchanged, until
    taken. While ``r_data.ready`` stays high, a request is accepted every cycle. With
    ``read_buffer`` (the default) the latency is 2, up to three responses are due, and
    ``r_addr.ready`` does not depend on ``r_data.ready``; without it the latency is 1. The
    block RAM's own output register (``output_register``) adds a cycle, and a fourth response
    that may be due (:func:`connect_read_port`).

    Ordering: a read returns the row as written by every write accepted in the same cycle or
    earlier (``write_latency`` = 0 cycles or more before the read); with ``write_register``,
    by every write accepted a cycle or more earlier (``write_latency`` = 1). Writes accepted
    later, even while the response still waits, do not change it.

    Parameters
    ----------
    width : int
        Bytes per row, 1 to ``MAX_WIDTH``.
    depth : int
        Number of rows, 1 to ``MAX_DEPTH``.
    masked : bool
        Writes carry a byte mask (``RowWrite(..., masked=True)``).
    tag : shape-castable or None
        Read requests carry a ``tag`` of this shape to their responses.
    read_buffer : bool
        Pass every row through a queue of two registers, so that ``r_addr.ready`` does not
        depend on ``r_data.ready`` and the block RAM's output ends at a register (default
        True; read latency 2; :func:`connect_read_port`). Without it the block RAM's output
        register is the response (read latency 1), and a request is accepted only when it is
        empty or its response is taken in the same cycle.
    output_register : bool
        Pass every row through the block RAM's own output register as well (default False; read
        latency 3; needs ``read_buffer``): on ECP5 the build flow folds it into the block RAM,
        whose output is then fast.
    write_register : bool
        Register every write before it reaches the block RAM (default False; write latency 1).
        The block RAMs of a wide memory are spread over the die: a register lets the placer put
        the write's address, data and enables between the writers and them.

    Members
    -------
    w : In(stream.Signature(RowWrite(ArrayLayout(unsigned(8), width), depth, masked=masked)))
        Row writes.
    r_addr : In(stream.Signature(ReadRequest(depth, tag=tag)))
        Read requests.
    r_data : Out(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), width), tag=tag)))
        Read responses, one per request, in order.
    """
    def __init__(self, width, depth, *, masked=False, tag=None, read_buffer=True,
                 output_register=False, write_register=False):
        check_int(self, "Width", width, 1, MAX_WIDTH)
        check_int(self, "Depth", depth, 1, MAX_DEPTH)
        for name, value in (("masked", masked), ("write_register", write_register)):
            check_bool(self, name, value)
        check_read_options(self, read_buffer, output_register)
        if tag is not None:
            try:
                Shape.cast(tag)
            except TypeError:
                self._MustUse__silence = True
                raise TypeError(f"tag must be a shape or None, not {tag!r}") from None
        self._width = width
        self._depth = depth
        self._masked = masked
        self._tag = tag
        self._read_buffer = read_buffer
        self._output_register = output_register
        self._write_register = write_register
        self._row = data.ArrayLayout(unsigned(8), width)
        super().__init__({
            "w":      In(stream.Signature(RowWrite(self._row, depth, masked=masked))),
            "r_addr": In(stream.Signature(ReadRequest(depth, tag=tag))),
            "r_data": Out(stream.Signature(ReadResponse(self._row, tag=tag))),
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
    def tag(self):
        """The shape of the tag that read requests carry, or None."""
        return self._tag

    @property
    def read_buffer(self):
        """Whether rows pass through a queue of registers (:func:`connect_read_port`)."""
        return self._read_buffer

    @property
    def output_register(self):
        """Whether rows pass the block RAM's own output register (:func:`connect_read_port`)."""
        return self._output_register

    @property
    def write_register(self):
        """Whether writes pass a register before they reach the block RAM."""
        return self._write_register

    @property
    def row_layout(self):
        """The layout of one row, ``ArrayLayout(unsigned(8), width)``."""
        return self._row

    @property
    def read_latency(self):
        """Cycles from accepting a read request to presenting its response (no stall): 1, one
        more with ``read_buffer`` and one more with ``output_register``."""
        return read_latency(self._read_buffer, self._output_register)

    @property
    def write_latency(self):
        """A read accepted this many cycles or more after a write sees it."""
        return int(self._write_register)

    def elaborate(self, platform):
        m = Module()

        attrs = {COLLISIONS_BYPASSED: 1} if self._output_register else None
        m.submodules.memory = memory = Memory(shape=self._row, depth=self._depth, init=[],
                                              attrs=attrs)
        # A masked memory enables each byte on its own (granularity: one array element).
        write = memory.write_port(granularity=1 if self._masked else None)
        # A read in the cycle of a write to the same entry returns the new row: the block RAM
        # makes it so (transparent), or the read port's bypass does (output register).
        read = memory.read_port(transparent_for=() if self._output_register else (write,))

        m.d.comb += self.w.ready.eq(1)
        if self._write_register:
            w_valid = Signal(name="w_valid")
            w_row   = Signal.like(self.w.payload, name="w_row")
            m.d.sync += [w_valid.eq(self.w.valid), w_row.eq(self.w.payload)]
        else:
            w_valid, w_row = self.w.valid, self.w.payload
        m.d.comb += [
            write.addr.eq(w_row.addr),
            write.data.eq(w_row.data),
        ]
        if self._masked:
            m.d.comb += write.en.eq(Mux(w_valid, w_row.mask, 0))
        else:
            m.d.comb += write.en.eq(w_valid)
        connect_read_port(m, read, self.r_addr, self.r_data, name="read",
                          buffer=self._read_buffer, output_register=self._output_register,
                          write_port=write)

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
    tag : shape-castable or None
        Read requests carry a ``tag`` of this shape to their responses (the MATMUL unit's row
        flags).
    read_buffer : bool
        Pass rows through a queue of registers (default True; :class:`RowMemory`).
    output_register : bool
        And through the block RAM's own output register (default False; :class:`RowMemory`).
    write_register : bool
        Register writes before the block RAM (default False; :class:`RowMemory`).

    Members
    -------
    w : In(stream.Signature(RowWrite(ArrayLayout(unsigned(8), rows), depth, masked=masked)))
        Row writes.
    r_addr : In(stream.Signature(ReadRequest(depth, tag=tag)))
        Read requests.
    r_data : Out(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), rows), tag=tag)))
        Read responses, one per request, in order.
    """
    def __init__(self, rows=8, depth=1024, *, masked=False, tag=None, read_buffer=True,
                 output_register=False, write_register=False):
        check_int(self, "Row count", rows, 1, MAX_WIDTH)
        super().__init__(rows, depth, masked=masked, tag=tag, read_buffer=read_buffer,
                         output_register=output_register, write_register=write_register)

    @property
    def rows(self):
        return self.width
