"""CP-SAT over split plans (solver/staged_opt.py, split_model.py, split_repair.py): hand-computed optima, exactness
against enumeration, every output valid, simulated cycles never below the certificate."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from partitioner.model.cost import sharded_bound_cycles
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.model.partition import Partition, check
from partitioner.sim.simulator import simulate
from partitioner.plan.staged_dp import staged_partition
from partitioner.frontend.synthetic import random_dag
from solver import split_model
from solver.repair import repair
from solver.split_repair import split_repair
from solver.staged_opt import load_cycles, staged_optimize, windows

CHIP = Chiplet()            # 4096 MACs (8192 flops)/cycle


def chain_hw(n: int, chip: Chiplet = CHIP) -> Hardware:
    return Hardware(f"chain-{n}", (chip,) * n, "chain", 1, n)


def gemm(name: str) -> Op:
    # 1000 cycles of MACs whole, 500 per piece split 2 ways, 334 split 3 ways (compute-bound: 112 SRAM cycles).
    return Op(name, "MatMul", (name,), 8192 * 1000, 8192 * 1000, 65536, 16384, 32768)


def gemm_chain(n: int) -> TensorGraph:
    return TensorGraph.build("chain", [gemm(f"fc{i}") for i in range(n)], [(i, i + 1, 32768) for i in range(n - 1)])


def test_three_whole_gemms_on_two_chiplets_need_2000_cycles_where_the_analytical_bound_says_1500():
    g, hw = gemm_chain(3), chain_hw(2)
    assert sharded_bound_cycles(g, hw, 1) == 1500
    got = staged_optimize(g, hw, 1, time_limit_s=5)
    # two ops share a chiplet in every plan: 2000 cycles, proven
    assert (got.status, got.lower_bound_cycles, got.objective_cycles, got.gap) == ("optimal", 2000, 2000, 0.0)
    assert got.info["bound_source"] == "cp-sat" and check(g, hw, got) == []   # no hint: no windows


def test_two_gemms_split_two_ways_on_three_chiplets_need_1000_cycles():
    """Analytical: 2 x 1000 / 3 = 666.7. But a 2-way group covers two of the three chiplets, and pipeline order lets
    the second op's group meet the first's only on its last chiplet: {0,1} then {1,2} loads chiplet 1 with
    500 + 500, the same group {0,1} loads both with 1000, a whole op is 1000. So every plan has 1000 somewhere."""
    g, hw = gemm_chain(2), chain_hw(3)
    assert sharded_bound_cycles(g, hw, 2) == pytest.approx(2000 / 3)
    got = staged_optimize(g, hw, 2, time_limit_s=5)
    assert (got.status, got.lower_bound_cycles) == ("optimal", 1000)
    # split 3 ways, both ops share the group {0,1,2}: 334 + 334 = 668 per chiplet
    assert staged_optimize(g, hw, 3, time_limit_s=5).lower_bound_cycles == 668


def _brute_force(g: TensorGraph, hw: Hardware, max_shard: int) -> int:
    """The least busiest-chiplet load over every plan check() accepts (the model's optimum when memory is loose)."""
    tables = split_model.piece_tables(g, hw, max_shard, "bound")
    places = [(s, d) for d in range(1, max_shard + 1) for s in range(hw.n_chiplets - d + 1)]
    best = None
    for combo in itertools.product(places, repeat=g.n_ops):
        a = np.array([s for s, _ in combo])
        k = np.array([d for _, d in combo])
        if check(g, hw, a, shard=k):
            continue
        cost = int(load_cycles(tables, a, k, hw.n_chiplets).max())
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize("seed", range(3))
def test_the_model_optimum_equals_enumeration_over_every_valid_plan(seed):
    g = random_dag(4, seed=seed)
    hw = chain_hw(3, Chiplet(sram_bytes=1 << 40))
    got = staged_optimize(g, hw, 2, time_limit_s=5)
    assert got.status == "optimal"
    assert got.lower_bound_cycles == got.objective_cycles == _brute_force(g, hw, 2)


def test_windows_keep_the_hint_and_follow_ancestors():
    g, hw = gemm_chain(4), chain_hw(4)
    tables = split_model.piece_tables(g, hw, 2, "bound")
    end_min, start_max = windows(g, tables, 4, 1000)
    # at 1000 cycles per chiplet, op i's ancestors and itself need i + 1 chiplets: it ends on chiplet i or later
    assert end_min.tolist() == [0, 1, 2, 3] and start_max.tolist() == [0, 1, 2, 3]


def test_the_window_bound_proves_some_optima_without_a_solver():
    """Three whole 1,000-cycle GEMMs on two chiplets: at a cap X < 2,000 the middle op's ancestors need
    ceil(2,000 / X) = 2 chiplets up to its own and its descendants 2 from it, 3 chiplets in all: no room. Two GEMMs
    split up to 2 ways on three chiplets: the windows leave room from 667 cycles on, and only CP-SAT shows 1,000."""
    from solver.staged_opt import window_bound

    g, hw = gemm_chain(3), chain_hw(2)
    assert window_bound(g, split_model.piece_tables(g, hw, 1, "bound"), 2, 1500, 3000) == 2000
    got = staged_optimize(g, hw, 1, hints=[(np.array([0, 0, 1]), None)], time_limit_s=5)
    assert got.info["bound_source"] == "windows" and got.lower_bound_cycles == 2000
    g2, hw3 = gemm_chain(2), chain_hw(3)
    assert window_bound(g2, split_model.piece_tables(g2, hw3, 2, "bound"), 3, 667, 1000) == 667


def test_a_hint_bounds_the_model_and_its_plan_is_never_worse():
    g, hw = random_dag(20, seed=5), mesh_of(6)
    a, k = staged_partition(g, hw, 2)
    tables = split_model.piece_tables(g, hw, 2, "bound")
    hint_cost = int(load_cycles(tables, a, k, 6).max())
    got = staged_optimize(g, hw, 2, hints=[(a, k)], time_limit_s=0.3)
    assert got.info["hint_cycles"] == hint_cost and got.objective_cycles <= hint_cost
    assert got.lower_bound_cycles >= sharded_bound_cycles(g, hw, 2) and check(g, hw, got) == []


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 12), seed=st.integers(0, 10_000), chips=st.integers(2, 6), max_shard=st.integers(1, 3),
       scale=st.sampled_from([1.0, 30.0]))
