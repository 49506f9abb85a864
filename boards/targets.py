"""The boards puce builds for: platform, device, clock, memories and the tools that build them.

Each :class:`Board` says everything the build flow (:mod:`boards.build`) and the programmer
(:mod:`boards.program`) need to know about one board. :data:`BOARDS` lists them by the name
the command line uses (``puce build --board NAME``).
"""

import importlib
from dataclasses import dataclass, field

from firmware.isa import Geometry

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """One FPGA board.

    Attributes
    ----------
    name : str
        Command-line name.
    title : str
        The board's name for people.
    family : str
        ``"ice40"``, ``"ecp5"`` or ``"gowin"``: which synthesis, place-and-route and packing
        tools build it.
    device : str
        The FPGA as the report names it.
    platform : str
        ``"module:Class"`` of its amaranth-boards platform.
    pll : str
        Name of the :mod:`boards.pll` component that makes its clock.
    clock : float
        Default accelerator clock, in Hz (the board's best measured build meets it).
    geometry : firmware.isa.Geometry
        Default accelerator size and memory depths.
    ppu_lanes : int or None
        Default PPU lanes (None: one per column); unused with ``serial_ppu``.
    baud : int
        Default UART rate: what the board's USB-UART carries reliably.
    counter_bits : int
        Width of the performance counters (narrower on the smallest FPGA).
    range_register : bool or None
        The scoreboard's candidate ranges registered (:class:`rtl.accelerator.Accelerator`'s
        ``range_register``); None follows ``timing_registers``.
    serial_ppu : bool
        Build the bit-serial PPU (:class:`rtl.serial_ppu.SerialPostProcessor`): a fraction of
        the pipelined PPU's logic, for the FPGA that is full, where ACTIVATE's speed does not
        matter next to the UART's.
    split_carry : bool
        The accumulator memory adds its sums' halves in consecutive cycles
        (:class:`rtl.accelerator.Accelerator`'s ``split_carry``; needs ``timing_registers``
        False).
    overlap_register : bool
        The scoreboard's overlap checks registered one by one
        (:class:`rtl.accelerator.Accelerator`'s ``overlap_register``).
    timing_registers : bool
        The accelerator's registers that only shorten paths
        (:class:`rtl.accelerator.Accelerator`): faster, but the smallest FPGA has no room for
        them.
    lights : dict
        :class:`rtl.lights.StatusLights` field -> ``("resource", number)`` of the
        LED that shows it.
    nextpnr : tuple of str
        Device arguments of its nextpnr.
    programmer : tuple of str
        The command that loads a bitstream into the FPGA's SRAM (the bitstream path follows).
    flasher : tuple of str
        The command that writes the bitstream to the configuration flash.
    dsp_budget : int or None
        Default DSP budget of the build (None: every DSP block of the device); the other
        multipliers are built in logic.
    seed : int
        Default nextpnr placement seed (1 unless the default build meets timing with another
        and not with 1; docs/boards.md).
    """
    name: str
    title: str
    family: str
    device: str
    platform: str
    pll: str
    clock: float
    geometry: Geometry
    ppu_lanes: object
    baud: int
    counter_bits: int
    lights: dict = field(hash=False)
    nextpnr: tuple
    programmer: tuple
    flasher: tuple
    extra_resources: str = None
    dsp_budget: int = None
    timing_registers: bool = True
    range_register: bool = None
    serial_ppu: bool = False
    split_carry: bool = False
    overlap_register: bool = False
    seed: int = 1

    def make_platform(self, *, get_multiplier=None, get_ppu_multiplier=None):
        """A new instance of the amaranth-boards platform (with any optional resources).

        ``get_multiplier(row, col)``, if given, becomes the platform's method that
        :class:`rtl.mxu.MatrixUnit` asks for each cell's multiplier, and
        ``get_ppu_multiplier(lane, part)`` the one that :class:`rtl.ppu.PostProcessor` asks
        for each partial product.
        """
        module, _, name = self.platform.partition(":")
        cls = getattr(importlib.import_module(module), name)
        methods = {}
        if get_multiplier is not None:
            methods["get_multiplier"] = lambda _, row, col: get_multiplier(row, col)
        if get_ppu_multiplier is not None:
            methods["get_ppu_multiplier"] = lambda _, lane, part: get_ppu_multiplier(lane, part)
        if methods:
            cls = type(cls.__name__, (cls,), methods)
        platform = cls()
        if self.extra_resources:
            platform.add_resources(getattr(platform, self.extra_resources))
        return platform

    @property
    def bitstream(self):
        """File name suffix of the bitstream the flow writes."""
        return {"ice40": ".bin", "ecp5": ".bit", "gowin": ".fs"}[self.family]


