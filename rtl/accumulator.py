"""Accumulator memory: rows of int32 sums that MXU results overwrite or add to."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .params import check_bool, check_int
from .unified_buffer import (COLLISIONS_BYPASSED, MAX_DEPTH, MAX_WIDTH, ReadRequest, ReadResponse,
                             check_read_options, connect_read_port, read_latency)

__all__ = ["AccumulatorWrite", "AccumulatorMemory", "WRITE_LATENCY"]

#: The largest :attr:`AccumulatorMemory.write_latency`, for the units that must wait out the
#: pipeline whichever it is.
WRITE_LATENCY = 3


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
    addresses. Each is a read-modify-write: read the old row (synchronous read port) in the
    cycle the write is accepted, add in the next, write the sum in the one after. With
    ``read_register``, the old row is first registered as it leaves the block RAM, a cycle
    more: that keeps a slow block RAM output (ECP5: almost 6 ns from the clock) out of the
    adders' cycle. Back-to-back accumulates to the same entry are exact: a write that follows
    another to its entry too closely for the read to see it takes that one's sum instead of the
    stale row (forwarding). Without ``read_register``, it forwards the sum being written, and a
    later write reads the row as it is being written (transparent read port). With
    ``read_register``, the read port is not transparent, so that the old row's register is the
    block RAM's own output register (which the ECP5 flow folds in, boards/bram.py, and which
    presents the row about 1 ns after the clock instead of almost 6), and the memory carries
    :data:`rtl.unified_buffer.COLLISIONS_BYPASSED`: it forwards the sums written zero, one and
    two cycles before the add, the more recent first.

    With ``split_carry`` each sum is added in two halves, the low 16 bits and, a cycle later,
    the high 16 bits with the low half's carry, which is registered between them. The adders'
    cycle then holds a 16-bit carry chain instead of a 32-bit one: on the iCE40UP5K, 32 carries
    take about 10 ns, half of a 48 MHz cycle. Each half has its own block RAMs (as many as the
    whole sums need) and its own forwarding, the high half's running a cycle behind, and the
    copy for reads takes whole sums, a cycle later.

    Reads use a copy of the storage that every write updates as well (``out_memory``: block
    RAMs have too few ports for one) and behave as in :class:`rtl.unified_buffer.RowMemory`:
    one per cycle, responses held until taken, latency 2 with ``read_buffer`` (a queue of
    registers after the block RAM), 1 without, one more with ``output_register``.

    Ordering: a read accepted in cycle t returns the row as updated by exactly the writes
    accepted in cycles up to t - ``write_latency`` (2, or 3 with ``read_register`` or
    ``split_carry``); more recent writes are still in the pipeline and are not seen.

    Parameters
    ----------
    cols : int
        C, sums per row (the MXU's column count), 1 to ``MAX_WIDTH``.
    depth : int
        Number of rows, 1 to ``MAX_DEPTH``.
    read_register : bool
        Register the old row between the block RAM and the adders (default True). It costs a
        cycle of ``write_latency`` and about ``4 * 32 * cols`` flip-flops, which the smallest
        FPGAs cannot spare.
    split_carry : bool
        Add the sums' two halves in consecutive cycles (default False), for a carry chain half
        as long: a cycle more of ``write_latency``, and about ``60 * cols`` flip-flops more, of
        which synthesis merges about half with copies already there (53 in all for 2 columns).
        Needs ``read_register`` False: the two cycles together would exceed
        :data:`WRITE_LATENCY`.
    read_buffer : bool
        Pass read responses through a queue of two registers, so that ``r_addr.ready`` does not
        depend on ``r_data.ready`` (default True; read latency 2;
        :func:`rtl.unified_buffer.connect_read_port`).
    output_register : bool
        Pass read responses through the copy's own output register as well (default False;
        read latency 3; needs ``read_buffer``).

    Members
    -------
    w : In(stream.Signature(AccumulatorWrite(cols, depth)))
        Row writes and accumulates.
    r_addr : In(stream.Signature(ReadRequest(depth)))
        Read requests.
    r_data : Out(stream.Signature(ReadResponse(ArrayLayout(signed(32), cols))))
        Read responses, one per request, in order.
    """
    def __init__(self, cols=8, depth=1024, *, read_register=True, read_buffer=True,
                 output_register=False, split_carry=False):
        check_int(self, "Column count", cols, 1, MAX_WIDTH)
        check_int(self, "Depth", depth, 1, MAX_DEPTH)
        check_bool(self, "Read register", read_register)
        check_read_options(self, read_buffer, output_register)
        check_bool(self, "split_carry", split_carry)
        if split_carry and read_register:
            self._MustUse__silence = True
            raise ValueError(f"split_carry needs read_register=False: with both, a write would "
                             f"take {WRITE_LATENCY + 1} cycles to be seen, more than the "
                             f"WRITE_LATENCY ({WRITE_LATENCY}) the controller waits out")
        self._split_carry = split_carry
        self._read_buffer = read_buffer
        self._output_register = output_register
        self._cols = cols
        self._depth = depth
        self._read_register = read_register
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
    def read_register(self):
        return self._read_register

    @property
    def split_carry(self):
        return self._split_carry

    @property
    def read_buffer(self):
        return self._read_buffer

    @property
    def output_register(self):
        return self._output_register

    @property
    def row_layout(self):
        """The layout of one row, ``ArrayLayout(signed(32), cols)``."""
        return self._row

    @property
    def read_latency(self):
        """Cycles from accepting a read request to presenting its response (no stall): 1, one
        more with ``read_buffer`` and one more with ``output_register``."""
        return read_latency(self._read_buffer, self._output_register)

    @property
    def write_latency(self):
        """A read accepted this many cycles or more after a write sees it: 2, one more with
        ``read_register`` or ``split_carry``."""
        return 3 if self._read_register or self._split_carry else 2

    def elaborate(self, platform):
        m = Module()
        cols, depth = self._cols, self._depth

        # The slices of each sum that are added in turn, (name, first bit, width): the whole sum
        # at once, or with `split_carry` the low half and, a cycle later, the high half. Each
        # slice has its own read-modify-write pipeline and block RAMs, the high half's running
        # a cycle behind the low half's, on the writes the low half's first stage holds.
        if self._split_carry:
            slices = [("lo", 0, 16), ("hi", 16, 16)]
        else:
            slices = [("", 0, 32)]

        # With the read register the read port's collisions are repaired by forwarding, so
        # that nothing stands between the block RAM and that register; without it the port is
        # transparent: a read sees the write done in the same cycle.
        attrs = {COLLISIONS_BYPASSED: 1} if self._read_register else None
        memories = []
        for name, _, width in slices:
            shape = self._row if not name else data.ArrayLayout(width, cols)
            memory = Memory(shape=shape, depth=depth, init=[], attrs=attrs)
            m.submodules["_".join(filter(None, ("memory", name)))] = memory
            write = memory.write_port()
            rmw_read = memory.read_port(transparent_for=() if self._read_register else (write,))
            memories.append((write, rmw_read))
        # The copy for reads; with the output register its read port repairs its own
        # collisions instead (connect_read_port).
        attrs = {COLLISIONS_BYPASSED: 1} if self._output_register else None
        m.submodules.out_memory = out_memory = Memory(shape=self._row, depth=depth, init=[],
                                                      attrs=attrs)
        out_write = out_memory.write_port()
        out_read = out_memory.read_port(
            transparent_for=() if self._output_register else (out_write,))

        m.d.comb += self.w.ready.eq(1)
        a_valid, a = self.w.valid, self.w.payload
        carry = None
        written = []
        for (name, first, width), (write, rmw_read) in zip(slices, memories):
            s_valid, s, a_valid, a, carry = self._slice(
                m, name, first, width, write, rmw_read, a_valid, a, carry)
            written.append((s_valid, s))

        if self._split_carry:
            # The copy takes whole sums: the low half waits a cycle for the high half.
            (_, s_lo), (s_valid, s_hi) = written
            w_lo = Signal(data.ArrayLayout(16, cols), name="w_lo_row", reset_less=True)
            m.d.sync += w_lo.eq(s_lo.row)
            m.d.comb += [
                out_write.en.eq(s_valid),
                out_write.addr.eq(s_hi.addr),
                out_write.data.eq(Cat(Cat(w_lo[j], s_hi.row[j]) for j in range(cols))),
            ]
        else:
            s_valid, s = written[0]
            m.d.comb += [
                out_write.en.eq(s_valid),
                out_write.addr.eq(s.addr),
                out_write.data.eq(s.row),
            ]

        connect_read_port(m, out_read, self.r_addr, self.r_data, name="out_read",
                          buffer=self._read_buffer, output_register=self._output_register,
                          write_port=out_write)

        return m

    def _slice(self, m, name, first, width, write, rmw_read, a_valid, a, carry):
        """One slice's read-modify-write pipeline, for the writes ``a`` (valid ``a_valid``).

        ``carry`` (None for the first slice) holds the carries into the slice's sums, one per
        column, in the cycle it adds. Returns the stage that writes the slice's sums (valid
        and ``addr``, ``row``), the stage after ``a`` (the next slice's writes) and the
        registered carries out of the slice's sums (None for a whole sum).
        """
        cols, depth = self._cols, self._depth
        row = self._row if not name else data.ArrayLayout(width, cols)

        def named(base):
            return f"{name}_{base}" if name else base

        # Pipeline registers, by stage: `b_` holds the write while its old row is read, `r_`
        # (with the read register) the old row as read and the write, `s_` the sum being
        # written, `t_` and `u_` (with the read register) the sums written one and two cycles
        # ago. Stage `a` is the write being accepted on `w`. Only the valid bits need a reset.
        b = Signal(AccumulatorWrite(cols, depth), name=named("b_write"), reset_less=True)
        b_valid = Signal(name=named("b_valid"))
        s = Signal(data.StructLayout({"addr": range(depth), "row": row}), name=named("s_write"),
                   reset_less=True)
        s_valid = Signal(name=named("s_valid"))

        m.d.comb += [
            rmw_read.en.eq(a_valid),
            rmw_read.addr.eq(a.addr),
        ]
        m.d.sync += [
            b_valid.eq(a_valid),
            b.eq(a),
        ]

        # The stage that adds (`add`, its old row as read `read`) and the one before it, where
        # the forwarding is decided, so that the address compares are not in the path into the
        # adders.
        if self._read_register:
            r = Signal(AccumulatorWrite(cols, depth), name="r_write", reset_less=True)
            r_valid = Signal(name="r_valid")
            r_read = Signal(self._row, name="r_read", reset_less=True)
            t_valid = Signal(name="t_valid")
            t_addr = Signal(range(depth), name="t_addr", reset_less=True)
            t_row = Signal(self._row, name="t_row", reset_less=True)
            u_row = Signal(self._row, name="u_row", reset_less=True)
            m.d.sync += [
                r_valid.eq(b_valid),
                r.eq(b),
                r_read.eq(rmw_read.data),
                t_valid.eq(s_valid),
                t_addr.eq(s.addr),
                t_row.eq(s.row),
                u_row.eq(t_row),
            ]
            add, add_valid, read = r, r_valid, r_read
            before = b
        else:
            add, add_valid, read = b, b_valid, rmw_read.data
            before = a

        # The row `add` adds to. Its read saw every write done before it; missing are the sum
        # in `s` (written now) and, with the read register, those in `t` and `u` (written one
        # and two cycles ago, the latter as the row was read; without the read register the
        # transparent port saw that one): forward them, the more recent first. The forwarding
        # decisions and the `accumulate` flag each select 32 * C bits across the adders, so
        # every column has copies of its own, which synthesis keeps apart (`keep`): one
        # flip-flop driving them all was the ULX3S's critical path (8.4 ns of routing).
        def copies(base):
            return [Signal(name=f"{named(base)}{j}", attrs={"keep": 1}) for j in range(cols)]

        forward_s = copies("forward_s")
        forward_t = copies("forward_t") if self._read_register else None
        forward_u = copies("forward_u") if self._read_register else None
        accumulate = copies(f"{'r' if self._read_register else 'b'}_accumulate")
        for j in range(cols):
            m.d.sync += [
                forward_s[j].eq(add_valid & (add.addr == before.addr)),
                accumulate[j].eq(before.accumulate),
            ]
            if self._read_register:
                m.d.sync += [
                    forward_t[j].eq(s_valid & (s.addr == before.addr)),
                    forward_u[j].eq(t_valid & (t_addr == before.addr)),
                ]
        old = Signal(row, name=named("old_row"))
        for j in range(cols):
            column = read[j]
            if self._read_register:
                column = Mux(forward_t[j], t_row[j], Mux(forward_u[j], u_row[j], column))
            m.d.comb += old[j].eq(Mux(forward_s[j], s.row[j], column))

        m.d.sync += [
            s_valid.eq(add_valid),
            s.addr.eq(add.addr),
        ]
        if not name:
            # Assigning to a 32-bit element drops the carry: the wrap-around is two's complement.
            for j in range(cols):
                m.d.sync += s.row[j].eq(Mux(accumulate[j], old[j], 0) + add.data[j])
            carry_out = None
        else:
            # A carry in enters the chain through a bit below the operands (1 + carry carries
            # exactly when carry is set), so that each half is one carry chain; the high half
            # drops its carry out: the wrap-around is two's complement.
            carry_out = Signal(cols, name=named("carry")) if carry is None else None
            for j in range(cols):
                operand = add.data[j][first:first + width]
                if carry is None:
                    total = Mux(accumulate[j], old[j], 0) + operand
                    m.d.sync += [
                        s.row[j].eq(total[:width]),
                        carry_out[j].eq(total[width]),
                    ]
                else:
                    total = Cat(1, Mux(accumulate[j], old[j], 0)) + Cat(carry[j], operand)
                    m.d.sync += s.row[j].eq(total[1:width + 1])

        m.d.comb += [
            write.en.eq(s_valid),
            write.addr.eq(s.addr),
            write.data.eq(s.row),
        ]
        return s_valid, s, b_valid, b, carry_out
