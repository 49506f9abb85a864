"""The Verilator harness (sim/verilator/) and the ``verilator`` backend.

Most tests run a small stand-in design, :class:`EchoDevice`, that has the accelerator's two
byte-stream ports and a trivially predictable answer; it is built once per session (without
C++ optimisation) into a private cache, so the build and the cache are exercised on every run.
The end-to-end tests run the real accelerator.
"""

import random
import struct
import time

import pytest
from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.backends import DeviceError, DeviceTimeout, get_backend
from firmware.backends.verilator import VerilatorBackend
from firmware.isa import (SYNC_WORD, Counter, Geometry, Instruction, Opcode, Response, Tag,
                          ppu_config_bytes)
from rtl.verilog import emit_verilog
from sim.golden.accelerator import AcceleratorModel
from sim.verilator.build import VerilatorBuildError, build_harness, build_key

#: The geometry the stand-in pretends to have (it only matters to the host's framing).
G = Geometry(rows=4, cols=4, ub_depth=16, wm_depth=8, acc_depth=16)
#: A word starting with this byte hangs the stand-in until reset (an illegal opcode to the
#: host, which then expects the device to skip to the next SYNC and answer it).
HANG = 0xFF
STATUS_OK = bytes([Tag.STATUS]) + bytes(7)


class EchoDevice(wiring.Component):
    """A stand-in for the accelerator: answers each 8-byte word it receives.

    The SYNC word gets a STATUS packet (OK, index 0); a word whose first byte is :data:`HANG`
    stops the device (``i.ready`` and ``o.valid`` low) until reset; any other word comes back
    as a DATA packet with the word as its payload. ``i.ready`` is low one cycle in
    ``stall_every`` (input backpressure).
    """
    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def __init__(self, *, stall_every=3):
        super().__init__()
        self.stall_every = stall_every

    def elaborate(self, platform):
        m = Module()
        word = Signal(64)
        count = Signal(3)
        buffer = Signal(128)
        left = Signal(5)
        phase = Signal(range(self.stall_every))
        m.d.sync += phase.eq(Mux(phase == self.stall_every - 1, 0, phase + 1))
        data_header = Const(Tag.DATA | (8 << 32), 64)
        with m.FSM():
            with m.State("RECEIVE"):
                m.d.comb += self.i.ready.eq(phase != 0)
                with m.If(self.i.valid & self.i.ready):
                    full = Cat(word[8:], self.i.payload)
                    m.d.sync += [word.eq(full), count.eq(count + 1)]
                    with m.If(count == 7):
                        with m.If(full[:8] == HANG):
                            m.next = "HUNG"
                        with m.Elif(full == int.from_bytes(SYNC_WORD, "little")):
                            m.d.sync += [buffer.eq(Tag.STATUS), left.eq(8)]
                            m.next = "SEND"
                        with m.Else():
                            m.d.sync += [buffer.eq(Cat(data_header, full)), left.eq(16)]
                            m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(buffer[:8])]
                with m.If(self.o.ready):
                    m.d.sync += [buffer.eq(buffer >> 8), left.eq(left - 1)]
                    with m.If(left == 1):
                        m.next = "RECEIVE"
            with m.State("HUNG"):
                pass
        return m


def echo_answer(program):
    """What :class:`EchoDevice` answers to ``program`` (whole words, no HANG)."""
    out = b""
    for offset in range(0, len(program) - len(program) % 8, 8):
        word = program[offset:offset + 8]
        out += STATUS_OK if word == SYNC_WORD else Response(Tag.DATA, payload=word).encode()
    return out


#: Opcodes without a payload: the host's framing then sees one instruction per word, as the
#: stand-in does.
NO_PAYLOAD = [Opcode.NOP, Opcode.LOAD_WEIGHTS, Opcode.MATMUL, Opcode.READ_UB, Opcode.READ_ACC]


def random_words(rng, count):
    """``count`` random words of opcodes without a payload."""
    return b"".join(bytes([rng.choice(NO_PAYLOAD)]) + bytes(rng.randrange(256) for _ in range(7))
                    for _ in range(count))


@pytest.fixture(scope="session")
def echo(tmp_path_factory):
    """The stand-in's Verilog, built once into a private cache: ``(verilog, top, cache)``."""
    cache = tmp_path_factory.mktemp("verilator-cache")
    verilog = emit_verilog(EchoDevice(), "puce_echo")
    build = build_harness(verilog, "puce_echo", optimize=False, cache_dir=cache)
    assert build.built and build.executable.is_file()
    return verilog, "puce_echo", cache


def echo_backend(echo, **options):
    verilog, top, cache = echo
    return VerilatorBackend(G, verilog=verilog, top=top, cache_dir=cache, optimize=False,
                            **options)