BOARDS = {board.name: board for board in [
    Board(
        name="icebreaker", title="1BitSquared iCEBreaker", family="ice40",
        device="iCE40UP5K-SG48", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        pll="ICE40PLL", clock=48e6,
        geometry=Geometry(rows=2, cols=2, ub_depth=512, wm_depth=256, acc_depth=256),
        ppu_lanes=None, baud=3_000_000, counter_bits=32,
        lights={"alive": ("led", 1), "error": ("led", 0), "ok": ("led", 3), "busy": ("led", 2)},
        nextpnr=("--up5k", "--package", "sg48"),
        programmer=("iceprog", "-S"), flasher=("iceprog",),
        # With the serial PPU there is room for the scoreboard's range registers (they did
        # not place at 87 %): 41.15 MHz against 40.20 without them (docs/boards.md). The
        # accumulator's sums in two halves and the overlap checks registered one by one took
        # the two paths that held it under 48 MHz (22.7 and 21.7 ns) to 19 ns or less: 48 MHz
        # met with seeds 2 and 3 (48.63, 49.30 MHz), not with seed 1 (45.89).
        extra_resources="break_off_pmod", timing_registers=False, range_register=True,
        serial_ppu=True, split_carry=True, overlap_register=True, seed=3,
    ),
    Board(
        name="ulx3s-85f", title="Radiona ULX3S (85F)", family="ecp5",
        device="LFE5U-85F-6BG381C", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        pll="ECP5PLL", clock=87.5e6,
        geometry=Geometry(rows=18, cols=16, ub_depth=2048, wm_depth=1024, acc_depth=1024),
        ppu_lanes=1, baud=3_000_000, counter_bits=64,
        lights={"alive": ("led", 0), "ok": ("led", 1), "error": ("led", 2), "busy": ("led", 3)},
        nextpnr=("--85k", "--package", "CABGA381", "--speed", "6"),
        programmer=("openFPGALoader", "-b", "ulx3s"),
        flasher=("openFPGALoader", "-b", "ulx3s", "-f"),
        # With all 68 products of an 8 x 8 in DSP blocks, router2 did not converge (hundreds
        # of overused wires after 68 iterations), nor did a 16 x 16 with 100 DSP blocks; with
        # 76 (the PPU's 4 and 72 array cells, the other products in logic) the arrays route
        # (docs/boards.md). With the timing registers, the travelling weight loads, the Booth
        # multipliers in logic, the block RAMs' own output registers and the unified buffer's
        # write register, the 16 x 16 and the 18 x 16 meet 87.5 MHz; 18 rows x 16 columns is
        # 50.4 GOPS there (a 17 x 17's timing rip-up diverged at that clock, an 18 x 18 did
        # not route even for 78.125 MHz, and builds for 90 MHz have not met it). These builds
        # land within a megahertz of the clock whatever the seed (86.45-87.73 MHz for the
        # 16 x 16 with seeds 1-5), and router2 sometimes fails to finish: with the controller
        # of stop 22, seeds 5-8 missed and seed 9 met it, 88.38 MHz (docs/boards.md).
        dsp_budget=76, seed=9,
    ),
    Board(
        name="tangnano9k", title="Sipeed Tang Nano 9K", family="gowin",
        device="GW1NR-LV9QN88PC6/I5", platform="amaranth_boards.tang_nano_9k:TangNano9kPlatform",
        pll="GowinPLL", clock=72e6,
        geometry=Geometry(rows=2, cols=2, ub_depth=1024, wm_depth=512, acc_depth=512),
        ppu_lanes=1, baud=3_000_000, counter_bits=64,
        lights={"alive": ("led", 0), "ok": ("led", 1), "error": ("led", 2), "busy": ("led", 3)},
        nextpnr=("--device", "GW1NR-LV9QN88PC6/I5", "--vopt", "family=GW1N-9C"),
        programmer=("openFPGALoader", "-b", "tangnano9k"),
        flasher=("openFPGALoader", "-b", "tangnano9k", "-f"),
    ),
]}


def get_board(name):
    """The :class:`Board` called ``name``; a ValueError lists the known ones otherwise."""
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") \
            from None
