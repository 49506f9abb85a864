import random

import pytest

from rtl.booth_multiplier import BoothMultiplier
from sim.testbench import simulate


def _edges(width):
    top = 1 << (width - 1)
    return sorted({-top, -top + 1, -1, 0, 1, top - 2, top - 1})


@pytest.mark.parametrize("width", [9, 2, 3, 4, 8, 10, 17, 18])
def test_products(width):
    """Every pair of edge operands, then random ones under a random enable, against the
    behaviour of :class:`rtl.pe.MultiplierSignature`: ``p`` is the product of the operands
    taken two enabled cycles before."""
    dut = BoothMultiplier(width)
    rng = random.Random(width)
    top = 1 << (width - 1)
    if width <= 4:
        operands = range(-top, top)        # every pair
    else:
        operands = _edges(width)
    inputs = [(a, b, 1) for a in operands for b in operands]
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
    assert dut.digits % 2 == 1 and 2 * dut.digits >= width > 2 * dut.digits - 4


@pytest.mark.parametrize("width, error, message", [
    (1, ValueError, "Operand width must be between 2 and 64, not 1"),
    (65, ValueError, "Operand width must be between 2 and 64, not 65"),
    (9.0, TypeError, "Operand width must be an integer, not 9.0"),
    ("9", TypeError, "Operand width must be an integer, not '9'"),
])
def test_bad_parameters(width, error, message):
    with pytest.raises(error, match=message):
        BoothMultiplier(width)


@pytest.mark.slow
def test_every_9_bit_product():
    """The PE's multiplier, exhaustively: every pair of 9-bit operands, one per cycle."""
    dut = BoothMultiplier(9)
    pairs = [(a, b) for a in range(-256, 256) for b in range(-256, 256)]

    async def testbench(ctx):
        for i, (a, b) in enumerate(pairs + [(0, 0)]):
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.en, 1)
            await ctx.tick()
            if i >= 1:                     # the product of the pair before
                a_, b_ = pairs[i - 1]
                assert ctx.get(dut.p) == a_ * b_, (a_, b_)
        assert i == len(pairs)

    simulate(dut, [testbench])