def test_bytes_in_and_out_exactly(echo):
    program = random_words(random.Random(1), 50) + SYNC_WORD
    with echo_backend(echo) as backend:
        assert backend.cycles == 0
        answer = backend.exchange(program)
        assert answer == echo_answer(program)
        # One byte per cycle at best, and i.ready is low one cycle in three.
        assert backend.cycles >= len(program) * 3 // 2
        assert backend.query_cycles() == backend.cycles


def test_output_backpressure_changes_timing_not_bytes(echo):
    program = random_words(random.Random(2), 40) + SYNC_WORD
    with echo_backend(echo) as free, echo_backend(echo, stall=70, seed=5) as stalled:
        assert free.exchange(program) == stalled.exchange(program) == echo_answer(program)
        assert stalled.cycles > free.cycles + len(echo_answer(program))


def test_state_survives_between_exchanges(echo):
    program = random_words(random.Random(3), 3) + SYNC_WORD
    with echo_backend(echo) as backend:
        # A word split across exchanges: the first part alone produces nothing (the exchange
        # ends after quiet_cycles of silence), the rest completes it.
        assert backend.exchange(program[:5]) == b""
        assert backend.exchange(program[5:]) == echo_answer(program)
        # A program without a SYNC ends by the quiet rule; its answer is still complete.
        assert backend.exchange(program[:16]) == echo_answer(program[:16])
        assert backend.exchange(b"") == b""


def test_partial_replies_reassemble(echo):
    # Many SYNCs, answers larger than the harness's per-reply limit.
    program = b"".join(random_words(random.Random(4), 5) + SYNC_WORD for _ in range(10))
    with echo_backend(echo, output_limit=7) as backend:
        assert backend.exchange(program) == echo_answer(program)


def test_cycle_budget_raises_instead_of_hanging(echo):
    hang = bytes([HANG]) + bytes(7)
    program = random_words(random.Random(5), 2)
    with echo_backend(echo) as backend:
        with pytest.raises(DeviceTimeout, match=r"did not finish within 1000 cycles: 8 of 32 "
                                                r"program bytes not taken, 1 more STATUS"):
            backend.exchange(program + hang + SYNC_WORD, max_cycles=1000)
        # The default budget is bounded too (a few hundred thousand cycles here).
        with pytest.raises(TimeoutError) as info:
            backend.exchange(SYNC_WORD)
        assert info.value.output == b""
        # A reset brings the device back.
        backend.reset()
        assert backend.cycles == 0
        assert backend.exchange(program + SYNC_WORD) == echo_answer(program + SYNC_WORD)
    with echo_backend(echo) as backend:
        # Too small a budget for a working device: the partial answer comes with the error.
        with pytest.raises(DeviceTimeout) as info:
            backend.exchange(program + SYNC_WORD, max_cycles=20)
        assert echo_answer(program).startswith(info.value.output)


def test_dead_harness_is_a_clear_error(echo):
    backend = echo_backend(echo)
    backend._process.kill()
    backend._process.wait()
    with pytest.raises(DeviceError, match=r"Verilator harness .* exited with status"):
        backend.exchange(SYNC_WORD)
    assert backend.closed
    with pytest.raises(DeviceError, match="closed"):
        backend.exchange(SYNC_WORD)
    backend.close()     # idempotent


def test_build_cache_hit(echo):
    verilog, top, cache = echo
    start = time.perf_counter()
    build = build_harness(verilog, top, optimize=False, cache_dir=cache)
    assert not build.built
    assert time.perf_counter() - start < 5      # generous: a hit reads no more than a file
    assert build.key == build_key(verilog, top, optimize=False)[0]
    assert (build.directory / "key.json").is_file()
    # Anything that changes the executable changes the key.
    assert build_key(verilog + "\n// changed\n", top, optimize=False)[0] != build.key
    assert build_key(verilog, top, optimize=True)[0] != build.key


def test_source_key_skips_the_verilog(echo):
    verilog, top, cache = echo
    first = build_harness(lambda: verilog, top, optimize=False, cache_dir=cache,
                          source_key="echo v1")
    assert not first.built      # the same Verilog as the session's build: found by its hash

    def must_not_emit():
        raise AssertionError("the Verilog was emitted on an indexed cache hit")
    again = build_harness(must_not_emit, top, optimize=False, cache_dir=cache,
                          source_key="echo v1")
    assert not again.built and again.executable == first.executable
    with pytest.raises(AssertionError, match="emitted"):   # a new source key needs the text
        build_harness(must_not_emit, top, optimize=False, cache_dir=cache, source_key="v2")


def test_build_error_shows_the_log(tmp_path, capfd):
    verilog = "module broken(input clk);\n  wire x = ;\nendmodule\n"
    with pytest.raises(VerilatorBuildError) as info:
        build_harness(verilog, "broken", cache_dir=tmp_path)
    message = str(info.value)
    assert "Verilator build of broken failed" in message
    assert "broken.v:2" in message                         # the tail of the log
    assert "build.log" in message
    assert not any(p.name[0].isalnum() and p.is_dir() and not p.name.startswith("failed-")
                   for p in tmp_path.iterdir())            # nothing cached
    assert "building the Verilator model of broken" in capfd.readouterr().err


