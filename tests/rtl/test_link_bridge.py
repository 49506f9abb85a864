"""LinkBridge against the frame-level model: every byte it sends, for clean and damaged input."""

import random
from collections import deque

import pytest

from firmware.link import (END, ESC, ESC_END, ESC_ESC, Flag, SlipDecoder, Status, crc16,
                           decode_response, encode_request, slip_encode)
from rtl.link import MAX_MAX_PAYLOAD, LinkBridge
from sim.golden import link as golden
from sim.golden.link import LinkModel
from sim.stream import stream_get_n, stream_put
from sim.testbench import simulate

#: Bytes that SLIP treats specially, and those that StandIn's default answer turns into them.
SPECIAL = (END, ESC, ESC_END, ESC_ESC, END ^ 0x5A, ESC ^ 0x5A)


class StandIn:
    """The accelerator, played by a process: ``delay`` cycles after taking a byte ``b`` on the
    bridge's ``o``, it offers ``answer(b)`` on the bridge's ``i``. ``idle`` is driven high
    whenever nothing is waiting, unless ``force_idle`` fixes it.

    Called with a payload it returns the bytes it would answer, and its ``idle`` attribute is
    ``force_idle`` (or True): the accelerator stand-in of :class:`LinkModel`.
    """
    def __init__(self, answer=lambda b: [b ^ 0x5A], *, delay=3, stall=0.0, force_idle=None,
                 seed=0):
        self.answer = answer
        self.delay = delay
        self.stall = stall
        self.force_idle = force_idle
        self.seed = seed
        self.forwarded = bytearray()
        self.pulses = {"ok": 0, "error": 0}

    def __call__(self, payload):
        return bytes(x for b in payload for x in self.answer(b))

    @property
    def idle(self):
        return True if self.force_idle is None else self.force_idle

    def process(self, dut):
        async def accelerator(ctx):
            rng = random.Random(self.seed)
            queue = deque()                         # (cycle due, byte)
            cycle = 0
            while True:
                o_ready = not (self.stall and rng.random() < self.stall)
                head = queue[0] if queue and queue[0][0] <= cycle else None
                ctx.set(dut.o.ready, o_ready)
                ctx.set(dut.i.valid, head is not None)
                if head is not None:
                    ctx.set(dut.i.payload, head[1])
                ctx.set(dut.idle, not queue if self.force_idle is None else self.force_idle)
                _, _, o_valid, o_payload, i_ready, ok, error = await ctx.tick().sample(
                    dut.o.valid, dut.o.payload, dut.i.ready, dut.frame_ok, dut.frame_error)
                cycle += 1
                self.pulses["ok"] += ok
                self.pulses["error"] += error
                if head is not None and i_ready:
                    queue.popleft()
                if o_valid and o_ready:
                    self.forwarded.append(o_payload)
                    queue.extend((cycle + self.delay, x) for x in self.answer(o_payload))
        return accelerator


def run_bridge(wire, errors=(), *, max_payload=16, gap=32, stand_in=None, rx_idle=0.0,
               tx_stall=0.0, seed=0, count=None):
    """Feed ``wire`` (bytes with error flags at the indices ``errors``) to a LinkBridge; return
    the first ``count`` bytes it sends (the model's count by default) and the model's result.

    After the last byte, the bridge must stay silent for a while.
    """
    stand_in = stand_in or StandIn(seed=seed)
    model = LinkModel(max_payload=max_payload).receive(wire, stand_in, errors=set(errors))
    count = len(model.wire) if count is None else count
    dut = LinkBridge(max_payload=max_payload, gap=gap)
    sent = []

    async def uart_rx(ctx):
        rng = random.Random(seed + 1)
        for index, byte in enumerate(wire):
            while rx_idle and rng.random() < rx_idle:
                await ctx.tick()
            await stream_put(ctx, dut.rx, {"data": byte, "error": index in errors})

    async def uart_tx(ctx):
        sent.extend(await stream_get_n(ctx, dut.tx, count, stall=tx_stall,
                                       rng=random.Random(seed + 2)))
        for _ in range(2 * gap + 20):               # nothing more comes
            await ctx.tick()
            assert not ctx.get(dut.tx.valid)

    cycles = 4 * (len(wire) + count) + (gap + 20) * (len(model.responses) + 2)
    cycles = int(cycles / (1 - max(rx_idle, tx_stall, stand_in.stall)))
    simulate(dut, [uart_tx], [uart_rx, stand_in.process(dut)], deadline=1e-6 * cycles)
    return bytes(sent), model, stand_in


