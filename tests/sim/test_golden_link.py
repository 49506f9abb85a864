"""The board's frame-level model against the host side of firmware.link."""

import random

import pytest

from firmware.link import (END, ESC, ESC_END, ESC_ESC, Flag, SlipDecoder, Status, crc16,
                           decode_response, encode_request, slip_encode)
from sim.golden.link import MAX_MAX_PAYLOAD, LinkModel


def echo(payload):
    """The accelerator stand-in: one byte out per byte in."""
    return bytes(b ^ 0x5A for b in payload)


def responses(result, max_payload=MAX_MAX_PAYLOAD):
    """Decode every response frame the way the host does; each must be one good frame."""
    decoded = []
    for frame in result.responses:
        assert frame[0] == END and frame[-1] == END
        frames = SlipDecoder().feed(frame)
        assert len(frames) == 1
        decoded.append(decode_response(frames[0], max_payload=max_payload))
    return decoded


def body(seq, payload=b""):
    data = bytes([seq]) + payload
    return data + crc16(data).to_bytes(2, "big")


def test_good_requests():
    model = LinkModel(max_payload=16)
    payloads = [b"", b"\x01", bytes([END, ESC, ESC_END, ESC_ESC]), bytes(range(16))]
    wire = b"".join(encode_request(seq, p, max_payload=16) for seq, p in enumerate(payloads))
    result = model.receive(wire, echo)
    assert result.forwarded == payloads
    got = responses(result, 16)
    assert [r.seq for r in got] == [0, 1, 2, 3]
    assert [r.status for r in got] == [Status.OK] * 4
    assert [r.payload for r in got] == [echo(p) for p in payloads]
    assert all(r.flags == Flag.IDLE for r in got)
    assert result.wire == b"".join(result.responses)
    assert (model.last_seq, model.kept) == (3, echo(bytes(range(16))))


@pytest.mark.parametrize("wire, errors, status", [
    (slip_encode(body(5, b"abc")[:-1] + b"\x00"), (), Status.BAD_CRC),
    (slip_encode(b"\x05"), (), Status.TRUNCATED),
    (slip_encode(b"\x05\x06"), (), Status.TRUNCATED),
    (slip_encode(b"\xff\xff"), (), Status.TRUNCATED),              # the CRC residue is 0
    (slip_encode(body(5, bytes(17))), (), Status.OVERLONG),
    (bytes([END, 5, ESC, 0x41]) + body(5)[1:] + bytes([END]), (), Status.BAD_ESCAPE),
    (bytes([END]) + body(5) + bytes([ESC, END]), (), Status.BAD_ESCAPE),
    (encode_request(5, b"abc"), {3}, Status.LINE),
    (encode_request(5, b"abc"), {6}, Status.LINE),          # on the closing END
    (bytes([END]), {0}, Status.LINE),                       # bytes lost before an END
    # Priorities: LINE > BAD_ESCAPE > OVERLONG > TRUNCATED > BAD_CRC.
    (bytes([END, 5, ESC, 0x41, END]), {1}, Status.LINE),
    (slip_encode(bytes(20))[:-1] + bytes([ESC, 0, END]), (), Status.BAD_ESCAPE),
    (bytes([END, ESC, 0x41, END]), (), Status.BAD_ESCAPE),
    (slip_encode(bytes(25)), (), Status.OVERLONG),
    (slip_encode(b"\x99"), (), Status.TRUNCATED),
])
def test_errors(wire, errors, status):
    model = LinkModel(max_payload=16)
    model.receive(encode_request(1, b"\x11\x22"), echo)     # an answer to keep
    result = model.receive(wire, echo, errors=errors)
    got, = responses(result, 16)
    assert (got.seq, got.status, got.payload) == (0, status, b"")
    assert result.forwarded == []
    assert (model.last_seq, model.kept) == (1, echo(b"\x11\x22"))
    # The kept answer survives the error.
    again, = responses(model.receive(encode_request(1, b"\x11\x22"), echo), 16)
    assert (again.seq, again.status, again.payload) == (1, Status.REPEAT, echo(b"\x11\x22"))


def test_largest_and_overlong_body():
    model = LinkModel(max_payload=4)
    assert model.receive(encode_request(1, bytes(4), max_payload=4), echo).forwarded == [bytes(4)]
    got, = responses(model.receive(slip_encode(body(2, bytes(5))), echo), 4)
    assert got.status == Status.OVERLONG


