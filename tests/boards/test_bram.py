"""The ECP5 flow folds the register after a block RAM read port into the block RAM."""

import copy
import json

import pytest

from boards.bram import fold_output_registers
from rtl.accumulator import AccumulatorMemory
from rtl.unified_buffer import UnifiedBuffer
from rtl.weight_memory import WeightMemory
from sim.synthesis import synthesize

CLOCK, ENABLE, OTHER = 2, 3, 4


def flip_flop(d, q, *, enable=ENABLE, clock=CLOCK, **parameters):
    """A Yosys ``TRELLIS_FF`` as ``synth_ecp5`` writes one (no reset)."""
    cell = {
        "type": "TRELLIS_FF",
        "parameters": {"CEMUX": "CE" if enable is not None else "1 ", "CLKMUX": "CLK",
                       "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": "RESET",
                       "SRMODE": "LSR_OVER_CE", **parameters},
        "port_directions": {"CLK": "input", "DI": "input", "Q": "output"},
        "connections": {"CLK": [clock], "DI": [d], "Q": [q]},
    }
    if enable is not None:
        cell["port_directions"]["CE"] = "input"
        cell["connections"]["CE"] = [enable]
    return cell


def block_ram(outputs, *, width=18, read="B"):
    """A ``DP16KD`` whose port ``read`` drives the nets ``outputs``, pin 0 up."""
    connections = {"CLKA": [CLOCK], "CLKB": [CLOCK], "OCEA": ["1"], "OCEB": ["1"],
                   "RSTA": ["0"], "RSTB": ["0"]}
    directions = {pin: "input" for pin in connections}
    pins = [f"DO{read}{k}" for k in range(18)]
    if width == 36:
        pins = [f"DOB{k}" for k in range(18)] + [f"DOA{k}" for k in range(18)]
    for pin, net in zip(pins, outputs):
        connections[pin] = [net]
        directions[pin] = "output"
    binary = format(width, "032b")
    return {"type": "DP16KD",
            "parameters": {"DATA_WIDTH_A": binary, "DATA_WIDTH_B": binary,
                           "REGMODE_A": "NOREG", "REGMODE_B": "NOREG"},
            "port_directions": directions, "connections": connections}


def netlist(cells, ports=None):
    return {"modules": {"top": {"ports": ports or {}, "cells": cells, "netnames": {}}}}


def registered_read(bits=4, **ram):
    """A block RAM read port whose ``bits`` outputs each feed a flip-flop: DO k is net 10 + k,
    the flip-flop's output net 100 + k."""
    cells = {"ram": block_ram([10 + k for k in range(bits)], **ram)}
    for k in range(bits):
        cells[f"ff{k}"] = flip_flop(10 + k, 100 + k)
    return cells


def test_folds_the_register():
    design = netlist(registered_read(4))
    assert fold_output_registers(design, "top") == (1, 4)
    cells = design["modules"]["top"]["cells"]
    assert list(cells) == ["ram"]
    ram = cells["ram"]
    assert ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["parameters"]["REGMODE_A"] == "NOREG"
    assert ram["connections"]["OCEB"] == [ENABLE]
    assert [ram["connections"][f"DOB{k}"] for k in range(4)] == [[100 + k] for k in range(4)]


def test_folds_a_register_without_enable_and_port_a():
    cells = registered_read(2, read="A")
    for k in range(2):
        cells[f"ff{k}"] = flip_flop(10 + k, 100 + k, enable=None)
    design = netlist(cells)
    assert fold_output_registers(design, "top") == (1, 2)
    ram = design["modules"]["top"]["cells"]["ram"]
    assert (ram["parameters"]["REGMODE_A"], ram["connections"]["OCEA"]) == ("OUTREG", ["1"])


def test_36_bit_mode_is_one_read_port():
    # Yosys's pseudo dual-port map reads 36 bits through port B, half of them on the A pins:
    # both halves take the register together, enabled by OCEB.
    design = netlist(registered_read(36, width=36))
    assert fold_output_registers(design, "top") == (1, 36)
    ram = design["modules"]["top"]["cells"]["ram"]
    assert (ram["parameters"]["REGMODE_A"], ram["parameters"]["REGMODE_B"]) == \
        ("OUTREG", "OUTREG")
    assert ram["connections"]["OCEB"] == [ENABLE]
    assert ram["connections"]["DOA0"] == [118]


def test_unused_outputs_do_not_count():
    # A ninth bit that drives nothing does not stop the fold.
    cells = registered_read(2)
    cells["ram"]["connections"]["DOB2"] = [12]
    cells["ram"]["port_directions"]["DOB2"] = "output"
    design = netlist(cells)
    assert fold_output_registers(design, "top") == (1, 2)


