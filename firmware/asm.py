"""A line-oriented text assembler and disassembler for puce programs.

One statement per line; ``;`` starts a comment; mnemonics, keys and flags are case-insensitive::

    ; load an 8 x 8 weight tile and run two rows through it
    write_wm wm=0 n=8
    .bytes 01 02 03 04 05 06 07 08       ; one line per row is customary, not required
    ...
    load_weights wm=0 signed
    write_ub ub=0 n=2
    .bytes 01 ff 00 00 00 00 00 00
    .bytes 7f 80 00 00 00 00 00 00
    matmul ub=0 acc=0 n=2 signed swap
    set_ppu bias=0 multiplier=1518500250 shift=7 zero_point=-5 activation=relu
    activate acc=0 ub=16 n=2 lane=0
    read_ub ub=16 n=2
    read_counters clear
    sync

Statements (keys in any order; integers in decimal or ``0x`` hex; flags are bare words)::

    nop
    write_ub      ub=ROW n=ROWS                then n * R bytes in .bytes lines
    write_wm      wm=ROW n=ROWS                then n * C bytes in .bytes lines
    set_ppu       bias=V|V0,V1,... multiplier=M0 shift=S
                  [zero_point=Z] [activation=none|relu|clamp] [clamp_max=H]
    load_weights  wm=ROW [signed]
    matmul        ub=ROW acc=ROW n=ROWS [signed] [accumulate] [swap]
    activate      acc=ROW ub=ROW n=ROWS [lane=L]
    read_ub       ub=ROW n=ROWS
    read_acc      acc=ROW n=ROWS
    read_counters [clear]
    sync
    .bytes XX XX ...                           payload bytes, two hex digits each
    .word V                                    one raw 64-bit word

``bias`` is one value for every column or exactly C comma-separated values (no spaces);
the defaults are zero_point=0, activation=none, clamp_max=127 and lane=0.
``.bytes`` lines must follow a write_ub or write_wm and supply exactly its payload, in as many
lines as convenient. ``.word V`` emits the 64-bit value V as one little-endian word (bits 0-7
opcode, 8-15 flags, 16-31 a, 32-47 b, 48-63 n): the escape for anything the mnemonics refuse
to write (illegal opcodes, reserved fields).

The assembler writes only well-formed instructions: it rejects what the device would answer
with MALFORMED (n = 0, shift > 31, lane + C > R, ...). Address ranges against the memory depths
are left to the device (ADDRESS), so that programs can exercise them.

:func:`disassemble` prints a program in this syntax, as the device would read it: a word that
does not disassemble to a mnemonic exactly (an illegal opcode, a malformed instruction, nonzero
payload padding, a payload cut short by the end of the input, and the words the device skips
after an illegal opcode) becomes ``.word`` lines with a comment. So any program whose length is
a multiple of 8 bytes disassembles to text that assembles back to the same bytes.
"""

import re
import struct

from .isa import (SYNC_WORD, WORD, Flag, Instruction, Opcode, malformed, padded_length,
                  ppu_config_bytes, unpack_ppu_config)

__all__ = ["assemble", "disassemble"]

#: Per opcode: its keys as (key, instruction field) and its flags as (name, bit).
_SYNTAX = {
    Opcode.NOP:           ((), ()),
    Opcode.WRITE_UB:      ((("ub", "a"), ("n", "n")), ()),
    Opcode.WRITE_WM:      ((("wm", "a"), ("n", "n")), ()),
    Opcode.SET_PPU:       ((("bias", None), ("multiplier", None), ("shift", None),
                            ("zero_point", None), ("activation", None), ("clamp_max", None)),
                           ()),
    Opcode.LOAD_WEIGHTS:  ((("wm", "a"),), (("signed", Flag.SIGNED),)),
    Opcode.MATMUL:        ((("ub", "a"), ("acc", "b"), ("n", "n")),
                           (("signed", Flag.SIGNED), ("accumulate", Flag.ACCUMULATE),
                            ("swap", Flag.SWAP))),
    Opcode.ACTIVATE:      ((("acc", "a"), ("ub", "b"), ("n", "n"), ("lane", "flags")), ()),
    Opcode.READ_UB:       ((("ub", "a"), ("n", "n")), ()),
    Opcode.READ_ACC:      ((("acc", "a"), ("n", "n")), ()),
    Opcode.READ_COUNTERS: ((), (("clear", Flag.CLEAR),)),
    Opcode.SYNC:          ((), ()),
}
_MNEMONICS = {opcode.name.lower(): opcode for opcode in _SYNTAX}
#: Keys that may be left out, with their values.
_DEFAULTS = {
    Opcode.ACTIVATE: {"lane": 0},
    Opcode.SET_PPU: {"zero_point": 0, "activation": "none", "clamp_max": 127},
}
_ACTIVATIONS = {"none": 0, "relu": 1, "clamp": 2}
_HEX_BYTE = re.compile(r"[0-9a-fA-F]{2}")
INT32_MIN, INT32_MAX = -2**31, 2**31 - 1


