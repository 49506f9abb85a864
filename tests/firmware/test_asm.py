"""The text assembler and disassembler, and the ``puce asm`` / ``puce disasm`` commands."""

import re
import struct
from pathlib import Path

import numpy as np
import pytest

from firmware.asm import assemble, disassemble
from firmware.cli import main
from firmware.isa import (SYNC_WORD, Counter, Flag, Geometry, Instruction, Opcode, Response, Tag,
                          ErrorCode, decode_program, ppu_config_bytes)
from sim.golden.accelerator import AcceleratorModel

G = Geometry(rows=4, cols=3)
REPO_ROOT = Path(__file__).resolve().parents[2]


def encode(*instructions):
    return b"".join(instruction.encode() for instruction in instructions)


def round_trip(text, geometry=G):
    """text -> bytes -> text -> bytes; both byte strings must agree."""
    data = assemble(text, geometry)
    again = disassemble(data, geometry)
    assert assemble(again, geometry) == data
    assert disassemble(assemble(again, geometry), geometry) == again
    return data, again


# One statement per opcode: the text, and the instruction it must encode to.

CASES = [
    ("nop", Instruction(Opcode.NOP)),
    ("write_ub ub=7 n=2\n.bytes 01 02 03 04\n.bytes ff fe fd fc",
     Instruction(Opcode.WRITE_UB, a=7, n=2, payload=bytes([1, 2, 3, 4, 255, 254, 253, 252]))),
    ("write_wm wm=65535 n=1\n.bytes 0a 0B c0",
     Instruction(Opcode.WRITE_WM, a=65535, n=1, payload=bytes([10, 11, 192]))),
    ("set_ppu bias=1,-2,2147483647 multiplier=1518500250 shift=7 zero_point=-5 "
     "activation=relu clamp_max=100",
     Instruction(Opcode.SET_PPU, payload=ppu_config_bytes([1, -2, 2**31 - 1], 1518500250, 7, -5,
                                                          1, 100))),
    ("load_weights wm=8 signed", Instruction(Opcode.LOAD_WEIGHTS, Flag.SIGNED, a=8)),
    ("load_weights wm=0", Instruction(Opcode.LOAD_WEIGHTS)),
    ("matmul ub=0 acc=16 n=64 signed accumulate swap",
     Instruction(Opcode.MATMUL, Flag.SIGNED | Flag.ACCUMULATE | Flag.SWAP, 0, 16, 64)),
    ("matmul ub=1 acc=2 n=3", Instruction(Opcode.MATMUL, 0, 1, 2, 3)),
    ("activate acc=0 ub=32 n=4 lane=1", Instruction(Opcode.ACTIVATE, 1, 0, 32, 4)),
    ("read_ub ub=3 n=65535", Instruction(Opcode.READ_UB, a=3, n=65535)),
    ("read_acc acc=9 n=1", Instruction(Opcode.READ_ACC, a=9, n=1)),
    ("read_counters", Instruction(Opcode.READ_COUNTERS)),
    ("read_counters clear", Instruction(Opcode.READ_COUNTERS, Flag.CLEAR)),
    ("sync", Instruction.sync()),
    (".word 0x00000000000000ff", Instruction(0xff)),
]


@pytest.mark.parametrize("text, instruction", CASES, ids=[c[0].split()[0] for c in CASES])
def test_every_statement(text, instruction):
    data, again = round_trip(text)
    assert data == instruction.encode()
    if not text.startswith(".word"):
        assert again.lower().split() == text.lower().split()     # the canonical spelling


def test_every_opcode_is_covered():
    covered = {instruction.opcode for _, instruction in CASES}
    assert set(Opcode) <= covered


