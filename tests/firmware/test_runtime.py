"""The runtime (firmware/runtime.py) and the backend interface (firmware/backends/).

Most tests use the ``model`` backend (the functional model: instant, exact); expected products
come from :func:`sim.golden.mxu.matmul` or numpy, never from the code under test. The end-to-end
tests run the accelerator's RTL on the ``verilator`` and ``amaranth`` backends.
"""

import numpy as np
import pytest

from firmware.backends import (BACKENDS, Backend, DeviceError, DeviceTimeout, StreamFramer,
                               default_cycle_budget, get_backend)
from firmware.backends.model import ModelBackend
from firmware.compiler import compile_matmul
from firmware.isa import (SYNC_WORD, Counter, ErrorCode, Flag, Geometry, Instruction, Opcode,
                          Response, Tag)
from firmware.runtime import Device
from sim.golden.mxu import matmul

G = Geometry(rows=4, cols=4, ub_depth=64, wm_depth=32, acc_depth=32)


def op(opcode, flags=0, a=0, b=0, n=0, payload=b""):
    return Instruction(opcode, int(flags), a, b, n, bytes(payload)).encode()


def random_matrix(rng, shape, dtype):
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max + 1, shape, dtype=dtype)


# The host's replica of the device's framing.

def test_framer_counts_the_syncs_the_device_answers():
    framer = StreamFramer(G)
    # A SYNC word inside a payload is data, not a SYNC.
    assert framer.feed(op(Opcode.WRITE_UB, n=2, payload=SYNC_WORD) + SYNC_WORD) == 1
    assert framer.at_sync
    assert framer.feed(op(Opcode.NOP)) == 0
    assert not framer.at_sync
    # A malformed SYNC (opcode 0x3F, wrong magic) is no SYNC.
    assert framer.feed(bytes([0x3F]) + bytes(7)) == 0
    # After an illegal opcode every word is skipped (payload or not) up to the SYNC word.
    bogus = bytes([0x77]) + bytes(7)
    assert framer.feed(bogus + op(Opcode.WRITE_UB, n=2) + SYNC_WORD) == 1
    assert not framer.faulted and framer.at_sync


def test_framer_waits_for_whole_instructions():
    framer = StreamFramer(G)
    program = op(Opcode.WRITE_WM, n=3, payload=bytes(range(12))) + SYNC_WORD
    assert framer.feed(program[:13]) == 0
    assert framer.buffered == 13 and not framer.at_sync
    assert framer.feed(program[13:-1]) == 0
    assert framer.feed(program[-1:]) == 1
    assert framer.buffered == 0 and framer.at_sync


def test_cycle_budget_grows_with_the_work():
    small = default_cycle_budget(op(Opcode.READ_ACC, n=1) + SYNC_WORD, G)
    large = default_cycle_budget(op(Opcode.READ_ACC, n=32) + SYNC_WORD, G)
    assert 200_000 < small < large
    assert large - small >= 16 * 31 * G.cols * 4


# The registry and the interface.

def test_registry():
    assert set(BACKENDS) == {"model", "amaranth", "verilator", "serial"}
    with pytest.raises(ValueError, match=r"unknown backend 'fpga'; known backends: "
                                         r"amaranth, model, serial, verilator"):
        get_backend("fpga", G)
    with pytest.raises(ValueError, match="known backends: amaranth, model, serial, verilator"):
        Device("fpga", G)
    with Device("model", G, max_cycles=100) as device:      # an option every backend takes
        assert device.backend.name == "model"
    with get_backend("model", G) as backend:
        assert isinstance(backend, ModelBackend) and backend.name == "model"
        assert backend.geometry == G and backend.cycles is None and not backend.timed
    assert backend.closed
    with pytest.raises(DeviceError, match="closed"):
        backend.exchange(SYNC_WORD)


def test_backend_interface_is_abstract():
    with pytest.raises(TypeError, match="exchange"):
        Backend(G)
    with pytest.raises(TypeError, match="Geometry"):
        ModelBackend((4, 4))


class Scripted(Backend):
    """A backend that answers with fixed bytes."""
    name = "scripted"

    def __init__(self, answer):
        super().__init__(G)
        self.answer = answer

    def exchange(self, program, *, max_cycles=None):
        return self.answer


# Device on the functional model.

