"""The UART against its line model, :mod:`sim.golden.uart`.

Lines are driven and sampled one level per clock cycle (1 us in simulation). Byte counts shrink
as the ratio grows, so that every test simulates a few thousand cycles.
"""

import gc
import math
import random
import warnings

import numpy as np
import pytest
from amaranth.hdl import Module, UnusedElaboratable
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from rtl.uart import FRACTION_BITS, RxByte, UARTReceiver, UARTTransmitter
from rtl.verilog import emit_verilog
from sim.golden import uart as golden
from sim.stream import stream_get_n, stream_put, stream_put_all
from sim.testbench import simulate

# (clk_freq, baud): 4, 5.3, 16, 21.67 and 104.17 cycles per bit.
RATIOS = [
    pytest.param(4_000_000, 1_000_000, id="4"),
    pytest.param(5_300_000.0, 1_000_000, id="5.3"),
    pytest.param(48_000_000, 3_000_000, id="16"),
    pytest.param(65_000_000, 3_000_000, id="21.67"),
    pytest.param(10_000_000, 96_000, id="104.17"),
]


def byte_count(ratio, cycles=2500, minimum=4):
    """How many frames fit in about ``cycles`` cycles."""
    return max(minimum, round(cycles / (10 * ratio)))


def random_gaps(rng, count, ratio):
    """Idle cycles before each frame: back to back 40 % of the time, else up to 3 bits."""
    return [0 if rng.random() < 0.4 else rng.randrange(1, int(3 * ratio) + 2)
            for _ in range(count)]


async def drive_line(ctx, rx, levels):
    """Put ``levels`` on ``rx``, one per cycle (waking up only when the level changes)."""
    levels = [int(v) for v in levels]
    index = 0
    while index < len(levels):
        end = index
        while end < len(levels) and levels[end] == levels[index]:
            end += 1
        ctx.set(rx, levels[index])
        await ctx.tick().repeat(end - index)
        index = end


def monitor(o, received, *, stall=None, seed=0):
    """A process that appends ``(data, framing_error, overrun)`` of every transfer on ``o``.

    With ``stall`` (a probability), it also drives ``o.ready``, low at random; otherwise
    ``ready`` is left to the testbench.
    """
    async def process(ctx):
        rng = random.Random(seed)
        if stall is not None:
            ctx.set(o.ready, 1)
        while True:
            _, _, valid, ready, payload = await ctx.tick().sample(o.valid, o.ready, o.payload)
            if valid and ready:
                received.append((payload.data, payload.framing_error, payload.overrun))
            if stall is not None:
                ctx.set(o.ready, rng.random() >= stall)
    return process


def receive(clk_freq, baud, levels, *, stall=0.3, seed=0):
    """What a UARTReceiver delivers from ``levels`` (followed by 3 bits of idle line)."""
    dut = UARTReceiver(clk_freq=clk_freq, baud=baud)
    ratio = clk_freq / baud
    levels = np.concatenate([levels, np.ones(int(3 * ratio) + 10, dtype=np.uint8)])
    received = []

    async def driver(ctx):
        await drive_line(ctx, dut.rx, levels)

    simulate(dut, [driver], [monitor(dut.o, received, stall=stall, seed=seed)],
             deadline=1e-6 * (len(levels) + 10))
    return received


# Receiver -------------------------------------------------------------------------------------

@pytest.mark.parametrize("error", [-0.02, 0.0, 0.02])
@pytest.mark.parametrize("clk_freq, baud", RATIOS)
def test_rx_random(clk_freq, baud, error):
    """Random bytes from a sender whose baud rate is off by ``error``, with random gaps."""
    ratio = clk_freq / baud
    rng = random.Random(f"rx {ratio} {error}")
    count = byte_count(ratio)
    data = [rng.randrange(256) for _ in range(count)]
    sender = ratio / (1 + error)                    # the sender's bit period, in our cycles
    levels = golden.encode(data, sender, idle=random_gaps(rng, count, ratio))
    assert golden.decode(levels, sender) == [(byte, False) for byte in data]
    received = receive(clk_freq, baud, levels, seed=count)
    assert received == [(byte, 0, 0) for byte in data]


