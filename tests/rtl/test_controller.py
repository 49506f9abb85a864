"""The controller: its host-link units and counters on their own, then the decoder, the error
codes, the faulted state, the scoreboard and the counters through the whole accelerator."""

import random
import struct

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Fragment, Module, Signal
from amaranth.lib import stream
from amaranth.sim import Simulator

from firmware.isa import (SYNC_WORD, Counter, ErrorCode, Flag, Geometry, Instruction, Opcode,
                          Response, Tag, ppu_config_bytes, unpack_ppu_config)
from rtl.accelerator import Accelerator
from rtl.controller import MATMUL_QUEUE, Controller, MatmulUnit, _exceeds, _share_read_port
from rtl.counters import PerformanceCounters
from rtl.host_link import (PayloadKind, PayloadReceiver, ResponseKind, ResponseSender,
                            RowRange, overlaps)
from rtl.unified_buffer import ReadRequest, ReadResponse, UnifiedBuffer
from sim.accelerator_driver import run_accelerator
from sim.golden.accelerator import AcceleratorModel
from sim.stream import stream_get_n, stream_put_all
from sim.testbench import simulate

I = Instruction
G23 = Geometry(2, 3, ub_depth=12, wm_depth=8, acc_depth=12)
G44 = Geometry(4, 4, ub_depth=64, wm_depth=16, acc_depth=64)


def encode(*instructions):
    return b"".join(instruction.encode() for instruction in instructions)


def run(program, geometry, **options):
    """The device's packets for ``program``, after checking they equal the model's (apart
    from the timed counters, which are returned as the device sent them)."""
    if not isinstance(program, bytes):
        program = encode(*program)
    expected = AcceleratorModel(geometry).run(program)
    output, _ = run_accelerator(program, geometry, response_length=len(expected), **options)
    got, want = Response.parse(output), Response.parse(expected)
    assert b"".join(packet.encode() for packet in got) == output
    assert len(got) == len(want)
    for packet, reference in zip(got, want):
        if packet.tag == Tag.DATA and len(packet.payload) == 8 * len(Counter) and \
                packet.payload != reference.payload:
            values = counters(packet)
            reference_values = counters(reference)
            for counter in (Counter.MXU_BUSY, Counter.INSTRUCTIONS):
                assert values[counter] == reference_values[counter], counter
        else:
            assert packet == reference
    return got


def counters(packet):
    return dict(zip(Counter, struct.unpack(f"<{len(Counter)}Q", packet.payload)))


# Payload receiver -----------------------------------------------------------------------------

def receive(geometry, kind, addr, rows, discard, payload, *, idle=0.0):
    """Feed ``payload`` (padded) to a PayloadReceiver; return its writes and config pulses."""
    dut = PayloadReceiver(geometry)
    padded = payload + bytes(-len(payload) % 8)
    events = []

    async def testbench(ctx):
        ctx.set(dut.command, {"kind": kind, "addr": addr, "rows": rows, "discard": discard})
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await stream_put_all(ctx, dut.i, list(padded), idle=idle, rng=random.Random(1))
        assert not ctx.get(dut.receiving)
        await ctx.tick().repeat(3)

    async def monitor(ctx):
        pulsed = None
        async for _, _, ub_valid, ub, wm_valid, wm, write, error, config, busy, receiving \
                in ctx.tick().sample(dut.ub_w.valid, dut.ub_w.payload, dut.wm_w.valid,
                                     dut.wm_w.payload, dut.config_write, dut.config_error,
                                     dut.config, dut.busy, dut.receiving):
            if pulsed is not None:
                # The register shows the configuration a cycle after the pulse.
                events.append(("config", pulsed, config))
                pulsed = None
            if ub_valid:
                events.append(("ub", ub.addr, bytes(list(ub.data)), ub.mask))
            if wm_valid:
                events.append(("wm", wm.addr, bytes(list(wm.data))))
            if write or error:
                assert not (write and error)
                pulsed = bool(write)
            assert busy or not receiving

    simulate(dut, [testbench], [monitor], deadline=1e-6 * (20 * len(padded) + 100))
    return events


@pytest.mark.parametrize("rows, cols", [(1, 1), (2, 3), (3, 5), (8, 8)])
@pytest.mark.parametrize("kind", [PayloadKind.UB, PayloadKind.WM])
def test_receiver_rows(rows, cols, kind):
    # n rows of R (UB) or C (WM) bytes, then padding to the next word: every row written once,
    # at consecutive addresses, and the padding consumed.
    g = Geometry(rows, cols, 32, 32, 32)
    width = rows if kind == PayloadKind.UB else cols
    rng = np.random.default_rng(rows * 10 + cols)
    count = 5
    payload = rng.integers(0, 256, count * width, dtype=np.uint8).tobytes()
    events = receive(g, kind, 7, count, 0, payload, idle=0.3)
    name = "ub" if kind == PayloadKind.UB else "wm"
    rows_written = [(event[1], event[2]) for event in events if event[0] == name]
    assert rows_written == [(7 + r, payload[r * width:(r + 1) * width]) for r in range(count)]
    assert len(events) == count
    if kind == PayloadKind.UB:
        assert all(event[3] == (1 << rows) - 1 for event in events)


def test_receiver_discards():
    events = receive(G23, PayloadKind.UB, 0, 3, 1, bytes(range(6)))
    assert events == []


@pytest.mark.parametrize("shift, activation, ok", [(0, 0, True), (31, 2, True), (32, 0, False),
                                                   (5, 3, False), (255, 255, False)])
def test_receiver_config(shift, activation, ok):
    cols = 3
    payload = ppu_config_bytes([-1, 2**31 - 1, -2**31], -12345, shift, -7, activation, 99)
    events = receive(Geometry(4, cols), PayloadKind.PPU, 0, 1, 0, payload)
    assert len(events) == 1
    kind, written, config = events[0]
    assert kind == "config" and written == ok
    if ok:
        fields = unpack_ppu_config(payload, cols)
        assert [int(v) for v in config.bias] == fields["bias"]
        assert int(config.multiplier) == fields["multiplier"]
        assert int(config.shift) == shift
        assert int(config.zero_point) == -7
        assert config.activation.value == activation
        assert int(config.clamp_max) == 99
    else:
        # Dropped: the register keeps what it held (here its initial value).
        assert [int(v) for v in config.bias] == [0] * cols
        assert int(config.multiplier) == 0 and int(config.shift) == 0
        assert int(config.clamp_max) == 127


# Response sender ------------------------------------------------------------------------------

