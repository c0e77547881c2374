"""The roofline and transfer cost model, by hand."""
from __future__ import annotations

import numpy as np
import pytest

from partitioner.model.cost import (
    bound_cycles_per_inference, compute_cycles, compute_energy_pj, link_energy_pj, memory_cycles, op_cycles,
    op_cycles_matrix, serialization_cycles, transfer_cycles)
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of

CHIP = Chiplet(macs_per_cycle=100, vector_ops_per_cycle=10, sram_bytes_per_cycle=50)


def one_op(**kw) -> TensorGraph:
    return TensorGraph.build("one", [Op("x", "MatMul", ("x",), **kw)], [])


@pytest.mark.parametrize("op,cycles,why", [
    # 2 flops per MAC: 2000 matrix flops on 100 MACs/cycle is 10 cycles; no memory traffic
    (dict(flops=2000, matrix_flops=2000), 10, "compute bound (matrix)"),
    # 2001 matrix flops need a partial 11th cycle
    (dict(flops=2001, matrix_flops=2001), 11, "compute rounds up"),
    # 100 vector flops at 10/cycle: 10 cycles
    (dict(flops=100), 10, "vector"),
    # matrix and vector parts add: 2000/200 + 50/10
    (dict(flops=2050, matrix_flops=2000), 15, "matrix plus vector"),
    # 1000 weight + 200 in + 300 out bytes at 50 B/cycle = 30 cycles > 10 compute
    (dict(flops=2000, matrix_flops=2000, weight_bytes=1000, in_bytes=200, out_bytes=300), 30, "memory bound"),
    # at least one cycle even for nothing
    (dict(flops=0), 1, "minimum one cycle"),
])
def test_roofline(op, cycles, why):
    g = one_op(**op)
    assert int(op_cycles(g, CHIP)[0]) == cycles, why


def test_roofline_parts():
    g = one_op(flops=2050, matrix_flops=2000, weight_bytes=1000, in_bytes=200, out_bytes=301)
    assert int(compute_cycles(g, CHIP)[0]) == 15
    assert int(memory_cycles(g, CHIP)[0]) == 31          # 1501 bytes / 50 rounds up
    assert int(op_cycles(g, CHIP)[0]) == 31


def test_memory_counts_weights_read_not_weights_stored():
    # an embedding lookup stores a 100,000-byte table but reads 500 bytes of it: (500 + 100 + 400) / 50 = 20
    g = one_op(flops=0, weight_bytes=100_000, weight_read_bytes=500, in_bytes=100, out_bytes=400)
    assert int(memory_cycles(g, CHIP)[0]) == 20
    assert int(g.weight_bytes[0]) == 100_000                 # capacity still holds the whole table
    chip = Chiplet(sram_pj_per_byte=2.0)
    hw = Hardware("h", (chip,), "chain", 1, 1)
    assert compute_energy_pj(g, hw, np.array([0]))[1] == pytest.approx(2.0 * (500 + 100 + 400))


def test_weight_read_bytes_is_checked():
    with pytest.raises(ValueError, match="weight_read_bytes"):
        Op("x", "Gather", ("x",), 0, weight_bytes=10, weight_read_bytes=11)


def test_op_cycles_matrix_heterogeneous():
    fast = Chiplet(macs_per_cycle=200, vector_ops_per_cycle=10, sram_bytes_per_cycle=50)
    hw = Hardware("h", (CHIP, fast, CHIP), "chain", 1, 3)
    g = TensorGraph.build("two", [Op("a", "MatMul", ("a",), 4000, 4000), Op("b", "Add", ("b",), 100)], [(0, 1, 8)])
    m = op_cycles_matrix(g, hw)
    assert m.shape == (2, 3)
    assert m.tolist() == [[20, 10, 20], [10, 10, 10]]


def test_transfer_cycles():
    hw = mesh_of(4, link_bytes_per_cycle=64, hop_latency_cycles=20)
    assert transfer_cycles(0, 3, hw) == 0
    assert transfer_cycles(100, 0, hw) == 0
    assert transfer_cycles(64, 1, hw) == 20 + 1
    assert transfer_cycles(65, 1, hw) == 20 + 2
    assert transfer_cycles(6400, 2, hw) == 2 * 20 + 100
    assert serialization_cycles(np.array([0, 1, 64, 128, 129]), hw).tolist() == [0, 1, 1, 2, 3]


def test_energies():
    chip = Chiplet(mac_pj=0.5, vector_op_pj=0.2, sram_pj_per_byte=1.0)
    hw = Hardware("h", (chip, chip), "chain", 1, 2, link_pj_per_bit=1.5)
    ops = [Op("a", "MatMul", ("a",), 1000, 800, weight_bytes=100, in_bytes=10, out_bytes=20),
           Op("b", "Add", ("b",), 50, 0, in_bytes=20, out_bytes=5)]
    g = TensorGraph.build("e", ops, [(0, 1, 20)])
    compute, sram = compute_energy_pj(g, hw, np.array([0, 1]))
    assert compute == pytest.approx(800 / 2 * 0.5 + 200 * 0.2 + 50 * 0.2)
    assert sram == pytest.approx((100 + 10 + 20) + (20 + 5))
    assert link_energy_pj(20, 3, hw) == pytest.approx(20 * 8 * 3 * 1.5)
    # the energy of one inference does not depend on where the ops run on identical chiplets
    assert compute_energy_pj(g, hw, np.array([0, 0])) == (compute, sram)


def test_bound_cycles_per_inference():
    fast = Chiplet(macs_per_cycle=200, vector_ops_per_cycle=10, sram_bytes_per_cycle=50)
    hw = Hardware("h", (CHIP, fast), "chain", 1, 2)
    g = TensorGraph.build("two", [Op("a", "MatMul", ("a",), 4000, 4000), Op("b", "Add", ("b",), 100)], [(0, 1, 8)])
    assert bound_cycles_per_inference(g, hw) == max((10 + 10) / 2, 10)
    big = TensorGraph.build("big", [Op("a", "Add", ("a",), 1000), Op("b", "Add", ("b",), 10)], [(0, 1, 8)])
    assert bound_cycles_per_inference(big, hw) == 100      # the largest op dominates the balanced share
