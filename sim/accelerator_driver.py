"""Run a program's bytes through the simulated accelerator and collect the response bytes.

:func:`run_accelerator` drives :class:`rtl.accelerator.Accelerator` in Amaranth's simulator the
way a host would: it offers the program on the input byte stream (optionally with random idle
cycles) and takes the response bytes (optionally with random backpressure), both in one
simulator process, one clock cycle per loop. A cycle budget turns a hang into a quick
:class:`TimeoutError` that says how far the device got.
"""

import random

from firmware.isa import Geometry
from rtl.accelerator import Accelerator
from .testbench import simulate

__all__ = ["run_accelerator"]


def run_accelerator(program, geometry=Geometry(), *, response_length=None, idle=0.0,
                    stall=0.0, seed=0, quiet=256, extra=32, max_cycles=None, dut=None,
                    input_cycles=None, ppu_lanes=None, serial_ppu=False):
    """Return ``(response bytes, cycles)`` for ``program`` on a simulated ``geometry`` device.

    Parameters
    ----------
    program : bytes
        The byte stream for the device's input.
    geometry : firmware.isa.Geometry
        The device to build (ignored if ``dut`` is given).
    response_length : int or None
        Bytes of response expected. The run stops ``extra`` cycles after that many bytes have
        arrived and the whole program has been taken (bytes that still come in those cycles
        are returned too, so a surplus shows). If None, the run stops once the whole program
        has been taken and no byte has come out for ``quiet`` cycles; that suits programs that
        end with a SYNC, whose STATUS comes out only when everything before it is done.
    idle : float
        Probability that the host leaves the input idle for a cycle before offering a byte.
    stall : float
        Probability that the host refuses the output in a cycle.
    seed : int
        Seed of the random idle and stall cycles.
    max_cycles : int or None
        Cycle budget; by default generous for the program's and the response's length.
    dut : rtl.accelerator.Accelerator or None
        The device; a new one for ``geometry`` (and ``ppu_lanes``, ``serial_ppu``) if None.
    input_cycles : list or None
        If a list, the cycle in which each program byte was taken is appended to it: a byte
        taken late shows that the device held the instruction before it.
    ppu_lanes : int or None
        The PPU's lanes (:class:`rtl.accelerator.Accelerator`; ignored if ``dut`` is given).
    serial_ppu : bool
        Build the bit-serial PPU (:class:`rtl.accelerator.Accelerator`; ignored if ``dut`` is
        given).

    Returns
    -------
    (bytes, int)
        The response bytes and the cycle in which the last of them was taken (counted from 0),
        or the number of cycles until the whole program was taken if that came later.

    Raises
    ------
    TimeoutError
        If the budget runs out first.
    """
    program = bytes(program)
    if dut is None:
        dut = Accelerator(geometry, ppu_lanes=ppu_lanes, serial_ppu=serial_ppu)
    if max_cycles is None:
        max_cycles = 64 * len(program) + 8 * (response_length or 0) + 4096
        if dut.serial_ppu:
            # An ACTIVATE row takes up to 75 cycles a column (SerialPostProcessor.row_cycles),
            # and an 8-byte ACTIVATE word can ask for several rows.
            max_cycles += 76 * dut.geometry.cols * len(program)
    if not 0 <= idle < 1 or not 0 <= stall < 1:
        raise ValueError("idle and stall are probabilities below 1")
    rng = random.Random(seed)
    output = bytearray()
    result = {}

    async def host(ctx):
        with ctx.critical():
            position = 0            # next program byte
            offering = False        # valid is up: it must stay up until the byte is taken
            cycle = 0
            last_activity = 0       # cycle of the last transfer in either direction
            done_at = None          # cycle the stop condition was first met
            finished = 0            # cycle the last byte went in or came out
            while True:
                if not offering and position < len(program):
                    offering = not (idle and rng.random() < idle)
                    if offering:
                        ctx.set(dut.i.payload, program[position])
                    ctx.set(dut.i.valid, offering)
                ready = done_at is not None or not (stall and rng.random() < stall)
                ctx.set(dut.o.ready, ready)
                _, _, i_ready, o_valid, o_payload = await ctx.tick().sample(
                    dut.i.ready, dut.o.valid, dut.o.payload)
                if offering and i_ready:
                    if input_cycles is not None:
                        input_cycles.append(cycle)
                    position += 1
                    offering = False
                    ctx.set(dut.i.valid, 0)
                    last_activity = finished = cycle
                if ready and o_valid:
                    output.append(o_payload)
                    last_activity = finished = cycle
                cycle += 1

                taken = position == len(program)
                if done_at is None and taken:
                    if response_length is not None and len(output) >= response_length:
                        done_at = cycle
                    elif response_length is None and cycle - last_activity > quiet:
                        done_at = cycle
                if done_at is not None and cycle - done_at >= extra:
                    result["cycles"] = finished + 1
                    return
                if cycle >= max_cycles:
                    raise TimeoutError(
                        f"accelerator simulation exceeded {max_cycles} cycles: took "
                        f"{position} of {len(program)} program bytes, sent {len(output)}"
                        + (f" of {response_length}" if response_length is not None else "")
                        + " response bytes")

    # The loop enforces the budget with a better message; the watchdog is only a backstop.
    simulate(dut, processes=[host], deadline=(max_cycles + extra + 100) * 1e-6)
    return bytes(output), result["cycles"]