def check(wire, errors=(), **kwargs):
    """Run the bridge; check its bytes, what it forwarded and its pulses against the model."""
    sent, model, stand_in = run_bridge(wire, errors, **kwargs)
    assert sent == model.wire
    assert bytes(stand_in.forwarded) == b"".join(model.forwarded)
    statuses = [response_of(frame).status for frame in model.responses]
    assert stand_in.pulses["error"] == sum(status.is_error for status in statuses)
    assert stand_in.pulses["ok"] == sum(not status.is_error for status in statuses)
    return model, statuses


def response_of(frame, max_payload=MAX_MAX_PAYLOAD):
    frames = SlipDecoder().feed(frame)
    assert len(frames) == 1
    return decode_response(frames[0], max_payload=max_payload)


def random_payload(rng, max_payload):
    length = rng.choice([0, max_payload, rng.randint(0, max_payload),
                         rng.randint(0, min(3, max_payload))])
    return bytes(rng.choice(SPECIAL) if rng.random() < 0.2 else rng.randrange(256)
                 for _ in range(length))


def random_session(rng, max_payload, frames):
    """Wire bytes and error indices: a session start, then ``frames`` random events, good
    requests, retries and every kind of damage."""
    wire, errors = bytearray(), set()
    seq = rng.randrange(256)
    last = None

    def request(payload=b""):
        nonlocal seq, last
        seq = (seq + 1) % 256
        last = encode_request(seq, payload, max_payload=max_payload)
        return last

    def body(payload=b""):
        data = bytes([(seq + 1) % 256]) + payload
        return data + crc16(data).to_bytes(2, "big")

    wire += request() + request()                   # the session start
    kinds = ["new"] * 6 + ["repeat"] * 2 + [
        "flip", "wire_flip", "truncated", "overlong", "bad_escape", "end_escape", "line",
        "line_end", "line_escape", "overlong_escape", "garbage", "empty", "cut"]
    for _ in range(frames):
        kind = rng.choice(kinds)
        payload = random_payload(rng, max_payload)
        if kind == "new":
            wire += request(payload)
        elif kind == "repeat":
            wire += last
        elif kind == "flip":                        # a bit flipped in the body: BAD_CRC
            data = bytearray(body(payload))
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            wire += slip_encode(data)
        elif kind == "wire_flip":                   # a bit flipped on the line: anything
            data = bytearray(encode_request((seq + 1) % 256, payload, max_payload=max_payload))
            data[rng.randrange(1, len(data) - 1)] ^= 1 << rng.randrange(8)
            wire += data
        elif kind == "truncated":                   # b"\xff\xff": its CRC residue is 0
            wire += slip_encode(rng.choice([body()[:1], body()[:2], b"\xff\xff"]))
        elif kind == "overlong":                    # its first max_payload + 3 bytes good, or not
            extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            if rng.random() < 0.5:
                wire += slip_encode(body(bytes(max_payload)) + extra)
            else:
                wire += slip_encode(body(bytes(max_payload) + extra))
        elif kind == "overlong_escape":             # BAD_ESCAPE wins over OVERLONG
            wire += slip_encode(body(bytes(max_payload)) + b"\x01")[:-1] + bytes([ESC, END])
        elif kind == "bad_escape":                  # ESC and a byte that may not follow it
            data = encode_request((seq + 1) % 256, payload, max_payload=max_payload)
            at = rng.randrange(1, len(data) - 1)
            wire += data[:at] + bytes([ESC, rng.choice([0x00, 0x41, ESC, 0xFF])]) + data[at:]
        elif kind == "end_escape":                  # ESC right before the closing END
            wire += encode_request((seq + 1) % 256, payload, max_payload=max_payload)[:-1]
            wire += bytes([ESC, END])
        elif kind in ("line", "line_end"):          # an error flag inside, or on the END
            data = encode_request((seq + 1) % 256, payload, max_payload=max_payload)
            at = rng.randrange(1, len(data)) if kind == "line" else len(data) - 1
            errors.add(len(wire) + at)
            wire += data
        elif kind == "line_escape":                 # LINE wins over BAD_ESCAPE
            data = encode_request((seq + 1) % 256, payload, max_payload=max_payload)
            at = rng.randrange(1, len(data) - 1)
            errors.add(len(wire) + rng.randrange(len(data) + 2))
            wire += data[:at] + bytes([ESC, 0x00]) + data[at:]
        elif kind == "garbage":                     # noise before the next frame's END
            wire += bytes(rng.randrange(256) for _ in range(rng.randint(1, 6)))
        elif kind == "empty":
            wire += bytes([END] * rng.randint(1, 3))
        elif kind == "cut":                         # the end of a frame lost
            data = encode_request((seq + 1) % 256, payload, max_payload=max_payload)
            wire += data[:rng.randrange(1, len(data) - 1)] + bytes([END])
    wire += request(random_payload(rng, max_payload))   # a clean frame ends the session
    return bytes(wire), errors