def send(geometry, commands, ub_rows, acc_rows, *, stall=0.0, counter_bits=64,
         row_register=False, cycles=None):
    """Send ``commands`` through a ResponseSender that reads from row lists; return bytes.

    ``cycles``, a list, receives the cycle of each byte's transfer.
    """
    dut = ResponseSender(geometry, counter_bits=counter_bits, row_register=row_register)
    total = 0
    for command, _ in commands:
        kind = command["kind"]
        total += 8 + {ResponseKind.COUNTERS: 56,
                      ResponseKind.UB_ROWS: command.get("n", 0) * geometry.rows,
                      ResponseKind.ACC_ROWS: command.get("n", 0) * 4 * geometry.cols}.get(kind, 0)
    received = []

    async def commander(ctx):
        for command, values in commands:
            while ctx.get(dut.busy):
                await ctx.tick()
            ctx.set(dut.command, {"code": 0, "index": 0, "addr": 0, "n": 0, **command})
            ctx.set(dut.counters, values or [0] * len(Counter))
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            ctx.set(dut.counters, [0] * len(Counter))   # sampled with start only

    def memory(request, response, rows):
        # A read port with a one-row response register (requests wait while it is full).
        async def serve(ctx):
            pending = None
            ctx.set(request.ready, 1)
            async for _, _, valid, ready, payload, taken in ctx.tick().sample(
                    request.valid, request.ready, request.payload, response.ready):
                if pending is not None and taken:
                    pending = None
                elif pending is None and valid and ready:
                    pending = {"data": rows[payload.addr], "last": payload.last}
                    ctx.set(response.payload, pending)
                ctx.set(response.valid, pending is not None)
                ctx.set(request.ready, pending is None)
        return serve

    async def host(ctx):
        received.extend(await stream_get_n(ctx, dut.out, total, stall=stall,
                                           rng=random.Random(5), cycles=cycles))

    simulate(dut, [commander, host],
             [memory(dut.ub_r_addr, dut.ub_r_data, ub_rows),
              memory(dut.acc_r_addr, dut.acc_r_data, acc_rows)],
             deadline=1e-6 * (20 * total + 200))
    return bytes(received)


@pytest.mark.parametrize("row_register", [False, True])
@pytest.mark.parametrize("stall", [0.0, 0.6])
@pytest.mark.parametrize("rows, cols", [(1, 1), (3, 2), (8, 8), (2, 17)])
def test_sender_packets(rows, cols, stall, row_register):
    g = Geometry(rows, cols, 16, 16, 16)
    rng = np.random.default_rng(rows + cols)
    ub_rows = [list(rng.integers(0, 256, rows)) for _ in range(16)]
    acc_rows = [list(rng.integers(-2**31, 2**31, cols)) for _ in range(16)]
    values = [int(v) for v in rng.integers(0, 2**63, len(Counter))]
    commands = [
        ({"kind": ResponseKind.STATUS, "code": 3, "index": 0xdeadbeef}, None),
        ({"kind": ResponseKind.UB_ROWS, "addr": 2, "n": 5}, None),
        ({"kind": ResponseKind.ACC_ROWS, "addr": 9, "n": 3}, None),
        ({"kind": ResponseKind.COUNTERS}, values),
        ({"kind": ResponseKind.ERROR, "code": 1, "index": 7}, None),
        ({"kind": ResponseKind.UB_ROWS, "addr": 15, "n": 1}, None),
    ]
    expected = b"".join(packet.encode() for packet in [
        Response(Tag.STATUS, 3, 0xdeadbeef),
        Response(Tag.DATA, payload=bytes(b for row in ub_rows[2:7] for b in row)),
        Response(Tag.DATA, payload=np.array(acc_rows[9:12], "<i4").tobytes()),
        Response(Tag.DATA, payload=struct.pack("<7Q", *values)),
        Response(Tag.ERROR, 1, 7),
        Response(Tag.DATA, payload=bytes(ub_rows[15])),
    ])
    received = send(g, commands, ub_rows, acc_rows, stall=stall, row_register=row_register)
    assert received == expected


def test_sender_row_register_type():
    with pytest.raises(TypeError, match="Row register must be a bool, not 'yes'"):
        ResponseSender(Geometry(2, 2, 16, 16, 16), row_register="yes")


@pytest.mark.parametrize("row_register", [False, True])
@pytest.mark.parametrize("rows, cols, kind", [(1, 1, ResponseKind.ACC_ROWS),
                                              (3, 2, ResponseKind.UB_ROWS),
                                              (3, 2, ResponseKind.ACC_ROWS),
                                              (2, 17, ResponseKind.UB_ROWS),
                                              (2, 17, ResponseKind.ACC_ROWS)])
def test_sender_streams_rows(rows, cols, kind, row_register):
    # A host that always takes gets one byte every cycle from the header to the last row. (The
    # test's memory answers a request every other cycle, so rows of one byte are left out.)
    g = Geometry(rows, cols, 16, 16, 16)
    ub_rows = [[(7 * r + k) % 256 for k in range(rows)] for r in range(16)]
    acc_rows = [[-r * 1000 - k for k in range(cols)] for r in range(16)]
    cycles = []
    received = send(g, [({"kind": kind, "addr": 3, "n": 9}, None)], ub_rows, acc_rows,
                    row_register=row_register, cycles=cycles)
    assert received[8:] == (bytes(b for row in ub_rows[3:12] for b in row)
                            if kind == ResponseKind.UB_ROWS else
                            np.array(acc_rows[3:12], "<i4").tobytes())
    assert cycles == list(range(cycles[0], cycles[0] + len(received)))


# Counters -------------------------------------------------------------------------------------

def test_performance_counters():
    dut = PerformanceCounters()
    names = [counter.name.lower() for counter in Counter if counter != Counter.CYCLES]
    rng = random.Random(3)
    pattern = [{name: rng.random() < 0.5 for name in names} for _ in range(40)]

    async def testbench(ctx):
        expected = [0] * len(Counter)
        for cycle, events in enumerate(pattern):
            clear = cycle == 25
            ctx.set(dut.events, events)
            ctx.set(dut.clear, clear)
            assert [int(v) for v in ctx.get(dut.values)] == expected
            await ctx.tick()
            if clear:
                expected = [0] * len(Counter)
            else:
                expected[Counter.CYCLES] += 1
                for name in names:
                    expected[Counter[name.upper()]] += events[name]

    simulate(dut, [testbench])


# Decoder: every error code ---------------------------------------------------------------------

def status(code, index):
    return Response(Tag.STATUS, code, index)


M, A, NW, WF = ErrorCode.MALFORMED, ErrorCode.ADDRESS, ErrorCode.NO_WEIGHTS, \
    ErrorCode.WEIGHTS_FULL
PPU_OK = ppu_config_bytes([1, 2, 3], 1 << 30, 1, 0, 0, 0)

