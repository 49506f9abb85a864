"""The ISA-level functional model against the golden arithmetic and the ISA's rules.

Expected values come from sim.golden.mxu / sim.golden.ppu (or plain Python integers), never
from the model's own code paths.
"""

import struct

import numpy as np
import pytest

from firmware.isa import (SYNC_WORD, Counter, ErrorCode, Flag, Geometry, Instruction, Opcode,
                          Response, Tag, ppu_config_bytes)
from sim.golden.accelerator import AcceleratorModel
from sim.golden.mxu import as_operands, matmul
from sim.golden.ppu import CLAMP, NONE, RELU, quantize_multiplier, requantize

G = Geometry(rows=8, cols=4, ub_depth=64, wm_depth=32, acc_depth=32)
SIGNED, ACCUMULATE, SWAP, CLEAR = Flag.SIGNED, Flag.ACCUMULATE, Flag.SWAP, Flag.CLEAR


def op(opcode, flags=0, a=0, b=0, n=0, payload=b""):
    return Instruction(opcode, int(flags), a, b, n, bytes(payload))


def program(*instructions):
    return b"".join(instruction.encode() for instruction in instructions)


def run(model, *instructions):
    return Response.parse(model.run(program(*instructions)))


def status(code=ErrorCode.OK, index=0):
    return Response(Tag.STATUS, code, index)


def write_ub(a, rows):
    return op(Opcode.WRITE_UB, a=a, n=len(rows), payload=np.asarray(rows, np.uint8).tobytes())


def write_wm(a, rows):
    return op(Opcode.WRITE_WM, a=a, n=len(rows), payload=np.asarray(rows, np.uint8).tobytes())


def set_ppu(bias, multiplier, shift, zero_point=0, activation=NONE, clamp_max=127):
    return op(Opcode.SET_PPU, payload=ppu_config_bytes(bias, multiplier, shift, zero_point,
                                                      activation, clamp_max))


def random_bytes(rng, *shape):
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def read_acc(model, a, n, cols):
    (packet,) = run(model, op(Opcode.READ_ACC, a=a, n=n))
    assert packet.tag == Tag.DATA and len(packet.payload) == n * cols * 4
    return np.frombuffer(packet.payload, dtype="<i4").reshape(n, cols)


def counters(model, clear=False):
    (packet,) = run(model, op(Opcode.READ_COUNTERS, CLEAR if clear else 0))
    assert packet.tag == Tag.DATA and len(packet.payload) == 8 * len(Counter)
    return struct.unpack(f"<{len(Counter)}Q", packet.payload)


def wrap(value):
    return (int(value) + 2**31) % 2**32 - 2**31


SYNC = Instruction.sync()


# Initial state and the data paths.

def test_initial_state():
    model = AcceleratorModel(G)
    assert not model.ub.any() and not model.wm.any() and not model.acc.any()
    assert model.ub.shape == (64, 8) and model.wm.shape == (32, 4) and model.acc.shape == (32, 4)
    assert model.pending is None and not model.active.data.any()
    p = model.ppu
    assert (list(p.bias), p.multiplier, p.shift, p.zero_point, p.activation, p.clamp_max) == \
        ([0] * 4, 0, 0, 0, NONE, 127)
    assert counters(model) == (0,) * len(Counter)
    assert run(model, SYNC) == [status()]
    assert run(model, op(Opcode.NOP), SYNC) == [status()]
    # The zero tile is active from the start: MATMUL without a swap gives zeros.
    assert run(model, write_ub(0, [[255] * 8]), op(Opcode.MATMUL, a=0, b=0, n=1)) == []
    assert not read_acc(model, 0, 1, 4).any()
    assert not model.incomplete


