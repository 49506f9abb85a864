import random

import numpy as np
import pytest

from rtl.ppu import Activation, PostProcessor
from sim.golden import ppu as golden
from sim.golden.ppu import INT32_MAX, INT32_MIN, quantize_multiplier, requantize
from sim.stream import stream_get_n, stream_put_all
from sim.testbench import simulate


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


def run_ppu(cols, batches, *, idle=0.0, stall=0.0, seed=0, cycles=None, model_activation=None):
    """Stream batches of ``(config, accumulator rows)`` through a PostProcessor.

    The config changes only between batches, once every row of the previous one has left.
    Returns the output rows and the expected ones as lists of ``(values, last)``.
    """
    dut = PostProcessor(cols)
    expected, inputs = [], []
    for config, acc in batches:
        args = dict(config)
        if model_activation is not None:
            args["activation"] = model_activation
        rows = []
        for index, (row, out) in enumerate(zip(acc, requantize(acc, **args))):
            last = index == len(acc) - 1
            rows.append({"data": [int(v) for v in row], "last": last})
            expected.append(([int(v) for v in out], last))
        inputs.append(rows)
    results = []
    drained = [0]                                       # batches fully received

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

    # A lost row would leave the consumer waiting: fail fast instead (1 us per cycle).
    simulate(dut, [producer, consumer], deadline=1e-6 * (50 * len(expected) + 1000))
    return results, expected


@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("cols", [1, 3, 8])
def test_random_rows(cols, activation):
    rng = np.random.default_rng(cols * 10 + activation.value)
    configs = [random_config(rng, cols, activation) for _ in range(6)]
    batches = [(config, accumulators_for(rng, config, 32, cols)) for config in configs]
    results, expected = run_ppu(cols, batches, idle=0.3, stall=0.3, seed=cols)
    assert results == expected
    # Not everything saturated: plenty of distinct values came out.
    values = [v for row, _ in results for v in row]
    assert len(set(values)) > 20


EDGE_ACCUMULATORS = [INT32_MIN, INT32_MIN + 1, -2**30, -2**30 - 1, -12345, -2, -1, 0, 1, 2,
                     12345, 2**30, 2**30 + 1, INT32_MAX - 1, INT32_MAX]


@pytest.mark.parametrize("cols", [1, 3, 8])
def test_edge_values(cols):
    rng = np.random.default_rng(100 + cols)
    batches = []
    multipliers = [INT32_MAX, 2**30, INT32_MIN, -1, 0, 2**30 + 1]
    for i, multiplier in enumerate(multipliers):
        for j, shift in enumerate([0, 31, 1]):
            zero_point = int(rng.choice([-128, 127, 0]))
            config = {
                # Biases near the int32 limits make acc + bias wrap.
                "bias":       [int(v) for v in rng.choice([INT32_MIN, INT32_MAX, 0, -1, 1],
                                                          size=cols)],
                "multiplier": multiplier,
                "shift":      shift,
                "zero_point": zero_point,
                "activation": Activation((i + j) % 3),  # every mode with every shift
                "clamp_max":  int(rng.choice([-128, 127, max(-128, zero_point - 1)])),
            }
            acc = rng.choice(EDGE_ACCUMULATORS, size=(len(EDGE_ACCUMULATORS), cols))
            acc[:, 0] = EDGE_ACCUMULATORS                   # every edge on column 0
            batches.append((config, acc))
    results, expected = run_ppu(cols, batches, idle=0.2, stall=0.2, seed=cols)
    assert results == expected

    # The edges were really reached.
    wrapped = any(np.any(np.abs(acc.astype(object) + np.array(config["bias"], object)) >= 2**31)
                  for config, acc in batches)
    values = {v for row, _ in results for v in row}
    assert wrapped and {-128, 127} <= values


def test_saturating_product_and_output():
    # INT32_MIN * INT32_MIN is the one saturating high multiply; with shift 0 and zero point 127
    # the sum z + zero_point = 2**31 + 126 would wrap in int32, and must saturate instead.
    config = {"bias": [0, 0, INT32_MIN], "multiplier": INT32_MIN, "shift": 0, "zero_point": 127,
              "activation": Activation.NONE, "clamp_max": 0}
    acc = np.array([[INT32_MIN, INT32_MAX, 0], [1, -1, INT32_MIN]])
    results, expected = run_ppu(3, [(config, acc)])
    assert results == expected
    assert results[0][0] == [127, -128, 127]


