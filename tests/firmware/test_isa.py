"""The instruction set's encodings: words, payloads, response packets."""

import struct

import numpy as np
import pytest

from firmware.isa import (SYNC_MAGIC, SYNC_WORD, WORD, Counter, ErrorCode, Flag, Geometry,
                          Instruction, Opcode, Response, Tag, decode_program, malformed, pad,
                          padded_length, ppu_config_bytes, ppu_config_length, unpack_ppu_config)

GEOMETRY = Geometry(rows=8, cols=4, ub_depth=64, wm_depth=32, acc_depth=32)


# Instruction words.

def test_word_layout_spot_check():
    # Hand-made: opcode, flags, then a, b, n as little-endian 16-bit values.
    word = Instruction(Opcode.MATMUL, 0x07, 0x0102, 0x0304, 0x0506).word()
    assert word == bytes([0x21, 0x07, 0x02, 0x01, 0x04, 0x03, 0x06, 0x05])
    assert Instruction(Opcode.NOP).word() == bytes(8)


def test_sync_word():
    assert SYNC_WORD == b"\x3f\x00PUCE\x5a\xa5"
    assert Instruction.sync().word() == SYNC_WORD
    assert Instruction.sync().opcode == Opcode.SYNC
    assert SYNC_WORD[2:] == SYNC_MAGIC
    assert malformed(Instruction.sync(), GEOMETRY) is None


@pytest.mark.parametrize("opcode", list(Opcode))
def test_word_round_trip_every_opcode(opcode):
    rng = np.random.default_rng(int(opcode))
    for _ in range(50):
        flags, a, b, n = (int(v) for v in rng.integers(0, [256, 65536, 65536, 65536]))
        instruction = Instruction(opcode, flags, a, b, n)
        word = instruction.word()
        assert len(word) == WORD
        assert Instruction.decode_word(word) == instruction
        assert struct.unpack("<BBHHH", word) == (opcode, flags, a, b, n)
    for extreme in (0, 0xffff):
        instruction = Instruction(opcode, 0xff if extreme else 0, extreme, extreme, extreme)
        assert Instruction.decode_word(instruction.word()) == instruction


def test_unknown_opcodes_encode_too():
    known = {int(op) for op in Opcode}
    for value in range(256):
        if value not in known:
            assert Instruction.decode_word(bytes([value]) + bytes(7)).opcode == value


@pytest.mark.parametrize("field, value", [
    ("opcode", 256), ("opcode", -1), ("flags", 256), ("flags", -1), ("a", 65536),
    ("b", -1), ("n", 1 << 16), ("a", 1.0), ("n", "1"), ("flags", None),
])
def test_field_range_errors(field, value):
    with pytest.raises(ValueError, match=f"{field} must be an unsigned"):
        Instruction(**{"opcode": Opcode.NOP, field: value})


@pytest.mark.parametrize("length", [0, 7, 9, 16])
def test_decode_word_needs_eight_bytes(length):
    with pytest.raises(ValueError, match="an instruction word is 8 bytes"):
        Instruction.decode_word(bytes(length))


def test_encode_pads_payload():
    instruction = Instruction(Opcode.WRITE_UB, a=3, n=1, payload=bytes(range(1, 6)))
    assert instruction.encode() == instruction.word() + bytes(range(1, 6)) + bytes(3)
    assert Instruction(Opcode.NOP).encode() == bytes(8)


@pytest.mark.parametrize("length", [0, 1, 7, 8, 9, 15, 16, 17])
def test_pad(length):
    data = bytes(range(1, length + 1))
    padded = pad(data)
    assert len(padded) % WORD == 0 and len(padded) - length < WORD
    assert padded[:length] == data and not any(padded[length:])
    assert len(padded) == padded_length(length)


def test_payload_lengths():
    g = Geometry(rows=5, cols=3)
    assert Instruction(Opcode.WRITE_UB, n=7).payload_length(g) == 35
    assert Instruction(Opcode.WRITE_WM, n=7).payload_length(g) == 21
    assert Instruction(Opcode.WRITE_UB, n=0).payload_length(g) == 0
    assert Instruction(Opcode.SET_PPU).payload_length(g) == ppu_config_length(3) == 20
    for opcode in set(Opcode) - {Opcode.WRITE_UB, Opcode.WRITE_WM, Opcode.SET_PPU}:
        assert Instruction(opcode, n=9).payload_length(g) == 0
    assert Instruction(0x77, n=9).payload_length(g) == 0


