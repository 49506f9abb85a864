"""A board on a serial port (or anything that carries the serial link protocol) as a backend.

:class:`SerialBackend` sends programs as frames of :mod:`firmware.link` through a
:class:`~firmware.link.Link`, which retries until every frame is answered correctly. The
transport is a pyserial port by default (``port="/dev/ttyUSB1"``); tests give it a simulated
line instead (:class:`sim.serial_line.SimulatedSerialLine`, the RTL in Amaranth's simulator,
or :class:`sim.golden.link.ModelLine`, the protocol model).

How a program is cut into requests
----------------------------------
The board forwards a request's payload to the accelerator while it collects the output, and
sends at most ``max_payload`` bytes back per answer; output beyond that waits in the
accelerator, which stops taking input once its response sender is blocked. So the backend

* ends a request after every instruction that answers (READ_UB, READ_ACC, READ_COUNTERS,
  SYNC, and a word with an unknown opcode, which answers ERROR), and after ``max_payload``
  bytes;
* after such a request, sends empty requests (polls) until an answer has the IDLE flag: the
  accelerator has taken everything, finished, and every byte of output has been collected.

Then no instruction is ever held by output that nobody reads, whatever the program. At the
end of the program it polls until IDLE too, which is how an exchange knows it is over.
"""

import struct
import time

from firmware.isa import SYNC_WORD, WORD, Opcode
from firmware.link import MAX_PAYLOAD, Link, LinkError

from . import Backend, DeviceError, DeviceTimeout, _payload_lengths

__all__ = ["SerialBackend", "PySerialTransport", "split_program"]

_ANSWERING = frozenset({Opcode.READ_UB, Opcode.READ_ACC, Opcode.READ_COUNTERS, Opcode.SYNC})
_KNOWN = frozenset(int(opcode) for opcode in Opcode)
_N = struct.Struct("<H")


def split_program(program, geometry, max_payload):
    """Cut ``program`` into request payloads; return ``[(payload, answers)]``.

    ``answers`` is True when the request ends with an instruction that answers (the backend
    then polls until the board is idle). The device's own view of the stream is followed:
    payloads are skipped, and after an unknown opcode words are skipped up to the next exact
    SYNC word (:class:`firmware.backends.StreamFramer` does the same).
    """
    data = bytes(program)
    payloads = _payload_lengths(geometry)
    units = []              # (bytes, answers)
    offset = 0
    faulted = False
    while offset < len(data):
        word = data[offset:offset + WORD]
        if len(word) < WORD:
            units.append((word, False))
            break
        if faulted:
            sync = word == SYNC_WORD
            faulted = not sync
            units.append((word, sync))
            offset += WORD
            continue
        opcode = word[0]
        length = payloads.get(opcode)
        size = WORD + (length(_N.unpack_from(data, offset + 6)[0]) if length else 0)
        unknown = opcode not in _KNOWN
        faulted = unknown
        units.append((data[offset:offset + size], unknown or opcode in _ANSWERING))
        offset += size

    requests = []
    current = b""
    for unit, answers in units:
        while unit:
            room = max_payload - len(current)
            current += unit[:room]
            unit = unit[room:]
            if len(current) == max_payload and (unit or not answers):
                requests.append((current, False))
                current = b""
        if answers:
            requests.append((current, True))
            current = b""
    if current:
        requests.append((current, False))
    return requests


class PySerialTransport:
    """A pyserial port as a :class:`~firmware.link.Link` transport (8N1, no flow control)."""
    def __init__(self, port, baud):
        try:
            import serial
        except ImportError:
            raise DeviceError("the serial backend needs pyserial (pip install pyserial)") \
                from None
        try:
            self.port = serial.Serial(port, baudrate=baud, timeout=0, write_timeout=5)
        except (serial.SerialException, ValueError) as error:
            raise DeviceError(f"cannot open serial port {port!r} at {baud} baud: {error}") \
                from None
        self.byte_time = 10 / baud

    def write(self, data):
        self.port.write(data)
        self.port.flush()

    def read(self, timeout):
        self.port.timeout = max(0.0, timeout)
        first = self.port.read(1)
        if not first:
            return b""
        self.port.timeout = 0
        return first + self.port.read(self.port.in_waiting or 0)

    def close(self):
        self.port.close()


class SerialBackend(Backend):
    """An accelerator reached through the serial link protocol (a board, or a simulated one).

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        The accelerator's sizes (a board's are in its build report).
    port : str or None
        Serial device (``/dev/ttyUSB1``, ``COM3``) opened with pyserial; give either this or
        ``transport``.
    baud : int
        Line rate for ``port`` (the board's build parameter, 3 Mbaud by default).
    transport : object or None
        An already open transport (see :class:`~firmware.link.Link`).
    max_payload : int
        The board's frame payload limit.
    timeout : float
        Seconds to wait for an answer before a retry (besides the line time).
    retries : int
        Retries per request before giving up.
    max_seconds : float
        Wall-clock bound of one exchange (a simulated line counts simulated seconds).
    max_cycles : int or None
        Accepted like every backend's; a board's exchanges are bounded by ``max_seconds``.
    """
    name = "serial"
    timed = True
    persistent = True

    def __init__(self, geometry, *, port=None, baud=3_000_000, transport=None,
                 max_payload=MAX_PAYLOAD, timeout=0.25, retries=8, max_seconds=60.0,
                 max_cycles=None):
        super().__init__(geometry)
        if (port is None) == (transport is None):
            raise ValueError("the serial backend needs exactly one of port= (a serial device "
                             "name) and transport=")
        self.transport = transport if transport is not None else PySerialTransport(port, baud)
        self.link = Link(self.transport, max_payload=max_payload, timeout=timeout,
                         retries=retries)
        self.max_payload = max_payload
        self.max_seconds = max_seconds
        self._started = False

    def _clock(self):
        clock = getattr(self.transport, "clock", None)
        return clock() if clock else time.monotonic()

    def exchange(self, program, *, max_cycles=None):
        """Send ``program`` in frames; return every byte the accelerator answered."""
        self._check_open()
        program = bytes(program)
        deadline = self._clock() + self.max_seconds
        output = bytearray()
        try:
            if not self._started:
                self.link.start()           # stale output of an earlier session is dropped
                self._started = True
            for payload, answers in split_program(program, self.geometry, self.max_payload):
                response = self.link.transact(payload)
                output += response.payload
                if answers:
                    output += self._drain(response, deadline, output)
            if program:
                output += self._drain(None, deadline, output)
        except LinkError as error:
            raise DeviceError(f"the serial link failed: {error}") from None
        return bytes(output)

    def _drain(self, response, deadline, output):
        """Poll until an answer says the board is idle; return what the polls collected."""
        collected = bytearray()
        while response is None or not response.idle:
            if self._clock() > deadline:
                raise DeviceTimeout(f"the board was not idle within {self.max_seconds} s",
                                    output=bytes(output + collected))
            response = self.link.transact(b"")
            collected += response.payload
        return bytes(collected)

    def reset(self):
        raise NotImplementedError("a board is reset by reloading its bitstream (puce program)")

    def close(self):
        if not self.closed and hasattr(self.transport, "close"):
            self.transport.close()
        super().close()
