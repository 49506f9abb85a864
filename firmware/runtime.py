"""The host runtime: run programs and matrix products on an accelerator, whatever it is.

::

    from firmware.runtime import Device
    with Device("verilator", Geometry(rows=8, cols=8)) as device:
        c = device.matmul(a, b)          # int32 numpy array, == a @ b
        print(device.last_stats)         # cycles, MXU utilization, ...

A :class:`Device` owns one backend (:mod:`firmware.backends`: ``model``, ``amaranth`` or
``verilator``) and adds what every backend shares: operand checks, compilation
(:mod:`firmware.compiler`), parsing the answer into :class:`~firmware.isa.Response` packets,
turning reported errors into :class:`DeviceError`, and reading the performance counters around
each run. docs/runtime.md is the user's guide.
"""

import struct
import time

from firmware.backends import (Backend, DeviceError, DeviceTimeout, StreamFramer,
                               backend_class)
from firmware.compiler import check_operands, compile_matmul
from firmware.isa import (SYNC_WORD, Counter, ErrorCode, Flag, Geometry, Instruction, Opcode,
                          Response, Tag)

__all__ = ["Device", "DeviceError", "DeviceTimeout", "COUNTER_BYTES"]

#: Bytes in the DATA packet of READ_COUNTERS: every Counter, 8 bytes each.
COUNTER_BYTES = 8 * len(Counter)

#: Sent before a program: clear the counters, and SYNC so that the program's instruction
#: indices count from its own first word.
_PREFIX = Instruction(Opcode.READ_COUNTERS, Flag.CLEAR).encode() + SYNC_WORD
#: Sent after a program (which ends with a SYNC, so everything has finished): read them.
_SUFFIX = Instruction(Opcode.READ_COUNTERS).encode() + SYNC_WORD


def _counters(payload):
    """A READ_COUNTERS payload as a dict ``{"cycles": ..., "mxu_busy": ..., ...}``."""
    values = struct.unpack(f"<{len(Counter)}Q", payload)
    return {counter.name.lower(): value for counter, value in zip(Counter, values)}


def _is_counters(packet):
    return packet.tag == Tag.DATA and len(packet.payload) == COUNTER_BYTES


def _is_ok_status(packet):
    return packet.tag == Tag.STATUS and packet.code == ErrorCode.OK


def _error_name(code):
    try:
        return ErrorCode(code).name
    except ValueError:
        return f"UNKNOWN_{code}"


