"""The whole accelerator against the ISA model: random programs, tiled products, performance.

Every test streams a program into the simulated :class:`rtl.accelerator.Accelerator` (one
simulator process feeds the input with random gaps and takes the output with random
backpressure, see :mod:`sim.accelerator_driver`) and compares every response byte with
:class:`sim.golden.accelerator.AcceleratorModel`. The model does not count time, so CYCLES and
the STALL_* counters are masked in READ_COUNTERS packets; MXU_BUSY and INSTRUCTIONS are exact.
"""

import struct

import numpy as np
import pytest
from amaranth.hdl import Fragment

from firmware.isa import (Counter, ErrorCode, Flag, Geometry, Instruction, Opcode, Response, Tag,
                          ppu_config_bytes)
from rtl.accelerator import Accelerator
from rtl.ppu import PostProcessor
from rtl.serial_ppu import SerialPostProcessor
from sim.accelerator_driver import run_accelerator
from sim.golden.accelerator import AcceleratorModel
from sim.golden.mxu import matmul
from sim.golden.ppu import requantize
from sim.programs import random_bytes, random_instructions
from sim.stream import stream_get_n, stream_put_all
from sim.testbench import simulate

I = Instruction
#: Counters the model cannot know: they are compared only against plausibility bounds.
TIMED = (Counter.CYCLES, Counter.STALL_WEIGHTS, Counter.STALL_HAZARD, Counter.STALL_HOST_IN,
         Counter.STALL_HOST_OUT)

#: Small memories, so that random row ranges overlap often (every hazard gets exercised).
GEOMETRIES = {
    "1x1": Geometry(1, 1, ub_depth=8, wm_depth=4, acc_depth=8),
    "2x3": Geometry(2, 3, ub_depth=12, wm_depth=8, acc_depth=12),
    "3x2": Geometry(3, 2, ub_depth=10, wm_depth=6, acc_depth=10),
    "4x4": Geometry(4, 4, ub_depth=16, wm_depth=12, acc_depth=16),
    "8x8": Geometry(8, 8, ub_depth=24, wm_depth=24, acc_depth=24),
    # Tall: a tile loads more slowly than the next instruction word arrives.
    "16x2": Geometry(16, 2, ub_depth=12, wm_depth=40, acc_depth=12),
}


class RecordingModel(AcceleratorModel):
    """The model, noting which of its response packets answer READ_COUNTERS."""
    def __init__(self, geometry):
        super().__init__(geometry)
        self.counter_packets = []
        self._sent = 0

    def run(self, program):
        response = super().run(program)
        self._sent += len(Response.parse(response))
        return response

    def _read_counters(self, ins, out):
        self.counter_packets.append(self._sent + len(out))
        super()._read_counters(ins, out)


def counter_values(packet):
    return list(struct.unpack(f"<{len(Counter)}Q", packet.payload))


def check_against_model(geometry, program, *, idle=0.0, stall=0.0, seed=0, ppu_lanes=None,
                        serial_ppu=False, dut=None):
    """Run ``program`` on the device (with ``ppu_lanes`` or ``serial_ppu``, or ``dut`` if
    given) and the model; assert the same packets; return both.

    Returns ``(packets, model, cycles)``, the device's packets parsed.
    """
    model = RecordingModel(geometry)
    expected = model.run(program)
    assert not model.incomplete
    output, cycles = run_accelerator(program, geometry, response_length=len(expected),
                                     idle=idle, stall=stall, seed=seed, ppu_lanes=ppu_lanes,
                                     serial_ppu=serial_ppu, dut=dut)
    got = Response.parse(output)
    want = Response.parse(expected)
    assert len(got) == len(want), f"{len(got)} packets instead of {len(want)}"
    for number, (packet, reference) in enumerate(zip(got, want)):
        if number in model.counter_packets:
            values, reference_values = counter_values(packet), counter_values(reference)
            elapsed = values[Counter.CYCLES]
            assert elapsed <= cycles
            for counter in TIMED:
                assert values[counter] <= elapsed, (counter, values)
                values[counter] = reference_values[counter] = 0
            assert values == reference_values, f"counters of packet {number}"
        else:
            assert packet == reference, f"packet {number}"
    # Reserved header bytes are zero: the packets re-encode to exactly the bytes sent.
    assert b"".join(packet.encode() for packet in got) == output
    return got, model, cycles


