"""The host link: payload bytes into rows, and response packets out as bytes.

The host talks to the accelerator over two byte streams (see :mod:`firmware.isa`). The
controller decodes instruction words itself; the two units here deal with everything else on
those streams:

* :class:`PayloadReceiver` takes the payload that follows WRITE_UB, WRITE_WM and SET_PPU and
  turns it into unified-buffer rows, weight-memory rows or a PPU configuration, then skips the
  padding up to the next word;
* :class:`ResponseSender` sends every response packet (DATA, STATUS, ERROR), reading the rows
  of READ_UB and READ_ACC from the memories as the host takes the bytes.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.isa import WORD, Geometry, Tag, ppu_config_length
from .counters import CounterValues
from .ppu import PostProcessorConfig
from .unified_buffer import ReadRequest, ReadResponse, RowWrite

__all__ = [
    "ADDR_BITS", "RowRange", "PayloadKind", "PayloadCommand", "PayloadReceiver",
    "ResponseKind", "ResponseCommand", "ResponseSender", "check_geometry",
]

#: Width of the a, b and n fields of an instruction word.
ADDR_BITS = 16


def check_geometry(owner, geometry):
    """Raise a TypeError unless ``geometry`` is a :class:`firmware.isa.Geometry`."""
    if not isinstance(geometry, Geometry):
        owner._MustUse__silence = True
        raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")


class RowRange(data.StructLayout):
    """The rows ``lo <= row < hi`` of one memory, for the scoreboard.

    Members
    -------
    lo : unsigned(16)
        First row.
    hi : unsigned(17)
        One past the last row (up to 65536).
    """
    def __init__(self):
        super().__init__({"lo": ADDR_BITS, "hi": ADDR_BITS + 1})


def overlaps(x, y):
    """Whether two :class:`RowRange` values share a row."""
    return (x.lo < y.hi) & (y.lo < x.hi)


class PayloadKind(enum.Enum, shape=2):
    """Where a payload goes."""
    UB  = 0     #: rows of R bytes into the unified buffer (WRITE_UB)
    WM  = 1     #: rows of C bytes into the weight memory (WRITE_WM)
    PPU = 2     #: one PPU configuration of 4C + 8 bytes (SET_PPU)


class PayloadCommand(data.StructLayout):
    """What to do with the payload that follows an instruction word.

    Members
    -------
    kind : PayloadKind
        Its destination.
    addr : unsigned(16)
        First row written (UB, WM).
    rows : unsigned(16)
        Rows to receive: ``n`` for UB and WM, 1 for PPU. 0 means no payload.
    discard : unsigned(1)
        The instruction failed: consume the payload, write nothing.
    """
    def __init__(self):
        super().__init__({"kind": PayloadKind, "addr": ADDR_BITS, "rows": ADDR_BITS,
                          "discard": 1})


class PayloadReceiver(wiring.Component):
    """Receives the payload of WRITE_UB, WRITE_WM and SET_PPU from the host's byte stream.

    A ``start`` pulse hands over a :class:`PayloadCommand`; from the next cycle the receiver
    takes bytes on ``i`` (``receiving``) until it has the whole payload and its padding to the
    next 8-byte word. Each complete row is written in the cycle after its last byte: a UB row
    on ``ub_w`` (all bytes enabled), a WM row on ``wm_w``; a complete PPU configuration pulses
    ``config_write`` with the new ``config`` if its shift (0..31) and activation (0..2) are
    valid, and ``config_error`` if not. Failed instructions (``discard``) only consume bytes.

    The memories' write ports are always ready, and the controller's scoreboard gives this
    unit the UB write port to itself, so writes are not held (``ready`` is ignored).

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.

    Members
    -------
    start : In(1)
        Begin a payload (only while ``busy`` is low).
    command : In(PayloadCommand())
        The payload's destination; sampled with ``start``.
    i : In(stream.Signature(8))
        Payload bytes; ``ready`` while ``receiving``.
    receiving : Out(1)
        Bytes of the payload or its padding remain: the byte stream belongs to this unit.
    busy : Out(1)
        ``receiving``, or the last row is still being written.
    ub_w : Out(stream.Signature(RowWrite(ArrayLayout(unsigned(8), R), ub_depth, masked=True)))
        Unified buffer rows.
    wm_w : Out(stream.Signature(RowWrite(ArrayLayout(unsigned(8), C), wm_depth)))
        Weight memory rows.
    config : Out(PostProcessorConfig(C))
        The configuration received; valid with ``config_write``.
    config_write : Out(1)
        Pulse: store ``config``.
    config_error : Out(1)
        Pulse: the configuration was invalid and is dropped (MALFORMED).
    """
    def __init__(self, geometry):
        check_geometry(self, geometry)
        self._geometry = g = geometry
        super().__init__({
            "start":        In(1),
            "command":      In(PayloadCommand()),
            "i":            In(stream.Signature(8)),
            "receiving":    Out(1),
            "busy":         Out(1),
            "ub_w":         Out(stream.Signature(RowWrite(
                data.ArrayLayout(unsigned(8), g.rows), g.ub_depth, masked=True))),
            "wm_w":         Out(stream.Signature(RowWrite(
                data.ArrayLayout(unsigned(8), g.cols), g.wm_depth))),
            "config":       Out(PostProcessorConfig(g.cols)),
            "config_write": Out(1),
            "config_error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        rows, cols = g.rows, g.cols
        config_bytes = ppu_config_length(cols)
        width = max(rows, cols, config_bytes)

        kind      = Signal(PayloadKind, name="rx_kind")
        addr      = Signal(ADDR_BITS, name="rx_addr")
        rows_left = Signal(ADDR_BITS, name="rx_rows_left")
        discard   = Signal(name="rx_discard")
        row_byte  = Signal(range(width), name="rx_row_byte")
        word_byte = Signal(range(WORD), name="rx_word_byte")     # wraps at the word's end
        # Bytes enter at the top and move down, so a row of k bytes ends in the top k.
        shift     = Signal(8 * width, name="rx_shift")
        written   = Signal(name="rx_written")                   # a row completed last cycle

        row_last = Signal()
        with m.Switch(kind):
            with m.Case(PayloadKind.UB):
                m.d.comb += row_last.eq(row_byte == rows - 1)
            with m.Case(PayloadKind.WM):
                m.d.comb += row_last.eq(row_byte == cols - 1)
            with m.Default():
                m.d.comb += row_last.eq(row_byte == config_bytes - 1)

        m.d.comb += [
            self.receiving.eq((rows_left != 0) | (word_byte != 0)),
            self.busy.eq(self.receiving | written),
            self.i.ready.eq(self.receiving),
        ]

        m.d.sync += written.eq(0)
        with m.If(written):
            m.d.sync += addr.eq(addr + 1)
        with m.If(self.start):
            m.d.sync += [
                kind.eq(self.command.kind),
                addr.eq(self.command.addr),
                rows_left.eq(self.command.rows),
                discard.eq(self.command.discard),
                row_byte.eq(0),
            ]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += word_byte.eq(word_byte + 1)
            with m.If(rows_left != 0):
                m.d.sync += shift.eq(Cat(shift[8:], self.i.payload))
                with m.If(row_last):
                    m.d.sync += [
                        row_byte.eq(0),
                        rows_left.eq(rows_left - 1),
                        written.eq(1),
                    ]
                with m.Else():
                    m.d.sync += row_byte.eq(row_byte + 1)

        def top(count):
            return shift[8 * (width - count):]

        m.d.comb += [
            self.ub_w.valid.eq(written & ~discard & (kind == PayloadKind.UB)),
            self.ub_w.payload.addr.eq(addr),
            self.ub_w.payload.data.eq(top(rows)),
            self.ub_w.payload.mask.eq((1 << rows) - 1),
            self.wm_w.valid.eq(written & ~discard & (kind == PayloadKind.WM)),
            self.wm_w.payload.addr.eq(addr),
            self.wm_w.payload.data.eq(top(cols)),
        ]

        # The configuration's bytes (ppu_config_bytes): C int32 biases, int32 multiplier, then
        # shift, zero point, activation and clamp_max, one byte each.
        raw = top(config_bytes)
        scalars = 32 * cols + 32
        shift_byte = raw[scalars:scalars + 8]
        activation_byte = raw[scalars + 16:scalars + 24]
        m.d.comb += [
            self.config.bias.eq(raw[:32 * cols]),
            self.config.multiplier.eq(raw[32 * cols:scalars]),
            self.config.shift.eq(shift_byte),
            self.config.zero_point.eq(raw[scalars + 8:scalars + 16]),
            self.config.activation.eq(activation_byte),
            self.config.clamp_max.eq(raw[scalars + 24:scalars + 32]),
        ]
        is_config = written & ~discard & (kind == PayloadKind.PPU)
        config_ok = (shift_byte < 32) & (activation_byte < 3)
        m.d.comb += [
            self.config_write.eq(is_config & config_ok),
            self.config_error.eq(is_config & ~config_ok),
        ]
        return m


class ResponseKind(enum.Enum, shape=3):
    """Which packet to send."""
    ERROR    = 0    #: ERROR header (illegal opcode)
    STATUS   = 1    #: STATUS header (SYNC)
    COUNTERS = 2    #: DATA header and the counters (READ_COUNTERS)
    UB_ROWS  = 3    #: DATA header and unified-buffer rows (READ_UB)
    ACC_ROWS = 4    #: DATA header and accumulator rows (READ_ACC)


class ResponseCommand(data.StructLayout):
    """One response packet to send.

    Members
    -------
    kind : ResponseKind
        The packet.
    code : unsigned(8)
        Error code of a STATUS or ERROR packet.
    index : unsigned(32)
        Index of a STATUS or ERROR packet.
    addr : unsigned(16)
        First row read (UB_ROWS, ACC_ROWS).
    n : unsigned(16)
        Rows read (UB_ROWS, ACC_ROWS), 1 or more.
    """
    def __init__(self):
        super().__init__({"kind": ResponseKind, "code": 8, "index": 32, "addr": ADDR_BITS,
                          "n": ADDR_BITS})


class ResponseSender(wiring.Component):
    """Sends response packets on the host's output byte stream, one byte per cycle.

    A ``start`` pulse (only while ``busy`` is low) takes a :class:`ResponseCommand` and, for
    COUNTERS, the ``counters`` as they are in that cycle. The packet's 8-byte header goes out
    first; DATA packets follow it with their payload. Rows for READ_UB and READ_ACC are
    requested from the memory while earlier bytes are still going out (the read port's response
    register holds the next row), so a packet streams without gaps while ``out.ready`` is high.

    One shift register of ``max(64, R, 4C)`` bytes holds what is being sent: the header (with
    the 56 counter bytes behind it, for READ_COUNTERS) or one row, as its raw little-endian
    bits; the next row is loaded in the cycle the last byte of the previous one is taken.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.

    Members
    -------
    start : In(1)
        Send a packet.
    command : In(ResponseCommand())
        The packet; sampled with ``start``.
    counters : In(CounterValues())
        The counters; sampled with ``start``.
    out : Out(stream.Signature(8))
        Response bytes.
    busy : Out(1)
        Bytes of the packet are left to send.
    reading_ub, reading_acc : Out(1)
        Row read requests to the unified buffer / accumulator memory are left to send.
    read_range : Out(RowRange())
        The rows being read.
    ub_r_addr : Out(stream.Signature(ReadRequest(ub_depth)))
        Unified buffer read requests.
    ub_r_data : In(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), R))))
        Unified buffer read responses.
    acc_r_addr : Out(stream.Signature(ReadRequest(acc_depth)))
        Accumulator read requests.
    acc_r_data : In(stream.Signature(ReadResponse(ArrayLayout(signed(32), C))))
        Accumulator read responses.
    """
    def __init__(self, geometry):
        check_geometry(self, geometry)
        self._geometry = g = geometry
        super().__init__({
            "start":       In(1),
            "command":     In(ResponseCommand()),
            "counters":    In(CounterValues()),
            "out":         Out(stream.Signature(8)),
            "busy":        Out(1),
            "reading_ub":  Out(1),
            "reading_acc": Out(1),
            "read_range":  Out(RowRange()),
            "ub_r_addr":   Out(stream.Signature(ReadRequest(g.ub_depth))),
            "ub_r_data":   In(stream.Signature(ReadResponse(
                data.ArrayLayout(unsigned(8), g.rows)))),
            "acc_r_addr":  Out(stream.Signature(ReadRequest(g.acc_depth))),
            "acc_r_data":  In(stream.Signature(ReadResponse(
                data.ArrayLayout(signed(32), g.cols)))),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        rows, cols = g.rows, g.cols
        counter_bytes = self.counters.shape().size // 8
        width = max(WORD + counter_bytes, rows, 4 * cols)

        buffer    = Signal(8 * width, name="tx_buffer")     # byte 0 goes out next
        count     = Signal(range(width + 1), name="tx_count")
        kind      = Signal(ResponseKind, name="tx_kind")
        rows_left = Signal(ADDR_BITS, name="tx_rows_left")  # rows still to load
        req_addr  = Signal(ADDR_BITS, name="tx_req_addr")
        req_left  = Signal(ADDR_BITS, name="tx_req_left")   # read requests still to send
        lo        = Signal(ADDR_BITS, name="tx_lo")
        hi        = Signal(ADDR_BITS + 1, name="tx_hi")

        m.d.comb += [
            self.out.valid.eq(count != 0),
            self.out.payload.eq(buffer[:8]),
            self.busy.eq((count != 0) | (rows_left != 0)),
            self.reading_ub.eq((req_left != 0) & (kind == ResponseKind.UB_ROWS)),
            self.reading_acc.eq((req_left != 0) & (kind == ResponseKind.ACC_ROWS)),
            self.read_range.lo.eq(lo),
            self.read_range.hi.eq(hi),
        ]

        # Read requests, to one memory or the other.
        for port, reading in ((self.ub_r_addr, self.reading_ub),
                              (self.acc_r_addr, self.reading_acc)):
            m.d.comb += [
                port.valid.eq(reading),
                port.payload.addr.eq(req_addr),
                port.payload.last.eq(req_left == 1),
            ]
        with m.If((self.ub_r_addr.valid & self.ub_r_addr.ready) |
                  (self.acc_r_addr.valid & self.acc_r_addr.ready)):
            m.d.sync += [req_addr.eq(req_addr + 1), req_left.eq(req_left - 1)]

        # The buffer is free for new bytes at the next clock edge.
        emptying = (count == 0) | ((count == 1) & self.out.ready)
        with m.If(self.out.valid & self.out.ready):
            m.d.sync += [buffer.eq(buffer[8:]), count.eq(count - 1)]

        take = (rows_left != 0) & emptying
        m.d.comb += [
            self.ub_r_data.ready.eq(take & (kind == ResponseKind.UB_ROWS)),
            self.acc_r_data.ready.eq(take & (kind == ResponseKind.ACC_ROWS)),
        ]
        with m.If(self.ub_r_data.valid & self.ub_r_data.ready):
            m.d.sync += [
                buffer.eq(self.ub_r_data.payload.data),
                count.eq(rows),
                rows_left.eq(rows_left - 1),
            ]
        with m.If(self.acc_r_data.valid & self.acc_r_data.ready):
            m.d.sync += [
                buffer.eq(self.acc_r_data.payload.data),
                count.eq(4 * cols),
                rows_left.eq(rows_left - 1),
            ]

        # The header: tag, code, two zero bytes, then a little-endian u32 (length or index).
        command = self.command
        tag = Signal(8)
        value = Signal(32)
        with m.Switch(command.kind):
            with m.Case(ResponseKind.ERROR):
                m.d.comb += [tag.eq(Tag.ERROR), value.eq(command.index)]
            with m.Case(ResponseKind.STATUS):
                m.d.comb += [tag.eq(Tag.STATUS), value.eq(command.index)]
            with m.Case(ResponseKind.COUNTERS):
                m.d.comb += [tag.eq(Tag.DATA), value.eq(counter_bytes)]
            with m.Case(ResponseKind.UB_ROWS):
                m.d.comb += [tag.eq(Tag.DATA), value.eq(command.n * rows)]
            with m.Case(ResponseKind.ACC_ROWS):
                m.d.comb += [tag.eq(Tag.DATA), value.eq(command.n * (4 * cols))]
            with m.Default():                       # no such kind
                m.d.comb += [tag.eq(Tag.ERROR), value.eq(command.index)]
        is_data = ((command.kind == ResponseKind.COUNTERS) |
                   (command.kind == ResponseKind.UB_ROWS) |
                   (command.kind == ResponseKind.ACC_ROWS))
        header = Cat(tag, Mux(is_data, 0, command.code), Const(0, 16), value)
        is_rows = ((command.kind == ResponseKind.UB_ROWS) |
                   (command.kind == ResponseKind.ACC_ROWS))

        with m.If(self.start):
            m.d.sync += [kind.eq(command.kind), lo.eq(command.addr),
                         hi.eq(command.addr + command.n)]
            with m.If(command.kind == ResponseKind.COUNTERS):
                m.d.sync += [buffer.eq(Cat(header, self.counters)),
                             count.eq(WORD + counter_bytes)]
            with m.Else():
                m.d.sync += [buffer.eq(header), count.eq(WORD)]
            with m.If(is_rows):
                m.d.sync += [rows_left.eq(command.n), req_left.eq(command.n),
                             req_addr.eq(command.addr)]
        return m
