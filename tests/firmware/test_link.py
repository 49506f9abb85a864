"""The host side of the serial link: framing, retries and the serial backend, on the model line.

The board side (rtl/link.py) is checked against the same protocol model in
tests/rtl/test_link_bridge.py, and the whole chain (host, UART, bridge, accelerator RTL) in
tests/rtl/test_serial_accelerator.py.
"""

import numpy as np
import pytest

from firmware.isa import SYNC_WORD, Geometry, Instruction, Opcode
from firmware.link import (END, ESC, Flag, Link, LinkError, SlipDecoder, Status, crc16,
                           decode_request, decode_response, encode_request, encode_response,
                           slip_encode)
from firmware.backends.serial import SerialBackend, split_program
from firmware.runtime import Device
from sim.serial_line import LineFaults, ModelLine

G = Geometry(4, 4, ub_depth=64, wm_depth=32, acc_depth=64)


def test_crc_is_ccitt_false():
    assert crc16(b"123456789") == 0x29B1
    body = b"\x07hello"
    assert crc16(body + crc16(body).to_bytes(2, "big")) == 0


def test_slip_round_trip_with_special_bytes():
    body = bytes([END, ESC, 1, END, END, ESC, 0xDC, 0xDD])
    wire = slip_encode(body)
    assert wire[0] == wire[-1] == END and END not in wire[1:-1]
    frames = SlipDecoder().feed(b"\xc0\xc0" + wire + b"\xc0")
    assert [frame.body for frame in frames] == [body]


def test_request_and_response_round_trip():
    frame, = SlipDecoder().feed(encode_request(200, b"\xc0payload\xdb"))
    assert decode_request(frame).seq == 200
    assert decode_request(frame).payload == b"\xc0payload\xdb"
    frame, = SlipDecoder().feed(encode_response(5, Status.REPEAT, Flag.IDLE, b"xyz"))
    response = decode_response(frame)
    assert (response.seq, response.status, response.idle, response.payload) == \
        (5, Status.REPEAT, True, b"xyz")


@pytest.mark.parametrize("payload, max_payload, message", [
    (b"x" * 9, 8, "exceeds the frame's 8-byte limit"),
    ("text", 8, "payload must be bytes"),
])
def test_bad_payloads_are_refused(payload, max_payload, message):
    with pytest.raises((ValueError, TypeError), match=message):
        encode_request(0, payload, max_payload=max_payload)


def test_bad_seq_is_refused():
    with pytest.raises(ValueError, match="seq must be an integer from 0 to 255"):
        encode_request(256)


def _program(*instructions):
    return b"".join(instruction.encode() for instruction in instructions)


def test_split_program_ends_requests_after_answers():
    program = _program(
        Instruction(Opcode.WRITE_UB, a=0, n=20, payload=bytes(80)),   # 88 bytes, no answer
        Instruction(Opcode.MATMUL, a=0, b=0, n=4),
        Instruction(Opcode.READ_ACC, a=0, n=4),                     # answers
        Instruction(Opcode.NOP),
    ) + SYNC_WORD
    requests = split_program(program, G, 32)
    assert b"".join(payload for payload, _ in requests) == program
    assert all(len(payload) <= 32 for payload, _ in requests)
    ends = [payload[-8:] for payload, answers in requests if answers]
    assert ends == [Instruction(Opcode.READ_ACC, a=0, n=4).encode(), SYNC_WORD]
    assert requests[-1][1]


def test_split_program_after_an_illegal_opcode_waits_for_sync():
    # After an unknown opcode the device skips words (a WRITE_UB word is then not followed by
    # a payload) until the exact SYNC word, which answers.
    illegal = bytes([0x77]) + bytes(7)
    write = Instruction(Opcode.WRITE_UB, n=1).encode()
    requests = split_program(illegal + write + SYNC_WORD, G, 64)
    assert requests == [(illegal, True), (write + SYNC_WORD, True)]