# Random programs ------------------------------------------------------------------------------

def random_error(rng, g, pending):
    """An instruction that fails (or, for an illegal opcode, a burst that ends in SYNC)."""
    R, C = g.rows, g.cols
    choices = [
        lambda: [I(Opcode.MATMUL, flags=8, a=0, b=0, n=1)],                     # MALFORMED
        lambda: [I(Opcode.READ_UB, a=0, n=0)],                                  # n == 0
        lambda: [I(Opcode.READ_ACC, a=g.acc_depth - 1, n=2)],                   # ADDRESS
        lambda: [I(Opcode.WRITE_UB, a=g.ub_depth, n=2, payload=random_bytes(rng, 2 * R))],
        lambda: [I(Opcode.SET_PPU, payload=ppu_config_bytes([0] * C, 1, 32, 0, 0, 0))],
        lambda: [I(Opcode.SET_PPU, payload=ppu_config_bytes([0] * C, 1, 3, 0, 3, 0))],
        lambda: [I(Opcode.LOAD_WEIGHTS, a=g.wm_depth - R + 1)],                 # ADDRESS
        lambda: [I(Opcode.NOP, b=5)],
        lambda: [I(Opcode.SYNC, a=1)],                                          # bad SYNC
        lambda: [I(Opcode.WRITE_WM, flags=1, a=0, n=2, payload=random_bytes(rng, 2 * C))],
        lambda: [I(Opcode.ACTIVATE, flags=R - C + 1, a=0, b=0, n=1)],           # lane
        lambda: [I(Opcode.MATMUL, flags=Flag.SWAP, a=0, b=0, n=1)] if not pending else
                [I(Opcode.LOAD_WEIGHTS, a=0)],                    # NO_WEIGHTS / WEIGHTS_FULL
        lambda: [I(0x13 + int(rng.integers(0, 4))),                             # illegal
                 *[I(int(rng.integers(0, 0x40)), int(rng.integers(0, 256)), n=4)
                   for _ in range(int(rng.integers(0, 3)))],
                 I.sync()],
    ]
    return choices[int(rng.integers(len(choices)))]()


def random_program(rng, g, count, *, errors=0.0, most=6):
    """``count`` random instructions for ``g`` (and a final SYNC), as the byte stream; with
    probability ``errors`` an instruction is replaced by a failing one."""
    instructions, _ = random_instructions(rng, g, count, most=most, errors=errors,
                                          error=random_error)
    return b"".join(instruction.encode() for instruction in instructions + [I.sync()])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", ["1x1", "2x3", "3x2", "4x4"])
def test_random_programs(name, seed):
    # Valid programs in random order, no NOP padding: the device must resolve every hazard.
    # Seeds vary the host: 0 ideal, 1 gaps on the input, 2 backpressure on the output.
    g = GEOMETRIES[name]
    rng = np.random.default_rng([seed, g.rows, g.cols])
    program = random_program(rng, g, 40)
    check_against_model(g, program, idle=[0, 0.4, 0.1][seed], stall=[0, 0, 0.6][seed],
                        seed=seed)


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("name", ["1x1", "2x3", "3x2", "4x4"])
def test_random_programs_with_errors(name, seed):
    # One instruction in six fails, with every error code, and illegal opcodes fault the
    # decoder until a SYNC: the device's packets and error indices must match the model's.
    g = GEOMETRIES[name]
    rng = np.random.default_rng([seed, g.rows, g.cols, 7])
    program = random_program(rng, g, 40, errors=1 / 6)
    packets, _, _ = check_against_model(g, program, idle=0.2 * seed, stall=0.3 * seed,
                                        seed=seed)
    assert any(packet.tag == Tag.STATUS and packet.code != ErrorCode.OK for packet in packets)


