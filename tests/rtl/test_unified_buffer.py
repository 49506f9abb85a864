import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import Fragment
from amaranth.lib import data

from rtl.accumulator import AccumulatorMemory
from rtl.unified_buffer import MAX_DEPTH, MAX_WIDTH, RowMemory, UnifiedBuffer
from rtl.weight_memory import WeightMemory
from sim.golden.memory import UnifiedBufferModel, replay
from sim.stream import stream_get_n, stream_put, stream_put_all
from sim.testbench import simulate

#: Bytes worth writing on purpose: both ends of int8 and uint8, and the sign boundary.
EDGE_BYTES = [-128, -1, 0, 1, 127, 128, 255]

#: The read port's options (rtl.unified_buffer.connect_read_port): the block RAM's latch as
#: the response, the queue of registers after it, and the block RAM's output register as well;
#: and the same with writes registered before the block RAM (as the accelerator builds it).
READ_OPTIONS = pytest.mark.parametrize("options", [
    {"read_buffer": False},
    {"read_buffer": True},
    {"read_buffer": True, "output_register": True},
    {"read_buffer": True, "output_register": True, "write_register": True},
], ids=["latch", "queue", "output-register", "write-register"])


def most_due(dut):
    """The most responses a memory's read port can owe: the latch alone, or every register a
    row can wait in (the latch, the output register, the queue's two)."""
    return dut.read_latency + 1 if dut.read_buffer else 1


@dataclass
class Run:
    """What one simulation of a memory saw, and what its model expects."""
    responses: list = field(default_factory=list)       # (row as list of int, last)
    expected: list = field(default_factory=list)
    write_cycles: list = field(default_factory=list)    # cycle each write was accepted
    read_cycles: list = field(default_factory=list)     # cycle each read request was accepted
    response_cycles: list = field(default_factory=list)


def run_memory(dut, model, writes, reads, *, idle=0.0, stall=0.0, seed=0, gaps=None,
               read_delay=0):
    """Drive ``dut`` (any of the on-chip memories) concurrently with writes and reads.

    ``writes`` holds ``(payload, args)`` pairs: the payload for ``dut.w`` and the arguments of
    ``model.write`` for the same write. ``reads`` holds ``(addr, last)`` pairs. Writes and reads
    start together; ``idle`` and ``stall`` add random bubbles and backpressure, ``gaps`` (a list
    of idle cycles before each write) replaces the random write bubbles, and ``read_delay``
    holds the reads back. A monitor stamps every transfer with its cycle and checks that a
    stalled response holds still; the model then replays the writes and reads in that order
    (see :func:`sim.golden.memory.replay`) to compute the expected responses.
    """
    run = Run()
    rng = random.Random(seed)

    async def put_writes(ctx):
        payloads = [payload for payload, _ in writes]
        if gaps is None:
            await stream_put_all(ctx, dut.w, payloads, idle=idle, rng=random.Random(rng.random()))
        else:
            for gap, payload in zip(gaps, payloads, strict=True):
                if gap:
                    await ctx.tick().repeat(gap)
                await stream_put(ctx, dut.w, payload)

    async def put_reads(ctx):
        if read_delay:
            await ctx.tick().repeat(read_delay)
        await stream_put_all(ctx, dut.r_addr, [{"addr": a, "last": l} for a, l in reads],
                             idle=idle, rng=random.Random(rng.random()))

    async def get_responses(ctx):
        for payload in await stream_get_n(ctx, dut.r_data, len(reads), stall=stall,
                                          rng=random.Random(rng.random())):
            run.responses.append(([int(v) for v in payload.data], bool(payload.last)))

    # The monitor only records: a failed assertion inside a simulator process makes a poor report.
    errors = []

    async def monitor(ctx):
        cycle, waiting = 0, None
        while True:
            _, _, w_valid, w_ready, r_valid, r_ready, o_valid, o_ready, o_payload = \
                await ctx.tick().sample(dut.w.valid, dut.w.ready, dut.r_addr.valid,
                                        dut.r_addr.ready, dut.r_data.valid, dut.r_data.ready,
                                        dut.r_data.payload)
            response = ([int(v) for v in o_payload.data], bool(o_payload.last))
            if waiting is not None and not (o_valid and response == waiting):
                # A response not taken must stay, unchanged, until it is.
                errors.append(f"cycle {cycle}: waiting response {waiting} became "
                              f"{response if o_valid else 'invalid'}")
            if not w_ready:
                errors.append(f"cycle {cycle}: write not ready")
            if w_valid and w_ready:
                run.write_cycles.append(cycle)
            if r_valid and r_ready:
                run.read_cycles.append(cycle)
            if o_valid and o_ready:
                run.response_cycles.append(cycle)
            waiting = response if o_valid and not o_ready else None
            cycle += 1

    # A lost response would hang the reader: give up after a generous number of cycles.
    budget = 50 * (len(writes) + len(reads) + read_delay + sum(gaps or [])) + 100
    simulate(dut, [put_writes, put_reads, get_responses], [monitor], deadline=budget * 1e-6)

    assert errors == []
    assert len(run.write_cycles) == len(writes)
    rows = replay(model,
                  [(cycle, args) for cycle, (_, args) in zip(run.write_cycles, writes)],
                  [(cycle, addr) for cycle, (addr, _) in zip(run.read_cycles, reads)],
                  dut.write_latency)
    run.expected = [([int(v) for v in row], bool(last)) for row, (_, last) in zip(rows, reads)]
    return run