@pytest.mark.parametrize("rows, cols", [(8, 4), (5, 3), (1, 1), (3, 7)])
def test_write_and_read_memories(rows, cols):
    g = Geometry(rows=rows, cols=cols, ub_depth=40, wm_depth=20, acc_depth=8)
    rng = np.random.default_rng(rows * 10 + cols)
    model = AcceleratorModel(g)
    ub = random_bytes(rng, 40, rows)
    wm = random_bytes(rng, 20, cols)
    assert run(model, write_ub(0, ub[:17]), write_ub(17, ub[17:]), write_wm(0, wm)) == []
    assert (model.ub == ub).all() and (model.wm == wm).all()
    replies = run(model, op(Opcode.READ_UB, a=0, n=40), op(Opcode.READ_UB, a=39, n=1),
                  op(Opcode.READ_UB, a=3, n=5), op(Opcode.NOP), SYNC)
    assert replies == [Response(Tag.DATA, payload=ub.tobytes()),
                       Response(Tag.DATA, payload=ub[39].tobytes()),
                       Response(Tag.DATA, payload=ub[3:8].tobytes()), status()]
    # Overwriting part of the buffer leaves the rest alone.
    new = random_bytes(rng, 2, rows)
    run(model, write_ub(10, new))
    ub[10:12] = new
    assert (model.ub == ub).all()
    assert read_acc(model, 0, 8, cols).shape == (8, cols)


@pytest.mark.parametrize("a_signed", [False, True])
@pytest.mark.parametrize("w_signed", [False, True])
def test_matmul_against_golden(a_signed, w_signed):
    rng = np.random.default_rng(2 * a_signed + w_signed)
    model = AcceleratorModel(G)
    x = random_bytes(rng, 20, 8)
    w = random_bytes(rng, 8, 4)
    run(model, write_ub(3, x), write_wm(5, w), op(Opcode.LOAD_WEIGHTS, SIGNED * w_signed, a=5))
    assert model.pending is not None
    assert run(model, op(Opcode.MATMUL, SIGNED * a_signed | SWAP, a=3, b=2, n=20), SYNC) == \
        [status()]
    assert model.pending is None
    expected = matmul(x, w, a_signed=a_signed, b_signed=w_signed)
    assert (read_acc(model, 2, 20, 4) == expected).all()
    assert not model.acc[:2].any() and not model.acc[22:].any()

    # The same tile stays active; ACCUMULATE adds, a plain MATMUL overwrites.
    x2 = random_bytes(rng, 20, 8)
    run(model, write_ub(3, x2), op(Opcode.MATMUL, SIGNED * a_signed | ACCUMULATE, a=3, b=2, n=20))
    expected2 = matmul(x2, w, a_signed=a_signed, b_signed=w_signed)
    assert (read_acc(model, 2, 20, 4) == expected.astype(np.int64) + expected2).all()
    run(model, op(Opcode.MATMUL, SIGNED * a_signed, a=3, b=2, n=20))
    assert (read_acc(model, 2, 20, 4) == expected2).all()
    # The activations' signedness is per instruction.
    run(model, op(Opcode.MATMUL, SIGNED * (not a_signed), a=3, b=0, n=1))
    assert (read_acc(model, 0, 1, 4) ==
            matmul(x2[:1], w, a_signed=not a_signed, b_signed=w_signed)).all()


def test_load_weights_takes_a_snapshot():
    rng = np.random.default_rng(3)
    model = AcceleratorModel(G)
    w = random_bytes(rng, 8, 4)
    x = random_bytes(rng, 1, 8)
    run(model, write_wm(0, w), op(Opcode.LOAD_WEIGHTS, a=0), write_wm(0, 255 - w),
        write_ub(0, x), op(Opcode.MATMUL, SWAP, n=1))
    assert (read_acc(model, 0, 1, 4) == matmul(x, w, a_signed=False, b_signed=False)).all()
    assert (model.active.data == w).all() and not model.active.signed


def test_swap_switches_to_the_newest_tile_only_when_asked():
    rng = np.random.default_rng(4)
    model = AcceleratorModel(G)
    w0, w1 = random_bytes(rng, 8, 4), random_bytes(rng, 8, 4)
    x = random_bytes(rng, 3, 8)
    replies = run(model, write_wm(0, w0), write_wm(8, w1), write_ub(0, x),
                  op(Opcode.LOAD_WEIGHTS, SIGNED, a=0),
                  op(Opcode.MATMUL, SWAP | SIGNED, a=0, b=0, n=3),
                  op(Opcode.LOAD_WEIGHTS, SIGNED, a=8),       # pending; w0 stays active
                  op(Opcode.MATMUL, SIGNED, a=0, b=3, n=3),
                  op(Opcode.MATMUL, SIGNED | SWAP, a=0, b=6, n=3), SYNC)
    assert replies == [status()]
    acc = read_acc(model, 0, 9, 4)
    assert (acc[0:3] == matmul(x, w0)).all() and (acc[3:6] == matmul(x, w0)).all()
    assert (acc[6:9] == matmul(x, w1)).all()


