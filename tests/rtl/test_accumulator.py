import numpy as np
import pytest
from amaranth.hdl import Fragment

from rtl.accumulator import AccumulatorMemory
from rtl.unified_buffer import MAX_DEPTH, MAX_WIDTH
from sim.golden.memory import AccumulatorModel, wrap_int32
# The accumulator has the same stream interfaces as the unified buffer, and shares its harness.
from test_unified_buffer import random_reads, run_memory

INT32_MIN, INT32_MAX = -2**31, 2**31 - 1
#: Sums worth writing on purpose: both ends of int32 and their neighbours, and around zero.
EDGE_SUMS = [INT32_MIN, INT32_MIN + 1, -1, 0, 1, INT32_MAX - 1, INT32_MAX]

#: Builds of the memory: as the boards with timing registers build it (the block RAM's output
#: registered in the read-modify-write pipeline, read responses through the block RAM's own
#: output register and a queue: ECP5, Gowin), without the output register, and with none of
#: them, and with none of them but the sums added in two halves (iCE40).
READ_REGISTER = pytest.mark.parametrize("options", [
    {"read_register": True, "read_buffer": True, "output_register": True},
    {"read_register": True, "read_buffer": True, "output_register": False},
    {"read_register": False, "read_buffer": False, "output_register": False},
    {"read_register": False, "read_buffer": False, "output_register": False,
     "split_carry": True},
], ids=["output_register", "read_buffer", "no_read_register", "split_carry"])


def built(cols, depth, options):
    """The memory with the timing ``options`` (a dict of keyword arguments)."""
    return AccumulatorMemory(cols, depth, **options)


def write(addr, row, accumulate):
    """One accumulator write: (payload, model args)."""
    row = [int(v) for v in row]
    return ({"addr": addr, "data": row, "accumulate": accumulate}, (addr, row, accumulate))


def random_writes(rng, cols, depth, count, *, accumulate=0.7, edges=False):
    """Random writes; each accumulates with probability ``accumulate``."""
    result = []
    for _ in range(count):
        if edges:
            row = rng.choice(EDGE_SUMS, size=cols)
        else:
            row = rng.integers(INT32_MIN, INT32_MAX, size=cols, endpoint=True)
        result.append(write(int(rng.integers(depth)), row, bool(rng.random() < accumulate)))
    return result


def read_all(depth):
    return [(addr, addr == depth - 1) for addr in range(depth)]


@pytest.mark.parametrize("cols, depth", [(1, 1), (1, 4), (4, 1), (3, 2), (2, 7), (8, 16)])
@READ_REGISTER
def test_random_traffic(cols, depth, options):
    rng = np.random.default_rng(cols * 100 + depth)
    writes = random_writes(rng, cols, depth, 60)
    reads = random_reads(rng, depth, 60, writes)
    run = run_memory(built(cols, depth, options), AccumulatorModel(cols, depth), writes,
                     reads, idle=0.3, stall=0.3, seed=cols + depth)
    assert run.responses == run.expected


@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.0, 0.6), (0.5, 0.0), (0.2, 0.2)])
@READ_REGISTER
def test_hazards_with_concurrent_reads(idle, stall, options):
    # Two entries, every gap between writes, reads of half-accumulated rows in between.
    cols, depth = 2, 2
    rng = np.random.default_rng(int(idle * 10 + stall * 100) + 1)
    writes = random_writes(rng, cols, depth, 80)
    reads = random_reads(rng, depth, 80, writes)
    run = run_memory(built(cols, depth, options), AccumulatorModel(cols, depth), writes,
                     reads, idle=idle, stall=stall, seed=7)
    assert run.responses == run.expected


@pytest.mark.parametrize("gap", [0, 1, 2, 3, 4])
@READ_REGISTER
def test_back_to_back_accumulates_to_one_entry(gap, options):
    # Accumulates to the same entry `gap` idle cycles apart: with gap 0 (and, with the read
    # register, 1) the old row is still in the pipeline (forwarded), with the next gap it is
    # being written as it is read (transparent read port), after that it comes from the memory.
    # One write per cycle must hold with gap 0.
    cols, depth = 3, 4
    rng = np.random.default_rng(gap)
    dut = built(cols, depth, options)
    writes = [write(2, rng.integers(-1000, 1000, cols), 0)]
    writes += [write(2, rng.integers(-1000, 1000, cols), 1) for _ in range(15)]
    # Writes to a neighbour in between must not be taken for the entry's own.
    writes.insert(5, write(1, rng.integers(-1000, 1000, cols), 1))
    run = run_memory(dut, AccumulatorModel(cols, depth), writes, read_all(depth),
                     gaps=[gap] * len(writes), read_delay=(gap + 1) * len(writes) + 2)
    assert run.responses == run.expected
    assert np.all(np.diff(run.write_cycles) == gap + 1)
    # The total is the plain sum of the row and all accumulates (small values: no wrap).
    total = sum(np.array(args[1]) for _, args in writes if args[0] == 2)
    assert run.responses[2][0] == list(total)