def byte_writes(rng, width, depth, count, *, edges=False):
    """Random row writes for a byte memory: (payload, model args) pairs.

    The model gets the bytes as drawn (int8 or uint8, e.g. -1 or 255), the hardware as raw bytes.
    """
    result = []
    for _ in range(count):
        addr = int(rng.integers(depth))
        row = rng.choice(EDGE_BYTES, size=width) if edges else rng.integers(-128, 256, width)
        result.append(({"addr": addr, "data": [int(b) & 0xff for b in row]}, (addr, row)))
    return result


def random_reads(rng, depth, count, writes):
    """Read requests, mostly of entries that some write touches, with random ``last`` flags."""
    written = [payload["addr"] for payload, _ in writes]
    result = []
    for _ in range(count):
        if written and rng.random() < 0.8:
            addr = written[int(rng.integers(len(written)))]
        else:
            addr = int(rng.integers(depth))
        result.append((addr, bool(rng.integers(2))))
    return result


@pytest.mark.parametrize("rows, depth", [(1, 1), (1, 8), (4, 1), (3, 5), (8, 16), (16, 64)])
@READ_OPTIONS
def test_random_traffic(rows, depth, options):
    rng = np.random.default_rng(rows * 1000 + depth)
    writes = byte_writes(rng, rows, depth, 60)
    reads = random_reads(rng, depth, 60, writes)
    dut = UnifiedBuffer(rows, depth, **options)
    run = run_memory(dut, UnifiedBufferModel(rows, depth), writes, reads,
                     idle=0.3, stall=0.3, seed=rows + depth)
    assert run.responses == run.expected


@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.0, 0.7), (0.7, 0.0), (0.5, 0.5)])
@READ_OPTIONS
def test_edge_bytes(idle, stall, options):
    rows, depth = 5, 4
    rng = np.random.default_rng(int(idle * 10 + stall * 100))
    writes = byte_writes(rng, rows, depth, 50, edges=True)
    reads = random_reads(rng, depth, 50, writes)
    run = run_memory(UnifiedBuffer(rows, depth, **options), UnifiedBufferModel(rows, depth),
                     writes, reads,
                     idle=idle, stall=stall, seed=3)
    assert run.responses == run.expected


def test_writes_then_reads_every_entry():
    # Fill the whole buffer, then read it all back: the plain use, with no overlap.
    rows, depth = 4, 32
    rng = np.random.default_rng(5)
    writes = []
    for addr in rng.permutation(depth):
        row = rng.integers(0, 256, rows)
        writes.append(({"addr": int(addr), "data": [int(b) for b in row]}, (int(addr), row)))
    reads = [(addr, addr == depth - 1) for addr in range(depth)]
    run = run_memory(UnifiedBuffer(rows, depth), UnifiedBufferModel(rows, depth), writes, reads,
                     stall=0.4, read_delay=depth + 2)
    assert run.responses == run.expected
    assert [last for _, last in run.responses] == [False] * (depth - 1) + [True]


@READ_OPTIONS
def test_throughput_and_latency(options):
    # With the consumer always ready, one write and one read per cycle, each response
    # `read_latency` cycles after its request.
    rows, depth = 3, 16
    rng = np.random.default_rng(9)
    dut = UnifiedBuffer(rows, depth, **options)
    writes = byte_writes(rng, rows, depth, 40)
    reads = random_reads(rng, depth, 40, writes)
    run = run_memory(dut, UnifiedBufferModel(rows, depth), writes, reads)
    assert run.responses == run.expected
    assert np.all(np.diff(run.write_cycles) == 1)
    assert np.all(np.diff(run.read_cycles) == 1)
    assert dut.read_latency == 1 + dut.read_buffer + dut.output_register
    assert np.all(np.subtract(run.response_cycles, run.read_cycles) == dut.read_latency)


