"""Weight memory: the on-chip memory of weight rows."""

from .params import check_int
from .unified_buffer import MAX_WIDTH, RowMemory

__all__ = ["WeightMemory"]


class WeightMemory(RowMemory):
    """The weight memory: ``depth`` weight rows of ``cols`` raw bytes.

    A :class:`rtl.unified_buffer.RowMemory`, with the same interfaces, timing and ordering;
    only the row length differs from the unified buffer's. A row is the ``data`` field of an
    :class:`rtl.mxu.WeightRow`, and R consecutive rows make one MXU tile; whether the bytes are
    int8 or uint8 is up to the reader.

    Parameters
    ----------
    cols : int
        C, bytes per row (the MXU's column count), 1 to ``MAX_WIDTH``.
    depth : int
        Number of rows, 1 to ``MAX_DEPTH``.
    read_buffer : bool
        Pass rows through a queue of registers (default True;
        :class:`rtl.unified_buffer.RowMemory`).
    output_register : bool
        And through the block RAM's own output register (default False;
        :class:`rtl.unified_buffer.RowMemory`).

    Members
    -------
    w : In(stream.Signature(RowWrite(ArrayLayout(unsigned(8), cols), depth)))
        Row writes.
    r_addr : In(stream.Signature(ReadRequest(depth)))
        Read requests.
    r_data : Out(stream.Signature(ReadResponse(ArrayLayout(unsigned(8), cols))))
        Read responses, one per request, in order.
    """
    def __init__(self, cols=8, depth=1024, *, read_buffer=True, output_register=False):
        check_int(self, "Column count", cols, 1, MAX_WIDTH)
        super().__init__(cols, depth, read_buffer=read_buffer, output_register=output_register)

    @property
    def cols(self):
        return self.width
