"""Random and edge-case stimuli for differential tests of the PPUs against :mod:`sim.golden.ppu`,
and the bench that streams them through a unit.

Shared by the tests of :class:`rtl.ppu.PostProcessor` and :class:`rtl.serial_ppu.
SerialPostProcessor`, which must agree with the same model on the same inputs.
"""

import random

import numpy as np

from rtl.ppu import Activation
from .golden import ppu as golden
from .golden.ppu import INT32_MAX, INT32_MIN, quantize_multiplier, requantize
from .stream import stream_get_n, stream_put_all
from .testbench import simulate

__all__ = ["random_accumulators", "random_config", "accumulators_for", "wrap32", "values_around",
           "negating_batch", "stream_batches"]


def random_accumulators(rng, rows, cols):
    """int32 values of random magnitude (2**0 to 2**31), so every shift sees in-range outputs."""
    bits = rng.integers(0, 32, size=(rows, cols))
    return rng.integers(INT32_MIN, INT32_MAX + 1, size=(rows, cols)) >> (31 - bits)


def random_config(rng, cols, activation):
    """A random layer config, mostly with multipliers as ``quantize_multiplier`` makes them."""
    if rng.random() < 0.7:
        multiplier, shift = quantize_multiplier(float(rng.uniform(2.0**-32, 1)))
        shift = min(31, max(0, shift + int(rng.integers(-3, 4))))
    else:
        multiplier = int(rng.integers(INT32_MIN, INT32_MAX + 1))
        shift = int(rng.integers(0, 32))
    zero_point = int(rng.integers(-128, 128))
    # Mostly a proper range; sometimes clamp_max < zero_point, where clamp_max wins.
    clamp_min = zero_point if rng.random() < 0.8 else -128
    return {
        "bias":       [int(v) for v in random_accumulators(rng, 1, cols)[0]],
        "multiplier": multiplier,
        "shift":      shift,
        "zero_point": zero_point,
        "activation": activation,
        "clamp_max":  int(rng.integers(clamp_min, 128)),
    }


def accumulators_for(rng, config, rows, cols):
    """Random accumulators, half of them scaled so that ``config`` maps them near its clamps."""
    acc = random_accumulators(rng, rows, cols)
    scale = config["multiplier"] * 2.0**(-31 - config["shift"])
    lo, hi = golden.activation_bounds(config["activation"], config["zero_point"],
                                      config["clamp_max"])
    if scale:
        target = rng.uniform(lo - 10, max(lo, hi) + 10, size=(rows, cols)) - config["zero_point"]
        target = target / scale - config["bias"]
        tuned = np.clip(np.round(target), INT32_MIN, INT32_MAX).astype(np.int64)
        acc = np.where(rng.random((rows, cols)) < 0.5, tuned, acc)
    return acc


# Rounding and clamping edges ------------------------------------------------------------------
#
# The multiplier INT32_MIN makes SaturatingRoundingDoublingHighMul a negation, y = -x, exact for
# every x but INT32_MIN; so the accumulators acc = -y - bias give any y (but INT32_MIN, which no
# multiply produces) to RoundingDivideByPOT, and the values around its rounding boundaries and
# around the clamp bounds can be picked directly.

def wrap32(values):
    return ((np.asarray(values, dtype=np.int64) - INT32_MIN) & 0xffff_ffff) + INT32_MIN


def values_around(shift, floors):
    """The int32 values y (INT32_MIN aside) with ``y >> shift`` in ``floors`` and each kind of
    remainder that RoundingDivideByPOT tells apart: none, the lowest bit, just below, exactly
    at and just above one half (.5 of the result), and all ones."""
    half = (1 << shift) >> 1
    remainders = {r for r in (0, 1, half - 1, half, half + 1, (1 << shift) - 1)
                  if 0 <= r < 1 << shift}
    return sorted({f * 2**shift + r for f in floors for r in remainders
                   if INT32_MIN < f * 2**shift + r <= INT32_MAX})


