"""Build every board's flagship configuration and print the table that docs/boards.md shows.

    .venv/bin/python benchmarks/board_builds.py                 # all boards, their defaults
    .venv/bin/python benchmarks/board_builds.py --board icebreaker --rows 2 --cols 2
    .venv/bin/python benchmarks/board_builds.py --table build/*/report.json   # no building

Each build goes to build/<board>-<R>x<C>/ (or --out), with report.json and report.md. Builds
take minutes (an ECP5 16 x 16 takes the better part of an hour on two busy cores): they are
benchmarks, not tests.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from boards.build import build  # noqa: E402
from boards.targets import BOARDS, get_board  # noqa: E402
from firmware.isa import Geometry  # noqa: E402

COLUMNS = ["board", "array", "clock (MHz)", "Fmax (MHz)", "timing", "peak GOPS", "logic",
           "FFs", "DSP", "BRAM", "build"]


def row(report):
    def used(entry):
        return f"{entry['used']}/{entry['available']}"
    return [report["board"], f"{report['rows']}x{report['cols']}", f"{report['clock_mhz']:.1f}",
            "?" if report["fmax_mhz"] is None else f"{report['fmax_mhz']:.1f}",
            report["timing"], f"{report['peak_gops']:.2f}", used(report["logic"]),
            used(report["flip_flops"]), used(report["dsp"]), used(report["bram"]),
            f"{report['build_seconds'] / 60:.1f} min"]


def table(reports):
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(report)) + " |" for report in reports]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--board", action="append", choices=list(BOARDS),
                        help="build only this board (repeatable; default: all)")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--cols", type=int)
    parser.add_argument("--clock", type=float, help="MHz")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", help="output folder (one board only)")
    parser.add_argument("--table", nargs="+", metavar="REPORT.json",
                        help="print the table of existing reports instead of building")
    args = parser.parse_args(argv)
    if args.table:
        print(table([json.loads(Path(path).read_text()) for path in args.table]))
        return 0
    reports = []
    for name in args.board or list(BOARDS):
        board = get_board(name)
        g = board.geometry
        if args.rows or args.cols:
            g = Geometry(rows=args.rows or g.rows, cols=args.cols or g.cols,
                         ub_depth=g.ub_depth, wm_depth=g.wm_depth, acc_depth=g.acc_depth)
        start = time.monotonic()
        reports.append(build(board, geometry=g, out=args.out, seed=args.seed,
                             clock=None if args.clock is None else args.clock * 1e6,
                             progress=lambda line: print(
                                 f"[{time.monotonic() - start:7.1f} s] {line}", flush=True)))
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
