import numpy as np
import pytest

from firmware.compiler import compile_matmul
from firmware.cycle_model import TOLERANCE, TOLERANCE_CYCLES, estimate_cycles
from firmware.demo import train_digits
from firmware.isa import Flag, Geometry, Instruction, Opcode, ppu_config_bytes
from firmware.nn import compile_dense
from firmware.runtime import Device

GEOMETRY = Geometry()


@pytest.fixture(scope="module")
def device():
    with Device("verilator", GEOMETRY) as device:
        yield device


def on_chip_program(rng, rows, tiles):
    """Operands written once, then many MATMULs: a compute-bound program."""
    g = GEOMETRY
    program = [Instruction(Opcode.WRITE_UB, a=0, n=rows,
                           payload=rng.integers(0, 256, rows * g.rows, np.uint8).tobytes())]
    for slot in range(4):
        program.append(Instruction(Opcode.WRITE_WM, a=slot * g.rows, n=g.rows, payload=rng.integers(
            0, 256, g.rows * g.cols, np.uint8).tobytes()))
    for tile in range(tiles):
        program.append(Instruction(Opcode.LOAD_WEIGHTS, Flag.SIGNED, a=(tile % 4) * g.rows))
        program.append(Instruction(Opcode.MATMUL, Flag.SIGNED | Flag.SWAP |
                                   (Flag.ACCUMULATE if tile else Flag(0)), a=0, b=0, n=rows))
    program += [Instruction(Opcode.READ_ACC, a=0, n=4), Instruction.sync()]
    return program


def activate_program(rng, rows, repeats):
    """One MATMUL, then ``repeats`` ACTIVATEs of its ``rows`` rows: bound by the PPU when it
    has few lanes."""
    g = GEOMETRY
    program = [
        Instruction(Opcode.WRITE_UB, a=0, n=rows,
                    payload=rng.integers(0, 256, rows * g.rows, np.uint8).tobytes()),
        Instruction(Opcode.WRITE_WM, a=0, n=g.rows,
                    payload=rng.integers(0, 256, g.rows * g.cols, np.uint8).tobytes()),
        Instruction(Opcode.SET_PPU, payload=ppu_config_bytes(
            rng.integers(-1000, 1000, g.cols), 1 << 30, 8, 0, 1, 0)),
        Instruction(Opcode.LOAD_WEIGHTS, Flag.SIGNED, a=0),
        Instruction(Opcode.MATMUL, Flag.SIGNED | Flag.SWAP, a=0, b=0, n=rows),
    ]
    program += [Instruction(Opcode.ACTIVATE, a=0, b=rows, n=rows) for _ in range(repeats)]
    return program + [Instruction(Opcode.READ_UB, a=rows, n=2), Instruction.sync()]


def check(device, instructions, ppu_lanes=None):
    device.run(b"".join(i.encode() for i in instructions))
    measured = device.last_stats["cycles"]
    estimate = estimate_cycles(instructions, GEOMETRY, ppu_lanes)
    assert abs(estimate.cycles - measured) <= max(TOLERANCE * measured, TOLERANCE_CYCLES), \
        f"model {estimate.cycles} cycles, RTL {measured} ({estimate.bound}-bound)"
    assert estimate.mxu_busy == device.last_stats["mxu_busy_cycles"]
    return estimate


@pytest.mark.parametrize("m, k, n, bound", [
    (1, 1, 1, None),
    (64, 64, 64, "host output"),
    (256, 64, 8, "host input"),
    (100, 30, 70, "host output"),
    (16, 16, 200, "host output"),
])
def test_compiled_matmuls(device, m, k, n, bound):
    rng = np.random.default_rng(m + k + n)
    a = rng.integers(-128, 128, (m, k), np.int8)
    b = rng.integers(-128, 128, (k, n), np.int8)
    estimate = check(device, compile_matmul(a, b, GEOMETRY).instructions)
    if bound:
        assert estimate.bound == bound


@pytest.mark.parametrize("rows, tiles", [(8, 40), (16, 40), (23, 40), (256, 16)])
def test_compute_bound_programs(device, rows, tiles):
    # Short tiles are limited by the weight double-buffer ((rows + 2R + C - 2) / 2 cycles a
    # tile), long ones by the rows themselves.
    estimate = check(device, on_chip_program(np.random.default_rng(rows), rows, tiles))
    if rows >= 2 * GEOMETRY.rows + GEOMETRY.cols:
        assert estimate.bound == "compute"


def test_layers(device):
    model = train_digits()
    x = model.x_test[:40]
    for layer in model.layers:
        program = compile_dense(x, layer, GEOMETRY)
        check(device, program.instructions)
        x = layer.reference(x)


def test_activate_bound(device):
    check(device, activate_program(np.random.default_rng(1), 32, 4))


def test_time_shared_ppu():
    # With one PPU lane each ACTIVATE row takes C cycles: the model follows the RTL (the
    # Amaranth backend, which can build the accelerator with ppu_lanes; about 1,600 cycles),
    # where the full-width estimate would be less than half the time.
    program = activate_program(np.random.default_rng(1), 32, 4)
    with Device("amaranth", GEOMETRY, ppu_lanes=1) as device:
        check(device, program, ppu_lanes=1)
        assert estimate_cycles(program, GEOMETRY).cycles < 0.5 * device.last_stats["cycles"]


def test_bad_geometry():
    with pytest.raises(TypeError, match="geometry must be a Geometry"):
        estimate_cycles([], (8, 8))


@pytest.mark.parametrize("lanes, error, message", [
    (0, ValueError, "ppu_lanes must be between 1 and 8, not 0"),
    (9, ValueError, "ppu_lanes must be between 1 and 8, not 9"),
    (2.0, TypeError, "ppu_lanes must be an integer or None, not 2.0"),
])
def test_bad_ppu_lanes(lanes, error, message):
    with pytest.raises(error, match=message):
        estimate_cycles([], GEOMETRY, lanes)