@pytest.mark.parametrize("w_signed, weight", [(False, 255), (True, 0x80)])
def test_accumulate_wraps_at_int32_edges(w_signed, weight):
    # R = 255 rows of 255 * 255 (or 255 * -128) per MATMUL: the sum passes an int32 edge after
    # 130 (or 260) accumulations, and must wrap modulo 2**32.
    g = Geometry(rows=255, cols=2, ub_depth=2, wm_depth=255, acc_depth=2)
    model = AcceleratorModel(g)
    x = np.full((1, 255), 255, dtype=np.uint8)
    w = np.zeros((255, 2), dtype=np.uint8)
    w[:, 0] = weight
    w[:, 1] = 1
    product = matmul(x, w, a_signed=False, b_signed=w_signed)[0].astype(object)
    steps = 2**31 // abs(int(product[0])) + 5
    run(model, write_ub(0, x), write_wm(0, w), op(Opcode.LOAD_WEIGHTS, SIGNED * w_signed),
        op(Opcode.MATMUL, SWAP, n=1))
    replies = run(model, *[op(Opcode.MATMUL, ACCUMULATE, n=1)] * (steps - 1), SYNC)
    assert replies == [status()]
    exact = product * steps
    assert not -2**31 <= exact[0] < 2**31                  # the sum did cross an edge
    assert list(read_acc(model, 0, 1, 2)[0]) == [wrap(v) for v in exact]
    assert counters(model)[Counter.MXU_BUSY] == steps


def test_activate_against_golden_requantize():
    rng = np.random.default_rng(5)
    model = AcceleratorModel(G)
    x = random_bytes(rng, 16, 8)
    w = random_bytes(rng, 8, 4)
    run(model, write_ub(0, x), write_wm(0, w), op(Opcode.LOAD_WEIGHTS, SIGNED),
        op(Opcode.MATMUL, SIGNED | SWAP, a=0, b=0, n=16))
    acc = matmul(x, w)
    for activation in (NONE, RELU, CLAMP):
        for real in (0.003, 0.0007, 0.4):
            multiplier, shift = quantize_multiplier(real)
            bias = [int(v) for v in rng.integers(-5000, 5000, 4)]
            zero_point = int(rng.integers(-20, 20))
            clamp_max = int(rng.integers(zero_point, 128))
            before = random_bytes(rng, 16, 8)
            replies = run(model, write_ub(32, before),
                          set_ppu(bias, multiplier, shift, zero_point, activation, clamp_max),
                          op(Opcode.ACTIVATE, 0, a=0, b=32, n=16), SYNC)
            assert replies == [status()]
            q = requantize(acc, bias, multiplier, shift, zero_point, activation, clamp_max)
            assert (model.ub[32:48, :4].view(np.int8) == q).all()
            assert (model.ub[32:48, 4:] == before[:, 4:]).all()


def test_activate_lane_offsets():
    rng = np.random.default_rng(6)
    g = Geometry(rows=8, cols=3, ub_depth=16, wm_depth=8, acc_depth=8)
    model = AcceleratorModel(g)
    run(model, write_ub(0, random_bytes(rng, 4, 8)), write_wm(0, random_bytes(rng, 8, 3)),
        op(Opcode.LOAD_WEIGHTS, SIGNED), op(Opcode.MATMUL, SIGNED | SWAP, n=4))
    acc = model.acc[:4].copy()
    bias, (multiplier, shift) = [7, -3, 100], quantize_multiplier(0.01)
    run(model, set_ppu(bias, multiplier, shift, 3, RELU))
    q = requantize(acc, bias, multiplier, shift, 3, RELU).view(np.uint8)
    for lane in range(8 - 3 + 1):
        before = random_bytes(rng, 4, 8)
        run(model, write_ub(8, before))
        assert run(model, op(Opcode.ACTIVATE, lane, a=0, b=8, n=4), SYNC) == [status()]
        expected = before.copy()
        expected[:, lane:lane + 3] = q
        assert (model.ub[8:12] == expected).all()
    # Lane 6 + C 3 > R 8: MALFORMED, nothing written.
    ub = model.ub.copy()
    assert run(model, op(Opcode.ACTIVATE, 6, a=0, b=8, n=4), SYNC) == \
        [status(ErrorCode.MALFORMED, 0)]
    assert (model.ub == ub).all()


