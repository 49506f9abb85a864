"""Simulated clock cycles per second of the MXU in Amaranth's simulator.

    .venv/bin/python benchmarks/amaranth_sim_speed.py [--rows 8] [--cols 8] [--cycles 3000]

The testbench keeps one activation row entering and one result leaving every cycle (the unit's
steady state) and checks every result against the golden model, so the figure is for a real,
checked run, not an idle clock.
"""

import argparse
import time

import numpy as np

from rtl.mxu import MatrixUnit
from sim.golden.mxu import MatrixUnitModel
from sim.testbench import simulate


def measure(rows, cols, cycles, seed=0):
    rng = np.random.default_rng(seed)
    dut = MatrixUnit(rows, cols)
    model = MatrixUnitModel(rows, cols)
    w = rng.integers(0, 256, size=(rows, cols))
    x = rng.integers(0, 256, size=(cycles, rows))
    for r in range(rows):
        model.load_row(w[r], True)
    expected = [list(model.push(x[i], True, first=i == 0)) for i in range(cycles)]
    got = []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        for r in range(rows):
            ctx.set(dut.w.payload, {"data": list(w[r]), "signed": 1})
            ctx.set(dut.w.valid, 1)
            await ctx.tick().until(dut.w.ready)
        ctx.set(dut.w.valid, 0)
        ctx.set(dut.x.valid, 1)
        i = 0
        while len(got) < cycles:
            if i < cycles:
                ctx.set(dut.x.payload, {"data": list(x[i]), "signed": 1, "first": i == 0,
                                        "last": 0})
            else:
                ctx.set(dut.x.valid, 0)
            _, _, x_ready, o_valid, o_data = await ctx.tick().sample(
                dut.x.ready, dut.o.valid, dut.o.payload.data)
            if x_ready and i < cycles:
                i += 1
            if o_valid:
                got.append([int(v) for v in o_data])

    start = time.perf_counter()
    simulate(dut, [testbench], deadline=1e-6 * (cycles * 4 + 1000))
    elapsed = time.perf_counter() - start
    assert got == expected, "the simulated MXU disagrees with the golden model"
    return (cycles + rows + dut.latency) / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--cycles", type=int, default=3000)
    args = parser.parse_args()
    rate = measure(args.rows, args.cols, args.cycles)
    print(f"amaranth.sim, {args.rows} x {args.cols} MXU: {rate:,.0f} cycles/s")


if __name__ == "__main__":
    main()
