// Behavioural model of the ECP5 MULT18X18D, for simulating puce's ULX3S netlists.
//
// Yosys ships only a black box for this primitive. This model follows Lattice's "ECP5 and
// ECP5-5G sysDSP Usage Guide" (FPGA-TN-02205) for the subset of the block that puce uses: an
// 18 x 18 multiplier, signed or unsigned per operand (SIGNEDA/SIGNEDB), with optional input
// registers on A and B, pipeline register and output register, each on a chosen CLKn/CEn/RSTn
// with a synchronous reset. Everything else (the C input, the shift cascades SRIA/SRIB/SROA/
// SROB, asynchronous reset) is rejected below, so a netlist that needs it fails loudly
// here instead of simulating something the hardware may not do; the RO* and SRO* outputs are
// left undriven. Registers start at 0, as after configuration (GSR). SIGNEDA/SIGNEDB are
// registered with their operand. The model has not been compared with hardware (there is no
// board here); puce's own use is checked against its RTL through it
// (tests/boards/test_dsp_mapping.py).

`timescale 1ns/1ps

module MULT18X18D(
    A0, A1, A2, A3, A4, A5, A6, A7, A8, A9, A10, A11, A12, A13, A14, A15, A16, A17, B0, B1, B2,
    B3, B4, B5, B6, B7, B8, B9, B10, B11, B12, B13, B14, B15, B16, B17, C0, C1, C2, C3, C4, C5,
    C6, C7, C8, C9, C10, C11, C12, C13, C14, C15, C16, C17, SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    CLK0, CLK1, CLK2, CLK3, CE0, CE1, CE2, CE3, RST0, RST1, RST2, RST3, SRIA0, SRIA1, SRIA2,
    SRIA3, SRIA4, SRIA5, SRIA6, SRIA7, SRIA8, SRIA9, SRIA10, SRIA11, SRIA12, SRIA13, SRIA14,
    SRIA15, SRIA16, SRIA17, SRIB0, SRIB1, SRIB2, SRIB3, SRIB4, SRIB5, SRIB6, SRIB7, SRIB8, SRIB9,
    SRIB10, SRIB11, SRIB12, SRIB13, SRIB14, SRIB15, SRIB16, SRIB17, SROA0, SROA1, SROA2, SROA3,
    SROA4, SROA5, SROA6, SROA7, SROA8, SROA9, SROA10, SROA11, SROA12, SROA13, SROA14, SROA15,
    SROA16, SROA17, SROB0, SROB1, SROB2, SROB3, SROB4, SROB5, SROB6, SROB7, SROB8, SROB9, SROB10,
    SROB11, SROB12, SROB13, SROB14, SROB15, SROB16, SROB17, ROA0, ROA1, ROA2, ROA3, ROA4, ROA5,
    ROA6, ROA7, ROA8, ROA9, ROA10, ROA11, ROA12, ROA13, ROA14, ROA15, ROA16, ROA17, ROB0, ROB1,
    ROB2, ROB3, ROB4, ROB5, ROB6, ROB7, ROB8, ROB9, ROB10, ROB11, ROB12, ROB13, ROB14, ROB15,
    ROB16, ROB17, ROC0, ROC1, ROC2, ROC3, ROC4, ROC5, ROC6, ROC7, ROC8, ROC9, ROC10, ROC11, ROC12,
    ROC13, ROC14, ROC15, ROC16, ROC17, P0, P1, P2, P3, P4, P5, P6, P7, P8, P9, P10, P11, P12, P13,
    P14, P15, P16, P17, P18, P19, P20, P21, P22, P23, P24, P25, P26, P27, P28, P29, P30, P31, P32,
    P33, P34, P35, SIGNEDP
);
    input A0;
    input A1;
    input A2;
    input A3;
    input A4;
    input A5;
    input A6;
    input A7;
    input A8;
    input A9;
    input A10;
    input A11;
    input A12;
    input A13;
    input A14;
    input A15;
    input A16;
    input A17;
    input B0;
    input B1;
    input B2;
    input B3;
    input B4;
    input B5;
    input B6;
    input B7;
    input B8;
    input B9;
    input B10;
    input B11;
    input B12;
    input B13;
    input B14;
    input B15;
    input B16;
    input B17;
    input C0;
    input C1;
    input C2;
    input C3;
    input C4;
    input C5;
    input C6;
    input C7;
    input C8;
    input C9;
    input C10;
    input C11;
    input C12;
    input C13;
    input C14;
    input C15;
    input C16;
    input C17;
    input SIGNEDA;
    input SIGNEDB;
    input SOURCEA;
    input SOURCEB;
    input CLK0;
    input CLK1;
    input CLK2;
    input CLK3;
    input CE0;
    input CE1;
    input CE2;
    input CE3;
    input RST0;
    input RST1;
    input RST2;
    input RST3;
    input SRIA0;
    input SRIA1;
    input SRIA2;
    input SRIA3;
    input SRIA4;
    input SRIA5;
    input SRIA6;
    input SRIA7;
    input SRIA8;
    input SRIA9;
    input SRIA10;
    input SRIA11;
    input SRIA12;
    input SRIA13;
    input SRIA14;
    input SRIA15;
    input SRIA16;
    input SRIA17;
    input SRIB0;
    input SRIB1;
    input SRIB2;
    input SRIB3;
    input SRIB4;
    input SRIB5;
    input SRIB6;
    input SRIB7;
    input SRIB8;
    input SRIB9;
    input SRIB10;
    input SRIB11;
    input SRIB12;
    input SRIB13;
    input SRIB14;
    input SRIB15;
    input SRIB16;
    input SRIB17;
    output SROA0;
    output SROA1;
    output SROA2;
    output SROA3;
    output SROA4;
    output SROA5;
    output SROA6;
    output SROA7;
    output SROA8;
    output SROA9;
    output SROA10;
    output SROA11;
    output SROA12;
    output SROA13;
    output SROA14;
    output SROA15;
    output SROA16;
    output SROA17;
    output SROB0;
    output SROB1;
    output SROB2;
    output SROB3;
    output SROB4;
    output SROB5;
    output SROB6;
    output SROB7;
    output SROB8;
    output SROB9;
    output SROB10;
    output SROB11;
    output SROB12;
    output SROB13;
    output SROB14;
    output SROB15;
    output SROB16;
    output SROB17;
    output ROA0;
    output ROA1;
    output ROA2;
    output ROA3;
    output ROA4;
    output ROA5;
    output ROA6;
    output ROA7;
    output ROA8;
    output ROA9;
    output ROA10;
    output ROA11;
    output ROA12;
    output ROA13;
    output ROA14;
    output ROA15;
    output ROA16;
    output ROA17;
    output ROB0;
    output ROB1;
    output ROB2;
    output ROB3;
    output ROB4;
    output ROB5;
    output ROB6;
    output ROB7;
    output ROB8;
    output ROB9;
    output ROB10;
    output ROB11;
    output ROB12;
    output ROB13;
    output ROB14;
    output ROB15;
    output ROB16;
    output ROB17;
    output ROC0;
    output ROC1;
    output ROC2;
    output ROC3;
    output ROC4;
    output ROC5;
    output ROC6;
    output ROC7;
    output ROC8;
    output ROC9;
    output ROC10;
    output ROC11;
    output ROC12;
    output ROC13;
    output ROC14;
    output ROC15;
    output ROC16;
    output ROC17;
    output P0;
    output P1;
    output P2;
    output P3;
    output P4;
    output P5;
    output P6;
    output P7;
    output P8;
    output P9;
    output P10;
    output P11;
    output P12;
    output P13;
    output P14;
    output P15;
    output P16;
    output P17;
    output P18;
    output P19;
    output P20;
    output P21;
    output P22;
    output P23;
    output P24;
    output P25;
    output P26;
    output P27;
    output P28;
    output P29;
    output P30;
    output P31;
    output P32;
    output P33;
    output P34;
    output P35;
    output SIGNEDP;

    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9,
                       A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9,
                       B8, B7, B6, B5, B4, B3, B2, B1, B0};
    wire [3:0] clk = {CLK3, CLK2, CLK1, CLK0};
    wire [3:0] ce = {CE3, CE2, CE1, CE0};
    wire [3:0] rst = {RST3, RST2, RST1, RST0};

    initial begin
        if (REG_INPUTC_CLK != "NONE" || HIGHSPEED_CLK != "NONE" || MULT_BYPASS != "DISABLED" ||
                RESETMODE != "SYNC" || CAS_MATCH_REG != "FALSE") begin
            $display("MULT18X18D model: unsupported configuration in %m");
            $finish;
        end
    end

    always @(posedge clk[0] or posedge clk[1] or posedge clk[2] or posedge clk[3])
        if (SOURCEA === 1'b1 || SOURCEB === 1'b1) begin
            $display("MULT18X18D model: SOURCEA/SOURCEB (shift cascade) unsupported in %m");
            $finish;
        end

    // Input registers (with their operand's sign control), the product (signed or unsigned
    // per operand: 36 bits hold every one), the pipeline and output registers.
    wire [18:0] a_reg, b_reg;
    wire [35:0] pipeline, result;
    MULT18X18D_register #(.WIDTH(19), .CLK(REG_INPUTA_CLK), .CE(REG_INPUTA_CE),
                          .RST(REG_INPUTA_RST))
        input_a (.clk(clk), .ce(ce), .rst(rst), .d({SIGNEDA, a}), .q(a_reg));
    MULT18X18D_register #(.WIDTH(19), .CLK(REG_INPUTB_CLK), .CE(REG_INPUTB_CE),
                          .RST(REG_INPUTB_RST))
        input_b (.clk(clk), .ce(ce), .rst(rst), .d({SIGNEDB, b}), .q(b_reg));

    wire signed [36:0] a_wide = {{19{a_reg[18] & a_reg[17]}}, a_reg[17:0]};
    wire signed [36:0] b_wide = {{19{b_reg[18] & b_reg[17]}}, b_reg[17:0]};
    wire signed [73:0] product = a_wide * b_wide;

    MULT18X18D_register #(.WIDTH(36), .CLK(REG_PIPELINE_CLK), .CE(REG_PIPELINE_CE),
                          .RST(REG_PIPELINE_RST))
        pipeline_reg (.clk(clk), .ce(ce), .rst(rst), .d(product[35:0]), .q(pipeline));
    MULT18X18D_register #(.WIDTH(36), .CLK(REG_OUTPUT_CLK), .CE(REG_OUTPUT_CE),
                          .RST(REG_OUTPUT_RST))
        output_reg (.clk(clk), .ce(ce), .rst(rst), .d(pipeline), .q(result));

    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
            P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2,
            P1, P0} = result;
    assign SIGNEDP = (a_reg[18] & a_reg[17]) ^ (b_reg[18] & b_reg[17]);
endmodule

// One of the block's optional registers: on the CLKn, CEn and RSTn its parameters name
// (synchronous reset), or a wire when CLK is "NONE".
module MULT18X18D_register #(parameter WIDTH = 1, parameter CLK = "NONE",
                             parameter CE = "CE0", parameter RST = "RST0") (
    input [3:0] clk, input [3:0] ce, input [3:0] rst,
    input [WIDTH-1:0] d, output [WIDTH-1:0] q
);
    // "CLK2" -> 2: the last character of the name.
    function integer select;
        input [8*8-1:0] name;
        begin
            select = name[7:0] - "0";
        end
    endfunction

    reg [WIDTH-1:0] r = 0;
    generate
        if (CLK != "NONE") begin : registered
            always @(posedge clk[select(CLK)])
                if (rst[select(RST)]) r <= 0;
                else if (ce[select(CE)]) r <= d;
            assign q = r;
        end else begin : bypassed
            assign q = d;
        end
    endgenerate
endmodule
