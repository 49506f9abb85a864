"""cocotb tests of the Verilog matrix unit ``puce_mxu`` against the golden model.

The design is :func:`rtl.verilog.mxu_verilog` (an R x C :class:`rtl.mxu.MatrixUnit`); its
streams are flattened to ``w__valid``/``w__ready``/``w__payload`` and so on, each payload one bit
vector. The bit positions of the payload fields come from the Amaranth layouts themselves
(``WeightRow(cols)``, ``ActivationRow(rows)``, ``ResultRow(cols)``), so a change of layout
changes the testbench with it.

Every result row is compared with :class:`sim.golden.mxu.MatrixUnitModel`; any difference, a
missing or extra row, a dropped ``last`` flag, an output that changes while stalled, or a hang
(every test runs under :func:`cocotb.triggers.with_timeout`) fails the test.

Settings (environment variables, all optional):

``PUCE_ROWS``, ``PUCE_COLS``
    The size the Verilog was built for (default 8 x 8).
``PUCE_SEED``
    Seed of every random choice (default 1).
``PUCE_TILES``
    Weight tiles in the random test (default 6).
``PUCE_STREAM_ROWS``
    Activation rows in the long-stream test (default 256).
``PUCE_IDLE``, ``PUCE_STALL``
    Force the probability of an input bubble / of output backpressure per cycle (default random
    per test, up to 0.5).
``PUCE_CORRUPT_ROW``
    Deliberately expect a wrong value in this result row, to prove that mismatches fail.
``PUCE_STATS``
    Append a JSON line of measurements (cycles, wall time) per test to this file.
"""

import json
import os
import random
import time

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, SimTimeoutError, with_timeout

from amaranth.hdl import Shape
from amaranth.lib import data

from rtl.mxu import ActivationRow, MatrixUnit, ResultRow, WeightRow
from sim.golden.mxu import MatrixUnitModel

CLOCK_NS = 10


def _env_int(name, default):
    return int(os.environ.get(name, default))


def _env_float(name):
    value = os.environ.get(name)
    return None if value in (None, "") else float(value)


ROWS = _env_int("PUCE_ROWS", 8)
COLS = _env_int("PUCE_COLS", 8)
SEED = _env_int("PUCE_SEED", 1)

def _latency():
    unit = MatrixUnit(ROWS, COLS)
    unit._MustUse__silence = True  # only asked for its latency, never elaborated
    return unit.latency


LATENCY = _latency()


class Packing:
    """Bit positions of every leaf field of an Amaranth layout, to pack and unpack flat ports."""

    def __init__(self, layout):
        self.layout = data.Layout.cast(layout)
        self.width = self.layout.size
        self._leaves = {}  # top-level member -> [(offset, width, signed)] (a list for arrays)
        for name, field in self.layout:
            if isinstance(field.shape, data.ArrayLayout):
                element = Shape.cast(field.shape.elem_shape)
                self._leaves[name] = [(field.offset + sub.offset, element.width, element.signed)
                                      for _, sub in field.shape]
            else:
                shape = Shape.cast(field.shape)
                self._leaves[name] = (field.offset, shape.width, shape.signed)

    def pack(self, values):
        """A mapping of member to int (or list of ints, for arrays) as one unsigned int."""
        word = 0
        for name, leaf in self._leaves.items():
            value = values[name]
            if isinstance(leaf, list):
                if len(value) != len(leaf):
                    raise ValueError(f"{name} needs {len(leaf)} elements, not {len(value)}")
                for (offset, width, _), element in zip(leaf, value):
                    word |= (int(element) & ((1 << width) - 1)) << offset
            else:
                offset, width, _ = leaf
                word |= (int(value) & ((1 << width) - 1)) << offset
        return word

    @staticmethod
    def _field(word, offset, width, is_signed):
        value = (word >> offset) & ((1 << width) - 1)
        if is_signed and value >> (width - 1):
            value -= 1 << width
        return value

    def unpack(self, word):
        """One unsigned int as a dict of member to int (or list of ints)."""
        result = {}
        for name, leaf in self._leaves.items():
            if isinstance(leaf, list):
                result[name] = [self._field(word, *element) for element in leaf]
            else:
                result[name] = self._field(word, *leaf)
        return result

    def check_against_amaranth(self, values):
        """Pack ``values`` both ways (here and with ``layout.const``); they must agree."""
        mine = self.pack(values)
        theirs = self.layout.const(values).as_value().value
        assert mine == theirs, f"packing of {values} disagrees with Amaranth: {mine:#x} != {theirs:#x}"
        back = data.Const(self.layout, mine)
        for name, value in self.unpack(mine).items():
            expected = list(back[name]) if isinstance(value, list) else int(back[name])
            assert value == expected, f"unpacking {name}: {value} != {expected}"


