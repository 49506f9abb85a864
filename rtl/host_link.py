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
from .counters import COUNTER_BITS, CounterValues
from .params import check_bool, check_int
from .ppu import PostProcessorConfig
from .unified_buffer import ReadRequest, ReadResponse, RowWrite

__all__ = [
    "ADDR_BITS", "row_shape", "RowRange", "PayloadKind", "PayloadCommand", "PayloadReceiver",
    "ResponseKind", "ResponseCommand", "ResponseSender", "check_geometry",
]

#: Width of the a, b and n fields of an instruction word.
ADDR_BITS = 16


def row_shape(depth):
    """The shape of a row number of a memory of ``depth`` rows: ``range(depth)``, but at least
    one bit wide (the Verilog backend would turn a zero-width signal into a two-bit one)."""
    return range(max(depth, 2))


def check_geometry(owner, geometry):
    """Raise a TypeError unless ``geometry`` is a :class:`firmware.isa.Geometry`."""
    if not isinstance(geometry, Geometry):
        owner._MustUse__silence = True
        raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")


class RowRange(data.StructLayout):
    """The rows ``lo <= row < hi`` of one memory of ``depth`` rows, for the scoreboard.

    Once an instruction has passed the ADDRESS check its rows lie inside their memory, so
    everything after issue holds its ranges at the width of that memory, not of the 16-bit
    instruction fields.

    Parameters
    ----------
    depth : int
        Rows in the memory (default 65536: any range an instruction word can name).

    Members
    -------
    lo : unsigned(max(ceil_log2(depth), 1))
        First row.
    hi : unsigned(ceil_log2(depth + 1))
        One past the last row (up to ``depth``).
    """
    def __init__(self, depth=1 << ADDR_BITS):
        super().__init__({"lo": row_shape(depth), "hi": range(depth + 1)})


def _below(row, end):
    """``row < end``, where ``end`` may be wider: its upper bits decide on their own, so the
    comparator's carry chain is only as long as ``row``."""
    width = len(row)
    if len(end) <= width:
        return row < end
    return end[width:].any() | (row < end[:width])


