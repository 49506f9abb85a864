import numpy as np
import pytest

from firmware.compiler import compile_matmul, plan_matmul
from firmware.isa import Geometry, Opcode
from sim.golden.accelerator import AcceleratorModel
from sim.golden.mxu import matmul


def run_on_model(a, b, geometry):
    program = compile_matmul(a, b, geometry)
    return program, program.collect(AcceleratorModel(geometry).run(program.encode()))


@pytest.mark.parametrize("m, k, n, geometry", [
    (1, 1, 1, Geometry(1, 1, 1, 1, 1)),               # the smallest machine there is
    (5, 7, 3, Geometry(2, 2, 16, 8, 8)),              # ragged edges in K and N
    (40, 30, 20, Geometry(4, 4, 16, 8, 16)),          # A, B larger than the memories
    (33, 65, 17, Geometry(8, 8, 64, 16, 32)),
    (50, 9, 9, Geometry(3, 2, 4, 3, 4)),              # non-square array, tiny memories
    (3, 100, 2, Geometry(4, 4, 8, 4, 8)),             # K needs chunking (kc < kt)
    (64, 64, 64, Geometry()),                         # B resident in the weight memory
])
@pytest.mark.parametrize("dtypes", [(np.int8, np.int8), (np.uint8, np.int8),
                                    (np.int8, np.uint8), (np.uint8, np.uint8)])
def test_any_size_matches_golden(m, k, n, geometry, dtypes):
    rng = np.random.default_rng(m * 10000 + k * 100 + n)
    a = rng.integers(np.iinfo(dtypes[0]).min, np.iinfo(dtypes[0]).max + 1, (m, k),
                     dtype=dtypes[0])
    b = rng.integers(np.iinfo(dtypes[1]).min, np.iinfo(dtypes[1]).max + 1, (k, n),
                     dtype=dtypes[1])
    _, c = run_on_model(a, b, geometry)
    assert c.dtype == np.int32
    assert np.array_equal(c, matmul(a, b, a_signed=dtypes[0] == np.int8,
                                    b_signed=dtypes[1] == np.int8))


def test_extremes_do_not_overflow_the_tiling():
    # -128 * -128 summed over a long K, across many K tiles that ACCUMULATE.
    a = np.full((9, 300), -128, dtype=np.int8)
    b = np.full((300, 5), -128, dtype=np.int8)
    _, c = run_on_model(a, b, Geometry(4, 4, 128, 32, 32))
    assert np.all(c == 128 * 128 * 300)


def test_tiles_are_long_enough_to_hide_weight_loads():
    # With the default geometry a 256^3 product streams >= 2R + C - 1 rows per tile, and
    # every MATMUL swaps in a tile whose LOAD_WEIGHTS came right before it.
    g = Geometry()
    t = plan_matmul(256, 256, 256, g)
    assert t.mb >= 2 * g.rows + g.cols - 1
    a = np.zeros((256, 256), np.int8)
    program = compile_matmul(a, a, g)
    ops = [i.opcode for i in program.instructions]
    assert ops.count(Opcode.MATMUL) == t.kt * t.nt * -(-256 // t.mb)
    for index, op in enumerate(ops):
        if op == Opcode.MATMUL:
            assert ops[index - 1] == Opcode.LOAD_WEIGHTS


@pytest.mark.parametrize("a, b, message", [
    ([[1]], np.ones((1, 1), np.int8), "A must be a numpy array, not list"),
    (np.ones((2, 2), np.float32), np.ones((2, 2), np.int8), "A must have dtype int8 or uint8"),
    (np.ones((2, 2), np.int8), np.ones((2, 2), np.int32), "B must have dtype int8 or uint8"),
    (np.ones(4, np.int8), np.ones((4, 1), np.int8), "A must be a 2-D matrix, not 1-D"),
    (np.ones((2, 3), np.int8), np.ones((2, 3), np.int8), "shapes do not match: A is 2 x 3"),
    (np.ones((0, 3), np.int8), np.ones((3, 3), np.int8), "A must not be empty"),
])
def test_bad_operands(a, b, message):
    with pytest.raises(ValueError, match=message):
        compile_matmul(a, b, Geometry())


def test_collect_rejects_error_answers():
    a = np.ones((2, 2), np.int8)
    program = compile_matmul(a, a, Geometry(2, 2, 4, 4, 4))
    from firmware.isa import ErrorCode, Response, Tag
    with pytest.raises(ValueError, match="reported error ADDRESS at instruction 3"):
        program.collect(Response(Tag.STATUS, ErrorCode.ADDRESS, 3).encode())
    with pytest.raises(ValueError, match="expected 1 result packets, got 0"):
        program.collect(Response(Tag.STATUS, 0, 0).encode())
