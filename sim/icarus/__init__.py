"""Run a program on the accelerator's Verilog under Icarus Verilog, with a plain Verilog bench.

The bench (``bench.v``) streams a program's bytes into ``puce_accelerator`` with random gaps,
takes the answer with random backpressure, and compares every byte with the expected answer
(from :class:`sim.golden.accelerator.AcceleratorModel`). It complements the cocotb benches: no
Python runs during the simulation, so it is quick under Icarus.
"""

import shutil
import subprocess
from pathlib import Path

__all__ = ["run_program_icarus"]

BENCH = Path(__file__).resolve().with_name("bench.v")


def _hex(data):
    return "".join(f"{byte:02x}\n" for byte in data)


def run_program_icarus(verilog_text, program, expected, build_dir, *, seed=1, timeout=300):
    """Simulate ``program`` (bytes) on ``verilog_text``; return the bench's report.

    Raises ``RuntimeError`` with the bench's output if a byte differs, a byte is missing or
    extra, or the simulation does not finish.
    """
    if shutil.which("iverilog") is None:
        raise FileNotFoundError("iverilog is not installed (Debian package iverilog)")
    build = Path(build_dir)
    build.mkdir(parents=True, exist_ok=True)
    (build / "dut.v").write_text(verilog_text)
    (build / "program.hex").write_text(_hex(program))
    (build / "expected.hex").write_text(_hex(expected))
    defines = [f"-DPROGRAM_BYTES={len(program)}", f"-DEXPECTED_BYTES={len(expected)}",
               f"-DSEED={seed}"]
    # Verilog-2005: its initializers are time-0 events, which Yosys's `always @*` blocks need
    # (see sim.cocotb.runner.run_cocotb).
    subprocess.run(["iverilog", "-g2005", *defines, "-o", "bench.vvp", str(BENCH), "dut.v"],
                   cwd=build, check=True, capture_output=True, text=True)
    result = subprocess.run(["vvp", "-n", "bench.vvp"], cwd=build, capture_output=True,
                            text=True, timeout=timeout)
    report = result.stdout.strip()
    last = report.splitlines()[-1] if report else ""
    if last != "PASS":
        raise RuntimeError(f"Icarus bench failed:\n{report[-2000:]}\n{result.stderr[-1000:]}")
    return report
