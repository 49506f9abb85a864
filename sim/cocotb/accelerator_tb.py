"""cocotb tests of the whole accelerator's Verilog, ``puce_accelerator``, against the ISA model.

The design is :func:`rtl.verilog.accelerator_verilog` for one :class:`firmware.isa.Geometry`;
its ports are two byte streams, ``i__valid``/``i__ready``/``i__payload`` (program in) and
``o__valid``/``o__ready``/``o__payload`` (responses out), next to ``clk`` and ``rst``.

Each test feeds a program's bytes into ``i`` with random idle cycles, takes bytes from ``o``
with random backpressure, and stops once as many response bytes have arrived as
:class:`sim.golden.accelerator.AcceleratorModel` produces for the program; then no further byte
may appear for :data:`QUIET` cycles. The bytes must equal the model's exactly (the programs
hold no READ_COUNTERS, so nothing needs masking). A payload byte that changes, or a valid that
drops, while the host refuses it also fails; every test runs under
:func:`cocotb.triggers.with_timeout`, so a hang fails with how far the streams got.

Settings (environment variables):

``PUCE_GEOMETRY``
    ``rows,cols,ub_depth,wm_depth,acc_depth`` the Verilog was built for (default
    ``2,3,32,16,16``).
``PUCE_SEED``
    Seed of every random choice (default 1).
"""

import os
import random
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, SimTimeoutError, with_timeout

from firmware.compiler import compile_matmul
from firmware.isa import (ErrorCode, Flag, Geometry, Instruction, Opcode, Response, Tag,
                          ppu_config_bytes)
from sim import programs
from sim.golden.accelerator import AcceleratorModel

I = Instruction
CLOCK_NS = 10
#: Cycles after the last expected byte in which no further byte may come out.
QUIET = 64


def geometry_from_env():
    text = os.environ.get("PUCE_GEOMETRY", "2,3,32,16,16")
    rows, cols, ub, wm, acc = (int(v) for v in text.split(","))
    return Geometry(rows, cols, ub_depth=ub, wm_depth=wm, acc_depth=acc)


GEOMETRY = geometry_from_env()
SEED = int(os.environ.get("PUCE_SEED", "1"))


# Programs ------------------------------------------------------------------------------------

def random_instructions(rng, g, count, *, most=4):
    """Random valid instructions without READ_COUNTERS (its timed counters would need
    masking); ``(instructions, pending)`` as :func:`sim.programs.random_instructions`."""
    return programs.random_instructions(rng, g, count, most=most, counters=False)


def clearing_prologue(g):
    """Instructions that bring a device's memories to the state of a fresh model.

    Reset clears registers but not memories, and the cocotb tests of one simulation share the
    device: zero the unified buffer and weight memory, overwrite every accumulator row with a
    product of zero weights, restore the reset PPU configuration, and SYNC (answer STATUS OK).
    """
    R, C = g.rows, g.cols
    out = [I(Opcode.WRITE_UB, a=0, n=g.ub_depth, payload=bytes(g.ub_depth * R)),
           I(Opcode.WRITE_WM, a=0, n=g.wm_depth, payload=bytes(g.wm_depth * C)),
           I(Opcode.LOAD_WEIGHTS, a=0)]
    swap = Flag.SWAP
    for row in range(0, g.acc_depth, g.ub_depth):
        n = min(g.ub_depth, g.acc_depth - row)
        out.append(I(Opcode.MATMUL, flags=swap, a=0, b=row, n=n))
        swap = 0
    out.append(I(Opcode.SET_PPU, payload=ppu_config_bytes([0] * C, 0, 0, 0, 0, 127)))
    out.append(I.sync())
    return out


def encode(instructions):
    return b"".join(instruction.encode() for instruction in instructions)


# The host --------------------------------------------------------------------------------------

