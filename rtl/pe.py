"""Processing element: one int8 x int8 multiply-accumulate cell of the systolic array."""

from amaranth.hdl import Mux, Shape, Signal, signed, Module
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .params import check_int

__all__ = ["OPERAND", "PRODUCT", "Operand", "psum_shape", "MultiplierSignature",
           "ProcessingElement"]

#: Operands are widened to 9 bits so one multiplier serves int8 and uint8 alike.
OPERAND = signed(9)
#: The product of two 9-bit operands; every int8/uint8 product (-32640 to 65025) fits.
PRODUCT = signed(18)


class Operand(data.StructLayout):
    """An activation travelling right through the array, with the weight bank it must use.

    Members
    -------
    value : signed(9)
        The activation, already widened from int8 or uint8.
    bank : unsigned(1)
        Which of the two weight registers multiplies it.
    """
    def __init__(self):
        super().__init__({"value": OPERAND, "bank": 1})


class MultiplierSignature(wiring.Signature):
    """A pipelined multiplier that a platform puts in place of a unit's own operand and product
    registers and multiplication: typically a DSP block that registers its operands and its
    product itself, which Yosys does not build from separate registers on every family. The
    PE's (``width`` 9) replaces its ``m_`` and ``p_`` stages; the PPU's (``width`` 17) its
    ``b_`` and ``h_`` stages.

    ``p`` is ``a * b`` two cycles after ``a`` and ``b`` (operand register, product register),
    both registers clocked by the ``sync`` domain while ``en`` is set, neither reset. A product
    register may also be split into registered parts that ``p`` adds up
    (:class:`rtl.booth_multiplier.BoothMultiplier`).

    Parameters
    ----------
    width : int
        Width of the signed operands (default 9, the PE's).

    Members
    -------
    a : In(signed(width))
        First operand (the PE's activation).
    b : In(signed(width))
        Second operand (the PE's weight).
    en : In(1)
        Clock enable of both registers.
    p : Out(signed(2 * width))
        The product from the product register.
    """
    def __init__(self, width=OPERAND.width):
        check_int(self, "Operand width", width, 2, 64)
        super().__init__({
            "a":  In(signed(width)),
            "b":  In(signed(width)),
            "en": In(1),
            "p":  Out(signed(2 * width)),
        })

    def __eq__(self, other):
        return type(other) is type(self) and self.members == other.members


def psum_shape(products):
    """The narrowest shape that holds any sum of ``products`` int8/uint8 products exactly."""
    return Shape.cast(range(-32640 * products, 65025 * products + 1))


