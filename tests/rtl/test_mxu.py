import random

import numpy as np
import pytest

from rtl.mxu import MAX_ROWS, MatrixUnit
from rtl.pe import ProcessingElement
from rtl.booth_multiplier import BoothMultiplier
from sim.golden.mxu import MatrixUnitModel, matmul
from sim.multiplier import PipelinedMultiplier
from sim.stream import stream_get_n, stream_put_all
from sim.testbench import simulate


def make_tiles(rng, rows, cols, tiles, *, depth=(1, 12), extremes=False):
    """Random tiles: (weights, weights_signed, activations, activations_signed)."""
    result = []
    for _ in range(tiles):
        depth_ = rng.integers(depth[0], depth[1] + 1)
        w_signed, x_signed = bool(rng.integers(2)), bool(rng.integers(2))
        if extremes:
            w = rng.choice([0, 127, 128, 255], size=(rows, cols))
            x = rng.choice([0, 127, 128, 255], size=(depth_, rows))
        else:
            w = rng.integers(0, 256, size=(rows, cols))
            x = rng.integers(0, 256, size=(depth_, rows))
        result.append((w, w_signed, x, x_signed))
    return result


def run_mxu(rows, cols, tiles, *, idle=0.0, stall=0.0, seed=0, cycles=None, platform=None):
    """Stream ``tiles`` through a MatrixUnit; return the result rows and the expected ones."""
    dut = MatrixUnit(rows, cols)
    model = MatrixUnitModel(rows, cols)
    weight_rows, activation_rows, expected = [], [], []
    for w, w_signed, x, x_signed in tiles:
        for r in range(rows):
            weight_rows.append({"data": list(w[r]), "signed": w_signed})
            model.load_row(w[r], w_signed)
        for index, row in enumerate(x):
            first, last = index == 0, index == len(x) - 1
            activation_rows.append({"data": list(row), "signed": x_signed,
                                    "first": first, "last": last})
            expected.append((list(model.push(row, x_signed, first)), last))
    results = []

    async def put_weights(ctx):
        await stream_put_all(ctx, dut.w, weight_rows, idle=idle, rng=random.Random(seed))

    async def put_activations(ctx):
        await stream_put_all(ctx, dut.x, activation_rows, idle=idle,
                             rng=random.Random(seed + 1))

    async def get_results(ctx):
        for payload in await stream_get_n(ctx, dut.o, len(expected), stall=stall,
                                          rng=random.Random(seed + 2), cycles=cycles):
            results.append(([int(v) for v in payload.data], bool(payload.last)))

    simulate(dut, [get_results], [put_weights, put_activations], platform=platform)
    return results, expected


@pytest.mark.parametrize("rows, cols", [(1, 1), (1, 4), (4, 1), (2, 3), (3, 2), (4, 4), (8, 8)])
def test_random_tiles(rows, cols):
    rng = np.random.default_rng(rows * 100 + cols)
    tiles = make_tiles(rng, rows, cols, tiles=4)
    results, expected = run_mxu(rows, cols, tiles, idle=0.3, stall=0.3, seed=rows + cols)
    assert results == expected


@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 5), (8, 8)])
def test_extreme_values(rows, cols):
    rng = np.random.default_rng(7)
    tiles = make_tiles(rng, rows, cols, tiles=3, extremes=True)
    # Every corner: -128 * -128, 127 * -128, 255 * 255 (uint8) on every cell.
    for value, is_signed in [(128, True), (127, True), (255, False)]:
        w = np.full((rows, cols), value)
        x = np.full((2, rows), 128 if is_signed else 255)
        tiles.append((w, is_signed, x, is_signed))
    results, expected = run_mxu(rows, cols, tiles)
    assert results == expected
    # The exact sums, far beyond int16, arrive unclipped.
    assert results[-1][0] == [255 * 255 * rows] * cols


def test_matches_matmul():
    # The streaming model and the plain product agree, so either can serve as reference.
    rng = np.random.default_rng(3)
    rows, cols = 5, 3
    a = rng.integers(-128, 128, size=(9, rows))
    b = rng.integers(0, 256, size=(rows, cols))
    results, _ = run_mxu(rows, cols, [(b, False, a, True)])
    expected = matmul(a, b, a_signed=True, b_signed=False)
    assert np.array_equal(np.array([row for row, _ in results]), expected)


