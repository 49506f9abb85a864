"""Logic depth: how many LUTs lie in series between registers, read from Yosys's JSON netlist.

nextpnr names one critical path per clock, and only after placement and routing, which takes
minutes on the iCE40 and the better part of an hour on the ECP5. The logic between registers
is known as soon as synthesis ends, and on a nearly full FPGA its depth sets the clock: each
LUT level costs its own delay plus a route to the next (about 2.6 ns together on the iCE40UP5K,
so 48 MHz needs paths of about 5 LUTs). This module walks the mapped netlist and reports, for
every register input, the deepest chain of LUTs in front of it, so that the deep paths can be
found and fixed without a build, and the build report can show them beside the Fmax.

A *level* is one LUT. The pieces of a LUT that the families build in hardware count less: a
carry step (``SB_CARRY``, a ``CCU2C``'s or an ``ALU``'s carry input) a tenth of a level, a
wide-function multiplexer (``PFUMX``, ``L6MUX21``, ``MUX2_LUT5`` ...) a quarter. A path starts
at a flip-flop's or a block RAM's or DSP's output (or a top-level input) and ends at any input
of those. The figures are logic only: routing, fan-out and the cells' own delays come with
placement.

    .venv/bin/python -m boards.logic_depth build/icebreaker-2x2/puce.json --family ice40
"""

import argparse
import json
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["COMBINATIONAL", "DepthPath", "LogicDepth", "logic_depth", "main"]

_CARRY = 0.1
_MUX = 0.25
_LUT4 = {pin: 1.0 for pin in ("I0", "I1", "I2", "I3")}

#: Per family: each combinational cell type, with the levels a path adds through each of its
#: input pins. Every other cell type (flip-flops, block RAMs, DSPs, I/O, PLLs) is a register:
#: its outputs start paths and its inputs end them.
COMBINATIONAL = {
    "ice40": {
        "SB_LUT4": _LUT4,
        "SB_CARRY": {"I0": _CARRY, "I1": _CARRY, "CI": _CARRY},
    },
    "ecp5": {
        "LUT4": {pin: 1.0 for pin in "ABCD"},
        "CCU2C": {**{f"{pin}{half}": 1.0 for pin in "ABCD" for half in "01"}, "CIN": _CARRY},
        "PFUMX": {"ALUT": _MUX, "BLUT": _MUX, "C0": _MUX},
        "L6MUX21": {"D0": _MUX, "D1": _MUX, "SD": _MUX},
    },
    "gowin": {
        **{f"LUT{n}": {f"I{i}": 1.0 for i in range(n)} for n in range(1, 5)},
        "ALU": {"I0": 1.0, "I1": 1.0, "I3": 1.0, "CIN": _CARRY},
        **{f"MUX2_LUT{n}": {"I0": _MUX, "I1": _MUX, "S0": _MUX} for n in range(5, 9)},
    },
}


@dataclass(frozen=True)
class DepthPath:
    """The deepest path into one register input.

    Members
    -------
    levels : float
        LUT levels in series (carry steps and wide multiplexers count less).
    start : str
        The net the path starts from: a register's output or a top-level input.
    end : str
        The register input it ends at: the register's output net and the pin, ``net.D``.
    via : tuple of str
        The nets in between, first to last (Yosys's own names where synthesis made them).
    """
    levels: float
    start: str
    end: str
    via: tuple


@dataclass(frozen=True)
class LogicDepth:
    """The logic depth of a netlist.

    Members
    -------
    histogram : dict of int to int
        Register inputs by their deepest path, in whole levels (a path of 6.3 levels counts
        under 6).
    deepest : list of DepthPath
        The deepest paths, deepest first, one per distinct (start, end) pair of nets (the bits
        of a bus count once).
    max_levels : float
        The deepest path's levels (also when ``deepest`` lists none).
    """
    histogram: dict
    deepest: list
    max_levels: float

    def as_dict(self, paths=5):
        """A JSON-ready summary with the ``paths`` deepest paths (for report.json)."""
        return {
            "max_levels": round(self.max_levels, 2),
            "histogram": {str(levels): count for levels, count in sorted(self.histogram.items())},
            "deepest": [{"levels": round(path.levels, 2), "from": path.start, "to": path.end}
                        for path in self.deepest[:paths]],
        }


