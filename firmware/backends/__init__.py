"""Backends: the ways :class:`firmware.runtime.Device` reaches an accelerator.

A backend moves bytes. It sends a program (the byte stream of :mod:`firmware.isa`) to one
accelerator and returns the bytes the accelerator answered. It knows nothing about matrices,
counters or errors; :class:`firmware.runtime.Device` builds on it. The backends are:

``model``
    :class:`sim.golden.accelerator.AcceleratorModel`, the ISA-level functional model: instant,
    exact results and MXU_BUSY / INSTRUCTIONS counters, but no timing (no cycles).
``amaranth``
    The RTL (:class:`rtl.accelerator.Accelerator`) in Amaranth's Python simulator.
``verilator``
    The RTL's Verilog compiled by Verilator into a C++ program that talks over pipes
    (``sim/verilator/``): cycle-exact like ``amaranth``, and much faster.

docs/runtime.md describes the interface, including what a future ``serial`` backend (a real
board) must implement.

When is an exchange over?
-------------------------
The device has no "done" wire, so a backend decides from the bytes. It replays the device's
framing on the host (:class:`StreamFramer`: word by word, payloads skipped, the skip-to-SYNC
after an illegal opcode) to know how many STATUS packets the program will produce:

* a program whose last instruction is a SYNC is over once the device has taken every byte and
  that many STATUS packets have arrived (SYNC answers only when the device is idle);
* any other program is over once the device has taken every byte and its output has then been
  quiet for ``quiet_cycles`` clock cycles: a best-effort rule, since a long MATMUL can be
  silent for longer. :class:`firmware.runtime.Device` always ends programs with a SYNC.

Every exchange has a cycle budget (:func:`default_cycle_budget` unless given); running out of
it raises :class:`DeviceTimeout` instead of hanging.
"""

import abc
import importlib
import struct

from firmware.isa import (SYNC_WORD, WORD, ErrorCode, Geometry, Opcode, padded_length,
                          ppu_config_length)

__all__ = ["Backend", "DeviceError", "DeviceTimeout", "StreamFramer", "default_cycle_budget",
           "BACKENDS", "get_backend", "backend_class"]


class DeviceError(RuntimeError):
    """The device reported an error, or did not behave as the protocol says.

    Attributes
    ----------
    code : firmware.isa.ErrorCode or None
        The error the device reported (None for a protocol or transport problem).
    index : int or None
        The index of the failing instruction word, counted from the last SYNC.
    responses : list or None
        The parsed response packets, when there are any.
    """
    def __init__(self, message, *, code=None, index=None, responses=None):
        super().__init__(message)
        self.code = code
        self.index = index
        self.responses = responses

    @property
    def name(self):
        """The error code's name (``"ADDRESS"``, ...), or None."""
        if self.code is None:
            return None
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"UNKNOWN_{int(self.code)}"


class DeviceTimeout(DeviceError, TimeoutError):
    """The device did not finish an exchange within its cycle budget (or wall-clock limit).

    ``output`` holds the response bytes received before giving up.
    """
    def __init__(self, message, *, output=b""):
        super().__init__(message)
        self.output = bytes(output)


_OPCODES = frozenset(int(opcode) for opcode in Opcode)


class StreamFramer:
    """The device's view of its input stream, replayed on the host.

    Feed it every byte sent to the device, in order; it splits them into instruction words and
    payloads exactly as the device does (docs/isa.md): WRITE_UB, WRITE_WM and SET_PPU take
    their padded payload, an unknown opcode makes the device skip words until the exact
    :data:`~firmware.isa.SYNC_WORD`, and only that word is answered with a STATUS packet (a
    malformed SYNC is a MALFORMED instruction).
    """
    def __init__(self, geometry):
        self.geometry = geometry
        self.faulted = False        #: skipping words after an illegal opcode
        self.last_was_sync = False  #: the last complete instruction was an answered SYNC
        self._pending = b""         #: the start of an unfinished instruction

    @property
    def buffered(self):
        """Bytes of an unfinished instruction (the device waits for the rest)."""
        return len(self._pending)

    @property
    def at_sync(self):
        """True if everything fed so far ends with an answered SYNC and nothing after it."""
        return self.last_was_sync and not self._pending

    def feed(self, data):
        """Account for ``data``; return how many STATUS packets the device will send for it."""
        data = self._pending + bytes(data)
        statuses = offset = 0
        payload = _payload_lengths(self.geometry)
        while len(data) - offset >= WORD:
            word = data[offset:offset + WORD]
            if self.faulted:
                offset += WORD
                if word == SYNC_WORD:
                    self.faulted = False
                    statuses += 1
                    self.last_was_sync = True
                continue
            opcode = data[offset]
            length = payload.get(opcode)
            end = offset + WORD + (length(_N.unpack_from(data, offset + 6)[0]) if length else 0)
            if len(data) < end:
                break
            offset = end
            self.last_was_sync = word == SYNC_WORD
            if self.last_was_sync:
                statuses += 1
            elif opcode not in _OPCODES:
                self.faulted = True
        self._pending = data[offset:]
        return statuses


