"""Simulated serial lines for :class:`firmware.link.Link` and the ``serial`` backend.

Two transports with the interface :class:`~firmware.link.Link` expects (``write``, ``read``,
``byte_time``, ``clock``), both with optional fault injection (:class:`LineFaults`):

* :class:`SimulatedSerialLine`: the RTL board core, :class:`rtl.serial_accelerator.
  SerialAccelerator`, in Amaranth's simulator. Host bytes are bit-banged onto its ``rx`` pin
  and its ``tx`` pin is decoded, bit by bit, as a UART would; ``read`` runs the simulation
  until bytes come back or the timeout passes in *simulated* time.
* :class:`ModelLine`: the protocol model (:class:`sim.golden.link.LinkModel`) in front of the
  ISA model (:class:`sim.golden.accelerator.AcceleratorModel`): instant, for testing the host
  side against many faults.
"""

import random
from collections import deque

from amaranth.sim import Simulator

from firmware.isa import Geometry
from firmware.link import MAX_PAYLOAD

__all__ = ["LineFaults", "SimulatedSerialLine", "ModelLine"]


class LineFaults:
    """Random damage to the bytes on one direction of a line.

    Parameters
    ----------
    flip : float
        Probability that a byte has one of its data bits flipped.
    drop : float
        Probability that a byte is lost.
    garbage : float
        Probability that a burst of 1 to 8 random bytes is inserted before a byte.
    framing : float
        Probability that a byte arrives with a framing error (its stop bit low). Only
        :class:`SimulatedSerialLine` models it; :class:`ModelLine` counts it as an error flag.
    seed : int
    script : dict or None
        ``{index: kind}``: damage the byte with that index (counted over every byte this
        direction carries) with ``kind`` (``"flip"``, ``"drop"``, ``"garbage"`` or
        ``"framing"``), besides the random faults.

    Attributes
    ----------
    counts : dict
        How many of each fault were injected.
    """
    def __init__(self, *, flip=0.0, drop=0.0, garbage=0.0, framing=0.0, seed=0, script=None):
        for name, value in (("flip", flip), ("drop", drop), ("garbage", garbage),
                            ("framing", framing)):
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ValueError(f"{name} must be a probability below 1, not {value!r}")
        self.flip, self.drop, self.garbage, self.framing = flip, drop, garbage, framing
        self.rng = random.Random(seed)
        self.counts = dict.fromkeys(("flip", "drop", "garbage", "framing"), 0)
        self.script = dict(script or {})
        for kind in self.script.values():
            if kind not in self.counts:
                raise ValueError(f"unknown fault {kind!r}; faults: {', '.join(self.counts)}")
        self._index = 0

    def apply(self, data):
        """``data`` as it arrives: a list of ``(byte, framing_error)``."""
        out = []
        rng = self.rng
        for byte in bytes(data):
            scripted = self.script.get(self._index)
            self._index += 1
            if scripted == "garbage" or (self.garbage and rng.random() < self.garbage):
                self.counts["garbage"] += 1
                out += [(rng.randrange(256), False) for _ in range(rng.randint(1, 8))]
            if scripted == "drop" or (self.drop and rng.random() < self.drop):
                self.counts["drop"] += 1
                continue
            if scripted == "flip" or (self.flip and rng.random() < self.flip):
                self.counts["flip"] += 1
                byte ^= 1 << rng.randrange(8)
            framing = scripted == "framing" or (bool(self.framing) and
                                                rng.random() < self.framing)
            self.counts["framing"] += framing
            out.append((byte, framing))
        return out


class _Clocked:
    """Simulated time for :class:`~firmware.link.Link`: its timeouts count it, not wall time."""
    def clock(self):
        return self._now


class ModelLine(_Clocked):
    """The protocol model and the ISA model behind a faulty line (no RTL, no waiting).

    Parameters
    ----------
    geometry : firmware.isa.Geometry
    max_payload : int
    to_board, to_host : LineFaults or None
        Damage on each direction.
    byte_time : float
        Simulated seconds per byte; a read that finds nothing advances the clock to its
        timeout.
    """
    def __init__(self, geometry=Geometry(), *, max_payload=MAX_PAYLOAD, to_board=None,
                 to_host=None, byte_time=10 / 3e6):
        from sim.golden.accelerator import AcceleratorModel
        from sim.golden.link import LinkModel
        self.model = LinkModel(max_payload=max_payload)
        self.accelerator = AcceleratorModel(geometry)
        self.to_board, self.to_host = to_board, to_host
        self.byte_time = byte_time
        self._now = 0.0
        self._received = bytearray()

    def _run(self, payload):
        return self.accelerator.run(payload)

    def write(self, data):
        self._now += len(data) * self.byte_time
        arrived = self.to_board.apply(data) if self.to_board else [(b, False) for b in data]
        wire = bytes(byte for byte, _ in arrived)
        errors = [index for index, (_, bad) in enumerate(arrived) if bad]
        result = self.model.receive(wire, self._run, errors=errors)
        for response in result.responses:
            if self.to_host:
                response = bytes(byte for byte, _ in self.to_host.apply(response))
            self._received += response

    def read(self, timeout):
        if not self._received:
            self._now += timeout
            return b""
        data = bytes(self._received)
        self._received.clear()
        self._now += len(data) * self.byte_time
        return data


