"""The matrix unit's Verilog, simulated by Icarus Verilog and Verilator under cocotb.

Each test builds ``puce_mxu`` in its own directory under ``tmp_path`` (so the tests can run in
parallel with pytest-xdist) and runs every test of :mod:`sim.cocotb.mxu_tb`: random tiles with
bubbles and backpressure, extreme values, back-to-back tiles at full rate, a longer stream. Every
result row is checked against the golden model inside the simulation.
"""

import pytest

from rtl.verilog import mxu_verilog
from sim.cocotb.runner import SIMULATORS, CocotbFailure, run_cocotb, simulator_missing

TEST_MODULE = "sim.cocotb.mxu_tb"
#: The cocotb tests in TEST_MODULE; a run that executes fewer fails.
COCOTB_TESTS = 5


def _require(simulator):
    reason = simulator_missing(simulator)
    if reason:
        pytest.skip(reason)


def _run(simulator, rows, cols, build_dir, *, env=(), **kwargs):
    extra_env = {"PUCE_ROWS": rows, "PUCE_COLS": cols, "PUCE_SEED": 1000 * rows + cols}
    extra_env.update(env)
    # -O0 for Verilator's C++: these runs are short, so the build time is what counts.
    return run_cocotb(simulator, mxu_verilog(rows, cols), "puce_mxu", TEST_MODULE, build_dir,
                      extra_env=extra_env, seed=extra_env["PUCE_SEED"], optimize=False,
                      **kwargs)


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (8, 8)])
@pytest.mark.parametrize("simulator", SIMULATORS)
def test_random_matmul(simulator, rows, cols, tmp_path):
    _require(simulator)
    result = _run(simulator, rows, cols, tmp_path / "build", expect_tests=COCOTB_TESTS)
    assert result.passed
    assert sorted(test.name for test in result.tests) == sorted([
        "packing_matches_amaranth",
        "random_tiles_with_bubbles_and_backpressure",
        "extreme_values",
        "back_to_back_tiles_full_throughput",
        "long_stream",
    ])


# The harness itself: a wrong result row, a hang and a broken build must each fail loudly.

@pytest.mark.parametrize("env, message", [
    ({"PUCE_CORRUPT_ROW": 3}, r"random: result row 3 \(cycle \d+\) is .* expected"),
    ({"PUCE_STALL": 1.0}, r"random: timed out after \d+ ns .* 0/\d+ results received"),
], ids=["mismatch", "timeout"])
def test_harness_reports_failures(env, message, tmp_path):
    _require("icarus")
    with pytest.raises(CocotbFailure, match=message):
        _run("icarus", 2, 3, tmp_path / "build", env=env,
             testcase="random_tiles_with_bubbles_and_backpressure", expect_tests=1)


def test_harness_reports_build_errors(tmp_path):
    _require("icarus")
    with pytest.raises(CocotbFailure, match="icarus build of puce_mxu failed"):
        run_cocotb("icarus", "module puce_mxu(input clk);\n  this is not verilog;\nendmodule\n",
                   "puce_mxu", TEST_MODULE, tmp_path / "build")
