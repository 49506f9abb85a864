"""Simulated clock cycles per second of the MXU's Verilog under cocotb (Icarus, Verilator).

    .venv/bin/python benchmarks/cocotb_sim_speed.py [--rows 8] [--cols 8] [--stream-rows 4000]

Runs the cocotb ``long_stream`` test (one checked activation row per cycle) and reports the
rate measured inside the simulation, so build time is excluded. cocotb runs Python on every
cycle; the rate is that of a checked, cycle-by-cycle cocotb test, not of the bare simulator.
"""

import argparse
import json
import tempfile
from pathlib import Path

from rtl.verilog import mxu_verilog
from sim.cocotb.runner import SIMULATORS, run_cocotb, simulator_missing


def measure(simulator, rows, cols, stream_rows, build_dir):
    stats = Path(build_dir) / "stats.jsonl"
    run_cocotb(simulator, mxu_verilog(rows, cols), "puce_mxu", "sim.cocotb.mxu_tb",
               Path(build_dir) / "build", testcase="long_stream", expect_tests=1,
               extra_env={"PUCE_ROWS": rows, "PUCE_COLS": cols, "PUCE_SEED": 1,
                          "PUCE_STREAM_ROWS": stream_rows, "PUCE_STATS": stats})
    return json.loads(stats.read_text().splitlines()[-1])["cycles_per_s"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--stream-rows", type=int, default=4000)
    args = parser.parse_args()
    for simulator in SIMULATORS:
        reason = simulator_missing(simulator)
        if reason:
            print(f"{simulator}: skipped ({reason})")
            continue
        with tempfile.TemporaryDirectory() as build_dir:
            rate = measure(simulator, args.rows, args.cols, args.stream_rows, build_dir)
        print(f"cocotb + {simulator}, {args.rows} x {args.cols} MXU: {rate:,.0f} cycles/s")


if __name__ == "__main__":
    main()
