"""Random programs for differential tests of the accelerator against the ISA model.

Memories in tests are small and row ranges short, so instructions in flight overlap often and
every hazard of the scoreboard gets exercised.
"""

import numpy as np

from firmware.isa import Flag, Instruction, Opcode, ppu_config_bytes

__all__ = ["random_range", "random_bytes", "random_ppu_config", "random_instructions"]

_KINDS = {"write_ub": 3, "write_wm": 2, "set_ppu": 1, "load": 2, "matmul": 4, "activate": 2,
          "read_ub": 2, "read_acc": 2, "counters": 1, "sync": 1, "nop": 0.5}


def random_range(rng, depth, most):
    """``(start, count)``: 1 to ``most`` rows inside a memory of ``depth`` rows."""
    n = int(rng.integers(1, min(depth, most) + 1))
    return int(rng.integers(0, depth - n + 1)), n


def random_bytes(rng, count):
    return rng.integers(0, 256, count, dtype=np.uint8).tobytes()


def random_ppu_config(rng, cols):
    """A SET_PPU payload with every field random (in its valid range)."""
    return ppu_config_bytes(rng.integers(-2**31, 2**31, cols), int(rng.integers(2**30, 2**31)),
                            int(rng.integers(0, 32)), int(rng.integers(-128, 128)),
                            int(rng.integers(0, 3)), int(rng.integers(-128, 128)))


def random_instructions(rng, g, count, *, most=4, counters=True, errors=0.0, error=None):
    """``count`` random instructions for geometry ``g``; returns ``(instructions, pending)``.

    The weight-tile state is tracked so that LOAD_WEIGHTS and SWAP stay valid; ``pending``
    tells whether a loaded tile still waits for its swap at the end. ``counters=False`` leaves
    out READ_COUNTERS (whose timed counters a comparison would have to mask). With probability
    ``errors`` an instruction is replaced by ``error(rng, g, pending)``, a list of failing
    instructions.
    """
    R, C = g.rows, g.cols
    kinds = [kind for kind in _KINDS if counters or kind != "counters"]
    weights = np.array([_KINDS[kind] for kind in kinds])
    out, pending = [], False
    for _ in range(count):
        if errors and rng.random() < errors:
            out += error(rng, g, pending)
            continue
        kind = rng.choice(kinds, p=weights / weights.sum())
        if kind == "write_ub":
            a, n = random_range(rng, g.ub_depth, most)
            out.append(Instruction(Opcode.WRITE_UB, a=a, n=n, payload=random_bytes(rng, n * R)))
        elif kind == "write_wm":
            a, n = random_range(rng, g.wm_depth, most + R)
            out.append(Instruction(Opcode.WRITE_WM, a=a, n=n, payload=random_bytes(rng, n * C)))
        elif kind == "set_ppu":
            out.append(Instruction(Opcode.SET_PPU, payload=random_ppu_config(rng, C)))
        elif kind == "load" and not pending:
            a = int(rng.integers(0, g.wm_depth - R + 1))
            out.append(Instruction(Opcode.LOAD_WEIGHTS, flags=int(rng.integers(0, 2)), a=a))
            pending = True
        elif kind == "matmul":
            a, n = random_range(rng, g.ub_depth, most)
            b = int(rng.integers(0, g.acc_depth - n + 1))
            swap = pending and rng.random() < 0.7
            pending = pending and not swap
            flags = int(rng.integers(0, 4)) | (Flag.SWAP if swap else 0)
            out.append(Instruction(Opcode.MATMUL, flags=flags, a=a, b=b, n=n))
        elif kind == "activate" and C <= R:
            a, n = random_range(rng, g.acc_depth, most)
            b = int(rng.integers(0, g.ub_depth - n + 1))
            out.append(Instruction(Opcode.ACTIVATE, flags=int(rng.integers(0, R - C + 1)),
                                   a=a, b=b, n=n))
        elif kind == "read_ub":
            a, n = random_range(rng, g.ub_depth, most)
            out.append(Instruction(Opcode.READ_UB, a=a, n=n))
        elif kind == "read_acc":
            a, n = random_range(rng, g.acc_depth, most)
            out.append(Instruction(Opcode.READ_ACC, a=a, n=n))
        elif kind == "counters":
            out.append(Instruction(Opcode.READ_COUNTERS, flags=int(rng.integers(0, 2))))
        elif kind == "sync":
            out.append(Instruction.sync())
        elif kind == "nop":
            out.append(Instruction(Opcode.NOP))
    return out, pending
