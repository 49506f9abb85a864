"""An analytic cycle model of the accelerator: how long a program takes, without simulating it.

The model walks the program once, in order, as the controller issues it, and keeps for each
resource the cycle at which it becomes free:

- the host link: one byte per cycle in (instruction words and payloads) and one byte per cycle
  out (response packets);
- the decoder, which issues in order and holds an instruction until its unit is free and its
  data hazards have cleared (a READ_ACC waits for the accumulator rows a MATMUL still writes,
  a MATMUL for rows a READ or ACTIVATE still reads, ...);
- the units: weight loader (R cycles a tile), MATMUL (one row per cycle once its tile is
  loaded), ACTIVATE (one row per cycle through the PPU, or one every ceil(C / lanes) cycles
  through a time-shared one, see ``ppu_lanes``) and the response sender.

It ignores second-order effects (the exact cycle a response register frees, arbitration on a
shared read port), so it is an estimate; ``tests/firmware/test_cycle_model.py`` checks it
against the RTL's cycle counter within :data:`TOLERANCE` (or :data:`TOLERANCE_CYCLES`).
"""

from dataclasses import dataclass

from .isa import WORD, Counter, Geometry, Opcode, padded_length

__all__ = ["TOLERANCE", "TOLERANCE_CYCLES", "Estimate", "estimate_cycles"]

#: The error the model is tested to stay within, against the RTL's CYCLES counter: relative,
#: or absolute (cycles) for short programs, whichever is larger. Measured: within 4 % on every
#: program of a few thousand cycles or more, and 60-70 cycles short on tiny ones: the runtime's
#: counter read-out around a program (the prefix's counter packet and SYNC, the suffix's word),
#: which the model does not see.
TOLERANCE = 0.15
TOLERANCE_CYCLES = 80

# Fixed latencies of the RTL, in cycles (calibrated against the Verilator model).
_DECODE = 3             # word assembled -> instruction issued
_VERDICT = 2            # registered hazards, then the registered verdict: a word takes 10 cycles
_UNIT = 1               # a unit's busy flag reaches the verdict through the hazard stage
_READ = 2               # memory read request -> response registered
_ACC_WRITE = 3          # MXU result -> visible in the accumulator memory
_PPU = 7                # PPU pipeline
_HEADER = WORD          # bytes of a response packet header


@dataclass
class Estimate:
    """The model's answer for one program."""
    cycles: int
    mxu_busy: int
    input_bytes: int
    output_bytes: int

    @property
    def bound(self):
        """What limits the program: ``"host input"``, ``"host output"`` or ``"compute"``."""
        return max((self.input_bytes, "host input"), (self.output_bytes, "host output"),
                   (self.mxu_busy, "compute"))[1]


def estimate_cycles(instructions, geometry, ppu_lanes=None):
    """Estimate the cycles ``instructions`` (a list of :class:`Instruction`) take on
    ``geometry``, from the first byte in to the last byte out, with a PPU of ``ppu_lanes``
    lanes (None: one per column, as :class:`rtl.accelerator.Accelerator` builds by default)."""
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a Geometry, not {geometry!r}")
    g = geometry
    if ppu_lanes is None:
        ppu_lanes = g.cols
    if not isinstance(ppu_lanes, int) or isinstance(ppu_lanes, bool):
        raise TypeError(f"ppu_lanes must be an integer or None, not {ppu_lanes!r}")
    if not 1 <= ppu_lanes <= g.cols:
        raise ValueError(f"ppu_lanes must be between 1 and {g.cols}, not {ppu_lanes!r}")
    ppu_interval = -(-g.cols // ppu_lanes)     # cycles a row spends in the PPU's lanes
    mxu_latency = g.rows + g.cols + 3       # rtl.mxu.MatrixUnit.latency
    t_in = 0                # next cycle the input link is free
    t_out = 0               # next cycle the output link is free
    t_mxu = 0               # the MXU accepts its next row
    t_loader = 0            # the weight loader is free
    t_tile = 0              # the most recently loaded tile is complete in the shadow bank
    active_end = 0          # the last row using the active tile has entered the MXU
    older_end = 0           # ... using the tile before it, whose bank the next load reuses
    t_activate = 0
    acc_ready = {}          # accumulator row -> cycle its last MATMUL write lands
    ub_busy = 0             # last cycle a unit reads the unified buffer
    in_bytes = out_bytes = mxu_busy = 0
    t_issue = 0

    for ins in instructions:
        op = ins.opcode
        size = WORD + padded_length(ins.payload_length(g))
        in_bytes += size
        # The word arrives, then the decoder issues it in order.
        t_word = t_in + WORD
        t = max(t_word, t_issue) + _DECODE
        if op in (Opcode.WRITE_UB, Opcode.WRITE_WM, Opcode.SET_PPU):
            if op == Opcode.WRITE_UB:
                t = max(t, ub_busy)
            t_in = t + size - WORD
            t_issue = t
            continue
        t_in = t_word + _VERDICT
        if op == Opcode.LOAD_WEIGHTS:
            t = max(t, t_loader + _UNIT)
            # The shadow bank is free once the last row of the tile before the active one has
            # passed every cell.
            start = max(t, older_end + g.rows + g.cols - 2)
            t_tile = start + g.rows
            t_loader = t_tile
        elif op == Opcode.MATMUL:
            t = max(t, t_mxu - ins.n + _UNIT)   # the unit takes the next as this one ends
            start = max(t + _READ, t_mxu)
            if ins.flags & 0x4:         # SWAP: the tile must be whole
                start = max(start, t_tile)
                t_swap_bank_free = start + g.rows + g.cols - 2
            end = start + ins.n
            t_mxu = end
            mxu_busy += ins.n
            ub_busy = max(ub_busy, end)
            for row in range(ins.b, ins.b + ins.n):
                acc_ready[row] = end + mxu_latency + _ACC_WRITE
        elif op == Opcode.ACTIVATE:
            ready = max((acc_ready.get(r, 0) for r in range(ins.a, ins.a + ins.n)), default=0)
            t = max(t, ready, t_activate + _UNIT)
            t_activate = t + _READ + ins.n * ppu_interval + _PPU
            ub_busy = max(ub_busy, t_activate)
        elif op in (Opcode.READ_UB, Opcode.READ_ACC, Opcode.READ_COUNTERS, Opcode.SYNC):
            if op == Opcode.READ_UB:
                length, ready = ins.n * g.rows, max(ub_busy, t_activate) + _UNIT
            elif op == Opcode.READ_ACC:
                length = ins.n * g.cols * 4
                ready = max((acc_ready.get(r, 0) for r in range(ins.a, ins.a + ins.n)),
                            default=0)
            elif op == Opcode.READ_COUNTERS:
                length, ready = 8 * len(Counter), 0
            else:
                length = None
                ready = max(t_mxu + mxu_latency + _ACC_WRITE, t_loader, t_activate, ub_busy,
                            max(acc_ready.values(), default=0)) + _UNIT
            t = max(t, ready, t_out + _UNIT)
            packet = _HEADER + (length or 0)
            t_out = t + _READ + packet
            out_bytes += packet
        t_issue = t
    cycles = max(t_in, t_out, t_mxu, t_activate)
    return Estimate(cycles, mxu_busy, in_bytes, out_bytes)