def test_activate_needs_cols_within_rows():
    model = AcceleratorModel(Geometry(rows=2, cols=3))
    assert run(model, op(Opcode.ACTIVATE, 0, n=1), SYNC) == [status(ErrorCode.MALFORMED, 0)]


def test_set_ppu_malformed_keeps_config_and_consumes_payload():
    model = AcceleratorModel(G)
    run(model, set_ppu([1, 2, 3, 4], 12345, 9, -7, CLAMP, 50), SYNC)
    before = model.ppu
    for bad in (set_ppu([0] * 4, 1, 32), set_ppu([0] * 4, 1, 255),
                set_ppu([0] * 4, 1, 0, activation=3), set_ppu([0] * 4, 1, 0, activation=255),
                op(Opcode.SET_PPU, 1, payload=set_ppu([0] * 4, 1, 0).payload)):
        replies = run(model, bad, op(Opcode.READ_UB, n=1), SYNC)
        assert replies == [Response(Tag.DATA, payload=bytes(8)), status(ErrorCode.MALFORMED, 0)]
        assert model.ppu is before
    assert list(before.bias) == [1, 2, 3, 4]
    assert (before.multiplier, before.shift, before.zero_point, before.activation,
            before.clamp_max) == (12345, 9, -7, CLAMP, 50)


def test_set_ppu_odd_cols_padding():
    model = AcceleratorModel(Geometry(rows=4, cols=3))
    # 3 * 4 + 8 = 20 bytes, padded to 24; nonzero padding is ignored.
    payload = ppu_config_bytes([5, 6, 7], 99, 4, 1, RELU, 10)
    data = Instruction(Opcode.SET_PPU).word() + payload + b"\xff" * 4
    assert Response.parse(model.run(data + SYNC_WORD)) == [status()]
    assert list(model.ppu.bias) == [5, 6, 7] and model.ppu.shift == 4


# Errors.

@pytest.mark.parametrize("instruction", [
    op(Opcode.NOP, flags=1), op(Opcode.NOP, a=1), op(Opcode.NOP, b=1), op(Opcode.NOP, n=1),
    op(Opcode.WRITE_UB, n=0), op(Opcode.WRITE_UB, Flag.SIGNED, n=1, payload=bytes(8)),
    op(Opcode.WRITE_UB, b=1, n=1, payload=bytes(8)), op(Opcode.WRITE_WM, n=0),
    op(Opcode.WRITE_WM, b=3, n=2, payload=bytes(8)),
    op(Opcode.LOAD_WEIGHTS, ACCUMULATE), op(Opcode.LOAD_WEIGHTS, b=1), op(Opcode.LOAD_WEIGHTS, n=8),
    op(Opcode.MATMUL, 0x08, n=1), op(Opcode.MATMUL, 0x80, n=1), op(Opcode.MATMUL, n=0),
    op(Opcode.ACTIVATE, 5, n=1), op(Opcode.ACTIVATE, 255, n=1), op(Opcode.ACTIVATE, n=0),
    op(Opcode.READ_UB, n=0), op(Opcode.READ_UB, 1, n=1), op(Opcode.READ_UB, b=1, n=1),
    op(Opcode.READ_ACC, n=0), op(Opcode.READ_ACC, b=1, n=1),
    op(Opcode.READ_COUNTERS, 2), op(Opcode.READ_COUNTERS, a=1), op(Opcode.READ_COUNTERS, n=1),
    op(Opcode.SYNC), op(Opcode.SYNC, 1, *struct.unpack("<HHH", SYNC_WORD[2:])),
    op(Opcode.SYNC, 0, *struct.unpack("<HHH", SYNC_WORD[2:7] + b"\x00")),
])
def test_malformed(instruction):
    model = AcceleratorModel(G)
    run(model, write_ub(0, np.ones((1, 8), np.uint8)), write_wm(0, np.ones((8, 4), np.uint8)),
        SYNC)
    state = (model.ub.copy(), model.wm.copy(), model.acc.copy(), model.pending, model.ppu)
    replies = run(model, op(Opcode.NOP), instruction, SYNC, SYNC)
    assert replies == [status(ErrorCode.MALFORMED, 1), status()]     # sent nothing else
    after = (model.ub, model.wm, model.acc, model.pending, model.ppu)
    assert all((x == y).all() if isinstance(x, np.ndarray) else x is y
               for x, y in zip(state, after))