@pytest.mark.parametrize("clk_freq, baud", RATIOS[:2])
@pytest.mark.parametrize("error", [-0.02, 0.02])
def test_rx_back_to_back(clk_freq, baud, error):
    """A long burst without gaps: the start of each frame is found again, drift does not add up
    (at the smallest ratios, where a cycle is a quarter of a bit)."""
    ratio = clk_freq / baud
    rng = random.Random(f"burst {ratio} {error}")
    data = [rng.choice([0x00, 0xff, 0x55, rng.randrange(256)]) for _ in range(40)]
    levels = golden.encode(data, ratio / (1 + error), idle=[1] + [0] * 39)
    assert receive(clk_freq, baud, levels, stall=0.0) == [(byte, 0, 0) for byte in data]


@pytest.mark.parametrize("clk_freq, baud", [RATIOS[2], RATIOS[3]])
def test_rx_framing_error(clk_freq, baud):
    """A low stop bit flags the byte (its data still arrives); the receiver then waits for the
    line to go high, as the golden model does, also when the next frame follows at once."""
    ratio = clk_freq / baud
    rng = random.Random(f"framing {ratio}")
    count = 24
    data = [rng.randrange(256) for _ in range(count)]
    gaps = random_gaps(rng, count, ratio)
    bad = sorted(rng.sample(range(count), 8))
    for frame in bad:
        if frame + 1 < count and rng.random() < 0.75:
            gaps[frame + 1] = max(gaps[frame + 1], 1)   # mostly a clean recovery
    levels, edges = golden.encode(data, ratio, idle=gaps, return_edges=True)
    for frame in bad:
        levels = golden.flip_bit(levels, edges, frame, 9)
    expected = golden.decode(levels, ratio)
    # A frame is found where it starts if the one before was, and was either good or followed
    # by idle line. Each such corrupted frame is reported with its data.
    clean = [True]
    for frame in range(1, count):
        clean.append(clean[-1] and (frame - 1 not in bad or gaps[frame] > 0))
    assert sum(clean[frame] for frame in bad) >= 4
    for frame in bad:
        if clean[frame]:
            assert (data[frame], True) in expected
    received = receive(clk_freq, baud, levels)
    assert received == [(byte, int(error), 0) for byte, error in expected]
    assert sum(error for _, error, _ in received) >= 6


@pytest.mark.parametrize("clk_freq, baud", [RATIOS[0], RATIOS[3]])
def test_rx_break(clk_freq, baud):
    """A break (the line low for 30 bit times) gives one byte 0x00 with framing_error, not a
    stream of them; a break that starts right after a stop bit as well."""
    ratio = clk_freq / baud
    line = lambda data, **kwargs: golden.encode(data, ratio, **kwargs)     # noqa: E731
    low = np.zeros(round(30 * ratio), dtype=np.uint8)
    high = np.ones(round(2 * ratio), dtype=np.uint8)
    levels = np.concatenate([line([0x12, 0x34], idle=[5, 0]), low, high,
                             line([0xa5], idle=3), low, np.ones(1, dtype=np.uint8),
                             line([0x5a, 0xff], idle=[1, 0])])
    assert golden.decode(levels, ratio) == [(0x12, False), (0x34, False), (0x00, True),
                                            (0xa5, False), (0x00, True), (0x5a, False),
                                            (0xff, False)]
    assert receive(clk_freq, baud, levels) == [(0x12, 0, 0), (0x34, 0, 0), (0x00, 1, 0),
                                               (0xa5, 0, 0), (0x00, 1, 0), (0x5a, 0, 0),
                                               (0xff, 0, 0)]


