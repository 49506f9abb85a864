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


def _backend_name(name):
    from firmware.backends import BACKENDS

    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
    return name


def _serial_options(command):
    command.add_argument("--port", metavar="DEV",
                         help="serial backend: the board's serial device (/dev/ttyUSB0, COM3)")
    command.add_argument("--board", metavar="BOARD",
                         help="serial backend: the board, for its default geometry and baud rate")
    command.add_argument("--report", metavar="REPORT.json",
                         help="serial backend: a build's report.json, for the geometry, baud "
                              "rate and frame size it was built with")


def _open_device(args, backend, geometry):
    """A Device for ``backend``; the serial backend takes its sizes from a board or a report."""
    import json

    from firmware.isa import Geometry
    from firmware.runtime import Device

    if backend != "serial":
        return Device(backend, geometry), geometry
    if not args.port:
        raise ValueError("the serial backend needs --port (the board's serial device)")
    if args.report:
        try:
            with open(args.report, encoding="utf-8") as file:
                report = json.load(file)
            geometry = Geometry(**report["geometry"])
            baud, max_payload = int(report["baud"]), int(report["max_payload"])
        except OSError as error:
            raise ValueError(f"cannot read {args.report}: {error.strerror}") from None
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{args.report} is not a puce build report ({error})") from None
    elif args.board:
        from boards.targets import get_board
        board = get_board(args.board)
        geometry, baud, max_payload = board.geometry, board.baud, 256
    else:
        raise ValueError("the serial backend needs --board or --report (the board's sizes)")
    device = Device("serial", geometry, port=args.port, baud=baud, max_payload=max_payload)
    return device, geometry


def _demo(args):
    from tqdm import tqdm

    from firmware.demo import run_layers, train_digits

    backend = _backend_name(args.backend)
    geometry = _geometry(args)
    device, geometry = _open_device(args, backend, geometry)
    start = time.perf_counter()
    model = train_digits()
    x, y = model.x_test, model.y_test
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    golden = model.golden_logits(x)
    sizes = [model.layers[0].weights.shape[0]] + [l.weights.shape[1] for l in model.layers]
    print(f"puce demo: {'-'.join(map(str, sizes))} MLP on the 8 x 8 digits, trained and "
          f"quantized to int8 in {time.perf_counter() - start:.1f} s; {len(x)} test images "
          f"through a {geometry.rows} x {geometry.cols} accelerator ({backend} backend)", flush=True)
    with device:
        total = len(x) * len(model.layers)
        with tqdm(total=total, unit="row", desc="accelerator", disable=args.quiet,
                  file=sys.stderr, leave=False) as bar:
            done = [0] * len(model.layers)

            def progress(layer, rows):
                bar.update(rows - done[layer])
                done[layer] = rows

            logits, stats = run_layers(device, model.layers, x, batch=args.batch,
                                       progress=progress)
    mismatches = int(np.count_nonzero(logits != golden))
    accuracy = float(np.mean(logits.argmax(axis=1) == y))
    golden_accuracy = float(np.mean(golden.argmax(axis=1) == y))
    print(f"  float accuracy          {model.float_accuracy:.2%}")
    print(f"  int8 golden accuracy    {golden_accuracy:.2%}")
    print(f"  accelerator accuracy    {accuracy:.2%}")
    print(f"  logits vs golden        "
          f"{'bit-exact' if mismatches == 0 else f'{mismatches} MISMATCHES'} "
          f"({logits.size} int8 logits)")
    print(f"  MACs                    {stats['macs']:,} in {stats['programs']} programs")
    if stats["cycles"]:
        peak = geometry.rows * geometry.cols * stats["cycles"]
        print(f"  cycles                  {stats['cycles']:,}")
        print(f"  utilization             {stats['macs'] / peak:.1%} end to end, host "
              f"transfers included (MXU busy {stats['mxu_busy_cycles'] / stats['cycles']:.1%})")
    print(f"  wall time               {time.perf_counter() - start:.1f} s")
    return 0 if mismatches == 0 and accuracy == golden_accuracy else 1


