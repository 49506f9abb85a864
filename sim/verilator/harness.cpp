// The Verilator harness of puce's accelerator: the device behind a pair of pipes.
//
// The model (class Vtop, built by sim/verilator/build.py) has two byte streams, `i` (host to
// device) and `o` (device to host), plus clk and rst. This program clocks it, feeds `i` from
// bytes the host sent on stdin (one byte per cycle when i__ready is high), takes every `o`
// byte (o__ready is high, except on the pseudo-random stall cycles asked for by --stall) and
// sends them back on stdout. Python never runs per cycle: it sends a whole program and one
// RUN command, and gets the whole answer in one reply.
//
// Protocol (all integers little-endian). Host to harness, one command at a time:
//
//   'D' u32 length, bytes    queue `length` bytes for `i`; no reply
//   'R' u64 max_cycles, u32 statuses, u32 quiet_cycles
//                            run the clock until one of
//                              - the input queue is empty and, if statuses > 0, that many
//                                STATUS packets have come out during this command, or, if
//                                statuses == 0, `o` has been idle for quiet_cycles cycles
//                                -> reply 'K' (done)
//                              - the output limit (1 MiB) has accumulated -> reply 'P'
//                                (partial: send 'R' again with what is left of the budget
//                                and of the statuses)
//                              - max_cycles cycles have run -> reply 'T' (timed out)
//   'C'                      reply 'C' (the counters below, no bytes)
//   'X' u32 cycles           hold rst high for `cycles` cycles, drop queued input and any
//                            half-seen packet, zero the cycle counter; reply 'X'
//   'Q' or end of input      exit with status 0
//
// Harness to host, one reply per R, C or X command:
//
//   u8 tag ('K', 'P', 'T', 'C', 'X'), u64 cycles (since the last reset), u64 input bytes
//   still queued, u32 STATUS packets seen during this command, u32 length, then `length`
//   output bytes.
//
// The harness follows the device's response framing (an 8-byte header; a DATA header, tag
// 0xDA, carries its payload length in bytes 4..7) to count STATUS packets (tag 0x5C).
//
// Options: --reset N (reset cycles at start, default 4), --stall P (o__ready low on about P
// percent of cycles, default 0), --seed S (for --stall), --output-limit N (bytes per reply
// before a 'P', default 1 MiB).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include "Vtop.h"
#include "verilated.h"

// Verilator escapes a "_" that follows "_" in identifiers as "__05F": Amaranth's port
// `i__valid` is the member i___05Fvalid.
#define I_VALID   i___05Fvalid
#define I_READY   i___05Fready
#define I_PAYLOAD i___05Fpayload
#define O_VALID   o___05Fvalid
#define O_READY   o___05Fready
#define O_PAYLOAD o___05Fpayload

namespace {

const uint8_t TAG_DATA = 0xDA;
const uint8_t TAG_STATUS = 0x5C;

[[noreturn]] void fail(const char *message) {
    std::fprintf(stderr, "puce harness: %s\n", message);
    std::exit(2);
}

// Read exactly n bytes; false on end of input before the first byte.
bool read_exact(void *buffer, size_t n) {
    auto *p = static_cast<uint8_t *>(buffer);
    size_t done = 0;
    while (done < n) {
        ssize_t got = ::read(0, p + done, n - done);
        if (got == 0) {
            if (done == 0) return false;
            fail("input ended inside a command");
        }
        if (got < 0) fail("cannot read stdin");
        done += static_cast<size_t>(got);
    }
    return true;
}

void write_exact(const void *buffer, size_t n) {
    auto *p = static_cast<const uint8_t *>(buffer);
    while (n) {
        ssize_t put = ::write(1, p, n);
        if (put <= 0) fail("cannot write stdout");
        p += put;
        n -= static_cast<size_t>(put);
    }
}

template <typename T> T read_le() {
    uint8_t bytes[sizeof(T)];
    if (!read_exact(bytes, sizeof(T))) fail("input ended inside a command");
    T value = 0;
    for (size_t k = 0; k < sizeof(T); k++) value |= static_cast<T>(bytes[k]) << (8 * k);
    return value;
}

template <typename T> void put_le(std::vector<uint8_t> &out, T value) {
    for (size_t k = 0; k < sizeof(T); k++) out.push_back(static_cast<uint8_t>(value >> (8 * k)));
}

// Follows the response packets to count STATUS headers.
struct PacketTracker {
    uint8_t header[8];
    int have = 0;
    uint64_t skip = 0;

    // Returns true if `byte` completes a STATUS header.
    bool push(uint8_t byte) {
        if (skip) {
            skip--;
            return false;
        }
        header[have++] = byte;
        if (have < 8) return false;
        have = 0;
        if (header[0] == TAG_DATA) {
            skip = static_cast<uint64_t>(header[4]) | static_cast<uint64_t>(header[5]) << 8 |
                   static_cast<uint64_t>(header[6]) << 16 | static_cast<uint64_t>(header[7]) << 24;
            return false;
        }
        return header[0] == TAG_STATUS;
    }
};

struct Harness {
    std::unique_ptr<VerilatedContext> context;
    std::unique_ptr<Vtop> top;
    std::vector<uint8_t> input;  // queued bytes for `i`, from input_pos on
    size_t input_pos = 0;
    std::vector<uint8_t> output;
    PacketTracker tracker;
    uint64_t cycles = 0;
    unsigned stall_percent = 0;
    size_t output_limit = 1 << 20;
    uint64_t lfsr = 0x9E3779B97F4A7C15ull;

