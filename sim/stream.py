"""Testbench helpers for :mod:`amaranth.lib.stream` interfaces.

All helpers are ``async`` functions for :meth:`amaranth.sim.Simulator.add_testbench` and follow
the stream rules: ``valid`` is held until the transfer, and the payload does not change while
``valid`` is asserted.
"""

import random

__all__ = ["stream_put", "stream_get", "stream_put_all", "stream_get_n"]


async def stream_put(ctx, stream, payload):
    """Send one ``payload`` through ``stream`` and return once it has been accepted."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Receive one payload from ``stream``; return it as a Python value (or ``data.Const``)."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


async def stream_put_all(ctx, stream, payloads, *, idle=0.0, rng=None):
    """Send every payload in order, with random idle cycles between them.

    ``idle`` is the probability of leaving ``valid`` low for a cycle before each transfer, so a
    test can check that the receiver copes with bubbles.
    """
    rng = rng or random.Random(0)
    for payload in payloads:
        while idle and rng.random() < idle:
            await ctx.tick()
        await stream_put(ctx, stream, payload)


async def stream_get_n(ctx, stream, count, *, stall=0.0, rng=None, cycles=None):
    """Receive ``count`` payloads, with random cycles of ``ready`` low (backpressure).

    If ``cycles`` is a list, the cycle number (counted from the call) of each transfer is appended
    to it, so a test can check throughput and latency.
    """
    rng = rng or random.Random(1)
    result = []
    cycle = 0
    while len(result) < count:
        ready = not (stall and rng.random() < stall)
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if ready and valid:
            result.append(payload)
            if cycles is not None:
                cycles.append(cycle)
        cycle += 1
    ctx.set(stream.ready, 0)
    return result