def _load_matrix(path, name):
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file {path}") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{name}: {path} is not a numpy .npy file ({error})") from None
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name}: {path} holds several arrays; save one with numpy.save")
    return array


def _matmul(args):
    import json

    backend = _backend_name(args.backend)
    geometry = _geometry(args)
    a = _load_matrix(args.a, "A")
    b = _load_matrix(args.b, "B")
    device, geometry = _open_device(args, backend, geometry)
    with device:
        c = device.matmul(a, b)
        stats = dict(device.last_stats)
    try:
        np.save(args.output, c)
    except OSError as error:
        print(f"puce matmul: error: cannot write {args.output}: {error.strerror}",
              file=sys.stderr)
        return 1
    if args.stats:
        stats.pop("counters", None)
        try:
            with open(args.stats, "w", encoding="utf-8") as file:
                json.dump(stats, file, indent=2)
                file.write("\n")
        except OSError as error:
            print(f"puce matmul: error: cannot write {args.stats}: {error.strerror}",
                  file=sys.stderr)
            return 1
    utilization = f", utilization {stats['utilization']:.1%}" if stats["utilization"] else ""
    print(f"puce matmul: {a.shape[0]} x {a.shape[1]} @ {b.shape[0]} x {b.shape[1]} -> "
          f"{args.output} ({stats['cycles'] or 'untimed'} cycles{utilization})", file=sys.stderr)
    return 0


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


def _number(option, text):
    """``text`` as a finite float, or a ValueError naming ``option``."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{option} expects a number, not {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{option} expects a finite number, not {text!r}")
    return value


def _board_argument(name):
    """The board called ``name`` (a ValueError listing the known ones otherwise)."""
    from boards.targets import BOARDS, get_board

    if name is None:
        raise ValueError(f"--board is required; known boards: {', '.join(BOARDS)}")
    return get_board(name)


def _build_geometry(board, args):
    """The board's geometry with the sizes given on the command line."""
    import dataclasses

    changes = {}
    for option, field in (("--rows", "rows"), ("--cols", "cols"), ("--ub-depth", "ub_depth"),
                          ("--wm-depth", "wm_depth"), ("--acc-depth", "acc_depth")):
        text = getattr(args, field)
        if text is not None:
            changes[field] = _integer(option, text)
    return dataclasses.replace(board.geometry, **changes)


def _suggest_clock(board, fmax_mhz):
    """A clock in MHz, at most ``fmax_mhz``, that the board's PLL can make (None if none)."""
    import math

    from boards import pll as pll_module

    f_osc = board.make_platform().default_clk_frequency
    solver = getattr(pll_module, board.pll)._solver
    for mhz in range(math.floor(fmax_mhz), 0, -1):
        if mhz * 1e6 == f_osc:
            return mhz
        try:
            config = solver(f_osc, mhz * 1e6)
        except ValueError:
            continue
        if config.f_out <= fmax_mhz * 1e6:
            return mhz
    if f_osc <= fmax_mhz * 1e6:
        return f_osc / 1e6
    return None


def stop_on_sigterm():
    """Make SIGTERM (``kill``, a CI timeout) end the process with ``SystemExit(143)`` rather
    than at once, so that the build flow stops the tool it is running on the way out."""
    import signal

    def terminate(signum, frame):
        print("puce build: terminated", file=sys.stderr)
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)


