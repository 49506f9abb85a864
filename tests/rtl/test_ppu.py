import numpy as np
import pytest
from amaranth.hdl import Fragment, Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.ppu import PART_WIDTH, PARTS, Activation, PostProcessor
from rtl.verilog import emit_verilog
from sim.golden import ppu as golden
from sim.golden.ppu import INT32_MAX, INT32_MIN
from sim.multiplier import PipelinedMultiplier
from sim.ppu_stimuli import (accumulators_for, negating_batch, random_accumulators, random_config,
                             stream_batches, values_around)
from sim.stream import stream_get_n, stream_put_all
from sim.synthesis import synthesize
from sim.testbench import simulate


def run_ppu(cols, batches, *, lanes=None, platform=None, operand_stage=True, **options):
    """Stream batches of ``(config, accumulator rows)`` through a PostProcessor of ``lanes``,
    elaborated for ``platform``, with or without its ``operand_stage``
    (:func:`sim.ppu_stimuli.stream_batches` with ``options``). Returns the output rows and the
    expected ones as lists of ``(values, last)``."""
    dut = PostProcessor(cols, lanes, operand_stage=operand_stage)
    return stream_batches(dut, batches, row_cycles=50 * dut.interval, platform=platform,
                          **options)


#: (C, L) pairs: the full-width unit, and time-shared ones with L dividing C or not.
LANES = [(1, None), (3, None), (8, None), (2, 1), (5, 1), (5, 2), (5, 3), (5, 5), (8, 1), (8, 4)]
#: Fewer for the edge values: the lanes are copies of one datapath, so the time-shared cases
#: check the multiplexing (and lane 0 sees every edge, on column 0).
EDGE_LANES = [(1, None), (3, None), (8, None), (5, 2), (8, 1)]


@pytest.mark.parametrize("operand_stage", [True, False],
                         ids=["operand_stage", "no_operand_stage"])
@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("cols, lanes", LANES)
def test_random_rows(cols, lanes, activation, operand_stage):
    rng = np.random.default_rng(cols * 10 + activation.value + 1000 * (lanes or 0))
    configs = [random_config(rng, cols, activation) for _ in range(6)]
    batches = [(config, accumulators_for(rng, config, 32, cols)) for config in configs]
    results, expected = run_ppu(cols, batches, lanes=lanes, idle=0.3, stall=0.3, seed=cols,
                                operand_stage=operand_stage)
    assert results == expected
    # Not everything saturated: plenty of distinct values came out.
    values = [v for row, _ in results for v in row]
    assert len(set(values)) > 20


EDGE_ACCUMULATORS = [INT32_MIN, INT32_MIN + 1, -2**30, -2**30 - 1, -12345, -2, -1, 0, 1, 2,
                     12345, 2**30, 2**30 + 1, INT32_MAX - 1, INT32_MAX]


class _MultiplierPlatform:
    """Gives every partial product a :class:`sim.multiplier.PipelinedMultiplier` (as the
    ULX3S's build gives MULT18X18Ds with their registers) and records which it asked for."""
    def __init__(self, make=lambda lane, part: PipelinedMultiplier(PART_WIDTH)):
        self.make = make
        self.asked = []

    def get_ppu_multiplier(self, lane, part):
        self.asked.append((lane, part))
        return self.make(lane, part)


@pytest.mark.parametrize("products", ["own", "platform", "no_operand_stage"])
@pytest.mark.parametrize("cols, lanes", EDGE_LANES)
def test_edge_values(cols, lanes, products):
    # With the platform's multipliers, the operand registers and product registers are theirs,
    # and the unit must feed them in the b_ stage's cycle and enable them with its own.
    rng = np.random.default_rng(100 + cols)
    batches = []
    multipliers = [INT32_MAX, 2**30, INT32_MIN, -1, 0, 2**30 + 1]
    for i, multiplier in enumerate(multipliers):
        for j, shift in enumerate([0, 31, 1, 8, 22]):
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
    platform = _MultiplierPlatform() if products == "platform" else None
    results, expected = run_ppu(cols, batches, lanes=lanes, idle=0.2, stall=0.2, seed=cols,
                                platform=platform, operand_stage=products != "no_operand_stage")
    assert results == expected
    if platform is not None:
        assert sorted(platform.asked) == sorted(
            (lane, part) for lane in range(lanes or cols) for part in PARTS)

    # The edges were really reached.
    wrapped = any(np.any(np.abs(acc.astype(object) + np.array(config["bias"], object)) >= 2**31)
                  for config, acc in batches)
    values = {v for row, _ in results for v in row}
    assert wrapped and {-128, 127} <= values


# Rounding and clamping edges ------------------------------------------------------------------
#
# negating_batch (sim.ppu_stimuli) picks the values y that RoundingDivideByPOT sees.