@READ_OPTIONS
def test_backpressure_keeps_order(options):
    # Under heavy backpressure no response is lost or reordered, and a request waits only while
    # the response registers are full.
    rows, depth = 2, 8
    rng = np.random.default_rng(13)
    writes = byte_writes(rng, rows, depth, 30)
    reads = random_reads(rng, depth, 30, writes)
    dut = UnifiedBuffer(rows, depth, **options)
    run = run_memory(dut, UnifiedBufferModel(rows, depth), writes, reads,
                     stall=0.8, read_delay=35)
    assert run.responses == run.expected
    assert np.all(np.array(run.response_cycles) > np.array(run.read_cycles))
    if dut.read_buffer:
        # n = 3 responses wait at most (the block RAM and the queue of two), 4 with the output
        # register: with requests always offered, request k + n is accepted in the cycle after
        # response k is taken (not in the same one: `ready` is a flip-flop).
        n = most_due(dut)
        assert n == (4 if dut.output_register else 3)
        assert run.read_cycles[:n] == [run.read_cycles[0] + k for k in range(n)]
        assert run.read_cycles[n:] == [cycle + 1 for cycle in run.response_cycles[:-n]]
    else:
        # One waits: the next request is accepted in the very cycle its predecessor is taken.
        assert run.read_cycles[1:] == run.response_cycles[:-1]


@pytest.mark.parametrize("make", [
    lambda: UnifiedBuffer(3, 8),
    lambda: WeightMemory(2, 4),
    lambda: AccumulatorMemory(2, 4),
    lambda: AccumulatorMemory(1, 2, read_register=False),
    lambda: UnifiedBuffer(3, 8, output_register=True),
    lambda: WeightMemory(2, 4, output_register=True),
    lambda: AccumulatorMemory(2, 4, output_register=True),
], ids=["ub", "wm", "acc", "acc-no-read-register", "ub-output-register",
        "wm-output-register", "acc-output-register"])
def test_request_ready_ignores_response_ready(make):
    # The read port's `r_addr.ready` (and so the block RAM's enable) must not follow the
    # consumer's `r_data.ready` within a cycle: both values of `r_data.ready` give the same
    # `r_addr.ready`, in every state random traffic reaches. Meanwhile responses come in order,
    # at most three are due (four with the output register), and `r_data.valid` is high only
    # while one is.
    dut = make()
    rng = random.Random(23)
    errors = []

    async def testbench(ctx):
        outstanding = []
        for cycle in range(300):
            addr = rng.randrange(dut.depth)
            ctx.set(dut.r_addr.valid, rng.random() < 0.7)
            ctx.set(dut.r_addr.payload, {"addr": addr, "last": cycle & 1})
            readies = []
            for ready in (0, 1):
                ctx.set(dut.r_data.ready, ready)
                readies.append(ctx.get(dut.r_addr.ready))
            if readies[0] != readies[1]:
                errors.append(f"cycle {cycle}: r_addr.ready follows r_data.ready")
            ready = rng.random() < 0.4
            ctx.set(dut.r_data.ready, ready)
            valid, response = ctx.get(dut.r_data.valid), ctx.get(dut.r_data.payload)
            if valid and not outstanding:
                errors.append(f"cycle {cycle}: r_data.valid with no response due")
            if valid and ready:
                if response.last != outstanding.pop(0):
                    errors.append(f"cycle {cycle}: response out of order")
            if ctx.get(dut.r_addr.valid) and ctx.get(dut.r_addr.ready):
                outstanding.append(cycle & 1)
            if len(outstanding) > most_due(dut):
                errors.append(f"cycle {cycle}: {len(outstanding)} responses due")
            await ctx.tick()

    simulate(dut, [testbench])
    assert errors == []


