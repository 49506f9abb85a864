"""The puce instruction set and wire protocol: encoding, decoding, payloads and responses.

Every instruction is one 8-byte little-endian word::

    byte  0      1      2..3   4..5   6..7
          opcode flags  a      b      n          (a, b, n: unsigned 16-bit)

Some instructions are followed by a payload on the same byte stream; payloads are padded with
zeros to a whole number of 8-byte words, so the stream is always a sequence of words (which
lets the device find the next SYNC after an illegal opcode). The device answers on its output
stream with packets that each start with an 8-byte header (see :class:`Response`).
The ISA reference, docs/isa.md, describes the semantics.
"""

import enum
import struct
from dataclasses import dataclass

__all__ = [
    "WORD", "SYNC_MAGIC", "SYNC_WORD", "Opcode", "Flag", "ErrorCode", "Tag", "Counter",
    "Geometry", "Instruction", "pad", "padded_length", "ppu_config_length", "ppu_config_bytes",
    "unpack_ppu_config", "malformed", "decode_program", "Response",
]

#: Bytes per instruction word; payloads are padded to a multiple of it.
WORD = 8
#: Bytes 2..7 of a SYNC word: a signature that data is unlikely to repeat by accident.
SYNC_MAGIC = b"PUCE\x5a\xa5"
#: The whole SYNC word: opcode 0x3F, flags 0, then :data:`SYNC_MAGIC`.
SYNC_WORD = bytes([0x3F, 0]) + SYNC_MAGIC


class Opcode(enum.IntEnum):
    NOP           = 0x00
    WRITE_UB      = 0x10   #: a: UB row, n: rows; payload n * R bytes
    WRITE_WM      = 0x11   #: a: WM row, n: rows; payload n * C bytes
    SET_PPU       = 0x12   #: payload: PPU configuration (ppu_config_bytes)
    LOAD_WEIGHTS  = 0x20   #: a: WM row of a tile's first row; R rows into the MXU's shadow bank
    MATMUL        = 0x21   #: a: UB row, b: ACC row, n: rows through the MXU
    ACTIVATE      = 0x22   #: a: ACC row, b: UB row, n: rows through the PPU; flags: lane offset
    READ_UB       = 0x30   #: a: UB row, n: rows; answer DATA n * R bytes
    READ_ACC      = 0x31   #: a: ACC row, n: rows; answer DATA n * C * 4 bytes
    READ_COUNTERS = 0x32   #: answer DATA with every Counter, 8 bytes each; flags: CLEAR
    SYNC          = 0x3F   #: wait until idle, answer STATUS; bytes 2..7 must be SYNC_MAGIC


class Flag(enum.IntFlag):
    SIGNED     = 0x01   #: LOAD_WEIGHTS: weights are int8 (else uint8); MATMUL: activations
    ACCUMULATE = 0x02   #: MATMUL: add to the accumulators instead of overwriting them
    SWAP       = 0x04   #: MATMUL: switch to the most recently loaded weight tile first
    CLEAR      = 0x01   #: READ_COUNTERS: zero the counters after reading them


class ErrorCode(enum.IntEnum):
    OK             = 0   #: no error since the last SYNC
    ILLEGAL_OPCODE = 1   #: unknown opcode: the device skips words until the next SYNC
    ADDRESS        = 2   #: a row range runs past the end of its memory; instruction skipped
    MALFORMED      = 3   #: a reserved field or flag is set, or n is 0; instruction skipped
    NO_WEIGHTS     = 4   #: MATMUL with SWAP but no weight tile loaded since the last swap
    WEIGHTS_FULL   = 5   #: LOAD_WEIGHTS while a loaded tile still waits for its swap


class Tag(enum.IntEnum):
    """First byte of every response packet."""
    DATA   = 0xDA   #: bytes 4..7: payload length; the payload follows
    STATUS = 0x5C   #: answer to SYNC: byte 1 error code, bytes 4..7 index of the failing word
    ERROR  = 0xEE   #: sent at once on an illegal opcode: byte 1 code, bytes 4..7 its index


class Counter(enum.IntEnum):
    """Performance counters, in the order READ_COUNTERS sends them (8 bytes each)."""
    CYCLES         = 0   #: clock cycles
    MXU_BUSY       = 1   #: cycles in which the MXU accepted an activation row
    STALL_WEIGHTS  = 2   #: cycles a MATMUL row waited for its weight tile
    STALL_HAZARD   = 3   #: cycles the decoder held an instruction for a data hazard
    STALL_HOST_IN  = 4   #: cycles the decoder waited for bytes from the host
    STALL_HOST_OUT = 5   #: cycles a response waited for the host to take it
    INSTRUCTIONS   = 6   #: instructions executed