# The SET_PPU payload.

def test_ppu_config_bytes_spot_check():
    data = ppu_config_bytes([1, -1], 0x40000000, 7, -5, 1, 100)
    assert data == (b"\x01\x00\x00\x00" b"\xff\xff\xff\xff" b"\x00\x00\x00\x40"
                    b"\x07" b"\xfb" b"\x01" b"\x64")
    assert len(data) == ppu_config_length(2)


def test_ppu_config_round_trip():
    rng = np.random.default_rng(1)
    for cols in (1, 2, 3, 8, 17):
        for _ in range(20):
            fields = {
                "bias": [int(v) for v in rng.integers(-2**31, 2**31, cols)],
                "multiplier": int(rng.integers(-2**31, 2**31)),
                "shift": int(rng.integers(0, 32)),
                "zero_point": int(rng.integers(-128, 128)),
                "activation": int(rng.integers(0, 3)),
                "clamp_max": int(rng.integers(-128, 128)),
            }
            data = ppu_config_bytes(**fields)
            assert len(data) == ppu_config_length(cols)
            assert unpack_ppu_config(data, cols) == fields
            assert unpack_ppu_config(pad(data), cols) == fields     # padding is ignored


def test_unpack_ppu_config_too_short():
    with pytest.raises(ValueError, match="is 16 bytes, not 15"):
        unpack_ppu_config(bytes(15), 2)


# Well-formedness.

def _ppu(shift=0, activation=0, cols=4):
    return Instruction(Opcode.SET_PPU, payload=ppu_config_bytes([0] * cols, 1, shift, 0,
                                                                activation, 127))


@pytest.mark.parametrize("instruction", [
    Instruction(Opcode.NOP),
    Instruction(Opcode.WRITE_UB, a=65535, n=65535),
    Instruction(Opcode.WRITE_WM, a=1, n=1),
    _ppu(31, 2),
    Instruction(Opcode.LOAD_WEIGHTS, Flag.SIGNED, a=9),
    Instruction(Opcode.MATMUL, Flag.SIGNED | Flag.ACCUMULATE | Flag.SWAP, 1, 2, 3),
    Instruction(Opcode.ACTIVATE, 4, 1, 2, 3),               # lane 4 + C 4 == R 8
    Instruction(Opcode.READ_UB, a=1, n=1),
    Instruction(Opcode.READ_ACC, a=1, n=1),
    Instruction(Opcode.READ_COUNTERS, Flag.CLEAR),
    Instruction.sync(),
])
def test_well_formed(instruction):
    assert malformed(instruction, GEOMETRY) is None


@pytest.mark.parametrize("instruction, reason", [
    (Instruction(Opcode.NOP, flags=1), "does not accept flags 0x01"),
    (Instruction(Opcode.NOP, n=1), "does not use field n"),
    (Instruction(Opcode.WRITE_UB, a=1), "needs n of at least 1"),
    (Instruction(Opcode.WRITE_UB, b=1, n=1), "does not use field b"),
    (Instruction(Opcode.WRITE_WM, Flag.SIGNED, n=1), "does not accept flags"),
    (_ppu(32), "shift 32 exceeds 31"),
    (_ppu(activation=3), "activation 3 is not 0, 1 or 2"),
    (Instruction(Opcode.SET_PPU, a=1, payload=_ppu().payload), "does not use field a"),
    (Instruction(Opcode.LOAD_WEIGHTS, Flag.ACCUMULATE), "does not accept flags 0x02"),
    (Instruction(Opcode.LOAD_WEIGHTS, n=8), "does not use field n"),
    (Instruction(Opcode.MATMUL, 0x08, n=1), "does not accept flags 0x08"),
    (Instruction(Opcode.MATMUL), "needs n of at least 1"),
    (Instruction(Opcode.ACTIVATE, 5, n=1), "lane offset 5 + C (4) exceeds R (8)"),
    (Instruction(Opcode.READ_UB, n=0), "needs n of at least 1"),
    (Instruction(Opcode.READ_ACC, Flag.CLEAR, n=1), "does not accept flags"),
    (Instruction(Opcode.READ_COUNTERS, 0x02), "does not accept flags 0x02"),
    (Instruction(Opcode.READ_COUNTERS, a=1), "does not use field a"),
    (Instruction(Opcode.SYNC), "must be exactly"),
    (Instruction(Opcode.SYNC, 1, *struct.unpack("<HHH", SYNC_MAGIC)), "must be exactly"),
    (Instruction(Opcode.SYNC, 0, *struct.unpack("<HHH", SYNC_MAGIC[:5] + b"\x00")),
     "must be exactly"),
])
def test_malformed(instruction, reason):
    assert reason in malformed(instruction, GEOMETRY)