@pytest.mark.parametrize("m, k, n, geometry", [
    (1, 1, 1, Geometry(1, 1, 1, 1, 1)),
    (9, 13, 7, G),
    (40, 30, 20, Geometry(4, 4, 16, 8, 16)),           # operands larger than the memories
    (20, 17, 11, Geometry(3, 5, 32, 16, 32)),          # a non-square array
])
@pytest.mark.parametrize("dtypes", [(np.int8, np.int8), (np.uint8, np.int8),
                                    (np.int8, np.uint8), (np.uint8, np.uint8)])
def test_matmul_on_the_model(m, k, n, geometry, dtypes):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a = random_matrix(rng, (m, k), dtypes[0])
    b = random_matrix(rng, (k, n), dtypes[1])
    with Device("model", geometry) as device:
        c = device.matmul(a, b)
        stats = device.last_stats
    assert c.dtype == np.int32 and c.shape == (m, n)
    assert np.array_equal(c, matmul(a, b, a_signed=dtypes[0] == np.int8,
                                    b_signed=dtypes[1] == np.int8))
    assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
    tiling = compile_matmul(a, b, geometry).tiling
    assert stats["backend"] == "model"
    assert (stats["rows"], stats["cols"]) == (geometry.rows, geometry.cols)
    assert stats["macs"] == m * k * n
    # Every activation row goes through the MXU once per weight tile.
    assert stats["mxu_busy_cycles"] == m * tiling.kt * tiling.nt
    # The model has no clock: what needs cycles is unknown, not zero.
    assert stats["cycles"] is None and stats["utilization"] is None
    assert stats["stall_host_in"] is None


def test_extreme_values():
    a = np.full((5, 70), -128, dtype=np.int8)
    b = np.full((70, 3), -128, dtype=np.int8)
    with Device("model", G) as device:
        assert np.all(device.matmul(a, b) == 70 * 128 * 128)


@pytest.mark.parametrize("a, b, message", [
    ([[1, 2]], np.ones((2, 1), np.int8), "A must be a numpy array, not list"),
    (np.ones((2, 2), np.int8), np.ones((2, 2), np.float32), "B must have dtype int8 or uint8, "
                                                            "not float32"),
    (np.ones((2, 2), np.int16), np.ones((2, 2), np.int8), "A must have dtype int8 or uint8, "
                                                          "not int16"),
    (np.ones(4, np.int8), np.ones((4, 1), np.int8), "A must be a 2-D matrix, not 1-D"),
    (np.ones((1, 2, 2), np.int8), np.ones((2, 1), np.int8), "A must be a 2-D matrix, not 3-D"),
    (np.ones((0, 3), np.int8), np.ones((3, 1), np.int8), r"A must not be empty, but has shape "
                                                         r"\(0, 3\)"),
    (np.ones((2, 3), np.int8), np.ones((4, 1), np.uint8), r"shapes do not match: A is 2 x 3, "
                                                          r"B is 4 x 1"),
])
def test_bad_operands(a, b, message):
    with Device("model", G) as device:
        with pytest.raises(ValueError, match=message):
            device.matmul(a, b)
        assert device.last_stats is None


def test_run_returns_the_programs_own_packets():
    with Device("model", G) as device:
        rows = bytes(range(8))
        responses = device.run(op(Opcode.WRITE_UB, a=3, n=2, payload=rows) +
                               op(Opcode.READ_UB, a=3, n=2) + SYNC_WORD)
        assert responses == [Response(Tag.DATA, payload=rows), Response(Tag.STATUS)]
        # A SYNC is added when the program has none.
        assert device.run(op(Opcode.READ_UB, a=4, n=1)) == [
            Response(Tag.DATA, payload=rows[4:]), Response(Tag.STATUS)]
        assert device.run(b"") == [Response(Tag.STATUS)]
        assert device.last_stats["instructions"] == 1
        with pytest.raises(ValueError, match="ends inside an instruction"):
            device.run(op(Opcode.WRITE_UB, n=2, payload=rows)[:-3])
        with pytest.raises(TypeError, match="program must be bytes"):
            device.run("NOP")


