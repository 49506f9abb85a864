"""Run Amaranth simulations the same way in every test.

Set ``PUCE_VCD=1`` to write a waveform for each simulation to ``build/vcd/<name>.vcd``; the name
is unique per test (pytest's node id), so tests can run in parallel.
"""

import os
import re
from pathlib import Path

from amaranth.hdl import Fragment
from amaranth.sim import Simulator

__all__ = ["simulate"]


def _vcd_path(name):
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")
    path = Path("build") / "vcd" / f"{safe}.vcd"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def simulate(dut, testbenches=(), processes=(), *, name=None, deadline=None, clock=1e-6,
             platform=None):
    """Simulate ``dut`` with a clock on ``sync``, running ``testbenches`` to completion.

    Parameters
    ----------
    dut : Elaboratable
        The design under test.
    testbenches : iterable of async functions
        Added with :meth:`Simulator.add_testbench`; the simulation ends when all have returned.
    processes : iterable of async functions
        Added with :meth:`Simulator.add_process` as background processes.
    name : str or None
        Waveform name; defaults to the running pytest test's id.
    deadline : float or None
        Simulated time, in seconds, after which a hung test fails instead of running forever.
    platform : object or None
        Passed to ``dut``'s ``elaborate`` (for designs that ask the platform for parts).
    """
    sim = Simulator(dut if platform is None else Fragment.get(dut, platform))
    sim.add_clock(clock)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for process in processes:
        sim.add_process(process)

    if deadline is None:
        deadline = clock * 1_000_000

    async def watchdog(ctx):
        await ctx.delay(deadline)
        raise TimeoutError(f"simulation did not finish within {deadline} s of simulated time")
    sim.add_process(watchdog)

    if os.environ.get("PUCE_VCD"):
        name = name or os.environ.get("PYTEST_CURRENT_TEST", "sim").split(" ")[0]
        with sim.write_vcd(str(_vcd_path(name))):
            sim.run()
    else:
        sim.run()
