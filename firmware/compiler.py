"""The compiler: tiles an int8 matrix product of any size into a puce program.

The MXU multiplies one R x C weight tile at a time, memories are finite, so a product
``A (M x K) @ B (K x N)`` becomes a schedule of tiles (the numbers are for one M chunk):

- A is cut into K tiles of R columns; a chunk of ``mb`` rows of every K tile (``kc`` tiles at a
  time when K is too large) sits in the unified buffer, one block of ``mb`` rows per K tile;
- B is cut into ``kt x nt`` weight tiles of R x C. When all of B fits in the weight memory it is
  written once; otherwise tiles go through a ring of slots, written just before they are used;
- for each N tile, the K tiles' products add up in ``mb`` accumulator rows (the first overwrites,
  the rest ACCUMULATE), and a READ_ACC brings the C columns home.

Weights are double-buffered: every MATMUL is preceded by the LOAD_WEIGHTS of its own tile and
swaps it in, and the controller lets the next LOAD_WEIGHTS run while the current MATMUL streams.
With ``mb >= 2R + C - 1`` rows per tile the MXU never waits for weights, so the compiler picks
the largest ``mb`` the unified buffer allows.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from .isa import ErrorCode, Flag, Geometry, Instruction, Opcode, Response, Tag

__all__ = ["Tiling", "CompiledMatmul", "plan_matmul", "compile_matmul", "check_operands",
           "data_packets", "emit_tiles"]


def check_operands(a, b):
    """Raise a clear ValueError unless ``a @ b`` is a product the accelerator can compute."""
    for name, x in (("A", a), ("B", b)):
        if not isinstance(x, np.ndarray):
            raise ValueError(f"{name} must be a numpy array, not {type(x).__name__}")
        if x.dtype not in (np.int8, np.uint8):
            raise ValueError(f"{name} must have dtype int8 or uint8, not {x.dtype}")
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, not {x.ndim}-D with shape {x.shape}")
        if 0 in x.shape:
            raise ValueError(f"{name} must not be empty, but has shape {x.shape}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"shapes do not match: A is {a.shape[0]} x {a.shape[1]}, B is "
                         f"{b.shape[0]} x {b.shape[1]} (A's columns must equal B's rows)")


@dataclass(frozen=True)
class Tiling:
    """How a product is cut up for one geometry.

    Attributes
    ----------
    m, k, n : int
        The product's sizes.
    kt, nt : int
        K tiles (of R rows of B) and N tiles (of C columns).
    mb : int
        Rows of A per M chunk (rows streamed through each weight tile).
    kc : int
        K tiles of A held in the unified buffer at once.
    ng : int
        N tiles whose accumulators are held at once.
    b_resident : bool
        All of B fits in the weight memory and is written once.
    """
    m: int
    k: int
    n: int
    kt: int
    nt: int
    mb: int
    kc: int
    ng: int
    b_resident: bool

    @property
    def macs(self):
        return self.m * self.k * self.n


def plan_matmul(m, k, n, geometry, *, output_rows=False):
    """Choose the :class:`Tiling` of an ``m x k x n`` product on ``geometry``.

    With ``output_rows``, ``mb`` rows of the unified buffer are kept free (after the A chunk)
    for the int8 results of the post-processing unit.
    """
    if not isinstance(geometry, Geometry):
        raise TypeError(f"geometry must be a Geometry, not {geometry!r}")
    g = geometry
    kt = math.ceil(k / g.rows)
    nt = math.ceil(n / g.cols)
    blocks = kt + 1 if output_rows else kt
    if output_rows and g.ub_depth < 2:
        raise ValueError(f"a unified buffer of {g.ub_depth} row cannot hold both inputs and "
                         f"outputs of a layer")
    mb = min(m, max(1, g.ub_depth // blocks), g.acc_depth)
    kc = min(kt, g.ub_depth // mb - (1 if output_rows else 0))
    ng = min(nt, g.acc_depth // mb)
    b_resident = kt * nt * g.rows <= g.wm_depth
    return Tiling(m, k, n, kt, nt, mb, kc, ng, b_resident)


@dataclass
class CompiledMatmul:
    """A program computing ``A @ B``, and where each DATA packet of its answer belongs.

    Attributes
    ----------
    instructions : list of Instruction
    tiling : Tiling
    outputs : list of (m0, m1, n0, n1)
        For each READ_ACC, in order, the block of the result its DATA packet holds
        (``m1 - m0`` rows of C int32; columns beyond ``n1 - n0`` are padding).
    """
    instructions: list
    tiling: Tiling
    geometry: Geometry
    outputs: list = field(default_factory=list)

    def encode(self):
        return b"".join(instruction.encode() for instruction in self.instructions)

    #: How a DATA packet holds a result row: element type and elements per row.
    element = np.dtype("<i4")

    def row_length(self):
        return self.geometry.cols

    def collect(self, response):
        """Assemble the result from the device's answer (bytes or parsed packets).

        Raises a ValueError if the answer reports an error or does not match the program.
        """
        width = self.row_length()
        result = np.zeros((self.tiling.m, self.tiling.n), dtype=self.element.newbyteorder("="))
        for payload, (m0, m1, n0, n1) in zip(data_packets(response, len(self.outputs)),
                                            self.outputs):
            block = np.frombuffer(payload, dtype=self.element)
            if block.size != (m1 - m0) * width:
                raise ValueError(f"result packet for rows {m0}..{m1} has {block.size} values, "
                                 f"expected {(m1 - m0) * width}")
            result[m0:m1, n0:n1] = block.reshape(m1 - m0, width)[:, :n1 - n0]
        return result

def data_packets(response, expected):
    """The payloads of the DATA packets in ``response`` (bytes or parsed packets).

    Raises a ValueError if the device reported an error or sent other than ``expected``.
    """
    packets = Response.parse(response) if isinstance(response, (bytes, bytearray)) \
        else list(response)
    for packet in packets:
        if packet.tag != Tag.DATA and packet.code != 0:
            raise ValueError(f"the device reported error {ErrorCode(packet.code).name} at "
                             f"instruction {packet.index}")
    data = [packet.payload for packet in packets if packet.tag == Tag.DATA]
    if len(data) != expected:
        raise ValueError(f"expected {expected} result packets, got {len(data)}")
    return data


def emit_tiles(program, a, b, t, epilogue):
    """Emit the tiled product of ``a`` and ``b`` (checked operands) into ``program``.

    ``epilogue(acc_row, j, m0, m1)`` emits what follows once N tile ``j`` of rows ``m0..m1``
    is complete in the accumulators from ``acc_row`` on.
    """
    g = program.geometry
    emit = program.instructions.append
    a_flag = Flag.SIGNED if a.dtype == np.int8 else Flag(0)
    b_flag = Flag.SIGNED if b.dtype == np.int8 else Flag(0)

    # Zero-padded raw bytes, so edge tiles are whole tiles.
    a_bytes = np.zeros((t.m, t.kt * g.rows), dtype=np.uint8)
    a_bytes[:, :t.k] = a.view(np.uint8)
    b_bytes = np.zeros((t.kt * g.rows, t.nt * g.cols), dtype=np.uint8)
    b_bytes[:t.k, :t.n] = b.view(np.uint8)

    def tile_rows(kk, j):
        return b_bytes[kk * g.rows:(kk + 1) * g.rows, j * g.cols:(j + 1) * g.cols]

    slots = g.wm_depth // g.rows
    if t.b_resident:
        for kk in range(t.kt):
            for j in range(t.nt):
                emit(Instruction(Opcode.WRITE_WM, a=(kk * t.nt + j) * g.rows, n=g.rows,
                                 payload=tile_rows(kk, j).tobytes()))
    next_slot = 0

    def weights(kk, j):
        """The WM row of tile (kk, j), writing it first if B is not resident."""
        nonlocal next_slot
        if t.b_resident:
            return (kk * t.nt + j) * g.rows
        slot = next_slot
        next_slot = (next_slot + 1) % slots
        emit(Instruction(Opcode.WRITE_WM, a=slot * g.rows, n=g.rows,
                         payload=tile_rows(kk, j).tobytes()))
        return slot * g.rows

    for m0 in range(0, t.m, t.mb):
        m1 = min(m0 + t.mb, t.m)
        rows = m1 - m0
        resident_chunk = None
        for j0 in range(0, t.nt, t.ng):
            group = range(j0, min(j0 + t.ng, t.nt))
            for k0 in range(0, t.kt, t.kc):
                chunk = range(k0, min(k0 + t.kc, t.kt))
                if resident_chunk != k0:
                    for slot, kk in enumerate(chunk):
                        block = a_bytes[m0:m1, kk * g.rows:(kk + 1) * g.rows]
                        emit(Instruction(Opcode.WRITE_UB, a=slot * t.mb, n=rows,
                                         payload=block.tobytes()))
                    resident_chunk = k0
                for acc_slot, j in enumerate(group):
                    for slot, kk in enumerate(chunk):
                        emit(Instruction(Opcode.LOAD_WEIGHTS, flags=b_flag, a=weights(kk, j)))
                        flags = a_flag | Flag.SWAP | (Flag.ACCUMULATE if kk > 0 else Flag(0))
                        emit(Instruction(Opcode.MATMUL, flags=flags, a=slot * t.mb,
                                         b=acc_slot * t.mb, n=rows))
            for acc_slot, j in enumerate(group):
                epilogue(acc_slot * t.mb, j, m0, m1)


def compile_matmul(a, b, geometry, *, sync=True):
    """Compile ``a @ b`` (int8 or uint8 numpy matrices) into a program for ``geometry``."""
    check_operands(a, b)
    t = plan_matmul(a.shape[0], a.shape[1], b.shape[1], geometry)
    program = CompiledMatmul([], t, geometry)

    def read_accumulators(acc_row, j, m0, m1):
        program.instructions.append(Instruction(Opcode.READ_ACC, a=acc_row, n=m1 - m0))
        program.outputs.append((m0, m1, j * geometry.cols, min((j + 1) * geometry.cols, t.n)))

    emit_tiles(program, a, b, t, read_accumulators)
    if sync:
        program.instructions.append(Instruction.sync())
    return program