ERROR_CASES = {
    # name: (instructions before the failing one, the failing one, expected code)
    "nop_flags":          ([], I(Opcode.NOP, flags=1), M),
    "nop_n":              ([I(Opcode.NOP)], I(Opcode.NOP, n=1), M),
    "write_ub_n0":        ([], I(Opcode.WRITE_UB, a=0, n=0), M),
    "write_ub_b":         ([], I(Opcode.WRITE_UB, b=1, n=2, payload=bytes(4)), M),
    "write_ub_range":     ([], I(Opcode.WRITE_UB, a=11, n=2, payload=bytes(4)), A),
    "write_wm_flags":     ([], I(Opcode.WRITE_WM, flags=2, n=1, payload=bytes(3)), M),
    "write_wm_range":     ([], I(Opcode.WRITE_WM, a=8, n=1, payload=bytes(3)), A),
    "set_ppu_field":      ([], I(Opcode.SET_PPU, a=1, payload=PPU_OK), M),
    "set_ppu_shift":      ([], I(Opcode.SET_PPU, payload=ppu_config_bytes([0] * 3, 1, 32, 0,
                                                                          0, 0)), M),
    "set_ppu_activation": ([], I(Opcode.SET_PPU, payload=ppu_config_bytes([0] * 3, 1, 0, 0,
                                                                               3, 0)), M),
    "load_flags":         ([], I(Opcode.LOAD_WEIGHTS, flags=2), M),
    "load_n":             ([], I(Opcode.LOAD_WEIGHTS, n=2), M),
    "load_range":         ([], I(Opcode.LOAD_WEIGHTS, a=7), A),
    "weights_full":       ([I(Opcode.LOAD_WEIGHTS)], I(Opcode.LOAD_WEIGHTS, a=2), WF),
    "full_after_range":   ([I(Opcode.LOAD_WEIGHTS)], I(Opcode.LOAD_WEIGHTS, a=7), A),
    "no_weights":         ([], I(Opcode.MATMUL, flags=Flag.SWAP, n=1), NW),
    "no_weights_twice":   ([I(Opcode.LOAD_WEIGHTS), I(Opcode.MATMUL, flags=Flag.SWAP, n=1)],
                           I(Opcode.MATMUL, flags=Flag.SWAP, n=1), NW),
    "matmul_flags":       ([], I(Opcode.MATMUL, flags=8, n=1), M),
    "matmul_flag_top":    ([], I(Opcode.MATMUL, flags=0x87, n=1), M),
    "load_flag_top":      ([], I(Opcode.LOAD_WEIGHTS, flags=0x81), M),
    "counters_flag_top":  ([], I(Opcode.READ_COUNTERS, flags=0x81), M),
    "matmul_n0_swap":     ([], I(Opcode.MATMUL, flags=Flag.SWAP, n=0), M),
    "matmul_ub_range":    ([], I(Opcode.MATMUL, a=12, n=1), A),
    "matmul_acc_range":   ([], I(Opcode.MATMUL, b=10, n=3), A),
    "range_before_swap":  ([], I(Opcode.MATMUL, flags=Flag.SWAP, b=12, n=1), A),
    "activate_lane":      ([], I(Opcode.ACTIVATE, n=1), M),         # C = 3 > R = 2
    "read_ub_range":      ([], I(Opcode.READ_UB, a=0, n=13), A),
    "read_ub_b":          ([], I(Opcode.READ_UB, b=1, n=1), M),
    "read_acc_range":     ([], I(Opcode.READ_ACC, a=0xffff, n=1), A),
    "read_acc_n0":        ([], I(Opcode.READ_ACC, a=0, n=0), M),
    "counters_flags":     ([], I(Opcode.READ_COUNTERS, flags=2), M),
    "counters_a":         ([], I(Opcode.READ_COUNTERS, a=1), M),
    "sync_flags":         ([], I(Opcode.SYNC, 1, *struct.unpack("<HHH", SYNC_WORD[2:])), M),
    "sync_magic":         ([I(Opcode.NOP)], I(Opcode.SYNC, 0, 1, 2, 3), M),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_error_codes(case):
    # The failing instruction sends nothing and changes nothing; the next SYNC reports its
    # code and index, the one after reports OK; a payload is consumed even when it fails, so
    # the READ_UB after it is decoded as an instruction.
    before, failing, code = ERROR_CASES[case]
    program = [I(Opcode.WRITE_UB, a=0, n=1, payload=b"\x05\x06"), *before, failing,
               I(Opcode.NOP, b=1),                  # a second error is not reported
               I(Opcode.READ_UB, a=0, n=1), I.sync(), I.sync()]
    packets = run(program, G23)
    assert packets == [Response(Tag.DATA, payload=b"\x05\x06"),
                       status(code, 1 + len(before)), status(ErrorCode.OK, 0)]


def test_error_codes_cover_every_code():
    codes = {code for _, _, code in ERROR_CASES.values()}
    assert codes | {ErrorCode.OK, ErrorCode.ILLEGAL_OPCODE} == set(ErrorCode)


def test_set_ppu_error_keeps_config():
    # A SET_PPU with a bad shift leaves the previous configuration in place.
    g = Geometry(4, 2, 8, 8, 8)
    good = ppu_config_bytes([100, -100], 1 << 30, 0, 1, 0, 0)
    bad = ppu_config_bytes([0, 0], 1 << 30, 40, 0, 0, 0)
    program = [I(Opcode.SET_PPU, payload=good), I(Opcode.SET_PPU, payload=bad),
               I(Opcode.ACTIVATE, flags=1, a=0, b=0, n=2), I(Opcode.READ_UB, a=0, n=2),
               I.sync()]
    packets = run(program, g)
    assert packets[0].payload == bytes([0, 51, 0xcf, 0] * 2)    # 100/2 + 1, -100/2 + 1
    assert packets[1] == status(ErrorCode.MALFORMED, 1)


# Decoder: illegal opcodes and the faulted state -------------------------------------------------

def test_illegal_opcode_and_resync():
    # ERROR goes out at once (after the earlier READ_UB's data); every word up to the SYNC
    # word is skipped, even ones that look like instructions, payloads or near-SYNCs; the SYNC
    # reports the first error since the last SYNC (an earlier MALFORMED wins); then the
    # device runs normally.
    sync = I.sync()
    program = encode(
        I(Opcode.WRITE_UB, a=3, n=1, payload=b"\x01\x02"),
        I(Opcode.READ_UB, a=3, n=1),
        I(Opcode.NOP),
        I(0xA7, 1, 2, 3, 4),                                # illegal: index 3
        I(Opcode.READ_UB, a=3, n=1),                        # skipped
        I(Opcode.WRITE_UB, a=0, n=1),                       # skipped: its "payload" is a word
        I(Opcode.SYNC, 1, *struct.unpack("<HHH", SYNC_WORD[2:])),   # not the SYNC word
        sync,
        I(Opcode.NOP, flags=4),                             # MALFORMED, index 0
        I(0x40),                                            # illegal, index 1
        I(Opcode.READ_COUNTERS),                            # skipped
        sync,
        I(Opcode.READ_UB, a=3, n=1),
        I(Opcode.READ_COUNTERS),
        sync,
    )
    packets = run(program, G23)
    assert packets[:5] == [
        Response(Tag.DATA, payload=b"\x01\x02"),
        Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 3),
        status(ErrorCode.ILLEGAL_OPCODE, 3),
        Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 1),
        status(ErrorCode.MALFORMED, 0),
    ]
    assert packets[5] == Response(Tag.DATA, payload=b"\x01\x02")
    # Instruction words: 4 + SYNC, 2 + SYNC, READ_UB: 9 before the READ_COUNTERS.
    assert counters(packets[6])[Counter.INSTRUCTIONS] == 9
    assert packets[7] == status(ErrorCode.OK, 0)