def test_syntax_conveniences():
    text = """
        ; a comment line
        MatMul  N=0x10 ACC=2   ub=1 SWAP     ; keys in any order, any case, hex values
        write_ub n=2 ub=0
        .bytes 01 02
        .bytes
        .bytes 03 04 05 06 07 08             ; bytes over as many lines as you like
        set_ppu multiplier=5 shift=0 bias=-7 ; one bias for every column, defaults
        activate acc=0 ub=1 n=1              ; lane 0 by default
    """
    data = assemble(text, G)
    assert decode_program(data, G) == [
        Instruction(Opcode.MATMUL, Flag.SWAP, 1, 2, 16),
        Instruction(Opcode.WRITE_UB, a=0, n=2, payload=bytes(range(1, 9))),
        Instruction(Opcode.SET_PPU, payload=ppu_config_bytes([-7] * 3, 5, 0, 0, 0, 127)),
        Instruction(Opcode.ACTIVATE, 0, 0, 1, 1),
    ]
    assert assemble("", G) == b"" and assemble("; nothing\n\n", G) == b""


def test_disassembly_layout():
    text = disassemble(encode(
        Instruction(Opcode.WRITE_UB, a=1, n=2, payload=bytes(range(8))),
        Instruction(Opcode.WRITE_WM, a=1, n=2, payload=bytes(range(6)))), G)
    assert text == ("write_ub ub=1 n=2\n.bytes 00 01 02 03\n.bytes 04 05 06 07\n"
                    "write_wm wm=1 n=2\n.bytes 00 01 02\n.bytes 03 04 05\n")


def random_instruction(rng, geometry):
    opcode = Opcode(rng.choice([int(op) for op in Opcode]))
    a, b = (int(v) for v in rng.integers(0, 65536, 2))
    n = int(rng.integers(1, 6))
    bit = lambda flag: int(flag) * int(rng.integers(0, 2))
    if opcode == Opcode.WRITE_UB:
        return Instruction(opcode, a=a, n=n, payload=rng.bytes(n * geometry.rows))
    if opcode == Opcode.WRITE_WM:
        return Instruction(opcode, a=a, n=n, payload=rng.bytes(n * geometry.cols))
    if opcode == Opcode.SET_PPU:
        return Instruction(opcode, payload=ppu_config_bytes(
            rng.integers(-2**31, 2**31, geometry.cols), int(rng.integers(-2**31, 2**31)),
            int(rng.integers(0, 32)), int(rng.integers(-128, 128)), int(rng.integers(0, 3)),
            int(rng.integers(-128, 128))))
    if opcode == Opcode.LOAD_WEIGHTS:
        return Instruction(opcode, bit(Flag.SIGNED), a=a)
    if opcode == Opcode.MATMUL:
        return Instruction(opcode, bit(Flag.SIGNED) | bit(Flag.ACCUMULATE) | bit(Flag.SWAP),
                           a, b, n)
    if opcode == Opcode.ACTIVATE:
        return Instruction(opcode, int(rng.integers(0, geometry.rows - geometry.cols + 1)),
                           a, b, n)
    if opcode in (Opcode.READ_UB, Opcode.READ_ACC):
        return Instruction(opcode, a=a, n=n)
    if opcode == Opcode.READ_COUNTERS:
        return Instruction(opcode, bit(Flag.CLEAR))
    if opcode == Opcode.SYNC:
        return Instruction.sync()
    return Instruction(opcode)


@pytest.mark.parametrize("rows, cols", [(4, 3), (8, 8), (1, 1), (5, 2)])
def test_random_programs_round_trip(rows, cols):
    geometry = Geometry(rows=rows, cols=cols)
    rng = np.random.default_rng(rows * 100 + cols)
    for _ in range(20):
        program = [random_instruction(rng, geometry) for _ in range(30)]
        data = encode(*program)
        text = disassemble(data, geometry)
        assert ".word" not in text
        assert assemble(text, geometry) == data
        assert disassemble(assemble(text, geometry), geometry) == text