def test_repeat_is_not_executed():
    model = LinkModel()
    calls = []

    def accelerator(payload):
        calls.append(payload)
        return echo(payload)

    result = model.receive(encode_request(9, b"run") + encode_request(9, b"run")
                           + encode_request(9, b"different"), accelerator)
    got = responses(result)
    assert calls == [b"run"] and result.forwarded == [b"run"]
    assert [(r.seq, r.status, r.payload) for r in got] == [
        (9, Status.OK, echo(b"run")), (9, Status.REPEAT, echo(b"run")),
        (9, Status.REPEAT, echo(b"run"))]
    # Any other seq is new, even a smaller one.
    got, = responses(model.receive(encode_request(8, b"x"), accelerator))
    assert (got.seq, got.status, got.payload) == (8, Status.OK, echo(b"x"))


def test_first_request_after_reset_is_new():
    for seq in (0, 255):
        model = LinkModel()
        got, = responses(model.receive(encode_request(seq), echo))
        assert (got.seq, got.status) == (seq, Status.OK)


@pytest.mark.parametrize("last", [None, 0, 41, 42, 43, 255])
def test_session_start(last):
    """Two empty requests with consecutive seqs: the second is new, whatever ran before."""
    model = LinkModel()
    if last is not None:
        model.receive(encode_request(last, b"old"), echo)
    result = model.receive(encode_request(42) + encode_request(43), echo)
    first, second = responses(result)
    assert first.status in (Status.OK, Status.REPEAT)
    assert (second.seq, second.status, second.payload) == (43, Status.OK, b"")
    assert model.last_seq == 43


def test_empty_frames_and_noise():
    model = LinkModel()
    result = model.receive(bytes([END] * 5) + b"noise" + encode_request(1) + bytes([END, END]),
                           echo)
    got = responses(result)
    assert [(r.seq, r.status) for r in got] == [(0, Status.BAD_CRC), (1, Status.OK)]


def test_output_beyond_max_payload_waits():
    class Doubler:
        idle = True

        def __call__(self, payload):
            return bytes(x for b in payload for x in (b, b ^ 0xFF))

    model = LinkModel(max_payload=4)
    wire = (encode_request(1, b"abc", max_payload=4) + encode_request(2, max_payload=4)
            + encode_request(2, max_payload=4) + encode_request(3, max_payload=4))
    got = responses(model.receive(wire, Doubler()), 4)
    out = bytes(x for b in b"abc" for x in (b, b ^ 0xFF))
    assert [(r.status, r.payload, r.flags) for r in got] == [
        (Status.OK, out[:4], Flag(0)), (Status.OK, out[4:], Flag.IDLE),
        (Status.REPEAT, out[4:], Flag.IDLE), (Status.OK, b"", Flag.IDLE)]


def test_idle_attribute():
    class Busy:
        idle = False

        def __call__(self, payload):
            return b""

    got = responses(LinkModel().receive(encode_request(1) + slip_encode(b"x"), Busy()))
    assert [r.flags for r in got] == [Flag(0), Flag(0)]
    got = responses(LinkModel().receive(encode_request(1)))        # no accelerator
    assert (got[0].status, got[0].flags, got[0].payload) == (Status.OK, Flag.IDLE, b"")


def test_split_feeding():
    """State carries over between calls: any split of the bytes gives the same answers."""
    rng = random.Random(0)
    wire = bytearray()
    errors = set()
    for seq in range(30):
        kind = rng.random()
        frame = encode_request(seq % 3, bytes(rng.choice([END, ESC, 7]) for _ in range(5)))
        if kind < 0.2:
            errors.add(len(wire) + rng.randrange(len(frame)))
        elif kind < 0.3:
            frame = frame[:-3] + frame[-1:]
        wire += frame
    whole = LinkModel().receive(wire, echo, errors=errors)
    for _ in range(5):
        model = LinkModel()
        cuts = sorted(rng.sample(range(1, len(wire)), 6))
        wire_parts, parts = [], []
        for lo, hi in zip([0] + cuts, cuts + [len(wire)]):
            part = model.receive(wire[lo:hi], echo,
                                 errors={i - lo for i in errors if lo <= i < hi})
            wire_parts.append(part.wire)
            parts += part.forwarded
        assert b"".join(wire_parts) == whole.wire and parts == whole.forwarded


def test_bad_arguments():
    for value, error in [(0, ValueError), (MAX_MAX_PAYLOAD + 1, ValueError),
                         (16.0, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="max_payload"):
            LinkModel(max_payload=value)
    with pytest.raises(ValueError, match="errors"):
        LinkModel().receive(b"\xC0", errors={1})
