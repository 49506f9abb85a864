import json

import numpy as np
import pytest
from amaranth.hdl import Fragment

from boards.logic_depth import logic_depth
from rtl.ppu import Activation, PostProcessor
from rtl.serial_ppu import SerialPostProcessor
from rtl.verilog import emit_verilog
from sim.golden import ppu as golden
from sim.golden.ppu import INT32_MAX, INT32_MIN
from sim.ppu_stimuli import (accumulators_for, negating_batch, random_accumulators, random_config,
                             stream_batches, values_around)
from sim.stream import stream_get_n, stream_put_all
from sim.synthesis import synthesize
from sim.testbench import simulate


def run_serial(cols, batches, *, stall=0.0, **options):
    """Stream batches of ``(config, accumulator rows)`` through a SerialPostProcessor
    (:func:`sim.ppu_stimuli.stream_batches` with ``stall`` and ``options``). Returns the output
    rows and the expected ones as lists of ``(values, last)``."""
    dut = SerialPostProcessor(cols)
    return stream_batches(dut, batches, row_cycles=dut.row_cycles(31) * (1 + 2 * stall) + 40,
                          stall=stall, **options)


@pytest.mark.parametrize("activation", list(Activation))
@pytest.mark.parametrize("cols", [1, 2, 3, 5])
def test_random_rows(cols, activation):
    rng = np.random.default_rng(cols * 10 + activation.value + 500)
    configs = [random_config(rng, cols, activation) for _ in range(3)]
    batches = [(config, accumulators_for(rng, config, 10, cols)) for config in configs]
    results, expected = run_serial(cols, batches, idle=0.3, stall=0.3, seed=cols)
    assert results == expected
    values = [v for row, _ in results for v in row]
    assert len(set(values)) > 10


EDGE_ACCUMULATORS = [INT32_MIN, INT32_MIN + 1, -2**30, -2**30 - 1, -12345, -2, -1, 0, 1, 2,
                     12345, 2**30, 2**30 + 1, INT32_MAX - 1, INT32_MAX]


@pytest.mark.parametrize("cols", [1, 3])
def test_edge_values(cols):
    # Extreme multipliers (negative ones and 0 among them), shifts 0 and 31, biases that make
    # acc + bias wrap, every mode.
    rng = np.random.default_rng(100 + cols)
    batches = []
    multipliers = [INT32_MAX, 2**30, INT32_MIN, -1, 0, -2**30 - 7]
    for i, multiplier in enumerate(multipliers):
        for j, shift in enumerate([0, 31, 1, 9]):
            zero_point = int(rng.choice([-128, 127, 0]))
            config = {
                "bias":       [int(v) for v in rng.choice([INT32_MIN, INT32_MAX, 0, -1, 1],
                                                          size=cols)],
                "multiplier": multiplier,
                "shift":      shift,
                "zero_point": zero_point,
                "activation": Activation((i + j) % 3),
                "clamp_max":  int(rng.choice([-128, 127, max(-128, zero_point - 1)])),
            }
            acc = rng.choice(EDGE_ACCUMULATORS, size=(len(EDGE_ACCUMULATORS), cols))
            acc[:, 0] = EDGE_ACCUMULATORS                   # every edge on column 0
            batches.append((config, acc))
    results, expected = run_serial(cols, batches, idle=0.2, stall=0.2, seed=cols)
    assert results == expected
    wrapped = any(np.any(np.abs(acc.astype(object) + np.array(config["bias"], object)) >= 2**31)
                  for config, acc in batches)
    values = {v for row, _ in results for v in row}
    assert wrapped and {-128, 127} <= values


@pytest.mark.parametrize("shift, zero_point, activation, clamp_max, out", [
    # y = 2**31 (INT32_MIN * INT32_MIN, where the reference saturates to INT32_MAX): with
    # shift 0 it saturates the output; with shift 31, 0.99999... and 1 both round to 1.
    (0, 127, Activation.NONE, 0, 127),
    (0, -128, Activation.CLAMP, 5, 5),
    (31, 0, Activation.NONE, 0, 1),
    (31, -3, Activation.RELU, 0, -2),
    (30, 0, Activation.NONE, 0, 2),
])
def test_saturating_product(shift, zero_point, activation, clamp_max, out):
    config = {"bias": [0, INT32_MIN], "multiplier": INT32_MIN, "shift": shift,
              "zero_point": zero_point, "activation": activation, "clamp_max": clamp_max}
    acc = np.array([[INT32_MIN, 0], [INT32_MIN + 1, INT32_MIN]])     # x = INT32_MIN, -2**31 + 1
    results, expected = run_serial(2, [(config, acc)])
    assert results == expected
    assert results[0][0] == [out, out]
    assert golden.srdhm(INT32_MIN, INT32_MIN) == INT32_MAX


