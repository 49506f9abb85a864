"""The whole accelerator's Verilog, simulated by Icarus Verilog and Verilator under cocotb.

Each test builds ``puce_accelerator`` for a small geometry in its own directory under
``tmp_path`` and runs every test of :mod:`sim.cocotb.accelerator_tb`: a compiled ragged matrix
product (checked against the model byte for byte and against numpy), random valid programs, and
an ADDRESS error plus an illegal opcode resynchronised by SYNC, all with random input gaps and
output backpressure. Every response byte is compared with the ISA model inside the simulation.
"""

import pytest

from firmware.isa import Geometry
from rtl.verilog import accelerator_verilog
from sim.cocotb.runner import run_cocotb, simulator_missing

TEST_MODULE = "sim.cocotb.accelerator_tb"
COCOTB_TESTS = ["compiled_matmul", "random_programs", "errors_and_resync"]

GEOMETRIES = {
    "2x3": Geometry(2, 3, ub_depth=32, wm_depth=16, acc_depth=16),
    "4x4": Geometry(4, 4, ub_depth=32, wm_depth=16, acc_depth=16),
}


@pytest.fixture(scope="module")
def verilog():
    """The Verilog of each geometry, converted once for both simulators."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = accelerator_verilog(GEOMETRIES[name])
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(GEOMETRIES))
# (Under Icarus this bench used to stall with X on control signals: cocotb's -g2012 makes no
# time-0 event of the initializers that start Yosys's `always @*` blocks; see run_cocotb.)
@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_accelerator(simulator, name, verilog, tmp_path):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)
    g = GEOMETRIES[name]
    seed = 100 * g.rows + g.cols
    env = {"PUCE_GEOMETRY": f"{g.rows},{g.cols},{g.ub_depth},{g.wm_depth},{g.acc_depth}",
           "PUCE_SEED": seed}
    # -O0 for Verilator's C++: these runs are short, so the build time is what counts.
    result = run_cocotb(simulator, verilog(name), "puce_accelerator", TEST_MODULE,
                        tmp_path / "build", extra_env=env, seed=seed, optimize=False,
                        expect_tests=len(COCOTB_TESTS))
    assert result.passed
    assert sorted(test.name for test in result.tests) == sorted(COCOTB_TESTS)
