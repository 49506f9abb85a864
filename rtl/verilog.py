"""Verilog for puce's blocks, for other simulators (Icarus, Verilator) and other flows.

The output is meant to be checked in, diffed and fed to third-party tools, so it is kept
reproducible: no source locations (``emit_src=False``), no absolute paths, and the same text for
the same parameters on every run and every machine.

Ports keep Amaranth's flattened names: a stream member ``x`` becomes ``x__valid``, ``x__ready`` and
``x__payload`` (the payload layout packed into one vector, first field in the low bits), next to
``clk`` and ``rst`` (synchronous, active high).
"""

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from amaranth.back import verilog as _verilog

__all__ = ["Top", "TOPS", "emit_verilog", "top_component", "top_verilog", "mxu_verilog",
           "ppu_verilog", "accelerator_verilog"]

# A path of two or more components after a separator: /work/..., /home/x/..., /tmp/...
_ABSOLUTE_PATH = re.compile(r"(?:^|[\s\"'(=,:;])(/(?:[\w.+-]+/)+[\w.+-]*)", re.MULTILINE)
_WINDOWS_PATH = re.compile(r"\b[A-Za-z]:\\[\w.+-]")


def _absolute_paths(text):
    """Absolute file-system paths that appear in ``text``."""
    found = [match.group(1) for match in _ABSOLUTE_PATH.finditer(text)]
    found += [match.group(0) for match in _WINDOWS_PATH.finditer(text)]
    # Places that must never leak, even when they would not look like a path by themselves.
    for place in {os.getcwd(), str(Path(__file__).resolve().parent.parent), str(Path.home())}:
        if len(place) > 1 and place in text:
            found.append(place)
    return found


def emit_verilog(component, name):
    """Convert ``component`` to Verilog text with top module ``name``.

    Raises
    ------
    RuntimeError
        If the text would contain an absolute path (it would not be reproducible).
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"Module name must be a plain Verilog identifier, not {name!r}")
    text = _verilog.convert(component, name=name, emit_src=False)
    leaked = _absolute_paths(text)
    if leaked:
        raise RuntimeError(f"Verilog for {name} contains absolute paths: {sorted(set(leaked))}")
    return text


def _mxu(rows, cols):
    from .mxu import MatrixUnit
    return MatrixUnit(rows, cols)


def _ppu(rows, cols):
    from .ppu import PostProcessor
    return PostProcessor(cols)  # a row of C accumulators; R does not matter


def _accelerator(rows, cols):
    from firmware.isa import Geometry
    from .accelerator import Accelerator
    return Accelerator(Geometry(rows, cols))  # the default memory depths


@dataclass(frozen=True)
class Top:
    """A block that can be emitted on its own: its module name and how to build it."""
    module: str
    build: Callable  # (rows, cols) -> wiring.Component
    description: str


#: The blocks ``top_verilog`` (and ``puce verilog --top``) know, by short name. To add one,
#: give a factory taking ``(rows, cols)`` (ignore what the block does not use).
TOPS = {
    "mxu": Top("puce_mxu", _mxu, "matrix unit: R x C weight-stationary systolic array"),
    "ppu": Top("puce_ppu", _ppu, "post-processing unit: requantizes rows of C int32 to int8"),
    "accelerator": Top("puce_accelerator", _accelerator,
                       "the whole accelerator: controller, memories, MXU and PPU on byte streams"),
}


def top_component(top="mxu", *, rows=8, cols=8):
    """The component behind ``TOPS[top]`` for the given size."""
    if top not in TOPS:
        raise ValueError(f"unknown top {top!r}; known: {', '.join(sorted(TOPS))}")
    return TOPS[top].build(rows, cols)


def top_verilog(top="mxu", *, rows=8, cols=8):
    """Verilog for one of ``TOPS``, with its module named ``TOPS[top].module``."""
    component = top_component(top, rows=rows, cols=cols)
    return emit_verilog(component, TOPS[top].module)


def mxu_verilog(rows=8, cols=8):
    """Verilog for an R x C :class:`rtl.mxu.MatrixUnit`, top module ``puce_mxu``."""
    return top_verilog("mxu", rows=rows, cols=cols)


def ppu_verilog(cols=8, lanes=None):
    """Verilog for a C-wide :class:`rtl.ppu.PostProcessor` of ``lanes`` (None: C), top module
    ``puce_ppu``."""
    if lanes is None:
        return top_verilog("ppu", rows=1, cols=cols)
    from .ppu import PostProcessor
    return emit_verilog(PostProcessor(cols, lanes), TOPS["ppu"].module)


def accelerator_verilog(geometry=None, ppu_lanes=None, timing_registers=True, serial_ppu=False,
                        **options):
    """Verilog for an :class:`rtl.accelerator.Accelerator` of any ``firmware.isa.Geometry``
    (memory depths included), ``ppu_lanes``, ``timing_registers``, ``serial_ppu`` and its other
    keyword ``options``, top module ``puce_accelerator``; the default geometry if None."""
    from firmware.isa import Geometry
    from .accelerator import Accelerator
    return emit_verilog(Accelerator(Geometry() if geometry is None else geometry,
                                    ppu_lanes=ppu_lanes,
                                    timing_registers=timing_registers,
                                    serial_ppu=serial_ppu, **options),
                        TOPS["accelerator"].module)
