"""Matrix unit (MXU): an R x C weight-stationary systolic array of int8 MACs."""

from amaranth.hdl import Cat, EnableInserter, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int
from .pe import OPERAND, Operand, ProcessingElement

__all__ = ["MAX_ROWS", "WeightRow", "ActivationRow", "ResultRow", "MatrixUnit"]

#: The largest R for which no column sum can overflow an int32 (65025 * R < 2**31).
MAX_ROWS = 33025


class WeightRow(data.StructLayout):
    """One row of a weight tile, as it is shifted into the MXU.

    Members
    -------
    data : ArrayLayout(unsigned(8), cols)
        The row's weights as raw bytes.
    signed : unsigned(1)
        The bytes are int8 if set, uint8 otherwise.
    """
    def __init__(self, cols):
        super().__init__({"data": data.ArrayLayout(unsigned(8), cols), "signed": 1})


class ActivationRow(data.StructLayout):
    """One row of activations (one vector of the left-hand matrix) entering the MXU.

    Members
    -------
    data : ArrayLayout(unsigned(8), rows)
        The activations as raw bytes.
    signed : unsigned(1)
        The bytes are int8 if set, uint8 otherwise.
    first : unsigned(1)
        Swap to the most recently loaded weight tile before this row.
    last : unsigned(1)
        Carried through unchanged to the result row, to mark the end of a tile for the consumer.
    """
    def __init__(self, rows):
        super().__init__({
            "data":   data.ArrayLayout(unsigned(8), rows),
            "signed": 1,
            "first":  1,
            "last":   1,
        })


class ResultRow(data.StructLayout):
    """One row of the product leaving the MXU.

    Members
    -------
    data : ArrayLayout(signed(32), cols)
        ``sum(x[k] * w[k][j] for k in range(rows))`` for each column ``j``; exact, never wraps.
    last : unsigned(1)
        The ``last`` flag of the activation row this result belongs to.
    """
    def __init__(self, cols):
        super().__init__({"data": data.ArrayLayout(signed(32), cols), "last": 1})


def _widen(byte, is_signed):
    """An int8 or uint8 byte as a 9-bit signed operand."""
    return Cat(byte, byte[7] & is_signed).as_signed()


