"""The ``puce`` command line, run in-process through ``firmware.cli.main``."""

import os
import subprocess
import sys
from pathlib import Path

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


def test_demo_small(capsys):
    assert main(["demo", "-m", "4", "-k", "5", "-n", "3", "--rows", "2", "--cols", "2"]) == 0
    out = capsys.readouterr().out
    assert "check vs numpy    bit-exact" in out
    assert "2 x 2 MXU" in out
