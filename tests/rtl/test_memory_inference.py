"""The on-chip memories synthesize to block RAM, not to a flip-flop per stored bit."""

import math

import pytest

from rtl.accumulator import AccumulatorMemory
from rtl.unified_buffer import UnifiedBuffer
from rtl.weight_memory import WeightMemory
from sim.synthesis import synthesize

#: Per FPGA family: the block RAM cells, the bits one of them holds, and the flip-flop cells.
FAMILIES = {
    "ice40": (("SB_RAM40_4K",), 4096, lambda cell: cell.startswith("SB_DFF")),
    "ecp5":  (("DP16KD", "PDPW16KD"), 18432, lambda cell: cell == "TRELLIS_FF"),
}

#: Small designs, a few seconds each, but deep enough that block RAM is the cheapest choice.
MEMORIES = {
    "unified_buffer": lambda: (UnifiedBuffer(rows=8, depth=256), 8 * 8, 256),
    "weight_memory":  lambda: (WeightMemory(cols=4, depth=512), 4 * 8, 512),
    "accumulator":    lambda: (AccumulatorMemory(cols=2, depth=256), 2 * 32, 256),
    # With the block RAMs' output registers, whose read ports bypass their own collisions.
    "unified_buffer_output_register": lambda: (
        UnifiedBuffer(rows=8, depth=256, masked=True, output_register=True), 8 * 8, 256),
    "accumulator_output_register": lambda: (
        AccumulatorMemory(cols=2, depth=256, output_register=True), 2 * 32, 256),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("memory", MEMORIES)
def test_block_ram(memory, family, tmp_path):
    dut, row_bits, depth = MEMORIES[memory]()
    bram_cells, bram_bits, is_flop = FAMILIES[family]
    cells = synthesize(dut, family, tmp_path)

    brams = sum(cells.get(cell, 0) for cell in bram_cells)
    flops = sum(count for cell, count in cells.items() if is_flop(cell))
    stored = row_bits * depth
    # Every stored bit is in block RAM: at least enough blocks to hold them all...
    assert brams >= math.ceil(stored / bram_bits), cells
    # ...and the flip-flops are the pipeline's, a few per bit of a row (the accumulator's
    # read-modify-write has about 7: four stages, a forwarded sum, the transparent read ports'
    # bypass; and the read queue 2 more; with the output register, that register (which the
    # ECP5 flow folds into the block RAM) and the read port's own bypass, 2, instead of Yosys's
    # 1), not one per stored bit.
    assert flops <= 12 * row_bits + 16, cells
    assert flops < stored / 16, cells
    # Nor distributed (LUT) RAM.
    assert not any(cell.startswith("TRELLIS_DPR") for cell in cells), cells