class MatrixUnit(wiring.Component):
    """An R x C weight-stationary systolic array with double-buffered weights.

    Each activation row entering on ``x`` is multiplied by the current R x C weight tile and
    leaves on ``o`` as a row of C exact int32 sums, ``latency`` cycles later, in order. Skewing
    the inputs and de-skewing the outputs happens inside the unit, so callers see whole rows.

    Weights are double-buffered. A tile is loaded by sending its R rows on ``w``, row 0 first;
    they shift up the columns into the bank that is not in use. The next activation row marked
    ``first`` switches to the new tile; rows already in flight finish with the old one, so
    back-to-back tiles leave no bubble. Loading the following tile can start once the last row
    using its bank has passed every cell (``rows + cols - 1`` cycles after that row entered):
    with tiles of at least ``2 * rows + cols - 1`` activation rows, the array never waits for
    weights.

    The unit accepts one row per cycle. When the output is not taken (``o.ready`` low while
    ``o.valid``), the whole array holds still.

    If the platform has a ``get_multiplier(row, col)`` method (as Amaranth platforms may have
    ``get_memory``), each cell asks it for a component with :class:`rtl.pe.MultiplierSignature`
    to use instead of its own operand and product registers; None keeps the cell's own. The
    ULX3S build uses it to put its DSP blocks' registers in those stages (boards/dsp.py).

    Parameters
    ----------
    rows : int
        R, the length of an activation row (the reduction dimension), 1 to ``MAX_ROWS``.
    cols : int
        C, the length of a result row, 1 or more.

    Members
    -------
    w : In(stream.Signature(WeightRow(cols)))
        Weight rows of the next tile; R transfers make a tile.
    x : In(stream.Signature(ActivationRow(rows)))
        Activation rows.
    o : Out(stream.Signature(ResultRow(cols)))
        Result rows.
    """
    def __init__(self, rows=8, cols=8):
        check_int(self, "Row count", rows, 1, MAX_ROWS)
        check_int(self, "Column count", cols, 1, 1 << 16)
        self._rows = rows
        self._cols = cols
        super().__init__({
            "w": In(stream.Signature(WeightRow(cols))),
            "x": In(stream.Signature(ActivationRow(rows))),
            "o": Out(stream.Signature(ResultRow(cols))),
        })

    @property
    def rows(self):
        return self._rows

    @property
    def cols(self):
        return self._cols

    @property
    def latency(self):
        """Cycles from accepting an activation row to presenting its result (without stalls)."""
        return self._rows + self._cols + 3

    def elaborate(self, platform):
        m = Module()
        rows, cols = self._rows, self._cols

        # The whole unit advances only while the output can move: a stalled array holds still
        # and accepts nothing.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # Weight bank bookkeeping.
        active   = Signal()                     # bank used by rows not marked `first`
        shadow   = Signal()                     # bank being loaded
        loaded   = Signal()                     # the shadow bank holds a whole new tile
        load_row = Signal(range(rows))
        # Per bank: cycles until the last activation using it has passed every cell.
        busy     = [Signal(range(rows + cols), name=f"busy{bank}") for bank in range(2)]
        m.d.comb += shadow.eq(~active)

        x_fire = Signal()
        w_fire = Signal()
        m.d.comb += [
            self.x.ready.eq(advance & (~self.x.payload.first | loaded)),
            self.w.ready.eq(advance & ~loaded & (Mux(shadow, busy[1], busy[0]) == 0)),
            x_fire.eq(self.x.valid & self.x.ready),
            w_fire.eq(self.w.valid & self.w.ready),
        ]
        x_bank = Signal()
        m.d.comb += x_bank.eq(active ^ self.x.payload.first)

        with m.If(x_fire & self.x.payload.first):
            m.d.sync += [active.eq(~active), loaded.eq(0)]
        with m.If(w_fire):
            with m.If(load_row == rows - 1):
                m.d.sync += [load_row.eq(0), loaded.eq(1)]
            with m.Else():
                m.d.sync += load_row.eq(load_row + 1)
        for bank in range(2):
            with m.If(x_fire & (x_bank == bank)):
                m.d.sync += busy[bank].eq(rows + cols - 2)
            with m.Elif(busy[bank] != 0):
                m.d.sync += busy[bank].eq(busy[bank] - 1)

        # Input skew: row i of the activation enters the array i cycles late.
        skew_out = []
        for i in range(rows):
            operand = Signal(Operand(), name=f"skew{i}_0")
            m.d.comb += [
                operand.value.eq(_widen(self.x.payload.data[i], self.x.payload.signed)),
                operand.bank.eq(x_bank),
            ]
            for stage in range(i):
                delayed = Signal(Operand(), name=f"skew{i}_{stage + 1}")
                m.d.sync += delayed.eq(operand)
                operand = delayed
            skew_out.append(operand)

        # The array. Weights enter at the bottom row and shift up, so row 0 of a tile (sent
        # first) ends in row 0 of the array.
        # Weight rows are registered once before they shift up the columns: this cuts the path
        # from the stream to the array. The bank interlock above already covers the extra cycle.
        # Loads travel across the array like activations do: column j shifts j cycles after
        # column 0, so its weights enter through j more registers and each cell takes its load
        # enables from its left-hand neighbour. No enable net then spans a row; on the ULX3S's
        # 16 x 16 a row-wide one was the critical path (docs/boards.md). Activations reach
        # column j j cycles late too, so every cell sees the same order of loads and uses as
        # column 0 does, and the interlocks stay as they are.
        w_operand = []
        for j in range(cols):
            operand = Signal(OPERAND, name=f"w_operand{j}_0")
            m.d.sync += operand.eq(_widen(self.w.payload.data[j], self.w.payload.signed))
            for stage in range(j):
                delayed = Signal(OPERAND, name=f"w_operand{j}_{stage + 1}")
                m.d.sync += delayed.eq(operand)
                operand = delayed
            w_operand.append(operand)
        # One pair of load enables (one bit per bank) per cell. Row i needs to shift only from
        # the load that brings the tile's row 0 to it (R - 1 - i) on, so the rows' enables differ
        # and synthesis cannot merge a column's registers back into one.
        w_load = [[Signal(2, name=f"w_load{i}_{j}") for j in range(cols)] for i in range(rows)]
        for i in range(rows):
            shift = w_fire if i == rows - 1 else w_fire & (load_row >= rows - 1 - i)
            m.d.sync += w_load[i][0].eq(Cat(shift & ~shadow, shift & shadow))
            for j in range(1, cols):
                m.d.sync += w_load[i][j].eq(w_load[i][j - 1])

        get_multiplier = getattr(platform, "get_multiplier", None)
        pe = []
        for i in range(rows):
            pe.append([])
            for j in range(cols):
                multiplier = get_multiplier(i, j) if get_multiplier is not None else None
                if multiplier is not None:
                    # The EnableInserter below reaches only this design's own registers.
                    m.d.comb += multiplier.en.eq(advance)
                pe[i].append(ProcessingElement(i, multiplier=multiplier))
        for i in range(rows):
            for j in range(cols):
                cell = pe[i][j]
                m.submodules[f"pe_{i}_{j}"] = cell
                m.d.comb += [
                    cell.x_in.eq(skew_out[i] if j == 0 else pe[i][j - 1].x_out),
                    cell.w_load.eq(w_load[i][j]),
                ]
                if i > 0:
                    m.d.comb += cell.psum_in.eq(pe[i - 1][j].psum_out)
                if i == rows - 1:
                    m.d.comb += cell.w_in.eq(w_operand[j])
                else:
                    m.d.comb += cell.w_in.eq(pe[i + 1][j].w_out)

        # Output de-skew: column j leaves the array j cycles after column 0.
        result = Signal(ResultRow(cols))
        for j in range(cols):
            column = pe[rows - 1][j].psum_out
            for stage in range(cols - 1 - j):
                delayed = Signal(column.shape(), name=f"deskew{j}_{stage + 1}")
                m.d.sync += delayed.eq(column)
                column = delayed
            m.d.comb += result.data[j].eq(column)

        # Valid and `last` travel beside the data, one register per cycle of latency.
        flags = Signal(data.StructLayout({"valid": 1, "last": 1}), name="flags_0")
        m.d.comb += [flags.valid.eq(x_fire), flags.last.eq(self.x.payload.last)]
        for stage in range(self.latency):
            delayed = Signal.like(flags, name=f"flags_{stage + 1}")
            m.d.sync += delayed.eq(flags)
            flags = delayed
        m.d.comb += [
            result.last.eq(flags.last),
            self.o.valid.eq(flags.valid),
            self.o.payload.eq(result),
        ]

        return EnableInserter(advance)(m)