@pytest.mark.parametrize("position", range(8))
def test_near_sync_words(position):
    # A word that differs from the SYNC word in one byte (the decoder compares the first 7
    # bytes as they enter, the last as it completes) is not a SYNC: with the SYNC opcode it is
    # MALFORMED, and in the faulted state it is skipped like any other word rather than ending
    # the fault. (`run` checks every packet against the ISA model.)
    near = bytearray(SYNC_WORD)
    near[position] ^= 0x10
    sync = I.sync().encode()
    packets = run(bytes(near) + sync + encode(I(0xA7)) + bytes(near) + encode(I(Opcode.NOP)) +
                  sync, G23)
    if position:                # (byte 0 is the opcode: 0x2F is an illegal one)
        assert packets == [status(ErrorCode.MALFORMED, 0),
                           Response(Tag.ERROR, ErrorCode.ILLEGAL_OPCODE, 0),
                           status(ErrorCode.ILLEGAL_OPCODE, 0)]
    assert packets[-1].tag == Tag.STATUS and len(packets) == (3 if position else 4)


def test_error_waits_for_earlier_responses():
    # The ERROR packet of an illegal opcode comes after the data of every earlier READ, even
    # while the host is slow to take it.
    program = encode(I(Opcode.READ_ACC, a=0, n=12), I(0xFF), I.sync())
    packets = run(program, G23, stall=0.7)
    assert [packet.tag for packet in packets] == [Tag.DATA, Tag.ERROR, Tag.STATUS]


# Scoreboard -------------------------------------------------------------------------------------

def timed(program, geometry, **options):
    """Run ``program`` between a READ_COUNTERS CLEAR and a READ_COUNTERS after a SYNC; return
    the packets in between and the counters."""
    program = [I(Opcode.READ_COUNTERS, flags=Flag.CLEAR), *program, I.sync(),
               I(Opcode.READ_COUNTERS)]
    packets = run(program, geometry, **options)
    assert packets[-2] == status(ErrorCode.OK, 0)
    return packets[1:-2], counters(packets[-1])


def setup_data(geometry, rng, ub_rows=16, wm_rows=None):
    R, C = geometry.rows, geometry.cols
    wm_rows = wm_rows or geometry.wm_depth
    return [I(Opcode.WRITE_UB, a=0, n=ub_rows, payload=rng.integers(0, 256, ub_rows * R,
                                                                    dtype=np.uint8).tobytes()),
            I(Opcode.WRITE_WM, a=0, n=wm_rows, payload=rng.integers(0, 256, wm_rows * C,
                                                                    dtype=np.uint8).tobytes()),
            I(Opcode.SET_PPU, payload=ppu_config_bytes([7] * C, 1 << 30, 3, 2, 0, 0)),
            I.sync()]


#: Cycles from a word's last byte to the cycle it retires when nothing holds it: the hazard checks
#: and the scoreboard's verdict are registered.
RETIRE = 3

HAZARDS = {
    # name: (the program after the set-up, whether its last instruction must wait)
    "raw_acc_read_acc":   ([I(Opcode.LOAD_WEIGHTS), I(Opcode.MATMUL, flags=5, a=0, b=4, n=8),
                            I(Opcode.READ_ACC, a=11, n=2)], True),
    "raw_acc_activate":   ([I(Opcode.LOAD_WEIGHTS), I(Opcode.MATMUL, flags=5, a=0, b=4, n=8),
                            I(Opcode.ACTIVATE, a=10, b=40, n=4)], True),
    "raw_ub_matmul":      ([I(Opcode.ACTIVATE, a=0, b=20, n=12),
                            I(Opcode.MATMUL, a=31, b=0, n=1)], True),
    "raw_ub_read":        ([I(Opcode.ACTIVATE, a=0, b=20, n=12),
                            I(Opcode.READ_UB, a=30, n=3)], True),
    "war_ub_activate":    ([I(Opcode.MATMUL, a=0, b=0, n=30),
                            I(Opcode.ACTIVATE, a=40, b=20, n=4)], True),
    "war_ub_write":       ([I(Opcode.MATMUL, a=0, b=0, n=30),
                            I(Opcode.WRITE_UB, a=25, n=1, payload=bytes(4))], True),
    "war_acc_matmul":     ([I(Opcode.READ_ACC, a=0, n=16),
                            I(Opcode.MATMUL, flags=2, a=0, b=15, n=2)], True),
    "waw_ub_write":       ([I(Opcode.ACTIVATE, a=0, b=20, n=12),
                            I(Opcode.WRITE_UB, a=20, n=1, payload=bytes(4))], True),
    "read_acc_disjoint":  ([I(Opcode.LOAD_WEIGHTS), I(Opcode.MATMUL, flags=5, a=0, b=4, n=8),
                            I(Opcode.READ_ACC, a=20, n=2)], False),
    "activate_disjoint":  ([I(Opcode.MATMUL, a=0, b=0, n=30),
                            I(Opcode.ACTIVATE, a=40, b=50, n=4)], False),
    "write_ub_disjoint":  ([I(Opcode.MATMUL, a=0, b=0, n=30),
                            I(Opcode.WRITE_UB, a=30, n=1, payload=bytes(4))], False),
    "read_ub_during_act": ([I(Opcode.ACTIVATE, a=0, b=20, n=12),
                            I(Opcode.READ_UB, a=32, n=3)], False),
    "load_during_matmul": ([I(Opcode.LOAD_WEIGHTS), I(Opcode.MATMUL, flags=4, a=0, b=0, n=30),
                            I(Opcode.LOAD_WEIGHTS, a=4)], False),
    "matmul_waw_acc":     ([I(Opcode.MATMUL, a=0, b=0, n=3), I(Opcode.NOP), I(Opcode.NOP),
                            I(Opcode.MATMUL, flags=2, a=5, b=0, n=3)], False),
}


@pytest.mark.parametrize("overlap_register", [False, True])
@pytest.mark.parametrize("case", list(HAZARDS))
def test_hazards(case, overlap_register):
    # Instructions back to back with no NOP padding: the results equal the model's, and the
    # last one is held (the byte after its word is taken late) exactly when it conflicts with
    # one still in flight; with the overlap checks registered one by one, a cycle later.
    body, conflict = HAZARDS[case]
    rng = np.random.default_rng(len(case))
    setup = setup_data(G44, rng, 48)
    program = encode(*setup, *body, I.sync())
    taken = []
    dut = Accelerator(G44, overlap_register=overlap_register)
    packets = run(program, G44, input_cycles=taken, dut=dut)
    assert packets[-1] == status(ErrorCode.OK, 0)
    last = len(encode(*setup, *body[:-1])) + 7            # the last byte of its word
    # Without a wait, the word retires RETIRE cycles after its last byte, and the next byte is
    # taken in that same cycle (in the next one if it is a payload byte).
    payload = body[-1].opcode in (Opcode.WRITE_UB, Opcode.WRITE_WM, Opcode.SET_PPU)
    waited = taken[last + 1] - taken[last] - RETIRE - overlap_register - payload
    assert (waited > 0) == conflict, waited
    if not conflict:
        assert waited == 0