@READ_REGISTER
def test_full_rate_mixed_addresses(options):
    # One write per cycle, every write accumulating, addresses cycling with every stride so
    # each forwarding distance occurs.
    cols, depth = 2, 4
    rng = np.random.default_rng(31)
    addresses = [0, 0, 0, 1, 0, 1, 0, 2, 1, 0, 3, 3, 2, 2, 3, 1, 1, 1, 0]
    writes = [write(a, rng.integers(-10**6, 10**6, cols), 1) for a in addresses]
    run = run_memory(built(cols, depth, options), AccumulatorModel(cols, depth), writes,
                     read_all(depth), read_delay=len(writes) + 3)
    assert run.responses == run.expected
    assert np.all(np.diff(run.write_cycles) == 1)


@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.3, 0.3)])
@READ_REGISTER
def test_wrap_around_at_edges(idle, stall, options):
    cols, depth = 4, 3
    rng = np.random.default_rng(41)
    writes = random_writes(rng, cols, depth, 60, edges=True, accumulate=0.8)
    reads = random_reads(rng, depth, 60, writes)
    run = run_memory(built(cols, depth, options), AccumulatorModel(cols, depth), writes,
                     reads, idle=idle, stall=stall, seed=5)
    assert run.responses == run.expected


@READ_REGISTER
def test_wrap_rule(options):
    # INT32_MAX + 1, INT32_MIN - 1, INT32_MIN + INT32_MIN and INT32_MAX + INT32_MAX, each
    # accumulated into a fresh row and read back.
    firsts = [INT32_MAX, INT32_MIN, INT32_MIN, INT32_MAX]
    seconds = [1, -1, INT32_MIN, INT32_MAX]
    cols, depth = len(firsts), 1
    writes = [write(0, firsts, 0), write(0, seconds, 1)]
    run = run_memory(built(cols, depth, options), AccumulatorModel(cols, depth), writes,
                     [(0, True)], read_delay=5)
    assert run.responses == run.expected
    assert run.responses[0][0] == list(wrap_int32(np.add(firsts, seconds, dtype=np.int64)))
    # Two's complement: the carry out of bit 31 is dropped.
    assert run.responses[0][0][0] == INT32_MIN and run.responses[0][0][1] == INT32_MAX


@pytest.mark.parametrize("gap", [0, 1, 2])
@READ_REGISTER
def test_carries_between_halves(gap, options):
    # Accumulates whose low 16 bits carry (or borrow) into the high 16 bits on every write or
    # every other one, back to back and `gap` cycles apart: the split carry's register between
    # the halves must pair each carry with its own sum, also when the old row is forwarded.
    steps = [0x8000, 0xFFFF, -1, -0x8000, 0x10000 - 3]
    cols, depth = len(steps), 2
    writes = [write(0, [0xFFFF, 0x7FFF8000, 0, -0x10000, INT32_MAX], 0)]
    writes += [write(0, steps, 1) for _ in range(9)]
    writes.insert(4, write(1, [-0x8000] * cols, 1))
    run = run_memory(built(cols, depth, options), AccumulatorModel(cols, depth), writes,
                     read_all(depth), gaps=[gap] * len(writes),
                     read_delay=(gap + 1) * len(writes) + 3)
    assert run.responses == run.expected
    total = np.array(writes[0][1][1], dtype=np.int64) + 9 * np.array(steps, dtype=np.int64)
    assert run.responses[0][0] == list(wrap_int32(total))


@READ_REGISTER
def test_read_write_ordering(options):
    # A read returns the writes accepted `write_latency` (2, or 3 with the read register or the
    # split carry) or more cycles before it, not later ones, which are still in the pipeline.
    # Reads of an entry on every cycle around a write show exactly when the change appears.
    cols, depth = 2, 2
    dut = built(cols, depth, options)
    old, new = [5, -7], [INT32_MAX, 100]
    writes = [write(1, old, 0), write(1, new, 1)]
    reads = [(1, False)] * 6
    run = run_memory(dut, AccumulatorModel(cols, depth), writes, reads, gaps=[0, 5],
                     read_delay=5)
    assert run.write_cycles == [0, 6] and run.read_cycles == [5, 6, 7, 8, 9, 10]
    model = AccumulatorModel(cols, depth)
    model.write(1, old)
    before = list(model.read(1))
    model.write(1, new, accumulate=True)
    after = list(model.read(1))
    expected = [after if cycle >= 6 + dut.write_latency else before
                for cycle in run.read_cycles]
    assert before in expected and after in expected
    assert [data for data, _ in run.responses] == expected
    assert run.responses == run.expected
    assert dut.write_latency == (3 if options["read_register"] or dut.split_carry else 2)