    Harness() : context(new VerilatedContext), top(new Vtop{context.get()}) {
        top->clk = 0;
        top->rst = 0;
        top->I_VALID = 0;
        top->O_READY = 0;
        top->eval();
    }

    size_t queued() const { return input.size() - input_pos; }

    bool out_ready() {
        if (!stall_percent) return true;
        lfsr ^= lfsr << 13;  // xorshift64
        lfsr ^= lfsr >> 7;
        lfsr ^= lfsr << 17;
        return (lfsr % 100) >= stall_percent;
    }

    // One clock cycle; returns whether a byte came out (into `output`).
    bool cycle(uint32_t &statuses) {
        bool have_input = input_pos < input.size();
        top->I_VALID = have_input;
        top->I_PAYLOAD = have_input ? input[input_pos] : 0;
        top->O_READY = out_ready();
        top->eval();  // clk is low: settle the combinational outputs for these inputs
        bool in_fire = top->I_VALID && top->I_READY;
        bool out_fire = top->O_VALID && top->O_READY;
        uint8_t byte = top->O_PAYLOAD;
        top->clk = 1;
        top->eval();
        top->clk = 0;
        cycles++;
        if (in_fire && ++input_pos == input.size()) {
            input.clear();
            input_pos = 0;
        }
        if (out_fire) {
            output.push_back(byte);
            if (tracker.push(byte)) statuses++;
        }
        return out_fire || top->O_VALID;
    }

    void reset(uint32_t reset_cycles) {
        input.clear();
        input_pos = 0;
        output.clear();
        tracker = PacketTracker();
        top->rst = 1;
        top->I_VALID = 0;
        top->O_READY = 0;
        for (uint32_t k = 0; k < reset_cycles; k++) {
            top->eval();
            top->clk = 1;
            top->eval();
            top->clk = 0;
        }
        top->rst = 0;
        top->eval();
        cycles = 0;
    }

    void reply(char tag, uint32_t statuses) {
        std::vector<uint8_t> header;
        header.push_back(static_cast<uint8_t>(tag));
        put_le<uint64_t>(header, cycles);
        put_le<uint64_t>(header, queued());
        put_le<uint32_t>(header, statuses);
        put_le<uint32_t>(header, static_cast<uint32_t>(output.size()));
        write_exact(header.data(), header.size());
        if (!output.empty()) write_exact(output.data(), output.size());
        output.clear();
    }

    char run(uint64_t max_cycles, uint32_t want_statuses, uint32_t quiet_cycles,
             uint32_t &statuses) {
        uint64_t ran = 0;
        uint32_t quiet = 0;
        for (;;) {
            if (!queued()) {
                if (want_statuses ? statuses >= want_statuses : quiet >= quiet_cycles) return 'K';
            }
            if (output.size() >= output_limit) return 'P';
            if (ran >= max_cycles) return 'T';
            bool active = cycle(statuses);
            ran++;
            quiet = (active || queued()) ? 0 : quiet + 1;
        }
    }
};

}  // namespace

int main(int argc, char **argv) {
    uint32_t reset_cycles = 4;
    unsigned stall = 0;
    uint64_t seed = 1;
    size_t output_limit = 1 << 20;
    for (int k = 1; k < argc; k++) {
        std::string arg = argv[k];
        if (arg == "--reset" && k + 1 < argc) {
            reset_cycles = static_cast<uint32_t>(std::strtoul(argv[++k], nullptr, 0));
        } else if (arg == "--stall" && k + 1 < argc) {
            stall = static_cast<unsigned>(std::strtoul(argv[++k], nullptr, 0));
            if (stall > 99) fail("--stall must be 0..99");
        } else if (arg == "--output-limit" && k + 1 < argc) {
            output_limit = static_cast<size_t>(std::strtoull(argv[++k], nullptr, 0));
            if (!output_limit) fail("--output-limit must be at least 1");
        } else if (arg == "--seed" && k + 1 < argc) {
            seed = std::strtoull(argv[++k], nullptr, 0);
        } else {
            fail(("unknown argument " + arg).c_str());
        }
    }
    Harness harness;
    harness.stall_percent = stall;
    harness.output_limit = output_limit;
    harness.lfsr ^= seed * 0xBF58476D1CE4E5B9ull;
    if (!harness.lfsr) harness.lfsr = 1;
    harness.reset(reset_cycles);

    for (;;) {
        uint8_t command;
        if (!read_exact(&command, 1)) break;
        switch (command) {
        case 'D': {
            uint32_t length = read_le<uint32_t>();
            size_t old = harness.input.size();
            harness.input.resize(old + length);
            if (length && !read_exact(harness.input.data() + old, length))
                fail("input ended inside a D command");
            break;
        }
        case 'R': {
            uint64_t max_cycles = read_le<uint64_t>();
            uint32_t want = read_le<uint32_t>();
            uint32_t quiet = read_le<uint32_t>();
            uint32_t statuses = 0;
            char tag = harness.run(max_cycles, want, quiet, statuses);
            harness.reply(tag, statuses);
            break;
        }
        case 'C':
            harness.reply('C', 0);
            break;
        case 'X':
            harness.reset(read_le<uint32_t>());
            harness.reply('X', 0);
            break;
        case 'Q':
            harness.top->final();
            return 0;
        default:
            fail("unknown command byte");
        }
    }
    harness.top->final();
    return 0;
}