def negating_batch(rng, cols, ys, shift, zero_point=0, activation=Activation.NONE,
                   clamp_max=127):
    """A config with the multiplier INT32_MIN and random biases, and accumulator rows that it
    maps to the values ``ys`` before RoundingDivideByPOT (checked against the model)."""
    config = {
        "bias":       [int(v) for v in rng.integers(INT32_MIN, INT32_MAX + 1, size=cols)],
        "multiplier": INT32_MIN,
        "shift":      shift,
        "zero_point": zero_point,
        "activation": activation,
        "clamp_max":  clamp_max,
    }
    ys = np.array(list(ys) + list(ys[:1]) * (-len(ys) % cols), dtype=np.int64).reshape(-1, cols)
    acc = wrap32(-ys - np.array(config["bias"]))
    assert np.array_equal(golden.srdhm(wrap32(acc + np.array(config["bias"])), INT32_MIN), ys)
    return config, acc


def stream_batches(dut, batches, *, row_cycles, idle=0.0, stall=0.0, seed=0, cycles=None,
                   lasts=None, model_activation=None, monitors=(), platform=None):
    """Stream batches of ``(config, accumulator rows)`` through the PPU ``dut``; return its
    output rows and the model's (:func:`sim.golden.ppu.requantize`), as lists of
    ``(values, last)``.

    The config changes only between batches, once every row of the previous one has left, in
    the cycle where the batch's first row is offered (unless ``idle`` delays that row). A raw
    integer ``activation`` (a reserved encoding) is set as is; ``model_activation``, if given,
    is the one the model uses instead. ``lasts``, if given, are the rows' ``last`` flags (by
    default only a batch's last row has it). ``idle`` and ``stall`` are the chances of a gap on
    the input and of a refused output, ``cycles`` (a list, if given) collects the cycle of each
    output row. ``monitors`` are functions of the unit returning more background testbenches;
    one of the bench's own checks the stream rules on ``o``. A lost row fails the run after
    ``row_cycles`` cycles a row (1 us each) instead of hanging it.
    """
    expected, inputs = [], []
    flags = iter(lasts) if lasts is not None else None
    for config, acc in batches:
        args = dict(config)
        if model_activation is not None:
            args["activation"] = model_activation
        rows = []
        for index, (row, out) in enumerate(zip(acc, requantize(acc, **args))):
            last = next(flags) if flags is not None else index == len(acc) - 1
            rows.append({"data": [int(v) for v in row], "last": last})
            expected.append(([int(v) for v in out], last))
        inputs.append(rows)
    results = []
    drained = [0]                                       # batches fully received
    violations = []

    async def producer(ctx):
        rng = random.Random(seed)
        for index, ((config, _), rows) in enumerate(zip(batches, inputs)):
            while drained[0] < index:
                await ctx.tick()
            if isinstance(config["activation"], int):   # a raw (reserved) encoding
                ctx.set(dut.cfg, config | {"activation": Activation.NONE})
                ctx.set(dut.cfg.activation.as_value(), config["activation"])
            else:
                ctx.set(dut.cfg, config)
            await stream_put_all(ctx, dut.i, rows, idle=idle, rng=rng)

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for rows in inputs:
            for payload in await stream_get_n(ctx, dut.o, len(rows), stall=stall, rng=rng,
                                              cycles=cycles):
                results.append(([int(v) for v in payload.data], bool(payload.last)))
            drained[0] += 1

    async def monitor(ctx):
        # The stream rules on `o`: a row offered and not taken stays offered, unchanged.
        held = None
        async for _, _, valid, ready, payload in ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload):
            if held is not None and not (valid and payload == held):
                violations.append((held, valid, payload))
            held = payload if valid and not ready else None

    simulate(dut, [producer, consumer], [monitor] + [make(dut) for make in monitors],
             deadline=1e-6 * (row_cycles * len(expected) + 1000), platform=platform)
    assert not violations, violations[0]
    return results, expected