def _lut_reads(cells):
    cells["lut"] = {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input"},
                    "connections": {"A": [11]}}


def _ports_read(design):
    design["modules"]["top"]["ports"]["out"] = {"direction": "output", "bits": [11]}


@pytest.mark.parametrize("change", [
    lambda cells: cells["ff1"]["connections"].update(CE=[OTHER]),
    lambda cells: cells["ff1"]["connections"].update(CLK=[OTHER]),
    lambda cells: cells["ff1"]["parameters"].update(CLKMUX="INV"),
    lambda cells: cells["ff1"]["parameters"].update(REGSET="SET"),
    lambda cells: cells["ff1"]["connections"].update(LSR=[OTHER]),
    lambda cells: cells["ff1"]["parameters"].update(CEMUX="INV"),
    lambda cells: cells["ram"]["connections"].update(RSTB=[OTHER]),
    lambda cells: cells["ram"]["parameters"].update(REGMODE_B="OUTREG"),
    _lut_reads,
    lambda cells: cells.update(ff9=flip_flop(11, 109)),
], ids=["enables differ", "other clock", "inverted clock", "set", "reset", "inverted enable",
        "block RAM reset", "already registered", "output also read by logic",
        "two flip-flops"])
def test_leaves_what_it_cannot_fold(change):
    design = netlist(registered_read(4))
    change(design["modules"]["top"]["cells"])
    before = copy.deepcopy(design)
    assert fold_output_registers(design, "top") == (0, 0)
    assert design == before


def test_leaves_an_output_that_leaves_the_module():
    design = netlist(registered_read(4))
    _ports_read(design)
    before = copy.deepcopy(design)
    assert fold_output_registers(design, "top") == (0, 0)
    assert design == before


#: Memories deep enough for block RAM, with the read port's output register; how many bits a
#: row has (the flip-flops each folded memory gives up); and the options that leave every read
#: port transparent.
MEMORIES = {
    "unified_buffer": (lambda **kw: UnifiedBuffer(rows=8, depth=256, masked=True, **kw), 64, {}),
    "weight_memory":  (lambda **kw: WeightMemory(cols=4, depth=512, **kw), 32, {}),
    "accumulator":    (lambda **kw: AccumulatorMemory(cols=2, depth=256, **kw), 64,
                       {"read_register": False}),
}


def _registered_brams(design):
    """Each ``DP16KD`` of ``design``'s top module: whether a read port uses its output register."""
    return {name: "OUTREG" in (cell["parameters"]["REGMODE_A"], cell["parameters"]["REGMODE_B"])
            for name, cell in design["modules"]["top"]["cells"].items()
            if cell["type"] == "DP16KD"}


@pytest.mark.parametrize("memory", MEMORIES)
def test_memories_take_their_output_register(memory, tmp_path):
    # Synthesized as the board flow does, every block RAM takes the register after its read port
    # in, and only those flip-flops (one per bit of a row) leave the fabric. The accumulator has
    # two memories: the copy that serves reads, and the read-modify-write storage, whose old row
    # register (`read_register`) follows a port that forwarding keeps free of collision logic.
    make, row_bits, _ = MEMORIES[memory]
    synthesize(make(output_register=True), "ecp5", tmp_path)
    design = json.loads((tmp_path / "top.json").read_text())
    ports, removed = fold_output_registers(design, "top")
    memories = 2 if memory == "accumulator" else 1
    assert removed == memories * row_bits
    registered = _registered_brams(design)
    assert registered and ports >= len(registered)
    assert all(registered.values()), registered


def test_accumulator_storage_takes_its_output_register(tmp_path):
    # The read register alone: the storage's block RAMs fold it, the copy's (without the output
    # register, a transparent port) fold nothing.
    make, row_bits, _ = MEMORIES["accumulator"]
    synthesize(make(read_register=True, output_register=False), "ecp5", tmp_path)
    design = json.loads((tmp_path / "top.json").read_text())
    assert fold_output_registers(design, "top")[1] == row_bits
    registered = _registered_brams(design)
    assert any(name.startswith("out_memory.") for name in registered)
    for name, folded in registered.items():
        assert folded == name.startswith("memory."), name


@pytest.mark.parametrize("memory", MEMORIES)
def test_transparent_ports_keep_no_register(memory, tmp_path):
    # Without the options, Yosys's transparency logic sits between the block RAM and the
    # memory's first register, and nothing is folded.
    make, _, transparent = MEMORIES[memory]
    synthesize(make(**transparent), "ecp5", tmp_path)
    design = json.loads((tmp_path / "top.json").read_text())
    assert fold_output_registers(design, "top") == (0, 0)
