"""The whole accelerator: controller, memories, MXU and PPU behind two byte streams."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from firmware.isa import Geometry
from .accumulator import AccumulatorMemory
from .controller import Controller, MatmulRowTag
from .counters import COUNTER_BITS
from .mxu import MatrixUnit
from .params import check_bool, check_int
from .ppu import PostProcessor
from .serial_ppu import SerialPostProcessor
from .unified_buffer import UnifiedBuffer
from .weight_memory import WeightMemory

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """puce: an R x C int8 matrix unit, its memories and its controller, run by a byte stream.

    The host sends instruction words and their payloads on ``i`` and reads response packets on
    ``o``, as :mod:`firmware.isa` and docs/isa.md define them; the bytes that come back are
    those of :class:`sim.golden.accelerator.AcceleratorModel` (the counters of time aside).
    :class:`rtl.controller.Controller` describes the decoder, the scoreboard and the counters.
    Inside::

        i --> Controller --> o
                |  UB (masked writes), WM, ACC: write, read request, read response streams
                |  MXU: w, x, o streams;  PPU: i, o streams, cfg
                v
        UnifiedBuffer  WeightMemory  AccumulatorMemory  MatrixUnit  PostProcessor (or
                                                                    SerialPostProcessor)

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        R and C of the matrix unit and the depths of the three memories.
    ppu_lanes : int or None
        The PPU's ``lanes`` (:class:`rtl.ppu.PostProcessor`), 1 to C: fewer lanes share fewer
        32 x 32 multipliers, and ACTIVATE then takes ceil(C / lanes) cycles a row instead of
        one. None (the default) means C, one per column.
    counter_bits : int
        Width of the performance counters, 16 to 64 (default 64); they wrap modulo
        ``2**counter_bits`` and READ_COUNTERS still sends 8 bytes each.
    timing_registers : bool
        Registers that only shorten paths, for the clock rate (default True): the accumulator
        memory's ``read_register`` (:class:`rtl.accumulator.AccumulatorMemory`, about ``128 * C``
        flip-flops), the PPU's ``operand_stage`` (:class:`rtl.ppu.PostProcessor`, a cycle
        more of latency) and the register of rows on their way from the accumulator to the PPU
        (:class:`rtl.controller.ActivateUnit`'s ``row_register``, ``32 * C`` flip-flops), and
        the memories' ``read_buffer`` (a queue of two registers after each read port, so that
        no consumer's ``ready`` reaches a block RAM's enable and no block RAM output a
        consumer's logic; a cycle more of read latency), ``output_register`` (the block RAM's
        own, which ECP5 builds fold into it; another cycle), the unified buffer's
        ``write_register`` (its writes, from the payload or ACTIVATE, registered on their way to
        its block RAMs; a read sees a write a cycle later) and the scoreboard's candidate
        ranges registered at decode (:class:`rtl.controller.Controller`'s
        ``range_register``, unless ``range_register`` says otherwise). The smallest FPGA has no
        room for them. Programs compute the same either way.
    range_register : bool or None
        The scoreboard's candidate ranges registered at decode (about 60 flip-flops, for a
        shorter path into the overlap checks) whatever ``timing_registers`` says; None (the
        default) follows ``timing_registers``.
    serial_ppu : bool
        Build the bit-serial :class:`rtl.serial_ppu.SerialPostProcessor` instead of the
        pipelined PPU (default False): under half the logic and no DSP block, but ACTIVATE then
        takes ``C * max(67, 44 + shift) + 1`` cycles a row (``row_cycles``); for FPGAs whose
        host link is far slower than that anyway. ``ppu_lanes`` must then be None. Programs
        compute the same either way.
    overlap_register : bool
        Each of the scoreboard's overlap checks registered on its own (default False;
        :class:`rtl.controller.Controller`'s ``overlap_register``): a cycle more per
        instruction word.
    split_carry : bool
        The accumulator memory adds its sums' two halves in consecutive cycles
        (:class:`rtl.accumulator.AccumulatorMemory`'s ``split_carry``; default False): a carry
        chain half as long in its adders' cycle, for about ``30 * C`` flip-flops. Only without
        ``timing_registers``, whose read register costs the same cycle of write latency; the
        controller waits the same either way, so programs take as many cycles.

    Members
    -------
    i : In(stream.Signature(8))
        Command and payload bytes from the host.
    o : Out(stream.Signature(8))
        Response bytes to the host.
    idle : Out(1)
        Nothing runs or waits and every response has been taken: nothing more comes out until
        more bytes go in (:attr:`rtl.controller.Controller.idle`).
    """
    def __init__(self, geometry=Geometry(), *, ppu_lanes=None, counter_bits=COUNTER_BITS,
                 timing_registers=True, range_register=None, serial_ppu=False,
                 split_carry=False, overlap_register=False):
        if not isinstance(geometry, Geometry):
            self._MustUse__silence = True
            raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")
        check_bool(self, "serial_ppu", serial_ppu)
        if serial_ppu and ppu_lanes is not None:
            self._MustUse__silence = True
            raise ValueError(f"ppu_lanes must be None with serial_ppu (the serial PPU has no "
                             f"lanes), not {ppu_lanes!r}")
        if ppu_lanes is None and not serial_ppu:
            ppu_lanes = geometry.cols
        if not serial_ppu:
            check_int(self, "PPU lane count", ppu_lanes, 1, geometry.cols)
        check_int(self, "Counter width", counter_bits, 16, COUNTER_BITS)
        check_bool(self, "timing_registers", timing_registers)
        self._counter_bits = counter_bits
        self._timing_registers = timing_registers
        if range_register is None:
            range_register = timing_registers
        if not isinstance(range_register, bool):
            self._MustUse__silence = True
            raise TypeError(f"range_register must be a bool or None, not {range_register!r}")
        self._range_register = range_register
        check_bool(self, "split_carry", split_carry)
        if split_carry and timing_registers:
            self._MustUse__silence = True
            raise ValueError("split_carry needs timing_registers=False (the accumulator's read "
                             "register and the split carry would each add a cycle of write "
                             "latency)")
        self._split_carry = split_carry
        check_bool(self, "overlap_register", overlap_register)
        self._overlap_register = overlap_register
        self._geometry = geometry
        self._ppu_lanes = ppu_lanes
        self._serial_ppu = serial_ppu
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(8)),
            "idle": Out(1),
        })

    @property
    def geometry(self):
        return self._geometry

    @property
    def ppu_lanes(self):
        """The PPU's lanes (C unless fewer were asked for; None with ``serial_ppu``)."""
        return self._ppu_lanes

    @property
    def serial_ppu(self):
        """Whether the PPU is the bit-serial :class:`rtl.serial_ppu.SerialPostProcessor`."""
        return self._serial_ppu

    @property
    def timing_registers(self):
        return self._timing_registers

    @property
    def range_register(self):
        """Whether the scoreboard's candidate ranges are registered at decode."""
        return self._range_register

    @property
    def split_carry(self):
        """Whether the accumulator memory adds its sums' halves in consecutive cycles."""
        return self._split_carry

    @property
    def overlap_register(self):
        """Whether each of the scoreboard's overlap checks is registered on its own."""
        return self._overlap_register

    def elaborate(self, platform):
        m = Module()
        g = self._geometry

        ub = UnifiedBuffer(
            g.rows, g.ub_depth, masked=True, tag=MatmulRowTag(),
            read_buffer=self._timing_registers, output_register=self._timing_registers,
            write_register=self._timing_registers)
        wm = WeightMemory(
            g.cols, g.wm_depth, read_buffer=self._timing_registers,
            output_register=self._timing_registers)
        acc = AccumulatorMemory(
            g.cols, g.acc_depth, read_register=self._timing_registers,
            read_buffer=self._timing_registers, output_register=self._timing_registers,
            split_carry=self._split_carry)
        m.submodules.controller     = controller = Controller(
            g, counter_bits=self._counter_bits, row_register=self._timing_registers,
            range_register=self._range_register, overlap_register=self._overlap_register,
            read_latency=max(ub.read_latency, acc.read_latency))
        m.submodules.unified_buffer = ub
        m.submodules.weight_memory  = wm
        m.submodules.accumulator    = acc
        m.submodules.mxu            = mxu = MatrixUnit(g.rows, g.cols)
        if self._serial_ppu:
            m.submodules.ppu        = ppu = SerialPostProcessor(g.cols)
        else:
            m.submodules.ppu        = ppu = PostProcessor(
                g.cols, self._ppu_lanes, operand_stage=self._timing_registers)

        connect(m, flipped(self.i), controller.i)
        m.d.comb += self.idle.eq(controller.idle)
        connect(m, controller.o, flipped(self.o))
        connect(m, controller.ub, ub)
        connect(m, controller.wm, wm)
        connect(m, controller.acc, acc)
        connect(m, controller.mxu, mxu)
        connect(m, controller.ppu, ppu)
        return m
