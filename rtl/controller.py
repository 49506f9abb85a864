"""The controller: decodes the instruction stream and issues it, in order, to concurrent units.

Block diagram (``->`` streams, ``=>`` start commands from the decoder)::

    host i ->[ word assembler ]--> decoder / scoreboard ==> units below
            \\-> PayloadReceiver -> UB.w (rows), WM.w (rows), PPU config register
                                    (bytes of WRITE_UB / WRITE_WM / SET_PPU payloads)
      WeightLoader   WM.r_addr -> WM.r_data -> MXU.w                        (LOAD_WEIGHTS)
      MatmulUnit     UB.r_addr -> UB.r_data -> MXU.x;  MXU.o -> ACC.w       (MATMUL)
      ActivateUnit   ACC.r_addr -> ACC.r_data -> PPU.i;  PPU.o -> UB.w      (ACTIVATE)
      ResponseSender UB/ACC.r_addr -> r_data -> bytes -> host o  (READ_*, SYNC, errors)
      PerformanceCounters                                                   (READ_COUNTERS)

Shared ports: the UB read port (MatmulUnit, ResponseSender), the ACC read port (ActivateUnit,
ResponseSender) and the UB write port (PayloadReceiver, ActivateUnit). The scoreboard lets one
unit at a time send requests on a read port; a small register next to the port's response
register remembers whose request it holds, so the next unit can start requesting while the
previous one's last response still waits.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from firmware.isa import SYNC_WORD, WORD, ErrorCode, Flag, Opcode
from .accumulator import WRITE_LATENCY as ACC_WRITE_LATENCY
from .accumulator import AccumulatorWrite
from .counters import COUNTER_BITS, PerformanceCounters
from .params import check_bool, check_int
from .host_link import (ADDR_BITS, PayloadKind, PayloadReceiver, ResponseKind, ResponseSender,
                        RowRange, check_geometry, overlaps, row_shape)
from .mxu import ActivationRow, ResultRow, WeightRow
from .ppu import AccumulatorRow, PostProcessorConfig, QuantizedRow
from .skid import SkidBuffer
from .unified_buffer import ReadRequest, ReadResponse, RowWrite

__all__ = [
    "MATMUL_QUEUE", "InstructionWord", "PendingRange", "memory_signature",
    "LoadCommand", "WeightLoader", "MatmulCommand", "MatmulRowTag", "MatmulUnit", "ActivateCommand",
    "ActivateUnit", "Controller",
]

#: MATMUL instructions whose accumulator writes may be in flight at once (a power of 2: the
#: queue's pointers wrap around).
MATMUL_QUEUE = 4


class InstructionWord(data.StructLayout):
    """An instruction word as it arrives: eight bytes, little-endian.

    Members
    -------
    opcode, flags : unsigned(8)
        Bytes 0 and 1.
    a, b, n : unsigned(16)
        Bytes 2-3, 4-5 and 6-7.
    """
    def __init__(self):
        super().__init__({"opcode": 8, "flags": 8, "a": ADDR_BITS, "b": ADDR_BITS,
                          "n": ADDR_BITS})


class PendingRange(data.StructLayout):
    """A row range with a valid bit: rows a MATMUL has still to write into the accumulators.

    Parameters
    ----------
    depth : int
        Rows in the accumulator memory.

    Members
    -------
    valid : unsigned(1)
        The entry is in use.
    range : RowRange(depth)
        The rows.
    """
    def __init__(self, depth):
        super().__init__({"valid": 1, "range": RowRange(depth)})


def memory_signature(write, depth, row, tag=None):
    """The controller's side of an on-chip memory: it writes, requests reads, takes responses.

    ``write`` is the layout of a write, ``row`` that of a row, ``tag`` that of the read
    requests' tag (or None).
    """
    return wiring.Signature({
        "w":      Out(stream.Signature(write)),
        "r_addr": Out(stream.Signature(ReadRequest(depth, tag=tag))),
        "r_data": In(stream.Signature(ReadResponse(row, tag=tag))),
    })


def _flag(flags, flag):
    """Whether ``flag`` (a :class:`firmware.isa.Flag`) is set in the 8-bit ``flags``."""
    return (flags & int(flag)) != 0


class LoadCommand(data.StructLayout):
    """A LOAD_WEIGHTS for the :class:`WeightLoader`.

    Parameters
    ----------
    wm_depth : int
        Rows in the weight memory.

    Members
    -------
    addr : unsigned(ceil_log2(wm_depth))
        Weight memory row of the tile's row 0 (the tile lies inside the memory).
    signed : unsigned(1)
        The weights are int8.
    """
    def __init__(self, wm_depth):
        super().__init__({"addr": row_shape(wm_depth), "signed": 1})


class WeightLoader(wiring.Component):
    """Executes LOAD_WEIGHTS: reads R weight rows and shifts them into the MXU's shadow bank.

    The MXU holds ``w`` off while its shadow bank is still in use or already holds a tile that
    waits for its swap; the loader simply waits. Rows are read ahead of the MXU only by the few
    that the read port holds.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.

    Members
    -------
    start : In(1)
        Begin a LOAD_WEIGHTS (only while ``busy`` is low).
    command : In(LoadCommand(wm_depth))
        Sampled with ``start``.
    busy : Out(1)
        Rows remain to be taken by the MXU.
    reading : Out(1)
        Read requests remain to be sent: ``read_range`` must not be overwritten yet.
    read_range : Out(RowRange(wm_depth))
        The tile's weight memory rows.
    wm_r_addr : Out(stream.Signature(ReadRequest(wm_depth)))
        Weight memory read requests.
    wm_r_data : In(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), C))))
        Weight memory read responses.
    w : Out(stream.Signature(WeightRow(C)))
        Weight rows to the MXU.
    """
    def __init__(self, geometry):
        check_geometry(self, geometry)
        self._geometry = g = geometry
        super().__init__({
            "start":      In(1),
            "command":    In(LoadCommand(g.wm_depth)),
            "busy":       Out(1),
            "reading":    Out(1),
            "read_range": Out(RowRange(g.wm_depth)),
            "wm_r_addr":  Out(stream.Signature(ReadRequest(g.wm_depth))),
            "wm_r_data":  In(stream.Signature(ReadResponse(
                data.ArrayLayout(unsigned(8), g.cols)))),
            "w":          Out(stream.Signature(WeightRow(g.cols))),
        })

    def elaborate(self, platform):
        m = Module()
        rows = self._geometry.rows

        req_addr     = Signal(row_shape(self._geometry.wm_depth), name="load_req_addr")
        req_left     = Signal(range(rows + 1), name="load_req_left")
        deliver_left = Signal(range(rows + 1), name="load_deliver_left")
        is_signed    = Signal(name="load_signed")

        m.d.comb += [
            self.busy.eq(deliver_left != 0),
            self.reading.eq(req_left != 0),
            self.wm_r_addr.valid.eq(self.reading),
            self.wm_r_addr.payload.addr.eq(req_addr),
            self.wm_r_addr.payload.last.eq(req_left == 1),
            self.w.valid.eq(self.wm_r_data.valid),
            self.w.payload.data.eq(self.wm_r_data.payload.data),
            self.w.payload.signed.eq(is_signed),
            self.wm_r_data.ready.eq(self.w.ready),
        ]
        with m.If(self.wm_r_addr.valid & self.wm_r_addr.ready):
            m.d.sync += [req_addr.eq(req_addr + 1), req_left.eq(req_left - 1)]
        with m.If(self.w.valid & self.w.ready):
            m.d.sync += deliver_left.eq(deliver_left - 1)
        with m.If(self.start):
            m.d.sync += [
                req_addr.eq(self.command.addr),
                req_left.eq(rows),
                deliver_left.eq(rows),
                is_signed.eq(self.command.signed),
            ]
            m.d.sync += [self.read_range.lo.eq(self.command.addr),
                         self.read_range.hi.eq(self.command.addr + rows)]
        return m


class MatmulCommand(data.StructLayout):
    """A MATMUL for the :class:`MatmulUnit`.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.

    Members
    -------
    ub : RowRange(ub_depth)
        Unified buffer rows read (activations), 1 or more.
    acc : RowRange(acc_depth)
        Accumulator rows written, as many.
    rows : unsigned(ceil_log2(ub_depth + 1))
        Their number (the word's ``n``), so that the unit needs no subtractor.
    signed : unsigned(1)
        The activations are int8.
    accumulate : unsigned(1)
        Add to the accumulators.
    swap : unsigned(1)
        Mark the first row ``first``: switch to the loaded tile.
    """
    def __init__(self, geometry):
        super().__init__({"ub": RowRange(geometry.ub_depth), "acc": RowRange(geometry.acc_depth),
                          "rows": range(geometry.ub_depth + 1),
                          "signed": 1, "accumulate": 1, "swap": 1})


class MatmulRowTag(data.StructLayout):
    """What the MATMUL unit sends along with a unified buffer read, to mark its activation row.

    Members
    -------
    first : unsigned(1)
        The first row of a MATMUL that swaps in the loaded tile.
    signed : unsigned(1)
        The MATMUL's activations are int8.
    """
    def __init__(self):
        super().__init__({"first": 1, "signed": 1})


class MatmulUnit(wiring.Component):
    """Executes MATMUL: streams unified-buffer rows through the MXU into the accumulators.

    The *feeder* sends the read requests of one MATMUL at a time and passes each response
    on to ``x`` as an activation row (``first`` on the first row of a SWAP, ``last`` on the
    last row of every MATMUL). The flags travel with the request (:class:`MatmulRowTag`), since
    the rows in flight may belong to different MATMULs. A MATMUL that starts while another is
    being fed waits in a one-entry command register (``queued``) and follows it without a
    bubble. The decoder only has to see ``queued``, a flip-flop, and not the read port's
    handshake, to know whether the next MATMUL may start.

    The *write-back* turns each result on ``o`` into an accumulator write. Results leave the MXU
    in order, so a queue of the accumulator ranges of the MATMULs in flight (``acc_writes``,
    ``MATMUL_QUEUE`` entries) gives the address and mode of each: its head entry advances on
    every result marked ``last``. An entry is allocated by ``start`` and freed
    ``write_latency - 1`` cycles after its last write was accepted, so that an accumulator read
    issued after the entry is gone sees every write (with the largest ``write_latency`` of the
    accumulator memory, 3, so either of its pipelines is covered).

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.
    skid : bool
        Pass the rows to ``x`` through a :class:`~rtl.skid.SkidBuffer` (default False), so
        that the MXU's ``ready`` does not reach the read port's handshake: for a unified buffer
        without its read buffer, whose ``ready`` follows the response's (the iCEBreaker's
        critical path ran from the MXU's tile interlock through the port into the feeder's
        enables). It costs two rows of flip-flops and a cycle of latency.

    Members
    -------
    start : In(1)
        Begin a MATMUL (while ``queued`` and ``full`` are low).
    command : In(MatmulCommand(geometry))
        Sampled with ``start``.
    feeding : Out(1)
        Read requests remain to be sent, by the MATMUL being fed or the queued one.
    queued : Out(1)
        A MATMUL waits behind the one being fed.
    full : Out(1)
        Every queue entry is in use.
    idle : Out(1)
        Nothing in flight: no requests to send, and every result has landed.
    read_range : Out(RowRange(ub_depth))
        Unified buffer rows of the MATMUL being fed.
    queued_range : Out(RowRange(ub_depth))
        Unified buffer rows of the queued MATMUL.
    acc_writes : Out(ArrayLayout(PendingRange(acc_depth), MATMUL_QUEUE))
        Accumulator rows of every MATMUL whose writes have not all landed.
    ub_r_addr : Out(stream.Signature(ReadRequest(ub_depth, tag=MatmulRowTag())))
        Unified buffer read requests.
    ub_r_data : In(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), R),
                                                 tag=MatmulRowTag())))
        Unified buffer read responses.
    x : Out(stream.Signature(ActivationRow(R)))
        Activation rows to the MXU.
    o : In(stream.Signature(ResultRow(C)))
        Result rows from the MXU.
    acc_w : Out(stream.Signature(AccumulatorWrite(C, acc_depth)))
        Accumulator writes.
    """
    def __init__(self, geometry, *, skid=False):
        check_geometry(self, geometry)
        check_bool(self, "skid", skid)
        self._geometry = g = geometry
        self._skid = skid
        super().__init__({
            "start":      In(1),
            "command":    In(MatmulCommand(g)),
            "feeding":    Out(1),
            "queued":     Out(1),
            "full":       Out(1),
            "idle":       Out(1),
            "read_range": Out(RowRange(g.ub_depth)),
            "queued_range": Out(RowRange(g.ub_depth)),
            "acc_writes": Out(data.ArrayLayout(PendingRange(g.acc_depth), MATMUL_QUEUE)),
            "ub_r_addr":  Out(stream.Signature(ReadRequest(g.ub_depth, tag=MatmulRowTag()))),
            "ub_r_data":  In(stream.Signature(ReadResponse(
                data.ArrayLayout(unsigned(8), g.rows), tag=MatmulRowTag()))),
            "x":          Out(stream.Signature(ActivationRow(g.rows))),
            "o":          In(stream.Signature(ResultRow(g.cols))),
            "acc_w":      Out(stream.Signature(AccumulatorWrite(g.cols, g.acc_depth))),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        cmd = self.command

        # Feeder: requests rows req_addr .. read_range.hi - 1.
        req_addr  = Signal(range(g.ub_depth + 1), name="mm_req_addr")
        req_first = Signal(name="mm_req_first")
        is_signed = Signal(name="mm_signed")

        # Requests left to send, with flip-flops for "some" and "one": compares of an address
        # against the range's end were long ripple paths into the port's handshake.
        req_left     = Signal(range(g.ub_depth + 1), name="mm_req_left")
        active       = Signal(name="mm_active")        # req_left != 0
        last_request = Signal(name="mm_req_last")      # req_left == 1
        queued_cmd   = Signal(MatmulCommand(g), name="mm_queued_command")

        # `fire` is kept as a net of its own: otherwise synthesis merges the read port's
        # handshake into each enable's logic, and on the iCEBreaker that made the feeder's
        # registers 7 LUTs deep (its critical path).
        fire = Signal(name="mm_fire", attrs={"keep": 1})
        m.d.comb += fire.eq(self.ub_r_addr.valid & self.ub_r_addr.ready)
        next_addr = req_addr + 1
        # The feeder takes its next command (a queued one, or one starting now: `start` comes
        # only while none is queued) when it is idle or its last request is accepted. The two
        # cases are apart so that the registers' enables are `fire | idle_feed`, one gate after
        # the handshake: `fire` picks their values instead (with a kept `feed` net for both
        # cases, the handshake ran through it into every enable, 6 LUTs on the iCEBreaker).
        waiting = Signal(name="mm_waiting")
        idle_feed = Signal(name="mm_idle_feed")         # from flip-flops only
        chained = Signal(name="mm_chained")             # ... and `fire` feeds
        m.d.comb += [
            waiting.eq(self.queued | self.start),
            idle_feed.eq(waiting & ~active),
            chained.eq(waiting & last_request),
        ]
        m.d.comb += [
            self.feeding.eq(active | self.queued),
            self.queued_range.eq(queued_cmd.ub),
            self.ub_r_addr.valid.eq(active),
            self.ub_r_addr.payload.addr.eq(req_addr),
            self.ub_r_addr.payload.last.eq(last_request),
            self.ub_r_addr.payload.tag.first.eq(req_first),
            self.ub_r_addr.payload.tag.signed.eq(is_signed),
        ]
        rows = self.x
        if self._skid:
            m.submodules.x_skid = x_skid = SkidBuffer(ActivationRow(g.rows))
            connect(m, x_skid.o, flipped(self.x))
            rows = x_skid.i
        m.d.comb += [
            rows.valid.eq(self.ub_r_data.valid),
            rows.payload.data.eq(self.ub_r_data.payload.data),
            rows.payload.signed.eq(self.ub_r_data.payload.tag.signed),
            rows.payload.first.eq(self.ub_r_data.payload.tag.first),
            rows.payload.last.eq(self.ub_r_data.payload.last),
            self.ub_r_data.ready.eq(rows.ready),
        ]
        # The command fed next: the queued one, else the one starting now.
        next_cmd = Signal(MatmulCommand(g), name="mm_next_command")
        m.d.comb += next_cmd.eq(Mux(self.queued, queued_cmd, cmd))
        feed = ~fire | chained                          # (under the enable below)
        with m.If(fire | idle_feed):
            m.d.sync += [
                req_addr.eq(Mux(feed, next_cmd.ub.lo, next_addr)),
                req_left.eq(Mux(feed, next_cmd.rows, req_left - 1)),
                active.eq(feed | ~last_request),
                last_request.eq(Mux(feed, next_cmd.rows == 1, req_left == 2)),
                req_first.eq(feed & next_cmd.swap),
            ]
            with m.If(feed):
                m.d.sync += [
                    is_signed.eq(next_cmd.signed),
                    self.read_range.eq(next_cmd.ub),
                ]
        # Queued while a command waits that was not fed: the one queued stays until it is,
        # and one starting now waits if the feeder is busy past this cycle. (Taking `cmd`
        # at every start is harmless: it is used only once queued.)
        m.d.sync += self.queued.eq(waiting & active & ~(fire & last_request))
        with m.If(self.start):
            m.d.sync += queued_cmd.eq(cmd)

        # Write-back queue: entries are allocated at `tail` and retired from `head`.
        queue = self.acc_writes
        accumulate = Signal(MATMUL_QUEUE, name="mm_accumulate")
        head = Signal(range(MATMUL_QUEUE), name="mm_head")
        tail = Signal(range(MATMUL_QUEUE), name="mm_tail")
        # The head's next row, queue[head].range.lo + row, kept in a register: the sum would
        # otherwise run on into the accumulator's read address and its forwarding compare.
        wb_addr = Signal(range(g.acc_depth), name="mm_wb_addr")
        # The entries retired 1 .. ACC_WRITE_LATENCY - 1 cycles ago, the oldest last: it is
        # freed now, and a read that the freed entry let issue comes a cycle later at least.
        freeing = [Signal(name=f"mm_freeing{k + 1}") for k in range(ACC_WRITE_LATENCY - 1)]
        freed   = [Signal(range(MATMUL_QUEUE), name=f"mm_freed{k + 1}")
                   for k in range(ACC_WRITE_LATENCY - 1)]

        m.d.comb += [
            self.full.eq(queue[tail].valid),
            self.idle.eq(~self.feeding &
                         ~Cat(queue[k].valid for k in range(MATMUL_QUEUE)).any()),
            self.o.ready.eq(self.acc_w.ready),
            self.acc_w.valid.eq(self.o.valid),
            self.acc_w.payload.addr.eq(wb_addr),
            self.acc_w.payload.accumulate.eq(accumulate.bit_select(head, 1)),
            self.acc_w.payload.data.eq(self.o.payload.data),
        ]
        m.d.sync += freeing[0].eq(0)
        for k in range(1, len(freeing)):
            m.d.sync += [freeing[k].eq(freeing[k - 1]), freed[k].eq(freed[k - 1])]
        wb_last = self.acc_w.valid & self.acc_w.ready & self.o.payload.last
        head_next = Mux(wb_last, head + 1, head)[:len(head)]
        with m.If(self.acc_w.valid & self.acc_w.ready):
            with m.If(self.o.payload.last):
                m.d.sync += [head.eq(head + 1), freeing[0].eq(1), freed[0].eq(head),
                             wb_addr.eq(queue[head_next].range.lo)]
            with m.Else():
                m.d.sync += wb_addr.eq(wb_addr + 1)
        with m.If(self.start):
            m.d.sync += tail.eq(tail + 1)
            # A MATMUL that becomes the head at once (the queue is empty after this cycle; it
            # cannot be full, or it would not start) brings its first row itself.
            with m.If(tail == head_next):
                m.d.sync += wb_addr.eq(cmd.acc.lo)
        for k in range(MATMUL_QUEUE):
            with m.If(self.start & (tail == k)):
                m.d.sync += [queue[k].valid.eq(1), accumulate[k].eq(cmd.accumulate),
                             queue[k].range.eq(cmd.acc)]
            with m.Elif(freeing[-1] & (freed[-1] == k)):
                m.d.sync += queue[k].valid.eq(0)
        return m


class ActivateCommand(data.StructLayout):
    """An ACTIVATE for the :class:`ActivateUnit`.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.

    Members
    -------
    acc : RowRange(acc_depth)
        Accumulator rows read, 1 or more.
    ub : RowRange(ub_depth)
        Unified buffer rows written, as many.
    rows : unsigned(ceil_log2(acc_depth + 1))
        Their number (the word's ``n``).
    lane : unsigned(max(ceil_log2(R - C + 1), 1))
        The first of the C bytes written in each unified buffer row, at most R - C.
    """
    def __init__(self, geometry):
        super().__init__({"acc": RowRange(geometry.acc_depth), "ub": RowRange(geometry.ub_depth),
                          "rows": range(geometry.acc_depth + 1),
                          "lane": range(max(geometry.rows - geometry.cols + 1, 2))})


class ActivateUnit(wiring.Component):
    """Executes ACTIVATE: accumulator rows through the PPU into bytes of unified buffer rows.

    Each row of C int32 is read, requantized by the PPU (with the configuration on its static
    ``cfg`` port, which the scoreboard keeps unchanged while this unit is busy) and written into
    bytes ``lane .. lane + C - 1`` of a unified buffer row with a byte mask; the row's other
    bytes keep their contents. One ACTIVATE at a time.

    With ``row_register``, each row read is registered on its way to the PPU (a pipeline
    stage with a full-rate handshake): the accumulator's block RAM output then ends at a
    register, not in the PPU's input multiplexers, which can lie far across the FPGA.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.
    row_register : bool
        Register the rows between the accumulator and the PPU (default False).

    Members
    -------
    start : In(1)
        Begin an ACTIVATE (only while ``busy`` is low).
    command : In(ActivateCommand(geometry))
        Sampled with ``start``.
    busy : Out(1)
        Rows remain to be written.
    reading : Out(1)
        Accumulator read requests remain to be sent.
    read_range : Out(RowRange(acc_depth))
        The accumulator rows read.
    write_range : Out(RowRange(ub_depth))
        The unified buffer rows written.
    acc_r_addr : Out(stream.Signature(ReadRequest(acc_depth)))
        Accumulator read requests.
    acc_r_data : In(stream.Signature(ReadResponse(ArrayLayout(signed(32), C))))
        Accumulator read responses.
    ppu_i : Out(stream.Signature(AccumulatorRow(C)))
        Rows into the PPU.
    ppu_o : In(stream.Signature(QuantizedRow(C)))
        Rows out of the PPU.
    ub_w : Out(stream.Signature(RowWrite(ArrayLayout(unsigned(8), R), ub_depth, masked=True)))
        Unified buffer writes.
    """
    def __init__(self, geometry, *, row_register=False):
        check_geometry(self, geometry)
        self._geometry = g = geometry
        self._row_register = row_register
        super().__init__({
            "start":       In(1),
            "command":     In(ActivateCommand(g)),
            "busy":        Out(1),
            "reading":     Out(1),
            "read_range":  Out(RowRange(g.acc_depth)),
            "write_range": Out(RowRange(g.ub_depth)),
            "acc_r_addr":  Out(stream.Signature(ReadRequest(g.acc_depth))),
            "acc_r_data":  In(stream.Signature(ReadResponse(
                data.ArrayLayout(signed(32), g.cols)))),
            "ppu_i":       Out(stream.Signature(AccumulatorRow(g.cols))),
            "ppu_o":       In(stream.Signature(QuantizedRow(g.cols))),
            "ub_w":        Out(stream.Signature(RowWrite(
                data.ArrayLayout(unsigned(8), g.rows), g.ub_depth, masked=True))),
        })

    @property
    def row_register(self):
        return self._row_register

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        rows, cols = g.rows, g.cols
        cmd = self.command

        req_addr = Signal(row_shape(g.acc_depth), name="act_req_addr")
        # Requests left, with flip-flops for "some" (`reading`) and "one" (see MatmulUnit).
        req_left = Signal(range(g.acc_depth + 1), name="act_req_left")
        req_last = Signal(name="act_req_last")
        wr_addr  = Signal(row_shape(g.ub_depth), name="act_wr_addr")
        lane     = Signal.like(cmd.lane, name="act_lane")
        busy     = Signal(name="act_busy")

        m.d.comb += [
            self.busy.eq(busy),
            self.acc_r_addr.valid.eq(self.reading),
            self.acc_r_addr.payload.addr.eq(req_addr),
            self.acc_r_addr.payload.last.eq(req_last),
            self.ub_w.valid.eq(self.ppu_o.valid),
            self.ub_w.payload.addr.eq(wr_addr),
            self.ppu_o.ready.eq(self.ub_w.ready),
        ]
        if self._row_register:
            # A row waits in `act_row` until the PPU takes it; the next enters as it leaves.
            row = Signal(AccumulatorRow(cols), name="act_row", reset_less=True)
            row_valid = Signal(name="act_row_valid")
            m.d.comb += [
                self.acc_r_data.ready.eq(~row_valid | self.ppu_i.ready),
                self.ppu_i.valid.eq(row_valid),
                self.ppu_i.payload.eq(row),
            ]
            with m.If(self.acc_r_data.ready):
                m.d.sync += [
                    row_valid.eq(self.acc_r_data.valid),
                    row.data.eq(self.acc_r_data.payload.data),
                    row.last.eq(self.acc_r_data.payload.last),
                ]
        else:
            m.d.comb += [
                self.ppu_i.valid.eq(self.acc_r_data.valid),
                self.ppu_i.payload.data.eq(self.acc_r_data.payload.data),
                self.ppu_i.payload.last.eq(self.acc_r_data.payload.last),
                self.acc_r_data.ready.eq(self.ppu_i.ready),
            ]
        # Place the C bytes at the lane offset; the mask keeps the row's other bytes.
        offsets = max(rows - cols + 1, 0)
        if offsets == 1:                            # R = C: lane 0 is the only one
            m.d.comb += [self.ub_w.payload.data.eq(self.ppu_o.payload.data),
                         self.ub_w.payload.mask.eq((1 << cols) - 1)]
        else:
            with m.Switch(lane):
                for offset in range(offsets):
                    with m.Case(offset):
                        m.d.comb += [
                            self.ub_w.payload.data.eq(Cat(Const(0, 8 * offset),
                                                          self.ppu_o.payload.data)),
                            self.ub_w.payload.mask.eq(((1 << cols) - 1) << offset),
                        ]
                with m.Default():                   # the decoder never issues such a lane
                    m.d.comb += self.ub_w.payload.mask.eq(0)
        with m.If(self.acc_r_addr.valid & self.acc_r_addr.ready):
            m.d.sync += [req_addr.eq(req_addr + 1), req_left.eq(req_left - 1),
                         self.reading.eq(~req_last), req_last.eq(req_left == 2)]
        with m.If(self.ub_w.valid & self.ub_w.ready):
            m.d.sync += wr_addr.eq(wr_addr + 1)
            with m.If(self.ppu_o.payload.last):
                m.d.sync += busy.eq(0)
        with m.If(self.start):
            m.d.sync += [
                req_addr.eq(cmd.acc.lo),
                req_left.eq(cmd.rows),
                self.reading.eq(1),
                req_last.eq(cmd.rows == 1),
                wr_addr.eq(cmd.ub.lo),
                lane.eq(cmd.lane),
                busy.eq(1),
                self.read_range.eq(cmd.acc),
                self.write_range.eq(cmd.ub),
            ]
        return m


def _common_fields(target, source):
    """Assign each member of the view ``target`` that the view ``source`` also has (a read
    port's ``tag`` is only there for the users that send one)."""
    members = source.shape().members
    return [target[key].eq(source[key]) for key in target.shape().members if key in members]


def _share_read_port(m, name, request, response, users, *, read_latency):
    """Serve the read port ``request``/``response`` to ``users``, (request, response, claim)
    triples.

    At most one user sends requests at a time (the scoreboard sees to that), and a user's
    ``claim`` pulses when an instruction that makes it send requests issues; ``select``, a
    flip-flop, then names it, so no user's handshake depends on another user's ``valid``.
    A user's request waits while the port holds responses of another user, so the responses
    due (up to four, :func:`rtl.unified_buffer.connect_read_port`) all belong to ``owner``,
    the user of the last request accepted, and ``owner`` routes them to it. The port's
    ``ready`` is a flip-flop, so no user's request handshake depends on any consumer's
    ``ready``. Users that do not send a ``tag`` see none.
    """
    owner  = Signal(range(len(users)), name=f"{name}_owner")
    select = Signal(range(len(users)), name=f"{name}_select")
    for k, (_, _, claim) in enumerate(users):
        with m.If(claim):
            m.d.sync += select.eq(k)
    # The port takes user k's request when it has room and holds no other user's responses.
    # With a read latency above 1, a row can be in the block RAM for a cycle or two before
    # `response.valid` shows it, so `due` counts the responses accepted and not yet taken.
    if read_latency == 1:
        quiet = ~response.valid
    else:
        due = Signal(range(5), name=f"{name}_due")
        m.d.sync += due.eq(due + (request.valid & request.ready) -
                           (response.valid & response.ready))
        quiet = due == 0
    free = [request.ready & (quiet | (owner == k)) for k in range(len(users))]
    with m.Switch(select):
        for k, (user_request, _, _) in enumerate(users):
            with m.Case(k):
                m.d.comb += [
                    request.valid.eq(user_request.valid & (quiet | (owner == k))),
                    *_common_fields(request.payload, user_request.payload),
                ]
    with m.Switch(owner):
        for k, (_, user_response, _) in enumerate(users):
            with m.Case(k):
                m.d.comb += response.ready.eq(user_response.ready)
    for k, (user_request, user_response, _) in enumerate(users):
        m.d.comb += [
            user_request.ready.eq(free[k] & (select == k)),
            user_response.valid.eq(response.valid & (owner == k)),
            *_common_fields(user_response.payload, response.payload),
        ]
    with m.If(request.valid & request.ready):
        m.d.sync += owner.eq(select)


def _exceeds(value, limit):
    """``value > limit`` for a constant ``limit``, as a balanced tree of gates rather than a
    subtractor (which would take a carry chain as wide as ``value``) or a chain of gates (which
    Yosys maps to as many LUTs in series as ``value`` has bits over 3: the iCEBreaker's deepest
    path, from the ADDRESS check's range ends)."""
    if limit >> len(value):
        return Const(0)

    def compare(lo, hi):
        # (value > limit, value == limit) on bits lo .. hi - 1.
        if hi - lo == 1:
            if (limit >> lo) & 1:
                return Const(0), value[lo]
            return value[lo], ~value[lo]
        mid = (lo + hi) // 2
        greater_lo, equal_lo = compare(lo, mid)
        greater_hi, equal_hi = compare(mid, hi)
        return greater_hi | (equal_hi & greater_lo), equal_hi & equal_lo

    return compare(0, len(value))[0]


#: Per opcode: the flag bits it accepts, and whether it uses a, b and n (docs/isa.md).
_FIELDS = {
    Opcode.NOP:           (0x00, False, False, False),
    Opcode.WRITE_UB:      (0x00, True,  False, True),
    Opcode.WRITE_WM:      (0x00, True,  False, True),
    Opcode.SET_PPU:       (0x00, False, False, False),
    Opcode.LOAD_WEIGHTS:  (Flag.SIGNED, True, False, False),
    Opcode.MATMUL:        (Flag.SIGNED | Flag.ACCUMULATE | Flag.SWAP, True, True, True),
    Opcode.ACTIVATE:      (0xff, True, True, True),
    Opcode.READ_UB:       (0x00, True,  False, True),
    Opcode.READ_ACC:      (0x00, True,  False, True),
    Opcode.READ_COUNTERS: (Flag.CLEAR, False, False, False),
}


class Controller(wiring.Component):
    """Decodes the host's instruction stream and runs it on the memories, MXU and PPU.

    **Front end.** Bytes from ``i`` fill an 8-byte word register. A complete word is decoded
    and checked (in priority order: ILLEGAL_OPCODE, MALFORMED, ADDRESS, then NO_WEIGHTS or
    WEIGHTS_FULL against the ``pending`` tile bit) and then *retired*: a failed instruction at
    once (it records the first error since the last SYNC), a good one when the scoreboard
    lets it issue to its unit. The hazard checks and the verdict are registered, so a word
    retires three cycles after its last byte: 10 cycles per word at best (four and 11 with
    ``overlap_register``). After WRITE_UB,
    WRITE_WM or SET_PPU the byte stream belongs to the :class:`~rtl.host_link.PayloadReceiver`
    until the payload and its padding are in (also when the instruction failed). An illegal
    opcode sends an ERROR packet and enters the faulted state, where words are dropped unseen
    until one equals the SYNC word.

    **Scoreboard.** Issue is in order; an instruction waits (and STALL_HAZARD counts) while

    * its unit is busy (one instruction per unit; a MATMUL may issue while the previous one is
      still being fed, into the unit's command register, and needs a free write-back queue
      entry);
    * a shared port it needs is still being used by the other unit (UB read port: MATMUL and
      READ_UB; ACC read port: ACTIVATE and READ_ACC; UB write port: WRITE_UB and ACTIVATE; the
      PPU configuration: SET_PPU waits for ACTIVATE);
    * a row range it reads overlaps one that an instruction in flight still writes (RAW), or a
      range it writes overlaps one that is still to be read (WAR) or written (WAW). Ranges in
      flight: the UB rows a MATMUL or READ_UB has still to request, the ACC rows an ACTIVATE or
      READ_ACC has still to request, the WM rows a LOAD_WEIGHTS has still to request, the UB
      rows of an ACTIVATE until its last write, and the ACC rows of every MATMUL until its
      last result has landed. MATMULs' ACC writes among themselves are not a hazard: they land
      in order through one pipeline, whose accumulate is exact back to back.

    Payload writes need no range of their own: a row is written the cycle after its last byte,
    long before the next instruction word is complete. READ_COUNTERS and SYNC wait until every
    unit is idle, so the counters and the STATUS describe all earlier instructions.

    **Weights.** ``pending`` is set when LOAD_WEIGHTS issues and cleared when a MATMUL with
    SWAP issues, so every row marked ``first`` that reaches the MXU has a tile loaded for it
    and no LOAD_WEIGHTS has to wait for a swap that will never come: every program completes.

    **Counters** (:class:`~rtl.counters.PerformanceCounters`), each counting clock cycles:

    * CYCLES: every cycle;
    * MXU_BUSY: the MXU accepts an activation row;
    * STALL_WEIGHTS: the MXU refuses an activation row (it is marked ``first`` and the tile is
      not loaded yet; the MXU's output is never held, so that is the only reason);
    * STALL_HAZARD: a complete instruction word waits in the decoder (unit, port or range busy;
      SYNC and READ_COUNTERS waiting for idle units; an illegal opcode waiting to send ERROR;
      and the one cycle of every word in which its verdict is registered);
    * STALL_HOST_IN: the controller could take a byte on ``i`` (a word or payload byte) and the
      host offers none (this includes the idle time after the end of a program);
    * STALL_HOST_OUT: a response byte is offered on ``o`` and the host does not take it;
    * INSTRUCTIONS: an instruction word retires (NOP, failed and illegal ones included, payload
      words and words skipped in the faulted state excluded; the SYNC that ends it included).

    READ_COUNTERS sends the values as they are at the start of its cycle, so it is not counted
    itself; with CLEAR every counter reads 0 in the next cycle.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.
    counter_bits : int
        Width of the performance counters (:class:`~rtl.counters.PerformanceCounters`).
    row_register : bool
        :class:`ActivateUnit`'s ``row_register`` (default False). (The
        :class:`~rtl.host_link.ResponseSender`'s is always on.)
    range_register : bool
        Register the scoreboard's candidate row ranges as a word is decoded (default False):
        about 60 flip-flops, for a shorter path into the overlap checks.
    overlap_register : bool
        Register each overlap check of the scoreboard on its own, the hazards a cycle later
        (default False): a gate or two after the comparators instead of three or four, for a
        dozen flip-flops and a cycle more per instruction word (11 instead of 10).
    read_latency : int
        The unified buffer's and accumulator's read latency, 1 to 3 (default 3; a longer one
        than the memories' costs nothing but a counter per shared port): with 1, every response
        due shows in ``r_data.valid``, and a shared port needs no count of them.

    Members
    -------
    i : In(stream.Signature(8))
        Instruction words and payloads from the host.
    o : Out(stream.Signature(8))
        Response packets to the host.
    ub : Out(memory_signature(RowWrite(..., masked=True), ub_depth, ..., tag=MatmulRowTag()))
        The unified buffer's ports (its reads carry the MATMUL unit's row flags).
    wm : Out(memory_signature(RowWrite(...), wm_depth, ArrayLayout(unsigned(8), C)))
        The weight memory's ports.
    acc : Out(memory_signature(AccumulatorWrite(C, acc_depth), acc_depth, ...))
        The accumulator memory's ports.
    mxu : Out(Signature({"w": Out(...), "x": Out(...), "o": In(...)}))
        The MXU's ports.
    ppu : Out(Signature({"i": Out(...), "o": In(...), "cfg": Out(PostProcessorConfig(C))}))
        The PPU's ports.
    idle : Out(1)
        No instruction waits or runs and no payload or response is under way: until the host
        sends more, nothing will change and nothing more will be sent (a serial link uses it
        to tell the host that an answer is complete).
    """
    def __init__(self, geometry, *, counter_bits=COUNTER_BITS, row_register=False,
                 range_register=False, overlap_register=False,
                 read_latency=3):
        check_geometry(self, geometry)
        check_int(self, "Counter width", counter_bits, 16, COUNTER_BITS)
        check_bool(self, "range_register", range_register)
        self._range_register = range_register
        check_bool(self, "overlap_register", overlap_register)
        self._overlap_register = overlap_register
        check_int(self, "Read latency", read_latency, 1, 3)
        self._read_latency = read_latency
        self._counter_bits = counter_bits
        self._row_register = row_register
        self._geometry = g = geometry
        ub_row = data.ArrayLayout(unsigned(8), g.rows)
        wm_row = data.ArrayLayout(unsigned(8), g.cols)
        acc_row = AccumulatorWrite(g.cols, g.acc_depth)["data"].shape
        super().__init__({
            "i":   In(stream.Signature(8)),
            "o":   Out(stream.Signature(8)),
            "ub":  Out(memory_signature(RowWrite(ub_row, g.ub_depth, masked=True), g.ub_depth,
                                        ub_row, tag=MatmulRowTag())),
            "wm":  Out(memory_signature(RowWrite(wm_row, g.wm_depth), g.wm_depth, wm_row)),
            "acc": Out(memory_signature(AccumulatorWrite(g.cols, g.acc_depth), g.acc_depth,
                                        acc_row)),
            "mxu": Out(wiring.Signature({
                "w": Out(stream.Signature(WeightRow(g.cols))),
                "x": Out(stream.Signature(ActivationRow(g.rows))),
                "o": In(stream.Signature(ResultRow(g.cols))),
            })),
            "ppu": Out(wiring.Signature({
                "i":   Out(stream.Signature(AccumulatorRow(g.cols))),
                "o":   In(stream.Signature(QuantizedRow(g.cols))),
                "cfg": Out(PostProcessorConfig(g.cols)),
            })),
            "idle": Out(1),
        })

    @property
    def range_register(self):
        return self._range_register

    @property
    def overlap_register(self):
        return self._overlap_register

    @property
    def geometry(self):
        return self._geometry

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        rows, cols = g.rows, g.cols

        m.submodules.receiver = rx = PayloadReceiver(g)
        # The sender's row register is cheap (one row) and takes a long path out even on the
        # UP5K, so every build has it.
        m.submodules.sender   = tx = ResponseSender(g, counter_bits=self._counter_bits,
                                                row_register=True)
        m.submodules.loader   = loader = WeightLoader(g)
        m.submodules.matmul   = mm = MatmulUnit(g, skid=self._read_latency == 1)
        m.submodules.activate = act = ActivateUnit(g, row_register=self._row_register)
        m.submodules.perf_counters = counters = PerformanceCounters(self._counter_bits)

        # Fixed connections.
        connect(m, rx.wm_w, flipped(self.wm.w))
        connect(m, loader.wm_r_addr, flipped(self.wm.r_addr))
        connect(m, flipped(self.wm.r_data), loader.wm_r_data)
        connect(m, loader.w, flipped(self.mxu.w))
        connect(m, mm.x, flipped(self.mxu.x))
        connect(m, flipped(self.mxu.o), mm.o)
        connect(m, mm.acc_w, flipped(self.acc.w))
        connect(m, act.ppu_i, flipped(self.ppu.i))
        connect(m, flipped(self.ppu.o), act.ppu_o)
        # Responses leave through a skid buffer: the sender's wide buffer and counter snapshot
        # shift on a ready that is a flip-flop, not on the consumer's logic.
        m.submodules.response_skid = skid = SkidBuffer(8)
        connect(m, tx.out, skid.i)
        connect(m, skid.o, flipped(self.o))

        # Shared ports.
        tx_claims = {kind: Signal(name=f"tx_claims_{kind.name.lower()}")
                     for kind in (ResponseKind.UB_ROWS, ResponseKind.ACC_ROWS)}
        for kind, claims in tx_claims.items():
            m.d.comb += claims.eq(tx.start & (tx.command.kind == kind))
        _share_read_port(m, "ub_read", self.ub.r_addr, self.ub.r_data,
                         [(mm.ub_r_addr, mm.ub_r_data, mm.start),
                          (tx.ub_r_addr, tx.ub_r_data, tx_claims[ResponseKind.UB_ROWS])],
                         read_latency=self._read_latency)
        _share_read_port(m, "acc_read", self.acc.r_addr, self.acc.r_data,
                         [(act.acc_r_addr, act.acc_r_data, act.start),
                          (tx.acc_r_addr, tx.acc_r_data, tx_claims[ResponseKind.ACC_ROWS])],
                         read_latency=self._read_latency)
        m.d.comb += [
            self.ub.w.valid.eq(rx.ub_w.valid | act.ub_w.valid),
            self.ub.w.payload.eq(Mux(rx.ub_w.valid, rx.ub_w.payload, act.ub_w.payload)),
            rx.ub_w.ready.eq(self.ub.w.ready),
            act.ub_w.ready.eq(self.ub.w.ready),
        ]

        # The PPU configuration, as SET_PPU leaves it (the receiver holds it).
        m.d.comb += self.ppu.cfg.eq(rx.config)

        # Front end: the word register (the top of the receiver's shift register), or payload
        # bytes for the receiver.
        word_bits  = Signal(8 * WORD, name="word")
        word       = data.View(InstructionWord(), word_bits)
        m.d.comb += word_bits.eq(rx.recent)
        word_count = Signal(range(WORD + 1), name="word_count")
        # word_count == WORD and == WORD - 1, as flip-flops: with `v_accept` they keep `i.ready`
        # and the decode enable one or two gates from registers (through the verdict's logic,
        # `i.ready` was the iCEBreaker's critical path, into the word register's enables).
        word_full  = Signal(name="word_full")
        word_last  = Signal(name="word_last")
        retire     = Signal(name="retire")  # v_issue | v_fail | v_skip (below)
        v_accept   = Signal(name="verdict_accept")  # the word retires, no payload follows
        word_byte  = Signal()               # a byte enters the word register
        m.d.comb += [
            # The next word's first byte may enter in the cycle the current word retires, so a
            # good word takes 9 cycles (8 bytes, then the registered scoreboard verdict); not
            # when a payload follows (the receiver starts next cycle).
            self.i.ready.eq(rx.receiving | ~word_full | v_accept),
            word_byte.eq(self.i.valid & self.i.ready & ~rx.receiving),
            rx.word_in.eq(word_byte),
            rx.i.valid.eq(self.i.valid & rx.receiving),
            rx.i.payload.eq(self.i.payload),
        ]
        with m.If(retire):
            m.d.sync += [word_count.eq(word_byte), word_last.eq(0), word_full.eq(0)]
        with m.Elif(word_byte):
            m.d.sync += [
                word_count.eq(word_count + 1),
                word_last.eq(word_count == WORD - 2),
                word_full.eq(word_last),
            ]

        # The decode stage: everything that depends only on the word is computed from the word
        # as it completes (``d_`` signals) and registered, so that the adders and comparators
        # of the checks are not in series with the scoreboard. The registers load when the last
        # byte enters (``decode``) and hold while the word is full; they are used only then.
        d_bits = Signal(8 * WORD, name="d_word")
        m.d.comb += d_bits.eq(Cat(word_bits[8:], self.i.payload))
        d_word = data.View(InstructionWord(), d_bits)
        decode = Signal()                    # the word is complete at the next clock edge
        m.d.comb += decode.eq(word_byte & word_last)

        # Decoder state.
        faulted   = Signal()
        pending   = Signal()                 # a loaded tile waits for its swap
        index     = Signal(32, name="index")  # instruction words since the last SYNC
        err_code  = Signal(range(max(ErrorCode) + 1), name="error_code")
        err_index = Signal(32, name="error_index")

        flags, a, b, n = word.flags, word.a, word.b, word.n
        d_op, d_flags, d_a, d_b, d_n = (d_word.opcode, d_word.flags, d_word.a, d_word.b,
                                        d_word.n)
        is_op = {opcode: Signal(name=f"is_{opcode.name.lower()}") for opcode in Opcode}
        is_sync_word = Signal()
        malformed = Signal()
        a_set, b_set, n_set = Signal(name="a_set"), Signal(name="b_set"), Signal(name="n_set")
        lane_past = Signal(name="lane_past")     # ACTIVATE: lane + C > R
        flags_reserved = {reserved: Signal(name=f"flags_reserved_{reserved:02x}")
                          for reserved in sorted({~int(allowed) & 0xff
                                                  for allowed, *_ in _FIELDS.values()} - {0})}
        address = Signal()
        # Ends of the ranges a .. a + n - 1 and b .. b + n - 1, at the width of the deepest
        # memory: they are used only once the ADDRESS check has passed.
        deepest = max(g.ub_depth, g.wm_depth, g.acc_depth)
        # The full 17-bit ends are registered for the ADDRESS check, which runs a cycle later.
        a_end = Signal(17, name="a_end")
        b_end = Signal(17, name="b_end")
        hi_bits = Shape.cast(range(deepest + 1)).width
        a_hi, b_hi = a_end[:hi_bits], b_end[:hi_bits]
        d_sync = Signal()
        m.d.comb += d_sync.eq(d_bits == int.from_bytes(SYNC_WORD, "little"))

        with m.If(decode):
            for opcode, signal in is_op.items():
                m.d.sync += signal.eq(d_op == int(opcode))
            m.d.sync += [
                is_sync_word.eq(d_sync),
                a_end.eq(d_a + d_n),
                b_end.eq(d_b + d_n),
            ]
            # MALFORMED's parts that compare whole fields, registered here (``d_`` signals)
            # so that the check itself, below, is a few LUTs from flip-flops.
            m.d.sync += [
                a_set.eq(d_a != 0),
                b_set.eq(d_b != 0),
                n_set.eq(d_n != 0),
                lane_past.eq(d_flags + cols > rows),
            ]
            # Which flags are reserved depends on the opcode: one register per set of reserved
            # flags, so that the check below does not compare all eight flags per opcode.
            for reserved, signal in flags_reserved.items():
                m.d.sync += signal.eq((d_flags & reserved) != 0)
        # MALFORMED: reserved flags or fields set, n of 0, a lane past R, a wrong SYNC word.
        # From the decode's registers and the word's flags, in the cycle after the decode, like
        # ADDRESS (``h_malformed``); an illegal opcode is reported as such, not as MALFORMED.
        malformed_by_op = [is_op[Opcode.SYNC] & ~is_sync_word]
        for opcode, (allowed, uses_a, uses_b, uses_n) in _FIELDS.items():
            reserved = ~int(allowed) & 0xff
            bad = flags_reserved[reserved] if reserved else Const(0)
            for field_set, used in ((a_set, uses_a), (b_set, uses_b), (n_set, uses_n)):
                if not used:
                    bad = bad | field_set
            if uses_n:
                bad = bad | ~n_set
            if opcode == Opcode.ACTIVATE:
                bad = bad | lane_past
            malformed_by_op.append(is_op[opcode] & bad)
        m.d.comb += malformed.eq(Cat(malformed_by_op).any())
        # ADDRESS: a row range past the end of its memory (on the full 17-bit ends; a tile of R
        # rows from a ends past the end if a > wm_depth - R). Registered in the cycle after
        # the decode, from the decode's registers: the word's checks are first used a cycle
        # later still (``checked``), and the sums would otherwise run on into the compares.
        address_checks = {
            Opcode.WRITE_UB:     [(a_end, g.ub_depth)],
            Opcode.WRITE_WM:     [(a_end, g.wm_depth)],
            Opcode.LOAD_WEIGHTS: [(a, g.wm_depth - rows)],
            Opcode.MATMUL:       [(a_end, g.ub_depth), (b_end, g.acc_depth)],
            Opcode.ACTIVATE:     [(a_end, g.acc_depth), (b_end, g.ub_depth)],
            Opcode.READ_UB:      [(a_end, g.ub_depth)],
            Opcode.READ_ACC:     [(a_end, g.acc_depth)],
        }
        m.d.sync += address.eq(Cat(
            is_op[opcode] & Cat(_exceeds(value, limit) for value, limit in checks).any()
            for opcode, checks in address_checks.items()).any())
        known = Cat(is_op.values()).any()

        # The error code from registers only: MALFORMED's check ends at a flip-flop rather than
        # running on into the error code (the iCEBreaker's critical path, 30 ns, when it did).
        h_malformed = Signal(name="h_malformed")
        m.d.sync += h_malformed.eq(malformed)
        error = Signal.like(err_code, name="decode_error")
        with m.If(~known):
            m.d.comb += error.eq(int(ErrorCode.ILLEGAL_OPCODE))
        with m.Elif(h_malformed):
            m.d.comb += error.eq(int(ErrorCode.MALFORMED))
        with m.Elif(address):
            m.d.comb += error.eq(int(ErrorCode.ADDRESS))
        with m.Elif(is_op[Opcode.LOAD_WEIGHTS] & pending):
            m.d.comb += error.eq(int(ErrorCode.WEIGHTS_FULL))
        with m.Elif(is_op[Opcode.MATMUL] & _flag(flags, Flag.SWAP) & ~pending):
            m.d.comb += error.eq(int(ErrorCode.NO_WEIGHTS))
        # Whether the word fails, for the verdict: from flip-flops of the hazard stage (below)
        # and the ADDRESS register, rather than through ``error``'s priority chain. While a
        # word waits nothing issues, so ``pending`` holds and these agree with ``error``.
        h_known   = Signal(name="h_known")
        h_invalid = Signal(name="h_invalid")    # ILLEGAL_OPCODE or MALFORMED
        h_tile    = Signal(name="h_tile")       # WEIGHTS_FULL or NO_WEIGHTS
        m.d.sync += [
            h_known.eq(known),
            h_invalid.eq(~known | malformed),
            h_tile.eq((is_op[Opcode.LOAD_WEIGHTS] & pending) |
                      (is_op[Opcode.MATMUL] & _flag(flags, Flag.SWAP) & ~pending)),
        ]
        failed = h_invalid | address | h_tile

        # Scoreboard. The candidate's ranges, by memory, at the memory's width: a verdict
        # counts only for an instruction that passed the ADDRESS check, whose rows lie inside.
        # With `range_register` they are registered in the decode stage, so that the overlap
        # comparators start at flip-flops (a multiplexer in front of them was part of the
        # ULX3S's critical path); the UP5K has no room for the flip-flops.
        ub_range  = Signal(RowRange(g.ub_depth), name="candidate_ub")
        acc_range = Signal(RowRange(g.acc_depth), name="candidate_acc")
        wm_range  = Signal(RowRange(g.wm_depth), name="candidate_wm")
        if self._range_register:
            d_activate = d_op == int(Opcode.ACTIVATE)
            d_matmul = d_op == int(Opcode.MATMUL)
            with m.If(decode):
                m.d.sync += [
                    ub_range.lo.eq(Mux(d_activate, d_b, d_a)),
                    ub_range.hi.eq(Mux(d_activate, d_b + d_n, d_a + d_n)),
                    acc_range.lo.eq(Mux(d_matmul, d_b, d_a)),
                    acc_range.hi.eq(Mux(d_matmul, d_b + d_n, d_a + d_n)),
                    wm_range.lo.eq(d_a),
                    wm_range.hi.eq(d_a + d_n),
                ]
        else:
            m.d.comb += [
                ub_range.lo.eq(Mux(is_op[Opcode.ACTIVATE], b, a)),
                ub_range.hi.eq(Mux(is_op[Opcode.ACTIVATE], b_hi, a_hi)),
                acc_range.lo.eq(Mux(is_op[Opcode.MATMUL], b, a)),
                acc_range.hi.eq(Mux(is_op[Opcode.MATMUL], b_hi, a_hi)),
                wm_range.lo.eq(a),
                wm_range.hi.eq(a_hi),
            ]
        # The rows being read through each shared read port. Its two users never send requests
        # at the same time (each instruction waits until the other unit has sent its last), so
        # one range per port does, noted when its instruction issues. The MATMUL unit keeps its
        # own: two MATMULs may be in it at once, one fed and one queued.
        ub_reading  = Signal(RowRange(g.ub_depth), name="ub_reading")    # READ_UB
        acc_reading = Signal(RowRange(g.acc_depth), name="acc_reading")  # ACTIVATE, READ_ACC
        ub_written = Signal()   # overlaps UB rows still to be written
        ub_read    = Signal()   # overlaps UB rows still to be read
        acc_written = Signal()  # overlaps ACC rows still to be written (by MATMULs)
        acc_read   = Signal()   # overlaps ACC rows still to be read
        wm_read    = Signal()   # overlaps WM rows still to be read
        # The hazard stage: the overlap checks are registered, so their comparators end at a
        # flip-flop instead of running on into the verdict. A hazard only appears when an
        # instruction issues, and the next word is complete 8 cycles later at the earliest, so
        # a one-cycle-old hazard is at worst one that has just cleared. `checked` says the
        # registers hold the current word's checks: a word retires 3 cycles after its last
        # byte (10 cycles a word).
        checked = Signal()
        if self._overlap_register:
            # Each overlap check (a unit's flag and its range's two compares) is registered on
            # its own, and the hazards are the OR of those registers, a cycle later: the
            # comparators' cycle holds one or two gates after them, the hazards' one. Each
            # register sees a unit's flag and range from the same cycle, so the hazards are as
            # consistent as they were, two cycles old: still at worst just cleared. A word
            # retires 4 cycles after its last byte (11 cycles a word).
            checks = [
                ("ub_written", ub_written, [act.busy & overlaps(ub_range, act.write_range)]),
                ("ub_read", ub_read, [tx.reading_ub & overlaps(ub_range, ub_reading),
                                      mm.feeding & overlaps(ub_range, mm.read_range),
                                      mm.queued & overlaps(ub_range, mm.queued_range)]),
                ("acc_written", acc_written, [
                    mm.acc_writes[k].valid & overlaps(acc_range, mm.acc_writes[k].range)
                    for k in range(MATMUL_QUEUE)]),
                ("acc_read", acc_read, [(act.reading | tx.reading_acc) &
                                        overlaps(acc_range, acc_reading)]),
                ("wm_read", wm_read, [loader.reading & overlaps(wm_range, loader.read_range)]),
            ]
            checked_first = Signal()    # the checks' registers hold the current word's
            m.d.sync += [
                checked_first.eq(word_full & ~retire),
                checked.eq(checked_first & word_full & ~retire),
            ]
            for name, hazard, terms in checks:
                registers = [Signal(name=f"check_{name}{k}") for k in range(len(terms))]
                m.d.sync += [register.eq(term) for register, term in zip(registers, terms)]
                m.d.sync += hazard.eq(Cat(registers).any())
        else:
            # The same checks, written as the ECP5 and Gowin builds were verified with: an OR
            # over `checks` maps ub_read and acc_written to other cells (their RTLIL changes).
            m.d.sync += [
                checked.eq(word_full & ~retire),
                ub_written.eq(act.busy & overlaps(ub_range, act.write_range)),
                ub_read.eq((tx.reading_ub & overlaps(ub_range, ub_reading)) |
                           (mm.feeding & overlaps(ub_range, mm.read_range)) |
                           (mm.queued & overlaps(ub_range, mm.queued_range))),
                acc_written.eq(Cat(mm.acc_writes[k].valid &
                                   overlaps(acc_range, mm.acc_writes[k].range)
                                   for k in range(MATMUL_QUEUE)).any()),
                acc_read.eq((act.reading | tx.reading_acc) & overlaps(acc_range, acc_reading)),
                wm_read.eq(loader.reading & overlaps(wm_range, loader.read_range)),
            ]
        all_idle = Signal()
        m.d.comb += [
            all_idle.eq(~loader.busy & mm.idle & ~act.busy & ~tx.busy & ~rx.busy),
            self.idle.eq(all_idle & ~word_full & ~skid.o.valid),
        ]
        # The units' own state joins the hazard stage, by the same argument: a unit only gets
        # busy when a word retires, at least 9 cycles before the next verdict, so a one-cycle-old
        # flag is at worst one that has just cleared. This ends the paths from the units' read
        # port owners and counters at a flip-flop rather than in the verdict.
        h = {}
        for name, flag in {
            "act_busy": act.busy, "act_reading": act.reading, "loader_busy": loader.busy,
            "mm_feeding": mm.feeding, "tx_busy": tx.busy, "all_idle": all_idle,
            # The unit flags that MATMUL and ACTIVATE wait on, as one flip-flop each, so that
            # each opcode's condition below is a single LUT.
            "mm_units": mm.queued | mm.full | tx.reading_ub,
            "act_units": act.busy | tx.reading_acc,
        }.items():
            h[name] = Signal(name=f"h_{name}")
            m.d.sync += h[name].eq(flag)

        issue_conditions = {
            Opcode.NOP:           1,
            Opcode.WRITE_UB:      ~h["act_busy"] & ~ub_read,
            Opcode.WRITE_WM:      ~wm_read,
            Opcode.SET_PPU:       ~h["act_busy"],
            Opcode.LOAD_WEIGHTS:  ~h["loader_busy"],
            Opcode.MATMUL:        ~h["mm_units"] & ~ub_written & ~acc_read,
            Opcode.ACTIVATE:      ~h["act_units"] & ~acc_written & ~ub_read,
            Opcode.READ_UB:       ~h["tx_busy"] & ~h["mm_feeding"] & ~ub_written,
            Opcode.READ_ACC:      ~h["tx_busy"] & ~h["act_reading"] & ~acc_written,
            Opcode.READ_COUNTERS: h["all_idle"],
            Opcode.SYNC:          h["all_idle"],
        }
        # Each opcode's term (one LUT: its flag and up to three conditions) and the verdicts'
        # inputs below are kept as nets, so that synthesis maps the verdicts as shallow trees of
        # small cones rather than merged chains (9 LUTs deep on the iCEBreaker).
        # (An illegal opcode never issues.)
        issue_terms = {}
        for opcode, condition in issue_conditions.items():
            issue_terms[opcode] = Signal(name=f"can_issue_{opcode.name.lower()}",
                                         attrs={"keep": 1})
            m.d.comb += issue_terms[opcode].eq(is_op[opcode] & condition)
        can_issue_now = Signal(name="can_issue_now", attrs={"keep": 1})
        m.d.comb += can_issue_now.eq(Cat(issue_terms.values()).any())

        # Retire: a good instruction when it can issue, a failed one at once (an illegal one
        # once ERROR can go out); in the faulted state, any word but SYNC at once, SYNC when
        # every unit is idle. The verdict is registered, so every word retires one cycle after
        # its checks pass: this cuts the long paths from the units' busy flags through retire
        # to every unit's start.
        # A one-cycle-old verdict is safe because issue is in order: while a word waits,
        # nothing else issues or fails, so no new hazard can appear and `pending` and
        # `faulted` hold; units only finish, which at worst delays the word by a cycle.
        v_issue = Signal(name="verdict_issue")      # a good instruction issues
        v_fail  = Signal(name="verdict_fail")       # a failed one is recorded
        v_skip  = Signal(name="verdict_skip")       # a word is skipped (or SYNC, when faulted)
        v_respond = Signal(name="verdict_respond")  # ... and the retiring word starts a response
        v_payload = Signal(name="verdict_payload")  # ... or the payload receiver
        # `retire` is a flip-flop of its own, so that `waiting` is one gate from registers.
        waiting = word_full & ~retire & checked
        proceed = Signal(name="proceed", attrs={"keep": 1})     # a good word may issue
        m.d.comb += proceed.eq(waiting & ~faulted & ~failed)
        issue_next = proceed & can_issue_now
        fail_next = waiting & ~faulted & failed & (h_known | ~h["tx_busy"])
        skip_next = waiting & faulted & (~is_sync_word | h["all_idle"])

        def can_issue(opcodes):
            # Whether one of `opcodes` can issue now: their own conditions only, not all of
            # `can_issue_now`, so that the verdicts taken on a few opcodes have fewer inputs.
            return Cat(issue_terms[opcode] for opcode in opcodes).any()
        # The words that answer, when they issue: the READs and SYNC (a SYNC opcode that is not
        # the SYNC word fails as MALFORMED).
        can_answer_now = can_issue((Opcode.READ_UB, Opcode.READ_ACC, Opcode.READ_COUNTERS,
                                    Opcode.SYNC))
        payload_opcodes = (Opcode.WRITE_UB, Opcode.WRITE_WM, Opcode.SET_PPU)
        has_payload = Cat(is_op[opcode] for opcode in payload_opcodes).any()
        can_issue_bare = can_issue(opcode for opcode in Opcode if opcode not in payload_opcodes)
        m.d.sync += [
            v_issue.eq(issue_next),
            v_fail.eq(fail_next),
            v_skip.eq(skip_next),
            retire.eq(issue_next | fail_next | skip_next),
            # retire & ~(~faulted & has_payload), a cycle early: `faulted` only changes as a
            # word retires, and a skipped word has no payload.
            v_accept.eq((proceed & can_issue_bare) |
                        (fail_next & ~has_payload) | skip_next),
            # A SYNC, an illegal opcode's ERROR or a READ: its own flip-flop, because the
            # sender's start is the clock enable of its wide buffer.
            v_respond.eq((proceed & can_answer_now) |
                         (fail_next & ~h_known) |
                         (skip_next & is_sync_word)),
            # Likewise the payload receiver's start: from the opcode flags through the verdict
            # into the receiver's state, it was 7 LUTs on the iCEBreaker.
            v_payload.eq((issue_next | fail_next) & has_payload),
        ]
        # The units' starts, one flip-flop each (issue_next & is_op, as the opcode flags are
        # one-hot), next to the units rather than behind the verdict's logic.
        v_start = {}
        for opcode in (Opcode.LOAD_WEIGHTS, Opcode.MATMUL, Opcode.ACTIVATE):
            v_start[opcode] = Signal(name=f"verdict_{opcode.name.lower()}")
            m.d.sync += v_start[opcode].eq(proceed & issue_terms[opcode])
        decoded = v_issue | v_fail                  # an instruction, not a skipped word
        issue   = v_issue
        do_sync = retire & is_sync_word             # in either state, the SYNC word is a SYNC
        illegal = v_fail & ~known

        # The first error since the last SYNC and its index. A good SET_PPU notes its index
        # too, in case its configuration turns out invalid (MALFORMED) once its payload is in:
        # no other word is decoded before then, and a valid one puts the index back to 0.
        no_error = err_code == int(ErrorCode.OK)
        note_index = (v_fail | (v_issue & is_op[Opcode.SET_PPU])) & no_error
        with m.If(do_sync):
            m.d.sync += [faulted.eq(0), index.eq(0), err_code.eq(0)]
        with m.Else():
            with m.If(decoded):
                m.d.sync += index.eq(index + 1)
            with m.If(illegal):
                m.d.sync += faulted.eq(1)
            with m.If(note_index):
                m.d.sync += err_code.eq(error)
            with m.Elif(rx.config_error & no_error):
                m.d.sync += err_code.eq(int(ErrorCode.MALFORMED))
        # (Apart, so that it maps to a register with a reset and an enable, not multiplexers.)
        with m.If(do_sync | (rx.config_write & no_error)):
            m.d.sync += err_index.eq(0)
        with m.Elif(note_index):
            m.d.sync += err_index.eq(index)

        with m.If(issue & is_op[Opcode.READ_UB]):
            m.d.sync += ub_reading.eq(ub_range)
        with m.If(issue & (is_op[Opcode.ACTIVATE] | is_op[Opcode.READ_ACC])):
            m.d.sync += acc_reading.eq(acc_range)

        with m.If(v_start[Opcode.LOAD_WEIGHTS]):
            m.d.sync += pending.eq(1)
        with m.If(v_start[Opcode.MATMUL] & _flag(flags, Flag.SWAP)):
            m.d.sync += pending.eq(0)

        # Payloads: consumed even when the instruction failed.
        m.d.comb += [
            rx.start.eq(v_payload),             # decoded & has_payload
            rx.command.addr.eq(a),
            rx.command.rows.eq(Mux(is_op[Opcode.SET_PPU], 1, n)),
            rx.command.discard.eq(v_fail),
            rx.command.kind.eq(Mux(is_op[Opcode.WRITE_UB], PayloadKind.UB,
                                   Mux(is_op[Opcode.WRITE_WM], PayloadKind.WM,
                                       PayloadKind.PPU))),
        ]

        # Units.
        m.d.comb += [
            loader.start.eq(v_start[Opcode.LOAD_WEIGHTS]),
            loader.command.addr.eq(a),
            loader.command.signed.eq(_flag(flags, Flag.SIGNED)),
            mm.start.eq(v_start[Opcode.MATMUL]),
            mm.command.ub.lo.eq(a),
            mm.command.ub.hi.eq(a_hi),
            mm.command.acc.lo.eq(b),
            mm.command.acc.hi.eq(b_hi),
            mm.command.signed.eq(_flag(flags, Flag.SIGNED)),
            mm.command.accumulate.eq(_flag(flags, Flag.ACCUMULATE)),
            mm.command.swap.eq(_flag(flags, Flag.SWAP)),
            mm.command.rows.eq(n),              # n <= depth: the ADDRESS check passed
            act.start.eq(v_start[Opcode.ACTIVATE]),
            act.command.acc.lo.eq(a),
            act.command.acc.hi.eq(a_hi),
            act.command.ub.lo.eq(b),
            act.command.ub.hi.eq(b_hi),
            act.command.lane.eq(flags),
            act.command.rows.eq(n),
        ]

        # Responses.
        m.d.comb += [
            tx.start.eq(v_respond),             # do_sync | illegal | a READ issuing
            tx.command.addr.eq(a),
            tx.command.n.eq(n),
            tx.counters.eq(counters.values),
        ]
        # Code and index are only sent by STATUS and ERROR.
        m.d.comb += [tx.command.code.eq(Mux(do_sync, err_code, int(ErrorCode.ILLEGAL_OPCODE))),
                     tx.command.index.eq(Mux(do_sync, err_index, index))]
        # The packet's kind depends on the word alone, which stays put until it retires, so it
        # is registered beside the verdict: from the opcode flags through these multiplexers
        # into the sender's header, the path was an iCE40 build's critical one. (A word that
        # retires as a SYNC is the SYNC word, in either state.)
        v_kind = Signal(ResponseKind, name="verdict_kind")
        with m.If(is_sync_word):
            m.d.sync += v_kind.eq(ResponseKind.STATUS)
        with m.Elif(~known):
            m.d.sync += v_kind.eq(ResponseKind.ERROR)
        with m.Elif(is_op[Opcode.READ_UB]):
            m.d.sync += v_kind.eq(ResponseKind.UB_ROWS)
        with m.Elif(is_op[Opcode.READ_ACC]):
            m.d.sync += v_kind.eq(ResponseKind.ACC_ROWS)
        with m.Else():
            m.d.sync += v_kind.eq(ResponseKind.COUNTERS)
        m.d.comb += tx.command.kind.eq(v_kind)

        # Counters.
        events = counters.events
        m.d.comb += [
            counters.clear.eq(issue & is_op[Opcode.READ_COUNTERS] & _flag(flags, Flag.CLEAR)),
            events.mxu_busy.eq(self.mxu.x.valid & self.mxu.x.ready),
            events.stall_weights.eq(self.mxu.x.valid & ~self.mxu.x.ready),
            events.stall_hazard.eq(word_full & ~retire),
            events.stall_host_in.eq(self.i.ready & ~self.i.valid),
            events.stall_host_out.eq(self.o.valid & ~self.o.ready),
            events.instructions.eq(decoded | do_sync),
        ]
        return m