def _top_module(netlist):
    modules = netlist.get("modules") if isinstance(netlist, dict) else None
    if not isinstance(modules, dict) or not modules:
        raise ValueError("not a Yosys JSON netlist: it has no modules")
    tops = [module for module in modules.values()
            if str(module.get("attributes", {}).get("top", "0")).strip("0") != ""]
    if len(tops) != 1:
        raise ValueError(f"the netlist has {len(tops)} top modules, not 1 (synthesize with "
                         f"-top)")
    return tops[0]


def _net_names(module):
    """Each net bit's most readable name: a public (not ``$``) one, the shortest if several;
    a bit with none gets Yosys's shortest name."""
    best = {}
    for name, net in module.get("netnames", {}).items():
        key = (name.startswith("$"), len(name), name)
        for bit in net["bits"]:
            if isinstance(bit, int) and (bit not in best or key < best[bit][0]):
                best[bit] = (key, name)
    return {bit: name for bit, (_, name) in best.items()}


#: Where Yosys starts the suffix of a net name it made up from a cell's (``x_SB_DFFE_Q_3_D``).
_MADE_UP = re.compile(r"_(?:SB_|TRELLIS_|DFF|LUT|CCU2C|PFUMX|L6MUX21|ALU|MUX2|IBUF|OBUF)")


def _readable(name):
    """``name`` without the part Yosys made up from a cell's name, if it has one."""
    return _MADE_UP.split(name, 1)[0]


def _bus(name):
    """``name`` without the suffixes that tell the bits of a bus apart (a bit number, a copy
    number, the cell-derived names Yosys makes up), so that they count as one path."""
    return _readable(name).split(" [", 1)[0].rstrip("0123456789").rstrip("_$")