def test_device_errors_name_the_error_and_the_instruction():
    with Device("model", G) as device:
        program = op(Opcode.NOP) + op(Opcode.READ_UB, a=G.ub_depth - 1, n=2) + SYNC_WORD
        with pytest.raises(DeviceError, match=r"reported ADDRESS \(code 2\) at instruction 1") \
                as info:
            device.run(program)
        assert info.value.code == ErrorCode.ADDRESS and info.value.name == "ADDRESS"
        assert info.value.index == 1
        # Without the check, the STATUS packet is returned as it is.
        assert device.run(program, check=False) == [Response(Tag.STATUS, ErrorCode.ADDRESS, 1)]
        # An illegal opcode is reported at once by an ERROR packet, then by the SYNC.
        with pytest.raises(DeviceError, match=r"ERROR packet for ILLEGAL_OPCODE \(code 1\) at "
                                              r"instruction 2"):
            device.run(op(Opcode.NOP) * 2 + bytes([0x77]) + bytes(7) + op(Opcode.NOP))
        with pytest.raises(DeviceError, match="MALFORMED"):
            device.run(op(Opcode.READ_UB, n=0))
        with pytest.raises(DeviceError, match="NO_WEIGHTS"):
            device.run(op(Opcode.MATMUL, Flag.SWAP, n=1))
        # The device is fine afterwards.
        a = np.arange(12, dtype=np.int8).reshape(3, 4)
        assert np.array_equal(device.matmul(a, a.T.copy()), a.astype(int) @ a.T)


def test_counters():
    rng = np.random.default_rng(3)
    a = random_matrix(rng, (10, 9), np.int8)
    b = random_matrix(rng, (9, 6), np.int8)
    with Device("model", G) as device:
        assert set(device.counters()) == {counter.name.lower() for counter in Counter}
        device.matmul(a, b)
        stats = device.last_stats
        counters = device.counters()
        assert counters["mxu_busy"] == stats["mxu_busy_cycles"] == stats["counters"]["mxu_busy"]
        # The program's instructions and its SYNC, then the runtime's READ_COUNTERS; then
        # counters() reads before its own READ_COUNTERS is counted.
        program = compile_matmul(a, b, G).instructions
        assert stats["instructions"] == len(program)
        assert counters["instructions"] == 1 + len(program) + 1 + 1


def test_device_with_a_backend_object():
    backend = ModelBackend(G)
    with Device(backend) as device:
        assert device.backend is backend and device.geometry == G
    assert backend.closed
    with pytest.raises(ValueError, match="differs from the backend's"):
        Device(ModelBackend(G), Geometry())
    with pytest.raises(TypeError, match="options"):
        Device(ModelBackend(G), optimize=False)
    with pytest.raises(TypeError, match="backend must be"):
        Device(42)


@pytest.mark.parametrize("answer, message", [
    (b"", "counters and STATUS packets around the program are missing"),
    (b"\x01" * 8, "malformed answer"),
    (Response(Tag.STATUS).encode() * 3, "missing"),
])
def test_unexpected_answers_are_device_errors(answer, message):
    with Device(Scripted(answer)) as device:
        with pytest.raises(DeviceError, match=message):
            device.run(SYNC_WORD)


def test_timeout_is_a_device_error_and_a_timeout_error():
    assert issubclass(DeviceTimeout, DeviceError) and issubclass(DeviceTimeout, TimeoutError)


# End to end: the accelerator's RTL.

#: A small accelerator, quick to build and to simulate in Amaranth; the same as in
#: tests/sim/test_verilator_harness.py, so that both share one (cached) Verilator build.
SMALL = Geometry(rows=4, cols=4, ub_depth=32, wm_depth=16, acc_depth=16)


@pytest.mark.parametrize("backend, options", [("verilator", {"optimize": False}),
                                              ("amaranth", {})])
def test_matmul_end_to_end(backend, options):
    rng = np.random.default_rng(11)
    a = random_matrix(rng, (11, 9), np.int8)
    b = random_matrix(rng, (9, 6), np.uint8)
    with Device(backend, SMALL, **options) as device:
        c = device.matmul(a, b)
        stats = device.last_stats
        assert np.array_equal(c, a.astype(np.int64) @ b.astype(np.int64))
        assert stats["backend"] == backend
        assert stats["cycles"] > 0 and stats["macs"] == 11 * 9 * 6
        assert 0 < stats["utilization"] <= 1
        assert stats["mxu_busy_cycles"] == 11 * 3 * 2
        with pytest.raises(DeviceError, match="ADDRESS.* at instruction 0"):
            device.run(op(Opcode.READ_ACC, a=SMALL.acc_depth, n=1))
        c = device.matmul(b.T.copy(), a.T.copy())
        assert np.array_equal(c, b.T.astype(np.int64) @ a.T.astype(np.int64))
        # Too small a budget: a timeout, not a hang (the device's state is unknown after it).
        with pytest.raises(DeviceTimeout, match="did not finish within 50 cycles"):
            device.matmul(a, b, max_cycles=50)
