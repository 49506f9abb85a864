"""End to end: the host's serial backend talking to the board core RTL over a simulated line.

The line is bit-level (the UART pins of :class:`rtl.serial_accelerator.SerialAccelerator`),
and faults are injected on it: flipped bits, lost bytes, garbage and framing errors. Every
answer must still equal the ISA model's, byte for byte.
"""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from firmware.isa import SYNC_WORD, Geometry, Instruction, Opcode
from firmware.backends.serial import SerialBackend
from firmware.link import Link
from firmware.runtime import Device
from rtl.ppu import PostProcessor
from rtl.serial_accelerator import SerialAccelerator
from rtl.serial_ppu import SerialPostProcessor
from sim.golden.accelerator import AcceleratorModel
from sim.serial_line import LineFaults, SimulatedSerialLine

G = Geometry(2, 2, ub_depth=64, wm_depth=16, acc_depth=64)


def _program(rng):
    rows = rng.integers(0, 256, (3, G.rows), dtype=np.uint8)
    return b"".join(instruction.encode() for instruction in [
        Instruction(Opcode.WRITE_UB, a=5, n=3, payload=rows.tobytes()),
        Instruction(Opcode.READ_UB, a=5, n=3),
        Instruction(Opcode.READ_UB, a=70, n=1),                 # ADDRESS, reported at SYNC
    ]) + SYNC_WORD


def test_matmul_through_the_uart():
    rng = np.random.default_rng(1)
    a = rng.integers(-128, 128, (3, 3), dtype=np.int8)
    b = rng.integers(-128, 128, (3, 2), dtype=np.int8)
    line = SimulatedSerialLine(G, max_payload=64)
    with Device(SerialBackend(G, transport=line, max_payload=64)) as device:
        assert np.array_equal(device.matmul(a, b), a.astype(np.int32) @ b)
        assert device.last_stats["cycles"] > 0     # the board's own counters came back
    assert device.backend.link.stats["retries"] == 0


@pytest.mark.parametrize("seed", [3])
def test_faults_on_the_line_are_survived(seed):
    rng = np.random.default_rng(seed)
    program = _program(rng)
    to_board = LineFaults(flip=0.01, drop=0.01, garbage=0.01, framing=0.01, seed=seed)
    to_host = LineFaults(flip=0.01, drop=0.01, garbage=0.01, seed=seed + 1)
    line = SimulatedSerialLine(G, max_payload=8, to_board=to_board, to_host=to_host)
    backend = SerialBackend(G, transport=line, max_payload=8, retries=30, timeout=0.002)
    assert backend.exchange(program) == AcceleratorModel(G).run(program)
    stats = backend.link.stats
    assert stats["retries"] > 0
    assert sum(to_board.counts.values()) and sum(to_host.counts.values())


def test_each_fault_kind_on_the_wire():
    # Scripted damage on the bit-level line: a flipped bit, a lost byte, garbage and a stop
    # bit held low on the way in; a flipped bit and a lost byte on the way out.
    rng = np.random.default_rng(5)
    program = _program(rng)
    kinds = ["flip", "drop", "garbage", "framing"]
    to_board = LineFaults(script={12 + 15 * i: kind for i, kind in enumerate(kinds)})
    to_host = LineFaults(script={5: "flip", 30: "drop"})
    line = SimulatedSerialLine(G, max_payload=16, to_board=to_board, to_host=to_host)
    backend = SerialBackend(G, transport=line, max_payload=16, timeout=0.002)
    assert backend.exchange(program) == AcceleratorModel(G).run(program)
    assert all(to_board.counts.values()) and all(to_host.counts[k] for k in ("flip", "drop"))
    assert backend.link.stats["rejected"] >= 1 and backend.link.stats["bad_frames"] >= 1


def test_noise_before_a_frame_is_rejected_and_the_request_still_runs_once():
    line = SimulatedSerialLine(G, max_payload=32)
    link = Link(line, max_payload=32, timeout=0.002)
    link.start()
    program = Instruction(Opcode.WRITE_UB, a=0, n=1, payload=b"\x11\x22").encode() + SYNC_WORD
    line.write(b"\x12\x34\x56")                                  # noise, then the request
    answer = link.transact(program)
    assert answer.payload == AcceleratorModel(G).run(program)
    assert link.stats["rejected"] + link.stats["stale"] >= 1
    # The LEDs saw it: a rejected frame, good ones, and the accelerator at work. (The
    # heartbeat's first toggle is half a second away.)
    assert line.lit == {"alive": False, "ok": True, "error": True, "busy": True}


def test_constructor_errors():
    with pytest.raises(TypeError, match="clk_freq must be a positive number"):
        SerialAccelerator(G, clk_freq="fast")
    with pytest.raises(ValueError, match="max_payload"):
        SerialAccelerator(G, clk_freq=1e6, max_payload=0)
    with pytest.raises(ValueError):
        SerialAccelerator(G, clk_freq=1e6, baud=500_000)         # 2 cycles per bit
    with pytest.raises(ValueError, match="ppu_lanes must be None with serial_ppu"):
        SerialAccelerator(G, clk_freq=12e6, ppu_lanes=1, serial_ppu=True)


@pytest.mark.parametrize("serial_ppu", [False, True])
def test_serial_ppu_passed_through(serial_ppu):
    dut = SerialAccelerator(G, clk_freq=12e6, timing_registers=False, serial_ppu=serial_ppu)
    assert dut.serial_ppu == serial_ppu
    ppu = Fragment.get(dut, None).find_subfragment("accelerator").find_subfragment("ppu")
    assert isinstance(ppu.origins[0], SerialPostProcessor if serial_ppu else PostProcessor)
