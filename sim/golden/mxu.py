"""Bit-exact model of the matrix unit (:class:`rtl.mxu.MatrixUnit`)."""

import numpy as np

__all__ = ["as_operands", "matmul", "MatrixUnitModel"]


def as_operands(raw, is_signed):
    """Raw bytes (any integer array of values 0-255 or -128-127) as int8 or uint8 values."""
    raw = np.asarray(raw)
    if not np.issubdtype(raw.dtype, np.integer):
        raise TypeError(f"operands must be an integer array, not {raw.dtype}")
    if raw.size and (raw.min() < -128 or raw.max() > 255):
        raise ValueError("operand bytes must lie in -128..255")
    byte = raw.astype(np.int64) & 0xff
    if is_signed:
        return np.where(byte >= 128, byte - 256, byte)
    return byte


def matmul(a, b, *, a_signed=True, b_signed=True):
    """The exact product of two byte matrices, as int32.

    With int8 or uint8 operands and a reduction dimension below ``rtl.mxu.MAX_ROWS``, no result
    can overflow an int32, so this is the exact integer product.
    """
    a = as_operands(a, a_signed)
    b = as_operands(b, b_signed)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"cannot multiply shapes {a.shape} and {b.shape}")
    product = a @ b
    assert product.min(initial=0) >= -2**31 and product.max(initial=0) < 2**31
    return product.astype(np.int32)


class MatrixUnitModel:
    """The MXU's behaviour at its stream interfaces, one transfer at a time.

    Weight rows go into a shadow tile; a full tile replaces the active one when an activation
    row marked ``first`` arrives. Every activation row yields one result row.
    """
    def __init__(self, rows, cols):
        self.rows = rows
        self.cols = cols
        self._active = np.zeros((rows, cols), dtype=np.int64)
        self._shadow = []

    def load_row(self, raw, is_signed):
        """Accept one weight row (C bytes)."""
        if len(self._shadow) == self.rows:
            raise RuntimeError("a whole tile is already waiting for a row marked first")
        self._shadow.append(as_operands(np.asarray(raw).reshape(self.cols), is_signed))

    def push(self, raw, is_signed, first=False):
        """Accept one activation row (R bytes) and return its C int32 results."""
        if first:
            if len(self._shadow) != self.rows:
                raise RuntimeError("a row marked first needs a whole tile loaded before it")
            self._active = np.stack(self._shadow)
            self._shadow = []
        x = as_operands(np.asarray(raw).reshape(self.rows), is_signed)
        return (x @ self._active).astype(np.int32)