@pytest.mark.parametrize("clk_freq, baud", [RATIOS[0], RATIOS[1], RATIOS[3]])
def test_rx_overrun(clk_freq, baud):
    """With ``o.ready`` low, the first byte waits in ``o``, the next ones are dropped, and the
    first byte delivered after the loss carries ``overrun``. A byte that completes in the very
    cycle the waiting one is taken is not dropped."""
    ratio = clk_freq / baud
    dut = UARTReceiver(clk_freq=clk_freq, baud=baud)
    tail = np.ones(round(3 * ratio), dtype=np.uint8)
    fixed = round(dut.cycles_per_bit * 2**FRACTION_BITS)
    # From a start bit's first low level to the cycle its stop bit is decided: 2 cycles of
    # synchronizer, then the timer starts the next cycle from half a period.
    stop_decided = 3 + ((fixed >> 1) + 9 * fixed) // 2**FRACTION_BITS
    received = []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 0)
        await drive_line(ctx, dut.rx, golden.encode([0x11, 0x22, 0x33, 0x44], ratio, idle=3))
        await drive_line(ctx, dut.rx, tail)
        assert ctx.get(dut.o.valid)
        ctx.set(dut.o.ready, 1)
        await drive_line(ctx, dut.rx, golden.encode([0x55, 0x66], ratio, idle=[2, 0]))
        await drive_line(ctx, dut.rx, tail)
        # 0x77 waits, 0x88 is dropped, then 0x99 completes as 0x77 is taken.
        ctx.set(dut.o.ready, 0)
        await drive_line(ctx, dut.rx, golden.encode([0x77, 0x88], ratio, idle=[2, 7]))
        await drive_line(ctx, dut.rx, tail)
        levels = np.concatenate([golden.encode([0x99], ratio, idle=2), tail])
        await drive_line(ctx, dut.rx, levels[:2 + stop_decided])
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload.data) == 0x77
        ctx.set(dut.o.ready, 1)
        await drive_line(ctx, dut.rx, levels[2 + stop_decided:][:1])
        ctx.set(dut.o.ready, 0)
        assert ctx.get(dut.o.valid)
        payload = ctx.get(dut.o.payload)
        assert (payload.data, payload.framing_error, payload.overrun) == (0x99, 0, 1)
        await drive_line(ctx, dut.rx, levels[3 + stop_decided:])
        ctx.set(dut.o.ready, 1)
        await drive_line(ctx, dut.rx, golden.encode([0xaa], ratio, idle=2))
        await drive_line(ctx, dut.rx, tail)

    simulate(dut, [testbench], [monitor(dut.o, received)], deadline=1e-6 * 160 * ratio)
    assert received == [(0x11, 0, 0), (0x55, 0, 1), (0x66, 0, 0), (0x77, 0, 0), (0x99, 0, 1),
                        (0xaa, 0, 0)]


