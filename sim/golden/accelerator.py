"""ISA-level functional model of the whole accelerator: byte stream in, response packets out.

:class:`AcceleratorModel` executes a program (the byte stream of :mod:`firmware.isa`) one
instruction at a time, in program order, with the semantics of docs/isa.md. It is the golden
reference for the controller's differential tests. The arithmetic is not repeated here: the MXU
product is :func:`sim.golden.mxu.matmul`, requantization :func:`sim.golden.ppu.requantize` and
the accumulators' wrap-around :func:`sim.golden.memory.wrap_int32`.

Timing is not modelled: the CYCLES and STALL_* counters read as 0 (differential tests mask
them); MXU_BUSY and INSTRUCTIONS are exact.
"""

import struct
from dataclasses import dataclass

import numpy as np

from firmware.isa import (SYNC_WORD, WORD, Counter, ErrorCode, Flag, Geometry, Instruction,
                          Opcode, Response, Tag, malformed, padded_length, unpack_ppu_config)

from .memory import wrap_int32
from .mxu import matmul
from .ppu import NONE, requantize

__all__ = ["WeightTile", "PpuConfig", "AcceleratorModel"]


@dataclass(frozen=True)
class WeightTile:
    """A weight tile: R x C raw bytes (uint8) and whether they are int8 (``signed``)."""
    data: np.ndarray
    signed: bool


@dataclass
class PpuConfig:
    """The PPU configuration set by SET_PPU; the fields of :class:`rtl.ppu.PostProcessorConfig`."""
    bias: np.ndarray                    #: C int32 biases (int64 array)
    multiplier: int = 0
    shift: int = 0
    zero_point: int = 0
    activation: int = NONE
    clamp_max: int = 127

    @classmethod
    def initial(cls, cols):
        return cls(bias=np.zeros(cols, dtype=np.int64))


