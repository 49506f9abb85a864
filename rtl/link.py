"""The board side of the serial link: checked frames between a UART and the accelerator.

:class:`LinkBridge` implements the protocol of :mod:`firmware.link` between a UART's byte
streams and the accelerator's: it SLIP-decodes and checks each request frame, forwards the
payload of a good one, collects the accelerator's output and answers every frame with one
response frame. :mod:`sim.golden.link` is its frame-level model.
"""

import operator
from functools import reduce

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from firmware.link import END, ESC, ESC_END, ESC_ESC, MAX_PAYLOAD, REQUEST_OVERHEAD, Status
from .params import check_int

__all__ = ["MAX_MAX_PAYLOAD", "LineByte", "crc16_byte", "LinkBridge"]

#: Largest ``max_payload`` (the counters of a frame's bytes are then 17 bits wide).
MAX_MAX_PAYLOAD = 65535

#: CRC-16/CCITT-FALSE's polynomial (without the x**16 term).
CRC_POLYNOMIAL = 0x1021

#: One byte from the UART receiver: ``data`` (8 bits) and ``error`` (1 bit), set when the UART
#: saw a framing error on this byte or lost bytes before it (overrun).
LineByte = data.StructLayout({"data": 8, "error": 1})


def crc16_byte(crc, byte):
    """The CRC-16/CCITT-FALSE register ``crc`` (16 bits) after the byte ``byte`` (8 bits).

    The bitwise recurrence unrolled eight times is linear: each bit of the result is the XOR of
    some bits of ``crc`` and ``byte``. They are found here by running the recurrence on sets of
    input bits (XOR is the symmetric difference), so the hardware is one XOR per result bit.
    """
    inputs = [crc[n] for n in range(16)] + [byte[n] for n in range(8)]
    bits = [{n} for n in range(16)]                 # bit n of the register: crc[n], ...
    for n in range(8):
        bits[8 + n] = bits[8 + n] ^ {16 + n}        # ... and byte[n] into the high byte
    for _ in range(8):
        top = bits[15]
        bits = [set()] + bits[:15]
        for n in range(16):
            if (CRC_POLYNOMIAL >> n) & 1:
                bits[n] = bits[n] ^ top
    return Cat(*(reduce(operator.xor, [inputs[n] for n in sorted(terms)]) for terms in bits))


