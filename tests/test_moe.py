"""Mixture-of-experts layers: import (both torch forms by both exporters, the com.microsoft MoE op), costs by routed
rows, --routing files, expert parallelism and the all-to-all, against hand-computed answers (docs/onnx_import.md
"Mixture of experts", docs/simulator.md "Expert parallelism")."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partitioner.core.errors import UserError
from partitioner.core.graph import Experts, Op, TensorGraph
from partitioner.frontend.load import load_onnx
from partitioner.hw.hardware import Chiplet, Hardware
from partitioner.model.collectives import all_to_all_bytes, all_to_all_cycles
from partitioner.model.cost import sharded_bound_cycles
from partitioner.model.experts import expert_piece, expert_pieces, owners
from partitioner.model.partition import Partition
from partitioner.model.sharding import expand, groups
from partitioner.sim.simulator import simulate

DATA = Path(__file__).resolve().parent / "data"
TINY = ["mixtral_tiny_sparse_legacy", "mixtral_tiny_sparse_dynamo", "mixtral_tiny_dense_legacy",
        "mixtral_tiny_dense_dynamo", "mixtral_tiny_contrib"]
# the tiny Mixtral: hidden 64, inter 128, 8 experts, top-2, 2 layers; one expert's SwiGLU per row is
# 2 x (64 x 128 + 64 x 128 + 128 x 64) = 49,152 matrix flops
ROW = 2 * 3 * 64 * 128


def _moe(g: TensorGraph) -> list[Op]:
    return [op for op in g.ops if op.experts is not None]


@pytest.mark.parametrize("name", TINY)
def test_every_form_counts_top_k_experts_per_token(name):
    for kw, tokens in (({"phase": "prefill"}, None), ({"phase": "decode", "context": 64}, 1)):
        g = load_onnx(DATA / f"{name}.onnx", precision="fp16", **kw)
        moe = _moe(g)
        assert len(moe) == 2 and all(op.op_type == "MoE" for op in moe)
        ex = moe[0].experts
        t = tokens or (16 if "dynamo" in name else 128)      # dynamo exports are fixed at sequence 16
        assert (ex.count, ex.top_k, ex.tokens, ex.token_bytes) == (8, 2, t, 128)
        assert ex.rows == (t * 2 / 8,) * 8 and ex.gemms == ((64, 128), (64, 128), (128, 64))
        # top-2 of 8 experts per token, not all 8: T x 2 x 49,152 per layer
        assert sum(op.matrix_flops for op in moe) == 2 * t * 2 * ROW
        assert ex.source is not None and ex.weight_bytes >= 3 * 64 * 128 * 2


def test_the_forms_agree_on_the_whole_model():
    legacy = [load_onnx(DATA / f"{n}.onnx", precision="fp16") for n in TINY if "dynamo" not in n]
    dynamo = [load_onnx(DATA / f"{n}.onnx", precision="fp16") for n in TINY if "dynamo" in n]
    assert len({int(g.matrix_flops.sum()) for g in legacy}) == 1
    assert len({int(g.matrix_flops.sum()) for g in dynamo}) == 1
    decode = {int(load_onnx(DATA / f"{n}.onnx", phase="decode", context=64).matrix_flops.sum()) for n in TINY}
    assert decode == {313_856}


def test_decode_rows_are_expected_counts_and_weights_read_by_chance():
    g = load_onnx(DATA / "mixtral_tiny_contrib.onnx", precision="fp16", phase="decode", context=64)
    op = _moe(g)[0]
    ex = op.experts
    # one token, top-2 of 8: each expert runs 0.25 rows on average; below one row no GEMM is tiled
    assert ex.rows == (0.25,) * 8 and op.gemms is None
    assert op.matrix_flops == 2 * ROW
    # each expert's weights are read with the chance the token picks it: 1 - (1 - 0.25)^1
    assert ex.hit(0) == pytest.approx(0.25)
    assert op.weight_read_bytes == round(8 * 0.25 * ex.weight_bytes)
    assert op.weight_bytes == 8 * 3 * 64 * 128 * 2


def test_a_routing_file_sets_each_experts_rows(tmp_path):
    f = tmp_path / "loads.json"
    loads = [0.25, 0.25, 0.125, 0.125, 0.0625, 0.0625, 0.0625, 0.0625]
    f.write_text(json.dumps(loads))
    g = load_onnx(DATA / "mixtral_tiny_sparse_legacy.onnx", precision="fp16", routing=f)
    ex = _moe(g)[0].experts
    assert ex.rows == tuple(128 * 2 * p for p in loads)     # 64, 64, 32, 32, 16, 16, 16, 16
    assert _moe(g)[0].matrix_flops == 128 * 2 * ROW          # the total does not depend on the loads
    assert g.metadata["routing"] == str(f)


@pytest.mark.parametrize("content, words", [
    (None, "does not exist"), ("{not json", "is not JSON"), ('{"a": 1}', "not a list"), ("[1]", "not a list"),
    ('[0.5, "x"]', "not a list"), ("[-0.5, 1.5]", "negative"), ("[0.5, 0.2]", "sum to 0.7"),
    ("[0.5, 0.5]", "gives 2 expert loads but the model's MoE layer has 8"),
    ("[0.6, 0.4, 0, 0, 0, 0, 0, 0]", "more than 1/k"),
])
def test_a_bad_routing_file_is_one_line(tmp_path, content, words):
    f = tmp_path / "r.json"
    if content is not None:
        f.write_text(content)
    with pytest.raises(UserError) as err:
        load_onnx(DATA / "mixtral_tiny_contrib.onnx", routing=f)
    assert words in str(err.value) and "\n" not in err.value.one_line()


def test_routing_for_a_model_without_experts_is_refused(tmp_path):
    f = tmp_path / "r.json"
    f.write_text("[0.5, 0.5]")
    with pytest.raises(UserError, match="no mixture-of-experts layer"):
        load_onnx(DATA / "tiny_mlp.onnx", routing=f)


# --- expert parallelism --------------------------------------------------------------------------------------------
CHIP = Chiplet()            # 64 x 64 output-stationary array, 512 vector ops/cycle, 1,024 SRAM B/cycle
LINKS = (64, 20)


def chain_hw(n: int) -> Hardware:
    return Hardware(f"chain-{n}", (CHIP,) * n, "chain", 1, n)


def moe_graph(rows=(32.0,) * 4) -> TensorGraph:
    """norm -> moe -> add, 64 tokens of 256 B (hidden 128 at fp16); 4 plain-FFN experts (128 -> 256 -> 128),
    top-2. The MoE op: 128 rows x 2 x (128 x 256 + 256 x 128) = 16,777,216 matrix flops."""
    ex = Experts(tuple(rows), 2, 64, ((128, 256), (256, 128)), 0, 2 * 128 * 256 * 2, 256, source="norm")
    mm = round(sum(rows) * ex.row_matrix_flops)
    gemms = tuple((1, int(r), k, n) for r in rows for k, n in ex.gemms)
    ops = [Op("norm", "LayerNormalization", ("norm",), 65536, 0, 0, 16384, 16384),
           Op("moe", "MoE", ("moe",), mm, mm, 4 * ex.weight_bytes, 16384, 16384, gemms=gemms, experts=ex),
           Op("add", "Add", ("add",), 8192, 0, 0, 16384, 16384)]
    return TensorGraph.build("moe", ops, [(0, 1, 16384), (1, 2, 16384)])


def test_all_to_all_formula_by_hand():
    # 32 rows routed to each member's expert, 256 B a row, every member holding 1/4 of the tokens: messages of
    # 32 x 256 / 4 = 2,048 B = 32 link cycles; the middle link of a chain of 4 carries 2 x 2 of them: 128 + 3 hops
    assert all_to_all_bytes(32, 256, 4) == 2048
    assert all_to_all_cycles(32, 256, 4, *LINKS) == 4 * 32 + 3 * 20 == 188
    assert all_to_all_cycles(64, 256, 2, *LINKS) == 128 + 20
    assert all_to_all_cycles(0, 256, 4, *LINKS) == 0 and all_to_all_cycles(32, 256, 1, *LINKS) == 0


def test_two_way_expert_parallelism_exact_cycles():
    g = moe_graph()
    part = Partition(np.zeros(3, dtype=np.int64), shard=np.array([2, 2, 2]))
    ex = expand(g, part.assignment, part.shard, links=LINKS)
    assert [op.name for op in ex.graph.ops] == ["norm#0", "norm#1", "moe#0", "moe#1", "add#0", "add#1"]
    # each expert piece holds 2 experts and runs their 64 rows: per expert (1, 32, 128, 256) = 4 folds x (128 +
    # 126) = 1,016 and (1, 32, 256, 128) = 2 folds x (256 + 126) = 764 cycles: 3,560 for two
    # dispatch: norm#i sends moe#j the rows of its 32 tokens routed to j: 64 x 256 / 2 = 8,192 B; combine the same
    sizes = {(int(s), int(d)): int(b) for s, d, b in zip(ex.graph.edge_src, ex.graph.edge_dst, ex.graph.edge_bytes)}
    assert sizes == {(0, 2): 8192, (0, 3): 8192, (1, 2): 8192, (1, 3): 8192,
                     (2, 4): 8192, (2, 5): 8192, (3, 4): 8192, (3, 5): 8192}
    r = simulate(g, chain_hw(2), part)
    # norm pieces [0, 64] (32,768 vector flops / 512); the 8,192 B dispatch crosses one link: 128 + 20, so the
    # experts run [212, 3,772]; the combine arrives 3,772 + 148 = 3,920 and the add's piece takes 16 (SRAM: its half
    # of the 16,384 B input, S11, and of the output, 16,384 B / 1,024 B per cycle):
    assert r.latency_cycles == 64 + 148 + 3560 + 148 + 16 == 3936
    busy = {k: round(v * r.cycles_per_inference) for k, v in r.link_utilisation.items()}
    assert busy == {"0->1": 256, "1->0": 256}                # one dispatch and one combine message each way
    assert r.chiplet_busy_cycles == (3640, 3640)                # 64 + 3,560 + 16


def test_four_way_expert_parallelism_loads_the_links_as_the_formula_says():
    g = moe_graph()
    part = Partition(np.zeros(3, dtype=np.int64), shard=np.array([4, 4, 4]))
    r = simulate(g, chain_hw(4), part)
    busy = {k: round(v * r.cycles_per_inference) for k, v in r.link_utilisation.items()}
    # 2,048 B messages (32 cycles); link m -> m+1 carries (m + 1)(3 - m) of each all-to-all: dispatch + combine
    assert busy["0->1"] == busy["2->3"] == 2 * 3 * 32 and busy["1->2"] == 2 * 4 * 32
    # each chiplet runs one expert: 1,016 + 764 cycles
    assert max(r.chiplet_busy_cycles) < 2000 and min(r.chiplet_busy_cycles) >= 1780
    report = groups(g, part.assignment, part.shard, links=LINKS)
    assert report[0]["axes"]["expert"] == 1 and report[0]["collectives"]["all-to-all"] == 1


def test_expert_pieces_follow_the_loads_and_bounds_stay_bounds():
    g = moe_graph(rows=(64.0, 32.0, 16.0, 16.0))
    op = g.ops[1]
    pieces = expert_pieces(op, 2)
    assert [p.gemms[0][1] for p in pieces] == [64, 16]       # experts 0-1 and 2-3: each its own rows
    assert pieces[0].matrix_flops == 96 * 2 * 2 * 128 * 256 and pieces[1].matrix_flops == 32 * 2 * 2 * 128 * 256
    # the planner's piece: the mean work, the largest weights
    mean = expert_piece(op, 2)
    assert mean.matrix_flops == (pieces[0].matrix_flops + pieces[1].matrix_flops) // 2
    assert mean.weight_bytes == pieces[0].weight_bytes and mean.gemms is None
    # more pieces than experts: each expert's width split across its pieces, its rows on each
    assert owners(4, 8) == tuple(((e,), 2) for e in range(4) for _ in range(2))
    wide = expert_pieces(op, 8)
    assert wide[0].gemms == ((1, 64, 128, 128), (1, 64, 128, 128)) and wide[0].weight_bytes == op.weight_bytes // 8
    # the bound never exceeds a simulated plan
    part = Partition(np.zeros(3, dtype=np.int64), shard=np.array([2, 2, 2]))
    r = simulate(g, chain_hw(2), part)
    assert r.cycles_per_inference >= sharded_bound_cycles(g, chain_hw(2), 2)


def test_the_staged_plan_splits_the_experts_and_the_simulator_runs_the_all_to_all():
    from partitioner.hw.hardware import mesh_of
    from partitioner.model.layout import simulated_experts
    from partitioner.plan.staged_dp import staged_partition
    g = load_onnx(DATA / "mixtral_tiny_contrib.onnx", precision="fp16")
    hw = mesh_of(4)
    a, k = staged_partition(g, hw, 4)
    moe = [i for i, op in enumerate(g.ops) if op.experts is not None]
    assert all(k[i] > 1 for i in moe)
    r = simulate(g, hw, Partition(a, shard=k))
    placed = simulated_experts(g, hw, a, k)
    assert [p["op"] for p in placed] == [g.ops[i].name for i in moe]
    for p in placed:
        assert sorted(e for per in p["experts_per_chiplet"] for e in per) == list(range(8))
        assert sum(p["rows_per_chiplet"]) == pytest.approx(128 * 2) and p["combine_bytes"] > 0
    assert r.throughput_per_s <= r.bound_throughput_per_s


def test_cli_inspect_shows_the_experts_and_refuses_a_bad_routing_file(tmp_path, capsys):
    from partitioner.app.cli import main
    assert main(["inspect", str(DATA / "mixtral_tiny_dense_legacy.onnx")]) == 0
    assert "experts        2 MoE layers of 8 experts, top-2: 128 tokens run 32 rows per expert (uniform routing)" \
        in capsys.readouterr().out
    bad = tmp_path / "r.json"
    bad.write_text("[0.5, 0.5]")
    assert main(["inspect", str(DATA / "mixtral_tiny_dense_legacy.onnx"), "--routing", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: the routing file gives 2 expert loads")


def test_the_staged_dps_bands_charge_the_all_to_alls_as_its_full_matrices_do():
    """The banded stage costs (the DP's path for large models) and the full matrices agree on a MoE model, the
    all-to-all terms included (a2a_cycles_band against a2a_cycles_table, which is not zero here)."""
    from partitioner.hw.hardware import mesh_of
    from partitioner.model.cost import keep_column, ring_links
    from partitioner.model.experts import a2a_cycles_band, a2a_cycles_table
    from partitioner.plan.stage_bands import piece_arrays, stage_bands
    from partitioner.plan.stage_costs import _stage_layout, _tables_for, group_stage_costs
    g = load_onnx(DATA / "mixtral_tiny_contrib.onnx", precision="fp16")
    assert g.has_experts
    hw = mesh_of(4, link_bytes_per_cycle=8)
    n = g.n_ops
    for k in (2, 4):
        lay = _stage_layout(g, k, 0, keep_column(hw, "fp16"))
        copies, ring = group_stage_costs(g, hw, 0, k, _tables_for(g, hw, 0, k, {}))
        c, r, _ = stage_bands(g, hw, 0, piece_arrays(g, hw, 0, k, lay, False), n, np.arange(n + 1))
        first = np.arange(n + 1)[:, None] - n + np.arange(n)[None, :]
        want_c = np.where(first >= 0, copies[np.maximum(first, 0), np.arange(n + 1)[:, None]], np.inf)
        want_r = np.where(first >= 0, ring[np.maximum(first, 0), np.arange(n + 1)[:, None]], np.inf)
        assert np.array_equal(c[1:], want_c[1:]) and np.array_equal(r[1:], want_r[1:])
        table = a2a_cycles_table(g, k, *ring_links(hw))
        assert table.max() > 0
        band = a2a_cycles_band(g, k, *ring_links(hw), np.arange(n), n)
        assert np.array_equal(band, [table[u, u + 1:u + 1 + n].tolist() + [table[u, -1]] * u for u in range(n)])
