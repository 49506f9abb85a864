"""Drive a whole matrix product through the MXU in Amaranth's simulator.

The MXU multiplies one R x C weight tile at a time; this driver tiles a K x N right-hand matrix
into such tiles (zero-padding the edges), streams all M rows of the matching slice of the
left-hand matrix through each tile back to back, and adds the partial products on the host.
It stands in for the controller until the accelerator has one.
"""

import numpy as np

from firmware.compiler import check_operands
from rtl.mxu import MatrixUnit
from .stream import stream_get_n, stream_put_all
from .testbench import simulate

__all__ = ["mxu_matmul"]


def mxu_matmul(a, b, *, rows=8, cols=8):
    """Return ``(a @ b as int32, cycles)`` computed by a simulated ``rows`` x ``cols`` MXU.

    ``a`` (M x K) and ``b`` (K x N) are int8 or uint8 numpy arrays; ``cycles`` counts clock
    cycles from the first weight row to the last result row.
    """
    check_operands(a, b)
    m_, k_ = a.shape
    n_ = b.shape[1]
    a_signed = a.dtype == np.int8
    b_signed = b.dtype == np.int8
    k_tiles = -(-k_ // rows)
    n_tiles = -(-n_ // cols)
    a_pad = np.zeros((m_, k_tiles * rows), dtype=np.int64)
    a_pad[:, :k_] = a.view(np.uint8)
    b_pad = np.zeros((k_tiles * rows, n_tiles * cols), dtype=np.int64)
    b_pad[:k_, :n_] = b.view(np.uint8)

    dut = MatrixUnit(rows, cols)
    order = [(kt, nt) for nt in range(n_tiles) for kt in range(k_tiles)]
    weight_rows = [
        {"data": list(b_pad[kt * rows + r, nt * cols:(nt + 1) * cols]), "signed": b_signed}
        for kt, nt in order for r in range(rows)
    ]
    activation_rows = [
        {"data": list(a_pad[i, kt * rows:(kt + 1) * rows]), "signed": a_signed,
         "first": i == 0, "last": i == m_ - 1}
        for kt, nt in order for i in range(m_)
    ]
    result = np.zeros((m_, n_tiles * cols), dtype=np.int64)
    cycles = []

    async def put_weights(ctx):
        await stream_put_all(ctx, dut.w, weight_rows)

    async def put_activations(ctx):
        await stream_put_all(ctx, dut.x, activation_rows)

    async def get_results(ctx):
        rows_out = await stream_get_n(ctx, dut.o, len(activation_rows), cycles=cycles)
        for index, payload in enumerate(rows_out):
            kt, nt = order[index // m_]
            result[index % m_, nt * cols:(nt + 1) * cols] += [int(v) for v in payload.data]

    simulate(dut, [get_results], [put_weights, put_activations],
             deadline=1e-6 * (10 * len(activation_rows) + 1000))
    return result[:, :n_].astype(np.int32), cycles[-1] + 1