#: (C, L) pairs for the edge tests: full width, and time-shared with L dividing C or not.
BOUNDARY_LANES = [(8, None), (5, 2), (16, 1)]
#: Floors of y / 2**shift whose results lie at and around the int8 limits, 0, and the ends of
#: -256 .. 255 (where q_ stops comparing z on 9 bits) and of -512 .. 511.
ROUNDING_FLOORS = [-513, -512, -511, -257, -256, -255, -129, -128, -127, -2, -1, 0, 1, 126, 127,
                   128, 254, 255, 256, 510, 511, 512]


@pytest.mark.parametrize("cols, lanes", BOUNDARY_LANES)
def test_rounding_boundaries(cols, lanes):
    # Every shift 0 to 31, each with values exactly at .5 of a result and one either side, both
    # signs (halves round away from zero), and the largest and smallest y.
    rng = np.random.default_rng(200 + cols)
    batches, halves = [], set()
    for shift in range(32):
        floors = ROUNDING_FLOORS + [INT32_MIN >> shift, INT32_MAX >> shift]
        ys = values_around(shift, floors) + [INT32_MIN + 1, INT32_MAX]
        batches.append(negating_batch(rng, cols, ys, shift))
        if shift:
            halves |= {(y > 0, y >> shift) for y in ys
                       if y % 2**shift == 2**(shift - 1) and -128 <= y >> shift <= 127}
    results, expected = run_ppu(cols, batches, lanes=lanes, stall=0.2, seed=cols)
    assert results == expected
    # Exact halves, with in-range results, of either sign.
    assert {(True, 0), (True, 126), (False, -1), (False, -128)} <= halves


#: (zero_point, clamp_max) pairs, with clamp_max below, at and above the zero point.
CLAMP_CASES = [(0, 127), (-128, 127), (127, 127), (-128, -128), (-20, 6), (10, 100), (50, 50),
               (50, 49), (127, -128), (-1, -2)]
#: Shifts at the edges of the rounding bit test and of the small-z check (which looks at y's
#: bits from 8 + shift up: at shift 22 only bit 30; from 23 on, every z is within -256 .. 255).
CLAMP_SHIFTS = [0, 1, 2, 8, 21, 22, 23, 31]


@pytest.mark.parametrize("cols, lanes", BOUNDARY_LANES)
def test_clamp_boundaries(cols, lanes):
    # z + round + zero_point exactly at lo and hi and one and two beyond, with round 0 and 1, in
    # every mode, including clamp_max < zero_point (every output is clamp_max).
    rng = np.random.default_rng(300 + cols)
    batches, reached = [], set()
    for i, (activation, (zero_point, clamp_max)) in enumerate(
            (a, c) for a in Activation for c in CLAMP_CASES):
        shift = CLAMP_SHIFTS[i % len(CLAMP_SHIFTS)]
        lo, hi = golden.activation_bounds(activation, zero_point, clamp_max)
        floors = {t - zero_point + d for t in (lo, hi) for d in range(-3, 3)}
        ys = values_around(shift, sorted(floors | {-257, -256, -1, 0, 255, 256}))
        batches.append(negating_batch(rng, cols, ys, shift, zero_point, activation, clamp_max))
        z = golden.rounding_divide_by_pot(ys, shift).astype(np.int64)
        for y, q in zip(ys, z + zero_point):
            rounded = int(q - zero_point != y >> shift)
            for name, bound in (("lo", lo), ("hi", hi)):
                if abs(q - bound) <= 1:
                    reached.add((activation, name, int(q - bound), rounded))
    results, expected = run_ppu(cols, batches, lanes=lanes, stall=0.2, seed=cols)
    assert results == expected
    # Each bound, exactly and one beyond either side, with and without the rounding increment.
    assert reached == {(a, name, d, r) for a in Activation for name in ("lo", "hi")
                       for d in (-1, 0, 1) for r in (0, 1)}
    # The upper bound wins when clamp_max < zero_point.
    rows = iter(results)
    for config, acc in batches:
        values = {v for _ in acc for v in next(rows)[0]}
        if config["activation"] == Activation.CLAMP and \
                config["clamp_max"] < config["zero_point"]:
            assert values == {config["clamp_max"]}


