"""The ``puce`` command line."""

import argparse
import sys
import time

import numpy as np

__all__ = ["main"]


def _positive(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value}")
    return value


def _demo(args):
    from sim.golden.mxu import matmul
    from sim.mxu_driver import mxu_matmul

    rng = np.random.default_rng(args.seed)
    a = rng.integers(-128, 128, size=(args.m, args.k), dtype=np.int8)
    b = rng.integers(-128, 128, size=(args.k, args.n), dtype=np.int8)
    print(f"puce demo: int8 ({args.m} x {args.k}) @ ({args.k} x {args.n}) on a simulated "
          f"{args.rows} x {args.cols} MXU (Amaranth simulator, seed {args.seed})")
    start = time.perf_counter()
    c, cycles = mxu_matmul(a, b, rows=args.rows, cols=args.cols)
    elapsed = time.perf_counter() - start
    expected = matmul(a, b)
    mismatches = int(np.count_nonzero(c != expected))
    macs = args.m * args.k * args.n
    print(f"  cycles            {cycles}")
    print(f"  MACs              {macs} ({macs / (args.rows * args.cols * cycles):.1%} of "
          f"{args.rows * args.cols} MACs/cycle)")
    print(f"  simulated         {cycles / elapsed:,.0f} cycles/s ({elapsed:.2f} s wall)")
    print(f"  check vs numpy    {'bit-exact' if mismatches == 0 else f'{mismatches} MISMATCHES'}")
    return 0 if mismatches == 0 else 1


def _integer(option, text):
    """``text`` as an int, or a ValueError naming ``option``; the range is the block's to check."""
    try:
        return int(text, 10)
    except ValueError:
        raise ValueError(f"{option} expects an integer, not {text!r}") from None


def _verilog(args):
    from rtl.verilog import TOPS, top_verilog

    if args.top not in TOPS:
        raise ValueError(f"unknown --top {args.top!r} (known: {', '.join(sorted(TOPS))})")
    rows = _integer("--rows", args.rows)
    cols = _integer("--cols", args.cols)
    text = top_verilog(args.top, rows=rows, cols=cols)
    if args.output in (None, "-"):
        sys.stdout.write(text)
        return 0
    try:
        with open(args.output, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
    except OSError as error:
        print(f"puce verilog: error: cannot write {args.output}: {error.strerror}",
              file=sys.stderr)
        return 1
    print(f"puce verilog: wrote module {TOPS[args.top].module} ({rows} x {cols}) to "
          f"{args.output}", file=sys.stderr)
    return 0


def _geometry(args):
    from firmware.isa import Geometry

    return Geometry(rows=_integer("--rows", args.rows), cols=_integer("--cols", args.cols))


def _read_input(path, binary):
    """The contents of ``path`` ("-": standard input); a ValueError if it cannot be read."""
    try:
        if path == "-":
            return sys.stdin.buffer.read() if binary else sys.stdin.read()
        if binary:
            with open(path, "rb") as file:
                return file.read()
        with open(path, encoding="utf-8") as file:
            return file.read()
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"cannot read {path}: not UTF-8 text ({error.reason} at byte "
                         f"{error.start})") from None


def _write_output(command, path, data):
    """Write ``data`` (bytes) to ``path`` or standard output; the exit status."""
    if path in (None, "-"):
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as error:
        print(f"puce {command}: error: cannot write {path}: {error.strerror}", file=sys.stderr)
        return 1
    return 0


def _asm(args):
    from firmware.asm import assemble

    geometry = _geometry(args)
    text = _read_input(args.file, binary=False)
    try:
        program = assemble(text, geometry)
    except ValueError as error:
        raise ValueError(f"{args.file}: {error}") from None
    status = _write_output("asm", args.output, program)
    if status == 0 and args.output not in (None, "-"):
        print(f"puce asm: wrote {len(program)} bytes ({len(program) // 8} words) to "
              f"{args.output}", file=sys.stderr)
    return status


def _disasm(args):
    from firmware.asm import disassemble

    geometry = _geometry(args)
    program = _read_input(args.file, binary=True)
    try:
        text = disassemble(program, geometry)
    except ValueError as error:
        raise ValueError(f"{args.file}: {error}") from None
    return _write_output("disasm", args.output, text.encode("utf-8"))


def _parser():
    parser = argparse.ArgumentParser(prog="puce", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a random matmul on the simulated core")
    demo.add_argument("--rows", type=_positive, default=8, help="array rows R (default 8)")
    demo.add_argument("--cols", type=_positive, default=8, help="array columns C (default 8)")
    demo.add_argument("-m", type=_positive, default=48, help="rows of A (default 48)")
    demo.add_argument("-k", type=_positive, default=40, help="columns of A (default 40)")
    demo.add_argument("-n", type=_positive, default=24, help="columns of B (default 24)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(run=_demo)

    # Sizes and top are checked by the handler, so that a bad value is one clear line (and exit
    # status 2) rather than argparse's usage dump.
    from rtl.verilog import TOPS

    verilog = commands.add_parser("verilog", help="write the Verilog of a block")
    verilog.add_argument("--rows", default="8", metavar="R",
                         help="array rows R (default 8; the PPU has no rows)")
    verilog.add_argument("--cols", default="8", metavar="C", help="array columns C (default 8)")
    verilog.add_argument("--top", default="mxu", metavar="TOP",
                         help="block to emit (default mxu): " + ", ".join(
                             f"{name} (module {top.module})" for name, top in TOPS.items()))
    verilog.add_argument("-o", "--output", metavar="FILE",
                         help="write to FILE instead of standard output")
    verilog.set_defaults(run=_verilog)

    for name, run, help_text, source, target in (
            ("asm", _asm, "assemble a program text into its byte stream", "program text",
             "the binary program"),
            ("disasm", _disasm, "disassemble a program byte stream into text",
             "binary program", "the text")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("file", metavar="FILE", help=f"the {source} ('-': standard input)")
        command.add_argument("-o", "--output", metavar="OUT",
                             help=f"write {target} to OUT instead of standard output")
        command.add_argument("--rows", default="8", metavar="R", help="array rows R (default 8)")
        command.add_argument("--cols", default="8", metavar="C",
                             help="array columns C (default 8)")
        command.set_defaults(run=run)
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (TypeError, ValueError) as error:
        print(f"puce {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