@pytest.mark.parametrize("seed", range(4))
def test_link_recovers_from_every_fault(seed):
    faults = dict(flip=0.003, drop=0.003, garbage=0.003, framing=0.003)
    line = ModelLine(G, max_payload=32, to_board=LineFaults(**faults, seed=seed),
                     to_host=LineFaults(**faults, seed=seed + 100))
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (9, 7), dtype=np.int8)
    b = rng.integers(-128, 128, (7, 6), dtype=np.int8)
    with Device(SerialBackend(G, transport=line, max_payload=32, retries=20)) as device:
        for _ in range(3):
            assert np.array_equal(device.matmul(a, b), a.astype(np.int32) @ b)
        stats = device.backend.link.stats
    assert stats["retries"] > 0 and stats["bad_frames"] + stats["rejected"] > 0
    assert sum(line.to_board.counts.values()) > 0 and sum(line.to_host.counts.values()) > 0


def test_every_fault_kind_is_survived():
    # Each kind of damage on each direction, at known places (the first frames), then a run.
    kinds = ["flip", "drop", "garbage", "framing"]
    to_board = LineFaults(script={3 + 9 * i: kind for i, kind in enumerate(kinds)})
    to_host = LineFaults(script={4 + 11 * i: kind for i, kind in enumerate(kinds[:3])})
    line = ModelLine(G, max_payload=16, to_board=to_board, to_host=to_host)
    program = _program(Instruction(Opcode.WRITE_UB, a=3, n=5, payload=bytes(range(20))),
                       Instruction(Opcode.READ_UB, a=3, n=5)) + SYNC_WORD
    from sim.golden.accelerator import AcceleratorModel
    backend = SerialBackend(G, transport=line, max_payload=16)
    assert backend.exchange(program) == AcceleratorModel(G).run(program)
    assert all(to_board.counts.values()) and to_host.counts["drop"] == 1
    assert backend.link.stats["retries"] >= 4


def test_lost_answer_is_replayed_not_run_twice():
    # Drop the whole first answer to a request that writes the UB: the retry must come back
    # as REPEAT with the same bytes, and the accelerator must have run the payload once.
    line = ModelLine(G, max_payload=64)
    link = Link(line, max_payload=64)
    link.start()
    runs = []
    run = line._run
    line._run = lambda payload: runs.append(payload) or run(payload)
    real_write = line.write
    dropped = []

    def write(data):
        real_write(data)
        if not dropped:
            dropped.append(bytes(line._received))
            line._received.clear()
    line.write = write
    program = _program(Instruction(Opcode.READ_COUNTERS)) + SYNC_WORD
    answer = link.transact(program)
    assert answer.status == Status.REPEAT
    assert runs == [program]
    assert link.stats["timeouts"] == 1 and link.stats["repeats"] == 1


def test_a_dead_line_raises_a_clear_error():
    class Dead:
        byte_time = 0.0
        now = 0.0

        def clock(self):
            return self.now

        def write(self, data):
            pass

        def read(self, timeout):
            self.now += timeout
            return b""

    link = Link(Dead(), retries=2, timeout=0.01)
    with pytest.raises(LinkError, match="no good answer to request 0 after 3 attempts"):
        link.transact(b"")


def test_link_arguments_are_checked():
    line = ModelLine(G)
    with pytest.raises(TypeError, match="transport must have write"):
        Link(object())
    with pytest.raises(ValueError, match="max_payload"):
        Link(line, max_payload=0)
    with pytest.raises(ValueError, match="retries"):
        Link(line, retries=-1)


def test_serial_backend_needs_a_port_or_a_transport():
    with pytest.raises(ValueError, match="exactly one of port="):
        SerialBackend(G)


def test_serial_backend_reports_a_missing_port():
    from firmware.backends import DeviceError
    with pytest.raises(DeviceError, match="cannot open serial port '/dev/puce-no-such-port'"):
        SerialBackend(G, port="/dev/puce-no-such-port")