@pytest.mark.parametrize("rows, cols", [(2, 2), (4, 3), (8, 8)])
def test_back_to_back_tiles_without_bubbles(rows, cols):
    # With tiles of at least 2R + C - 1 rows, weight loads hide completely behind compute:
    # results leave on consecutive cycles across every weight swap.
    rng = np.random.default_rng(11)
    depth = 2 * rows + cols - 1
    tiles = make_tiles(rng, rows, cols, tiles=4, depth=(depth, depth))
    cycles = []
    results, expected = run_mxu(rows, cols, tiles, cycles=cycles)
    assert results == expected
    assert np.all(np.diff(cycles) == 1), f"bubbles at {np.nonzero(np.diff(cycles) != 1)}"


class _MultiplierPlatform:
    """Gives cells the multiplier that ``make(row, col)`` returns and records which it asked
    for. (The MXU's EnableInserter reaches these too, unlike a vendor primitive's, so the
    wiring of ``en`` is checked on the ULX3S netlist instead: tests/boards/test_dsp_mapping.py.)
    """
    def __init__(self, make):
        self.make = make
        self.asked = []

    def get_multiplier(self, row, col):
        self.asked.append((row, col))
        return self.make(row, col)


#: Which cells get which multiplier: every other one the behavioural model of a DSP block, or
#: every other one a BoothMultiplier (the ULX3S's cells in logic), or a mix of all three kinds.
MULTIPLIERS = {
    "pipelined": lambda row, col: PipelinedMultiplier() if (row + col) % 2 == 0 else None,
    "booth": lambda row, col: BoothMultiplier() if (row + col) % 2 == 0 else None,
    "mixed": lambda row, col: [PipelinedMultiplier, BoothMultiplier, lambda: None][
        (row + col) % 3](),
}


@pytest.mark.parametrize("kind", list(MULTIPLIERS))
@pytest.mark.parametrize("rows, cols", [(2, 3), (4, 4)])
def test_platform_multipliers(rows, cols, kind):
    # Cells with the platform's multipliers and cells with their own compute alike and in step.
    rng = np.random.default_rng(rows * 10 + cols)
    tiles = make_tiles(rng, rows, cols, tiles=4)
    platform = _MultiplierPlatform(MULTIPLIERS[kind])
    results, expected = run_mxu(rows, cols, tiles, idle=0.3, stall=0.4, seed=5,
                                platform=platform)
    assert results == expected
    assert sorted(platform.asked) == [(i, j) for i in range(rows) for j in range(cols)]


def test_bad_multiplier():
    with pytest.raises(TypeError, match="Multiplier must be a component with "
                                        "MultiplierSignature or None, not 3"):
        ProcessingElement(0, multiplier=3)


def test_latency():
    rows, cols = 3, 5
    dut = MatrixUnit(rows, cols)
    assert dut.latency == rows + cols + 3          # see docs/architecture.md, "Timing"
    seen = []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.x.payload, {"data": [1] * rows, "signed": 1, "first": 0, "last": 1})
        ctx.set(dut.x.valid, 1)
        await ctx.tick()
        ctx.set(dut.x.valid, 0)
        for cycle in range(1, 2 * dut.latency):
            if ctx.get(dut.o.valid):
                seen.append(cycle)
            await ctx.tick()

    simulate(dut, [testbench])
    assert seen == [dut.latency]


@pytest.mark.parametrize("rows, cols, error, message", [
    (0, 4, ValueError, "Row count must be between 1 and"),
    (4, 0, ValueError, "Column count must be between 1 and"),
    (MAX_ROWS + 1, 1, ValueError, "Row count"),
    (8.0, 8, TypeError, "Row count must be an integer, not 8.0"),
    (8, "8", TypeError, "Column count must be an integer, not '8'"),
    (True, 8, TypeError, "Row count must be an integer"),
])
def test_bad_parameters(rows, cols, error, message):
    with pytest.raises(error, match=message):
        MatrixUnit(rows, cols)


@pytest.mark.slow
@pytest.mark.parametrize("rows, cols", [(16, 16), (5, 13), (13, 5), (32, 4)])
def test_random_tiles_exhaustive(rows, cols):
    rng = np.random.default_rng(rows * 1000 + cols)
    tiles = make_tiles(rng, rows, cols, tiles=12, depth=(1, 3 * rows))
    results, expected = run_mxu(rows, cols, tiles, idle=0.2, stall=0.2, seed=rows * cols)
    assert results == expected