@pytest.mark.parametrize("multiplier", [INT32_MIN, INT32_MAX, -1, 1, INT32_MIN + 1])
def test_carry_save_extremes(multiplier):
    # The carry-save vectors' width (34 bits) and the sign bit's -4 M = (~M << 2) + 4: the
    # largest products of either sign (x and M both INT32_MIN, both INT32_MAX, INT32_MIN with
    # INT32_MAX or -1), with shifts 0 (y itself, saturated to the int8 range, or through
    # zero points at both ends) to 31, every x sign, and a rounding bit of either value.
    xs = [INT32_MIN, INT32_MIN + 1, INT32_MAX, INT32_MAX - 1, -2, -1, 0, 1, 2, 2**30, -2**30]
    batches = []
    for shift in (0, 1, 2, 15, 29, 30, 31):
        for zero_point in (-128, 0, 127):
            config = {"bias": [0, INT32_MIN], "multiplier": multiplier, "shift": shift,
                      "zero_point": zero_point, "activation": Activation.NONE, "clamp_max": 0}
            acc = np.array([[x, (x - 2 * INT32_MIN) % 2**32 + INT32_MIN] for x in xs])
            batches.append((config, acc))          # the same x in both columns
    results, expected = run_serial(2, batches)
    assert results == expected
    assert all(row[0] == row[1] for row, _ in results)
    ys = golden.srdhm(np.array(xs), multiplier)
    assert abs(multiplier) == 1 or (ys.min() < -2**30 and ys.max() > 2**30)
    values = {v for row, _ in results for v in row}
    assert {-128, 127} <= values


def test_rounding_boundaries():
    # Every shift 0 to 31, with values exactly at .5 of a result and one either side, both
    # signs (halves round away from zero), and the largest and smallest y.
    cols = 2
    rng = np.random.default_rng(200)
    batches, halves = [], set()
    for shift in range(32):
        floors = [-129, -128, -2, -1, 0, 1, 126, 127, INT32_MIN >> shift, INT32_MAX >> shift]
        ys = values_around(shift, floors) + [INT32_MIN + 1, INT32_MAX]
        batches.append(negating_batch(rng, cols, ys, shift))
        if shift:
            halves |= {(y > 0, y >> shift) for y in ys
                       if y % 2**shift == 2**(shift - 1) and -128 <= y >> shift <= 127}
    results, expected = run_serial(cols, batches, stall=0.1, seed=3)
    assert results == expected
    assert {(True, 0), (True, 126), (False, -1), (False, -128)} <= halves


#: (zero_point, clamp_max) pairs, with clamp_max below, at and above the zero point.
CLAMP_CASES = [(0, 127), (-128, 127), (127, 127), (-128, -128), (-20, 6), (50, 49), (127, -128)]


def test_clamp_boundaries():
    # z + round + zero_point exactly at lo and hi and one beyond, with round 0 and 1, in every
    # mode, including clamp_max < zero_point (every output is clamp_max).
    cols = 3
    rng = np.random.default_rng(300)
    batches, reached = [], set()
    for i, (activation, (zero_point, clamp_max)) in enumerate(
            (a, c) for a in Activation for c in CLAMP_CASES):
        shift = [0, 1, 2, 8, 23, 31][i % 6]
        lo, hi = golden.activation_bounds(activation, zero_point, clamp_max)
        floors = {t - zero_point + d for t in (lo, hi) for d in range(-2, 2)}
        ys = values_around(shift, sorted(floors | {-1, 0}))
        batches.append(negating_batch(rng, cols, ys, shift, zero_point, activation, clamp_max))
        z = golden.rounding_divide_by_pot(ys, shift).astype(np.int64)
        for y, q in zip(ys, z + zero_point):
            rounded = int(q - zero_point != y >> shift)
            for name, bound in (("lo", lo), ("hi", hi)):
                if abs(q - bound) <= 1:
                    reached.add((activation, name, int(q - bound), rounded))
    results, expected = run_serial(cols, batches, stall=0.2, seed=cols)
    assert results == expected
    assert reached == {(a, name, d, r) for a in Activation for name in ("lo", "hi")
                       for d in (-1, 0, 1) for r in (0, 1)}
    rows = iter(results)
    for config, acc in batches:
        values = {v for _ in acc for v in next(rows)[0]}
        if config["activation"] == Activation.CLAMP and \
                config["clamp_max"] < config["zero_point"]:
            assert values == {config["clamp_max"]}