@READ_OPTIONS
def test_read_write_ordering(options):
    # A read returns every write accepted `write_latency` (0) or more cycles before it, so a
    # read in the very cycle of a write to its entry already returns the new row (with the
    # output register, through the read port's bypass). With the write register, the read of
    # the next cycle is the first (1). Reads of the entry on every cycle around a write show
    # exactly when the change appears.
    rows, depth = 4, 2
    dut = UnifiedBuffer(rows, depth, **options)
    old, new = np.array([1, 2, 3, 4]), np.array([255, -128, 127, 1])
    writes = [({"addr": 1, "data": [int(b) & 0xff for b in row]}, (1, row)) for row in (old, new)]
    reads = [(1, False)] * 6
    run = run_memory(dut, UnifiedBufferModel(rows, depth), writes, reads, gaps=[0, 3],
                     read_delay=2)
    assert run.write_cycles == [0, 4] and run.read_cycles == [2, 3, 4, 5, 6, 7]
    model = UnifiedBufferModel(rows, depth)
    model.write(1, old)
    before = list(model.read(1))
    model.write(1, new)
    after = list(model.read(1))
    expected = [after if cycle >= 4 + dut.write_latency else before
                for cycle in run.read_cycles]
    assert before in expected and after in expected
    assert [data for data, _ in run.responses] == expected
    assert run.responses == run.expected
    assert dut.write_latency == int(options.get("write_register", False))


@READ_OPTIONS
def test_response_not_changed_by_later_write(options):
    # A response waiting for the consumer holds the row as it was read, even if the entry is
    # overwritten meanwhile.
    rows, depth = 2, 1
    rng = np.random.default_rng(17)
    writes = byte_writes(rng, rows, depth, 20)
    reads = [(0, False)] * 20
    run = run_memory(UnifiedBuffer(rows, depth, **options), UnifiedBufferModel(rows, depth),
                     writes, reads, stall=0.9)
    assert run.responses == run.expected


@READ_OPTIONS
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("stall", [0.0, 0.6])
def test_reads_in_the_cycle_of_a_write(options, masked, stall):
    # Every read of a one-entry memory meets a write to that entry in the same cycle, and must
    # return the row as written (for a masked write, the bytes it selects, the others as they
    # were). The block RAM leaves such a read undefined; with the output register the read
    # port's own bypass repairs it, so this is the test that the bypass covers every case.
    rows, depth = 3, 1
    rng = np.random.default_rng(29 + masked)
    writes = (masked_writes if masked else byte_writes)(rng, rows, depth, 40)
    reads = [(0, k == 39) for k in range(40)]
    dut = UnifiedBuffer(rows, depth, masked=masked, **options)
    model = (MaskedModel if masked else UnifiedBufferModel)(rows, depth)
    run = run_memory(dut, model, writes, reads, stall=stall)
    assert run.responses == run.expected
    collisions = set(run.write_cycles) & set(run.read_cycles)
    assert len(collisions) >= 10


@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.3, 0.6), (0.0, 0.9)])
@READ_OPTIONS
def test_tags_follow_their_requests(idle, stall, options):
    # A tag, like `last`, comes back with its own request's row, whichever register the row
    # waits in.
    rows, depth = 2, 8
    dut = UnifiedBuffer(rows, depth, tag=data.StructLayout({"first": 1, "kind": 3}), **options)
    assert dut.r_addr.payload.shape()["tag"].shape == dut.tag
    rng = random.Random(int(10 * idle + 100 * stall))
    requests = [{"addr": rng.randrange(depth), "last": rng.randrange(2),
                 "tag": {"first": rng.randrange(2), "kind": rng.randrange(8)}}
                for _ in range(80)]
    responses = []

    async def put(ctx):
        await stream_put_all(ctx, dut.r_addr, requests, idle=idle, rng=random.Random(1))

    async def get(ctx):
        for payload in await stream_get_n(ctx, dut.r_data, len(requests), stall=stall,
                                          rng=random.Random(2)):
            responses.append({"last": int(payload.last), "tag": {
                "first": int(payload.tag.first), "kind": int(payload.tag.kind)}})

    simulate(dut, [put, get])
    assert responses == [{"last": r["last"], "tag": r["tag"]} for r in requests]


def test_interface():
    dut = UnifiedBuffer(rows=6, depth=100)
    assert (dut.rows, dut.width, dut.depth) == (6, 6, 100)
    assert isinstance(dut, RowMemory)
    assert len(dut.w.payload.data) == 6
    assert len(dut.w.payload.addr) == 7 and len(dut.r_addr.payload.addr) == 7
    assert len(dut.r_data.payload.data) == 6
    Fragment.get(dut, None)     # it elaborates (and is thereby used)


