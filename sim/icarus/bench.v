// Streams program.hex into puce_accelerator and checks its answer against expected.hex.
// PROGRAM_BYTES, EXPECTED_BYTES and SEED are given with -D. Inputs are offered with random
// gaps and outputs taken with random backpressure; the last line printed is PASS or FAIL.
`timescale 1ns/1ps
module bench;
  reg clk = 0, rst = 1;
  reg [7:0] program_bytes [0:`PROGRAM_BYTES-1];
  reg [7:0] expected [0:`EXPECTED_BYTES-1];
  integer seed = `SEED, sent = 0, received = 0, errors = 0, quiet = 0;
  reg i_valid = 0, o_ready = 0;
  reg [7:0] i_payload = 0;
  wire i_ready, o_valid;
  wire [7:0] o_payload;

  puce_accelerator dut (
    .clk(clk), .rst(rst),
    .i__valid(i_valid), .i__ready(i_ready), .i__payload(i_payload),
    .o__valid(o_valid), .o__ready(o_ready), .o__payload(o_payload));

  always #5 clk = ~clk;

  initial begin
    $readmemh("program.hex", program_bytes);
    $readmemh("expected.hex", expected);
    repeat (2) @(negedge clk);
    rst = 0;
  end

  // Drive on the falling edge; transfers happen on the rising edge.
  always @(negedge clk) if (!rst) begin
    if (!i_valid || i_ready) begin
      if (sent < `PROGRAM_BYTES && ($random(seed) & 3) != 0) begin
        i_valid = 1;
        i_payload = program_bytes[sent];
      end else
        i_valid = 0;
    end
    o_ready = ($random(seed) & 3) != 0;
  end

  always @(posedge clk) if (!rst) begin
    if (i_valid && i_ready) sent = sent + 1;
    if (o_valid && o_ready) begin
      if (received >= `EXPECTED_BYTES) begin
        $display("extra byte %02x after the expected answer", o_payload);
        errors = errors + 1;
      end else if (o_payload !== expected[received]) begin
        $display("byte %0d is %02x, expected %02x", received, o_payload, expected[received]);
        errors = errors + 1;
      end
      received = received + 1;
      quiet = 0;
    end else
      quiet = quiet + 1;
    if (received >= `EXPECTED_BYTES && sent == `PROGRAM_BYTES && quiet > 200) begin
      $display("%0d bytes in, %0d bytes out", sent, received);
      if (errors == 0) $display("PASS"); else $display("FAIL");
      $finish;
    end
    if (quiet > 100000) begin
      $display("no output for 100000 cycles: %0d of %0d bytes in, %0d of %0d out", sent,
               `PROGRAM_BYTES, received, `EXPECTED_BYTES);
      $display("FAIL");
      $finish;
    end
  end
endmodule