@pytest.mark.parametrize("cols", [1, 3])
def test_clamp_max_below_zero_point(cols):
    # The upper bound wins: every output is clamp_max, in the RTL as in the model.
    rng = np.random.default_rng(7)
    config = random_config(rng, cols, Activation.CLAMP) | {"zero_point": 50, "clamp_max": -7}
    results, expected = run_ppu(cols, [(config, random_accumulators(rng, 20, cols))])
    assert results == expected
    assert {v for row, _ in results for v in row} == {-7}


def test_reserved_activation_behaves_as_none():
    rng = np.random.default_rng(8)
    config = random_config(rng, 3, 3) | {"zero_point": 20}
    results, expected = run_ppu(3, [(config, random_accumulators(rng, 30, 3))],
                                model_activation=golden.NONE)
    assert results == expected
    assert min(v for row, _ in results for v in row) < 20      # no RELU clamp happened


def test_activation_codes_match_model():
    assert [a.value for a in Activation] == [golden.NONE, golden.RELU, golden.CLAMP]
    assert [a.name for a in Activation] == ["NONE", "RELU", "CLAMP"]
    assert Activation.as_shape().width == 2


def test_full_throughput():
    # Without bubbles or backpressure, one row leaves per cycle.
    rng = np.random.default_rng(9)
    config = random_config(rng, 4, Activation.RELU)
    cycles = []
    results, expected = run_ppu(4, [(config, random_accumulators(rng, 40, 4))], cycles=cycles)
    assert results == expected
    assert np.all(np.diff(cycles) == 1)


def test_latency():
    cols = 2
    dut = PostProcessor(cols)
    assert dut.latency == 5
    seen = []

    async def testbench(ctx):
        ctx.set(dut.cfg, {"bias": [0] * cols, "multiplier": 2**30, "shift": 0,
                             "zero_point": 0, "activation": Activation.NONE, "clamp_max": 0})
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"data": [6, -6], "last": 1})
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for cycle in range(1, 3 * dut.latency):
            if ctx.get(dut.o.valid):
                seen.append((cycle, [int(v) for v in ctx.get(dut.o.payload.data)],
                             ctx.get(dut.o.payload.last)))
            await ctx.tick()

    simulate(dut, [testbench])
    assert seen == [(dut.latency, [3, -3], 1)]


def test_backpressure_holds_output():
    # While o.ready is low the output row stays put and no new row is accepted.
    dut = PostProcessor(1)
    log = []

    async def producer(ctx):
        ctx.set(dut.cfg, {"bias": [0], "multiplier": INT32_MAX, "shift": 0,
                             "zero_point": 0, "activation": Activation.NONE, "clamp_max": 0})
        await stream_put_all(ctx, dut.i, [{"data": [value], "last": 0} for value in range(1, 8)])

    async def consumer(ctx):
        await ctx.tick().repeat(3 * dut.latency)
        # Rows 1 to 5 fill the pipeline; row 6 waits at the input.
        log.append((ctx.get(dut.o.valid), [int(v) for v in ctx.get(dut.o.payload.data)],
                    ctx.get(dut.i.valid), [int(v) for v in ctx.get(dut.i.payload.data)],
                    ctx.get(dut.i.ready)))
        log.append([int(p.data[0]) for p in await stream_get_n(ctx, dut.o, 7)])

    simulate(dut, [producer, consumer])
    assert log == [(1, [1], 1, [6], 0), [1, 2, 3, 4, 5, 6, 7]]


@pytest.mark.parametrize("cols, error, message", [
    (0, ValueError, "Column count must be between 1 and"),
    (-3, ValueError, "Column count must be between 1 and"),
    (8.0, TypeError, "Column count must be an integer, not 8.0"),
    ("8", TypeError, "Column count must be an integer, not '8'"),
    (True, TypeError, "Column count must be an integer"),
])
def test_bad_parameters(cols, error, message):
    with pytest.raises(error, match=message):
        PostProcessor(cols)
