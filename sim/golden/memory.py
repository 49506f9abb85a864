"""Models of the on-chip memories: unified buffer, weight memory and accumulator memory.

Each model holds the memory's contents and applies one operation at a time. The hardware's
ordering between reads and writes (``write_latency``) is a matter of *when* an operation is
applied; :func:`replay` applies a cycle-stamped trace of transfers in that order.
"""

import numpy as np

__all__ = [
    "wrap_int32", "RowMemoryModel", "UnifiedBufferModel", "WeightMemoryModel",
    "AccumulatorModel", "replay",
]


def wrap_int32(values):
    """Integers (within int64) taken modulo 2**32 into -2**31..2**31-1, as int32.

    This is two's complement wrap-around: ``wrap_int32(2**31 - 1 + 1) == -2**31``.
    """
    values = np.asarray(values, dtype=np.int64)
    return ((values + 2**31) % 2**32 - 2**31).astype(np.int32)


def _row(values, width, low, high, what):
    row = np.asarray(values)
    if not np.issubdtype(row.dtype, np.integer):
        raise TypeError(f"{what} must be integers, not {row.dtype}")
    if row.shape != (width,):
        raise ValueError(f"{what} must have shape ({width},), not {row.shape}")
    if row.size and (row.min() < low or row.max() > high):
        raise ValueError(f"{what} must lie in {low}..{high}")
    return row.astype(np.int64)


class _Memory:
    def __init__(self, width, depth, dtype):
        if width < 1 or depth < 1:
            raise ValueError("width and depth must be at least 1")
        self.width = width
        self.depth = depth
        self._rows = np.zeros((depth, width), dtype=dtype)

    def _check_addr(self, addr):
        if not 0 <= addr < self.depth:
            raise IndexError(f"address {addr} out of range for depth {self.depth}")

    def read(self, addr):
        """The row at ``addr``."""
        self._check_addr(addr)
        return self._rows[addr].copy()


class RowMemoryModel(_Memory):
    """A memory of ``depth`` rows of ``width`` raw bytes (:class:`rtl.unified_buffer.RowMemory`).

    Rows are stored as uint8; a write accepts bytes given as int8 or uint8 (-128..255), so
    ``-1`` and ``255`` store the same byte. Reads return uint8 rows.
    """
    def __init__(self, width, depth):
        super().__init__(width, depth, np.uint8)

    def write(self, addr, row):
        """Store ``row`` at ``addr``."""
        self._check_addr(addr)
        self._rows[addr] = _row(row, self.width, -128, 255, "bytes") & 0xff


#: Model of :class:`rtl.unified_buffer.UnifiedBuffer`: rows of R bytes.
UnifiedBufferModel = RowMemoryModel
#: Model of :class:`rtl.weight_memory.WeightMemory`: rows of C bytes.
WeightMemoryModel = RowMemoryModel


class AccumulatorModel(_Memory):
    """A memory of ``depth`` rows of ``cols`` int32 (:class:`rtl.accumulator.AccumulatorMemory`).

    ``write(addr, row, accumulate=True)`` stores ``old + row``, wrapping each element modulo
    2**32 into int32; with ``accumulate=False`` it stores ``row``.
    """
    def __init__(self, cols, depth):
        super().__init__(cols, depth, np.int32)

    def write(self, addr, row, accumulate=False):
        """Store ``row`` at ``addr``, or add it to what is there if ``accumulate``."""
        self._check_addr(addr)
        row = _row(row, self.width, -2**31, 2**31 - 1, "sums")
        if accumulate:
            row = row + self._rows[addr].astype(np.int64)
        self._rows[addr] = wrap_int32(row)


def replay(model, writes, reads, write_latency):
    """Apply cycle-stamped writes and reads to ``model``; return the rows the reads returned.

    ``writes`` holds ``(cycle, args)`` tuples, passed as ``model.write(*args)``; ``reads`` holds
    ``(cycle, addr)``. A read sees exactly the writes accepted ``write_latency`` cycles or more
    before it, as in the hardware. The result is in the order of ``reads``.
    """
    # A write accepted in cycle c becomes visible to reads of cycle c + write_latency, before
    # them; the sort is stable, so writes keep their order.
    events = [(cycle + write_latency, 0, args) for cycle, args in writes]
    events += [(cycle, 1, addr) for cycle, addr in reads]
    events.sort(key=lambda event: event[:2])
    result = []
    for _, kind, args in events:
        if kind == 0:
            model.write(*args)
        else:
            result.append(model.read(args))
    return result
