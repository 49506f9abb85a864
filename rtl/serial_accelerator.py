"""The accelerator behind a UART: what a board carries, without the board."""

from amaranth.hdl import Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out, connect

from firmware.isa import Geometry
from firmware.link import MAX_PAYLOAD
from .accelerator import Accelerator
from .lights import Lights, StatusLights
from .link import LinkBridge
from .params import check_int
from .uart import UARTReceiver, UARTTransmitter

__all__ = ["SerialAccelerator"]


class SerialAccelerator(wiring.Component):
    """:class:`~rtl.accelerator.Accelerator` reached over a serial line, as on a board.

    ::

        rx --> UARTReceiver --> LinkBridge --> FIFO --> Accelerator.i
        tx <-- UARTTransmitter <-- LinkBridge <-- FIFO <-- Accelerator.o

    The :class:`~rtl.link.LinkBridge` speaks the framed protocol of :mod:`firmware.link`
    (SLIP, CRC-16, sequence numbers, replays); a UART framing error or overrun marks the frame
    it hits as a LINE error.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        The accelerator's sizes.
    clk_freq : int or float
        Frequency of the ``sync`` clock, in Hz: it sets the UART's bit period and the LED
        timers (:class:`~rtl.lights.Lights`).
    baud : int
        Line rate in bit/s (at least 4 clock cycles per bit).
    max_payload : int
        Largest frame payload (:data:`firmware.link.MAX_PAYLOAD` by default); the host must use
        the same value.
    ppu_lanes : int or None
    counter_bits : int
    timing_registers : bool
    range_register : bool or None
    serial_ppu : bool
    split_carry : bool
    overlap_register : bool
        Passed to :class:`~rtl.accelerator.Accelerator`.

    Members
    -------
    rx : In(1)
        The serial input (idle high); it is synchronized inside.
    tx : Out(1)
        The serial output (idle high).
    lights : Out(StatusLights)
        Status for LEDs.
    """
    def __init__(self, geometry=Geometry(), *, clk_freq, baud=3_000_000,
                 max_payload=MAX_PAYLOAD, ppu_lanes=None, counter_bits=64,
                 timing_registers=True, range_register=None, serial_ppu=False,
                 split_carry=False, overlap_register=False):
        if not isinstance(geometry, Geometry):
            self._MustUse__silence = True
            raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")
        check_int(self, "max_payload", max_payload, 1, 65535)
        if isinstance(clk_freq, bool) or not isinstance(clk_freq, (int, float)) or \
                not clk_freq > 0:
            self._MustUse__silence = True
            raise TypeError(f"clk_freq must be a positive number of Hz, not {clk_freq!r}")
        self._geometry = geometry
        self._clk_freq = clk_freq
        self._baud = baud
        self._max_payload = max_payload
        self._ppu_lanes = ppu_lanes
        self._counter_bits = counter_bits
        try:
            # Build the parts now, so that bad parameters fail here with their own message.
            self._uart_rx = UARTReceiver(clk_freq=clk_freq, baud=baud)
            self._uart_tx = UARTTransmitter(clk_freq=clk_freq, baud=baud)
            self._bridge = LinkBridge(max_payload=max_payload)
            self._lights = Lights(clk_freq=clk_freq)
            self._accelerator = Accelerator(geometry, ppu_lanes=ppu_lanes,
                                            counter_bits=counter_bits,
                                            timing_registers=timing_registers,
                                            range_register=range_register,
                                            serial_ppu=serial_ppu,
                                            split_carry=split_carry,
                                            overlap_register=overlap_register)
        except Exception:
            self._MustUse__silence = True
            for part in ("_uart_rx", "_uart_tx", "_bridge", "_lights"):
                if hasattr(self, part):
                    getattr(self, part)._MustUse__silence = True
            raise
        super().__init__({
            "rx":     In(1, init=1),
            "tx":     Out(1, init=1),
            "lights": Out(StatusLights()),
        })

    @property
    def geometry(self):
        return self._geometry

    @property
    def clk_freq(self):
        return self._clk_freq

    @property
    def baud(self):
        return self._baud

    @property
    def max_payload(self):
        return self._max_payload

    @property
    def ppu_lanes(self):
        return self._ppu_lanes

    @property
    def timing_registers(self):
        return self._accelerator.timing_registers

    @property
    def range_register(self):
        return self._accelerator.range_register

    @property
    def serial_ppu(self):
        return self._accelerator.serial_ppu

    @property
    def split_carry(self):
        return self._accelerator.split_carry

    @property
    def overlap_register(self):
        return self._accelerator.overlap_register

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = self._uart_rx
        m.submodules.uart_tx = uart_tx = self._uart_tx
        m.submodules.bridge = bridge = self._bridge
        m.submodules.accelerator = accelerator = self._accelerator

        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            self.tx.eq(uart_tx.tx),
            bridge.rx.valid.eq(uart_rx.o.valid),
            bridge.rx.payload.data.eq(uart_rx.o.payload.data),
            bridge.rx.payload.error.eq(uart_rx.o.payload.framing_error |
                                       uart_rx.o.payload.overrun),
            uart_rx.o.ready.eq(bridge.rx.ready),
        ]
        connect(m, bridge.tx, uart_tx.i)
        # Small FIFOs between the bridge and the accelerator: their registered ready and valid
        # keep the controller's issue logic and the bridge's state machine out of each other's
        # timing paths. Two entries (half a byte a cycle at most) are plenty beside a UART. The
        # bridge's IDLE also waits for the input FIFO to drain.
        m.submodules.to_accelerator = to_acc = fifo.SyncFIFOBuffered(width=8, depth=2)
        m.submodules.from_accelerator = from_acc = fifo.SyncFIFOBuffered(width=8, depth=2)
        connect(m, bridge.o, to_acc.w_stream)
        connect(m, to_acc.r_stream, accelerator.i)
        connect(m, accelerator.o, from_acc.w_stream)
        connect(m, from_acc.r_stream, bridge.i)
        m.d.comb += bridge.idle.eq(accelerator.idle & (to_acc.level == 0))

        m.submodules.lights = lights = self._lights
        m.d.comb += [
            lights.ok.eq(bridge.frame_ok),
            lights.error.eq(bridge.frame_error),
            lights.busy.eq(~accelerator.idle),
            self.lights.eq(lights.lights),
        ]
        return m