@pytest.mark.parametrize("cols, lanes", [(3, None), (5, 2), (16, 1)])
def test_config_changes_with_first_row(cols, lanes):
    # The per-layer constants derived from cfg are registered, a cycle behind cfg, but used
    # only from the r_ stage on: cfg may change in the very cycle in which the first row of
    # the next layer is offered (run_ppu does that with idle=0), and every field can change.
    rng = np.random.default_rng(400 + cols)
    batches = []
    for i in range(12):
        config = random_config(rng, cols, Activation(i % 3))
        batches.append((config, accumulators_for(rng, config, 1 + i % 3, cols)))
    changes = []

    def watch(dut):
        async def process(ctx):
            previous = None
            async for _, _, cfg, valid in ctx.tick().sample(dut.cfg, dut.i.valid):
                if previous is not None and cfg != previous:
                    changes.append(valid)
                previous = cfg
        return process

    results, expected = run_ppu(cols, batches, lanes=lanes, monitors=[watch])
    assert results == expected
    assert changes == [1] * (len(batches) - 1)


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


@pytest.mark.parametrize("cols, lanes", [(4, None), (4, 1), (5, 2), (8, 3), (16, 1)])
def test_full_throughput(cols, lanes):
    # Without bubbles or backpressure, one row leaves every `interval` = ceil(C / L) cycles.
    rng = np.random.default_rng(9)
    config = random_config(rng, cols, Activation.RELU)
    cycles = []
    results, expected = run_ppu(cols, [(config, random_accumulators(rng, 40, cols))],
                                lanes=lanes, cycles=cycles)
    assert results == expected
    assert np.all(np.diff(cycles) == -(-cols // (lanes or cols)))


@pytest.mark.parametrize("cols, lanes, interval", [(8, None, 1), (8, 8, 1), (8, 4, 2),
                                                   (8, 3, 3), (8, 1, 8), (5, 2, 3)])
def test_properties(cols, lanes, interval):
    dut = PostProcessor(cols, lanes)
    assert (dut.cols, dut.lanes, dut.interval, dut.latency) == \
        (cols, lanes or cols, interval, 7)
    Fragment.get(dut, None)


@pytest.mark.parametrize("operand_stage, latency", [(True, 7), (False, 6)])
@pytest.mark.parametrize("lanes", [None, 1])
def test_latency(lanes, operand_stage, latency):
    # A row offered to an idle unit is taken in its last pass and comes out `latency` cycles
    # later.
    cols = 2
    dut = PostProcessor(cols, lanes, operand_stage=operand_stage)
    assert dut.latency == latency
    assert dut.interval == (1 if lanes is None else 2)
    seen = []

    async def testbench(ctx):
        ctx.set(dut.cfg, {"bias": [0] * cols, "multiplier": 2**30, "shift": 0,
                             "zero_point": 0, "activation": Activation.NONE, "clamp_max": 0})
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.payload, {"data": [6, -6], "last": 1})
        ctx.set(dut.i.valid, 1)
        for cycle in range(3 * (dut.interval + dut.latency)):
            taken = ctx.get(dut.i.valid) and ctx.get(dut.i.ready)
            if taken:
                seen.append(("in", cycle))
            if ctx.get(dut.o.valid):
                seen.append(("out", cycle, [int(v) for v in ctx.get(dut.o.payload.data)],
                             ctx.get(dut.o.payload.last)))
            await ctx.tick()
            if taken:
                ctx.set(dut.i.valid, 0)

    simulate(dut, [testbench])
    accepted = dut.interval - 1
    assert seen == [("in", accepted), ("out", accepted + dut.latency, [3, -3], 1)]


@pytest.mark.parametrize("operand_stage", [True, False])
@pytest.mark.parametrize("cols, lanes", [(1, None), (3, 1), (5, 2)])
def test_backpressure_holds_output(cols, lanes, operand_stage):
    # While o.ready is low the output row stays put and the input stops: the stages hold as
    # many passes, and the first P - 1 passes of the output row wait in o_collect.
    dut = PostProcessor(cols, lanes, operand_stage=operand_stage)
    passes = dut.interval
    count = dut.latency + 2                         # more rows than the stages hold
    log = []

    def row(value):
        return [10 * value + j for j in range(cols)]

    async def producer(ctx):
        ctx.set(dut.cfg, {"bias": [0] * cols, "multiplier": INT32_MAX, "shift": 0,
                             "zero_point": 0, "activation": Activation.NONE, "clamp_max": 0})
        await stream_put_all(ctx, dut.i, [{"data": row(value), "last": 0}
                                          for value in range(1, count + 1)])

    async def consumer(ctx):
        await ctx.tick().repeat(3 * (dut.latency + passes))
        log.append((ctx.get(dut.o.valid), [int(v) for v in ctx.get(dut.o.payload.data)],
                    ctx.get(dut.i.valid), [int(v) for v in ctx.get(dut.i.payload.data)],
                    ctx.get(dut.i.ready)))
        log.append([[int(v) for v in p.data] for p in await stream_get_n(ctx, dut.o, count)])

    simulate(dut, [producer, consumer])
    # Passes 0 .. latency + P - 2 have entered: the row of the next one waits on `i`.
    waiting = (dut.latency + passes - 1) // passes + 1
    assert log == [(1, row(1), 1, row(waiting), 0),
                   [row(value) for value in range(1, count + 1)]]


def test_lanes_equal_to_cols_is_the_parallel_unit():
    # lanes = C builds exactly the default unit.
    assert emit_verilog(PostProcessor(3, 3), "ppu") == emit_verilog(PostProcessor(3), "ppu")


def test_no_operand_stage_no_platform_multipliers():
    # Without the operand stage the block's operand registers have no stage to be: the unit
    # does not ask.
    platform = _MultiplierPlatform()
    Fragment.get(PostProcessor(2, 1, operand_stage=False), platform)
    assert platform.asked == []


def test_bad_operand_stage():
    with pytest.raises(TypeError, match="Operand stage must be a bool, not 0"):
        PostProcessor(2, 1, operand_stage=0)


@pytest.mark.parametrize("make, message", [
    (lambda lane, part: None if part == "ll" else PipelinedMultiplier(PART_WIDTH), "not None"),
    (lambda lane, part: PipelinedMultiplier(9), "not <sim.multiplier.PipelinedMultiplier"),
    (lambda lane, part: 3, "not 3"),
])
def test_bad_platform_multipliers(make, message):
    dut = PostProcessor(2, 1)
    with pytest.raises(TypeError, match=r"get_ppu_multiplier must give every part a component "
                                        r"with MultiplierSignature\(17\) or none of them, "
                                        + message):
        Fragment.get(dut, _MultiplierPlatform(make))


@pytest.mark.parametrize("cols, lanes, error, message", [
    (0, None, ValueError, "Column count must be between 1 and"),
    (-3, None, ValueError, "Column count must be between 1 and"),
    (8.0, None, TypeError, "Column count must be an integer, not 8.0"),
    ("8", None, TypeError, "Column count must be an integer, not '8'"),
    (True, None, TypeError, "Column count must be an integer"),
    (8, 0, ValueError, "Lane count must be between 1 and 8, not 0"),
    (8, 9, ValueError, "Lane count must be between 1 and 8, not 9"),
    (8, 2.0, TypeError, "Lane count must be an integer, not 2.0"),
    (8, "2", TypeError, "Lane count must be an integer, not '2'"),
    (8, True, TypeError, "Lane count must be an integer"),
])
def test_bad_parameters(cols, lanes, error, message):
    with pytest.raises(error, match=message):
        PostProcessor(cols, lanes)


# Synthesis ------------------------------------------------------------------------------------

class Multiply(wiring.Component):
    """One registered 32 x 32 signed multiply: what the PPU's ``h_`` and ``s_`` stages compute,
    in one cycle."""
    a: In(signed(32))
    b: In(signed(32))
    p: Out(signed(64))

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.p.eq(self.a * self.b)
        return m


def dsp_blocks(dut, path, *, whole=False, family="ecp5"):
    """DSP multipliers that Yosys uses for ``dut``, MULT18X18D on ECP5 or SB_MAC16 on iCE40
    (``synth_ice40 -dsp``): by default stopping after the coarse step, where multiplies are
    mapped to DSPs (a few seconds), or through the whole flow."""
    path.mkdir()
    options = ("-dsp " if family == "ice40" else "") + ("" if whole else "-run begin:map_ram")
    cells = synthesize(dut, family, path, options=options)
    return cells.get({"ecp5": "MULT18X18D", "ice40": "SB_MAC16"}[family], 0)


def test_one_lane_one_multiplier(tmp_path):
    # With one lane the unit costs the DSP blocks of a single 32 x 32 multiply (4 on ECP5),
    # however long the row.
    per_multiply = dsp_blocks(Multiply(), tmp_path / "multiply")
    assert per_multiply > 0
    assert dsp_blocks(PostProcessor(3, lanes=1), tmp_path / "ppu") == per_multiply


@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_partial_products_one_dsp_each(family, tmp_path):
    # The four 16 x 16 partial products of the split multiply map to one DSP block each: an
    # 18 x 18 MULT18X18D on ECP5, a 16 x 16 SB_MAC16 on iCE40 (signedness set per operand).
    assert dsp_blocks(PostProcessor(2, lanes=1), tmp_path / "ppu", family=family) == 4


@pytest.mark.slow
@pytest.mark.parametrize("lanes", [1, 4, 8])
def test_multipliers_per_lane(lanes, tmp_path):
    # L lanes, L multipliers, after the whole synthesis flow: 8 columns cost 32 MULT18X18D at
    # full width, 4 with one lane (about 10 s of Yosys at full width).
    per_multiply = dsp_blocks(Multiply(), tmp_path / "multiply", whole=True)
    assert dsp_blocks(PostProcessor(8, lanes), tmp_path / "ppu", whole=True) == \
        lanes * per_multiply