@pytest.mark.parametrize("clk_freq, baud", [RATIOS[0], RATIOS[2], RATIOS[3]])
def test_rx_glitches(clk_freq, baud):
    """One-cycle low pulses on an idle line give no byte; short ones (under half a bit) neither;
    a one-cycle pulse of either level at a data bit's middle is outvoted."""
    ratio = clk_freq / baud
    rng = random.Random(f"glitch {ratio}")
    half = math.floor(ratio / 2) - 1                 # the longest pulse still outvoted
    pieces, data = [], []
    for _ in range(6):
        idle = np.ones(round(4 * ratio), dtype=np.uint8)
        idle = golden.glitch(idle, rng.randrange(len(idle) // 2), rng.choice([1, half]))
        byte = rng.randrange(256)
        frame, edges = golden.encode([byte], ratio, idle=2, return_edges=True)
        bit = rng.randrange(1, 9)
        middle = int(edges[0, 0]) + math.floor((bit + 0.5) * ratio)
        pieces += [idle, golden.invert(frame, middle)]
        data.append(byte)
    levels = np.concatenate(pieces)
    assert receive(clk_freq, baud, levels) == [(byte, 0, 0) for byte in data]


# Transmitter ----------------------------------------------------------------------------------

@pytest.mark.parametrize("clk_freq, baud", RATIOS)
def test_tx_random(clk_freq, baud):
    """Random bytes offered after random pauses: ``tx`` is the golden line, cycle for cycle,
    frames follow back to back whenever a byte is waiting, and ``busy`` covers every frame."""
    ratio = clk_freq / baud
    rng = random.Random(f"tx {ratio}")
    dut = UARTTransmitter(clk_freq=clk_freq, baud=baud)
    period = dut.cycles_per_bit
    assert abs(period - ratio) <= 2**-(FRACTION_BITS + 1)
    count = byte_count(ratio, cycles=3000)
    data = [rng.randrange(256) for _ in range(count)]
    waiting = []                    # whether a frame was on the line when each byte was offered
    trace = []                      # (tx, busy, transfer on i) of every cycle

    async def producer(ctx):
        for index, byte in enumerate(data):
            # Pauses of up to 2.5 frames; always one long one and one none, to see both kinds.
            pause = {1: True, 2: False}.get(index, rng.random() < 0.5)
            if pause:
                low = int(12 * ratio) if index == 1 else 1
                await ctx.tick().repeat(rng.randrange(low, int(25 * ratio)))
            waiting.append(ctx.get(dut.busy))
            await stream_put(ctx, dut.i, byte)
        await ctx.tick().repeat(int(11 * ratio) + 2)

    async def recorder(ctx):
        while True:
            _, _, tx, busy, valid, ready = await ctx.tick().sample(dut.tx, dut.busy, dut.i.valid,
                                                                   dut.i.ready)
            trace.append((tx, busy, valid and ready))

    simulate(dut, [producer], [recorder], deadline=1e-6 * 40 * ratio * (count + 2))
    tx = np.array([t[0] for t in trace], dtype=np.uint8)
    busy = np.array([t[1] for t in trace], dtype=np.uint8)
    accepted = [cycle for cycle, t in enumerate(trace) if t[2]]
    assert len(accepted) == count

    # Each frame starts the cycle after its byte was accepted: derive the idle gaps from that,
    # then the whole line must be the golden one.
    gaps, end = [], 0
    for index, cycle in enumerate(accepted):
        gaps.append(cycle + 1 - end)
        _, edges = golden.encode(data[:index + 1], period, idle=gaps, return_edges=True)
        end = int(edges[-1, -1])
    assert min(gaps) >= 0
    levels, edges = golden.encode(data, period, idle=gaps, return_edges=True)
    assert tx[:len(levels)].tolist() == levels.tolist()
    assert tx[len(levels):].all()
    expected_busy = np.zeros_like(busy)
    for frame in edges:
        expected_busy[frame[0]:frame[-1]] = 1
    assert busy.tolist() == expected_busy.tolist()
    # Back to back exactly when the byte was offered during the previous frame.
    assert [gap == 0 for gap in gaps[1:]] == [bool(w) for w in waiting[1:]]
    assert 0 < sum(waiting) < count - 1

    # An independent receiver at the nominal ratio reads the bytes.
    assert golden.decode(tx, ratio) == [(byte, False) for byte in data]
    # Bits last floor or ceil of the ratio, and over each burst the edges stay within half a
    # cycle of the exact times (plus the fixed-point rounding of the period).
    lengths = set(np.diff(edges, axis=1).flat)
    assert lengths <= {math.floor(ratio), math.ceil(ratio)}
    bursts = np.flatnonzero(np.array(gaps) != 0).tolist() + [count]
    for first, stop in zip(bursts, bursts[1:]):
        for frame in range(first, stop):
            for bit in range(11):
                bits = 10 * (frame - first) + bit
                exact = edges[first, 0] + bits * ratio
                assert abs(edges[frame, bit] - exact) <= 0.5 + bits * 2**-(FRACTION_BITS + 1)


def test_tx_throughput():
    """With ``valid`` held, frames follow back to back: 10 bits per byte, exactly on average."""
    dut = UARTTransmitter(clk_freq=65_000_000, baud=3_000_000)
    data = list(range(0, 256, 13))
    cycles = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, data)
        await ctx.tick().repeat(230)

    async def recorder(ctx):
        while True:
            _, _, tx = await ctx.tick().sample(dut.tx)
            cycles.append(tx)

    simulate(dut, [producer], [recorder])
    # The first byte is taken in cycle 0, so its start bit is in cycle 1.
    levels, edges = golden.encode(data, dut.cycles_per_bit, idle=[1] + [0] * (len(data) - 1),
                                  return_edges=True)
    assert cycles[:len(levels)] == levels.tolist()
    bits = 10 * len(data)
    assert abs((edges[-1, -1] - edges[0, 0]) / bits - 65 / 3) < 0.005 * 65 / 3


# Both -----------------------------------------------------------------------------------------

class Loopback(wiring.Component):
    """A transmitter wired to a receiver."""
    i: In(stream.Signature(8))
    o: Out(stream.Signature(RxByte()))

    def __init__(self, clk_freq, tx_baud, rx_baud):
        self.transmitter = UARTTransmitter(clk_freq=clk_freq, baud=tx_baud)
        self.receiver = UARTReceiver(clk_freq=clk_freq, baud=rx_baud)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.transmitter = self.transmitter
        m.submodules.receiver = self.receiver
        connect(m, flipped(self.i), self.transmitter.i)
        connect(m, self.receiver.o, flipped(self.o))
        m.d.comb += self.receiver.rx.eq(self.transmitter.tx)
        return m


@pytest.mark.parametrize("clk_freq, tx_baud, rx_baud", [
    (65_000_000, 3_000_000, 3_000_000),                 # 21.67 cycles per bit
    (65_000_000, 3_060_000, 3_000_000),                 # the sender 2 % fast
    (5_300_000.0, 980_000, 1_000_000),                  # 5.3, the sender 2 % slow
])
def test_loopback(clk_freq, tx_baud, rx_baud):
    rng = random.Random(f"loopback {clk_freq} {tx_baud}")
    count = byte_count(clk_freq / rx_baud, cycles=4000)
    data = [rng.randrange(256) for _ in range(count)]
    dut = Loopback(clk_freq, tx_baud, rx_baud)
    received = []

    async def producer(ctx):
        await stream_put_all(ctx, dut.i, data, idle=0.05, rng=rng)

    async def consumer(ctx):
        received.extend(await stream_get_n(ctx, dut.o, count, stall=0.3))

    simulate(dut, [producer, consumer], deadline=1e-6 * 20 * clk_freq / rx_baud * (count + 2))
    assert [(p.data, p.framing_error, p.overrun) for p in received] == \
        [(byte, 0, 0) for byte in data]


# Parameters -----------------------------------------------------------------------------------

def unused(elaboratable):
    """``elaboratable``, marked as deliberately never elaborated."""
    elaboratable._MustUse__silence = True
    return elaboratable


@pytest.mark.parametrize("cls", [UARTTransmitter, UARTReceiver])
def test_parameters(cls):
    assert unused(cls(clk_freq=48_000_000, baud=3_000_000)).cycles_per_bit == 16
    uart = unused(cls(clk_freq=65e6, baud=3_000_000))
    assert (uart.clk_freq, uart.baud) == (65e6, 3_000_000)
    assert abs(uart.cycles_per_bit - 65 / 3) <= 2**-(FRACTION_BITS + 1)
    assert unused(cls(clk_freq=4, baud=1)).cycles_per_bit == 4
    assert unused(cls(clk_freq=np.float64(12e6), baud=115_200)).cycles_per_bit == \
        round(12e6 / 115_200 * 256) / 256


@pytest.mark.parametrize("cls", [UARTTransmitter, UARTReceiver])
@pytest.mark.parametrize("clk_freq, baud, error, message", [
    (3_999_999, 1_000_000, ValueError,
     r"clk_freq / baud must be at least 4 cycles per bit, not 3999999 / 1000000 = 4"),
    (11.5e6, 3_000_000, ValueError, r"not 11500000.0 / 3000000 = 3.833"),
    ("48e6", 115_200, TypeError, r"clk_freq must be a number of Hz \(int or float\), not '48e6'"),
    (True, 115_200, TypeError, r"clk_freq must be a number.*not True"),
    (None, 115_200, TypeError, r"clk_freq must be a number.*not None"),
    (float("nan"), 115_200, ValueError, r"clk_freq must be a positive, finite number.*nan"),
    (-48e6, 115_200, ValueError, r"clk_freq must be a positive.*not -48000000.0"),
    (48e6, 115_200.0, TypeError, r"baud must be an integer, not 115200.0"),
    (48e6, True, TypeError, r"baud must be an integer, not True"),
    (48e6, 0, ValueError, r"baud must be at least 1, not 0"),
])
def test_bad_parameters(cls, clk_freq, baud, error, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no UnusedElaboratable warning either
        with pytest.raises(error, match=message):
            cls(clk_freq=clk_freq, baud=baud)
        gc.collect()


@pytest.mark.parametrize("cls", [UARTTransmitter, UARTReceiver])
def test_keyword_arguments_only(cls):
    """Positional arguments are too easy to swap. (Python refuses them after the object is
    made, so Amaranth's warning about an unused elaboratable is expected here.)"""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError, match="positional argument"):
            cls(48e6, 115_200)
        gc.collect()


@pytest.mark.parametrize("cls, ports", [
    (UARTTransmitter, ["i__valid", "i__ready", "i__payload", "tx", "busy"]),
    (UARTReceiver, ["rx", "o__valid", "o__ready", "o__payload"]),
])
def test_verilog(cls, ports):
    text = emit_verilog(cls(clk_freq=100e6, baud=115_200), "uart")
    for port in ports:
        assert f" {port};" in text
