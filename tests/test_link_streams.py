"""The staged DP's stream estimates against what residency streams and the links the simulator loads
(docs/simulator.md "Stream estimates that see the links"): whole ops stream, and a row's stages share the links from
its edge."""
from __future__ import annotations

import numpy as np

from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, mesh_of
from partitioner.model.partition import Partition
from partitioner.plan.stage_costs import _fan_in, shared_fan_in, stream_estimate, stream_parts
from partitioner.plan.staged_dp import must_stream, staged_plans
from partitioner.sim.simulator import simulate
from solver.residency import choose_streamed

MB = 1_000_000
MIB = 1 << 20


def gemm(name: str, weight_bytes: int, work: int = 4 * MB) -> Op:
    return Op(name, "MatMul", (name,), 2 * 4096 * 1000, 2 * 4096 * 1000, weight_bytes, work // 2, work // 2)


def test_a_piece_too_big_for_sram_streams_whole_and_the_rest_in_whole_ops():
    """A 105 MB piece (an 8B LM head split 5 ways, int8) never fits 64 MiB: it streams all 105 MB, not the 45 MB it
    exceeds the SRAM by. Three 56 MB pieces (MLP matrices) with 4 MB of activations on 64 MiB exceed it by
    172 - 67.1 = 104.9 MB, and residency streams whole ops, largest first: two, 112 MB."""
    head = [gemm("head", 105 * MB)]
    whole, forced = stream_parts(head, 64 * MIB)
    assert (whole.tolist(), forced.tolist()) == ([0], [105 * MB])
    assert stream_estimate(whole, forced, whole, np.array([4 * MB]), 64 * MIB).tolist() == [105 * MB]
    mlp = [gemm(f"m{i}", 56 * MB) for i in range(3)]
    whole, forced = stream_parts(mlp, 64 * MIB)
    assert forced.sum() == 0
    got = stream_estimate(np.array([whole.sum()]), np.array([0]), np.array([56 * MB]), np.array([4 * MB]), 64 * MIB)
    assert got.tolist() == [112 * MB]
    # residency agrees: on one chiplet it streams two of the three, and the head whole
    g = TensorGraph.build("g", mlp + head, [(0, 1, 1000), (1, 2, 1000), (2, 3, 1000)])
    hw = mesh_of(2, memory_tier=True)
    streamed = choose_streamed(g, hw, np.array([0, 0, 0, 1]))
    assert streamed.tolist() == [True, True, False, True]


def test_a_rows_stages_share_the_links_from_its_edge():
    """On the 8x8 default mesh, chiplets 28..31 of row 3 stream from the stack on chiplet 31 (the west edge), over
    31->30, 30->29, 29->28. A one-chiplet stage on 30 counts its own route only (fan-in 1), but the stages on 29 and
    28 cross 31->30 too: the shared fan-in is 3, as the simulator loads that link, three reads of b bytes each."""
    hw = mesh_of(64, memory_tier=True)
    assert _fan_in(hw, 30, 1) == (1, 1) and shared_fan_in(hw, 30, 1) == (3, 8)
    assert _fan_in(hw, 31, 1) == (0, 1) and shared_fan_in(hw, 31, 1)[0] == 0     # on the stack's chiplet
    assert _fan_in(hw, 28, 4) == shared_fan_in(hw, 28, 4)[:1] + (4,)             # a whole half-row sees it alone
    b = 80 * MIB                                                                 # over 64 MiB: each streams whole
    ops = [gemm(f"g{i}", b) for i in range(3)]
    g = TensorGraph.build("row", ops, [(0, 1, 1000), (1, 2, 1000)])
    a = np.array([30, 29, 28])
    part = Partition(a, streamed=choose_streamed(g, hw, a))
    assert part.streamed.all()
    rep = simulate(g, hw, part)
    link = "31->30"
    assert round(rep.link_utilisation[link] * rep.cycles_per_inference) == 3 * -(-b // hw.link_bytes_per_cycle)


def test_with_weights_beyond_the_package_the_relaxed_plans_compete_with_the_one_that_fits():
    """Four 5 MiB GEMMs on four 4 MiB chiplets: 20 MiB of weights, 16 MiB of SRAM, so some stream whatever the
    plan. The plan that fits SRAM keeps each GEMM whole (too big for any chiplet, it streams anyway and counts
    nothing, where its 2.5 MiB pieces would count); the relaxed plans split and stream; all are candidates."""
    ops = [gemm(f"g{i}", 5 * MIB, work=64 * 1024) for i in range(4)]
    g = TensorGraph.build("g", ops, [(i, i + 1, 4096) for i in range(3)])
    hw = mesh_of(4, Chiplet(sram_bytes=4 * MIB), memory_tier=True)
    assert must_stream(g, hw)
    plans = staged_plans(g, hw, 2)
    assert len(plans) >= 2 and (plans[0][1] == 1).all() and any((k > 1).any() for _, k in plans[1:])
    assert len({tuple(np.concatenate(p).tolist()) for p in plans}) == len(plans)
