"""The accelerator's Verilog under Icarus Verilog (4-state), with the plain Verilog bench.

Each program's answer is compared byte for byte with the ISA model's; the compiled matmul is
also checked against numpy through the model's answer.
"""

import numpy as np
import pytest

from firmware.compiler import compile_matmul
from firmware.isa import Flag, Geometry, Instruction, Opcode
from rtl.verilog import accelerator_verilog
from sim.golden.accelerator import AcceleratorModel
from sim.icarus import run_program_icarus

GEOMETRY = Geometry(rows=2, cols=3, ub_depth=32, wm_depth=16, acc_depth=16)


@pytest.fixture(scope="module")
def verilog():
    return accelerator_verilog(GEOMETRY)


def check(verilog, program, tmp_path, seed):
    expected = AcceleratorModel(GEOMETRY).run(program)
    report = run_program_icarus(verilog, program, expected, tmp_path, seed=seed)
    assert report.endswith("PASS")
    return expected


@pytest.mark.parametrize("seed", [1, 2])
def test_compiled_matmul(verilog, tmp_path, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (9, 13), dtype=np.int8)
    b = rng.integers(0, 256, (13, 7), dtype=np.uint8)
    compiled = compile_matmul(a, b, GEOMETRY)
    expected = check(verilog, compiled.encode(), tmp_path, seed)
    assert np.array_equal(compiled.collect(expected), a.astype(np.int64) @ b.astype(np.int64))


def test_errors_and_resync(verilog, tmp_path):
    program = b"".join(i.encode() for i in [
        Instruction(Opcode.WRITE_UB, a=30, n=4, payload=bytes(8)),     # ADDRESS, payload eaten
        Instruction.sync(),
        Instruction(0x13, a=1),                                          # illegal: faulted
        Instruction(Opcode.WRITE_UB, a=0, n=1, payload=bytes(2)),       # skipped
        Instruction.sync(),                                              # resync
        Instruction(Opcode.WRITE_WM, a=0, n=2, payload=bytes(range(6))),
        Instruction(Opcode.LOAD_WEIGHTS, Flag.SIGNED, a=0),
        Instruction(Opcode.MATMUL, Flag.SIGNED | Flag.SWAP, a=0, b=0, n=2),
        Instruction(Opcode.READ_ACC, a=0, n=2),
        Instruction.sync(),
    ])
    expected = check(verilog, program, tmp_path, 3)
    assert len(expected) > 40


def test_bench_reports_a_wrong_byte(verilog, tmp_path):
    program = Instruction(Opcode.READ_UB, a=0, n=1).encode() + Instruction.sync().encode()
    expected = bytearray(AcceleratorModel(GEOMETRY).run(program))
    expected[8] ^= 0xff
    with pytest.raises(RuntimeError, match="byte 8 is 00, expected ff"):
        run_program_icarus(verilog, program, bytes(expected), tmp_path)