def test_backend_options_are_checked(echo):
    verilog, top, cache = echo
    with pytest.raises(ValueError, match="give both verilog and top"):
        VerilatorBackend(G, verilog=verilog)
    with pytest.raises(ValueError, match="stall must be a percentage"):
        echo_backend(echo, stall=100)


# The real accelerator.

#: A small accelerator, quick to build and to simulate in Amaranth (the same as in
#: tests/firmware/test_runtime.py: one Verilator build serves both).
SMALL = Geometry(rows=4, cols=4, ub_depth=32, wm_depth=16, acc_depth=16)


def random_program(rng, g, count):
    """``count`` random instructions of every kind, mostly valid, some failing, some SYNCs."""
    def rows(n, width):
        return bytes(rng.randrange(256) for _ in range(n * width))
    words = []
    for _ in range(count):
        kind = rng.randrange(11)
        n = rng.randrange(1, 5)
        if kind == 0:
            a = rng.randrange(g.ub_depth - n + 1)
            words.append(Instruction(Opcode.WRITE_UB, a=a, n=n, payload=rows(n, g.rows)))
        elif kind == 1:
            a = rng.randrange(g.wm_depth - n + 1)
            words.append(Instruction(Opcode.WRITE_WM, a=a, n=n, payload=rows(n, g.cols)))
        elif kind == 2:
            config = ppu_config_bytes([rng.randrange(-1000, 1000) for _ in range(g.cols)],
                                      rng.randrange(1 << 30, 1 << 31), rng.randrange(32),
                                      rng.randrange(-128, 128), rng.randrange(3),
                                      rng.randrange(128))
            words.append(Instruction(Opcode.SET_PPU, payload=config))
        elif kind in (3, 4):
            words.append(Instruction(Opcode.LOAD_WEIGHTS, rng.randrange(2),
                                     a=rng.randrange(g.wm_depth - g.rows + 1)))
            words.append(Instruction(Opcode.MATMUL, rng.randrange(8),
                                     a=rng.randrange(g.ub_depth - n + 1),
                                     b=rng.randrange(g.acc_depth - n + 1), n=n))
        elif kind == 5:
            words.append(Instruction(Opcode.ACTIVATE, a=rng.randrange(g.acc_depth - n + 1),
                                     b=rng.randrange(g.ub_depth - n + 1), n=n))
        elif kind == 6:
            words.append(Instruction(Opcode.READ_UB, a=rng.randrange(g.ub_depth - n + 1), n=n))
        elif kind == 7:
            words.append(Instruction(Opcode.READ_ACC, a=rng.randrange(g.acc_depth - n + 1),
                                     n=n))
        elif kind == 8:
            words.append(Instruction(Opcode.READ_COUNTERS, rng.randrange(2)))
        elif kind == 9:     # an ADDRESS error, a MALFORMED one, an illegal opcode, a NOP
            words.append(rng.choice([Instruction(Opcode.READ_ACC, a=g.acc_depth - 1, n=2),
                                     Instruction(Opcode.READ_UB, n=0),
                                     Instruction(0x77, a=1),
                                     Instruction(Opcode.NOP)]))
        else:
            words.append(Instruction.sync())
    return b"".join(word.encode() for word in words) + SYNC_WORD


def test_verilator_and_amaranth_answer_identically():
    program = random_program(random.Random(21), SMALL, 40)
    with get_backend("verilator", SMALL, optimize=False) as verilator, \
            get_backend("amaranth", SMALL) as amaranth:
        answer = verilator.exchange(program)
        assert answer == amaranth.exchange(program)
        assert verilator.cycles > 0
    # And the same packets as the functional model, but for the timing counters, which the
    # model does not keep.
    expected = Response.parse(AcceleratorModel(SMALL).run(program))
    packets = Response.parse(answer)
    assert len(packets) == len(expected)
    assert sum(p.tag == Tag.STATUS and p.code != 0 for p in packets) > 0     # errors happened
    timing = [Counter.CYCLES] + [c for c in Counter if c.name.startswith("STALL")]
    for got, want in zip(packets, expected):
        if got.tag == Tag.DATA and len(got.payload) == 8 * len(Counter) and \
                len(want.payload) == 8 * len(Counter):
            got_values = struct.unpack(f"<{len(Counter)}Q", got.payload)
            want_values = struct.unpack(f"<{len(Counter)}Q", want.payload)
            assert [v for c, v in zip(Counter, got_values) if c not in timing] == \
                [v for c, v in zip(Counter, want_values) if c not in timing]
        else:
            assert got == want