class ProcessingElement(wiring.Component):
    """A weight-stationary MAC cell with double-buffered weights.

    Five registers form the cell's pipeline, named by stage: ``x_`` holds the activation (and
    passes it to the right-hand neighbour), ``m_`` the multiplier's two operands (the activation
    again and the weight of its bank), ``p_`` the product, ``q_`` the product once more, ``s_``
    the partial sum passed down. The multiplier thus runs from register to register: on FPGAs it
    is a DSP block, which the placer often has to put far from the cell's other logic, and the
    weight-bank multiplexer or the adder in its cycle would add their delays to that routing.
    The second product register splits the long way back from the DSP block to the adder. On
    iCE40, Yosys folds these registers (in the bottom row also the adder) into the SB_MAC16.

    Parameters
    ----------
    row : int
        Row of the cell in the array; the partial sums entering it hold ``row`` products.
    multiplier : wiring.Component or None
        A component with :class:`MultiplierSignature` that replaces the ``m_`` and ``p_``
        stages (the cell makes it a submodule; whoever creates it drives its ``en``, since
        ``EnableInserter`` does not reach into an instance of a vendor primitive). None: the
        cell's own registers and ``*``.

    Members
    -------
    x_in : In(Operand())
        Activation from the left.
    x_out : Out(Operand())
        Activation to the right (the ``x_`` registers: ``x_value`` and ``x_bank``).
    psum_in : In(psum_shape(row))
        Partial sum from above.
    psum_out : Out(psum_shape(row + 1))
        Partial sum down (the ``s_`` register): ``psum_in + x * w`` five cycles after ``x_in``.
    w_in : In(OPERAND)
        Weight shifting up from the cell below, during a load.
    w_load : In(2)
        Bit ``b`` set: shift ``w_in`` into the weight register of bank ``b``. The bank must not
        be in use by activations in flight; at most one bit is set.
    w_out : Out(OPERAND)
        This cell's weight in the bank being loaded (bank 1 while ``w_load[1]`` is set, else
        bank 0), to the cell above.
    """
    def __init__(self, row, *, multiplier=None):
        check_int(self, "Row", row, 0)
        if multiplier is not None and not (
                isinstance(multiplier, wiring.Component) and
                multiplier.signature == MultiplierSignature()):
            self._MustUse__silence = True
            raise TypeError(f"Multiplier must be a component with MultiplierSignature or None, "
                            f"not {multiplier!r}")
        self._row = row
        self._multiplier = multiplier
        super().__init__({
            "x_in":     In(Operand()),
            "x_out":    Out(Operand()),
            "psum_in":  In(psum_shape(row)),
            "psum_out": Out(psum_shape(row + 1)),
            "w_in":     In(OPERAND),
            "w_load":   In(2),
            "w_out":    Out(OPERAND),
        })

    def elaborate(self, platform):
        m = Module()

        weight = [Signal(OPERAND, name=f"weight{bank}") for bank in range(2)]
        for bank in range(2):
            with m.If(self.w_load[bank]):
                m.d.sync += weight[bank].eq(self.w_in)
        m.d.comb += self.w_out.eq(Mux(self.w_load[1], weight[1], weight[0]))

        # The bank bit has a register of its own, marked ``keep``. Every cell on an anti-diagonal
        # holds the same bank bit, so synthesis would otherwise merge those registers into one
        # that drives the weight multiplexers of cells far apart (on the ULX3S's 16 x 16, 77
        # columns). The build flow copies ``keep`` to the flip-flop (boards/build.py).
        x_value = Signal(OPERAND)
        x_bank = Signal(attrs={"keep": 1})
        m.d.sync += [x_value.eq(self.x_in.value), x_bank.eq(self.x_in.bank)]
        m.d.comb += [self.x_out.value.eq(x_value), self.x_out.bank.eq(x_bank)]

        x_weight = Mux(x_bank, weight[1], weight[0])
        if self._multiplier is None:
            # No reset on the multiplier's registers: nothing reads them before valid data has
            # passed, and a synchronous reset would keep Yosys from folding them into an
            # SB_MAC16.
            m_activation = Signal(OPERAND, reset_less=True)
            m_weight = Signal(OPERAND, reset_less=True)
            m.d.sync += [
                m_activation.eq(x_value),
                m_weight.eq(x_weight),
            ]
            p_product = Signal(PRODUCT, reset_less=True)
            m.d.sync += p_product.eq(m_activation * m_weight)
        else:
            m.submodules.multiplier = multiplier = self._multiplier
            m.d.comb += [
                multiplier.a.eq(x_value),
                multiplier.b.eq(x_weight),
            ]
            p_product = multiplier.p

        q_product = Signal(PRODUCT, reset_less=True)
        m.d.sync += q_product.eq(p_product)

        # Nor on the sum: after q_product, a register with a synchronous reset made Yosys 0.70's
        # ice40_dsp drive q_product from both an SB_MAC16 and a constant, and resolve it as the
        # constant (docs/architecture.md, "PE pipeline").
        s_psum = Signal(self.psum_out.shape(), reset_less=True)
        m.d.sync += s_psum.eq(self.psum_in + q_product)
        m.d.comb += self.psum_out.eq(s_psum)

        return m