def test_weight_memory_hazards():
    # On a tall array a LOAD_WEIGHTS takes longer than the next word to arrive: a WRITE_WM over
    # rows it has not read yet waits (WAR), one over other rows does not; a LOAD_WEIGHTS right
    # after a WRITE_WM reads the new rows (RAW). The results equal the model's.
    g = Geometry(16, 2, ub_depth=8, wm_depth=48, acc_depth=8)
    rng = np.random.default_rng(3)
    row = bytes([0x81, 0x7f])
    setup = setup_data(g, rng, 8)

    def wait_before_payload(body):
        taken = []
        packets = run(encode(*setup, *body, I(Opcode.MATMUL, flags=Flag.SWAP, n=8),
                             I(Opcode.READ_ACC, n=8), I.sync()), g, input_cycles=taken)
        assert packets[-1] == status(ErrorCode.OK, 0)
        last = len(encode(*setup, *body[:-1])) + 7
        return taken[last + 1] - taken[last] - RETIRE - 1    # see test_hazards

    assert wait_before_payload([I(Opcode.LOAD_WEIGHTS, a=0),
                                I(Opcode.WRITE_WM, a=15, n=1, payload=row)]) > 0
    assert wait_before_payload([I(Opcode.LOAD_WEIGHTS, a=0),
                                I(Opcode.WRITE_WM, a=16, n=1, payload=row)]) == 0
    run([*setup, I(Opcode.WRITE_WM, a=20, n=16, payload=bytes(range(32))),
         I(Opcode.LOAD_WEIGHTS, flags=Flag.SIGNED, a=20),
         I(Opcode.MATMUL, flags=Flag.SWAP, n=8), I(Opcode.READ_ACC, n=8), I.sync()], g)


def test_stall_weights():
    # A tall array loads a tile more slowly than the next word arrives: the first row of the
    # MATMUL that swaps it in waits in the MXU, and STALL_WEIGHTS counts it.
    g = Geometry(16, 2, ub_depth=4, wm_depth=16, acc_depth=4)
    rng = np.random.default_rng(6)
    packets, values = timed(setup_data(g, rng, 4) + [
        I(Opcode.LOAD_WEIGHTS, flags=1), I(Opcode.MATMUL, flags=7, a=0, b=0, n=4),
        I(Opcode.READ_ACC, a=0, n=4)], g)
    assert values[Counter.STALL_WEIGHTS] > 0
    assert values[Counter.MXU_BUSY] == 4


def test_matmul_queue_fills():
    # More short MATMULs than the write-back queue holds, back to back, each followed by a read
    # of the rows it writes: the queue stalls issue but nothing is lost.
    rng = np.random.default_rng(11)
    program = setup_data(G44, rng, 16) + [I(Opcode.LOAD_WEIGHTS, flags=1),
                                          I(Opcode.MATMUL, flags=7, a=0, b=0, n=1)]
    for k in range(3 * MATMUL_QUEUE):
        program.append(I(Opcode.MATMUL, flags=3, a=k % 16, b=(5 * k) % 60, n=1 + k % 3))
    program += [I(Opcode.READ_ACC, a=0, n=64), I.sync()]
    run(program, G44, stall=0.3, seed=2)