@pytest.mark.parametrize("seed, name", [(0, "2x3"), (1, "4x4")])
def test_random_programs_without_timing_registers(name, seed):
    # The iCEBreaker's configuration: no register after the accumulator's block RAM, so its
    # writes are seen a cycle sooner (write_latency 2), no PPU operand stage (latency 6), and
    # rows go from the accumulator to the PPU unregistered; the controller waits for either.
    g = GEOMETRIES[name]
    rng = np.random.default_rng([seed, g.rows, g.cols, 3])
    program = random_program(rng, g, 40, errors=0.1)
    check_against_model(g, program, idle=0.2 * seed, stall=0.3 * seed, seed=seed,
                        dut=Accelerator(g, timing_registers=False))


@pytest.mark.parametrize("seed, name", [(0, "8x8"), (1, "8x8"), (2, "16x2")])
def test_random_programs_large(name, seed):
    g = GEOMETRIES[name]
    rng = np.random.default_rng([seed, g.rows, g.cols])
    program = random_program(rng, g, 24, errors=0.1 * seed, most=10)
    check_against_model(g, program, idle=0.2 * seed, stall=0.3 * seed, seed=seed)


@pytest.mark.parametrize("name, lanes, seed, idle, stall", [
    ("4x4", 1, 1, 0.0, 0.0),
    ("4x4", 3, 2, 0.3, 0.0),        # 3 lanes for 4 columns: two idle in the second pass
    ("3x2", 1, 4, 0.1, 0.5),
])
def test_random_programs_ppu_lanes(name, lanes, seed, idle, stall):
    # A time-shared PPU takes a row only every ceil(C / lanes) cycles, and ACTIVATE's stream
    # from the accumulator read port waits for it. (The seeds give programs with 19 to 24
    # ACTIVATE rows.)
    g = GEOMETRIES[name]
    rng = np.random.default_rng([seed, g.rows, g.cols, lanes])
    program = random_program(rng, g, 30, errors=0.1, most=8)
    check_against_model(g, program, idle=idle, stall=stall, seed=seed, ppu_lanes=lanes)


@pytest.mark.parametrize("name, seed, idle, stall, timing_registers", [
    ("1x1", 0, 0.0, 0.0, True),
    ("4x4", 3, 0.3, 0.0, True),
    ("3x2", 5, 0.1, 0.5, False),     # the iCEBreaker's configuration, but smaller
])
def test_random_programs_serial_ppu(name, seed, idle, stall, timing_registers):
    # The bit-serial PPU takes C * max(67, 44 + shift) + 1 cycles a row, and holds its output row
    # until the unified buffer's write takes it: ACTIVATE's stream waits for it, and nothing
    # changes in what programs compute.
    g = GEOMETRIES[name]
    rng = np.random.default_rng([seed, g.rows, g.cols, 5])
    instructions, _ = random_instructions(rng, g, 30, most=8, errors=0.1, error=random_error)
    assert sum(ins.n for ins in instructions if ins.opcode == Opcode.ACTIVATE) >= 14
    program = b"".join(ins.encode() for ins in instructions + [I.sync()])
    check_against_model(g, program, idle=idle, stall=stall, seed=seed,
                        dut=Accelerator(g, timing_registers=timing_registers, serial_ppu=True))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3, 40))
@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_random_programs_exhaustive(name, seed):
    g = GEOMETRIES[name]
    rng = np.random.default_rng([seed, g.rows, g.cols, 99])
    program = random_program(rng, g, 60, errors=0.1 * (seed % 3))
    check_against_model(g, program, idle=0.15 * (seed % 4), stall=0.2 * (seed % 5), seed=seed)


# Tiled matrix products ------------------------------------------------------------------------