class SimulatedSerialLine(_Clocked):
    """:class:`~rtl.serial_accelerator.SerialAccelerator` in Amaranth's simulator, on a line.

    The clock runs at 1 MHz of simulated time and the UART at ``cycles_per_bit`` cycles a bit,
    so one byte takes ``10 * cycles_per_bit`` cycles. Faults act on whole bytes (a flipped
    data bit, a lost byte, garbage) or on the stop bit (framing errors).

    Parameters
    ----------
    geometry : firmware.isa.Geometry
    cycles_per_bit : int
        4 or more.
    max_payload, ppu_lanes
        Build parameters of the simulated board.
    to_board, to_host : LineFaults or None

    Attributes
    ----------
    dut : rtl.serial_accelerator.SerialAccelerator
    cycles : int
        Clock cycles simulated so far.
    lit : dict of str to bool
        For each of the board's status lights, whether it has been lit so far.
    """
    CLOCK = 1e6

    def __init__(self, geometry=Geometry(2, 2, ub_depth=64, wm_depth=16, acc_depth=64), *,
                 cycles_per_bit=4, max_payload=64, ppu_lanes=None, to_board=None,
                 to_host=None):
        from rtl.serial_accelerator import SerialAccelerator
        if isinstance(cycles_per_bit, bool) or not isinstance(cycles_per_bit, int) or \
                cycles_per_bit < 4:
            raise ValueError(f"cycles_per_bit must be an integer of at least 4, not "
                             f"{cycles_per_bit!r}")
        self.geometry = geometry
        self.cycles_per_bit = cycles_per_bit
        self.dut = SerialAccelerator(geometry, clk_freq=self.CLOCK,
                                     baud=int(self.CLOCK // cycles_per_bit),
                                     max_payload=max_payload, ppu_lanes=ppu_lanes)
        self.to_board, self.to_host = to_board, to_host
        self.byte_time = 10 * cycles_per_bit / self.CLOCK
        self.cycles = 0
        self.lit = dict.fromkeys(("alive", "ok", "error", "busy"), False)  # ever lit
        self._pending = deque()         # (byte, framing_error) still to drive on rx
        self._received = bytearray()
        self.sim = Simulator(self.dut)
        self.sim.add_clock(1 / self.CLOCK)
        self.sim.add_process(self._drive)
        self.sim.add_process(self._monitor)

    @property
    def _now(self):
        return self.cycles / self.CLOCK

    async def _drive(self, ctx):
        rx, cpb = self.dut.rx, self.cycles_per_bit
        ctx.set(rx, 1)
        while True:
            if not self._pending:
                await ctx.tick()
                continue
            byte, framing = self._pending.popleft()
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 0 if framing else 1]:
                ctx.set(rx, bit)
                await ctx.tick().repeat(cpb)
            ctx.set(rx, 1)
            if framing:                 # the line returns high before the next byte
                await ctx.tick().repeat(cpb)

    async def _monitor(self, ctx):
        cpb = self.cycles_per_bit
        countdown, bits = None, []
        async for _, _, tx, lights in ctx.tick().sample(self.dut.tx, self.dut.lights):
            self.cycles += 1
            for name in self.lit:
                self.lit[name] |= bool(getattr(lights, name))
            if countdown is None:
                if not tx:                              # a start bit: sample mid-bit from here
                    countdown, bits = cpb + cpb // 2, []
                continue
            countdown -= 1
            if countdown:
                continue
            if len(bits) < 8:
                bits.append(tx)
                countdown = cpb
            else:                                       # the stop bit's middle
                byte = sum(bit << i for i, bit in enumerate(bits))
                if self.to_host:
                    self._received += bytes(b for b, _ in self.to_host.apply([byte]))
                else:
                    self._received.append(byte)
                countdown = None

    def write(self, data):
        if self.to_board:
            self._pending.extend(self.to_board.apply(data))
        else:
            self._pending.extend((byte, False) for byte in bytes(data))

    def read(self, timeout):
        """Run the simulation until bytes arrive (and the line has been quiet for a byte's
        time) or ``timeout`` simulated seconds pass."""
        end = self.cycles + max(1, int(timeout * self.CLOCK))
        step = 10 * self.cycles_per_bit
        while self.cycles < end:
            before = len(self._received)
            self.sim.run_until((self.cycles + step) / self.CLOCK)
            if self._received and len(self._received) == before:
                break
        data = bytes(self._received)
        self._received.clear()
        return data