@pytest.mark.parametrize("instruction", [
    write_ub(63, np.zeros((2, 8))), write_ub(64, np.zeros((1, 8))),
    op(Opcode.WRITE_UB, a=65535, n=65535, payload=bytes(65535 * 8)),
    write_wm(31, np.zeros((2, 4))),
    op(Opcode.LOAD_WEIGHTS, a=25), op(Opcode.LOAD_WEIGHTS, SIGNED, a=65535),
    op(Opcode.MATMUL, a=60, b=0, n=5), op(Opcode.MATMUL, a=0, b=30, n=3),
    op(Opcode.MATMUL, SWAP, a=0, b=32, n=1),
    op(Opcode.ACTIVATE, a=31, b=0, n=2), op(Opcode.ACTIVATE, a=0, b=63, n=2),
    op(Opcode.READ_UB, a=60, n=5), op(Opcode.READ_UB, a=64, n=1),
    op(Opcode.READ_ACC, a=0, n=33), op(Opcode.READ_ACC, a=65535, n=65535),
])
def test_address(instruction):
    model = AcceleratorModel(G)
    run(model, op(Opcode.LOAD_WEIGHTS, a=0), SYNC)          # a tile pending, for SWAP
    state = (model.ub.copy(), model.wm.copy(), model.acc.copy(), model.pending)
    # The payload is consumed even though the instruction fails: the READ_UB after it runs.
    replies = run(model, instruction, op(Opcode.READ_UB, a=0, n=1), SYNC)
    assert replies == [Response(Tag.DATA, payload=bytes(8)), status(ErrorCode.ADDRESS, 0)]
    assert (model.ub == state[0]).all() and (model.wm == state[1]).all()
    assert (model.acc == state[2]).all() and model.pending is state[3]


def test_ranges_up_to_the_last_row_are_fine():
    model = AcceleratorModel(G)
    replies = run(model, write_ub(63, np.ones((1, 8))), write_wm(24, np.ones((8, 4))),
                  op(Opcode.LOAD_WEIGHTS, a=24), op(Opcode.MATMUL, SWAP, a=63, b=31, n=1),
                  op(Opcode.ACTIVATE, a=31, b=63, n=1), op(Opcode.READ_UB, a=63, n=1),
                  op(Opcode.READ_ACC, a=0, n=32), SYNC)
    assert [r.tag for r in replies] == [Tag.DATA, Tag.DATA, Tag.STATUS]
    assert replies[-1] == status()


def test_no_weights_and_weights_full():
    rng = np.random.default_rng(7)
    model = AcceleratorModel(G)
    x = random_bytes(rng, 2, 8)
    w0, w1 = random_bytes(rng, 8, 4), random_bytes(rng, 8, 4)
    run(model, write_ub(0, x), write_wm(0, w0), write_wm(8, w1), SYNC)
    # SWAP with nothing loaded: NO_WEIGHTS, the accumulators are untouched.
    assert run(model, op(Opcode.MATMUL, SWAP, n=2), SYNC) == [status(ErrorCode.NO_WEIGHTS, 0)]
    assert not model.acc.any()
    # A second LOAD_WEIGHTS before the swap: WEIGHTS_FULL, the first tile stays pending.
    assert run(model, op(Opcode.LOAD_WEIGHTS, a=0), op(Opcode.LOAD_WEIGHTS, SIGNED, a=8), SYNC) == \
        [status(ErrorCode.WEIGHTS_FULL, 1)]
    assert (model.pending.data == w0).all() and not model.pending.signed
    assert run(model, op(Opcode.MATMUL, SWAP, n=2), SYNC) == [status()]
    assert (read_acc(model, 0, 2, 4) == matmul(x, w0, a_signed=False, b_signed=False)).all()
    run(model, SYNC)
    # Each tile can be swapped in once.
    assert run(model, op(Opcode.MATMUL, SWAP, b=4, n=2), SYNC) == \
        [status(ErrorCode.NO_WEIGHTS, 0)]
    assert not model.acc[4:6].any()