@pytest.mark.parametrize("max_payload, frames, seed", [(16, 120, 1), (64, 50, 2), (256, 10, 3)])
def test_random_session(max_payload, frames, seed):
    rng = random.Random(seed)
    wire, errors = random_session(rng, max_payload, frames)
    stand_in = StandIn(delay=rng.randint(0, 6), stall=0.3, seed=seed)
    _, statuses = check(wire, errors, max_payload=max_payload, stand_in=stand_in, rx_idle=0.2,
                        tx_stall=0.3, seed=seed)
    if max_payload == 16:                           # the long run sees every status
        assert set(statuses) == set(Status)


@pytest.mark.parametrize("seed, force_idle", [(4, None), (5, True)])
def test_more_output_than_fits(seed, force_idle):
    """Two output bytes per input byte: what does not fit waits for the next request, and
    clears IDLE meanwhile (even with the ``idle`` input high)."""
    rng = random.Random(seed)
    wire, errors = random_session(rng, 16, 25)
    wire += encode_request(199, bytes(range(16)), max_payload=16)     # 32 bytes out
    wire += encode_request(200) + encode_request(201) + encode_request(201)   # polls
    stand_in = StandIn(lambda b: [b ^ 0x5A, b], delay=2, stall=0.2, force_idle=force_idle,
                       seed=seed)
    model, statuses = check(wire, errors, max_payload=16, stand_in=stand_in, tx_stall=0.2,
                            seed=seed)
    flags = [response_of(frame).flags for frame in model.responses]
    assert Flag(0) in flags and Flag.IDLE in flags


def test_clean_requests_no_stalls():
    """Back-to-back requests with every payload length and byte value, no stalls."""
    rng = random.Random(6)
    wire = b"".join(encode_request(seq % 256, bytes(rng.randrange(256) for _ in range(seq % 17)),
                                   max_payload=16) for seq in range(40))
    model, statuses = check(wire, max_payload=16, gap=3, stand_in=StandIn(delay=1))
    assert statuses == [Status.OK] * 40


def test_escapes_in_every_field():
    """END and ESC as the seq, in the payload and as each CRC byte of the response."""
    frames, seen = [], set()
    for byte in range(256):
        seq = (END, ESC)[len(frames) % 2]           # alternating: every request is new
        payload = bytes([byte, END ^ 0x5A, ESC ^ 0x5A])     # answered with END and ESC
        answer = bytes([seq, Status.OK, Flag.IDLE]) + bytes(b ^ 0x5A for b in payload)
        crc = crc16(answer).to_bytes(2, "big")
        new = {n for n in (0, 1) if crc[n] in (END, ESC)} - seen
        if new:
            seen |= new
            frames.append(encode_request(seq, payload, max_payload=4))
    assert seen == {0, 1}
    model, statuses = check(b"".join(frames), max_payload=4, gap=2, stand_in=StandIn(delay=0),
                            tx_stall=0.5)
    assert statuses == [Status.OK] * len(frames)
    assert all({END, ESC} <= set(response_of(frame).payload) for frame in model.responses)


@pytest.mark.parametrize("force_idle", [False, True])
def test_idle_pin(force_idle):
    """IDLE follows the ``idle`` input (no output waiting)."""
    wire = (encode_request(1, b"\x01\x02") + encode_request(1) + slip_encode(b"\x01")
            + encode_request(2))
    model, statuses = check(wire, stand_in=StandIn(force_idle=force_idle))
    assert statuses == [Status.OK, Status.REPEAT, Status.TRUNCATED, Status.OK]
    for frame in model.responses:
        assert response_of(frame).idle == force_idle


def test_repeat_and_errors_keep_the_answer():
    wire = (encode_request(7, b"\xC0\xDB\x00") + encode_request(7, b"ignored")
            + slip_encode(b"\x07junk") + bytes([ESC, 0x00, END]) + encode_request(7, b"x"))
    sent, model, stand_in = run_bridge(wire)
    assert sent == model.wire
    responses = [response_of(frame) for frame in model.responses]
    answer = bytes([0xC0 ^ 0x5A, 0xDB ^ 0x5A, 0x5A])
    assert [r.status for r in responses] == [Status.OK, Status.REPEAT, Status.BAD_CRC,
                                             Status.BAD_ESCAPE, Status.REPEAT]
    assert [r.payload for r in responses] == [answer, answer, b"", b"", answer]
    assert [r.seq for r in responses] == [7, 7, 0, 0, 7]
    assert bytes(stand_in.forwarded) == b"\xC0\xDB\x00"  # forwarded once


