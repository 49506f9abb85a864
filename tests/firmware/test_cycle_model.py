import numpy as np
import pytest

from firmware.compiler import compile_matmul
from firmware.cycle_model import TOLERANCE, TOLERANCE_CYCLES, estimate_cycles
from firmware.demo import train_digits
from firmware.isa import Flag, Geometry, Instruction, Opcode
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


def check(device, instructions):
    device.run(b"".join(i.encode() for i in instructions))
    measured = device.last_stats["cycles"]
    estimate = estimate_cycles(instructions, GEOMETRY)
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


def test_bad_geometry():
    with pytest.raises(TypeError, match="geometry must be a Geometry"):
        estimate_cycles([], (8, 8))