class Device:
    """An accelerator: a backend plus the runtime around it. Use it as a context manager.

    Parameters
    ----------
    backend : str or firmware.backends.Backend
        A registered backend's name (``"model"``, ``"amaranth"``, ``"verilator"``), or a
        backend object (whose geometry is then used unless ``geometry`` is given and differs,
        which is an error).
    geometry : firmware.isa.Geometry
        The accelerator's sizes (when ``backend`` is a name).
    **options
        Passed to the backend's constructor (for example ``optimize=False`` for Verilator).

    Attributes
    ----------
    backend : firmware.backends.Backend
    geometry : firmware.isa.Geometry
    last_stats : dict or None
        Statistics of the last :meth:`run` or :meth:`matmul` (see :meth:`run`).
    """
    def __init__(self, backend="amaranth", geometry=None, **options):
        if isinstance(backend, Backend):
            if options:
                raise TypeError(f"options {sorted(options)} only apply when the backend is "
                                f"given by name")
            if geometry is not None and geometry != backend.geometry:
                raise ValueError(f"geometry {geometry} differs from the backend's "
                                 f"{backend.geometry}")
            self.backend = backend
        elif isinstance(backend, str):
            if geometry is None:
                geometry = Geometry()
            if not isinstance(geometry, Geometry):
                raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")
            self.backend = backend_class(backend)(geometry, **options)
        else:
            raise TypeError(f"backend must be a backend name or a Backend, not {backend!r}")
        self.geometry = self.backend.geometry
        self.last_stats = None

    # Life cycle.

    def close(self):
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        g = self.geometry
        return f"<Device {self.backend.name} {g.rows}x{g.cols}>"

    # Programs.

    def run(self, program, *, check=True, max_cycles=None):
        """Run ``program`` (bytes) and return its response packets.

        A SYNC is appended if the program does not end with one, so that every run ends with
        a STATUS packet and the device is idle afterwards. The counters are cleared before the
        program and read after it (by instructions the runtime adds around it, whose packets
        are not returned), which fills :attr:`last_stats`: ``backend``, ``rows``, ``cols``,
        ``cycles`` (None on an untimed backend such as ``model``), ``mxu_busy_cycles``,
        ``instructions`` (the program's, with the SYNC), ``macs`` and ``utilization`` (None
        here, set by :meth:`matmul`), ``mxu_occupancy`` (MXU-busy share of the cycles),
        ``stall_*`` counts, ``counters`` (every counter) and ``wall_seconds``.

        Parameters
        ----------
        program : bytes
            Whole instructions (:mod:`firmware.isa`), for this device's geometry.
        check : bool
            Raise :class:`DeviceError` if a STATUS or ERROR packet reports an error.
        max_cycles : int or None
            Cycle budget for the backend (default: generous, from the program).

        Raises
        ------
        ValueError
            If ``program`` ends inside an instruction.
        DeviceError
            With ``code`` (its ``name``, such as ``"ADDRESS"``) and ``index`` (the failing
            instruction word, counted from the start of the program or its last SYNC) if the
            device reported an error and ``check`` is true; also if the answer is malformed.
        DeviceTimeout
            If the device did not finish within the budget.
        """
        if not isinstance(program, (bytes, bytearray, memoryview)):
            raise TypeError(f"program must be bytes, not {type(program).__name__}")
        program = bytes(program)
        framer = StreamFramer(self.geometry)
        framer.feed(program)
        if framer.buffered:
            raise ValueError(f"the program ends inside an instruction (its last "
                             f"{framer.buffered} bytes are an unfinished word or payload)")
        if not framer.at_sync:
            program += SYNC_WORD

        start = time.perf_counter()
        raw = self.backend.exchange(_PREFIX + program + _SUFFIX, max_cycles=max_cycles)
        wall = time.perf_counter() - start
        try:
            packets = Response.parse(raw)
        except ValueError as error:
            raise DeviceError(f"malformed answer from the {self.backend.name} backend: "
                              f"{error}") from None
        if len(packets) < 5 or not _is_counters(packets[0]) or \
                not _is_ok_status(packets[1]) or not _is_counters(packets[-2]) or \
                not _is_ok_status(packets[-1]) or packets[-3].tag != Tag.STATUS:
            raise DeviceError(f"unexpected answer from the {self.backend.name} backend: the "
                              f"counters and STATUS packets around the program are missing "
                              f"({_describe(packets)})", responses=packets)
        responses = packets[2:-2]
        counters = _counters(packets[-2].payload)
        self.last_stats = self._stats(counters, wall)
        if check:
            self._check(responses)
        return responses

    def _stats(self, counters, wall):
        g = self.geometry
        timed = self.backend.timed
        cycles = counters["cycles"] if timed else None
        busy = counters["mxu_busy"]
        stats = {
            "backend": self.backend.name,
            "rows": g.rows,
            "cols": g.cols,
            "cycles": cycles,
            "mxu_busy_cycles": busy,
            "instructions": counters["instructions"] - 1,  # not the prefix's SYNC
            "macs": None,
            "utilization": None,
            "mxu_occupancy": busy / cycles if cycles else None,
            "counters": counters,
            "wall_seconds": wall,
        }
        for name in ("stall_weights", "stall_hazard", "stall_host_in", "stall_host_out"):
            stats[name] = counters[name] if timed else None
        return stats

    def _check(self, responses):
        for packet in responses:
            if packet.tag in (Tag.STATUS, Tag.ERROR) and packet.code != ErrorCode.OK:
                kind = "reported" if packet.tag == Tag.STATUS else "sent an ERROR packet for"
                raise DeviceError(f"the device {kind} {_error_name(packet.code)} (code "
                                  f"{packet.code}) at instruction {packet.index}",
                                  code=packet.code, index=packet.index, responses=responses)

    def matmul(self, a, b, *, max_cycles=None):
        """``a @ b`` computed on the device, as an int32 numpy array.

        ``a`` (M x K) and ``b`` (K x N) are int8 or uint8 numpy arrays of any size (the
        compiler tiles them). Afterwards :attr:`last_stats` also holds ``macs`` (M * K * N)
        and ``utilization`` = macs / (R * C * cycles) on timed backends.

        Raises
        ------
        ValueError
            If an operand is not a numpy array, not int8/uint8, not 2-D or empty, or the
            shapes do not match (the message names the problem).
        DeviceError, DeviceTimeout
            As :meth:`run`.
        """
        check_operands(a, b)
        compiled = compile_matmul(a, b, self.geometry)
        responses = self.run(compiled.encode(), max_cycles=max_cycles)
        try:
            result = compiled.collect(responses)
        except ValueError as error:
            raise DeviceError(f"the answer does not match the program: {error}",
                              responses=responses) from None
        stats = self.last_stats
        stats["macs"] = compiled.tiling.macs
        if stats["cycles"]:
            g = self.geometry
            stats["utilization"] = stats["macs"] / (g.rows * g.cols * stats["cycles"])
        return result

    def counters(self):
        """The performance counters now, as ``{"cycles": ..., "mxu_busy": ..., ...}``.

        Keys are the :class:`~firmware.isa.Counter` names in lower case. Reading does not
        clear them, but every :meth:`run` clears them first. On a backend whose device does
        not persist between exchanges (``amaranth``: each exchange starts from reset) these
        are the counters read at the end of the last run, when there was one.
        """
        if not self.backend.persistent and self.last_stats is not None:
            return dict(self.last_stats["counters"])
        raw = self.backend.exchange(Instruction(Opcode.READ_COUNTERS).encode() + SYNC_WORD)
        packets = Response.parse(raw)
        if len(packets) != 2 or not _is_counters(packets[0]) or not _is_ok_status(packets[1]):
            raise DeviceError(f"unexpected answer to READ_COUNTERS: {_describe(packets)}",
                              responses=packets)
        return _counters(packets[0].payload)


def _describe(packets):
    def one(packet):
        if packet.tag == Tag.DATA:
            return f"DATA({len(packet.payload)} bytes)"
        return f"{Tag(packet.tag).name}(code {packet.code}, index {packet.index})"
    if len(packets) > 8:
        return ", ".join(map(one, packets[:3])) + f", ... {len(packets) - 6} more, " + \
            ", ".join(map(one, packets[-3:]))
    return ", ".join(map(one, packets)) or "no packets"