class _Error(Exception):
    """A problem with the current line; assemble() adds the line number."""


def _integer(name, text, low, high):
    try:
        value = int(text, 0)
    except ValueError:
        raise _Error(f"{name}={text!r} is not an integer") from None
    if not low <= value <= high:
        raise _Error(f"{name}={value} is out of range {low}..{high}")
    return value


def _ppu_payload(values, geometry):
    cols = geometry.cols
    parts = values["bias"].split(",")
    if len(parts) not in (1, cols):
        raise _Error(f"bias needs 1 or C = {cols} comma-separated values, not {len(parts)}")
    bias = [_integer("bias", part, INT32_MIN, INT32_MAX) for part in parts]
    if len(bias) == 1:
        bias *= cols
    activation = values["activation"].lower()
    if activation not in _ACTIVATIONS:
        raise _Error(f"activation={values['activation']!r} is not none, relu or clamp")
    return ppu_config_bytes(
        bias,
        _integer("multiplier", values["multiplier"], INT32_MIN, INT32_MAX),
        _integer("shift", values["shift"], 0, 31),
        _integer("zero_point", values["zero_point"], -128, 127),
        _ACTIVATIONS[activation],
        _integer("clamp_max", values["clamp_max"], -128, 127))


def _statement(tokens, geometry):
    """The instruction of one mnemonic line (without its payload unless SET_PPU)."""
    mnemonic = tokens[0].lower()
    if mnemonic not in _MNEMONICS:
        raise _Error(f"unknown mnemonic {tokens[0]!r}")
    opcode = _MNEMONICS[mnemonic]
    keys, flags = _SYNTAX[opcode]
    key_names = [key for key, _ in keys]
    flag_bits = dict(flags)
    values, flag = {}, 0
    for token in tokens[1:]:
        if "=" in token:
            key, value = token.split("=", 1)
            key = key.lower()
            if key not in key_names:
                raise _Error(f"{mnemonic}: unknown key {key!r}" + (
                    f" (keys: {', '.join(key_names)})" if key_names else " (it takes none)"))
            if key in values:
                raise _Error(f"{mnemonic}: key {key!r} given twice")
            if value == "":
                raise _Error(f"{mnemonic}: key {key!r} has no value")
            values[key] = value
        else:
            name = token.lower()
            if name in key_names:
                raise _Error(f"{mnemonic}: key {name!r} needs a value ({name}=...)")
            if name not in flag_bits:
                raise _Error(f"{mnemonic}: unknown flag {token!r}" + (
                    f" (flags: {', '.join(flag_bits)})" if flag_bits else " (it takes none)"))
            if flag & flag_bits[name]:
                raise _Error(f"{mnemonic}: flag {name!r} given twice")
            flag |= flag_bits[name]
    for key, default in _DEFAULTS.get(opcode, {}).items():
        values.setdefault(key, str(default))
    missing = [key for key in key_names if key not in values]
    if missing:
        raise _Error(f"{mnemonic}: missing key {missing[0]!r}")

    if opcode == Opcode.SET_PPU:
        return Instruction(opcode, payload=_ppu_payload(values, geometry))
    fields = {"flags": flag}
    for key, field in keys:
        if field == "n":
            fields["n"] = _integer(key, values[key], 1, 0xffff)
        elif field == "flags":                          # the ACTIVATE lane offset
            if geometry.cols > geometry.rows:
                raise _Error(f"activate: no lane offset works when C ({geometry.cols}) "
                             f"exceeds R ({geometry.rows})")
            fields["flags"] = _integer(key, values[key], 0, geometry.rows - geometry.cols)
        else:
            fields[field] = _integer(key, values[key], 0, 0xffff)
    if opcode == Opcode.SYNC:
        return Instruction.sync()
    return Instruction(opcode, **fields)