def test_clamp_max_below_zero_point():
    # The upper bound wins: every output is clamp_max, in the RTL as in the model.
    rng = np.random.default_rng(7)
    config = random_config(rng, 2, Activation.CLAMP) | {"zero_point": 50, "clamp_max": -7}
    results, expected = run_serial(2, [(config, random_accumulators(rng, 12, 2))])
    assert results == expected
    assert {v for row, _ in results for v in row} == {-7}


def test_reserved_activation_behaves_as_none():
    rng = np.random.default_rng(8)
    config = random_config(rng, 2, 3) | {"zero_point": 20}
    results, expected = run_serial(2, [(config, random_accumulators(rng, 12, 2))],
                                   model_activation=golden.NONE)
    assert results == expected
    assert min(v for row, _ in results for v in row) < 20      # no RELU clamp happened


def test_last_carried_through():
    # Any pattern of `last` flags comes out with its rows, not only a batch's last row.
    rng = np.random.default_rng(9)
    config = random_config(rng, 2, Activation.NONE) | {"shift": 3}
    lasts = [bool(v) for v in rng.integers(0, 2, 16)]
    results, expected = run_serial(2, [(config, random_accumulators(rng, 16, 2))], lasts=lasts,
                                   idle=0.3, stall=0.5, seed=4)
    assert results == expected
    assert [last for _, last in results] == lasts and 0 < sum(lasts) < 16


def test_config_changes_with_first_row():
    # cfg may change in the very cycle in which the first row of the next layer is offered.
    cols = 2
    rng = np.random.default_rng(400)
    batches = []
    for i in range(9):
        config = random_config(rng, cols, Activation(i % 3))
        batches.append((config, accumulators_for(rng, config, 1 + i % 2, cols)))
    changes = []

    def watch(dut):
        async def process(ctx):
            previous = None
            async for _, _, cfg, valid in ctx.tick().sample(dut.cfg, dut.i.valid):
                if previous is not None and cfg != previous:
                    changes.append(valid)
                previous = cfg
        return process

    results, expected = run_serial(cols, batches, monitors=[watch])
    assert results == expected
    assert changes == [1] * (len(batches) - 1)


@pytest.mark.parametrize("cols", [1, 2, 3])
@pytest.mark.parametrize("shift", [0, 1, 17, 31])
def test_row_cycles(cols, shift):
    # A row offered to an idle unit is presented row_cycles(shift) cycles later, and at full
    # rate (input always valid, output always ready) rows leave row_cycles(shift) apart.
    rng = np.random.default_rng(10 + shift)
    config = random_config(rng, cols, Activation.RELU) | {"shift": shift}
    dut = SerialPostProcessor(cols)
    assert dut.row_cycles(shift) == cols * max(67, 44 + shift) + 1
    Fragment.get(dut, None)
    cycles = []
    results, expected = run_serial(cols, [(config, random_accumulators(rng, 4, cols))],
                                   cycles=cycles)
    assert results == expected
    row = dut.row_cycles(shift)
    # The producer offers the first row in cycle 0, the consumer counts from cycle 0 too.
    assert cycles == [row * (k + 1) for k in range(4)]