@pytest.mark.parametrize("rows, depth, error, message", [
    (0, 4, ValueError, "Row count must be between 1 and"),
    (MAX_WIDTH + 1, 4, ValueError, "Row count must be between 1 and"),
    (4, 0, ValueError, "Depth must be between 1 and"),
    (4, MAX_DEPTH + 1, ValueError, "Depth must be between 1 and"),
    (4.0, 4, TypeError, "Row count must be an integer, not 4.0"),
    (4, "16", TypeError, "Depth must be an integer, not '16'"),
    (4, True, TypeError, "Depth must be an integer"),
])
def test_bad_parameters(rows, depth, error, message):
    with pytest.raises(error, match=message):
        UnifiedBuffer(rows, depth)


def test_row_memory_bad_parameters():
    with pytest.raises(ValueError, match="Width must be between 1 and"):
        RowMemory(0, 4)
    with pytest.raises(TypeError, match="Depth must be an integer, not None"):
        RowMemory(4, None)
    with pytest.raises(TypeError, match="tag must be a shape or None, not 'first'"):
        RowMemory(4, 4, tag="first")
    with pytest.raises(TypeError, match="read_buffer must be a bool, not 1"):
        RowMemory(4, 4, read_buffer=1)
    with pytest.raises(TypeError, match="output_register must be a bool, not 'on'"):
        RowMemory(4, 4, output_register="on")
    with pytest.raises(ValueError, match="output_register needs read_buffer"):
        RowMemory(4, 4, read_buffer=False, output_register=True)
    with pytest.raises(TypeError, match="write_register must be a bool, not 1"):
        RowMemory(4, 4, write_register=1)


# Byte-masked writes ---------------------------------------------------------------------------

class MaskedModel(UnifiedBufferModel):
    """The buffer model with a byte mask: a write changes only the bytes whose bit is set."""
    def write(self, addr, row, mask=None):
        if mask is not None:
            row = np.where(mask, np.asarray(row) & 0xff, self.read(addr))
        super().write(addr, row)


def masked_writes(rng, width, depth, count):
    result = []
    for _ in range(count):
        addr = int(rng.integers(depth))
        row = rng.integers(0, 256, width)
        mask = rng.integers(0, 2, width).astype(bool)
        bits = sum(1 << k for k in range(width) if mask[k])
        result.append(({"addr": addr, "data": [int(b) for b in row], "mask": bits},
                       (addr, row, mask)))
    return result


@pytest.mark.parametrize("rows, depth", [(1, 2), (3, 4), (8, 16)])
@READ_OPTIONS
def test_masked_writes(rows, depth, options):
    # Random masked writes and reads, concurrently and with backpressure: every response is
    # the model's row, built byte by byte from the writes that selected each byte.
    rng = np.random.default_rng(rows * 31 + depth)
    writes = masked_writes(rng, rows, depth, 60)
    reads = random_reads(rng, depth, 60, writes)
    dut = UnifiedBuffer(rows, depth, masked=True, **options)
    assert dut.masked
    run = run_memory(dut, MaskedModel(rows, depth), writes, reads, idle=0.3, stall=0.3,
                     seed=rows)
    assert run.responses == run.expected


def test_masked_write_keeps_other_bytes():
    # A full write, then writes of single bytes and of none: the unselected bytes stay.
    rows, depth = 4, 2
    dut = UnifiedBuffer(rows, depth, masked=True)
    full = np.array([1, 2, 3, 4])
    writes = [({"addr": 1, "data": [1, 2, 3, 4], "mask": 0b1111}, (1, full, [1, 1, 1, 1])),
              ({"addr": 1, "data": [9, 9, 9, 9], "mask": 0b0100},
               (1, np.array([9] * 4), [0, 0, 1, 0])),
              ({"addr": 1, "data": [7, 7, 7, 7], "mask": 0}, (1, np.array([7] * 4), [0] * 4))]
    reads = [(1, False)]
    run = run_memory(dut, MaskedModel(rows, depth), writes, reads, read_delay=10)
    assert run.responses == run.expected == [([1, 2, 9, 4], False)]


def test_mask_member():
    dut = UnifiedBuffer(rows=5, depth=8, masked=True)
    plain = UnifiedBuffer(rows=5, depth=8)
    assert len(dut.w.payload.mask) == 5
    assert not plain.masked
    assert "mask" not in dict(plain.w.payload.shape())
    with pytest.raises(TypeError, match="masked must be a bool"):
        RowMemory(4, 4, masked=1)
    Fragment.get(dut, None)
    Fragment.get(plain, None)