def assemble(text, geometry):
    """Assemble program text into the byte stream for a ``geometry`` device.

    Raises
    ------
    ValueError
        Naming the line and the problem: an unknown mnemonic, key or flag, a missing key, a
        value out of range, or a payload of the wrong length.
    """
    out = bytearray()
    pending = None          # [line number, mnemonic, instruction, expected length, bytes]

    def finish(where):
        line, mnemonic, instruction, expected, payload = pending
        if len(payload) != expected:
            raise ValueError(f"{where}: payload length mismatch: {mnemonic} on line {line} "
                             f"needs {expected} bytes of .bytes, got {len(payload)}")
        out.extend(Instruction(instruction.opcode, instruction.flags, instruction.a,
                               instruction.b, instruction.n, bytes(payload)).encode())

    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split(";", 1)[0].split()
        if not tokens:
            continue
        try:
            head = tokens[0].lower()
            if head == ".bytes":
                if pending is None:
                    raise _Error(".bytes must follow write_ub or write_wm")
                for token in tokens[1:]:
                    if not _HEX_BYTE.fullmatch(token):
                        raise _Error(f"bad byte {token!r} (expected two hex digits)")
                payload = pending[4]
                if len(payload) + len(tokens) - 1 > pending[3]:
                    raise _Error(f"payload length mismatch: {pending[1]} on line {pending[0]} "
                                 f"needs {pending[3]} bytes, this line brings the total to "
                                 f"{len(payload) + len(tokens) - 1}")
                payload.extend(int(token, 16) for token in tokens[1:])
                continue
            if pending is not None:
                finish(f"line {lineno}")
                pending = None
            if head == ".word":
                if len(tokens) != 2:
                    raise _Error(".word takes one value")
                out.extend(struct.pack("<Q", _integer(".word", tokens[1], 0, 2**64 - 1)))
                continue
            instruction = _statement(tokens, geometry)
        except _Error as error:
            raise ValueError(f"line {lineno}: {error}") from None
        length = instruction.payload_length(geometry)
        if instruction.opcode in (Opcode.WRITE_UB, Opcode.WRITE_WM):
            pending = [lineno, head, instruction, length, bytearray()]
        else:
            out.extend(instruction.encode())
    if pending is not None:
        finish("end of input")
    return bytes(out)


def _word_line(word, comment):
    return f".word 0x{struct.unpack('<Q', word)[0]:016x}  ; {comment}"


def _format(instruction, geometry):
    """The lines of one well-formed instruction."""
    opcode = Opcode(instruction.opcode)
    mnemonic = opcode.name.lower()
    if opcode == Opcode.SET_PPU:
        config = unpack_ppu_config(instruction.payload, geometry.cols)
        activation = {code: name for name, code in _ACTIVATIONS.items()}[config["activation"]]
        return [f"{mnemonic} bias={','.join(map(str, config['bias']))} "
                f"multiplier={config['multiplier']} shift={config['shift']} "
                f"zero_point={config['zero_point']} activation={activation} "
                f"clamp_max={config['clamp_max']}"]
    keys, flags = _SYNTAX[opcode]
    parts = [mnemonic]
    parts += [f"{key}={getattr(instruction, field)}" for key, field in keys]
    parts += [name for name, bit in flags if instruction.flags & bit]
    lines = [" ".join(parts)]
    if opcode in (Opcode.WRITE_UB, Opcode.WRITE_WM):
        width = geometry.rows if opcode == Opcode.WRITE_UB else geometry.cols
        payload = instruction.payload
        lines += [".bytes " + " ".join(f"{byte:02x}" for byte in payload[i:i + width])
                  for i in range(0, len(payload), width)]
    return lines


def disassemble(data, geometry):
    """The text of a program for a ``geometry`` device; :func:`assemble` gives ``data`` back.

    Raises
    ------
    ValueError
        If ``data`` is not a whole number of 8-byte words.
    """
    data = bytes(data)
    if len(data) % WORD:
        raise ValueError(f"a program is a whole number of {WORD}-byte words; this one is "
                         f"{len(data)} bytes")
    lines, offset, faulted = [], 0, False
    while offset < len(data):
        word = data[offset:offset + WORD]
        offset += WORD
        if faulted:
            if word == SYNC_WORD:
                lines.append("sync")
                faulted = False
            else:
                lines.append(_word_line(word, "skipped: the device looks for the next sync"))
            continue
        instruction = Instruction.decode_word(word)
        try:
            mnemonic = Opcode(instruction.opcode).name.lower()
        except ValueError:
            lines.append(_word_line(word, f"illegal opcode 0x{instruction.opcode:02x}: the "
                                          f"device skips words up to the next sync"))
            faulted = True
            continue
        length = instruction.payload_length(geometry)
        size = padded_length(length)
        if offset + size > len(data):
            lines.append(_word_line(word, f"{mnemonic} cut short: it needs {size} payload "
                                          f"bytes, {len(data) - offset} follow"))
            lines += [_word_line(data[i:i + WORD], "payload (cut short)")
                      for i in range(offset, len(data), WORD)]
            break
        payload, padding = data[offset:offset + length], data[offset + length:offset + size]
        instruction = Instruction(instruction.opcode, instruction.flags, instruction.a,
                                  instruction.b, instruction.n, payload)
        problem = malformed(instruction, geometry)
        if problem is not None:
            problem = f"{mnemonic}, malformed: {problem}"
        elif any(padding):
            problem = f"{mnemonic} with nonzero payload padding (the device ignores it)"
        if problem is None:
            lines += _format(instruction, geometry)
        else:
            lines.append(_word_line(word, problem))
            lines += [_word_line(data[i:i + WORD], f"{mnemonic} payload")
                      for i in range(offset, offset + size, WORD)]
        offset += size
    return "".join(line + "\n" for line in lines)