def test_malformed_rejects_unknown_opcode():
    with pytest.raises(ValueError, match="unknown opcode 0x40"):
        malformed(Instruction(0x40), GEOMETRY)


# Whole programs.

def test_decode_program_round_trip():
    g = Geometry(rows=3, cols=5)
    program = [
        Instruction(Opcode.WRITE_UB, a=2, n=3, payload=bytes(range(9))),
        Instruction(Opcode.WRITE_WM, a=0, n=1, payload=b"\xff" * 5),
        Instruction(Opcode.SET_PPU, payload=ppu_config_bytes([1, 2, 3, 4, 5], 9, 3, 1, 2, 7)),
        Instruction(Opcode.MATMUL, Flag.SWAP, 0, 0, 3),
        Instruction(0x99, 1, 2, 3, 4),                      # unknown: no payload
        Instruction.sync(),
    ]
    data = b"".join(instruction.encode() for instruction in program)
    assert decode_program(data, g) == program
    assert decode_program(b"", g) == []


def test_decode_program_truncated():
    g = Geometry(rows=4, cols=4)
    data = Instruction(Opcode.WRITE_UB, n=3, payload=bytes(12)).encode()
    with pytest.raises(ValueError, match="ends inside the 16-byte payload .* at byte 8"):
        decode_program(Instruction(Opcode.NOP).encode() + data[:-1], g)
    with pytest.raises(ValueError, match="ends inside a word at byte 8"):
        decode_program(bytes(13), g)


# Geometry.

@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, "rows must be an integer from 1 to 255"),
    ({"cols": 256}, "cols must be an integer from 1 to 255"),
    ({"rows": True}, "rows must be"),
    ({"ub_depth": 0}, "ub_depth must be an integer from 1 to 65536"),
    ({"acc_depth": 65537}, "acc_depth must be"),
    ({"rows": 16, "wm_depth": 15}, "must hold a whole weight tile"),
])
def test_geometry_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Geometry(**kwargs)


# Responses.

def test_response_encoding_spot_check():
    assert Response(Tag.DATA, payload=b"\x01\x02\x03").encode() == \
        b"\xda\x00\x00\x00\x03\x00\x00\x00\x01\x02\x03"
    assert Response(Tag.STATUS, ErrorCode.ADDRESS, 0x01020304).encode() == \
        b"\x5c\x02\x00\x00\x04\x03\x02\x01"
    assert Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 7).encode() == \
        b"\xee\x01\x00\x00\x07\x00\x00\x00"


def test_response_parse_round_trip():
    packets = [
        Response(Tag.DATA, payload=bytes(range(13))),
        Response(Tag.STATUS, ErrorCode.OK, 0),
        Response(Tag.DATA, payload=b""),
        Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 12345),
        Response(Tag.STATUS, ErrorCode.WEIGHTS_FULL, 2**32 - 1),
        Response(Tag.DATA, payload=bytes(8 * len(Counter))),
    ]
    stream = b"".join(packet.encode() for packet in packets)
    assert Response.parse(stream) == packets
    assert Response.parse(b"") == []


def test_response_parse_truncated():
    stream = Response(Tag.STATUS).encode() + Response(Tag.DATA, payload=bytes(10)).encode()
    with pytest.raises(ValueError, match="truncated response header at byte 8"):
        Response.parse(stream[:12])
    with pytest.raises(ValueError, match="announces 10 bytes but only 9 follow"):
        Response.parse(stream[:-1])


def test_response_parse_unknown_tag():
    stream = Response(Tag.STATUS).encode() + b"\x42" + bytes(7)
    with pytest.raises(ValueError, match="unknown response tag 0x42 at byte 8"):
        Response.parse(stream)