def test_backpressure_holds_output():
    # While o.ready is low the output row stays put, and the next row waits on `i`, untaken.
    cols = 2
    dut = SerialPostProcessor(cols)
    config = {"bias": [0, 0], "multiplier": INT32_MAX, "shift": 0, "zero_point": 0,
              "activation": Activation.NONE, "clamp_max": 0}
    rows = [[10 * value + j for j in range(cols)] for value in range(1, 4)]
    log = []

    async def producer(ctx):
        ctx.set(dut.cfg, config)
        await stream_put_all(ctx, dut.i, [{"data": row, "last": 0} for row in rows])

    async def consumer(ctx):
        await ctx.tick().repeat(5 * dut.row_cycles(0))
        log.append((ctx.get(dut.o.valid), [int(v) for v in ctx.get(dut.o.payload.data)],
                    ctx.get(dut.i.valid), [int(v) for v in ctx.get(dut.i.payload.data)],
                    ctx.get(dut.i.ready)))
        log.append([[int(v) for v in p.data] for p in await stream_get_n(ctx, dut.o, 3)])

    simulate(dut, [producer, consumer])
    # Row 1 waits on `o`; row 2 waits on `i`, untaken, as rows do not overlap.
    assert log == [(1, rows[0], 1, rows[1], 0), rows]


@pytest.mark.parametrize("cols, error, message", [
    (0, ValueError, "Column count must be between 1 and"),
    (-3, ValueError, "Column count must be between 1 and"),
    (2.0, TypeError, "Column count must be an integer, not 2.0"),
    ("2", TypeError, "Column count must be an integer, not '2'"),
    (True, TypeError, "Column count must be an integer"),
])
def test_bad_parameters(cols, error, message):
    with pytest.raises(error, match=message):
        SerialPostProcessor(cols)


@pytest.mark.parametrize("shift, error, message", [
    (32, ValueError, "Shift must be between 0 and 31, not 32"),
    (-1, ValueError, "Shift must be between 0 and 31, not -1"),
    (1.0, TypeError, "Shift must be an integer, not 1.0"),
])
def test_bad_shift(shift, error, message):
    dut = SerialPostProcessor(2)
    with pytest.raises(error, match=message):
        dut.row_cycles(shift)
    Fragment.get(dut, None)


def test_same_ports_as_post_processor():
    for cols in (1, 3):
        serial, parallel = SerialPostProcessor(cols), PostProcessor(cols)
        assert serial.signature == parallel.signature and serial.cols == cols
        Fragment.get(serial, None)
        Fragment.get(parallel, None)


def test_emit_verilog():
    text = emit_verilog(SerialPostProcessor(3), "serial_ppu")
    assert "module serial_ppu" in text and "s_vec" in text and "c_vec" in text


def test_ice40_area(tmp_path):
    # The point of the unit: on the iCEBreaker's UP5K (C = 2, as PostProcessor(2, 1,
    # operand_stage=False) is built there) it must take well under the logic, flip-flops and
    # carry cells of the pipelined PPU (about half and a tenth of the carries), and no DSP block.
    def cells(dut, name):
        (tmp_path / name).mkdir()
        counts = synthesize(dut, "ice40", tmp_path / name, options="-dsp")
        flops = sum(n for cell, n in counts.items() if cell.startswith("SB_DFF"))
        return (counts.get("SB_LUT4", 0), flops, counts.get("SB_CARRY", 0),
                counts.get("SB_MAC16", 0))

    serial = cells(SerialPostProcessor(2), "serial")
    parallel = cells(PostProcessor(2, 1, operand_stage=False), "parallel")
    print(f"iCE40 SB_LUT4, flip-flops, SB_CARRY, SB_MAC16: serial {serial}, "
          f"PostProcessor {parallel}")
    assert serial[0] < 0.6 * parallel[0] and serial[1] < 0.6 * parallel[1]
    assert serial[2] < parallel[2] / 4
    assert serial[3] == 0 and parallel[3] > 0


def test_ice40_logic_depth(tmp_path):
    # Its purpose on the UP5K: short paths (4 LUT levels, the 9-bit compares' carry chains
    # included; a 32-bit add of x after the accumulator's read port was the iCEBreaker's
    # critical path), so that the unit does not limit the clock.
    synthesize(SerialPostProcessor(2), "ice40", tmp_path, options="-dsp")
    depth = logic_depth(json.loads((tmp_path / "top.json").read_text()), "ice40")
    print(f"iCE40 logic depth: {depth.max_levels:.1f} levels")
    assert depth.max_levels <= 4.5
