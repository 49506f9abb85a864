"""Vendor DSP blocks as pipelined multipliers, for the systolic array and the PPU.

Yosys puts a ``$mul`` into an ECP5 ``MULT18X18D`` but leaves the registers around it in logic
(unlike ``ice40_dsp``, which folds them into the SB_MAC16). The placer then puts those
registers beside the cell's other logic, often 50 columns from the DSP block, and the product's
way there and back is the critical path. :class:`ECP5Multiplier` is the block with its own
input and output registers switched on (:class:`rtl.pe.MultiplierSignature`): as the PE's
``m_`` and ``p_`` stages, which the build flow hands to the MXU through the platform's
``get_multiplier`` (:func:`multiplier_cells`), and as the PPU's ``b_`` and ``h_`` stages,
through ``get_ppu_multiplier``.

The primitive's behaviour in simulation comes from ``sim/models/mult18x18d.v``, written from
Lattice's sysDSP usage guide (Yosys has only a black box for it).
"""

import re

from amaranth.hdl import ClockSignal, Const, Instance, Module
from amaranth.lib import wiring

from rtl.params import check_int
from rtl.pe import MultiplierSignature

__all__ = ["ECP5Multiplier", "multiplier_cells"]

#: The block's operand width.
_WIDTH = 18


class ECP5Multiplier(wiring.Component):
    """``MULT18X18D`` with its A/B input registers and its output register on ``CLK0``/``CE0``.

    Signed ``width``-bit operands enter at the top of the block's 18 bits, with constant zeros
    below them, so the block multiplies ``a * 2**s`` by ``b * 2**s`` (``s = 18 - width``) and
    the product is bits ``2 * s`` up of its 36 (every product of two ``width``-bit operands
    fits). Sign-extending instead would route the sign bit to ``s`` more pins of each operand;
    a constant pin is set in the bitstream and takes no wire, which matters where the DSP rows
    are the congested part of the die (docs/boards.md). No register is reset (``RST0`` is tied
    low), as in the PE's own stages.

    Parameters
    ----------
    width : int
        Operand width, 2 to 18 (default 9, the PE's; the PPU's is 17).

    Members
    -------
    a, b, en, p
        As :class:`rtl.pe.MultiplierSignature` of ``width``.
    """
    def __init__(self, width=9):
        check_int(self, "Operand width", width, 2, _WIDTH)
        self._width = width
        super().__init__(MultiplierSignature(width))

    def elaborate(self, platform):
        m = Module()
        ports = {}
        shift = _WIDTH - self._width
        for name, operand in (("A", self.a), ("B", self.b)):
            for bit in range(_WIDTH):
                ports[f"i_{name}{bit}"] = Const(0) if bit < shift else operand[bit - shift]
        for bit in range(_WIDTH):
            ports[f"i_C{bit}"] = Const(0)
        for bit in range(len(self.p)):
            ports[f"o_P{2 * shift + bit}"] = self.p[bit]
        registers = {}
        for register in ("INPUTA", "INPUTB", "OUTPUT"):
            registers[f"p_REG_{register}_CLK"] = "CLK0"
            registers[f"p_REG_{register}_CE"] = "CE0"
            registers[f"p_REG_{register}_RST"] = "RST0"
        m.submodules.dsp = Instance(
            "MULT18X18D",
            **registers,
            p_REG_INPUTC_CLK="NONE",
            p_REG_PIPELINE_CLK="NONE",
            p_GSR="DISABLED",
            p_RESETMODE="SYNC",
            p_SOURCEB_MODE="B_SHIFT",
            p_MULT_BYPASS="DISABLED",
            p_CAS_MATCH_REG="FALSE",
            i_SIGNEDA=Const(1), i_SIGNEDB=Const(1),
            i_SOURCEA=Const(0), i_SOURCEB=Const(0),
            i_CLK0=ClockSignal("sync"), i_CE0=self.en, i_RST0=Const(0),
            **ports,
        )
        return m


def multiplier_cells(names):
    """The MXU cells, ``{(row, col), ...}``, among Yosys's flattened cell ``names``.

    The build flow chooses which products go to DSP blocks on the generic design (pass 1 of
    :func:`boards.build.build`); this turns the chosen ``$mul`` cells inside
    ``\\mxu.\\pe_<row>_<col>`` back into array positions.
    """
    cells = set()
    for name in names:
        found = re.search(r"\\mxu\.\\pe_(\d+)_(\d+)\.", name)
        if found:
            cells.add((int(found.group(1)), int(found.group(2))))
    return cells