W_PACK = Packing(WeightRow(COLS))
X_PACK = Packing(ActivationRow(ROWS))
O_PACK = Packing(ResultRow(COLS))

EXTREMES = (0, 1, 127, 128, 255)  # as bytes: 0, 1, 127, -128 / 128, -1 / 255


def random_tiles(rng, count, *, depth=(1, None), extremes=0.25):
    """``count`` random tiles: (weights, w_signed, activations, x_signed), bytes 0..255."""
    low, high = depth
    high = high or 2 * ROWS + COLS + 2
    tiles = []
    for _ in range(count):
        rows_of_x = int(rng.integers(low, high + 1))
        w = rng.integers(0, 256, size=(ROWS, COLS))
        x = rng.integers(0, 256, size=(rows_of_x, ROWS))
        # Sprinkle the extremes (-128, 127, 255 ...) over a fraction of the values.
        w = np.where(rng.random(w.shape) < extremes, rng.choice(EXTREMES, size=w.shape), w)
        x = np.where(rng.random(x.shape) < extremes, rng.choice(EXTREMES, size=x.shape), x)
        tiles.append((w, bool(rng.integers(2)), x, bool(rng.integers(2))))
    return tiles


def corner_tiles(depth=2):
    """Tiles made only of one extreme each: the largest and smallest sums the unit can make."""
    tiles = []
    for w_value, w_signed, x_value, x_signed in [
        (128, True, 128, True),    # -128 * -128: the largest signed product, R times
        (127, True, 128, True),    # 127 * -128: the most negative signed product
        (255, False, 255, False),  # 255 * 255: the largest unsigned product
        (128, True, 255, False),   # -128 * 255: the most negative mixed product
        (255, True, 127, True),    # -1 * 127
    ]:
        tiles.append((np.full((ROWS, COLS), w_value), w_signed,
                      np.full((depth, ROWS), x_value), x_signed))
    return tiles


def plan(tiles):
    """Packed weight rows, packed activation rows and the expected results, via the model."""
    model = MatrixUnitModel(ROWS, COLS)
    weights, activations, expected = [], [], []
    for w, w_signed, x, x_signed in tiles:
        for r in range(ROWS):
            weights.append(W_PACK.pack({"data": w[r], "signed": w_signed}))
            model.load_row(w[r], w_signed)
        for index, row in enumerate(x):
            first, last = index == 0, index == len(x) - 1
            activations.append(X_PACK.pack({"data": row, "signed": x_signed,
                                             "first": first, "last": last}))
            expected.append(([int(v) for v in model.push(row, x_signed, first)], int(last)))
    return weights, activations, expected


