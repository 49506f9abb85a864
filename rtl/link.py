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
       An ``END`` that ends an empty, undamaged frame is ignored. At any other ``END`` the
       frame is judged, in the cycle the ``END`` is taken: ``LINE``, ``BAD_ESCAPE``,
       ``OVERLONG``, ``TRUNCATED``, ``BAD_CRC`` (the CRC of the whole body is not 0), by that
       priority; else a good request, ``REPEAT`` if its seq is the last executed one (none is,
       after reset), else new.
    2. **Execute** (a new request only). The payload (the body without the seq and the CRC) is
       sent on ``o``, one byte per cycle while ``o.ready`` is high. Meanwhile, and after it,
       the bytes on ``i`` are taken into the replay buffer (a block RAM of ``max_payload``
       bytes), until it is full or, once the whole payload has been sent, ``i.valid`` has been
       low for ``gap`` consecutive cycles. Taking the output while the payload is still going
       out lets the accelerator answer an instruction before it takes the next one. The
       request's seq becomes the last executed one; the replay buffer holds its answer.
    3. **Respond**: ``seq, status, flags, payload, crc``, SLIP-encoded on ``tx`` with an
       ``END`` before and after, one wire byte per cycle while ``tx.ready`` is high; the CRC
       register runs over the body as it goes. ``OK`` and ``REPEAT`` carry the replay buffer;
       an error has seq 0 and no payload and leaves the replay buffer alone. ``flags`` is
       ``Flag.IDLE`` if ``idle & ~i.valid`` in the cycle the leading ``END`` is taken.
    4. Back to receiving.

    Latency, without stalls: if the closing ``END`` of a request is taken in cycle t, the
    response's leading ``END`` is on ``tx`` from cycle t + 1 for an error or a ``REPEAT``. For
    a new request of ``n`` payload bytes, the payload is on ``o`` in cycles t + 1 to t + n and
    the response starts ``gap + 1`` cycles after the later of t + n and the last output byte
    taken (t + n + gap + 1 if the accelerator answers nothing), or right after the payload
    once the replay buffer is full.

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
        One-cycle pulse, in the cycle the closing ``END`` of a good request (new or repeated)
        is taken: for an activity LED.
    frame_error : Out(1)
        One-cycle pulse, in the cycle the closing ``END`` of a bad frame is taken.
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

        m.submodules.rx_buffer = rx_buffer = Memory(shape=8, depth=depth, init=[])
        m.submodules.replay_buffer = replay_buffer = Memory(shape=8, depth=max_payload,
                                                            init=[])
        rx_write = rx_buffer.write_port()
        rx_read = rx_buffer.read_port()
        replay_write = replay_buffer.write_port()
        replay_read = replay_buffer.read_port()

        # The registers are updated here, outside the FSM, from one-bit strobes that the FSM
        # drives: a clear becomes the flip-flops' synchronous reset, not a multiplexer.

        # The frame being received.
        count      = Signal(range(depth + 1))     # body bytes stored
        escaped    = Signal()                     # the last byte was ESC
        line       = Signal()                     # a byte had its error flag
        bad_escape = Signal()
        overlong   = Signal()
        seq        = Signal(8)                    # the first body byte; 0 after a bad frame
        # The CRC register: over the received body, then over the response's body.
        crc        = Signal(16, init=0xFFFF)

        # The last executed request and its answer.
        last_seq   = Signal(8)
        last_valid = Signal()                     # a request has been executed since reset
        kept       = Signal(range(max_payload + 1))   # bytes in the replay buffer
        quiet      = Signal(range(self._gap))     # consecutive cycles with i.valid low

        # The response.
        status     = Signal(8)
        idle_flag  = Signal()
        index      = Signal(range(depth))         # payload byte forwarded / body byte sent
        index_next = Signal.like(index)           # its value in the next cycle
        body       = Signal(8)                    # the body byte being sent
        sending    = Signal()                     # body is valid
        second     = Signal()                     # the second byte of an escape is due

        # Strobes.
        receive    = Signal()                     # a byte other than END is taken on rx
        store      = Signal()                     # it is a body byte
        judge      = Signal()                     # an END is taken on rx
        frame_end  = Signal()                     # the last byte of a response is taken
        crc_update = Signal()                     # a body byte is stored or sent
        index_step = Signal()                     # index: + 1 ...
        index_zero = Signal()                     # ... or 0 ...
        index_one  = Signal()                     # ... or 1 in the next cycle
        kept_step  = Signal()                     # an output byte is taken on i
        kept_clear = Signal()                     # a new request: its answer starts
        quiet_step = Signal()                     # the payload is out: count quiet cycles

        byte, error = self.rx.payload.data, self.rx.payload.error
        is_end = byte == END
        # After ESC: ESC_END (bit 0 clear) stands for END, ESC_ESC for ESC; anything else is
        # a bad escape and is dropped.
        decoded = Mux(escaped, Mux(byte[0], ESC, END), byte)
        good_escape = (byte == ESC_END) | (byte == ESC_ESC)
        full_body = count == depth

        m.d.comb += [
            receive.eq(self.rx.valid & self.rx.ready & ~is_end),
            judge.eq(self.rx.valid & self.rx.ready & is_end),
            store.eq(receive & Mux(escaped, good_escape, byte != ESC)),
            rx_write.addr.eq(count),
            rx_write.data.eq(decoded),
            rx_write.en.eq(store & ~full_body),
            rx_read.addr.eq(index_next),
            self.o.payload.eq(rx_read.data),
            replay_write.addr.eq(kept),
            replay_write.data.eq(self.i.payload),
            replay_write.en.eq(kept_step),
            replay_read.addr.eq(index_next),
            index_next.eq(Mux(index_zero | index_one, index_one,
                              Mux(index_step, index + 1, index))),
        ]
        m.d.sync += index.eq(index_next)

        with m.If(frame_end):
            m.d.sync += count.eq(0)
        with m.Elif(rx_write.en):
            m.d.sync += count.eq(count + 1)
        with m.If(judge):
            m.d.sync += [line.eq(0), escaped.eq(0), bad_escape.eq(0), overlong.eq(0)]
        with m.Elif(receive):
            m.d.sync += [line.eq(line | error), escaped.eq(~escaped & (byte == ESC))]
            with m.If(escaped & ~good_escape):
                m.d.sync += bad_escape.eq(1)
            with m.If(store & full_body):
                m.d.sync += overlong.eq(1)
        with m.If(rx_write.en & (count == 0)):
            m.d.sync += seq.eq(decoded)

        with m.If(judge | frame_end):
            m.d.sync += crc.eq(0xFFFF)
        with m.Elif(crc_update):
            m.d.sync += crc.eq(crc16_byte(crc, Mux(self.rx.ready, decoded, body)))

        with m.If(kept_clear):
            m.d.sync += kept.eq(0)
        with m.Elif(kept_step):
            m.d.sync += kept.eq(kept + 1)
        with m.If(kept_clear | self.i.valid):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet_step):
            m.d.sync += quiet.eq(quiet + 1)

        # SLIP encoding of the body byte being sent.
        special = (body == END) | (body == ESC)
        escaped_out = Mux(second, Mux(body[0], ESC_ESC, ESC_END), Mux(special, ESC, body))
        body_done = self.tx.valid & self.tx.ready & (second | ~special)
        m.d.comb += self.tx.payload.eq(Mux(sending, escaped_out, END))
        with m.If(sending & self.tx.valid & self.tx.ready):
            m.d.sync += second.eq(special & ~second)

        with m.FSM():
            with m.State("RECEIVE"):
                m.d.comb += [self.rx.ready.eq(1), crc_update.eq(rx_write.en)]
                line_any = line | error
                escape_any = escaped | bad_escape
                with m.If(judge & ((count != 0) | line_any | escape_any)):
                    bad = line_any | escape_any | overlong | (count < REQUEST_OVERHEAD) | \
                        (crc != 0)
                    m.d.comb += [self.frame_error.eq(bad), self.frame_ok.eq(~bad)]
                    m.next = "START"
                    with m.If(line_any):
                        m.d.sync += status.eq(Status.LINE)
                    with m.Elif(escape_any):
                        m.d.sync += status.eq(Status.BAD_ESCAPE)
                    with m.Elif(overlong):
                        m.d.sync += status.eq(Status.OVERLONG)
                    with m.Elif(count < REQUEST_OVERHEAD):
                        m.d.sync += status.eq(Status.TRUNCATED)
                    with m.Elif(crc != 0):
                        m.d.sync += status.eq(Status.BAD_CRC)
                    with m.Elif(last_valid & (seq == last_seq)):
                        m.d.sync += status.eq(Status.REPEAT)
                    with m.Else():
                        m.d.sync += status.eq(Status.OK)
                        m.d.comb += [kept_clear.eq(1), index_one.eq(1)]   # payload at 1
                        m.next = "EXECUTE"
                    with m.If(bad):
                        m.d.sync += seq.eq(0)

            with m.State("EXECUTE"):
                forwarded = index + 2 == count      # the payload is at 1 .. count - 3
                full = kept == max_payload
                m.d.comb += [
                    self.o.valid.eq(~forwarded),
                    index_step.eq(self.o.ready & ~forwarded),
                    self.i.ready.eq(~full),
                    kept_step.eq(self.i.valid & ~full),
                    quiet_step.eq(forwarded),
                ]
                with m.If(forwarded & (full | (~self.i.valid & (quiet == self._gap - 1)))):
                    m.d.sync += [last_seq.eq(seq), last_valid.eq(1)]
                    m.next = "START"

            with m.State("START"):
                m.d.comb += [self.tx.valid.eq(1), index_zero.eq(1)]
                m.d.sync += idle_flag.eq(self.idle & ~self.i.valid)
                with m.If(self.tx.ready):
                    m.next = "HEADER"

            with m.State("HEADER"):
                # index 0: seq, 1: status, 2: flags.
                m.d.comb += [
                    self.tx.valid.eq(1),
                    sending.eq(1),
                    body.eq(Mux(index[1], Cat(idle_flag, Const(0, 7)),
                                Mux(index[0], status, seq))),
                    crc_update.eq(body_done),
                    index_step.eq(body_done),
                ]
                with m.If(body_done & index[1]):
                    m.d.comb += index_zero.eq(1)
                    with m.If(~status[7] & (kept != 0)):
                        m.next = "PAYLOAD"
                    with m.Else():
                        m.next = "CRC"

            with m.State("PAYLOAD"):
                m.d.comb += [
                    self.tx.valid.eq(1),
                    sending.eq(1),
                    body.eq(replay_read.data),
                    crc_update.eq(body_done),
                    index_step.eq(body_done),
                ]
                with m.If(body_done & (index + 1 == kept)):
                    m.d.comb += index_zero.eq(1)
                    m.next = "CRC"

            with m.State("CRC"):
                # index 0: the high byte, 1: the low byte.
                m.d.comb += [
                    self.tx.valid.eq(1),
                    sending.eq(1),
                    body.eq(Mux(index[0], crc[:8], crc[8:])),
                    index_step.eq(body_done),
                ]
                with m.If(body_done & index[0]):
                    m.next = "STOP"

            with m.State("STOP"):
                m.d.comb += [self.tx.valid.eq(1), frame_end.eq(self.tx.ready)]
                with m.If(self.tx.ready):
                    m.next = "RECEIVE"

        return m