class AcceleratorModel:
    """The accelerator as the host sees it: feed program bytes, read response bytes.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
        Array size and memory depths.

    Attributes
    ----------
    ub : numpy.ndarray of uint8, shape (ub_depth, R)
        Unified buffer.
    wm : numpy.ndarray of uint8, shape (wm_depth, C)
        Weight memory.
    acc : numpy.ndarray of int32, shape (acc_depth, C)
        Accumulator memory.
    active : WeightTile
        The tile MATMUL multiplies by (all zero at first).
    pending : WeightTile or None
        The tile loaded by LOAD_WEIGHTS and not yet swapped in.
    ppu : PpuConfig
        The current PPU configuration.
    counters : list of int
        The performance counters, indexed by :class:`firmware.isa.Counter`.
    error : tuple (ErrorCode, int)
        The first error since the last SYNC and its instruction index; ``(OK, 0)`` if none.
    index : int
        Instruction words decoded since the last SYNC (the index the next one will have).
    faulted : bool
        After an illegal opcode: words are discarded until the SYNC word.
    """
    def __init__(self, geometry=Geometry()):
        if not isinstance(geometry, Geometry):
            raise TypeError(f"geometry must be a firmware.isa.Geometry, not {geometry!r}")
        self.geometry = g = geometry
        self.ub = np.zeros((g.ub_depth, g.rows), dtype=np.uint8)
        self.wm = np.zeros((g.wm_depth, g.cols), dtype=np.uint8)
        self.acc = np.zeros((g.acc_depth, g.cols), dtype=np.int32)
        self.active = WeightTile(np.zeros((g.rows, g.cols), dtype=np.uint8), False)
        self.pending = None
        self.ppu = PpuConfig.initial(g.cols)
        self.counters = [0] * len(Counter)
        self.error = (ErrorCode.OK, 0)
        self.index = 0
        self.faulted = False
        self._input = bytearray()

    # The byte stream.

    @property
    def incomplete(self):
        """True if the input so far ends inside a word or a payload (the model waits for more)."""
        return len(self._input) > 0

    @property
    def buffered(self):
        """Bytes received but not yet consumed: the start of an unfinished instruction."""
        return len(self._input)

    def run(self, program):
        """Consume ``program`` (bytes) and return the response bytes it produces.

        Feeding a stream in pieces gives the same responses and state as feeding it at once:
        an instruction runs only once its word and whole payload have arrived. Afterwards,
        :attr:`incomplete` tells whether the input ended mid-instruction.
        """
        self._input += bytes(program)
        data = self._input
        out = []
        offset = 0
        while len(data) - offset >= WORD:
            word = bytes(data[offset:offset + WORD])
            if self.faulted:
                offset += WORD
                if word == SYNC_WORD:
                    self.faulted = False
                    self._sync(out)
                continue
            instruction = Instruction.decode_word(word)
            length = instruction.payload_length(self.geometry)
            end = offset + WORD + padded_length(length)
            if len(data) < end:
                break                                   # wait for the rest of the payload
            payload = bytes(data[offset + WORD:offset + WORD + length])
            offset = end
            self._execute(Instruction(instruction.opcode, instruction.flags, instruction.a,
                                      instruction.b, instruction.n, payload), out)
        del data[:offset]
        return b"".join(response.encode() for response in out)

    # Execution.

    def _fail(self, code):
        if self.error[0] == ErrorCode.OK:
            self.error = (ErrorCode(code), self.index)

    def _sync(self, out):
        code, index = self.error
        out.append(Response(Tag.STATUS, code, index))
        self.error = (ErrorCode.OK, 0)
        self.index = 0
        self.counters[Counter.INSTRUCTIONS] += 1

    def _execute(self, instruction, out):
        try:
            opcode = Opcode(instruction.opcode)
        except ValueError:
            out.append(Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, self.index))
            self._fail(ErrorCode.ILLEGAL_OPCODE)
            self.faulted = True
            self.index += 1
            self.counters[Counter.INSTRUCTIONS] += 1
            return
        if opcode == Opcode.SYNC and malformed(instruction, self.geometry) is None:
            self._sync(out)
            return
        code = self._check(opcode, instruction)
        if code == ErrorCode.OK:
            # READ_COUNTERS snapshots the counters before this instruction is counted.
            getattr(self, "_" + opcode.name.lower())(instruction, out)
        else:
            self._fail(code)
        self.index += 1
        self.counters[Counter.INSTRUCTIONS] += 1
        if opcode == Opcode.READ_COUNTERS and code == ErrorCode.OK and \
                instruction.flags & Flag.CLEAR:
            self.counters = [0] * len(Counter)

    def _check(self, opcode, ins):
        """The error an instruction raises, in priority order; OK if it can run."""
        g = self.geometry
        if malformed(ins, g) is not None:
            return ErrorCode.MALFORMED
        ranges = {
            Opcode.WRITE_UB:     [(ins.a, ins.n, g.ub_depth)],
            Opcode.WRITE_WM:     [(ins.a, ins.n, g.wm_depth)],
            Opcode.LOAD_WEIGHTS: [(ins.a, g.rows, g.wm_depth)],
            Opcode.MATMUL:       [(ins.a, ins.n, g.ub_depth), (ins.b, ins.n, g.acc_depth)],
            Opcode.ACTIVATE:     [(ins.a, ins.n, g.acc_depth), (ins.b, ins.n, g.ub_depth)],
            Opcode.READ_UB:      [(ins.a, ins.n, g.ub_depth)],
            Opcode.READ_ACC:     [(ins.a, ins.n, g.acc_depth)],
        }.get(opcode, [])
        if any(start + count > depth for start, count, depth in ranges):
            return ErrorCode.ADDRESS
        if opcode == Opcode.LOAD_WEIGHTS and self.pending is not None:
            return ErrorCode.WEIGHTS_FULL
        if opcode == Opcode.MATMUL and ins.flags & Flag.SWAP and self.pending is None:
            return ErrorCode.NO_WEIGHTS
        return ErrorCode.OK

    def _nop(self, ins, out):
        pass

    def _write_ub(self, ins, out):
        rows = np.frombuffer(ins.payload, dtype=np.uint8).reshape(ins.n, self.geometry.rows)
        self.ub[ins.a:ins.a + ins.n] = rows

    def _write_wm(self, ins, out):
        rows = np.frombuffer(ins.payload, dtype=np.uint8).reshape(ins.n, self.geometry.cols)
        self.wm[ins.a:ins.a + ins.n] = rows

    def _set_ppu(self, ins, out):
        config = unpack_ppu_config(ins.payload, self.geometry.cols)
        config["bias"] = np.array(config["bias"], dtype=np.int64)
        self.ppu = PpuConfig(**config)

    def _load_weights(self, ins, out):
        tile = self.wm[ins.a:ins.a + self.geometry.rows].copy()
        self.pending = WeightTile(tile, bool(ins.flags & Flag.SIGNED))

    def _matmul(self, ins, out):
        if ins.flags & Flag.SWAP:
            self.active, self.pending = self.pending, None
        product = matmul(self.ub[ins.a:ins.a + ins.n], self.active.data,
                         a_signed=bool(ins.flags & Flag.SIGNED), b_signed=self.active.signed)
        rows = slice(ins.b, ins.b + ins.n)
        if ins.flags & Flag.ACCUMULATE:
            self.acc[rows] = wrap_int32(self.acc[rows].astype(np.int64) + product)
        else:
            self.acc[rows] = product
        self.counters[Counter.MXU_BUSY] += ins.n

    def _activate(self, ins, out):
        p = self.ppu
        q = requantize(self.acc[ins.a:ins.a + ins.n], p.bias, p.multiplier, p.shift,
                       p.zero_point, p.activation, p.clamp_max)
        lane = ins.flags
        self.ub[ins.b:ins.b + ins.n, lane:lane + self.geometry.cols] = q.view(np.uint8)

    def _read_ub(self, ins, out):
        out.append(Response(Tag.DATA, payload=self.ub[ins.a:ins.a + ins.n].tobytes()))

    def _read_acc(self, ins, out):
        rows = self.acc[ins.a:ins.a + ins.n].astype("<i4")
        out.append(Response(Tag.DATA, payload=rows.tobytes()))

    def _read_counters(self, ins, out):
        values = [value & (2**64 - 1) for value in self.counters]
        out.append(Response(Tag.DATA, payload=struct.pack(f"<{len(values)}Q", *values)))
