"""Intra-op sharding (partitioner/model/sharding.py) against hand-computed answers (docs/simulator.md, S1-S5)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from partitioner.model.cost import all_gather_cycles, op_cycles, sharded_bound_cycles, sharded_op_cycles
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.model.partition import Partition, check, memory_use
from partitioner.model.sharding import check_groups, collective, expand, groups, layout, piece, split_axis
from partitioner.sim.simulator import simulate
from partitioner.plan.splits import dp_partition
from partitioner.plan.staged_dp import staged_partition

CHIP = Chiplet()            # 4096 MACs (8192 flops)/cycle, 512 vector ops/cycle, 1024 SRAM B/cycle
HOP = 20                    # default hop latency; links carry 64 B/cycle


def chain_hw(n: int) -> Hardware:
    return Hardware(f"chain-{n}", (CHIP,) * n, "chain", 1, n)


def gemm(name: str = "fc") -> Op:
    # 1000 cycles of MACs whole; SRAM traffic 65536 + 16384 + 32768 B = 112 cycles, so compute-bound.
    return Op(name, "MatMul", (name,), 8192 * 1000, 8192 * 1000, 65536, 16384, 32768)


def add(name: str = "add") -> Op:
    # 5120 vector flops = 10 cycles whole; 1024 B in = 1 SRAM cycle. A LayerNorm cannot take column slices, so a
    # split producer on its group all-gathers to it.
    return Op(name, "LayerNormalization", (name,), 5120, 0, 0, 1024, 0)


def gemm_then_add() -> TensorGraph:
    return TensorGraph.build("g", [gemm(), add()], [(0, 1, 32768)])


# --- S1, S2: axes and pieces ------------------------------------------------------------------------------------------
def test_each_op_type_splits_along_its_documented_axis():
    assert split_axis(gemm()) == "column"
    assert split_axis(Op("qk", "MatMul", ("qk",), 100, 100, 2, 10, 10)) == "head"   # shape constants only
    assert split_axis(Op("c", "Conv", ("c",), 100, 100, 512, 10, 10)) == "out_channel"
    assert split_axis(Op("e", "Gather", ("e",), 10, 0, 1 << 20, 10, 10, weight_read_bytes=4096)) == "vocab"
    assert split_axis(add()) == "row" and split_axis(Op("s", "Softmax", ("s",), 1, 0, 0, 1, 1)) == "row"
    assert collective(gemm(), 1) == "none" and collective(gemm(), 2) == "all-gather"
    assert collective(Op("e", "Gather", ("e",), 10, 0, 1 << 20, 10, 10), 4) == "all-reduce"


def test_a_piece_is_one_kth_of_work_split_weights_and_output_with_full_inputs():
    p = piece(gemm(), 2)
    assert (p.flops, p.matrix_flops, p.weight_bytes, p.in_bytes, p.out_bytes) == (4096000, 4096000, 32768, 16384,
                                                                                   16384)
    ln = piece(Op("ln", "LayerNormalization", ("ln",), 999, 0, 3072, 100, 101), 2)
    assert (ln.flops, ln.weight_bytes, ln.out_bytes) == (500, 3072, 51)        # row split: weights replicated
    emb = piece(Op("e", "Gather", ("e",), 10, 0, 1 << 20, 10, 4096, weight_read_bytes=4096), 4)
    assert (emb.weight_bytes, emb.weight_read_bytes, emb.out_bytes) == (1 << 18, 1024, 4096)   # full partials


def test_piece_cycles_of_a_two_way_column_split():
    g = gemm_then_add()
    assert op_cycles(g, CHIP).tolist() == [1000, 10]
    # piece: 4,096,000 flops / 8192 = 500 cycles; SRAM (32768 + 16384 + 16384) / 1024 = 64; the add: 2560/512 = 5.
    assert sharded_op_cycles(g, CHIP, 2).tolist() == [500, 5]


# --- S3: collectives as messages ---------------------------------------------------------------------------------
def test_two_way_all_gather_on_a_two_chiplet_chain_matches_the_hand_count():
    g, hw = gemm_then_add(), chain_hw(2)
    part = Partition(np.array([0, 0]), shard=np.array([2, 2]))
    ex = expand(g, part.assignment, part.shard)
    assert ex.assignment.tolist() == [0, 1, 0, 1]
    # fc#i -> add#j for all i, j with 16384 B (a half); i == j stays on its chiplet.
    assert sorted(zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist(), ex.graph.edge_bytes.tolist())) == [
        (0, 2, 16384), (0, 3, 16384), (1, 2, 16384), (1, 3, 16384)]
    r = simulate(g, hw, part)
    # piece 500; slice 16384 B = 256 link cycles + 1 hop of 20: arrives at 776; the add's piece 5: done at 781.
    assert r.latency_cycles == 500 + HOP + 256 + 5
    # R4b: the add waits on its own group's all-gather, so it runs one round later: in round r each chiplet runs
    # fc's piece of inference r, then the add of r - 1, whose slices arrived long before: period = busy = 505.
    assert r.cycles_per_inference == 505
    assert r.link_utilisation == pytest.approx({"0->1": 256 / 505, "1->0": 256 / 505})
    # Without the lags (plain (inference, op) order) each chiplet idles through the all-gather: period 781.
    assert simulate(g, hw, part, overlap=False).cycles_per_inference == 781
    assert r.energy_breakdown_j["link"] == pytest.approx(2 * 16384 * 8 * hw.link_pj_per_bit * 1e-12)
    assert r.chiplet_busy_cycles == (505, 505)
    assert all_gather_cycles(32768, 2, hw) == 256 + HOP


def test_three_way_all_gather_busiest_link_carries_two_slices():
    g, hw = gemm_then_add(), chain_hw(3)
    r = simulate(g, hw, Partition(np.array([0, 0]), shard=np.array([3, 3])))
    ser = -(-(-(-32768 // 3)) // 64)            # slice 10923 B -> 171 link cycles
    busy = {k: round(v * r.cycles_per_inference) for k, v in r.link_utilisation.items()}
    assert busy == {"0->1": 2 * ser, "1->2": 2 * ser, "1->0": 2 * ser, "2->1": 2 * ser}
    assert all_gather_cycles(32768, 3, hw) == 2 * ser + 2 * HOP


def test_column_split_feeding_a_gemm_makes_it_row_parallel_with_no_collective_between():
    fc2 = Op("fc2", "MatMul", ("fc2",), 8192 * 1000, 8192 * 1000, 65536, 32768, 32768)
    g = TensorGraph.build("mlp", [gemm("fc1"), fc2, add("norm")], [(0, 1, 32768), (1, 2, 32768)])
    part = Partition(np.array([0, 0, 2]), shard=np.array([2, 2, 1]))
    axes, aligned = layout(g, part.assignment, part.shard)
    assert axes == ("column", "row_parallel", "none") and aligned.tolist() == [True, False]
    p = piece(fc2, 2, "row_parallel")      # 1/k of the weight rows and of the input, full-size partial output
    assert (p.weight_bytes, p.in_bytes, p.out_bytes) == (32768, 16384, 32768)
    ex = expand(g, part.assignment, part.shard)
    assert sorted(zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist(), ex.graph.edge_bytes.tolist())) == [
        (0, 2, 16384), (1, 3, 16384), (2, 4, 32768), (3, 4, 32768)]
    r = simulate(g, chain_hw(3), part)
    # fc1 pieces [0, 500], fc2 pieces [500, 1000] with no wait. fc2#1 takes link 1->2 at 1000 for 512 cycles,
    # arriving 1000 + 20 + 512 = 1532; fc2#0 reaches link 1->2 at 1020, waits until 1512, arrives 2044; norm: 10.
    assert r.latency_cycles == 2054
    assert r.link_utilisation["1->0"] == 0 and r.bottleneck == "link 1->2"
    assert round(r.link_utilisation["1->2"] * r.cycles_per_inference) == 1024
    assert groups(g, part.assignment, part.shard)[0]["collectives"] == {"none": 1, "all-reduce": 1}


def test_vocab_split_all_reduces_full_partials():
    emb = Op("emb", "Gather", ("emb",), 4096, 0, 1 << 20, 512, 4096, weight_read_bytes=4096)
    g = TensorGraph.build("e", [emb, add()], [(0, 1, 4096)])
    part = Partition(np.array([0, 2]), shard=np.array([2, 1]))
    ex = expand(g, part.assignment, part.shard)
    assert ex.graph.edge_bytes.tolist() == [4096, 4096]     # each piece sends its full-size partial
    assert memory_use(g, chain_hw(3), part.assignment, shard=part.shard).tolist() == [(1 << 19) + 512 + 4096,
                                                                                  (1 << 19) + 512 + 4096, 1024]


def test_split_ops_feeding_a_whole_op_send_it_their_slices():
    g = gemm_then_add()
    r = simulate(g, chain_hw(3), Partition(np.array([0, 2]), shard=np.array([2, 1])))
    # fc#0 on 0 and fc#1 on 1 each send 16384 B to chiplet 2; link 1->2 carries both: 512 link cycles.
    assert round(r.link_utilisation["1->2"] * r.cycles_per_inference) == 512
    assert round(r.link_utilisation["0->1"] * r.cycles_per_inference) == 256


# --- S4: validity ------------------------------------------------------------------------------------------------
def test_memory_counts_one_kth_of_split_weights():
    g = gemm_then_add()
    used = memory_use(g, chain_hw(2), np.array([0, 0]), shard=np.array([2, 2]))
    # piece: 32768 B of weights; peak work max(16384 + 16384, 1024 + 0) = 32768.
    assert used.tolist() == [65536, 65536]


def test_groups_must_fit_the_package_and_keep_pipeline_order():
    g = gemm_then_add()
    assert check(g, chain_hw(2), np.array([1, 1]), shard=np.array([2, 1])) == [
        "op fc is split 2 ways from chiplet 1, past the package's last chiplet 1"]
    assert check(g, chain_hw(2), np.array([0, 0]), shard=np.array([0, 1]))[0].startswith("op fc has shard degree 0")
    # fc on 0..1 feeding add on 0: add's chiplet 0 receives from chiplet 1, backwards between groups.
    assert check(g, chain_hw(2), np.array([0, 0]), shard=np.array([2, 1])) == [
        "edge fc -> add goes backwards between groups (chiplets 0..1 -> 0)"]
    assert check(g, chain_hw(3), np.array([0, 1]), shard=np.array([2, 2])) == []     # groups may share an end
    assert check(g, chain_hw(2), np.array([0, 0]), shard=np.array([2, 2])) == []      # same group: all-gather
    assert check(g, chain_hw(3), np.array([0, 2]), shard=np.array([2, 1])) == []
    assert check(g, chain_hw(2), Partition(np.array([0, 0]), shard=np.array([2, 2]))) == []
    assert check_groups(g, 2, np.array([0, 1]), None) == []


def test_a_partition_with_all_whole_ops_has_no_shard():
    assert Partition(np.array([0, 1]), shard=np.array([1, 1])).shard is None
    assert Partition(np.array([0, 1]), shard=np.array([2, 1])).shard.tolist() == [2, 1]


def test_simulating_an_invalid_group_is_a_user_error():
    with pytest.raises(UserError, match="past the package"):
        simulate(gemm_then_add(), chain_hw(2), Partition(np.array([1, 1]), shard=np.array([2, 2])))


def test_groups_summary_counts_collective_bytes():
    g = gemm_then_add()
    found = groups(g, np.array([0, 0]), np.array([2, 2]))
    assert found == [{"chiplets": [0, 1], "shard": 2, "ops": 2, "axes": {"column": 1, "row": 1},
                      "collectives": {"all-gather": 1, "none": 1}, "collective_bytes": 2 * 16384}]


# --- S5: bound and the staged DP -----------------------------------------------------------------------------------
def test_sharded_bound_is_below_every_plan_and_reduces_to_the_whole_op_bound():
    g, hw = gemm_then_add(), chain_hw(2)
    # whole: max((1000 + 10) / 2, 1000) = 1000; split 2 ways: max((1000 + 10) / 2, 500) = 505.
    assert sharded_bound_cycles(g, hw, 1) == 1000
    assert sharded_bound_cycles(g, hw, 2) == 505
    r = simulate(g, hw, Partition(np.array([0, 0]), shard=np.array([2, 2])))
    assert r.cycles_per_inference >= 505 and r.bound_cycles_per_inference == 505


def test_staged_dp_without_sharding_is_the_dp_and_with_it_splits_the_big_gemm():
    ops = [gemm("a"), gemm("b"), gemm("c")]
    g = TensorGraph.build("three", ops, [(0, 1, 4096), (1, 2, 4096)])   # small: links stay cheap
    hw = mesh_of(4)
    a1, k1 = staged_partition(g, hw, 1)
    assert k1.tolist() == [1, 1, 1] and a1.tolist() == dp_partition(g, hw).tolist()
    a, k = staged_partition(g, mesh_of(6), 2)
    part = Partition(a, shard=k)
    assert check(g, mesh_of(6), part) == [] and k.tolist() == [2, 2, 2]
    assert simulate(g, mesh_of(6), part).cycles_per_inference < 1000       # below the whole op's 1000 cycles


# --- bad input through the CLI --------------------------------------------------------------------------------------
def test_cli_rejects_a_shard_degree_larger_than_the_package(tmp_path, capsys):
    from partitioner.app.cli import main

    assert main(["tests/data/tiny_mlp.onnx", "--chiplets", "2", "--max-shard", "3", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-shard 3 is larger than the package's 2 chiplets" in err[0]


@pytest.mark.parametrize("group,message", [([1, 3], "not consecutive"), ([2, 3, 4], "past the package")])
def test_simulate_rejects_bad_groups_in_a_partition_file(tmp_path, capsys, group, message):
    from partitioner.app.cli import main

    out = tmp_path / "run"
    assert main(["tests/data/tiny_mlp.onnx", "--chiplets", "4", "--method", "dp", "--out", str(out),
                 "--no-certificate"]) == 0
    capsys.readouterr()
    doc = json.loads((out / "partition.json").read_text())
    node = next(iter(doc["assignment"]))
    doc["assignment"][node] = {"chiplets": group, "axis": "column"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    before = (out / "partition.json").read_text()
    assert main(["simulate", "tests/data/tiny_mlp.onnx", "--partition", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert (out / "partition.json").read_text() == before


@pytest.mark.parametrize("seed", range(4))
def test_the_sharded_bound_holds_for_staged_plans_of_random_graphs(seed):
    from partitioner.frontend.synthetic import random_dag

    g = random_dag(40, seed=seed)
    hw = mesh_of(9)
    for k_max in (2, 3):
        a, k = staged_partition(g, hw, k_max)
        part = Partition(a, shard=k)
        assert check(g, hw, part) == []
        assert simulate(g, hw, part).cycles_per_inference >= sharded_bound_cycles(g, hw, k_max) - 1e-9


def test_staged_plans_avoid_chiplets_that_cannot_run_an_op():
    from partitioner.app.candidates import best_staged

    ops = [gemm("a"), gemm("b"), gemm("c")]
    g = TensorGraph.build("three", ops, [(0, 1, 4096), (1, 2, 4096)])
    no_matmul = Chiplet(kind="vector-only", unsupported_ops=("MatMul",))
    hw = Hardware("mixed", (CHIP, CHIP, CHIP, no_matmul, CHIP, CHIP), "chain", 1, 6)
    ev = best_staged(g, hw, 2)
    assert ev is not None and check(g, hw, ev.partition) == []
    assert 3 not in set(ev.partition.assignment.tolist())       # the DP never stages a MatMul on chiplet 3


def test_a_column_split_gemm_piece_is_costed_on_its_own_tiles():
    """2-way column split of a 128x768x768 GEMM on the default 64x64 output-stationary array (docs/simulator.md
    R2a): the whole GEMM is 2 x 12 tiles x (768 + 64 + 64 - 2) = 21,456 cycles; each piece (N = 384) is
    2 x 6 tiles x 894 = 10,728 cycles, not the whole GEMM again."""
    from partitioner.model.cost import compute_cycles
    from partitioner.core.graph import Op, TensorGraph
    from partitioner.hw.hardware import Chiplet
    from partitioner.model.sharding import piece, split_axis

    mf = 2 * 128 * 768 * 768
    op = Op("fc", "MatMul", ("fc",), flops=mf, matrix_flops=mf, weight_bytes=768 * 768 * 2, in_bytes=128 * 768 * 2,
            out_bytes=128 * 768 * 2, gemms=((1, 128, 768, 768),))
    assert split_axis(op) == "column"
    half = piece(op, 2)
    assert half.gemms == ((1, 128, 768, 384),)
    chip = Chiplet()
    whole_c = compute_cycles(TensorGraph.build("g", [op], []), chip)[0]
    half_c = compute_cycles(TensorGraph.build("g", [half], []), chip)[0]
    assert (whole_c, half_c) == (21_456, 10_728)
    # head split halves the batch of heads, row_parallel the reduction, row the rows
    attn = Op("qk", "MatMul", ("qk",), flops=2 * 12 * 128 * 64 * 128, matrix_flops=2 * 12 * 128 * 64 * 128,
              gemms=((12, 128, 64, 128),))
    assert piece(attn, 4, "head").gemms == ((3, 128, 64, 128),)
    assert piece(op, 2, "row_parallel").gemms == ((1, 128, 384, 768),)
    assert piece(op, 3, "row").gemms == ((1, 43, 768, 768),)


def test_a_decode_attention_piece_keeps_its_share_of_the_kv_cache():
    """In decode the KV cache is state inside weight_bytes (partitioner/frontend/decoder.py): a head split gives each piece
    its heads' share of both, so the piece stays a valid op (kv <= weights)."""
    from partitioner.core.graph import Op
    from partitioner.model.sharding import piece

    kv = 2 * 12 * 1025 * 64 * 2            # K and V, 12 heads, 1,025 tokens, head dim 64, fp16
    op = Op("qk", "MatMul", ("qk",), flops=2 * 12 * 64 * 1025, matrix_flops=2 * 12 * 64 * 1025, weight_bytes=kv,
            kv_cache_bytes=kv, gemms=((12, 1, 64, 1025),))
    half = piece(op, 2, "head")
    assert half.kv_cache_bytes == half.weight_bytes == kv // 2
    assert half.gemms == ((6, 1, 64, 1025),)