_N = struct.Struct("<H")
_WORD = struct.Struct("<BBHHH")


def _payload_lengths(geometry):
    """Opcode -> function of n giving the padded payload length, for opcodes with a payload
    (the same numbers as :meth:`Instruction.payload_length`, without building objects)."""
    ppu = padded_length(ppu_config_length(geometry.cols))
    return {
        Opcode.WRITE_UB: lambda n: padded_length(n * geometry.rows),
        Opcode.WRITE_WM: lambda n: padded_length(n * geometry.cols),
        Opcode.SET_PPU: lambda n: ppu,
    }


def default_cycle_budget(program, geometry):
    """A generous upper bound on the clock cycles ``program`` needs on ``geometry``.

    About 16 times the work a correct device does: one cycle per byte in, per byte out and
    per row through the MXU or the PPU, plus the pipeline depth of every instruction, plus a
    fixed 200,000 cycles. Enough for any correct device, small enough that a hung one is
    reported in seconds.
    """
    g = geometry
    data = bytes(program)
    payload = _payload_lengths(g)
    per_row = {Opcode.READ_ACC: g.cols * 4, Opcode.READ_UB: g.rows, Opcode.MATMUL: 1,
               Opcode.ACTIVATE: 1}
    fixed = {Opcode.READ_ACC: WORD, Opcode.READ_UB: WORD, Opcode.LOAD_WEIGHTS: g.rows}
    pipeline = 2 * (g.rows + g.cols) + 16
    work = len(data)
    offset = 0
    while len(data) - offset >= WORD:
        opcode, _, _, _, n = _WORD.unpack_from(data, offset)
        length = payload.get(opcode)
        offset += WORD + (length(n) if length else 0)
        work += per_row.get(opcode, 0) * n + fixed.get(opcode, 0) + pipeline
    return 16 * work + 200_000


class Backend(abc.ABC):
    """One accelerator, reached somehow: bytes in, bytes out.

    Subclasses set :attr:`name` and :attr:`timed` and implement :meth:`exchange`;
    :attr:`cycles`, :meth:`reset` and :meth:`close` have defaults. A backend is a context
    manager (``close`` on exit) and keeps the device's state across exchanges.

    Attributes
    ----------
    name : str
        The registry name (``"model"``, ``"verilator"``, ...).
    timed : bool
        True if the device's CYCLES and STALL_* counters count real clock cycles (the RTL
        backends, a board); False for the functional model, where they read 0.
    persistent : bool
        True if the device keeps its state (memories, weight tiles, counters) from one
        exchange to the next; False if every exchange starts from reset (``amaranth``).
    geometry : firmware.isa.Geometry
        The accelerator's sizes; programs must be compiled for it.
    """
    name = None
    timed = False
    persistent = True

    def __init__(self, geometry=Geometry()):
        if not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")
        self.geometry = geometry
        self.closed = False

    @abc.abstractmethod
    def exchange(self, program, *, max_cycles=None):
        """Send every byte of ``program``; return every byte the device answers.

        Returns when the device has taken the whole program and is idle (see the module
        documentation for how that is decided). ``max_cycles`` bounds the clock cycles spent
        (default: :func:`default_cycle_budget`); a backend without a clock bounds wall time.

        Raises
        ------
        DeviceTimeout
            If the device is not done within the budget (the device's state is then unknown:
            :meth:`reset` it or make a new backend).
        DeviceError
            If the device or its transport failed (a crashed simulator, a closed port).
        """

    @property
    def cycles(self):
        """Clock cycles since the device started (or was reset), or None if not meaningful."""
        return None

    def reset(self):
        """Return the device to its power-on state (memories need not be cleared)."""
        raise NotImplementedError(f"the {self.name} backend cannot reset its device")

    def close(self):
        """Release the device (end the simulator process, close the port). Idempotent."""
        self.closed = True

    def _check_open(self):
        if self.closed:
            raise DeviceError(f"the {self.name} backend is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        g = self.geometry
        return f"<{type(self).__name__} {g.rows}x{g.cols}>"


#: The registered backends: name -> "module:Class" (imported when first used).
BACKENDS = {
    "model": "firmware.backends.model:ModelBackend",
    "amaranth": "firmware.backends.amaranth:AmaranthBackend",
    "verilator": "firmware.backends.verilator:VerilatorBackend",
    "serial": "firmware.backends.serial:SerialBackend",
}


def backend_class(name):
    """The :class:`Backend` subclass registered as ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known backends: "
                         f"{', '.join(sorted(BACKENDS))}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def get_backend(name, geometry=Geometry(), **options):
    """A new backend ``name`` for an accelerator of ``geometry``; ``options`` go to its class.

    Raises
    ------
    ValueError
        If no backend is registered as ``name`` (the message lists the known ones).
    """
    return backend_class(name)(geometry, **options)