@dataclass(frozen=True)
class Geometry:
    """The sizes an accelerator was built with; programs are valid for one geometry.

    Attributes
    ----------
    rows, cols : int
        R and C of the MXU.
    ub_depth, wm_depth, acc_depth : int
        Rows in the unified buffer (R bytes each), weight memory (C bytes each) and
        accumulator memory (C int32 each); each at most 65536 (16-bit addresses).
    """
    rows: int = 8
    cols: int = 8
    ub_depth: int = 1024
    wm_depth: int = 512
    acc_depth: int = 512

    def __post_init__(self):
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 255:
                raise ValueError(f"{name} must be an integer from 1 to 255, not {value!r}")
        for name in ("ub_depth", "wm_depth", "acc_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or \
                    not 1 <= value <= 65536:
                raise ValueError(f"{name} must be an integer from 1 to 65536, not {value!r}")
        if self.wm_depth < self.rows:
            raise ValueError(f"wm_depth ({self.wm_depth}) must hold a whole weight tile "
                             f"({self.rows} rows)")


@dataclass(frozen=True)
class Instruction:
    """One instruction word; ``payload`` is the raw bytes that follow it (unpadded)."""
    opcode: int
    flags: int = 0
    a: int = 0
    b: int = 0
    n: int = 0
    payload: bytes = b""

    def __post_init__(self):
        for name, bits in (("opcode", 8), ("flags", 8), ("a", 16), ("b", 16), ("n", 16)):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value < (1 << bits):
                raise ValueError(f"{name} must be an unsigned {bits}-bit integer, "
                                 f"not {value!r}")

    @classmethod
    def sync(cls):
        a, b, n = struct.unpack("<HHH", SYNC_MAGIC)
        return cls(Opcode.SYNC, 0, a, b, n)

    def word(self):
        """The 8-byte instruction word."""
        return struct.pack("<BBHHH", self.opcode, self.flags, self.a, self.b, self.n)

    def encode(self):
        """The word followed by its payload, padded to whole words."""
        return self.word() + pad(self.payload)

    @classmethod
    def decode_word(cls, word):
        if len(word) != WORD:
            raise ValueError(f"an instruction word is {WORD} bytes, not {len(word)}")
        return cls(*struct.unpack("<BBHHH", word))

    def payload_length(self, geometry):
        """Bytes of payload (before padding) that follow this word on a ``geometry`` device.

        ``n * R`` for WRITE_UB, ``n * C`` for WRITE_WM, ``ppu_config_length(C)`` for SET_PPU,
        0 for every other opcode, known or not. The length depends on the opcode and ``n``
        only: the device consumes the payload even when the instruction fails.
        """
        if self.opcode == Opcode.WRITE_UB:
            return self.n * geometry.rows
        if self.opcode == Opcode.WRITE_WM:
            return self.n * geometry.cols
        if self.opcode == Opcode.SET_PPU:
            return ppu_config_length(geometry.cols)
        return 0


def pad(payload):
    """``payload`` followed by zeros up to a multiple of :data:`WORD` bytes."""
    return bytes(payload) + bytes(-len(payload) % WORD)


def padded_length(length):
    """``length`` rounded up to a whole number of :data:`WORD` bytes."""
    return length + (-length % WORD)


def ppu_config_length(cols):
    """Bytes in a SET_PPU payload for ``cols`` columns (before padding): ``4 * cols + 8``."""
    return 4 * cols + 8


def ppu_config_bytes(bias, multiplier, shift, zero_point, activation, clamp_max):
    """The SET_PPU payload: C int32 biases, then multiplier (int32), shift, zero point,
    activation and clamp_max (one byte each); all little-endian."""
    bias = [int(v) for v in bias]
    return (struct.pack(f"<{len(bias)}i", *bias) +
            struct.pack("<iBbBb", int(multiplier), int(shift), int(zero_point),
                        int(activation), int(clamp_max)))


def unpack_ppu_config(payload, cols):
    """The fields of a SET_PPU payload (the inverse of :func:`ppu_config_bytes`), as a dict.

    Keys: ``bias`` (a list of ``cols`` ints), ``multiplier``, ``shift``, ``zero_point``,
    ``activation``, ``clamp_max``. Bytes beyond ``ppu_config_length(cols)`` (padding) are
    ignored; the values are not range-checked (see :func:`malformed`).
    """
    length = ppu_config_length(cols)
    if len(payload) < length:
        raise ValueError(f"a SET_PPU payload for {cols} columns is {length} bytes, "
                         f"not {len(payload)}")
    bias = list(struct.unpack_from(f"<{cols}i", payload, 0))
    multiplier, shift, zero_point, activation, clamp_max = \
        struct.unpack_from("<iBbBb", payload, 4 * cols)
    return {"bias": bias, "multiplier": multiplier, "shift": shift, "zero_point": zero_point,
            "activation": activation, "clamp_max": clamp_max}


#: Per opcode: the flag bits it accepts, and whether it uses a, b and n.
_FIELDS = {
    Opcode.NOP:           (0x00, False, False, False),
    Opcode.WRITE_UB:      (0x00, True,  False, True),
    Opcode.WRITE_WM:      (0x00, True,  False, True),
    Opcode.SET_PPU:       (0x00, False, False, False),
    Opcode.LOAD_WEIGHTS:  (Flag.SIGNED, True, False, False),
    Opcode.MATMUL:        (Flag.SIGNED | Flag.ACCUMULATE | Flag.SWAP, True, True, True),
    Opcode.ACTIVATE:      (0xff, True, True, True),      # flags: the lane offset
    Opcode.READ_UB:       (0x00, True,  False, True),
    Opcode.READ_ACC:      (0x00, True,  False, True),
    Opcode.READ_COUNTERS: (Flag.CLEAR, False, False, False),
}


def malformed(instruction, geometry):
    """Why ``instruction`` is MALFORMED on a ``geometry`` device, or None if it is well formed.

    These are the checks that depend on the instruction alone (and R, C): reserved flags or
    fields set, ``n == 0``, an ACTIVATE lane offset with ``L + C > R``, a SET_PPU payload with
    ``shift > 31`` or an unknown activation, a SYNC word other than :data:`SYNC_WORD`.
    Address ranges and the weight-tile state are checked by the device after these.

    Raises
    ------
    ValueError
        If ``instruction.opcode`` is not an :class:`Opcode` (that is ILLEGAL_OPCODE, not
        MALFORMED), or a SET_PPU instruction's payload is shorter than the configuration.
    """
    try:
        opcode = Opcode(instruction.opcode)
    except ValueError:
        raise ValueError(f"unknown opcode 0x{instruction.opcode:02x}") from None
    if opcode == Opcode.SYNC:
        if instruction.word() != SYNC_WORD:
            return "a SYNC word must be exactly " + SYNC_WORD.hex()
        return None
    flags, uses_a, uses_b, uses_n = _FIELDS[opcode]
    name = opcode.name
    reserved = int(instruction.flags) & ~int(flags) & 0xff     # int: ~ of an IntFlag stays
    if reserved:                                               # inside its members' bits
        return f"{name} does not accept flags 0x{reserved:02x}"
    for field, used in (("a", uses_a), ("b", uses_b), ("n", uses_n)):
        if not used and getattr(instruction, field):
            return f"{name} does not use field {field}, which must be 0"
    if uses_n and instruction.n == 0:
        return f"{name} needs n of at least 1"
    if opcode == Opcode.ACTIVATE and instruction.flags + geometry.cols > geometry.rows:
        return (f"ACTIVATE lane offset {instruction.flags} + C ({geometry.cols}) exceeds "
                f"R ({geometry.rows})")
    if opcode == Opcode.SET_PPU:
        config = unpack_ppu_config(instruction.payload, geometry.cols)
        if config["shift"] > 31:
            return f"SET_PPU shift {config['shift']} exceeds 31"
        if config["activation"] not in (0, 1, 2):
            return f"SET_PPU activation {config['activation']} is not 0, 1 or 2"
    return None


def decode_program(data, geometry):
    """Split a byte string into its instructions, each with its (unpadded) payload.

    A purely syntactic decode: every word is an instruction, and WRITE_UB, WRITE_WM and
    SET_PPU take their payload (of :meth:`Instruction.payload_length` bytes, then padding).
    Unknown opcodes are returned as they are, with no payload; the device itself would skip
    the words after one until the next SYNC (docs/isa.md), which this function does not model.

    Raises
    ------
    ValueError
        If ``data`` ends inside a word or inside a payload.
    """
    data = bytes(data)
    instructions, offset = [], 0
    while offset < len(data):
        if len(data) - offset < WORD:
            raise ValueError(f"program ends inside a word at byte {offset}")
        instruction = Instruction.decode_word(data[offset:offset + WORD])
        length = instruction.payload_length(geometry)
        start = offset + WORD
        if len(data) - start < padded_length(length):
            raise ValueError(f"program ends inside the {padded_length(length)}-byte payload "
                             f"of the instruction at byte {offset}")
        instructions.append(Instruction(instruction.opcode, instruction.flags, instruction.a,
                                        instruction.b, instruction.n,
                                        data[start:start + length]))
        offset = start + padded_length(length)
    return instructions


@dataclass(frozen=True)
class Response:
    """One packet from the device: an 8-byte header, then ``payload`` for DATA packets."""
    tag: int
    code: int = 0
    index: int = 0
    payload: bytes = b""

    def encode(self):
        if self.tag == Tag.DATA:
            return struct.pack("<BBHI", self.tag, 0, 0, len(self.payload)) + self.payload
        return struct.pack("<BBHI", self.tag, self.code, 0, self.index)

    @classmethod
    def parse(cls, stream):
        """Split a byte string into packets; raise ValueError on a malformed stream."""
        packets, offset = [], 0
        while offset < len(stream):
            if len(stream) - offset < WORD:
                raise ValueError(f"truncated response header at byte {offset}")
            tag, code, _, value = struct.unpack_from("<BBHI", stream, offset)
            offset += WORD
            if tag == Tag.DATA:
                if len(stream) - offset < value:
                    raise ValueError(f"DATA packet at byte {offset - WORD} announces {value} "
                                     f"bytes but only {len(stream) - offset} follow")
                packets.append(cls(Tag.DATA, payload=bytes(stream[offset:offset + value])))
                offset += value
            elif tag in (Tag.STATUS, Tag.ERROR):
                packets.append(cls(Tag(tag), code, value))
            else:
                raise ValueError(f"unknown response tag 0x{tag:02x} at byte {offset - WORD}")
        return packets