def test_weights_overlap_computation():
    # Two tiles of 2R + C - 1 rows, the second LOAD_WEIGHTS issued while the first MATMUL
    # streams: the MXU never waits for weights, and the second MATMUL follows the first
    # without a bubble.
    g = Geometry(8, 4, ub_depth=40, wm_depth=16, acc_depth=40)
    rng = np.random.default_rng(4)
    m = 2 * 8 + 4 - 1
    program = setup_data(g, rng, 2 * m, 16) + [
        I(Opcode.LOAD_WEIGHTS, flags=1, a=0), I(Opcode.READ_COUNTERS, flags=Flag.CLEAR),
        I(Opcode.MATMUL, flags=5, a=0, b=0, n=m), I(Opcode.LOAD_WEIGHTS, flags=1, a=8),
        # Accumulates onto rows the first one is still writing: no hazard between MATMULs.
        I(Opcode.MATMUL, flags=7, a=m, b=m // 2, n=m), I.sync(), I(Opcode.READ_COUNTERS),
        I(Opcode.READ_ACC, a=0, n=2 * m)]
    packets = run(program, g)
    values = counters(packets[3])
    assert values[Counter.MXU_BUSY] == 2 * m
    assert values[Counter.STALL_WEIGHTS] == 0
    # Start (word, read) + 2m rows + drain (MXU latency, write-back, SYNC, STATUS, next word).
    assert values[Counter.CYCLES] <= 2 * m + 12 + (8 + 4 + 1) + 20


# Counters ---------------------------------------------------------------------------------------

def test_counters_count():
    g = Geometry(4, 4, ub_depth=32, wm_depth=8, acc_depth=32)
    rng = np.random.default_rng(5)
    program = setup_data(g, rng, 8, 8) + [
        I(Opcode.READ_COUNTERS, flags=Flag.CLEAR),
        I(Opcode.LOAD_WEIGHTS),
        I(Opcode.MATMUL, flags=Flag.SWAP, a=0, b=0, n=8),
        I(Opcode.READ_ACC, a=0, n=8),                           # waits for the results
        I(Opcode.NOP), I(Opcode.NOP, n=1),                      # counted, even when failing
        I(Opcode.READ_COUNTERS),
        I(Opcode.READ_COUNTERS, flags=Flag.CLEAR),
        I(Opcode.READ_COUNTERS),
    ]
    packets = run(program, g, idle=0.3, stall=0.5, seed=3)
    first, second, third = (counters(packet) for packet in packets[3:6])
    assert first[Counter.INSTRUCTIONS] == 5 and first[Counter.MXU_BUSY] == 8
    assert first[Counter.STALL_HAZARD] > 0
    assert first[Counter.STALL_HOST_IN] > 0                     # the gaps on the input
    assert first[Counter.STALL_HOST_OUT] > 0                    # the slow host
    assert second[Counter.INSTRUCTIONS] == 6
    assert second[Counter.CYCLES] > first[Counter.CYCLES]
    # After a CLEAR: only the cycles since it (the next word, and waiting for the host to
    # take the second packet).
    assert third[Counter.INSTRUCTIONS] == 0 and third[Counter.MXU_BUSY] == 0
    assert 8 <= third[Counter.CYCLES] < second[Counter.CYCLES]


# The component ----------------------------------------------------------------------------------

def test_controller_interface():
    dut = Controller(G23)
    assert dut.geometry == G23
    members = dict(dut.signature.members)
    assert set(members) == {"i", "o", "ub", "wm", "acc", "mxu", "ppu", "idle"}
    assert len(dut.ub.w.payload.mask) == 2
    Fragment.get(dut, None)


def test_bad_range_register():
    with pytest.raises(TypeError, match="range_register must be a bool, not 1"):
        Controller(G23, range_register=1)


def test_bad_overlap_register():
    with pytest.raises(TypeError, match="overlap_register must be a bool, not 'yes'"):
        Controller(G23, overlap_register="yes")
    dut = Controller(G23, overlap_register=True)
    assert dut.overlap_register
    Fragment.get(dut, None)


def test_bad_matmul_skid():
    with pytest.raises(TypeError, match="skid must be a bool, not 1"):
        MatmulUnit(G23, skid=1)


@pytest.mark.parametrize("latency, skid", [(1, True), (2, False), (3, False)])
def test_matmul_skid_only_without_read_buffer(latency, skid):
    # The MATMUL unit's skid buffer keeps the MXU's ready out of the read port's handshake,
    # which only a port without its read buffer (read latency 1) lets through.
    dut = Controller(G23, read_latency=latency)
    fragment = Fragment.get(dut, None)
    matmul = next(sub for sub, name, _ in fragment.subfragments if name == "matmul")
    names = [name for _, name, _ in matmul.subfragments]
    assert ("x_skid" in names) == skid


@pytest.mark.parametrize("latency, error", [(0, ValueError), (4, ValueError), ("3", TypeError)])
def test_bad_read_latency(latency, error):
    with pytest.raises(error, match=f"Read latency must be .*not {latency!r}"):
        Controller(G23, read_latency=latency)


@pytest.mark.parametrize("unit", [Controller, PayloadReceiver, ResponseSender])
def test_bad_geometry(unit):
    with pytest.raises(TypeError, match="geometry must be a firmware.isa.Geometry"):
        unit((2, 3))


# Counter widths -------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", [16, 20, 32, 63, 64])
def test_sender_counter_widths(bits):
    # With counters of ``bits`` bits only their low ``bits`` bits are sent (whatever the
    # inputs hold above), each still a little-endian u64, then the packet after it is intact.
    g = Geometry(2, 2, 8, 8, 8)
    rng = np.random.default_rng(bits)
    values = [int(v) for v in rng.integers(0, 2**63, len(Counter), dtype=np.uint64)]
    values[0] = 2**64 - 1
    mask = (1 << bits) - 1
    commands = [({"kind": ResponseKind.COUNTERS}, values),
                ({"kind": ResponseKind.STATUS, "code": 2, "index": 0x12345678}, None),
                ({"kind": ResponseKind.COUNTERS}, values[::-1])]
    expected = b"".join(packet.encode() for packet in [
        Response(Tag.DATA, payload=struct.pack("<7Q", *(v & mask for v in values))),
        Response(Tag.STATUS, 2, 0x12345678),
        Response(Tag.DATA, payload=struct.pack("<7Q", *(v & mask for v in values[::-1]))),
    ])
    for stall in (0.0, 0.5):
        assert send(g, commands, [[0, 0]] * 8, [[0, 0]] * 8, stall=stall,
                    counter_bits=bits) == expected


@pytest.mark.parametrize("bits", [16, 20, 32])
def test_narrow_counters_in_the_accelerator(bits):
    # READ_COUNTERS of a device with narrow counters: the exact counters equal the model's,
    # every value fits in ``bits`` bits and the rest of its 8 bytes is zero.
    g = Geometry(2, 2, ub_depth=8, wm_depth=4, acc_depth=8)
    rng = np.random.default_rng(bits)
    program = setup_data(g, rng, 8, 4) + [
        I(Opcode.READ_COUNTERS, flags=Flag.CLEAR), I(Opcode.LOAD_WEIGHTS),
        I(Opcode.MATMUL, flags=Flag.SWAP, a=0, b=0, n=5), I(Opcode.READ_ACC, a=0, n=5),
        I(Opcode.READ_COUNTERS), I(Opcode.NOP), I(Opcode.READ_COUNTERS, flags=Flag.CLEAR),
        I(Opcode.READ_COUNTERS), I.sync()]
    packets = run(program, g, stall=0.3, dut=Accelerator(g, counter_bits=bits))
    readings = [counters(packet) for packet in packets
                if packet.tag == Tag.DATA and len(packet.payload) == 8 * len(Counter)]
    assert len(readings) == 4
    assert readings[1][Counter.MXU_BUSY] == 5
    assert all(value < 2**bits for reading in readings for value in reading.values())
    assert readings[1][Counter.CYCLES] > 0


# Row ranges at the end of the memories ----------------------------------------------------------

#: Depths that are powers of two (the end of a range needs one more bit than a row number) and
#: depths that are not.
EDGE_GEOMETRIES = {
    "pow2": Geometry(4, 4, ub_depth=64, wm_depth=16, acc_depth=64),
    "odd":  Geometry(4, 4, ub_depth=40, wm_depth=12, acc_depth=48),
}


def edge_cases(g):
    """Instructions at the end of each memory: (instruction, error code of its SYNC)."""
    u, w, c, R, C = g.ub_depth, g.wm_depth, g.acc_depth, g.rows, g.cols
    ok, A = ErrorCode.OK, ErrorCode.ADDRESS
    return [
        (I(Opcode.WRITE_UB, a=u - 4, n=4, payload=bytes(range(16))), ok),
        (I(Opcode.WRITE_UB, a=u - 1, n=2, payload=bytes(8)), A),
        (I(Opcode.WRITE_UB, a=u, n=1, payload=bytes(4)), A),
        (I(Opcode.WRITE_WM, a=w - R, n=R, payload=bytes(range(100, 100 + R * C))), ok),
        (I(Opcode.WRITE_WM, a=w, n=1, payload=bytes(C)), A),
        (I(Opcode.LOAD_WEIGHTS, flags=Flag.SIGNED, a=w - R), ok),
        (I(Opcode.LOAD_WEIGHTS, a=w - R + 1), A),
        (I(Opcode.LOAD_WEIGHTS, a=0xffff), A),
        (I(Opcode.MATMUL, flags=Flag.SWAP | Flag.SIGNED, a=u - 4, b=c - 4, n=4), ok),
        (I(Opcode.MATMUL, flags=Flag.ACCUMULATE, a=u - 1, b=c - 1, n=1), ok),
        (I(Opcode.MATMUL, a=u - 2, b=c - 1, n=2), A),
        (I(Opcode.MATMUL, a=u - 1, b=c - 2, n=2), A),
        (I(Opcode.READ_ACC, a=c - 4, n=4), ok),         # waits for the MATMULs' last rows
        (I(Opcode.READ_ACC, a=c - 1, n=2), A),
        (I(Opcode.READ_ACC, a=c, n=1), A),
        (I(Opcode.SET_PPU, payload=ppu_config_bytes([5] * C, 1 << 30, 2, 1, 0, 0)), ok),
        (I(Opcode.ACTIVATE, a=c - 4, b=u - 4, n=4), ok),
        (I(Opcode.ACTIVATE, a=c - 2, b=u - 1, n=2), A),
        (I(Opcode.ACTIVATE, a=c - 1, b=0, n=2), A),
        (I(Opcode.READ_UB, a=u - 1, n=1), ok),          # waits for the ACTIVATE's last row
        (I(Opcode.READ_UB, a=u - 4, n=4), ok),
        (I(Opcode.READ_UB, a=u - 3, n=4), A),
        (I(Opcode.READ_UB, a=u, n=1), A),
        (I(Opcode.READ_UB, a=0, n=u + 1), A),
        # Past the end by a multiple of a power of two: a truncated row number would alias.
        (I(Opcode.READ_UB, a=128 + 1, n=1), A),
        (I(Opcode.READ_UB, a=1 << 15, n=1), A),
        (I(Opcode.READ_UB, a=1, n=0xffff), A),
        (I(Opcode.READ_UB, a=0xffff, n=0xffff), A),
        (I(Opcode.READ_ACC, a=(1 << 15) + c - 1, n=1), A),
        (I(Opcode.READ_ACC, a=c - 1, n=1), ok),
    ]


@pytest.mark.parametrize("name", list(EDGE_GEOMETRIES))
def test_ranges_at_the_end(name):
    # Every instruction on the last rows of its memories works (and waits for the one before
    # on the same rows); one row further is an ADDRESS error, however large the fields.
    g = EDGE_GEOMETRIES[name]
    rng = np.random.default_rng(len(name))
    cases = edge_cases(g)
    program = setup_data(g, rng, g.ub_depth)
    for instruction, _ in cases:
        program += [instruction, I.sync()]
    packets = run(program, g, stall=0.2)
    statuses = [packet for packet in packets if packet.tag == Tag.STATUS][1:]
    assert statuses == [status(code, 0) for _, code in cases]



@pytest.mark.parametrize("depth", [1, 5, 8])
def test_overlaps_every_pair_of_ranges(depth):
    # The scoreboard's overlap check (one comparator per row as wide as the row, and a gate for
    # the end's top bit), for every pair of ranges: two nonempty ranges overlap when they share
    # a row; an empty one lying strictly inside the other counts as overlapping too (a hazard
    # too many only delays an instruction).
    x, y = Signal(RowRange(depth)), Signal(RowRange(depth))
    m = Module()
    overlap = Signal()
    m.d.comb += overlap.eq(overlaps(x, y))
    ranges = [(lo, hi) for lo in range(depth) for hi in range(depth + 1)]

    async def testbench(ctx):
        for x_lo, x_hi in ranges:
            ctx.set(x, {"lo": x_lo, "hi": x_hi})
            for y_lo, y_hi in ranges:
                ctx.set(y, {"lo": y_lo, "hi": y_hi})
                expected = int(x_lo < y_hi and y_lo < x_hi)
                if x_lo < x_hi and y_lo < y_hi:
                    assert expected == bool(set(range(x_lo, x_hi)) & set(range(y_lo, y_hi)))
                assert ctx.get(overlap) == expected, (x_lo, x_hi, y_lo, y_hi)

    sim = Simulator(m)          # combinational: no clock
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("width", [1, 2, 3, 5, 7])
def test_exceeds_every_value_and_limit(width):
    # The ADDRESS check's comparator, gates rather than a subtractor: every value against
    # every limit up to one past the largest value (a limit it cannot exceed is the constant 0).
    value = Signal(width)
    limits = range((1 << width) + 1)
    m = Module()
    greater = [Signal(name=f"greater_{limit}") for limit in limits]
    m.d.comb += [signal.eq(_exceeds(value, limit)) for signal, limit in zip(greater, limits)]

    async def testbench(ctx):
        for v in range(1 << width):
            ctx.set(value, v)
            assert [ctx.get(signal) for signal in greater] == [int(v > limit)
                                                                for limit in limits], v

    sim = Simulator(m)          # combinational: no clock
    sim.add_testbench(testbench)
    sim.run()


def edge_hazards(g):
    """Pairs of instructions on the last rows of a memory, and whether the second waits."""
    u, c = g.ub_depth, g.acc_depth
    load = I(Opcode.LOAD_WEIGHTS)
    return {
        "raw_ub_last_row":    ([I(Opcode.ACTIVATE, a=0, b=u - 12, n=12),
                                I(Opcode.READ_UB, a=u - 1, n=1)], True),
        "ub_after_writes":    ([I(Opcode.ACTIVATE, a=0, b=u - 13, n=12),
                                I(Opcode.READ_UB, a=u - 1, n=1)], False),
        "raw_acc_last_row":   ([load, I(Opcode.MATMUL, flags=5, a=0, b=c - 8, n=8),
                                I(Opcode.READ_ACC, a=c - 1, n=1)], True),
        "acc_after_writes":   ([load, I(Opcode.MATMUL, flags=5, a=0, b=c - 9, n=8),
                                I(Opcode.READ_ACC, a=c - 1, n=1)], False),
        "activate_last_row":  ([load, I(Opcode.MATMUL, flags=5, a=0, b=c - 8, n=8),
                                I(Opcode.ACTIVATE, a=c - 1, b=0, n=1)], True),
        "war_ub_last_row":    ([I(Opcode.MATMUL, a=u - 30, b=0, n=30),
                                I(Opcode.WRITE_UB, a=u - 1, n=1, payload=bytes(4))], True),
        "ub_after_reads":     ([I(Opcode.MATMUL, a=u - 31, b=0, n=30),
                                I(Opcode.WRITE_UB, a=u - 1, n=1, payload=bytes(4))], False),
        "war_ub_read_ub":     ([I(Opcode.READ_UB, a=u - 16, n=16),
                                I(Opcode.ACTIVATE, a=0, b=u - 1, n=1)], True),
        "war_acc_last_row":   ([I(Opcode.READ_ACC, a=c - 16, n=16),
                                I(Opcode.MATMUL, flags=2, a=0, b=c - 1, n=1)], True),
        "acc_after_reads":    ([I(Opcode.READ_ACC, a=c - 17, n=16),
                                I(Opcode.MATMUL, flags=2, a=0, b=c - 1, n=1)], False),
    }


@pytest.mark.parametrize("case", list(edge_hazards(EDGE_GEOMETRIES["odd"])))
@pytest.mark.parametrize("name", list(EDGE_GEOMETRIES))
def test_hazards_at_the_end(name, case):
    # As test_hazards, on ranges that end at the last row of their memory, or one before it.
    g = EDGE_GEOMETRIES[name]
    body, conflict = edge_hazards(g)[case]
    rng = np.random.default_rng(len(case))
    setup = setup_data(g, rng, g.ub_depth)
    taken = []
    packets = run(encode(*setup, *body, I.sync()), g, input_cycles=taken)
    assert packets[-1] == status(ErrorCode.OK, 0)
    last = len(encode(*setup, *body[:-1])) + 7
    payload = body[-1].opcode == Opcode.WRITE_UB
    waited = taken[last + 1] - taken[last] - RETIRE - payload
    assert (waited > 0) == conflict, waited


@pytest.mark.parametrize("wm_depth", [48, 64])
def test_weight_memory_hazards_at_the_end(wm_depth):
    # A LOAD_WEIGHTS of the last R rows of the weight memory holds a WRITE_WM of the last row,
    # not one of the row before the tile.
    g = Geometry(16, 2, ub_depth=8, wm_depth=wm_depth, acc_depth=8)
    rng = np.random.default_rng(wm_depth)
    row = bytes([0x81, 0x7f])
    setup = setup_data(g, rng, 8)

    def wait_before_payload(body):
        taken = []
        packets = run(encode(*setup, *body, I(Opcode.MATMUL, flags=Flag.SWAP, n=8),
                             I(Opcode.READ_ACC, n=8), I.sync()), g, input_cycles=taken)
        assert packets[-1] == status(ErrorCode.OK, 0)
        last = len(encode(*setup, *body[:-1])) + 7
        return taken[last + 1] - taken[last] - RETIRE - 1    # see test_hazards

    assert wait_before_payload([I(Opcode.LOAD_WEIGHTS, a=wm_depth - 16),
                                I(Opcode.WRITE_WM, a=wm_depth - 1, n=1, payload=row)]) > 0
    assert wait_before_payload([I(Opcode.LOAD_WEIGHTS, a=wm_depth - 16),
                                I(Opcode.WRITE_WM, a=wm_depth - 17, n=1, payload=row)]) == 0


def test_set_ppu_error_index():
    # The index of a SET_PPU whose configuration is invalid is only known to be an error once
    # its payload is in: a good SET_PPU leaves the STATUS at (OK, 0) and a later error's index
    # intact; a bad one after an earlier error does not replace it.
    good = ppu_config_bytes([1, 2, 3], 1 << 30, 1, 0, 0, 0)
    bad = ppu_config_bytes([1, 2, 3], 1 << 30, 32, 0, 0, 0)
    program = [
        I(Opcode.SET_PPU, payload=good), I.sync(),
        I(Opcode.NOP), I(Opcode.SET_PPU, payload=good), I(Opcode.NOP, n=1), I.sync(),
        I(Opcode.NOP), I(Opcode.SET_PPU, payload=good), I(Opcode.SET_PPU, payload=bad),
        I(Opcode.NOP, n=1), I.sync(),
        I(Opcode.NOP, n=1), I(Opcode.SET_PPU, payload=bad), I.sync(),
        I(Opcode.SET_PPU, payload=bad), I(Opcode.SET_PPU, payload=good), I.sync(),
    ]
    packets = run(program, G23)
    assert packets == [status(ErrorCode.OK, 0), status(M, 2), status(M, 2), status(M, 0),
                       status(M, 0)]


class SharedPortBench(Elaboratable):
    """A unified buffer whose read port two users share through ``_share_read_port``."""
    def __init__(self, read_buffer, output_register=False):
        self.ub = UnifiedBuffer(2, 8, read_buffer=read_buffer, output_register=output_register)
        self.requests = [stream.Signature(ReadRequest(8)).flip().create() for _ in range(2)]
        self.responses = [stream.Signature(ReadResponse(self.ub.row_layout)).create()
                          for _ in range(2)]
        self.claims = [Signal(name=f"claim{k}") for k in range(2)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.ub = self.ub
        _share_read_port(m, "shared", self.ub.r_addr, self.ub.r_data,
                         list(zip(self.requests, self.responses, self.claims)),
                         read_latency=self.ub.read_latency)
        return m


SHARED_PORT_OPTIONS = pytest.mark.parametrize("read_buffer, output_register", [
    (True, True), (True, False), (False, False)])


@SHARED_PORT_OPTIONS
@pytest.mark.parametrize("gap", [0, 1, 2, 3])
def test_shared_port_hands_over(read_buffer, output_register, gap):
    # User 1 claims the port in the very cycle user 0's last request is accepted and sends a
    # request `gap` cycles after that: each user gets exactly its own row, even while user 0's
    # is still in the block RAM and not yet visible as a response (read latency 2 or 3).
    dut = SharedPortBench(read_buffer, output_register)
    got = [[], []]

    async def collect(ctx):
        async for _, _, *sampled in ctx.tick().sample(*(r.valid for r in dut.responses),
                                                      *(r.payload.data for r in dut.responses)):
            for k in range(2):
                if sampled[k]:
                    got[k].append([int(v) for v in sampled[2 + k]])

    async def testbench(ctx):
        for addr in range(8):
            ctx.set(dut.ub.w.valid, 1)
            ctx.set(dut.ub.w.payload, {"addr": addr, "data": [addr, addr + 100]})
            await ctx.tick()
        ctx.set(dut.ub.w.valid, 0)
        for response in dut.responses:
            ctx.set(response.ready, 1)
        ctx.set(dut.claims[0], 1)
        await ctx.tick()
        ctx.set(dut.claims[0], 0)
        ctx.set(dut.requests[0].valid, 1)
        ctx.set(dut.requests[0].payload, {"addr": 3, "last": 1})
        while not ctx.get(dut.requests[0].ready):
            await ctx.tick()
        ctx.set(dut.claims[1], 1)
        await ctx.tick()
        ctx.set(dut.requests[0].valid, 0)
        ctx.set(dut.claims[1], 0)
        if gap:
            await ctx.tick().repeat(gap)
        ctx.set(dut.requests[1].valid, 1)
        ctx.set(dut.requests[1].payload, {"addr": 5, "last": 1})
        while not ctx.get(dut.requests[1].ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(dut.requests[1].valid, 0)
        await ctx.tick().repeat(8)

    simulate(dut, [testbench], [collect])
    assert got == [[[3, 103]], [[5, 105]]]


@SHARED_PORT_OPTIONS
@pytest.mark.parametrize("seed", range(6))
def test_shared_port_hands_over_under_backpressure(read_buffer, output_register, seed):
    # The users take their responses with random stalls, so rows wait in every register of the
    # port (block RAM, output register, queue) while the port changes hands: user 0 sends a
    # burst, user 1 is claimed as user 0's last request is accepted and sends its own at once.
    # Each must get exactly its own rows, in order.
    dut = SharedPortBench(read_buffer, output_register)
    rng = random.Random(seed)
    bursts = [[rng.randrange(8) for _ in range(rng.randrange(1, 7))] for _ in range(2)]
    got = [[], []]

    async def testbench(ctx):
        # One process drives both sides, so that every handshake is judged after all of this
        # cycle's inputs are set (without the read buffer, `ready` follows the consumer's).
        for addr in range(8):
            ctx.set(dut.ub.w.valid, 1)
            ctx.set(dut.ub.w.payload, {"addr": addr, "data": [addr, 0]})
            await ctx.tick()
        ctx.set(dut.ub.w.valid, 0)
        ctx.set(dut.claims[0], 1)
        await ctx.tick()
        ctx.set(dut.claims[0], 0)
        user, sent = 0, 0
        for _ in range(200):
            for response in dut.responses:
                ctx.set(response.ready, rng.random() < 0.35)
            request = dut.requests[user]
            ctx.set(request.valid, sent < len(bursts[user]))
            if sent < len(bursts[user]):
                ctx.set(request.payload, {"addr": bursts[user][sent], "last": 0})
            accepted = ctx.get(request.valid) and ctx.get(request.ready)
            for k, response in enumerate(dut.responses):
                if ctx.get(response.valid) and ctx.get(response.ready):
                    got[k].append(int(ctx.get(response.payload.data)[0]))
            ctx.set(dut.claims[1], 0)
            if accepted:
                sent += 1
                if user == 0 and sent == len(bursts[0]):
                    # User 1 is claimed as user 0's last request is accepted.
                    ctx.set(dut.claims[1], 1)
                    user, sent = 1, 0
            await ctx.tick()
        ctx.set(dut.requests[user].valid, 0)

    simulate(dut, [testbench])
    assert got == bursts