def overlaps(x, y):
    """Whether two :class:`RowRange` values share a row (an empty range strictly inside the
    other counts too: a hazard too many only delays an instruction)."""
    return _below(x.lo, y.hi) & _below(y.lo, x.hi)


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
    on ``ub_w`` (all bytes enabled), a WM row on ``wm_w``; a complete PPU configuration is
    stored in ``config`` at the end of that cycle, pulsing ``config_write``, if its shift
    (0..31) and activation (0..2) are valid, and pulses ``config_error`` (leaving ``config``
    as it was) if not. Failed instructions (``discard``) only consume bytes.

    The configuration register's write enable is decided a cycle early, as the last byte
    enters (the shift and activation bytes are in by then), and registered in C + 1 copies kept
    apart (``keep``): one for each column's bias and one for the other fields. One flip-flop
    driving the clock enables of all 32 C + 55 bits lay across the die on the ULX3S's 16 x 16
    (15 ns of routing).

    The memories' write ports are always ready, and the controller's scoreboard gives this
    unit the UB write port to itself, so writes are not held (``ready`` is ignored).

    The shift register that assembles rows and configurations also serves as the controller's
    instruction word register: ``word_in`` shifts a byte of ``i.payload`` into its top 8 bytes
    outside a payload, and ``recent`` shows the last 8 bytes that entered. (A payload
    overwrites the word, but only after the word has retired; a row or configuration is taken
    in the cycle after its last byte, before the next byte can enter.)

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
        The last valid configuration received (initially all zero but ``clamp_max``, 127).
    config_write : Out(1)
        Pulse: a valid configuration is being stored; ``config`` shows it in the next cycle.
    config_error : Out(1)
        Pulse: the configuration was invalid and is dropped (MALFORMED).
    word_in : In(1)
        Shift ``i.payload`` in as a byte of an instruction word (only while ``receiving`` is
        low).
    recent : Out(8 * WORD)
        The last 8 bytes shifted in (payload or word bytes), the oldest in the low byte.
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
            "config":       Out(PostProcessorConfig(g.cols), init={"clamp_max": 127}),
            "config_write": Out(1),
            "config_error": Out(1),
            "word_in":      In(1),
            "recent":       Out(8 * WORD),
        })

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        rows, cols = g.rows, g.cols
        config_bytes = ppu_config_length(cols)
        width = max(WORD, rows, cols, config_bytes)

        kind      = Signal(PayloadKind, name="rx_kind")
        # Rows are written only for an instruction that passed the ADDRESS check, so the
        # address fits the memory; a discarded payload may count up to 65535 rows.
        addr      = Signal(row_shape(max(g.ub_depth, g.wm_depth)), name="rx_addr")
        rows_left = Signal(ADDR_BITS, name="rx_rows_left")
        # rows_left != 0 as a flip-flop: it gates `i.ready`, and a 16-bit compare there put
        # three LUT levels in front of the host link's handshake.
        has_rows  = Signal(name="rx_has_rows")
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
            self.receiving.eq(has_rows | (word_byte != 0)),
            self.busy.eq(self.receiving | written),
            self.i.ready.eq(self.receiving),
        ]

        # The configuration's checks, on its bytes before the last one enters (they are
        # complete then, one byte lower in the shift register than once it has).
        config_bytes_before = shift[8 * (width - config_bytes + 1):]
        scalars = 32 * cols + 32
        config_ok = ((config_bytes_before[scalars:scalars + 8] < 32) &
                     (config_bytes_before[scalars + 16:scalars + 24] < 3))
        is_config = ~discard & (kind == PayloadKind.PPU)
        config_write = [Signal(name=f"rx_config_write_{k}", attrs={"keep": 1})
                        for k in range(cols + 1)]

        m.d.sync += [written.eq(0), self.config_error.eq(0)]
        m.d.sync += [copy.eq(0) for copy in config_write]
        with m.If(written):
            m.d.sync += addr.eq(addr + 1)
        with m.If(self.start):
            m.d.sync += [
                kind.eq(self.command.kind),
                addr.eq(self.command.addr),
                rows_left.eq(self.command.rows),
                has_rows.eq(self.command.rows != 0),
                discard.eq(self.command.discard),
                row_byte.eq(0),
            ]
        with m.Elif(self.i.valid & self.i.ready):
            m.d.sync += word_byte.eq(word_byte + 1)
            with m.If(has_rows):
                with m.If(row_last):
                    m.d.sync += [
                        row_byte.eq(0),
                        rows_left.eq(rows_left - 1),
                        has_rows.eq(rows_left != 1),
                        written.eq(1),
                        self.config_error.eq(is_config & ~config_ok),
                    ]
                    m.d.sync += [copy.eq(is_config & config_ok) for copy in config_write]
                with m.Else():
                    m.d.sync += row_byte.eq(row_byte + 1)
        # Payload bytes (not padding) shift through all of the register, word bytes for the
        # controller only through its top 8 bytes (`recent`): rows and configurations are made
        # of payload bytes alone. The rest of it then takes its clock enable from flip-flops
        # (`valid` and `has_rows`; `start` comes only while `busy` is low, so never with
        # `has_rows`), not from the controller's issue logic behind `word_in`: that enable,
        # across all 8 * (4 C + 8) bits, was a critical path of the ULX3S's 16 x 16.
        payload_in = self.i.valid & has_rows
        with m.If(payload_in | self.word_in):
            m.d.sync += shift[-8 * WORD:].eq(Cat(shift[-8 * WORD + 8:], self.i.payload))
        if width > WORD:
            with m.If(payload_in):
                m.d.sync += shift[:-8 * WORD].eq(shift[8:8 * (width - WORD + 1)])

        def top(count):
            return shift[8 * (width - count):]

        m.d.comb += self.recent.eq(top(WORD))

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
        for j in range(cols):
            with m.If(config_write[j]):
                m.d.sync += self.config.bias[j].eq(raw[32 * j:32 * (j + 1)])
        with m.If(config_write[cols]):
            m.d.sync += [
                self.config.multiplier.eq(raw[32 * cols:scalars]),
                self.config.shift.eq(raw[scalars:scalars + 8]),
                self.config.zero_point.eq(raw[scalars + 8:scalars + 16]),
                self.config.activation.eq(raw[scalars + 16:scalars + 24]),
                self.config.clamp_max.eq(raw[scalars + 24:scalars + 32]),
            ]
        m.d.comb += self.config_write.eq(config_write[cols])
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
    The rows ``addr .. addr + n - 1`` must lie inside their memory (the controller's ADDRESS
    check sees to that), so the row counters are only as wide as the deeper memory needs.

    One register of ``max(8, R, 4C)`` bytes holds the header or one row, as its raw
    little-endian bits, and a byte index picks the byte that goes next; the next row is loaded
    in the cycle the last byte of the previous one is taken. (A shift register would move all
    of its bits on every byte sent: the multiplexer in front of each bit and the control logic
    reaching all of them were the ULX3S's critical path, 12.2 ns built for 80 MHz.) The
    counters of a COUNTERS packet are snapshot into a second register, a shift register that
    holds only their ``counter_bits`` live bits (rounded up to whole bytes): it moves on by a
    byte for each live byte sent, and the zero bytes that extend each counter to a u64 are
    produced from the byte count instead.

    With ``row_register``, each row read is first registered, so a block RAM's output ends at a
    register and not in the buffer's multiplexers: its clock-to-output delay and the
    multiplexers no longer share a cycle, and (when every row has two bytes or more) the read
    ports' ``ready`` is a flip-flop. The packet then starts a cycle later; its bytes are the
    same, and they still follow each other without gaps.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.
    counter_bits : int
        Width of the counters (:class:`~rtl.counters.PerformanceCounters`), 16 to 64: only that
        many low bits of each of ``counters`` are sent, the rest of its 8 bytes as zeros.
    row_register : bool
        Register the rows between the read ports and the buffer (default False).

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
    read_range : Out(RowRange(max(ub_depth, acc_depth)))
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
    def __init__(self, geometry, *, counter_bits=COUNTER_BITS, row_register=False):
        check_geometry(self, geometry)
        check_int(self, "Counter width", counter_bits, 16, COUNTER_BITS)
        check_bool(self, "Row register", row_register)
        self._geometry = g = geometry
        self._counter_bits = counter_bits
        self._row_register = row_register
        super().__init__({
            "start":       In(1),
            "command":     In(ResponseCommand()),
            "counters":    In(CounterValues()),
            "out":         Out(stream.Signature(8)),
            "busy":        Out(1),
            "reading_ub":  Out(1),
            "reading_acc": Out(1),
            "read_range":  Out(RowRange(max(g.ub_depth, g.acc_depth))),
            "ub_r_addr":   Out(stream.Signature(ReadRequest(g.ub_depth))),
            "ub_r_data":   In(stream.Signature(ReadResponse(
                data.ArrayLayout(unsigned(8), g.rows)))),
            "acc_r_addr":  Out(stream.Signature(ReadRequest(g.acc_depth))),
            "acc_r_data":  In(stream.Signature(ReadResponse(
                data.ArrayLayout(signed(32), g.cols)))),
        })

    @property
    def row_register(self):
        return self._row_register

    def elaborate(self, platform):
        m = Module()
        g = self._geometry
        rows, cols = g.rows, g.cols
        depth = max(g.ub_depth, g.acc_depth)
        n_counters = self.counters.shape().length
        counter_bytes = COUNTER_BITS // 8                   # on the wire: a u64 each
        live_bytes = -(-self._counter_bits // 8)            # bytes that can be nonzero
        payload_bytes = n_counters * counter_bytes
        width = max(WORD, rows, 4 * cols)

        buffer    = Signal(8 * width, name="tx_buffer", reset_less=True)  # the header or a row
        index     = Signal(range(width), name="tx_index")     # its byte that goes next
        # Bytes left: in the buffer, or (COUNTERS) in the header and the counter payload.
        count     = Signal(range(max(width, WORD + payload_bytes) + 1), name="tx_count")
        # count == 0 and count == 1 as flip-flops: they are in the path from the host's `ready`
        # to the read ports' handshakes, where compares of `count` cost two LUT levels each.
        empty     = Signal(init=1, name="tx_empty")
        one       = Signal(name="tx_one")
        kind      = Signal(ResponseKind, name="tx_kind")
        snapshot  = Signal(8 * live_bytes * n_counters, name="tx_counters", reset_less=True)
        req_addr  = Signal(range(depth + 1), name="tx_req_addr")    # next row to request
        lo        = Signal(row_shape(depth), name="tx_lo")
        hi        = Signal(range(depth + 1), name="tx_hi")

        # Rows remain to be loaded into the buffer while requests remain or a response waits
        # in the read port's register (it holds one at most) or in `tx_row`. ``requesting`` is a
        # flip-flop (req_addr != hi, kept up to date below), because it starts the read port's
        # arbitration and the scoreboard's range checks.
        requesting = Signal(name="tx_requesting")
        req_left   = Signal(range(depth + 1), name="tx_req_left")   # requests left
        req_last   = Signal(name="tx_req_last")                     # req_left == 1
        row_valid  = Signal(name="tx_row_valid") if self._row_register else Const(0)
        rows_left = requesting | self.ub_r_data.valid | self.acc_r_data.valid | row_valid
        m.d.comb += [
            self.out.valid.eq(~empty),
            self.busy.eq(~empty | rows_left),
            self.reading_ub.eq(requesting & (kind == ResponseKind.UB_ROWS)),
            self.reading_acc.eq(requesting & (kind == ResponseKind.ACC_ROWS)),
            self.read_range.lo.eq(lo),
            self.read_range.hi.eq(hi),
        ]

        # Read requests, to one memory or the other.
        for port, reading in ((self.ub_r_addr, self.reading_ub),
                              (self.acc_r_addr, self.reading_acc)):
            m.d.comb += [
                port.valid.eq(reading),
                port.payload.addr.eq(req_addr),
                port.payload.last.eq(req_last),
            ]
        with m.If((self.ub_r_addr.valid & self.ub_r_addr.ready) |
                  (self.acc_r_addr.valid & self.acc_r_addr.ready)):
            m.d.sync += [req_addr.eq(req_addr + 1), req_left.eq(req_left - 1),
                         requesting.eq(~req_last), req_last.eq(req_left == 2)]

        # The counter payload: byte k of each u64 is live if k < live_bytes; its position in
        # the u64 follows from the bytes left, since the payload ends on a u64 boundary.
        in_counters = (kind == ResponseKind.COUNTERS) & (count <= payload_bytes)
        live_mask = sum(1 << ((-k) % counter_bytes) for k in range(live_bytes))
        live = Const(live_mask, counter_bytes).bit_select(count[:3], 1)
        m.d.comb += self.out.payload.eq(Mux(in_counters, Mux(live, snapshot[:8], 0),
                                            buffer.word_select(index, 8)))

        # The buffer is free for new bytes at the next clock edge. With `load` it takes `row`, a
        # UB row if `row_is_ub`, else an ACC row.
        sent = self.out.valid & self.out.ready
        emptying = empty | (one & self.out.ready)
        is_ub = kind == ResponseKind.UB_ROWS
        is_acc = kind == ResponseKind.ACC_ROWS
        if self._row_register:
            # A row waits in `tx_row` until the buffer takes it. Rows of two bytes or more leave
            # the buffer a cycle at least to spare, so the next one can wait until `tx_row` is
            # empty: the read ports' `ready` is then a flip-flop. Only 1-byte rows (UB rows of
            # a 1-row array) enter as the previous one leaves.
            row = Signal(8 * width, name="tx_row", reset_less=True)
            load = row_valid & emptying
            port_ready = ~row_valid if rows > 1 else ~row_valid | emptying
            m.d.comb += [
                self.ub_r_data.ready.eq(port_ready & is_ub),
                self.acc_r_data.ready.eq(port_ready & is_acc),
            ]
            with m.If(port_ready):
                m.d.sync += [
                    row_valid.eq(self.ub_r_data.valid | self.acc_r_data.valid),
                    row.eq(Mux(is_acc, self.acc_r_data.payload.data,
                               self.ub_r_data.payload.data)),
                ]
            with m.Elif(load):
                m.d.sync += row_valid.eq(0)
            row_is_ub = is_ub
        else:
            take = rows_left & emptying
            m.d.comb += [
                self.ub_r_data.ready.eq(take & is_ub),
                self.acc_r_data.ready.eq(take & is_acc),
            ]
            take_ub = self.ub_r_data.valid & self.ub_r_data.ready
            take_acc = self.acc_r_data.valid & self.acc_r_data.ready
            load = take_ub | take_acc
            row = Mux(take_ub, self.ub_r_data.payload.data, self.acc_r_data.payload.data)
            row_is_ub = take_ub

        # The header: tag, code, two zero bytes, then a little-endian u32 (length or index).
        command = self.command
        n = command.n[:len(hi)]                     # rows lie inside the memory
        tag = Signal(8)
        value = Signal(32)
        with m.Switch(command.kind):
            with m.Case(ResponseKind.ERROR):
                m.d.comb += [tag.eq(Tag.ERROR), value.eq(command.index)]
            with m.Case(ResponseKind.STATUS):
                m.d.comb += [tag.eq(Tag.STATUS), value.eq(command.index)]
            with m.Case(ResponseKind.COUNTERS):
                m.d.comb += [tag.eq(Tag.DATA), value.eq(payload_bytes)]
            with m.Case(ResponseKind.UB_ROWS):
                m.d.comb += [tag.eq(Tag.DATA), value.eq(n * rows)]
            with m.Case(ResponseKind.ACC_ROWS):
                m.d.comb += [tag.eq(Tag.DATA), value.eq(n * (4 * cols))]
            with m.Default():                       # no such kind
                m.d.comb += [tag.eq(Tag.ERROR), value.eq(command.index)]
        is_data = ((command.kind == ResponseKind.COUNTERS) |
                   (command.kind == ResponseKind.UB_ROWS) |
                   (command.kind == ResponseKind.ACC_ROWS))
        header = Cat(tag, Mux(is_data, 0, command.code), Const(0, 16), value)
        is_rows = ((command.kind == ResponseKind.UB_ROWS) |
                   (command.kind == ResponseKind.ACC_ROWS))

        # The wide registers below are written under one condition each, their value chosen by
        # multiplexers: from nested conditions Yosys kept a chain of multiplexers in front of
        # every bit instead of using the flip-flops' clock enables.
        is_counters = command.kind == ResponseKind.COUNTERS
        # The header fills the buffer's first 8 bytes; the bytes above take only rows.
        with m.If(self.start | load):
            m.d.sync += buffer[:8 * WORD].eq(Mux(self.start, header, row[:8 * WORD]))
        if width > WORD:
            with m.If(load):
                m.d.sync += buffer[8 * WORD:].eq(row[8 * WORD:])
        with m.If(self.start | load | sent):
            m.d.sync += [
                index.eq(Mux(self.start | load, 0, index + 1)),
                count.eq(Mux(self.start, Mux(is_counters, WORD + payload_bytes, WORD),
                             Mux(load, Mux(row_is_ub, rows, 4 * cols), count - 1))),
                # A header, a UB row and an ACC row each hold more than one byte, except a UB
                # row of a 1-row array.
                empty.eq(~self.start & ~load & one),
                one.eq(~self.start & Mux(load, row_is_ub & (rows == 1), count == 2)),
            ]
        # Every packet snapshots the counters (only COUNTERS sends them).
        with m.If(self.start | (sent & in_counters & live)):
            m.d.sync += snapshot.eq(Mux(
                self.start,
                Cat(Cat(self.counters[k][:self._counter_bits],
                        Const(0, 8 * live_bytes - self._counter_bits))
                    for k in range(n_counters)),
                snapshot[8:]))
        with m.If(self.start):
            m.d.sync += kind.eq(command.kind)
            with m.If(is_rows):
                m.d.sync += [req_addr.eq(command.addr), requesting.eq(n != 0),
                             req_left.eq(n), req_last.eq(n == 1),
                             lo.eq(command.addr), hi.eq(command.addr + n)]
        return m