def test_error_priority():
    model = AcceleratorModel(G)
    # MALFORMED before ADDRESS.
    assert run(model, op(Opcode.MATMUL, 0x08, a=64, n=1), SYNC) == [status(ErrorCode.MALFORMED)]
    assert run(model, op(Opcode.READ_UB, b=1, a=64, n=1), SYNC) == [status(ErrorCode.MALFORMED)]
    # ADDRESS before NO_WEIGHTS.
    assert run(model, op(Opcode.MATMUL, SWAP, a=64, n=1), SYNC) == [status(ErrorCode.ADDRESS)]
    # MALFORMED before NO_WEIGHTS.
    assert run(model, op(Opcode.MATMUL, SWAP), SYNC) == [status(ErrorCode.MALFORMED)]
    # ADDRESS before WEIGHTS_FULL.
    run(model, op(Opcode.LOAD_WEIGHTS), SYNC)
    assert run(model, op(Opcode.LOAD_WEIGHTS, a=30), SYNC) == [status(ErrorCode.ADDRESS)]
    assert run(model, op(Opcode.LOAD_WEIGHTS, n=1), SYNC) == [status(ErrorCode.MALFORMED)]


def test_first_error_only_and_index():
    model = AcceleratorModel(G)
    replies = run(model,
                  write_ub(0, np.ones((3, 8))),              # 0 (payload words not counted)
                  op(Opcode.NOP),                             # 1
                  set_ppu([0] * 4, 1, 1),                    # 2
                  op(Opcode.READ_UB, a=64, n=1),              # 3: ADDRESS, the first error
                  op(Opcode.MATMUL, SWAP, n=1),               # 4: NO_WEIGHTS, not recorded
                  op(Opcode.NOP, flags=1),                    # 5: MALFORMED, not recorded
                  op(Opcode.READ_UB, a=0, n=1),               # 6: still runs
                  SYNC, op(Opcode.NOP), SYNC,
                  op(Opcode.NOP), op(Opcode.NOP), op(Opcode.READ_ACC, n=0), SYNC)
    assert replies == [Response(Tag.DATA, payload=bytes([1] * 8)),
                       status(ErrorCode.ADDRESS, 3), status(), status(ErrorCode.MALFORMED, 2)]
    # The very first word of the stream has index 0.
    model = AcceleratorModel(G)
    assert run(model, op(Opcode.WRITE_UB, n=0), SYNC) == [status(ErrorCode.MALFORMED, 0)]
    # A malformed SYNC is an instruction like any other: it neither answers nor clears.
    assert run(model, op(Opcode.NOP), op(Opcode.READ_UB, n=0), op(Opcode.SYNC), SYNC) == \
        [status(ErrorCode.MALFORMED, 1)]


def test_illegal_opcode_faults_until_sync():
    model = AcceleratorModel(G)
    skipped = program(
        op(Opcode.READ_UB, a=0, n=1),                 # not executed: no DATA
        op(Opcode.WRITE_UB, a=0, n=2),                # its "payload" is not consumed either:
    ) + SYNC_WORD[:-1] + b"\x00" + program(         # not the SYNC word
        op(Opcode.SYNC),                              # a malformed SYNC does not resync
        op(Opcode.WRITE_UB, a=0, n=1, payload=b"\xff" * 8),
        op(0x13), op(0xff),                            # more illegal opcodes: skipped
    )
    data = program(op(Opcode.NOP), op(Opcode.NOP), op(0x40)) + skipped + SYNC_WORD + \
        program(op(Opcode.READ_UB, a=0, n=1), SYNC)
    replies = Response.parse(model.run(data))
    assert replies == [Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 2),
                       status(ErrorCode.ILLEGAL_OPCODE, 2),
                       Response(Tag.DATA, payload=bytes(8)), status()]
    assert not model.ub.any() and not model.faulted


def test_illegal_opcode_error_packet_comes_at_once():
    model = AcceleratorModel(G)
    assert Response.parse(model.run(program(op(0x01)))) == \
        [Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 0)]
    assert model.faulted
    assert model.run(program(op(Opcode.READ_UB, n=1), op(0x02))) == b""
    # The SYNC word inside a would-be payload still resyncs: the device looks at every word.
    data = Instruction(Opcode.WRITE_UB, n=2).word() + SYNC_WORD + bytes(8)
    assert Response.parse(model.run(data)) == [status(ErrorCode.ILLEGAL_OPCODE, 0)]
    assert not model.faulted


