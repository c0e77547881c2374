"""The stream bound (partitioner/model/stream_bound.py): hand-computed answers, and no simulated plan beats it."""
from __future__ import annotations

import itertools

import numpy as np

from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, mesh_of
from partitioner.model.partition import Partition, check
from partitioner.model.stream_bound import stream_bound_cycles
from partitioner.sim.simulator import simulate
from solver.residency import choose_streamed


def gemm(name: str, cycles: int, weight_bytes: int) -> Op:
    """A MatMul of `cycles` MAC-cycles on a 4096-MAC chiplet reading `weight_bytes` per inference."""
    return Op(name, "MatMul", (name,), 2 * 4096 * cycles, 2 * 4096 * cycles, weight_bytes, 1000, 1000)


def test_the_middle_chiplet_of_a_row_streams_over_one_link():
    """1x3 mesh, stacks on chiplets 0 and 2 (the edges), chiplet 1 streams over 0->1 (64 B/cycle), 100 kB SRAM.
    A: 1,000 MAC-cycles reading 100 kB (100 B per cycle); B: 3,000 reading 1.2 MB (400). The edge chiplets take
    B first, 2T of it (T <= 1,500), so chiplet 1 reads 1.3 MB - 400 x 2T, keeps 100 kB: 1.2 MB - 800 T <= 64 T,
    T >= 1,200,000 / 864 = 1,388.9 cycles, above the MAC bound of 4,000 / 3."""
    hw = mesh_of(3, Chiplet(sram_bytes=100_000), memory_tier=True)
    assert [len(hw.route(src, m)) for m, (_, src) in enumerate(hw.stack_feed)] == [0, 1, 0]
    g = TensorGraph.build("g", [gemm("a", 1000, 100_000), gemm("b", 3000, 1_200_000)], [(0, 1, 1000)])
    bound = stream_bound_cycles(g, hw)
    assert abs(bound - 1_200_000 / 864) < 1e-6
    # the simulator agrees: no plan of the two ops, whole or split across neighbours, runs faster
    plans = [(np.array(a), np.ones(2, dtype=np.int64)) for a in itertools.product(range(3), repeat=2)]
    plans += [(np.array([0, 0]), np.array([2, 2])), (np.array([1, 1]), np.array([2, 2])),
              (np.array([0, 0]), np.array([3, 3]))]
    simulated = 0
    for a, shard in plans:
        part = Partition(a, shard=shard, streamed=choose_streamed(g, hw, a, 1, shard))
        if check(g, hw, part):
            continue
        simulated += 1
        assert simulate(g, hw, part).cycles_per_inference >= bound
    assert simulated >= 6


def test_with_every_chiplet_on_a_stack_it_is_the_mac_bound():
    """2x2 mesh: the west and east stacks feed every chiplet directly, so nothing crosses a link: 4,000 / 4."""
    hw = mesh_of(4, Chiplet(sram_bytes=100_000), memory_tier=True)
    g = TensorGraph.build("g", [gemm("a", 1000, 100_000), gemm("b", 3000, 1_200_000)], [(0, 1, 1000)])
    assert stream_bound_cycles(g, hw) == 1000.0


def test_ops_without_macs_and_shared_tensors_add_nothing():
    """A Gather reading 1 MB without MACs can go to a stack's chiplet for free, and a tensor two ops share may be
    read once: neither counts. Left: B alone, 1.2 MB over 3,000 MAC-cycles, as in the first test without A:
    1.2 MB - 800 T - 100 kB <= 64 T, T >= 1,100,000 / 864."""
    hw = mesh_of(3, Chiplet(sram_bytes=100_000), memory_tier=True)
    gather = Op("emb", "Gather", ("emb",), 0, 0, 1_000_000, 1000, 1000)
    tied = Op("t", "MatMul", ("t",), 2 * 4096 * 10, 2 * 4096 * 10, 500_000, 1000, 1000,
              shared_weights=(("w", 500_000),))
    g = TensorGraph.build("g", [gather, gemm("b", 3000, 1_200_000), tied], [(0, 1, 1000), (1, 2, 1000)])
    assert abs(stream_bound_cycles(g, hw) - 1_100_000 / 864) < 1e-6