def _build(args):
    from pathlib import Path

    from boards.build import BuildError, build, report_markdown

    def fail(message):
        print(f"puce build: error: {message}", file=sys.stderr)
        return 1

    try:
        board = _board_argument(args.board)
        geometry = _build_geometry(board, args)
        clock = None if args.clock is None else _number("--clock", args.clock) * 1e6
        options = {}
        for option, name in (("--baud", "baud"), ("--ppu-lanes", "ppu_lanes"),
                             ("--seed", "seed"), ("--dsp-budget", "dsp_budget")):
            text = getattr(args, name)
            if text is not None:
                options[name] = _integer(option, text)
        if options.get("dsp_budget", 0) < 0:
            raise ValueError(f"--dsp-budget must be 0 or more, not {options['dsp_budget']}")
    except (TypeError, ValueError) as error:
        return fail(error)

    start = time.monotonic()

    def progress(line):
        elapsed = time.monotonic() - start
        print(f"[{elapsed:7.1f} s] {line}", file=sys.stderr, flush=True)

    stop_on_sigterm()

    try:
        report = build(board, geometry=geometry, clock=clock, out=args.out, progress=progress,
                       **options)
    except (TypeError, ValueError, BuildError) as error:
        # A BuildError carries the tail of the tool's log on the following lines.
        return fail(error)
    except OSError as error:
        return fail(f"{error.filename or ''}: {error.strerror or error}".lstrip(": "))
    except KeyboardInterrupt:
        print("puce build: interrupted", file=sys.stderr)
        return 130

    out = Path(args.out) if args.out is not None else \
        Path("build") / f"{board.name}-{geometry.rows}x{geometry.cols}"
    sys.stdout.write(report_markdown(report))
    print()
    print(f"output folder: {out}")
    print(f"bitstream:     {out / report['bitstream']}")
    if report["timing"] != "pass":
        fmax = report["fmax_mhz"]
        if fmax is None:
            print(f"WARNING: timing unknown: nextpnr reported no Fmax for the "
                  f"{report['clock_mhz']:.2f} MHz clock; the bitstream may not work",
                  file=sys.stderr)
        else:
            suggestion = _suggest_clock(board, fmax)
            hint = (f"; rebuild with a lower clock, e.g. --clock {suggestion:g}"
                    if suggestion is not None else "; rebuild with a smaller configuration")
            print(f"WARNING: timing failed: achieved Fmax {fmax:.2f} MHz < target clock "
                  f"{report['clock_mhz']:.2f} MHz, so the bitstream may not work reliably"
                  f"{hint}", file=sys.stderr)
    return 0


def _program(args):
    from pathlib import Path

    from boards.program import ProgramError, program

    def fail(message):
        print(f"puce program: error: {message}", file=sys.stderr)
        return 1

    try:
        board = _board_argument(args.board)
        if args.bitstream is not None and args.out is not None:
            raise ValueError("give --bitstream or --out, not both")
        if args.bitstream is not None:
            bitstream = Path(args.bitstream)
        else:
            if args.out is not None:
                folder = Path(args.out)
            else:
                geometry = _build_geometry(board, args)
                folder = Path("build") / f"{board.name}-{geometry.rows}x{geometry.cols}"
            bitstream = folder / f"puce{board.bitstream}"
        where = "configuration flash" if args.flash else "FPGA (SRAM)"
        print(f"puce program: writing {bitstream} to the {board.title}'s {where}",
              file=sys.stderr, flush=True)
        program(board, bitstream, flash=args.flash)
    except (TypeError, ValueError, ProgramError) as error:
        return fail(error)
    except KeyboardInterrupt:
        print("puce program: interrupted", file=sys.stderr)
        return 130
    print("puce program: done", file=sys.stderr)
    return 0


