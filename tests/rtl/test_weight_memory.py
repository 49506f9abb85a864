import numpy as np
import pytest
from amaranth.hdl import Fragment

from rtl.unified_buffer import MAX_DEPTH, MAX_WIDTH, RowMemory
from rtl.weight_memory import WeightMemory
from sim.golden.memory import WeightMemoryModel
# The weight memory is a RowMemory like the unified buffer, so it shares that test's harness.
from test_unified_buffer import byte_writes, random_reads, run_memory


@pytest.mark.parametrize("cols, depth", [(1, 1), (1, 16), (6, 1), (4, 9), (8, 32)])
@pytest.mark.parametrize("read_buffer, output_register", [(True, True), (True, False),
                                                           (False, False)])
def test_random_traffic(cols, depth, read_buffer, output_register):
    rng = np.random.default_rng(cols * 1000 + depth + 1)
    writes = byte_writes(rng, cols, depth, 60)
    reads = random_reads(rng, depth, 60, writes)
    dut = WeightMemory(cols, depth, read_buffer=read_buffer, output_register=output_register)
    assert (dut.read_buffer, dut.output_register) == (read_buffer, output_register)
    run = run_memory(dut, WeightMemoryModel(cols, depth), writes, reads,
                     idle=0.3, stall=0.3, seed=cols * depth)
    assert run.responses == run.expected


def test_edge_bytes():
    cols, depth = 3, 3
    rng = np.random.default_rng(21)
    writes = byte_writes(rng, cols, depth, 50, edges=True)
    reads = random_reads(rng, depth, 50, writes)
    run = run_memory(WeightMemory(cols, depth), WeightMemoryModel(cols, depth), writes, reads,
                     idle=0.4, stall=0.4, seed=4)
    assert run.responses == run.expected


def test_tile_load_order():
    # The use the MXU makes of it: store a tile's R rows, then read them in order, with `last`
    # on the tile's final row; back to back, one row per cycle.
    rows, cols, depth = 4, 5, 8
    rng = np.random.default_rng(23)
    dut = WeightMemory(cols, depth)
    tile = rng.integers(-128, 128, size=(rows, cols))
    base = 3
    writes = [({"addr": base + i, "data": [int(b) & 0xff for b in tile[i]]}, (base + i, tile[i]))
              for i in range(rows)]
    reads = [(base + i, i == rows - 1) for i in range(rows)]
    run = run_memory(dut, WeightMemoryModel(cols, depth), writes, reads, read_delay=rows)
    assert run.responses == run.expected
    assert np.all(np.diff(run.read_cycles) == 1)
    assert np.all(np.subtract(run.response_cycles, run.read_cycles) == dut.read_latency)


def test_interface():
    dut = WeightMemory(cols=3, depth=5)
    assert (dut.cols, dut.width, dut.depth) == (3, 3, 5)
    assert isinstance(dut, RowMemory)
    assert (dut.read_latency, dut.write_latency) == (2, 0)
    unbuffered = WeightMemory(cols=3, depth=5, read_buffer=False)
    assert unbuffered.read_latency == 1
    Fragment.get(unbuffered, None)
    assert len(dut.w.payload.data) == 3 and len(dut.r_data.payload.data) == 3
    assert len(dut.w.payload.addr) == 3
    Fragment.get(dut, None)


@pytest.mark.parametrize("cols, depth, error, message", [
    (0, 4, ValueError, "Column count must be between 1 and"),
    (MAX_WIDTH + 1, 4, ValueError, "Column count must be between 1 and"),
    (4, 0, ValueError, "Depth must be between 1 and"),
    (4, MAX_DEPTH + 1, ValueError, "Depth must be between 1 and"),
    ("4", 4, TypeError, "Column count must be an integer, not '4'"),
    (4, 2.5, TypeError, "Depth must be an integer, not 2.5"),
])
def test_bad_parameters(cols, depth, error, message):
    with pytest.raises(error, match=message):
        WeightMemory(cols, depth)
