"""The status lights against their cycle model, :mod:`sim.golden.lights`."""

import gc
import warnings
from fractions import Fraction

import numpy as np
import pytest

from rtl.lights import Lights, light_timing
from rtl.verilog import emit_verilog
from sim.golden.lights import lights as model
from sim.testbench import simulate

# Clock frequencies that give a tick every cycle (below TICK_HZ), every other cycle (the
# smallest prescaler, whose registered tick decodes 0) and every 16 cycles, at a whole and a
# fractional number of Hz. Board clocks are checked by their timing only (below): simulating a
# second of an 18 MHz clock is not worth it.
FREQUENCIES = [150, 400, 3_200, 5_000.5]


def random_inputs(rng, cycles):
    """Rare ok/error pulses (sometimes in bursts and both at once) and a busy level that
    changes now and then."""
    ok = rng.random(cycles) < 0.004
    error = rng.random(cycles) < 0.003
    burst = rng.integers(0, cycles - 20)
    ok[burst:burst + 5] = True
    busy = np.cumsum(rng.random(cycles) < 0.02) % 2 == 1
    return ok, error, busy


@pytest.mark.parametrize("clk_freq", FREQUENCIES)
def test_against_model(clk_freq):
    tick_bits, half, stretch = light_timing(clk_freq)
    cycles = 2 * half * (1 << tick_bits) + 500      # two toggles of the heartbeat at least
    rng = np.random.default_rng(int(clk_freq))
    ok, error, busy = random_inputs(rng, cycles)
    expected = model(clk_freq, ok, error, busy)
    dut = Lights(clk_freq=clk_freq)
    got = np.zeros_like(expected)

    async def testbench(ctx):
        for cycle in range(cycles):
            ctx.set(dut.ok, int(ok[cycle]))
            ctx.set(dut.error, int(error[cycle]))
            ctx.set(dut.busy, int(busy[cycle]))
            lights = ctx.get(dut.lights)
            got[cycle] = lights.alive, lights.ok, lights.error, lights.busy
            await ctx.tick()

    simulate(dut, [testbench])
    for column, name in enumerate(("alive", "ok", "error", "busy")):
        mismatch = np.flatnonzero(got[:, column] != expected[:, column])
        assert mismatch.size == 0, f"{name} differs first at cycle {mismatch[:1]}"
    # The test saw every light change.
    assert all(len(set(got[:, column])) == 2 for column in range(4))


@pytest.mark.parametrize("clk_freq", [12e6, 18e6, 27e6, 54e6, 100e6, 100, 1, 200, 401])
def test_timing(clk_freq):
    """Whatever the clock: a tick of 2.5 to 5 ms (or one cycle), a heartbeat within 10 % of 1 Hz when a
    tick is short enough to resolve it, and pulses lit for at least 50 ms."""
    tick_bits, half, stretch = light_timing(clk_freq)
    tick = Fraction(1 << tick_bits) / Fraction(clk_freq)
    assert tick <= max(Fraction(1, 200), 1 / Fraction(clk_freq))
    assert tick_bits == 0 or tick > Fraction(1, 400)
    if tick <= Fraction(1, 100):
        assert abs(2 * half * tick - 1) <= Fraction(1, 10)
    assert (stretch - 1) * tick < Fraction(1, 20) <= stretch * tick
    # Counters stay narrow: the point of the prescaler.
    assert half.bit_length() <= 8 and stretch.bit_length() <= 5


def test_model_edges():
    """A pulse at cycle c lights for the rest of c's tick and ``stretch - 1`` more; a pulse
    while lit starts again; ``busy`` shows one cycle late."""
    clk_freq = 3_200                                    # ticks of 16 cycles, stretch of 10
    tick_bits, half, stretch = light_timing(clk_freq)
    assert (tick_bits, half, stretch) == (4, 100, 10)
    n = 600
    ok = np.zeros(n, bool)
    ok[20] = True                                       # 11 cycles before the next tick
    error = np.zeros(n, bool)
    error[100] = error[150] = True
    busy = np.zeros(n, bool)
    busy[5:7] = True
    out = model(clk_freq, ok, error, busy)
    lit_ok = np.flatnonzero(out[:, 1])
    assert lit_ok[0] == 21 and lit_ok[-1] == 31 + 16 * (stretch - 1)
    lit_error = np.flatnonzero(out[:, 2])
    assert lit_error[0] == 101 and lit_error[-1] == 159 + 16 * (stretch - 1)
    assert np.flatnonzero(out[:, 3]).tolist() == [6, 7]
    assert not out[:, 0].any()                          # the first toggle is at 1600 cycles
    assert model(clk_freq, [0] * 1601, [0] * 1601, [0] * 1601)[-1, 0] == 1


@pytest.mark.parametrize("clk_freq", [0, -1, "fast", True, None])
def test_bad_clock(clk_freq):
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no UnusedElaboratable warning either
        with pytest.raises(TypeError, match="clk_freq must be a positive number of Hz, not "):
            Lights(clk_freq=clk_freq)
        gc.collect()


def test_model_bad_lengths():
    with pytest.raises(ValueError, match="ok, error and busy must be sequences of the same "
                                         "length"):
        model(1000, [0, 1], [0], [0, 0])


def test_verilog():
    verilog = emit_verilog(Lights(clk_freq=18e6), "lights")
    for port in ("input ok", "input error", "input busy", "output [3:0] lights"):
        assert port in verilog
    assert "assign lights[0] = alive;" in verilog
    # The narrow timers, by name: a 16-bit prescaler at 18 MHz, then 8- and 4-bit counters.
    assert "reg [15:0] prescaler" in verilog
    assert "reg [3:0] ok_left" in verilog and "reg [3:0] error_left" in verilog
    # The tick is registered, once per timer (their lights may be far apart on the die).
    for name in ("alive", "ok", "error"):
        assert f"reg tick_{name}" in verilog
