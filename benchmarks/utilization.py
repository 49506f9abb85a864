"""MXU utilization of a 256 x 256 x 256 int8 matmul on an 8 x 8 array (Verilator backend).

    .venv/bin/python benchmarks/utilization.py [--size 256]

Reports two figures:

- end to end: ``puce matmul`` as a user runs it (default geometry), host transfers included:
  MACs / (R * C * cycles) over the whole program;
- the matmul phase: operands already on chip (a geometry with memories large enough to hold
  A, B and every accumulator), only LOAD_WEIGHTS and MATMUL instructions, measured by the
  accelerator's own cycle counter around them.
"""

import argparse

import numpy as np

from firmware.compiler import compile_matmul
from firmware.isa import Geometry, Opcode
from firmware.runtime import Device


def end_to_end(a, b):
    with Device("verilator", Geometry()) as device:
        c = device.matmul(a, b)
        assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
        return device.last_stats


def matmul_phase(a, b):
    m, k = a.shape
    n = b.shape[1]
    rows = cols = 8
    kt, nt = -(-k // rows), -(-n // cols)
    geometry = Geometry(rows, cols, ub_depth=max(kt * m, 2), wm_depth=kt * nt * rows,
                        acc_depth=nt * m)
    program = compile_matmul(a, b, geometry)
    t = program.tiling
    assert t.b_resident and t.mb == m and t.ng == nt, t
    phases = {"transfer": [], "compute": [], "results": []}
    for instruction in program.instructions:
        if instruction.opcode in (Opcode.WRITE_UB, Opcode.WRITE_WM):
            phases["transfer"].append(instruction)
        elif instruction.opcode in (Opcode.LOAD_WEIGHTS, Opcode.MATMUL):
            phases["compute"].append(instruction)
        elif instruction.opcode == Opcode.READ_ACC:
            phases["results"].append(instruction)
    stats = {}
    with Device("verilator", geometry) as device:
        for name in ("transfer", "compute"):
            device.run(b"".join(i.encode() for i in phases[name]))
            stats[name] = dict(device.last_stats)
        responses = device.run(b"".join(i.encode() for i in phases["results"]))
        stats["results"] = dict(device.last_stats)
        c = program.collect(responses)
        assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    return geometry, stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (args.size, args.size), np.int8)
    b = rng.integers(-128, 128, (args.size, args.size), np.int8)
    macs = args.size ** 3

    stats = end_to_end(a, b)
    print(f"end to end ({args.size}^3, default geometry): {stats['cycles']:,} cycles, "
          f"utilization {stats['utilization']:.1%}, MXU busy {stats['mxu_occupancy']:.1%}")
    geometry, phases = matmul_phase(a, b)
    compute = phases["compute"]
    print(f"matmul phase ({args.size}^3, operands on chip, {geometry}): "
          f"{compute['cycles']:,} cycles, utilization {macs / (64 * compute['cycles']):.1%} "
          f"(MXU busy {compute['mxu_busy_cycles'] / compute['cycles']:.1%})")
    total = sum(phase["cycles"] for phase in phases.values())
    print(f"  with the transfers around it: {phases['transfer']['cycles']:,} cycles in, "
          f"{phases['results']['cycles']:,} cycles out, {macs / (64 * total):.1%} overall")


if __name__ == "__main__":
    main()