def test_every_plan_passes_check_and_simulates_no_faster_than_its_certificate(n, seed, chips, max_shard, scale):
    g = random_dag(n, seed=seed, scale=scale)
    hw = mesh_of(chips, Chiplet(sram_bytes=1 << 20))
    max_shard = min(max_shard, chips)
    try:
        a, k = staged_partition(g, hw, max_shard)
    except UserError:
        return
    hints = [(a, k)] if not check(g, hw, a, shard=k) else []
    got = staged_optimize(g, hw, max_shard, hints=hints, time_limit_s=1)
    assert got.lower_bound_cycles >= sharded_bound_cycles(g, hw, max_shard) - 1e-9
    for plan in ([got] if got.info["plan_valid"] else []) + [Partition(a, shard=k) for a, k in hints]:
        assert check(g, hw, plan) == []
        assert simulate(g, hw, plan).cycles_per_inference >= got.lower_bound_cycles - 1e-9


# --- repair of split proposals ----------------------------------------------------------------------------------------
def test_a_valid_split_proposal_comes_back_unchanged():
    g, hw = gemm_chain(3), chain_hw(4)
    a, k = np.array([0, 0, 2]), np.array([2, 2, 2])
    got = repair(g, hw, a, shard=k)
    assert got.status == "unchanged" and got.shard.tolist() == [2, 2, 2] and got.ops_moved == 0


def test_a_backward_group_is_repaired_by_moving_one_op():
    g, hw = gemm_chain(3), chain_hw(4)
    a, k = np.array([0, 2, 1]), np.array([2, 2, 1])   # fc1 on 2..3 feeds fc2 on 1: backwards
    assert check(g, hw, a, shard=k)
    got = split_repair(g, hw, a, k)
    assert check(g, hw, got) == [] and got.ops_moved == 1 and got.status == "optimal"
    kept = (got.assignment == a) & (got.shard == k)
    assert kept.sum() == 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 12), seed=st.integers(0, 10_000), chips=st.integers(2, 6), scale=st.sampled_from([1.0, 30.0]))