def test_illegal_opcode_after_another_error():
    # The ERROR packet names the illegal opcode; STATUS keeps the first error since SYNC.
    model = AcceleratorModel(G)
    replies = run(model, op(Opcode.NOP, n=1), op(Opcode.NOP), op(0xab), op(Opcode.NOP), SYNC)
    assert replies == [Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 2),
                       status(ErrorCode.MALFORMED, 0)]


def test_every_unknown_opcode_is_illegal():
    known = {int(opcode) for opcode in Opcode}
    for value in range(256):
        model = AcceleratorModel(Geometry(rows=2, cols=2, ub_depth=2, wm_depth=2, acc_depth=2))
        replies = Response.parse(model.run(bytes([value]) + bytes(7) + SYNC_WORD))
        if value in known:
            assert Tag.ERROR not in [r.tag for r in replies], value
        else:
            assert replies == [Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 0),
                               status(ErrorCode.ILLEGAL_OPCODE, 0)], value


# Counters.

def test_counters():
    model = AcceleratorModel(G)
    run(model, op(Opcode.LOAD_WEIGHTS),
        write_ub(0, np.ones((5, 8))),                        # payload words are not counted
        op(Opcode.MATMUL, SWAP, n=5), op(Opcode.MATMUL, n=3),
        op(Opcode.MATMUL, a=64, n=3),                         # failed: no MXU rows
        op(Opcode.NOP, a=1), SYNC)
    values = counters(model)
    assert values[Counter.MXU_BUSY] == 8
    assert values[Counter.INSTRUCTIONS] == 7
    for timing in (Counter.CYCLES, Counter.STALL_WEIGHTS, Counter.STALL_HAZARD,
                   Counter.STALL_HOST_IN, Counter.STALL_HOST_OUT):
        assert values[timing] == 0
    # The READ_COUNTERS above counts once it is done; CLEAR zeroes after the snapshot, so the
    # clearing READ_COUNTERS is not counted either.
    assert counters(model)[Counter.INSTRUCTIONS] == 8
    assert counters(model, clear=True)[Counter.INSTRUCTIONS] == 9
    assert counters(model) == (0,) * len(Counter)
    assert counters(model)[Counter.INSTRUCTIONS] == 1
    # Illegal opcodes count; the words skipped after them do not; the resyncing SYNC does.
    counters(model, clear=True)
    model.run(program(op(0x77), op(Opcode.NOP), op(Opcode.MATMUL, n=1), SYNC))
    values = counters(model)
    assert values[Counter.INSTRUCTIONS] == 2 and values[Counter.MXU_BUSY] == 0


# Whole programs.

