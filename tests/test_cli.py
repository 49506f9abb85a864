"""The ``puce`` command line, run in-process through ``firmware.cli.main``."""

import json
import os
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
