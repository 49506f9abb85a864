import random

import pytest

from rtl.split_multiplier import SplitMultiplier
from sim.testbench import simulate


def _edges(width):
    top = 1 << (width - 1)
    return sorted({-top, -top + 1, -1, 0, 1, top - 2, top - 1})


@pytest.mark.parametrize("width, low", [(9, None), (9, 1), (9, 8), (2, 1), (17, None), (18, 5)])
def test_products(width, low):
    """Every pair of edge operands, then random ones under a random enable, against the
    behaviour of :class:`rtl.pe.MultiplierSignature`: ``p`` is the product of the operands
    taken two enabled cycles before."""
    dut = SplitMultiplier(width, low=low)
    rng = random.Random(width * 100 + (low or 0))
    top = 1 << (width - 1)
    inputs = [(a, b, 1) for a in _edges(width) for b in _edges(width)]
    inputs += [(rng.randrange(-top, top), rng.randrange(-top, top), rng.random() < 0.7)
               for _ in range(400)]
    checked = []

    async def testbench(ctx):
        operands = product = None          # the model's two registers
        for a, b, en in inputs:
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.en, en)
            await ctx.tick()
            if en:
                product = None if operands is None else operands[0] * operands[1]
                operands = (a, b)
            if product is not None:
                assert ctx.get(dut.p) == product, (a, b, en)
                checked.append(product)

    simulate(dut, [testbench])
    # Every edge product came out, the extremes among them.
    assert {a * b for a in _edges(width) for b in _edges(width)} <= set(checked)
    assert top * top in checked and -top * (top - 1) in checked
    assert dut.low == (width // 2 if low is None else low)


@pytest.mark.parametrize("width, low, error, message", [
    (1, None, ValueError, "Operand width must be between 2 and 64, not 1"),
    (9.0, None, TypeError, "Operand width must be an integer, not 9.0"),
    (9, 0, ValueError, "Low part width must be between 1 and 8, not 0"),
    (9, 9, ValueError, "Low part width must be between 1 and 8, not 9"),
    (9, "4", TypeError, "Low part width must be an integer, not '4'"),
])
def test_bad_parameters(width, low, error, message):
    with pytest.raises(error, match=message):
        SplitMultiplier(width, low=low)