def tiled_matmul_program(a, b, g, a_signed=True, b_signed=True):
    """A @ B tile by tile; each weight tile is loaded while the previous one is in use."""
    m, k = a.shape
    n = b.shape[1]
    kt, nt = -(-k // g.rows), -(-n // g.cols)
    a_pad = np.zeros((m, kt * g.rows), np.uint8)
    a_pad[:, :k] = a.view(np.uint8)
    b_pad = np.zeros((kt * g.rows, nt * g.cols), np.uint8)
    b_pad[:k, :n] = b.view(np.uint8)
    instructions = []
    # UB: K-slice i of A at rows i * m ...; WM: tile (i, j) at rows (i * nt + j) * R ...
    for i in range(kt):
        instructions.append(write_ub(i * m, a_pad[:, i * g.rows:(i + 1) * g.rows]))
        for j in range(nt):
            instructions.append(write_wm((i * nt + j) * g.rows,
                                         b_pad[i * g.rows:(i + 1) * g.rows,
                                               j * g.cols:(j + 1) * g.cols]))
    order = [(i, j) for j in range(nt) for i in range(kt)]
    load = lambda i, j: op(Opcode.LOAD_WEIGHTS, SIGNED * b_signed, a=(i * nt + j) * g.rows)
    instructions.append(load(*order[0]))
    for step, (i, j) in enumerate(order):
        flags = SWAP | SIGNED * a_signed | ACCUMULATE * (i > 0)
        instructions.append(op(Opcode.MATMUL, flags, a=i * m, b=j * m, n=m))
        if step + 1 < len(order):
            instructions.append(load(*order[step + 1]))     # double buffering
    instructions += [op(Opcode.READ_ACC, a=j * m, n=m) for j in range(nt)]
    instructions += [op(Opcode.READ_COUNTERS), SYNC]
    return instructions, nt


@pytest.mark.parametrize("a_signed, b_signed", [(True, True), (False, True), (True, False)])
def test_tiled_matmul_program(a_signed, b_signed):
    g = Geometry(rows=4, cols=3, ub_depth=256, wm_depth=256, acc_depth=128)
    rng = np.random.default_rng(8)
    m, k, n = 20, 11, 10                                     # K > R, N > C, neither a multiple
    a = random_bytes(rng, m, k)
    b = random_bytes(rng, k, n)
    instructions, nt = tiled_matmul_program(a, b, g, a_signed, b_signed)
    model = AcceleratorModel(g)
    replies = run(model, *instructions)
    assert replies[-1] == status()
    result = np.concatenate([np.frombuffer(r.payload, "<i4").reshape(m, g.cols)
                             for r in replies[:nt]], axis=1)[:, :n]
    assert (result == matmul(a, b, a_signed=a_signed, b_signed=b_signed)).all()
    (busy,) = struct.unpack_from("<Q", replies[nt].payload, 8 * Counter.MXU_BUSY)
    assert busy == m * nt * (-(-k // g.rows))


def test_incremental_feeding_matches_one_call():
    g = Geometry(rows=5, cols=3, ub_depth=256, wm_depth=256, acc_depth=128)
    rng = np.random.default_rng(9)
    a, b = random_bytes(rng, 9, 12), random_bytes(rng, 12, 7)
    instructions, _ = tiled_matmul_program(a, b, g)
    instructions += [set_ppu([1, 2, 3], *quantize_multiplier(0.01), 2, RELU),
                     op(Opcode.ACTIVATE, 2, a=0, b=200, n=9), op(Opcode.READ_UB, a=200, n=9),
                     op(Opcode.READ_UB, a=300, n=1), op(0x55), op(Opcode.NOP), SYNC,
                     op(Opcode.READ_COUNTERS, CLEAR), SYNC]
    data = program(*instructions)
    whole = AcceleratorModel(g)
    expected = whole.run(data)
    assert not whole.incomplete
    for pieces in ("bytes", "random"):
        model = AcceleratorModel(g)
        if pieces == "bytes":
            cuts = range(len(data) + 1)
        else:
            cuts = [0, *sorted(rng.choice(len(data), 40, replace=False)), len(data)]
        out = b"".join(model.run(data[start:end]) for start, end in zip(cuts, cuts[1:]))
        assert out == expected
        assert (model.ub == whole.ub).all() and (model.acc == whole.acc).all()
        assert model.counters == whole.counters and not model.incomplete


def test_program_ending_mid_instruction():
    model = AcceleratorModel(G)
    data = program(write_ub(0, np.ones((2, 8))), op(Opcode.READ_UB, n=2))
    assert model.run(data[:-3]) == b""                       # a partial word: waits
    assert model.incomplete and model.buffered == 5
    assert Response.parse(model.run(data[-3:])) == [Response(Tag.DATA, payload=bytes([1] * 16))]
    assert not model.incomplete and model.buffered == 0
    # A truncated payload: the WRITE_UB has not run yet.
    model = AcceleratorModel(G)
    assert model.run(data[:20]) == b"" and model.incomplete and not model.ub.any()
    # While faulted, a partial word waits as well.
    model = AcceleratorModel(G)
    model.run(program(op(0x99)) + SYNC_WORD[:4])
    assert model.incomplete and model.faulted
    assert Response.parse(model.run(SYNC_WORD[4:])) == [status(ErrorCode.ILLEGAL_OPCODE)]


def test_geometry_is_checked():
    with pytest.raises(TypeError, match="firmware.isa.Geometry"):
        AcceleratorModel((8, 8))
    assert AcceleratorModel().geometry == Geometry()
    assert as_operands(AcceleratorModel().ub, True).shape == (1024, 8)