async def reset(dut):
    """Start the clock, put the streams idle and reset the unit for two cycles."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start(start_high=False)
    dut.w__valid.value = 0
    dut.x__valid.value = 0
    dut.o__ready.value = 0
    dut.w__payload.value = 0
    dut.x__payload.value = 0
    dut.rst.value = 1
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0


async def run_stream(dut, tiles, *, idle, stall, rng, name, progress):
    """Stream ``tiles`` through the unit and check every result row.

    Returns the cycle numbers of the activation transfers and of the result transfers.

    Inputs change only on the falling edge; ready/valid are sampled in the read-only phase just
    before the rising edge, when the transfer happens. ``progress`` (a dict) is kept up to date
    so that a timeout can say how far the stream got.
    """
    weights, activations, expected = plan(tiles)
    corrupt = _env_int("PUCE_CORRUPT_ROW", -1)
    if 0 <= corrupt < len(expected):
        expected[corrupt][0][0] += 1
    dut._log.info("%s: %d x %d, %d tiles, %d weight rows, %d activation rows, idle %.2f, "
                  "stall %.2f", name, ROWS, COLS, len(tiles), len(weights), len(activations),
                  idle, stall)

    w_valid, w_ready, w_payload = dut.w__valid, dut.w__ready, dut.w__payload
    x_valid, x_ready, x_payload = dut.x__valid, dut.x__ready, dut.x__payload
    o_valid, o_ready, o_payload = dut.o__valid, dut.o__ready, dut.o__payload
    falling, read_only = FallingEdge(dut.clk), ReadOnly()

    w_next = x_next = 0              # next row to offer
    w_offered = x_offered = False    # valid is high with row w_next / x_next
    w_high = x_high = 0              # the values driven on w.valid / x.valid
    ready = None                     # the value driven on o.ready
    received = 0
    in_cycles, out_cycles = [], []   # cycles of each activation / result transfer
    held = None                      # result payload the unit must hold (valid, not ready)
    cycle = 0
    start = time.perf_counter()
    while received < len(expected):
        await falling
        # Offer the next row unless this cycle is a bubble; valid drops after each transfer.
        # Signals are written only when they change (writes cost more than anything else here).
        if not w_offered:
            if w_next < len(weights) and not (idle and rng.random() < idle):
                w_payload.value = weights[w_next]
                if not w_high:
                    w_valid.value = w_high = 1
                w_offered = True
            elif w_high:
                w_valid.value = w_high = 0
        if not x_offered:
            if x_next < len(activations) and not (idle and rng.random() < idle):
                x_payload.value = activations[x_next]
                if not x_high:
                    x_valid.value = x_high = 1
                x_offered = True
            elif x_high:
                x_valid.value = x_high = 0
        taking = not (stall and rng.random() < stall)
        if taking != ready:
            o_ready.value = ready = taking

        await read_only
        if w_offered and w_ready.value:
            w_next += 1
            w_offered = False
        if x_offered and x_ready.value:
            in_cycles.append(cycle)
            x_next += 1
            x_offered = False
        if o_valid.value:
            word = o_payload.value.to_unsigned()
            if held is not None:
                assert word == held, (f"{name}: result row {received} changed while stalled "
                                      f"at cycle {cycle}")
            if taking:
                result = O_PACK.unpack(word)
                got = (result["data"], result["last"])
                want = expected[received]
                assert got == want, (f"{name}: result row {received} (cycle {cycle}) is "
                                     f"{got}, expected {want}")
                out_cycles.append(cycle)
                received += 1
                held = None
            else:
                held = word
        else:
            assert held is None, f"{name}: valid dropped while stalled at cycle {cycle}"
        cycle += 1
        progress.update(cycle=cycle, weights=(w_next, len(weights)),
                        activations=(x_next, len(activations)), results=(received, len(expected)))
    elapsed = time.perf_counter() - start
    assert w_next == len(weights) and x_next == len(activations), \
        f"{name}: results complete but inputs not all taken ({w_next}, {x_next})"

    # No further result may appear.
    await FallingEdge(dut.clk)
    dut.w__valid.value = 0
    dut.x__valid.value = 0
    dut.o__ready.value = 1
    for _ in range(LATENCY + 2):
        await ReadOnly()
        assert not dut.o__valid.value, f"{name}: unexpected extra result row"
        await FallingEdge(dut.clk)

    stats = {"test": name, "rows": ROWS, "cols": COLS, "cycles": cycle,
             "results": len(expected), "wall_s": elapsed,
             "cycles_per_s": cycle / elapsed if elapsed else None}
    dut._log.info("%s: %d results checked in %d cycles, %.0f cycles/s", name, len(expected),
                  cycle, stats["cycles_per_s"] or 0)
    if os.environ.get("PUCE_STATS"):
        with open(os.environ["PUCE_STATS"], "a") as file:
            file.write(json.dumps({"simulator": cocotb.SIM_NAME, **stats}) + "\n")
    return in_cycles, out_cycles


def _timeout_ns(tiles, idle, stall):
    """A generous bound on the simulated time a stream of ``tiles`` can take."""
    transfers = sum(ROWS + len(x) for _, _, x, _ in tiles)
    slowdown = 1 / max(0.05, (1 - idle) * (1 - stall))
    return int(4 * transfers * slowdown + 4 * LATENCY + 200) * CLOCK_NS


async def _checked(dut, tiles, *, idle, stall, rng, name):
    await reset(dut)
    progress = {}
    limit = _timeout_ns(tiles, idle, stall)
    try:
        return await with_timeout(run_stream(dut, tiles, idle=idle, stall=stall, rng=rng,
                                             name=name, progress=progress), limit, "ns")
    except SimTimeoutError:
        def taken(key):
            return "{}/{}".format(*progress.get(key, (0, "?")))
        raise AssertionError(
            f"{name}: timed out after {limit} ns ({progress.get('cycle', 0)} cycles): "
            f"{taken('weights')} weight rows and {taken('activations')} activation rows taken, "
            f"{taken('results')} results received") from None


def _rates(rng):
    idle = _env_float("PUCE_IDLE")
    stall = _env_float("PUCE_STALL")
    return (rng.uniform(0.05, 0.5) if idle is None else idle,
            rng.uniform(0.05, 0.5) if stall is None else stall)


@cocotb.test()
async def packing_matches_amaranth(dut):
    """The testbench's bit positions agree with Amaranth's layouts and with the port widths."""
    await with_timeout(reset(dut), 100 * CLOCK_NS, "ns")
    rng = np.random.default_rng([SEED, 0])
    for pack, port in [(W_PACK, dut.w__payload), (X_PACK, dut.x__payload),
                       (O_PACK, dut.o__payload)]:
        assert len(port) == pack.width, f"{port._name} is {len(port)} bits, layout {pack.width}"
    for _ in range(20):
        W_PACK.check_against_amaranth({"data": list(rng.integers(0, 256, COLS)),
                                       "signed": int(rng.integers(2))})
        X_PACK.check_against_amaranth({"data": list(rng.integers(0, 256, ROWS)),
                                       "signed": int(rng.integers(2)),
                                       "first": int(rng.integers(2)),
                                       "last": int(rng.integers(2))})
        O_PACK.check_against_amaranth({"data": [int(v) for v in
                                                rng.integers(-2**31, 2**31, COLS)],
                                       "last": int(rng.integers(2))})


@cocotb.test()
async def random_tiles_with_bubbles_and_backpressure(dut):
    """Random tiles (random signedness, depths, extremes) with random bubbles and stalls."""
    rng = np.random.default_rng([SEED, 1])
    tiles = random_tiles(rng, _env_int("PUCE_TILES", 6))
    py_rng = random.Random(SEED * 7919 + 1)
    idle, stall = _rates(py_rng)
    await _checked(dut, tiles, idle=idle, stall=stall, rng=py_rng, name="random")


@cocotb.test()
async def extreme_values(dut):
    """Every corner (-128 * -128, 127 * -128, 255 * 255, ...) on every cell, sums unclipped."""
    rng = np.random.default_rng([SEED, 2])
    tiles = corner_tiles() + random_tiles(rng, 2, extremes=1.0)
    py_rng = random.Random(SEED * 7919 + 2)
    await _checked(dut, tiles, idle=0.2, stall=0.2, rng=py_rng, name="extremes")


@cocotb.test()
async def back_to_back_tiles_full_throughput(dut):
    """Tiles of 2R + C - 1 rows, no bubbles: one result per cycle across weight swaps."""
    rng = np.random.default_rng([SEED, 3])
    depth = 2 * ROWS + COLS - 1
    tiles = random_tiles(rng, 4, depth=(depth, depth))
    in_cycles, out_cycles = await _checked(dut, tiles, idle=0.0, stall=0.0,
                                           rng=random.Random(0), name="back_to_back")
    assert np.all(np.diff(in_cycles) == 1), f"input bubbles at {np.nonzero(np.diff(in_cycles) != 1)}"
    assert np.all(np.diff(out_cycles) == 1), \
        f"output bubbles at {np.nonzero(np.diff(out_cycles) != 1)}"
    assert out_cycles[0] - in_cycles[0] == LATENCY, \
        f"latency {out_cycles[0] - in_cycles[0]}, expected {LATENCY}"


@cocotb.test()
async def long_stream(dut):
    """A long random stream at full rate (also a throughput measurement of the simulator)."""
    rng = np.random.default_rng([SEED, 4])
    total = _env_int("PUCE_STREAM_ROWS", 256)
    depth = max(2 * ROWS + COLS - 1, 64)
    tiles = random_tiles(rng, max(1, -(-total // depth)), depth=(depth, depth))
    await _checked(dut, tiles, idle=0.0, stall=0.0, rng=random.Random(0), name="long_stream")