def test_random_bytes_round_trip():
    # Any whole number of words disassembles to text that assembles to the same bytes, including
    # illegal opcodes, malformed fields, nonzero padding and payloads cut short.
    rng = np.random.default_rng(11)
    opcodes = [int(op) for op in Opcode] + [0x01, 0x3e, 0x40, 0xff]
    for _ in range(300):
        words = []
        for _ in range(int(rng.integers(1, 12))):
            word = bytearray(rng.bytes(8))
            word[0] = rng.choice(opcodes)
            if rng.random() < 0.6:
                word[1] = 0
            if rng.random() < 0.7:
                word[6:8] = struct.pack("<H", int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                word[4:6] = b"\0\0"
            if rng.random() < 0.1:
                word = bytearray(SYNC_WORD)
            words.append(bytes(word))
        data = b"".join(words)
        for geometry in (G, Geometry(rows=8, cols=8)):
            text = disassemble(data, geometry)
            assert assemble(text, geometry) == data, text


def test_disassembly_of_odd_words():
    g = Geometry(rows=4, cols=3)
    illegal = Instruction(0x40, 1, 2, 3, 4).word()
    data = (encode(Instruction(Opcode.NOP)) + illegal + encode(Instruction(Opcode.NOP))
            + SYNC_WORD + encode(Instruction(Opcode.NOP, flags=2)))
    lines = disassemble(data, g).splitlines()
    assert lines[0] == "nop"
    assert lines[1].startswith(".word 0x0004000300020140  ; illegal opcode 0x40")
    assert lines[2].startswith(".word 0x0000000000000000  ; skipped")
    assert lines[3] == "sync"
    assert lines[4].startswith(".word 0x0000000000000200  ; nop, malformed: NOP does not")
    assert assemble("\n".join(lines), g) == data

    # Nonzero padding: the device ignores it, but the text keeps it.
    data = Instruction(Opcode.WRITE_WM, n=1).word() + b"\x01\x02\x03\x04" + bytes(4)
    lines = disassemble(data, g).splitlines()
    assert "nonzero payload padding" in lines[0] and len(lines) == 2
    assert assemble(disassemble(data, g), g) == data

    # A payload cut short by the end of the program.
    data = Instruction(Opcode.WRITE_UB, n=5).word() + bytes(8)
    lines = disassemble(data, g).splitlines()
    assert "cut short: it needs 24 payload bytes, 8 follow" in lines[0] and len(lines) == 2
    assert assemble(disassemble(data, g), g) == data

    # A malformed SET_PPU keeps its payload as words too.
    data = encode(Instruction(Opcode.SET_PPU, payload=ppu_config_bytes([0] * 3, 1, 40, 0, 0, 0)))
    lines = disassemble(data, g).splitlines()
    assert "shift 40 exceeds 31" in lines[0] and len(lines) == 1 + 24 // 8
    assert assemble(disassemble(data, g), g) == data

    with pytest.raises(ValueError, match="whole number of 8-byte words; this one is 12 bytes"):
        disassemble(bytes(12), g)


@pytest.mark.parametrize("text, message", [
    ("nop\nfrobnicate ub=1", "line 2: unknown mnemonic 'frobnicate'"),
    ("matmul ub=0 acc=0", "line 1: matmul: missing key 'n'"),
    ("matmul ub=0 acc=0 n=1 k=2", "line 1: matmul: unknown key 'k' (keys: ub, acc, n)"),
    ("nop n=1", "line 1: nop: unknown key 'n' (it takes none)"),
    ("matmul ub=0 acc=0 n=1 clear", "line 1: matmul: unknown flag 'clear' (flags: signed, "),
    ("sync now", "line 1: sync: unknown flag 'now' (it takes none)"),
    ("matmul ub=0 acc=0 n", "line 1: matmul: key 'n' needs a value"),
    ("matmul ub=0 ub=1 acc=0 n=1", "line 1: matmul: key 'ub' given twice"),
    ("matmul ub=0 acc=0 n=1 swap swap", "line 1: matmul: flag 'swap' given twice"),
    ("read_ub ub= n=1", "line 1: read_ub: key 'ub' has no value"),
    ("read_ub ub=x n=1", "line 1: ub='x' is not an integer"),
    ("read_ub ub=0 n=0", "line 1: n=0 is out of range 1..65535"),
    ("read_ub ub=65536 n=1", "line 1: ub=65536 is out of range 0..65535"),
    ("read_acc acc=-1 n=1", "line 1: acc=-1 is out of range 0..65535"),
    ("activate acc=0 ub=0 n=1 lane=2", "line 1: lane=2 is out of range 0..1"),
    ("set_ppu bias=1,2 multiplier=1 shift=0", "line 1: bias needs 1 or C = 3 comma-separated"),
    ("set_ppu bias=2147483648 multiplier=1 shift=0", "bias=2147483648 is out of range"),
    ("set_ppu bias=0 multiplier=1 shift=32", "line 1: shift=32 is out of range 0..31"),
    ("set_ppu bias=0 multiplier=-2147483649 shift=0", "multiplier=-2147483649 is out of range"),
    ("set_ppu bias=0 multiplier=1 shift=0 zero_point=128", "zero_point=128 is out of range"),
    ("set_ppu bias=0 multiplier=1 shift=0 clamp_max=-129", "clamp_max=-129 is out of range"),
    ("set_ppu bias=0 multiplier=1 shift=0 activation=gelu",
     "line 1: activation='gelu' is not none, relu or clamp"),
    ("set_ppu bias=0 shift=0", "line 1: set_ppu: missing key 'multiplier'"),
    ("nop\n.bytes 01", "line 2: .bytes must follow write_ub or write_wm"),
    ("write_ub ub=0 n=1\n.bytes 01 02 03\nnop",
     "line 3: payload length mismatch: write_ub on line 1 needs 4 bytes of .bytes, got 3"),
    ("write_wm wm=0 n=1\n.bytes 01 02\n.bytes 03 04",
     "line 3: payload length mismatch: write_wm on line 1 needs 3 bytes, this line brings the "
     "total to 4"),
    ("nop\nwrite_ub ub=0 n=2\n.bytes 01", "end of input: payload length mismatch: write_ub on "
     "line 2 needs 8 bytes of .bytes, got 1"),
    ("write_ub ub=0 n=1\n.bytes 1 2 3 4", "line 2: bad byte '1' (expected two hex digits)"),
    ("write_ub ub=0 n=1\n.bytes 0x01 02 03 04", "line 2: bad byte '0x01'"),
    (".word", "line 1: .word takes one value"),
    (".word 1 2", "line 1: .word takes one value"),
    (".word 0x10000000000000000", "line 1: .word=18446744073709551616 is out of range"),
    (".word -1", "line 1: .word=-1 is out of range"),
])
def test_errors(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        assemble(text, G)


def test_activate_impossible_when_cols_exceed_rows():
    with pytest.raises(ValueError, match=r"line 1: activate: no lane offset works when C \(3\) "
                                         r"exceeds R \(2\)"):
        assemble("activate acc=0 ub=0 n=1", Geometry(rows=2, cols=3))


def test_assembled_program_runs_on_the_model():
    from sim.golden.mxu import matmul
    g = Geometry(rows=4, cols=2, ub_depth=16, wm_depth=16, acc_depth=16)
    text = """
        write_wm wm=0 n=4
        .bytes 01 02
        .bytes ff 03
        .bytes 04 fe
        .bytes 80 7f
        load_weights wm=0 signed
        write_ub ub=0 n=2
        .bytes 01 02 03 04
        .bytes ff 80 7f 00
        matmul ub=0 acc=0 n=2 signed swap
        read_acc acc=0 n=2
        sync
    """
    replies = Response.parse(AcceleratorModel(g).run(assemble(text, g)))
    x = np.array([[1, 2, 3, 4], [0xff, 0x80, 0x7f, 0]])
    w = np.array([[1, 2], [0xff, 3], [4, 0xfe], [0x80, 0x7f]])
    assert replies == [Response(Tag.DATA, payload=matmul(x, w).astype("<i4").tobytes()),
                       Response(Tag.STATUS, ErrorCode.OK, 0)]


def test_documented_example_runs_cleanly():
    # The example program in docs/isa.md assembles, round-trips and runs without an error.
    doc = (REPO_ROOT / "docs" / "isa.md").read_text()
    (block,) = re.findall(r"```asm\n(.*?)```", doc, re.S)
    g = Geometry()
    data, _ = round_trip(block, g)
    replies = Response.parse(AcceleratorModel(g).run(data))
    assert replies[-1] == Response(Tag.STATUS, ErrorCode.OK, 0)
    assert Tag.ERROR not in [reply.tag for reply in replies]
    # What its comments claim about the counters.
    claim = re.search(r"MXU_BUSY = (\d+), INSTRUCTIONS = (\d+)", block)
    counters = struct.unpack("<7Q", replies[-2].payload)
    assert (counters[Counter.MXU_BUSY], counters[Counter.INSTRUCTIONS]) == \
        tuple(map(int, claim.groups()))


# The command line.

SOURCE = "write_ub ub=0 n=1\n.bytes 01 02 03 04 05 06 07 08\nread_ub ub=0 n=1\nsync\n"


def test_cli_asm_and_disasm_files(tmp_path, capsys):
    source, binary, listing = tmp_path / "p.s", tmp_path / "p.bin", tmp_path / "p.txt"
    source.write_text(SOURCE)
    assert main(["asm", str(source), "-o", str(binary)]) == 0
    out, err = capsys.readouterr()
    assert out == "" and f"wrote 32 bytes (4 words) to {binary}" in err
    assert binary.read_bytes() == assemble(SOURCE, Geometry())
    assert main(["disasm", str(binary), "-o", str(listing)]) == 0
    assert capsys.readouterr() == ("", "")
    assert listing.read_text() == SOURCE


def test_cli_standard_output(tmp_path, capsysbinary):
    source = tmp_path / "p.s"
    source.write_text("write_ub ub=0 n=1\n.bytes 01 02 03\nsync\n")
    assert main(["asm", str(source), "--rows", "3", "--cols", "2"]) == 0
    out, err = capsysbinary.readouterr()
    assert out == assemble(source.read_text(), Geometry(rows=3, cols=2)) and err == b""
    binary = tmp_path / "p.bin"
    binary.write_bytes(out)
    assert main(["disasm", str(binary), "--rows", "3", "--cols", "2", "-o", "-"]) == 0
    out, err = capsysbinary.readouterr()
    assert out.decode() == source.read_text() and err == b""


@pytest.mark.parametrize("command, content, args, message", [
    ("asm", "nop\nbogus", [], "line 2: unknown mnemonic 'bogus'"),
    ("asm", "write_ub ub=0 n=1\n.bytes 01", ["--rows", "1"], ""),
    ("asm", "nop", ["--rows", "0"], "rows must be an integer from 1 to 255"),
    ("asm", "nop", ["--cols", "x"], "--cols expects an integer, not 'x'"),
    ("disasm", b"\0" * 9, [], "whole number of 8-byte words; this one is 9 bytes"),
    ("disasm", b"", ["--rows", "256"], "rows must be an integer from 1 to 255"),
])
def test_cli_errors(command, content, args, message, tmp_path, capsys):
    source = tmp_path / "input"
    if isinstance(content, bytes):
        source.write_bytes(content)
    else:
        source.write_text(content)
    target = tmp_path / "out"
    status = main([command, str(source), "-o", str(target), *args])
    out, err = capsys.readouterr()
    if not message:                                          # that one is fine
        assert status == 0 and target.read_bytes() == b"\x10\0\0\0\0\0\x01\0\x01" + bytes(7)
        return
    assert status == 2 and out == ""
    assert err.startswith(f"puce {command}: error: ") and message in err
    assert err.count("\n") == 1 and not target.exists()


def test_cli_unreadable_input(tmp_path, capsys):
    assert main(["asm", str(tmp_path / "missing.s")]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("puce asm: error: cannot read ") and "missing.s" in err
    (tmp_path / "latin1.s").write_bytes(b"nop ; caf\xe9\n")
    assert main(["asm", str(tmp_path / "latin1.s")]) == 2
    assert "not UTF-8 text" in capsys.readouterr().err


def test_cli_unwritable_output(tmp_path, capsys):
    source = tmp_path / "p.s"
    source.write_text("nop\n")
    assert main(["asm", str(source), "-o", str(tmp_path / "no" / "such" / "dir")]) == 1
    assert "puce asm: error: cannot write" in capsys.readouterr().err