def logic_depth(netlist, family, *, paths=20):
    """The :class:`LogicDepth` of a Yosys JSON ``netlist`` (a parsed dict) mapped to the cells
    of ``family`` (``"ice40"``, ``"ecp5"`` or ``"gowin"``), with the ``paths`` deepest paths."""
    if family not in COMBINATIONAL:
        raise ValueError(f"family must be one of {', '.join(COMBINATIONAL)}, not {family!r}")
    if not isinstance(paths, int) or isinstance(paths, bool) or paths < 0:
        raise TypeError(f"paths must be a non-negative integer, not {paths!r}")
    cell_types = COMBINATIONAL[family]
    module = _top_module(netlist)
    cells = module.get("cells", {})
    present = {cell["type"] for cell in cells.values()}
    if cells and not present & set(cell_types):
        others = [other for other, types in COMBINATIONAL.items() if present & set(types)]
        raise ValueError(f"the netlist has no {family} logic cells ({', '.join(cell_types)})"
                         + (f"; it is mapped to {others[0]}" if others else
                            "; is it synthesized for an FPGA?"))
    names = _net_names(module)

    # Each combinational output bit: the (input bit, levels) pairs it depends on.
    fan_in = {}
    for cell in cells.values():
        weights = cell_types.get(cell["type"])
        if weights is None:
            continue
        inputs = [(bit, weight) for pin, weight in weights.items()
                  for bit in cell["connections"].get(pin, []) if isinstance(bit, int)]
        for pin, direction in cell["port_directions"].items():
            if direction == "output":
                for bit in cell["connections"][pin]:
                    if isinstance(bit, int):
                        fan_in[bit] = inputs

    # Arrival of every bit in levels, with the input it came through, without recursion (a
    # carry chain is thousands of cells long). A combinational loop is cut where it closes.
    arrival = {}
    through = {}

    def settle(root):
        stack = [root]
        visiting = set()
        while stack:
            bit = stack[-1]
            if bit in arrival:
                stack.pop()
                continue
            inputs = fan_in.get(bit)
            if inputs is None:
                arrival[bit] = 0.0
                stack.pop()
                continue
            if bit not in visiting:
                visiting.add(bit)
                stack.extend(source for source, _ in inputs
                             if source not in arrival and source not in visiting)
                continue
            best, via = 0.0, None
            for source, weight in inputs:
                value = arrival.get(source, 0.0) + weight
                if via is None or value > best:
                    best, via = value, source
            arrival[bit] = best
            through[bit] = via
            visiting.discard(bit)
            stack.pop()

    ends = []
    for cell_name, cell in cells.items():
        if cell["type"] in cell_types:
            continue
        outputs = [bit for pin, direction in cell["port_directions"].items()
                   if direction == "output" for bit in cell["connections"][pin]
                   if isinstance(bit, int)]
        label = names.get(outputs[0], cell_name) if outputs else cell_name
        for pin, direction in cell["port_directions"].items():
            if direction != "input":
                continue
            for bit in cell["connections"][pin]:
                if isinstance(bit, int):
                    settle(bit)
                    ends.append((arrival[bit], bit, label, pin))

    histogram = Counter(int(levels) for levels, *_ in ends)
    ends.sort(key=lambda end: -end[0])
    deepest, seen = [], set()
    for levels, bit, end_net, pin in ends:
        if len(deepest) == paths or levels == 0:
            break
        chain, walked = [], set()
        while bit in through and bit not in walked:    # (a combinational loop ends the walk)
            chain.append(bit)
            walked.add(bit)
            bit = through[bit]
        start = _readable(names.get(bit, str(bit)))
        key = (_bus(start), _bus(end_net), pin)
        if key in seen:
            continue
        seen.add(key)
        via = tuple(names.get(step, str(step)) for step in reversed(chain))
        deepest.append(DepthPath(levels, start, f"{_readable(end_net)}.{pin}", via))
    return LogicDepth(dict(histogram), deepest, ends[0][0] if ends else 0.0)


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m boards.logic_depth",
        description="Print the LUT levels between registers of a synthesized netlist "
                    "(a build folder's puce.json) and its deepest paths.")
    parser.add_argument("netlist", type=Path, help="Yosys JSON netlist (puce.json)")
    parser.add_argument("--family", required=True, choices=sorted(COMBINATIONAL),
                        help="the FPGA family the netlist is mapped to")
    parser.add_argument("--paths", type=int, default=20, metavar="N",
                        help="deepest paths to print (default 20)")
    parser.add_argument("--via", action="store_true", help="print the nets along each path")
    args = parser.parse_args(argv)
    if args.paths < 0:
        parser.error(f"--paths must be 0 or more, not {args.paths}")
    try:
        netlist = json.loads(args.netlist.read_text())
    except OSError as error:
        parser.error(f"cannot read {args.netlist}: {error.strerror}")
    except (ValueError, UnicodeDecodeError) as error:
        parser.error(f"{args.netlist} is not JSON: {error}")
    try:
        depth = logic_depth(netlist, args.family, paths=args.paths)
    except ValueError as error:
        parser.error(f"{args.netlist}: {error}")
    except KeyError as error:
        parser.error(f"{args.netlist} is not a Yosys JSON netlist: a cell or net has no "
                     f"{error.args[0]!r}")
    except (TypeError, AttributeError) as error:
        parser.error(f"{args.netlist} is not a Yosys JSON netlist: {error}")
    lines = ["register inputs by LUT levels: " + ", ".join(
        f"{levels}: {count}" for levels, count in sorted(depth.histogram.items()))]
    for path in depth.deepest:
        lines.append(f"{path.levels:5.2f}  {path.start}  ->  {path.end}")
        if args.via:
            lines += [f"         via {net}" for net in path.via]
    try:
        print("\n".join(lines), flush=True)
    except BrokenPipeError:
        # A reader that stopped early (`| head`) is not an error; keep Python's own flush at
        # exit from failing too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
