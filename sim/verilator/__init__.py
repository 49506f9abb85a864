"""The Verilator model of the accelerator: a C++ harness and its cached build."""
