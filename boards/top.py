"""The top level of every board: a PLL, the serial accelerator, the UART pins and the LEDs."""

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io

from firmware.isa import Geometry
from firmware.link import MAX_PAYLOAD
from rtl.serial_accelerator import SerialAccelerator
from . import pll as pll_module
from .targets import Board

__all__ = ["BoardTop"]


class BoardTop(Elaboratable):
    """:class:`~rtl.serial_accelerator.SerialAccelerator` on a board.

    The board's oscillator feeds its PLL (:mod:`boards.pll`), which makes the ``sync`` clock
    at ``clock`` Hz (or passes the oscillator through when they are equal) and holds ``sync``
    in reset until it locks. The UART is the board's USB-UART (``uart`` resource 0); the
    status lights go to the LEDs that :attr:`Board.lights` names.

    Parameters
    ----------
    board : boards.targets.Board
    geometry : firmware.isa.Geometry or None
        Default: the board's.
    clock : float or None
        Accelerator clock in Hz. Default: the board's. The PLL makes the nearest frequency it
        can (within 1 %); :attr:`clock` is what it makes.
    baud, max_payload, ppu_lanes
        As :class:`~rtl.serial_accelerator.SerialAccelerator` (defaults: the board's).
    serial_ppu : bool or None
        Build the bit-serial PPU. Default: the board's choice, unless ``ppu_lanes`` is given,
        which asks for the pipelined PPU with that many lanes.
    """
    def __init__(self, board, geometry=None, *, clock=None, baud=None, max_payload=MAX_PAYLOAD,
                 ppu_lanes=None, serial_ppu=None):
        if not isinstance(board, Board):
            self._MustUse__silence = True
            raise TypeError(f"board must be a boards.targets.Board, not {board!r}")
        geometry = board.geometry if geometry is None else geometry
        if not isinstance(geometry, Geometry):
            self._MustUse__silence = True
            raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")
        self.board = board
        self.geometry = geometry
        self.baud = board.baud if baud is None else baud
        if serial_ppu is None:
            serial_ppu = board.serial_ppu and ppu_lanes is None
        self.serial_ppu = serial_ppu
        if ppu_lanes is None and not serial_ppu:
            ppu_lanes = board.ppu_lanes
        self.ppu_lanes = ppu_lanes
        self.max_payload = max_payload
        f_osc = board.make_platform().default_clk_frequency
        try:
            self.pll = getattr(pll_module, board.pll)(f_in=f_osc,
                                                      f_out=board.clock if clock is None
                                                      else clock)
            self.clock = self.pll.f_out
            self.core = SerialAccelerator(geometry, clk_freq=self.clock, baud=self.baud,
                                          max_payload=max_payload, ppu_lanes=self.ppu_lanes,
                                          counter_bits=board.counter_bits,
                                          timing_registers=board.timing_registers,
                                          range_register=board.range_register,
                                          serial_ppu=serial_ppu,
                                          split_carry=board.split_carry,
                                          overlap_register=board.overlap_register)
        except Exception:
            self._MustUse__silence = True
            if hasattr(self, "pll"):
                self.pll._MustUse__silence = True
            raise

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.pll = self.pll
        m.submodules.core = core = self.core

        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = uart_rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = uart_tx = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(uart_rx.i), uart_tx.o.eq(core.tx)]
        for name, (resource, number) in self.board.lights.items():
            led = platform.request(resource, number, dir="-")
            m.submodules[f"led_{name}"] = buffer = io.Buffer("o", led)
            m.d.comb += buffer.o.eq(getattr(core.lights, name))
        return m