def _parser():
    parser = argparse.ArgumentParser(prog="puce", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo", help="train, quantize and run a digits MLP on the accelerator")
    demo.add_argument("--backend", default="verilator",
                      help="amaranth, verilator, model or serial (a board; default verilator)")
    demo.add_argument("--rows", default="8", metavar="R", help="array rows R (default 8)")
    demo.add_argument("--cols", default="8", metavar="C", help="array columns C (default 8)")
    demo.add_argument("--limit", type=_positive, metavar="N",
                      help="run only the first N test images (the Amaranth backend is slow)")
    demo.add_argument("--batch", type=_positive, default=64, metavar="N",
                      help="images per program (default 64)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _serial_options(demo)
    demo.set_defaults(run=_demo)

    matmul = commands.add_parser("matmul", help="multiply two int8 .npy matrices on the "
                                                "accelerator")
    matmul.add_argument("a", metavar="A.npy", help="int8 or uint8 M x K matrix")
    matmul.add_argument("b", metavar="B.npy", help="int8 or uint8 K x N matrix")
    matmul.add_argument("-o", "--output", required=True, metavar="C.npy",
                        help="where to write the int32 M x N product")
    matmul.add_argument("--rows", default="8", metavar="R", help="array rows R (default 8)")
    matmul.add_argument("--cols", default="8", metavar="C", help="array columns C (default 8)")
    matmul.add_argument("--backend", default="verilator",
                        help="amaranth, verilator, model or serial (a board; default verilator)")
    matmul.add_argument("--stats", metavar="FILE.json",
                        help="write cycles, MACs, utilization, ... as JSON")
    _serial_options(matmul)
    matmul.set_defaults(run=_matmul)

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

    # Board commands: values are checked by the handlers, so that a bad one is one clear line
    # and exit status 1.
    from boards.targets import BOARDS

    known = ", ".join(BOARDS)
    build_parser = commands.add_parser(
        "build", help="build a board's bitstream and report its size and speed",
        description="Synthesize, place and route the accelerator for a board with the YoWASP "
                    "tools, write the bitstream and report.json/report.md into the output "
                    "folder, and print the report. Sizes, clock and UART default to the "
                    "board's.")
    build_parser.add_argument("--board", metavar="BOARD", help=f"the board: {known}")
    build_parser.add_argument("--rows", metavar="R", help="array rows R (default: the board's)")
    build_parser.add_argument("--cols", metavar="C",
                              help="array columns C (default: the board's)")
    build_parser.add_argument("--clock", metavar="MHZ",
                              help="accelerator clock in MHz (default: the board's); the PLL "
                                   "makes it within 1 %%")
    build_parser.add_argument("--baud", metavar="N", help="UART rate (default: the board's)")
    build_parser.add_argument("--ppu-lanes", metavar="N",
                              help="lanes of the pipelined PPU (default: the board's PPU, "
                                   "the bit-serial one on the iCEBreaker)")
    build_parser.add_argument("--ub-depth", metavar="N",
                              help="unified buffer rows (default: the board's)")
    build_parser.add_argument("--wm-depth", metavar="N",
                              help="weight memory rows (default: the board's)")
    build_parser.add_argument("--acc-depth", metavar="N",
                              help="accumulator rows (default: the board's)")
    build_parser.add_argument("--dsp-budget", metavar="N",
                              help="DSP blocks the multipliers may use (default: the board's, "
                                   "else all)")
    build_parser.add_argument("--seed", metavar="N",
                              help="nextpnr placement seed (default: the board's)")
    build_parser.add_argument("--out", metavar="DIR",
                              help="output folder (default build/<board>-<R>x<C>)")
    build_parser.set_defaults(run=_build)

    program_parser = commands.add_parser(
        "program", help="load a bitstream into a board (or write it to its flash)",
        description="Load a bitstream built by `puce build` into the board's FPGA with its "
                    "programmer (iceprog for the iCEBreaker, openFPGALoader for the others), "
                    "or write it to the configuration flash with --flash.")
    program_parser.add_argument("--board", metavar="BOARD", help=f"the board: {known}")
    program_parser.add_argument("--bitstream", metavar="PATH",
                                help="the bitstream (default: DIR/puce.bin, .bit or .fs)")
    program_parser.add_argument("--out", metavar="DIR",
                                help="the build's output folder (default "
                                     "build/<board>-<R>x<C>)")
    program_parser.add_argument("--rows", metavar="R",
                                help="array rows of the default folder (default: the board's)")
    program_parser.add_argument("--cols", metavar="C",
                                help="array columns of the default folder (default: the "
                                     "board's)")
    program_parser.add_argument("--flash", action="store_true",
                                help="write the configuration flash (kept at power-off) "
                                     "instead of the SRAM")
    program_parser.set_defaults(run=_program, ub_depth=None, wm_depth=None, acc_depth=None)
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (TypeError, ValueError) as error:
        print(f"puce {args.command}: error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:          # DeviceError (a board or a simulator failed)
        from firmware.backends import DeviceError
        if not isinstance(error, DeviceError):
            raise
        print(f"puce {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
