"""Ring and direct collectives (partitioner/model/collectives.py) against hand-computed answers (docs/simulator.md, S6)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.model.collectives import algorithm, direct_cycles, ring_cycles
from partitioner.model.cost import collective_cycles, sharded_bound_cycles
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.model.partition import Partition, check
from partitioner.model.sharding import expand
from partitioner.sim.simulator import simulate
from partitioner.plan.staged_dp import staged_partition

CHIP = Chiplet()            # 512 vector ops/cycle, 1024 SRAM B/cycle; links 64 B/cycle, 20 cycles per hop
LINKS = (64, 20)


def chain_hw(n: int) -> Hardware:
    return Hardware(f"chain-{n}", (CHIP,) * n, "chain", 1, n)


def embedding() -> Op:
    # vocab split: each piece writes a full-size 4,096 B partial. A 4-way piece: SRAM 1,024 weight rows read +
    # 512 in + 4,096 out = 5,632 B = 6 cycles (compute 1,024 vector flops = 2).
    return Op("emb", "Gather", ("emb",), 4096, 0, 1 << 20, 512, 4096, weight_read_bytes=4096)


def norm() -> Op:
    # row split 4 ways: 1,280 vector flops = 3 cycles, SRAM 4,096 B in = 4 cycles -> 4 cycles per piece.
    return Op("norm", "LayerNormalization", ("norm",), 5120, 0, 0, 4096, 0)


def test_formulas_by_hand():
    # 4 KiB all-reduce on a chain of 4: chunks of 1,024 B = 16 link cycles. Ring: 6 steps x (16 + 1) plus
    # (4k - 6) = 10 hops x 20 = 302. Direct: floor(4/2) ceil(4/2) = 4 full partials x 64 cycles + 3 hops = 316.
    assert int(ring_cycles("all-reduce", 4096, 4, *LINKS)) == 302
    assert int(direct_cycles("all-reduce", 4096, 4, *LINKS)) == 316
    assert algorithm("all-reduce", 4096, 4, LINKS) == "ring"
    # all-gather of 32 KiB among 4: slices of 8,192 B = 128 cycles. Ring: 3 x 129 + (2k - 3) = 5 hops = 487;
    # direct: 4 x 128 + 60 = 572.
    assert int(ring_cycles("all-gather", 32768, 4, *LINKS)) == 487
    assert int(direct_cycles("all-gather", 32768, 4, *LINKS)) == 572
    # k = 3 all-gather: both carry 2 slices per link, the ring has more hops: direct (171 x 2 + 40 = 382 < 404).
    assert algorithm("all-gather", 32768, 3, LINKS) == "direct"
    # k = 2, or a tensor so small that hop latency dominates, or no links given: direct.
    assert algorithm("all-reduce", 1 << 20, 2, LINKS) == "direct"
    assert algorithm("all-reduce", 256, 4, LINKS) == "direct"      # ring 6 x 2 + 200 = 212 > direct 4 x 4 + 60
    assert algorithm("all-reduce", 4096, 4, None) == "direct"
    assert collective_cycles("all-reduce", np.array([4096, 256, 0]), 4, chain_hw(4)).tolist() == [302, 76, 0]


def test_four_way_ring_all_reduce_of_4_kib_exact_cycles():
    g = TensorGraph.build("e", [embedding(), norm()], [(0, 1, 4096)])
    part = Partition(np.array([0, 0]), shard=np.array([4, 4]))
    ex = expand(g, part.assignment, part.shard, links=LINKS)
    names = [op.name for op in ex.graph.ops]
    # 4 pieces, 3 reduce-scatter and 3 all-gather steps of 4 relays, then the norm's pieces
    assert names[:5] == ["emb#0", "emb#1", "emb#2", "emb#3", "emb@rs1#0"] and names[-5:-4] == ["emb@ag6#3"]
    assert len(names) == 4 + 6 * 4 + 4
    # every chunk is 1,024 B; a relay takes its own previous step and its ring predecessor's
    steps = [(s, d, b) for s, d, b in zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist(),
                                          ex.graph.edge_bytes.tolist()) if d < 28]
    assert {b for _, _, b in steps} == {1024} and len(steps) == 6 * 4 * 2
    assert (3, 4) in {(s, d) for s, d, _ in steps}                       # emb#3 -> rs1 on chiplet 0 (the wrap)
    r = simulate(g, chain_hw(4), part)
    # pieces end at 6; the ring takes 302 (formula above: chiplets 0 and 1 get the wrap message twice, 3 hops
    # each); the norm's pieces take 4: latency 6 + 302 + 4 = 312.
    assert r.latency_cycles == 312
    # each directed link carries one 16-cycle chunk per step, 6 steps: 96 cycles per inference on all six
    busy = {k: round(v * r.cycles_per_inference) for k, v in r.link_utilisation.items()}
    assert busy == dict.fromkeys(["0->1", "1->0", "1->2", "2->1", "2->3", "3->2"], 96)
    # the chiplets' work: piece 6 + norm piece 4; the 6 relays (1 cycle each) run on the collective engines (R4c)
    assert r.chiplet_busy_cycles == (10, 10, 10, 10)
    # R4b: the norm runs one round behind the pieces, so the rings of successive inferences overlap each other
    # and the pieces: the period drops below the in-order one and below the latency, never below the links' 96.
    in_order = simulate(g, chain_hw(4), part, overlap=False).cycles_per_inference
    assert 96 <= r.cycles_per_inference < in_order <= r.latency_cycles


def test_direct_is_kept_without_links_and_for_two_way_groups():
    g = TensorGraph.build("e", [embedding(), norm()], [(0, 1, 4096)])
    ex = expand(g, np.array([0, 0]), np.array([4, 4]))
    assert ex.graph.n_ops == 8 and ex.graph.n_edges == 16          # emb_i -> norm_j, full partials
    ex2 = expand(g, np.array([0, 0]), np.array([2, 2]), links=LINKS)
    assert ex2.graph.n_ops == 4


def test_ring_all_reduce_to_another_group_sends_reduced_chunks():
    # emb split 4 ways on 0..3, norm whole on chiplet 4: after the 3 reduce-scatter steps each member sends its
    # 1,024 B reduced chunk to chiplet 4 (the direct form would send four 4,096 B partials).
    g = TensorGraph.build("e", [embedding(), norm()], [(0, 1, 4096)])
    part = Partition(np.array([0, 4]), shard=np.array([4, 1]))
    ex = expand(g, part.assignment, part.shard, links=LINKS)
    assert [op.name for op in ex.graph.ops][-2:] == ["emb@rs3#3", "norm"] and ex.graph.n_ops == 4 + 12 + 1
    last = [(s, b) for s, d, b in zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist(),
                                      ex.graph.edge_bytes.tolist()) if d == ex.graph.n_ops - 1]
    assert sorted(last) == [(12, 1024), (13, 1024), (14, 1024), (15, 1024)]
    r = simulate(g, chain_hw(5), part)
    # link 3->4 carries the four chunks: 64 cycles per inference (direct: 4 x 64 = 256)
    assert round(r.link_utilisation["3->4"] * r.cycles_per_inference) == 64


def test_relays_wait_until_the_first_consumer_so_independent_work_runs_first():
    # emb (4-way) -> norm, and an independent op `other` between them in topological order on the same group:
    # the group's members run other's pieces before the ring's relays.
    other = Op("other", "Relu", ("other",), 4096 * 100, 0, 0, 0, 0)
    g = TensorGraph.build("e", [embedding(), other, norm()], [(0, 2, 4096)])
    ex = expand(g, np.array([0, 0, 0]), np.array([4, 4, 4]), links=LINKS)
    names = [op.name for op in ex.graph.ops]
    assert names.index("other#3") < names.index("emb@rs1#0") < names.index("norm#0")


@settings(max_examples=12, deadline=None)
@given(n=st.integers(6, 30), seed=st.integers(0, 1000), k_max=st.integers(3, 6), link=st.sampled_from([8, 64]))
def test_the_certificate_holds_for_staged_plans_with_ring_collectives(n, seed, k_max, link):
    from partitioner.frontend.synthetic import random_dag

    g = random_dag(n, seed=seed)
    hw = mesh_of(12, link_bytes_per_cycle=link)
    a, k = staged_partition(g, hw, k_max)
    part = Partition(a, shard=k)
    assert check(g, hw, part) == []
    r = simulate(g, hw, part)
    assert r.cycles_per_inference >= sharded_bound_cycles(g, hw, k_max) - 1e-9


def test_a_random_plan_uses_rings_and_keeps_the_certificate():
    """A fixed case that surely has rings: every op of a random graph split 6 ways on one group."""
    from partitioner.frontend.synthetic import random_dag

    g = random_dag(20, seed=3)
    hw = mesh_of(12, link_bytes_per_cycle=8)
    part = Partition(np.zeros(20, dtype=np.int64), shard=np.full(20, 6))
    ex = expand(g, part.assignment, part.shard, links=(8, hw.hop_latency_cycles))
    assert any(op.op_type == "RingStep" for op in ex.graph.ops)
    assert simulate(g, hw, part).cycles_per_inference >= sharded_bound_cycles(g, hw, 6)


@pytest.mark.parametrize("k", [3, 4, 5])
def test_ring_all_reduce_on_a_chain_matches_its_formula(k):
    """The simulated collective (pieces end together, nothing else on the links) takes exactly ring_cycles."""
    g = TensorGraph.build("e", [embedding(), norm()], [(0, 1, 65536)])
    part = Partition(np.array([0, 0]), shard=np.array([k, k]))
    r = simulate(g, chain_hw(k), part)
    piece_cycles = simulate(TensorGraph.build("p", [embedding()], []), chain_hw(k),
                            Partition(np.array([0]), shard=np.array([k]))).latency_cycles
    norm_piece = r.latency_cycles - piece_cycles - int(ring_cycles("all-reduce", 65536, k, *LINKS))
    assert algorithm("all-reduce", 65536, k, LINKS) == "ring"
    assert norm_piece == -(-4096 // 1024)            # the norm piece: 4 SRAM cycles, nothing else left over


def test_auto_max_shard_scales_with_the_package():
    from partitioner.plan.staged_dp import auto_max_shard, staged_degrees

    # min(16, max(4, chiplets // 8)), at most the chiplet count
    assert [auto_max_shard(n) for n in (2, 4, 16, 36, 64, 100, 144, 1024)] == [2, 4, 4, 4, 8, 12, 16, 16]
    # the staged DP runs at every cap up to max_shard (staged_dp.staged_candidates)
    assert staged_degrees(16) == list(range(1, 17)) and staged_degrees(3) == [1, 2, 3]
    assert staged_degrees(1) == [1] and staged_degrees(0) == []


def test_cli_takes_max_shard_auto(tmp_path):
    import json

    from partitioner.app.cli import main

    out = tmp_path / "run"
    assert main(["tests/data/tiny_mlp.onnx", "--chiplets", "4", "--method", "dp", "--max-shard", "auto",
                 "--no-certificate", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["max_shard"] == 4


def test_entry_ring_sends_a_whole_input_into_a_group_once():
    """A 32 KiB LayerNorm output on chiplet 0 feeds a GEMM split 4 ways on 1..4 (chain of 5), which needs it whole
    on every member (docs S7). Chunks of 8,192 B = 128 link cycles."""
    from partitioner.model.collectives import entry_direct_cycles, entry_ring_cycles

    ln = Op("ln", "LayerNormalization", ("ln",), 5120, 0, 0, 1024, 32768)
    fc = Op("fc", "MatMul", ("fc",), 8192 * 1000, 8192 * 1000, 65536, 32768, 32768)
    g = TensorGraph.build("g", [ln, fc], [(0, 1, 32768)])
    # direct: 4 copies x 512 + 20 = 2,068; ring: 512 + 20 + 1 + 3 x 129 + 5 x 20 = 1,020
    assert int(entry_direct_cycles(32768, 4, *LINKS)) == 2068 and int(entry_ring_cycles(32768, 4, *LINKS)) == 1020
    part = Partition(np.array([0, 1]), shard=np.array([1, 4]))
    ex = expand(g, part.assignment, part.shard, links=LINKS)
    assert [op.name for op in ex.graph.ops][1:6] == ["ln@in1#0", "ln@in1#1", "ln@in1#2", "ln@in1#3", "ln@ag2#0"]
    r = simulate(g, chain_hw(5), part)
    busy = {k: round(v * r.cycles_per_inference) for k, v in r.link_utilisation.items()}
    # 0->1 carries the 4 chunks once (512); 1->2 the 3 chunks bound for 2..4 plus 3 ring steps (768); 2->3 2 + 3;
    # 3->4 1 + 3; the reverse links the closing ring edge 4 -> 1, one chunk per step (384 each).
    assert busy == {"0->1": 512, "1->0": 0, "1->2": 768, "2->1": 384, "2->3": 640, "3->2": 384, "3->4": 512,
                    "4->3": 384}
    assert r.cycles_per_inference == 768 and r.bottleneck == "link 1->2"
    direct = expand(g, part.assignment, part.shard)
    assert direct.graph.n_ops == 5          # without links: ln -> fc#j, 4 copies of 32 KiB over link 0->1


def test_groups_summary_counts_ring_messages():
    from partitioner.model.sharding import groups

    g = TensorGraph.build("e", [embedding(), norm()], [(0, 1, 4096)])
    a, k = np.array([0, 0]), np.array([4, 4])
    # direct: each of 4 pieces sends its 4,096 B partial to 3 others; ring: 6 steps x 4 relays x 1,024 B
    assert groups(g, a, k)[0]["collective_bytes"] == 4 * 3 * 4096
    found = groups(g, a, k, links=LINKS)[0]
    assert found["collective_bytes"] == 6 * 4 * 1024 and found["rings"] == 1


def test_keep_column_when_the_column_piece_tiles_better():
    """S8 on the default 64 x 64 output-stationary array: FFN2 of BERT-large, 128 x 4096 x 1024, fed by FFN1's
    column slices on a group of 4. Row-parallel piece (K = 1024): 2 x 16 = 32 tiles x (1024 + 126) = 36,800
    cycles; column piece (N = 256): 2 x 4 = 8 tiles x (4096 + 126) = 33,776: the GEMM stays a column split."""
    from partitioner.model.cost import keep_column, op_cycles
    from partitioner.model.sharding import layout, piece

    def ffn(name: str, m: int, k: int, n: int) -> Op:
        return Op(name, "MatMul", (name,), 2 * m * k * n, 2 * m * k * n, 2 * k * n, 2 * m * k, 2 * m * n,
                  gemms=((1, m, k, n),))

    fc1, fc2 = ffn("fc1", 128, 1024, 4096), ffn("fc2", 128, 4096, 1024)
    hw = chain_hw(4)
    pieces = TensorGraph.build("p", [piece(fc2, 4, "row_parallel"), piece(fc2, 4, "column")], [])
    assert op_cycles(pieces, CHIP).tolist() == [36800, 33776]
    rule = keep_column(hw)
    assert rule(fc2, 4, 0) is True
    g = TensorGraph.build("mlp", [fc1, fc2], [(0, 1, 2 * 128 * 4096)])
    a, k = np.zeros(2, dtype=np.int64), np.full(2, 4)
    assert layout(g, a, k)[0] == ("column", "row_parallel")                 # Megatron
    axes, aligned = layout(g, a, k, rule)
    assert axes == ("column", "column") and not aligned.any()                # fc1's slices are all-gathered
    # with plain roofline costs (no GEMM dims) the two pieces tie: Megatron's row-parallel split stays
    assert rule(gemm_without_tiles := Op("f", "MatMul", ("f",), 8192000, 8192000, 65536, 16384, 32768), 4, 0) is False
    assert gemm_without_tiles.gemms is None
    # the simulator runs the column layout: fc2's pieces take fc1's slices over an all-gather ring (S6, k = 4)
    ex = expand(g, a, k, links=LINKS, keep_column=rule)
    assert any(op.name.startswith("fc1@ag") for op in ex.graph.ops)