class LinkBridge(wiring.Component):
    """Answers every request frame from the UART, executing the good ones on the accelerator.

    The protocol is :mod:`firmware.link`'s; :class:`sim.golden.link.LinkModel` gives the frames
    it sends for any received bytes. The bridge works on one frame at a time, in four phases:

    1. **Receive** (``rx.ready`` high, only in this phase). Bytes are SLIP-decoded into the
       receive buffer, a block RAM of ``max_payload + 3`` bytes, while the CRC register runs
       over them. A byte with ``error`` set marks the frame ``LINE``-damaged and is otherwise
       decoded as usual (so an ``END`` with ``error`` still ends the frame, and is answered).
       ``rx.ready`` drops in the cycle after an ``END`` is taken, and the frame is judged:
       an empty, undamaged frame is ignored (``rx.ready`` rises again); any other is
       ``LINE``, ``BAD_ESCAPE``, ``OVERLONG``, ``TRUNCATED``, ``BAD_CRC`` (the CRC of the
       whole body is not 0), by that priority; else a good request, ``REPEAT`` if its seq is
       the last executed one (none is, after reset), else new.
    2. **Execute** (a new request only). The payload (the body without the seq and the CRC) is
       sent on ``o``, one byte per cycle while ``o.ready`` is high. Meanwhile, and after it,
       the bytes on ``i`` are taken into the replay buffer (a block RAM of ``max_payload``
       bytes), until it is full or, once the whole payload has been sent, ``i.valid`` has been
       low for ``gap`` consecutive cycles. Taking the output while the payload is still going
       out lets the accelerator answer an instruction before it takes the next one. The
       request's seq becomes the last executed one; the replay buffer holds its answer.
    3. **Respond**: ``seq, status, flags, payload, crc``, SLIP-encoded on ``tx`` with an
       ``END`` before and after, while ``tx.ready`` is high, at most one body byte (one or
       two wire bytes) every third cycle: plenty for a UART. The CRC register runs over the
       body as it goes. ``OK`` and ``REPEAT`` carry the replay buffer; an error has seq 0 and
       no payload and leaves the replay buffer alone. ``flags`` is ``Flag.IDLE`` if
       ``idle & ~i.valid`` in the cycle the response starts (three cycles before its
       leading ``END`` is on ``tx``).
    4. Back to receiving, once the closing ``END`` has been taken.

    Latency, without stalls: if the closing ``END`` of a frame is taken in cycle t, the
    response's leading ``END`` is on ``tx`` from cycle t + 9 for an error or a ``REPEAT``. For
    a new request of ``n`` payload bytes, the payload is on ``o`` in cycles t + 6 to t + n + 5;
    the response starts ``gap + 5`` cycles after the later of t + n + 5 and the last output
    byte taken (t + n + gap + 10 if the accelerator answers nothing), or 6 cycles after the
    later of t + n + 5 and the output byte that fills the replay buffer.

    The bridge is built for speed on a slow FPGA, as it is small next to the accelerator:
    every output but ``i.ready`` (one gate) and ``o.payload`` (the receive buffer's output) is
    a register; block RAM addresses are registers; comparisons are registered flags; the
    phases are one-hot flags; and the frame is judged over three cycles. No register's next
    value is more than a few LUTs deep.

    While it executes and responds, ``rx.ready`` is low: a UART receiver then drops bytes and
    flags the next one (an overrun), which makes the frame they belonged to a ``LINE`` error.
    The host, waiting for the answer, sends nothing then.

    The host must not make the accelerator produce more than ``max_payload`` bytes of output
    before it has taken a request's whole payload: the rest of the output then waits on ``i``,
    and an accelerator that stops taking input while its output waits would stall the bridge
    for good.

    Parameters
    ----------
    max_payload : int
        Largest payload of a request or a response, in bytes, 1 to :data:`MAX_MAX_PAYLOAD`.
    gap : int
        Quiet cycles on ``i`` that end the collection of the accelerator's output, 1 or more;
        longer than the accelerator takes between two bytes of a response.

    Members
    -------
    rx : In(stream.Signature(LineByte))
        Bytes from the UART receiver, with their error flags.
    tx : Out(stream.Signature(8))
        Bytes to the UART transmitter: the response frames.
    o : Out(stream.Signature(8))
        Request payload bytes, to the accelerator's input.
    i : In(stream.Signature(8))
        The accelerator's output bytes.
    idle : In(1)
        The accelerator has taken every byte and has no instruction in flight.
    frame_ok : Out(1)
        One-cycle pulse, 4 cycles after the closing ``END`` of a good request (new or
        repeated) is taken: for an activity LED.
    frame_error : Out(1)
        One-cycle pulse, 4 cycles after the closing ``END`` of a bad frame (not an ignored,
        empty one) is taken.
    """
    def __init__(self, *, max_payload=MAX_PAYLOAD, gap=32):
        check_int(self, "max_payload", max_payload, 1, MAX_MAX_PAYLOAD)
        check_int(self, "gap", gap, 1)
        self._max_payload = max_payload
        self._gap = gap
        super().__init__({
            "rx":          In(stream.Signature(LineByte)),
            "tx":          Out(stream.Signature(8)),
            "o":           Out(stream.Signature(8)),
            "i":           In(stream.Signature(8)),
            "idle":        In(1),
            "frame_ok":    Out(1),
            "frame_error": Out(1),
        })

    @property
    def max_payload(self):
        return self._max_payload

    @property
    def gap(self):
        return self._gap

    def elaborate(self, platform):
        m = Module()
        max_payload = self._max_payload
        depth = max_payload + REQUEST_OVERHEAD

        # No buffer is read where it is written in the same cycle: no logic is needed to
        # give a read colliding with a write a defined value.
        attrs = {"no_rw_check": 1}
        m.submodules.rx_buffer = rx_buffer = Memory(shape=8, depth=depth, init=[],
                                                    attrs=attrs)
        m.submodules.replay_buffer = replay_buffer = Memory(shape=8, depth=max_payload,
                                                            init=[], attrs=attrs)
        rx_write = rx_buffer.write_port()
        rx_read = rx_buffer.read_port()
        replay_write = replay_buffer.write_port()
        replay_read = replay_buffer.read_port()

        # Every decision is taken from registers, a few LUTs deep: the phases are one-hot
        # flags, comparisons are registered flags kept beside their counters or computed in
        # every cycle from registers that have settled, block RAM addresses are registers,
        # and the response loads a byte every third cycle at most, so that flags lagging by
        # a cycle or two are up to date whenever they are used.

        # The phases (a frame's closing END is in the input stage between receive and judge1).
        receiving  = Signal(init=1)               # rx.ready
        judge1     = Signal()                     # the checks are being registered
        judge2     = Signal()                     # the status is being registered
        judge3     = Signal()                     # the frame is acted on
        go_execute = Signal()                     # ... by executing it
        go_respond = Signal()                     # ... by answering it with an error or REPEAT
        go_ignore  = Signal()                     # ... by ignoring it (empty, undamaged)
        executing  = Signal()
        start_resp = Signal()                     # the response starts in the next cycle
        responding = Signal()

        # Input stage: the byte taken on rx in the cycle before, decoded. The flags are
        # only set for a byte that was taken.
        s_valid    = Signal()
        s_data     = Signal(8, reset_less=True)
        s_error    = Signal()
        s_end      = Signal()                     # END
        s_esc      = Signal()                     # ESC
        s_good     = Signal()                     # ESC_END or ESC_ESC
        s_plain    = Signal()                     # neither END nor ESC

        # The frame being received.
        count      = Signal(range(depth + 1))     # body bytes stored
        first      = Signal(init=1)               # count == 0
        full_body  = Signal()                     # count == depth
        escaped    = Signal()                     # the last byte was ESC
        line       = Signal()                     # a byte had its error flag
        bad_escape = Signal()
        overlong   = Signal()
        seq        = Signal(8)                    # the first body byte; 0 after a bad frame
        # The CRC register, over the received body, then over the response's body. It is
        # updated from registers only: the byte and a strobe, a cycle late.
        crc        = Signal(16, init=0xFFFF)
        crc_in     = Signal(8, reset_less=True)
        crc_step   = Signal()
        # Checks of the frame, registered in every cycle: up to date in judge2.
        short      = Signal()                     # count < REQUEST_OVERHEAD
        crc_bad    = Signal()                     # crc != 0
        repeat     = Signal()                     # the seq is the last executed one

        # The last executed request and its answer.
        last_seq   = Signal(8)
        last_valid = Signal()                     # a request has been executed since reset
        kept       = Signal(range(max_payload + 1))   # bytes in the replay buffer
        kept_full  = Signal()                     # kept == max_payload
        # gap - 2 minus the consecutive cycles with i.valid low: negative after gap - 1.
        quiet      = Signal(range(-1, max(self._gap - 1, 1)), init=self._gap - 2)

        # Forwarding the payload on o. rd_addr also reads the replay buffer in the response.
        rd_addr    = Signal(range(depth))
        remaining  = Signal(len(count) + 1)       # payload bytes still to read, minus 1
        o_valid    = Signal()                     # rx_read.data holds a payload byte

        # The response.
        status     = Signal(8)
        idle_flag  = Signal()
        # The field loaded next (one-hot): the leading END, seq, status, flags, the payload
        # (then the CRC's high byte, once the payload is out), the CRC's low byte, the closing
        # END, and done.
        f_end0, f_seq, f_status, f_flags, f_payload, f_crc_low, f_end1, f_done = fields = [
            Signal(name=f"field_{name}") for name in
            ("end0", "seq", "status", "flags", "payload", "crc_low", "end1", "done")]
        differs    = Signal(2)                    # rd_addr != kept, in two halves
        more       = Signal()                     # a payload byte of the response is due
        pay_data   = Signal(8, reset_less=True)   # the replay buffer's output, registered
        loaded     = Signal()                     # body was loaded in the cycle before
        body       = Signal(8, reset_less=True)   # the body byte being sent ...
        body_raw   = Signal()                     # ... or an END around the body
        body_crc   = Signal()                     # ... is covered by the CRC
        body_valid = Signal()                     # ... is ready to encode
        body_esc   = Signal()                     # ... is END or ESC in the body: escape it
        second     = Signal()                     # the second byte of an escape is due
        tx_valid   = Signal()
        tx_data    = Signal(8, reset_less=True)

        m.d.comb += [
            self.rx.ready.eq(receiving),
            self.tx.valid.eq(tx_valid),
            self.tx.payload.eq(tx_data),
            self.o.valid.eq(o_valid),
            self.o.payload.eq(rx_read.data),
            self.i.ready.eq(executing & ~kept_full),
        ]

        # Receive: the input stage.
        byte = self.rx.payload.data
        take_rx = self.rx.valid & receiving
        m.d.sync += [
            s_valid.eq(take_rx),
            s_data.eq(byte),
            s_error.eq(take_rx & self.rx.payload.error),
            s_end.eq(take_rx & (byte == END)),
            s_esc.eq(take_rx & (byte == ESC)),
            s_good.eq(take_rx & ((byte == ESC_END) | (byte == ESC_ESC))),
            s_plain.eq(take_rx & (byte != END) & (byte != ESC)),
        ]
        with m.If(take_rx & (byte == END)):
            m.d.sync += receiving.eq(0)

        # Receive: decoding and storing. After ESC: ESC_END (bit 0 clear) stands for END,
        # ESC_ESC for ESC; anything else (END included) is a bad escape, and is dropped.
        decoded = Mux(escaped, Mux(s_data[0], ESC, END), s_data)
        store = Mux(escaped, s_good, s_plain)
        write = store & ~full_body
        m.d.comb += [
            rx_write.addr.eq(count),
            rx_write.data.eq(decoded),
            rx_write.en.eq(write),
        ]
        with m.If(judge3):
            m.d.sync += [count.eq(0), first.eq(1), full_body.eq(0), escaped.eq(0),
                         line.eq(0), bad_escape.eq(0), overlong.eq(0)]
        with m.Else():
            with m.If(write):
                m.d.sync += [count.eq(count + 1), first.eq(0)]
                with m.If(count == depth - 1):
                    m.d.sync += full_body.eq(1)
            with m.If(s_valid & ~s_end):
                m.d.sync += escaped.eq(~escaped & s_esc)
            with m.If(s_error):
                m.d.sync += line.eq(1)
            with m.If(s_valid & escaped & ~s_good):
                m.d.sync += bad_escape.eq(1)
            with m.If(store & full_body):
                m.d.sync += overlong.eq(1)
        with m.If(judge3 & status[7]):
            m.d.sync += seq.eq(0)
        with m.Elif(write & first):
            m.d.sync += seq.eq(decoded)

        # Judge: the checks are registered in judge1 (the CRC has taken the last byte by
        # then), the status in judge2, and it is acted on in judge3.
        bad = line | bad_escape | overlong | short | crc_bad
        ignore = first & ~line & ~bad_escape
        new = ~bad & ~repeat
        m.d.sync += [
            judge1.eq(s_end),
            judge2.eq(judge1),
            judge3.eq(judge2),
            short.eq(count < REQUEST_OVERHEAD),
            crc_bad.eq(crc != 0),
            repeat.eq(last_valid & (seq == last_seq)),
            go_execute.eq(judge2 & new),
            go_respond.eq(judge2 & ~new & ~ignore),
            go_ignore.eq(judge2 & ignore),
            self.frame_ok.eq(judge2 & ~bad),
            self.frame_error.eq(judge2 & bad & ~ignore),
        ]
        with m.If(judge2):
            with m.If(line):
                m.d.sync += status.eq(Status.LINE)
            with m.Elif(bad_escape):
                m.d.sync += status.eq(Status.BAD_ESCAPE)
            with m.Elif(overlong):
                m.d.sync += status.eq(Status.OVERLONG)
            with m.Elif(short):
                m.d.sync += status.eq(Status.TRUNCATED)
            with m.Elif(crc_bad):
                m.d.sync += status.eq(Status.BAD_CRC)
            with m.Elif(repeat):
                m.d.sync += status.eq(Status.REPEAT)
            with m.Else():
                m.d.sync += status.eq(Status.OK)
        with m.If(go_ignore):
            m.d.sync += receiving.eq(1)

        # Execute: forward the payload (rx_buffer[1 : count - 2]) on o; rx_read.data holds
        # a byte until it is taken.
        advance = ~o_valid | self.o.ready
        fetch = executing & ~remaining[-1] & advance
        forwarded = remaining[-1] & ~o_valid
        m.d.comb += [
            rx_read.addr.eq(rd_addr),
            rx_read.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += o_valid.eq(fetch)
        with m.If(judge3):
            m.d.sync += remaining.eq(count - (REQUEST_OVERHEAD + 1))
        with m.Elif(fetch):
            m.d.sync += remaining.eq(remaining - 1)

        # Execute: collect the output into the replay buffer.
        take_i = self.i.valid & self.i.ready
        done = executing & forwarded & (kept_full | (~self.i.valid & quiet[-1]))
        m.d.comb += [
            replay_write.addr.eq(kept),
            replay_write.data.eq(self.i.payload),
            replay_write.en.eq(take_i),
        ]
        with m.If(go_execute):
            m.d.sync += [executing.eq(1), last_seq.eq(seq), last_valid.eq(1)]
        with m.Elif(done):
            m.d.sync += executing.eq(0)
        with m.If(go_execute):
            m.d.sync += [kept.eq(0), kept_full.eq(0)]
        with m.Elif(take_i):
            m.d.sync += kept.eq(kept + 1)
            with m.If(kept == max_payload - 1):
                m.d.sync += kept_full.eq(1)
        with m.If(go_execute | self.i.valid):
            m.d.sync += quiet.eq(self._gap - 2)
        with m.Elif(executing & forwarded):
            m.d.sync += quiet.eq(quiet - 1)

        # Respond: load the fields into body, one whenever it is empty, at most every third
        # cycle. The byte's checks are registered in the cycle after (loaded).
        m.d.sync += start_resp.eq(go_respond | done)
        free = ~loaded & ~body_valid
        load = responding & free & ~f_done
        load_payload = free & f_payload & more
        header = (Mux(f_end0 | f_end1, END, 0) |
                  Mux(f_seq, seq, 0) |
                  Mux(f_status, status, 0) |
                  Mux(f_flags, idle_flag, 0) |
                  Mux(f_payload, crc[8:], 0) |           # once the payload is out
                  Mux(f_crc_low, crc[:8], 0))
        m.d.comb += replay_read.addr.eq(rd_addr)
        # rd_addr moves at most every third cycle in the response: more (two cycles late)
        # and pay_data are up to date at each load.
        half = len(rd_addr) // 2
        m.d.sync += [
            differs.eq(Cat(rd_addr[:half] != kept[:half], rd_addr[half:] != kept[half:])),
            more.eq(~status[7] & differs.any()),
            pay_data.eq(replay_read.data),
            loaded.eq(load),
        ]
        with m.If(judge3):
            m.d.sync += rd_addr.eq(1)
        with m.Elif(start_resp):
            m.d.sync += rd_addr.eq(0)
        with m.Elif(fetch | load_payload):
            m.d.sync += rd_addr.eq(rd_addr + 1)
        with m.If(load & f_end0):
            m.d.sync += idle_flag.eq(self.idle & ~self.i.valid)
        with m.If(start_resp):
            m.d.sync += [field.eq(0) for field in fields]
            m.d.sync += f_end0.eq(1)
        with m.Elif(load):
            m.d.sync += [
                f_end0.eq(0),
                f_seq.eq(f_end0),
                f_status.eq(f_seq),
                f_flags.eq(f_status),
                f_payload.eq(f_flags | (f_payload & more)),
                f_crc_low.eq(f_payload & ~more),
                f_end1.eq(f_crc_low),
                f_done.eq(f_end1),
                body.eq(Mux(f_payload & more, pay_data, header)),
                body_raw.eq(f_end0 | f_end1),
                body_crc.eq(f_seq | f_status | f_flags | (f_payload & more)),
            ]
        with m.If(loaded):
            m.d.sync += body_esc.eq(~body_raw & ((body == END) | (body == ESC)))

        # Respond: SLIP-encode body into the tx register.
        tx_free = ~tx_valid | self.tx.ready
        emit = tx_free & body_valid
        with m.If(tx_free):
            m.d.sync += tx_valid.eq(body_valid)
        with m.If(emit):
            m.d.sync += [
                tx_data.eq(Mux(second, Cat(body[0], Const(ESC_END >> 1, 7)),
                               Mux(body_esc, ESC, body))),
                second.eq(body_esc & ~second),
            ]
        with m.If(loaded):
            m.d.sync += body_valid.eq(1)
        with m.Elif(emit & (second | ~body_esc)):
            m.d.sync += body_valid.eq(0)
        finish = f_done & free & ~tx_valid        # the closing END has been taken
        with m.If(start_resp):
            m.d.sync += responding.eq(1)
        with m.Elif(finish):
            m.d.sync += [responding.eq(0), f_done.eq(0), receiving.eq(1)]

        # The CRC: cleared for the response in judge3, and for the next frame once the
        # response's CRC is loaded.
        m.d.sync += [
            crc_in.eq(Mux(responding, body, decoded)),
            crc_step.eq(write | (loaded & body_crc)),
        ]
        with m.If(judge3 | (load & f_end1)):
            m.d.sync += crc.eq(0xFFFF)
        with m.Elif(crc_step):
            m.d.sync += crc.eq(crc16_byte(crc, crc_in))

        return m