@READ_REGISTER
def test_read_throughput_and_latency(options):
    cols, depth = 3, 8
    rng = np.random.default_rng(43)
    dut = built(cols, depth, options)
    writes = random_writes(rng, cols, depth, 40)
    reads = random_reads(rng, depth, 40, writes)
    run = run_memory(dut, AccumulatorModel(cols, depth), writes, reads)
    assert run.responses == run.expected
    assert np.all(np.diff(run.write_cycles) == 1)
    assert np.all(np.diff(run.read_cycles) == 1)
    assert np.all(np.subtract(run.response_cycles, run.read_cycles) == dut.read_latency)


def test_model():
    model = AccumulatorModel(2, 3)
    assert list(model.read(2)) == [0, 0]
    model.write(2, [INT32_MAX, -5])
    model.write(2, [1, 7], accumulate=True)
    assert list(model.read(2)) == [INT32_MIN, 2]
    model.write(2, [3, 4], accumulate=False)
    assert list(model.read(2)) == [3, 4]
    assert int(wrap_int32(INT32_MIN - 1)) == INT32_MAX
    with pytest.raises(ValueError, match="sums must lie in"):
        model.write(0, [2**31, 0])
    with pytest.raises(ValueError, match="shape"):
        model.write(0, [1, 2, 3])
    with pytest.raises(IndexError):
        model.read(3)


def test_interface():
    dut = AccumulatorMemory(cols=5, depth=9)
    assert (dut.cols, dut.depth, dut.read_latency, dut.write_latency) == (5, 9, 2, 3)
    assert dut.read_register
    assert len(dut.w.payload.data) == 5 and len(dut.r_data.payload.data) == 5
    assert len(dut.w.payload.addr) == 4 and len(dut.w.payload.accumulate) == 1
    assert dut.r_data.payload.data[0].shape().signed
    Fragment.get(dut, None)
    dut = AccumulatorMemory(cols=5, depth=9, read_register=False, read_buffer=False)
    assert (dut.read_latency, dut.write_latency, dut.read_register) == (1, 2, False)
    assert not dut.split_carry
    Fragment.get(dut, None)
    dut = AccumulatorMemory(cols=5, depth=9, read_register=False, split_carry=True)
    assert (dut.read_latency, dut.write_latency, dut.split_carry) == (2, 3, True)
    Fragment.get(dut, None)


def test_bad_read_register():
    with pytest.raises(TypeError, match="Read register must be a bool, not 1"):
        AccumulatorMemory(4, 4, read_register=1)
    with pytest.raises(TypeError, match="read_buffer must be a bool, not 'yes'"):
        AccumulatorMemory(4, 4, read_buffer="yes")
    with pytest.raises(TypeError, match="output_register must be a bool, not 1"):
        AccumulatorMemory(4, 4, output_register=1)
    with pytest.raises(ValueError, match="output_register needs read_buffer"):
        AccumulatorMemory(4, 4, read_buffer=False, output_register=True)
    with pytest.raises(TypeError, match="split_carry must be a bool, not 'no'"):
        AccumulatorMemory(4, 4, read_register=False, split_carry="no")
    with pytest.raises(ValueError, match=r"split_carry needs read_register=False: .* take 4 "
                                         r"cycles .* WRITE_LATENCY \(3\)"):
        AccumulatorMemory(4, 4, split_carry=True)


@pytest.mark.parametrize("cols, depth, error, message", [
    (0, 4, ValueError, "Column count must be between 1 and"),
    (MAX_WIDTH + 1, 4, ValueError, "Column count must be between 1 and"),
    (4, 0, ValueError, "Depth must be between 1 and"),
    (4, MAX_DEPTH + 1, ValueError, "Depth must be between 1 and"),
    (None, 4, TypeError, "Column count must be an integer, not None"),
    (4, 8.0, TypeError, "Depth must be an integer, not 8.0"),
])
def test_bad_parameters(cols, depth, error, message):
    with pytest.raises(error, match=message):
        AccumulatorMemory(cols, depth)