@pytest.mark.parametrize("max_payload", [1, 2])
def test_smallest_buffers(max_payload):
    rng = random.Random(max_payload)
    wire, errors = random_session(rng, max_payload, 30)
    check(wire, errors, max_payload=max_payload, gap=1, stand_in=StandIn(delay=0, stall=0.3))


def run_gap(gap, quiet):
    """A request of one byte; the stand-in answers A at once, then B after ``quiet`` cycles of
    ``i.valid`` low. Returns the payload of the answer and of a following poll."""
    dut = LinkBridge(max_payload=16, gap=gap)
    wire = encode_request(1, b"\x33") + encode_request(2)
    sent = []

    async def uart_rx(ctx):
        for byte in wire:
            await stream_put(ctx, dut.rx, {"data": byte, "error": 0})

    async def accelerator(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.idle, 1)
        await ctx.tick().until(dut.o.valid)         # the byte is taken in this cycle
        await stream_put(ctx, dut.i, 0xAA)          # offered the next cycle: taken at once
        for _ in range(quiet):
            await ctx.tick()
        await stream_put(ctx, dut.i, 0xBB)

    async def uart_tx(ctx):
        count = len(wire) + 2 * 5 + 2 * 2 + 20      # more than enough; stop at the 2nd frame
        decoder, frames = SlipDecoder(), []
        while len(frames) < 2:
            byte, = await stream_get_n(ctx, dut.tx, 1)
            frames += decoder.feed(bytes([byte]))
            count -= 1
            assert count
        sent.extend(decode_response(frame).payload for frame in frames)

    simulate(dut, [uart_tx], [uart_rx, accelerator], deadline=1e-6 * (20 * gap + 500))
    return sent


@pytest.mark.parametrize("gap", [1, 5])
def test_gap(gap):
    """Output is collected until ``i.valid`` has been low for ``gap`` cycles in a row."""
    assert run_gap(gap, gap - 1) == [b"\xAA\xBB", b""]
    assert run_gap(gap, gap) == [b"\xAA", b"\xBB"]


def test_latency():
    """Counted from the cycle the closing END is taken: the LED pulse comes 4 cycles after it,
    the payload of a new request of n bytes in cycles 6 to n + 5, and the first response byte
    9 cycles after it for an error or a REPEAT, n + gap + 10 for the new request (no output)."""
    gap, n = 4, 5
    dut = LinkBridge(max_payload=16, gap=gap)
    frames = [encode_request(1, bytes(range(n))), encode_request(1), slip_encode(b"\x01")]
    delays, pulses, forwarded = [], [], []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.tx.ready, 1)
        for frame in frames:
            for byte in frame:
                await stream_put(ctx, dut.rx, {"data": byte, "error": 0})
            cycles = 1                              # the END was taken in the cycle before
            forwarded.append([])
            while not ctx.get(dut.tx.valid):
                if ctx.get(dut.frame_ok) or ctx.get(dut.frame_error):
                    pulses.append((cycles, ctx.get(dut.frame_ok)))
                if ctx.get(dut.o.valid):
                    forwarded[-1].append(cycles)
                await ctx.tick()
                cycles += 1
            delays.append(cycles)
            while ctx.get(dut.tx.valid):            # the whole response
                await ctx.tick()
                if ctx.get(dut.rx.ready):
                    break

    simulate(dut, [bench], deadline=1e-3)
    assert delays == [n + gap + 10, 9, 9]
    assert pulses == [(4, 1), (4, 1), (4, 0)]
    assert forwarded == [list(range(6, n + 6)), [], []]


@pytest.mark.parametrize("kwargs, error", [
    ({"max_payload": 0}, ValueError),
    ({"max_payload": MAX_MAX_PAYLOAD + 1}, ValueError),
    ({"max_payload": 16.0}, TypeError),
    ({"max_payload": True}, TypeError),
    ({"gap": 0}, ValueError),
    ({"gap": "32"}, TypeError),
])
def test_bad_parameters(kwargs, error):
    with pytest.raises(error, match="max_payload|gap"):
        LinkBridge(**kwargs)


def test_largest_parameters():
    dut = LinkBridge(max_payload=MAX_MAX_PAYLOAD, gap=1)
    dut._MustUse__silence = True                    # never elaborated
    assert (dut.max_payload, dut.gap) == (MAX_MAX_PAYLOAD, 1)
    assert MAX_MAX_PAYLOAD == golden.MAX_MAX_PAYLOAD