def tiled_layer(a, b, g, config):
    """A program for one layer: ``requantize(a @ b)`` through the device, and its result.

    ``a`` (M x K, int8) goes into the UB as K/R column blocks of M rows; ``b`` (K x N, int8)
    into the WM as R x C tiles. For every N tile, every K tile's MATMUL adds into the same
    accumulator rows (the first overwrites), with the next tile's LOAD_WEIGHTS issued while
    the current MATMUL streams. ACTIVATE writes the outputs into fresh UB rows, C bytes per
    N tile at lane 0, and READ_UB / READ_ACC read them back.
    """
    R, C = g.rows, g.cols
    m_, k_ = a.shape
    n_ = b.shape[1]
    kt, nt = -(-k_ // R), -(-n_ // C)
    a_pad = np.zeros((m_, kt * R), np.int8)
    a_pad[:, :k_] = a
    b_pad = np.zeros((kt * R, nt * C), np.int8)
    b_pad[:k_, :n_] = b
    ub_out = kt * m_
    program = [I(Opcode.SET_PPU, payload=config)]
    for k in range(kt):
        program.append(I(Opcode.WRITE_UB, a=k * m_, n=m_, payload=a_pad[:, k * R:(k + 1) * R]
                         .tobytes()))
    order = [(j, k) for j in range(nt) for k in range(kt)]
    for t, (j, k) in enumerate(order):
        program.append(I(Opcode.WRITE_WM, a=t * R, n=R,
                         payload=b_pad[k * R:(k + 1) * R, j * C:(j + 1) * C].tobytes()))
    program.append(I(Opcode.LOAD_WEIGHTS, flags=Flag.SIGNED, a=0))
    for t, (j, k) in enumerate(order):
        flags = Flag.SIGNED | Flag.SWAP | (Flag.ACCUMULATE if k else 0)
        program.append(I(Opcode.MATMUL, flags=flags, a=k * m_, b=j * m_, n=m_))
        if t + 1 < len(order):
            program.append(I(Opcode.LOAD_WEIGHTS, flags=Flag.SIGNED, a=(t + 1) * R))
    for j in range(nt):
        program.append(I(Opcode.ACTIVATE, a=j * m_, b=ub_out + j * m_, n=m_))
    program += [I(Opcode.READ_ACC, a=0, n=nt * m_), I(Opcode.READ_UB, a=ub_out, n=nt * m_),
                I(Opcode.READ_COUNTERS), I.sync()]
    depths = dict(ub=ub_out + nt * m_, wm=len(order) * R, acc=nt * m_)
    return b"".join(instruction.encode() for instruction in program), depths


@pytest.mark.parametrize("rows, cols, m, k, n, lanes", [
    (1, 1, 3, 2, 2, None),
    (2, 3, 5, 5, 7, None),
    (4, 4, 9, 8, 6, None),
    (3, 2, 4, 7, 5, None),
    (8, 8, 6, 12, 10, None),
    # A time-shared PPU, with lanes that do not divide C.
    (3, 3, 7, 5, 8, 2),
])
def test_tiled_layer(rows, cols, m, k, n, lanes):
    rng = np.random.default_rng([rows, cols, m, k, n])
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    bias = rng.integers(-5000, 5000, cols)
    config = ppu_config_bytes(bias, 1 << 30, 6, -3, 1, 0)
    probe = Geometry(rows, cols)
    program, depths = tiled_layer(a, b, probe, config)
    g = Geometry(rows, cols, ub_depth=depths["ub"], wm_depth=max(depths["wm"], rows),
                 acc_depth=depths["acc"])
    packets, _, _ = check_against_model(g, program, stall=0.2, seed=rows, ppu_lanes=lanes)

    # Independently of the model: the accumulators hold the product, tile by tile, and the
    # UB the requantized layer output.
    nt = -(-n // cols)
    product = matmul(a, b)
    acc = np.frombuffer(packets[0].payload, "<i4").reshape(nt, m, cols)
    acc = np.concatenate(list(acc), axis=1)[:, :n]
    assert np.array_equal(acc, product)
    counters = counter_values(packets[2])
    assert counters[Counter.MXU_BUSY] == m * nt * -(-k // rows)
    if cols > rows:
        # C bytes do not fit in a UB row: every ACTIVATE is MALFORMED, the first one reported.
        kt = -(-k // rows)
        first = 1 + kt + 3 * kt * nt        # SET_PPU, WRITE_UBs, WRITE_WMs, LOADs, MATMULs
        assert packets[3] == Response(Tag.STATUS, ErrorCode.MALFORMED, first)
        return
    out = np.frombuffer(packets[1].payload, np.int8).reshape(nt, m, rows)[:, :, :cols]
    out = np.concatenate(list(out), axis=1)[:, :n]
    bias_full = np.tile(bias, nt)[:n]
    assert np.array_equal(out, requantize(product, bias_full, 1 << 30, 6, -3, 1, 0))
    assert packets[3] == Response(Tag.STATUS, ErrorCode.OK, 0)


# Performance ----------------------------------------------------------------------------------

def utilization_program(m, k, n, seed=1):
    """An 8 x 8 tiled product with every operand on chip, bracketed by counter reads."""
    R = C = 8
    kt, nt = k // R, n // C
    g = Geometry(R, C, ub_depth=m * kt, wm_depth=kt * nt * R, acc_depth=m * nt)
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k), dtype=np.int8)
    b = rng.integers(-128, 128, (k, n), dtype=np.int8)
    program = [I(Opcode.WRITE_UB, a=t * m, n=m, payload=a[:, t * R:(t + 1) * R].tobytes())
               for t in range(kt)]
    order = [(j, t) for j in range(nt) for t in range(kt)]
    program += [I(Opcode.WRITE_WM, a=i * R, n=R,
                  payload=b[t * R:(t + 1) * R, j * C:(j + 1) * C].tobytes())
                for i, (j, t) in enumerate(order)]
    # The first tile is loaded before the measurement starts, as between two layers.
    program += [I(Opcode.LOAD_WEIGHTS, flags=Flag.SIGNED, a=0),
                I(Opcode.READ_COUNTERS, flags=Flag.CLEAR)]
    for i, (j, t) in enumerate(order):
        flags = Flag.SIGNED | Flag.SWAP | (Flag.ACCUMULATE if t else 0)
        program.append(I(Opcode.MATMUL, flags=flags, a=t * m, b=j * m, n=m))
        if i + 1 < len(order):
            program.append(I(Opcode.LOAD_WEIGHTS, flags=Flag.SIGNED, a=(i + 1) * R))
    program += [I.sync(), I(Opcode.READ_COUNTERS), I(Opcode.READ_ACC, a=m - 2, n=4)]
    return g, b"".join(instruction.encode() for instruction in program), len(order)


@pytest.mark.parametrize("m, k, n", [(64, 16, 32)])
def test_utilization_8x8(m, k, n):
    # M >= 2R + C - 1 rows per tile: the next tile loads while the current one streams, and
    # MATMULs follow each other without a bubble. CYCLES counts from the CLEAR (decoded just
    # before the first MATMUL) to the READ_COUNTERS after the SYNC.
    g, program, tiles = utilization_program(m, k, n)
    packets, _, _ = check_against_model(g, program)
    counters = counter_values(packets[2])
    busy, cycles = counters[Counter.MXU_BUSY], counters[Counter.CYCLES]
    assert busy == tiles * m
    assert counters[Counter.STALL_WEIGHTS] == 0
    utilization = busy / cycles
    print(f"8x8 utilization: {busy} / {cycles} = {utilization:.3f}")
    assert utilization >= 0.9
    # The only overhead is the start (word fetch and verdict, UB read: 3 cycles with the
    # block RAM's output register) and the drain (MXU latency, write-back, SYNC, the STATUS and
    # the next word): about 47 cycles, whatever the tile count.
    assert cycles - busy <= 2 * (g.rows + g.cols) + 15


@pytest.mark.slow
def test_utilization_8x8_shortest_tiles():
    # M = 2R + C - 1 exactly: still no bubble between tiles.
    g, program, tiles = utilization_program(23, 32, 32)
    packets, _, _ = check_against_model(g, program)
    counters = counter_values(packets[2])
    assert counters[Counter.MXU_BUSY] == tiles * 23
    assert counters[Counter.CYCLES] - counters[Counter.MXU_BUSY] <= 2 * (8 + 8) + 10


# The component itself ------------------------------------------------------------------------

def test_ports_are_byte_streams_and_idle():
    dut = Accelerator(Geometry(2, 3, 8, 4, 8))
    assert set(dict(dut.signature.members)) == {"i", "o", "idle"}
    assert len(dut.i.payload) == 8 and len(dut.o.payload) == 8
    assert dut.geometry == Geometry(2, 3, 8, 4, 8)
    Fragment.get(dut, None)


@pytest.mark.parametrize("geometry", [(8, 8), None, "8x8"])
def test_bad_geometry(geometry):
    with pytest.raises(TypeError, match="geometry must be a firmware.isa.Geometry"):
        Accelerator(geometry)


@pytest.mark.parametrize("lanes, built", [(None, 3), (2, 2)])
def test_ppu_lanes(lanes, built):
    dut = Accelerator(Geometry(2, 3, 8, 4, 8), ppu_lanes=lanes)
    assert dut.ppu_lanes == built
    ppu = Fragment.get(dut, None).find_subfragment("ppu").origins[0]
    assert (ppu.cols, ppu.lanes) == (3, built)


@pytest.mark.parametrize("lanes, error, message", [
    (0, ValueError, "PPU lane count must be between 1 and 3, not 0"),
    (4, ValueError, "PPU lane count must be between 1 and 3, not 4"),
    (1.0, TypeError, "PPU lane count must be an integer, not 1.0"),
    (True, TypeError, "PPU lane count must be an integer"),
])
def test_bad_ppu_lanes(lanes, error, message):
    with pytest.raises(error, match=message):
        Accelerator(Geometry(2, 3, 8, 4, 8), ppu_lanes=lanes)


def test_serial_ppu():
    dut = Accelerator(Geometry(2, 3, 8, 4, 8), serial_ppu=True)
    assert dut.serial_ppu and dut.ppu_lanes is None
    ppu = Fragment.get(dut, None).find_subfragment("ppu").origins[0]
    assert isinstance(ppu, SerialPostProcessor) and ppu.cols == 3
    dut = Accelerator(Geometry(2, 3, 8, 4, 8))
    assert not dut.serial_ppu
    assert isinstance(Fragment.get(dut, None).find_subfragment("ppu").origins[0], PostProcessor)


@pytest.mark.parametrize("options, error, message", [
    ({"serial_ppu": 1}, TypeError, "serial_ppu must be a bool, not 1"),
    ({"serial_ppu": True, "ppu_lanes": 1}, ValueError,
     r"ppu_lanes must be None with serial_ppu \(the serial PPU has no lanes\), not 1"),
])
def test_bad_serial_ppu(options, error, message):
    with pytest.raises(error, match=message):
        Accelerator(Geometry(2, 3, 8, 4, 8), **options)


def test_timing_registers():
    for register in (True, False):
        dut = Accelerator(Geometry(2, 3, 8, 4, 8), timing_registers=register)
        fragment = Fragment.get(dut, None)
        acc = fragment.find_subfragment("accumulator").origins[0]
        ppu = fragment.find_subfragment("ppu").origins[0]
        controller = fragment.find_subfragment("controller")
        act = controller.find_subfragment("activate").origins[0]
        sender = controller.find_subfragment("sender").origins[0]
        assert acc.read_register == ppu.operand_stage == dut.timing_registers == register
        assert act.row_register == register
        assert controller.origins[0].range_register == register
        for memory in ("unified_buffer", "weight_memory", "accumulator"):
            assert fragment.find_subfragment(memory).origins[0].read_buffer == register
            assert fragment.find_subfragment(memory).origins[0].output_register == register
        assert sender.row_register                  # in every build
        assert ppu.latency == (7 if register else 6)
    with pytest.raises(TypeError, match="timing_registers must be a bool, not 'no'"):
        Accelerator(Geometry(2, 3, 8, 4, 8), timing_registers="no")


@pytest.mark.parametrize("timing_registers, range_register, expected", [
    (False, None, False), (True, None, True), (False, True, True), (True, False, False)])
def test_range_register(timing_registers, range_register, expected):
    # The scoreboard's range registers follow timing_registers unless asked for on their own
    # (the iCEBreaker has room for them, not for the other timing registers).
    dut = Accelerator(Geometry(2, 3, 8, 4, 8), timing_registers=timing_registers,
                      range_register=range_register)
    controller = Fragment.get(dut, None).find_subfragment("controller").origins[0]
    assert dut.range_register == controller.range_register == expected


def test_bad_range_register_option():
    with pytest.raises(TypeError, match="range_register must be a bool or None, not 1"):
        Accelerator(Geometry(2, 3, 8, 4, 8), range_register=1)


@pytest.mark.parametrize("options, error, message", [
    ({"split_carry": 1}, TypeError, "split_carry must be a bool, not 1"),
    ({"overlap_register": "yes"}, TypeError, "overlap_register must be a bool, not 'yes'"),
    ({"split_carry": True}, ValueError,
     r"split_carry needs timing_registers=False \(the accumulator's read register and the "
     r"split carry would each add a cycle of write latency\)"),
])
def test_bad_path_options(options, error, message):
    with pytest.raises(error, match=message):
        Accelerator(Geometry(2, 3, 8, 4, 8), **options)


def test_path_options_reach_their_units():
    dut = Accelerator(Geometry(2, 3, 8, 4, 8), timing_registers=False, split_carry=True,
                      overlap_register=True)
    assert dut.split_carry and dut.overlap_register
    fragment = Fragment.get(dut, None)
    acc = fragment.find_subfragment("accumulator").origins[0]
    controller = fragment.find_subfragment("controller").origins[0]
    assert acc.split_carry and acc.write_latency == 3
    assert controller.overlap_register
    dut = Accelerator(Geometry(2, 3, 8, 4, 8))
    fragment = Fragment.get(dut, None)
    assert not fragment.find_subfragment("accumulator").origins[0].split_carry
    assert not fragment.find_subfragment("controller").origins[0].overlap_register


@pytest.mark.parametrize("seed, options", [
    (7, {}),
    (8, {"split_carry": True}),
    (9, {"overlap_register": True}),
    (10, {"split_carry": True, "overlap_register": True}),
], ids=["range_register", "split_carry", "overlap_register", "icebreaker"])
def test_random_programs_smallest_fpga(seed, options):
    # The smallest FPGA's configurations: no timing registers but the range registers, with
    # the serial PPU, and the options that shorten its paths, against the model.
    g = Geometry(2, 2, 16, 8, 16)
    rng = np.random.default_rng([seed, 2, 2])
    program = random_program(rng, g, 24)
    check_against_model(g, program, seed=seed, idle=0.1 * (seed - 7), stall=0.1 * (seed - 7),
                        dut=Accelerator(g, timing_registers=False, range_register=True,
                                        serial_ppu=True, **options))


def test_quiet_end_without_response_length():
    # The driver can also stop on its own once a program ending in SYNC has answered.
    g = GEOMETRIES["2x3"]
    program = I(Opcode.READ_UB, a=0, n=2).encode() + I.sync().encode()
    output, cycles = run_accelerator(program, g, quiet=40)
    assert output == AcceleratorModel(g).run(program)
    assert 0 < cycles < 100


def test_hang_fails_quickly():
    # A program whose answer never comes (the host expects more bytes than it will get) must
    # end in a TimeoutError that says how far the device got.
    g = GEOMETRIES["1x1"]
    with pytest.raises(TimeoutError, match="took 8 of 8 program bytes, sent 8 of 9"):
        run_accelerator(I.sync().encode(), g, response_length=9, max_cycles=300)


def test_idle_means_nothing_more_will_come():
    # idle is high after reset, low from the first complete word of a MATMUL until its
    # results are written, low while a READ_ACC's bytes wait for the host, and high again
    # once the host has taken everything.
    g = Geometry(2, 2, 8, 4, 8)
    dut = Accelerator(g)
    rows = bytes(range(4))
    program = b"".join(i.encode() for i in [
        Instruction(Opcode.WRITE_UB, a=0, n=2, payload=rows),
        Instruction(Opcode.WRITE_WM, a=0, n=2, payload=rows),
        Instruction(Opcode.LOAD_WEIGHTS),
        Instruction(Opcode.MATMUL, flags=Flag.SWAP, a=0, b=0, n=2),
        Instruction(Opcode.READ_ACC, a=0, n=2)])
    expected = AcceleratorModel(g).run(program)
    trace = []

    async def host(ctx):
        assert ctx.get(dut.idle)
        await stream_put_all(ctx, dut.i, program)
        await ctx.tick().repeat(40)                 # the output waits: not idle
        assert not ctx.get(dut.idle)
        assert bytes(await stream_get_n(ctx, dut.o, len(expected))) == expected
        await ctx.tick().repeat(3)
        assert ctx.get(dut.idle)

    async def watch(ctx):
        async for _, _, idle in ctx.tick().sample(dut.idle):
            trace.append(idle)

    simulate(dut, [host], [watch], deadline=1e-3)
    assert 0 in trace and trace[-1] == 1