def test_random_invalid_split_proposals_are_repaired_into_valid_plans(n, seed, chips, scale):
    g = random_dag(n, seed=seed, scale=scale)
    hw = mesh_of(chips, Chiplet(sram_bytes=1 << 20))
    rng = np.random.default_rng(seed)
    k = rng.integers(1, min(3, chips) + 1, size=n)
    a = np.array([rng.integers(0, chips - d + 1) for d in k])
    if check(g, hw, staged_partition(g, hw, 1)[0]):
        return          # memory so tight that not even the whole-op DP fits: a valid plan may not exist
    got = split_repair(g, hw, a, k, max_shard=3, time_limit_s=2)
    assert check(g, hw, got) == []
    assert got.ops_moved == int(((got.assignment != a) | ((got.shard if got.shard is not None else 1) != k)).sum())


def test_a_malformed_split_proposal_is_a_user_error():
    g, hw = gemm_chain(2), chain_hw(2)
    with pytest.raises(UserError, match="shard"):
        split_repair(g, hw, np.array([0, 1]), np.array([1.5, 1.0]))


# --- the run's certificate (partitioner/app/staged_cert.py) -------------------------------------------------------------
@pytest.mark.slow
def test_a_run_with_splits_reports_the_staged_solve_and_stays_below_its_certificate(tmp_path):
    import json

    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    out = tmp_path / "o"
    outcome = run(RunConfig(model="tests/data/tiny_mlp.onnx", chiplets=4, method="greedy", out=str(out)))
    m = json.loads((out / "partition.json").read_text())["metrics"]
    cert = outcome.certificate
    assert m["certificate_kind"] in ("staged", "analytical") and m["staged_solve"]["status"] in ("optimal", "feasible")
    # the certificate is the tighter of the two proven bounds, and the written plan is below it
    analytical, staged = cert.info["analytical_cycles"], cert.info["staged_bound_cycles"]
    assert staged >= analytical
    assert cert.lower_bound_cycles == (staged if m["certificate_kind"] == "staged" else analytical)
    assert m["throughput_per_s"] <= m["solver_bound_throughput_per_s"] * (1 + 1e-9)
    text = (out / "report.md").read_text()
    assert "## Optimality certificate" in text and "CP-SAT's model over split plans" in text


def test_the_staged_bound_replaces_the_analytical_one_when_tighter_and_its_plan_is_simulated():
    from partitioner.app.certify import sharded_certificate
    from partitioner.app.staged_cert import staged_certificate

    g, hw = gemm_chain(2), chain_hw(3)
    analytical = sharded_certificate(g, hw, 2)
    cert, plan = staged_certificate(g, hw, 2, analytical, [], time_limit_s=5)
    assert analytical.lower_bound_cycles == pytest.approx(2000 / 3)
    assert (cert.info["bound_kind"], cert.status, cert.lower_bound_cycles) == ("staged", "optimal", 1000)
    assert plan is not None and check(g, hw, plan.partition) == []
    assert plan.report.cycles_per_inference >= 1000


def test_with_a_memory_tier_the_bound_also_covers_plans_that_stream_weights():
    """Weights that do not fit stream from HBM; the bound model counts no weight (any may stream), so a whole-op plan
    with streamed weights is one of its solutions and simulates no faster than the certificate."""
    from partitioner.plan.splits import greedy_partition

    g = random_dag(12, seed=3, scale=60.0)     # 53.9 MB of weights on 4 x 8 MiB of SRAM: 4 ops stream
    hw = mesh_of(4, Chiplet(sram_bytes=8 << 20), memory_tier=True)
    streamed_plan = repair(g, hw, greedy_partition(g, hw), time_limit_s=2)
    assert streamed_plan.streamed is not None and check(g, hw, streamed_plan) == []
    got = staged_optimize(g, hw, 2, hints=[streamed_plan], time_limit_s=1)
    assert got.info["hint_cycles"] is not None   # the streamed plan was accepted as a hint
    assert simulate(g, hw, streamed_plan).cycles_per_inference >= got.lower_bound_cycles
    if got.info["plan_valid"]:
        assert check(g, hw, got) == []