def start_clock(dut):
    """Once per cocotb test (the clock task ends with the test)."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start(start_high=False)


async def reset(dut):
    """Put both streams idle and reset the device for two cycles (the clock is running)."""
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def host(dut, program, expected, *, idle, stall, rng, name, progress):
    """Feed ``program``, collect ``len(expected)`` response bytes, then check for silence.

    Inputs change on the falling edge; valid/ready are sampled in the read-only phase before
    the rising edge, when the transfer happens. Returns the bytes received.
    """
    i_valid, i_ready, i_payload = dut.i__valid, dut.i__ready, dut.i__payload
    o_valid, o_ready, o_payload = dut.o__valid, dut.o__ready, dut.o__payload
    falling, read_only = FallingEdge(dut.clk), ReadOnly()
    position = 0          # next program byte
    offering = False      # i.valid is up with program[position]
    valid_high = 0        # value driven on i.valid
    ready = None          # value driven on o.ready
    held = None           # output byte the device must hold (valid, not taken)
    received = bytearray()
    cycle = 0
    start = time.perf_counter()
    while len(received) < len(expected) or position < len(program):
        await falling
        if not offering:
            if position < len(program) and not (idle and rng.random() < idle):
                i_payload.value = program[position]
                if not valid_high:
                    i_valid.value = valid_high = 1
                offering = True
            elif valid_high:
                i_valid.value = valid_high = 0
        taking = not (stall and rng.random() < stall)
        if taking != ready:
            o_ready.value = ready = taking

        await read_only
        if offering and i_ready.value:
            position += 1
            offering = False
        if o_valid.value:
            byte = o_payload.value.to_unsigned()
            if held is not None:
                assert byte == held, f"{name}: output byte {len(received)} changed while " \
                                     f"stalled (cycle {cycle})"
            if taking:
                index = len(received)
                assert index < len(expected), \
                    f"{name}: extra response byte 0x{byte:02x} at cycle {cycle}"
                received.append(byte)
                held = None
            else:
                held = byte
        else:
            assert held is None, f"{name}: o.valid dropped while stalled at cycle {cycle}"
        cycle += 1
        progress.update(cycle=cycle, taken=(position, len(program)),
                        received=(len(received), len(expected)))
    elapsed = time.perf_counter() - start

    # No further byte may come out.
    await falling
    i_valid.value = 0
    o_ready.value = 1
    for _ in range(QUIET):
        await read_only
        assert not o_valid.value, \
            f"{name}: extra response byte 0x{o_payload.value.to_unsigned():02x} after the " \
            f"{len(expected)} expected"
        await falling
    dut._log.info("%s: %d program bytes, %d response bytes in %d cycles (idle %.2f, stall "
                  "%.2f), %.0f cycles/s", name, len(program), len(received), cycle, idle, stall,
                  cycle / elapsed if elapsed else 0)
    return bytes(received)


def _first_difference(got, want):
    """Where two response streams first differ, by packet, for a readable failure."""
    try:
        got_packets, want_packets = Response.parse(got), Response.parse(want)
    except ValueError as error:
        got_packets, want_packets = None, str(error)
    if got_packets is not None:
        for number, (packet, reference) in enumerate(zip(got_packets, want_packets)):
            if packet != reference:
                return f"packet {number}: got {packet}, expected {reference}"
    offset = next(k for k, (x, y) in enumerate(zip(got, want)) if x != y)
    return f"byte {offset}: got 0x{got[offset]:02x}, expected 0x{want[offset]:02x}"


async def run_program(dut, program, *, idle, stall, seed, name):
    """Run ``program`` on a freshly reset device; assert the model's exact response bytes.

    The program runs after :func:`clearing_prologue` (whose STATUS is checked too); the
    clock must be running (:func:`start_clock`). Returns the program's own response bytes.
    """
    prologue = encode(clearing_prologue(GEOMETRY))
    model = AcceleratorModel(GEOMETRY)
    head = model.run(prologue)
    assert head == Response(Tag.STATUS, ErrorCode.OK).encode(), head
    skip = len(head)
    expected = head + model.run(program)
    program = prologue + program
    assert not model.incomplete, f"{name}: the program ends inside an instruction"
    await reset(dut)
    progress = {}
    slowdown = 1 / max(0.05, (1 - idle) * (1 - stall))
    limit = int((8 * len(program) + 4 * len(expected)) * slowdown + 2000) * CLOCK_NS
    try:
        got = await with_timeout(
            host(dut, program, expected, idle=idle, stall=stall, rng=random.Random(seed),
                 name=name, progress=progress), limit, "ns")
    except SimTimeoutError:
        def of(key):
            return "{}/{}".format(*progress.get(key, (0, "?")))
        raise AssertionError(f"{name}: timed out after {limit} ns ({progress.get('cycle', 0)} "
                             f"cycles): {of('taken')} program bytes taken, {of('received')} "
                             f"response bytes received") from None
    assert got == expected, f"{name}: response differs from the model at " \
                            f"{_first_difference(got, expected)}"
    return got[skip:]


# Tests ---------------------------------------------------------------------------------------

@cocotb.test(timeout_time=2_000_000, timeout_unit="ns")
async def compiled_matmul(dut):
    """A compiled ragged product (9 x 13 @ 13 x 7, random int8/uint8): model and numpy."""
    rng = np.random.default_rng([SEED, 1])
    a_signed, b_signed = (bool(v) for v in rng.integers(0, 2, 2))
    a = rng.integers(-128, 128, (9, 13)) if a_signed else rng.integers(0, 256, (9, 13))
    b = rng.integers(-128, 128, (13, 7)) if b_signed else rng.integers(0, 256, (13, 7))
    a = a.astype(np.int8 if a_signed else np.uint8)
    b = b.astype(np.int8 if b_signed else np.uint8)
    compiled = compile_matmul(a, b, GEOMETRY)
    start_clock(dut)
    got = await run_program(dut, compiled.encode(), idle=0.1, stall=0.2, seed=SEED,
                            name="compiled_matmul")
    result = compiled.collect(got)
    np.testing.assert_array_equal(result, a.astype(np.int64) @ b.astype(np.int64))


@cocotb.test(timeout_time=2_000_000, timeout_unit="ns")
async def random_programs(dut):
    """Random valid programs (hazards on small memories), each ending in SYNC."""
    start_clock(dut)
    for number, (idle, stall) in enumerate([(0.0, 0.0), (0.3, 0.4)]):
        rng = np.random.default_rng([SEED, 2, number])
        instructions, _ = random_instructions(rng, GEOMETRY, 24)
        await run_program(dut, encode(instructions + [I.sync()]), idle=idle, stall=stall,
                          seed=SEED + number, name=f"random_programs[{number}]")


@cocotb.test(timeout_time=2_000_000, timeout_unit="ns")
async def errors_and_resync(dut):
    """An ADDRESS error reported by SYNC, then an illegal opcode whose following words are
    skipped until SYNC resynchronises (ERROR at once, STATUS at the SYNC), then normal work."""
    g = GEOMETRY
    rng = np.random.default_rng([SEED, 3])
    before, _ = random_instructions(rng, g, 6)
    after, _ = random_instructions(rng, g, 6)
    program = before + [
        I(Opcode.READ_ACC, a=g.acc_depth - 1, n=2),                     # ADDRESS
        I(Opcode.WRITE_UB, a=0, n=1, payload=programs.random_bytes(rng, g.rows)),
        I.sync(),                                                       # STATUS ADDRESS
        I(Opcode.READ_UB, a=0, n=1),
        I(0x13),                                                        # ILLEGAL_OPCODE
        I(Opcode.WRITE_UB, a=0, n=4),     # skipped words: no payload taken, nothing run
        I(Opcode.READ_UB, a=0, n=2),
        I(Opcode.SYNC, a=1),              # not the exact SYNC word: still skipped
        I.sync(),                                                       # STATUS ILLEGAL
        I(Opcode.READ_UB, a=0, n=2),
        *after,
        I.sync(),
    ]
    program = encode(program)
    packets = Response.parse(AcceleratorModel(g).run(program))
    codes = [(p.tag, p.code) for p in packets if p.tag != Tag.DATA]
    assert (Tag.STATUS, ErrorCode.ADDRESS) in codes, codes           # the program is what we
    assert (Tag.ERROR, ErrorCode.ILLEGAL_OPCODE) in codes, codes     # meant it to be
    assert (Tag.STATUS, ErrorCode.ILLEGAL_OPCODE) in codes, codes
    start_clock(dut)
    await run_program(dut, program, idle=0.2, stall=0.3, seed=SEED, name="errors_and_resync")
