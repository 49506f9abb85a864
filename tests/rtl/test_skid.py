"""The skid buffer: every payload through in order (its model is the identity on the sequence),
at full rate, with ``i.ready`` independent of ``o.ready`` within a cycle."""

import gc
import random
import warnings

import pytest
from amaranth.lib import data

from rtl.skid import SkidBuffer
from rtl.verilog import emit_verilog
from sim.stream import stream_get_n, stream_put_all
from sim.testbench import simulate


@pytest.mark.parametrize("idle, stall", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5), (0.3, 0.7),
                                         (0.7, 0.3)])
def test_sequence_through(idle, stall):
    rng = random.Random(f"{idle} {stall}")
    payloads = [rng.randrange(256) for _ in range(300)]
    dut = SkidBuffer(8)
    got = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, payloads, idle=idle, rng=random.Random(2))

    async def consumer(ctx):
        got.extend(await stream_get_n(ctx, dut.o, len(payloads), stall=stall,
                                      rng=random.Random(3)))

    simulate(dut, [producer, consumer])
    assert got == payloads


def test_full_rate_and_latency():
    dut = SkidBuffer(8)
    cycles = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, range(50))

    async def consumer(ctx):
        assert await stream_get_n(ctx, dut.o, 50, cycles=cycles) == list(range(50))

    simulate(dut, [producer, consumer])
    assert cycles == list(range(1, 51))         # one cycle in, then one a cycle


def test_ready_is_a_register():
    """Within a cycle, o.ready changes neither i.ready nor o.valid; a stall costs i.ready one
    cycle later, and the payload caught in between is not lost."""
    dut = SkidBuffer(8)

    async def testbench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 1)
        await ctx.tick()                        # 1 is in the output register
        ctx.set(dut.i.payload, 2)
        for ready in (0, 1, 0):
            ctx.set(dut.o.ready, ready)
            assert ctx.get(dut.i.ready) == 1 and ctx.get(dut.o.valid) == 1
        await ctx.tick()                        # o stalled: 2 skids
        assert ctx.get(dut.i.ready) == 0 and ctx.get(dut.o.payload) == 1
        ctx.set(dut.i.payload, 3)               # not taken while i.ready is low
        ctx.set(dut.o.ready, 1)
        assert ctx.get(dut.i.ready) == 0
        await ctx.tick()                        # 1 went out; 2 moves up
        assert ctx.get(dut.o.payload) == 2 and ctx.get(dut.i.ready) == 1
        await ctx.tick()                        # 2 went out; 3 taken
        assert ctx.get(dut.o.payload) == 3
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.o.valid) == 0

    simulate(dut, [testbench])


def test_struct_payload():
    layout = data.StructLayout({"data": 8, "last": 1})
    dut = SkidBuffer(layout)
    items = [{"data": k, "last": k % 3 == 0} for k in range(20)]
    got = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, items, idle=0.2)

    async def consumer(ctx):
        got.extend(await stream_get_n(ctx, dut.o, len(items), stall=0.4))

    simulate(dut, [producer, consumer])
    assert [(g.data, g.last) for g in got] == [(k["data"], k["last"]) for k in items]


def test_bad_shape():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="shape must be a shape-like object, not 'wide'"):
            SkidBuffer("wide")
        gc.collect()


def test_verilog():
    verilog = emit_verilog(SkidBuffer(8), "skid")
    for name in ("i__valid", "i__ready", "i__payload", "o__valid", "o__ready", "o__payload",
                 "skid_valid", "skid"):
        assert name in verilog
