"""Split-plan moves (policies/split_moves.py) and the local search over them (policies/split_search.py)."""
import numpy as np
import pytest
import torch

from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import mesh_of
from partitioner.model.partition import check
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate
from partitioner.plan.staged_dp import group_stage_cost_matrix
from partitioner.frontend.synthetic import random_dag
from policies import split_search as ss
from policies.move_policy import MoveNet
from policies.move_train import pretrain
from policies.moves import KIND_SLOTS, MOVE_DIM
from policies.split_moves import (SplitContext, Stage, enumerate_moves, plan_of, split_move_set, to_partition)
from policies.split_search import context_for, simulate_fn, split_search


def _chain():
    """A -> B -> C -> D: two weight MatMuls, an Add, a weight MatMul."""
    ops = [Op("A", "MatMul", ("a",), 4_000_000, 4_000_000, 8192, 1000, 1000),
           Op("B", "MatMul", ("b",), 2_000_000, 2_000_000, 8192, 1000, 3000),
           Op("C", "Add", ("c",), 50_000, 0, 0, 3000, 3000),
           Op("D", "MatMul", ("d",), 2_000_000, 2_000_000, 8192, 3000, 500)]
    return TensorGraph.build("chain4", ops, [(0, 1, 1000), (1, 2, 3000), (2, 3, 3000)], input_bytes=1000)


PLAN = (Stage(0, 2, 0, 2), Stage(2, 4, 2, 1))       # A, B split over chiplets 0-1; C, D on 2; chiplet 3 unused


def test_plan_round_trips_through_a_partition_and_rejects_out_of_order_runs():
    p = to_partition(PLAN, 4)
    assert p.assignment.tolist() == [0, 0, 2, 2] and p.shard.tolist() == [2, 2, 1, 1]
    assert plan_of(p.assignment, p.shard) == PLAN
    assert plan_of(np.array([0, 1, 0]), None) is None                 # chiplet 0 comes back after 1
    assert plan_of(np.array([0, 0, 1]), np.array([2, 2, 1])) is None   # the 2-way group 0-1 overlaps chiplet 1


def test_every_move_of_the_hand_worked_plan_and_only_those():
    g, hw = _chain(), mesh_of(4)
    got = {(mv.kind, mv.apply(PLAN)) for mv in enumerate_moves(SplitContext(g, hw), PLAN)}
    S = Stage
    assert got == {
        ("shift", (S(0, 1, 0, 2), S(1, 4, 2, 1))),                    # B joins C, D
        ("shift", (S(0, 3, 0, 2), S(3, 4, 2, 1))),                    # C joins A, B
        ("degree", (S(0, 2, 0, 1), S(2, 4, 1, 2))),                   # chiplet 1 goes to the second stage
        ("degree", (S(0, 2, 0, 1), S(2, 4, 2, 1))),                   # the first stage shrinks (1 left unused)
        ("degree", (S(0, 2, 0, 2), S(2, 4, 2, 2))),                   # the second grows onto unused chiplet 3
        ("split", (S(0, 4, 0, 3),)),                                  # merge: all four ops 3 ways
        ("split", (S(0, 1, 0, 1), S(1, 2, 1, 1), S(2, 4, 2, 1))),     # split 2 -> 1 + 1 (the only cut)
    }
    for _, plan in got:
        assert check(g, hw, to_partition(plan, 4)) == []


def test_moves_are_not_offered_past_max_shard_or_when_a_stage_does_not_fit_sram():
    g = _chain()
    kinds = {(mv.kind, mv.apply(PLAN)) for mv in enumerate_moves(SplitContext(g, mesh_of(4), max_shard=2), PLAN)}
    assert ("split", (Stage(0, 4, 0, 3),)) not in kinds               # 3 > max_shard
    assert ("degree", (Stage(0, 2, 0, 2), Stage(2, 4, 2, 2))) in kinds
    # SRAM for one MatMul's weights and working set but not two: no move may put A..C or B..D together whole.
    from partitioner.hw.hardware import Chiplet

    tight = mesh_of(4, Chiplet(sram_bytes=8192 + 7000))
    for mv in enumerate_moves(SplitContext(g, tight), PLAN):
        for s in mv.new:
            assert s.k > 1 or sum(g.ops[i].weight_bytes for i in range(s.first, s.end)) <= 8192


def test_features_match_the_cost_matrices_and_the_hand_counted_cut_bytes():
    g, hw = _chain(), mesh_of(4)
    ctx = SplitContext(g, hw)
    part = to_partition(PLAN, 4)
    ev = Evaluation(part, simulate(g, hw, part))
    ms = split_move_set(ctx, PLAN, ev)
    assert ms.features.shape == (7, MOVE_DIM)
    m2 = group_stage_cost_matrix(g, hw, 0, 2)
    m1 = group_stage_cost_matrix(g, hw, 2, 1)
    c = np.array([m2[0, 2], m1[2, 4]])
    top = c.max()
    col = {name: KIND_SLOTS + i for i, name in enumerate(
        ["sign", "ca", "cb", "busy_a", "busy_b", "bott_a", "bott_b", "own", "new_max", "new_top", "cut", "mem",
         "chips", "max_k", "log_c"])}
    for mv, f in zip(ms.moves, ms.features):
        assert f[:KIND_SLOTS].tolist() == [0.0] + [float(mv.kind == k) for k in ("shift", "degree", "split")]
        new_c = [ctx.cost(s) for s in mv.new]
        rest = [c[i] for i in range(2) if not mv.lo <= i < mv.hi]
        assert f[col["new_max"]] == pytest.approx(max(rest + new_c) / top - 1, rel=1e-5)
        assert f[col["chips"]] == pytest.approx((sum(s.k for s in mv.new) - sum(s.k for s in PLAN[mv.lo:mv.hi])) / 4)
    by_plan = {mv.apply(PLAN): f for mv, f in zip(ms.moves, ms.features)}
    # B joins C, D: the boundary moves from before C (A-B... cuts B->C, 3000 B) to before B (cuts A->B, 1000 B).
    f = by_plan[(Stage(0, 1, 0, 2), Stage(1, 4, 2, 1))]
    assert f[col["cut"]] * top * hw.link_bytes_per_cycle == pytest.approx(1000 - 3000, rel=1e-4)
    assert f[col["sign"]] == 1.0
    # Splitting A, B into two one-chiplet stages adds the A->B boundary (1000 B); merging removes B->C (3000 B).
    f = by_plan[(Stage(0, 1, 0, 1), Stage(1, 2, 1, 1), Stage(2, 4, 2, 1))]
    assert f[col["cut"]] * top * hw.link_bytes_per_cycle == pytest.approx(1000, rel=1e-4)
    f = by_plan[(Stage(0, 4, 0, 3),)]
    assert f[col["cut"]] * top * hw.link_bytes_per_cycle == pytest.approx(-3000, rel=1e-4)
    assert f[col["max_k"]] == pytest.approx(3 / 4)


@pytest.mark.parametrize("method", ["anneal", "random", "learned"])
def test_search_spends_exactly_its_budget_on_valid_plans_and_is_reproducible(method):
    g, hw = random_dag(40, 3), mesh_of(8)
    seen = []

    def evaluate_fn(part):
        seen.append(part)
        return Evaluation(part, simulate(g, hw, part))

    kw = {"net": MoveNet()} if method == "learned" else {}
    res = split_search(g, hw, method, budget=30, seed=5, evaluate_fn=evaluate_fn, **kw)
    assert res.evaluations == 30 and res.method == method
    assert all(check(g, hw, p) == [] for p in seen)
    assert len(seen) <= 30                                   # revisits come from the cache, still counted
    _, starts = context_for(g, hw)
    assert res.best.throughput >= max(simulate(g, hw, p).throughput_per_s for p in starts)
    torch.manual_seed(0)
    kw = {"net": MoveNet()} if method == "learned" else {}
    again = split_search(g, hw, method, budget=30, seed=5, **kw)
    assert again.history == res.history


def test_a_move_check_rejects_is_drawn_again_without_spending_an_evaluation(monkeypatch):
    g, hw = random_dag(40, 3), mesh_of(8)
    calls = {"check": 0}
    real = ss.check

    def picky(graph, hw_, part):
        calls["check"] += 1
        return ["rejected"] if calls["check"] % 2 else real(graph, hw_, part)

    _, starts = context_for(g, hw)
    monkeypatch.setattr(ss, "check", picky)
    seen = []
    res = split_search(g, hw, "anneal", budget=12, seed=1,
                       evaluate_fn=lambda p: seen.append(p) or Evaluation(p, simulate(g, hw, p)))
    assert res.evaluations == 12 and calls["check"] == 2 * (12 - len(starts))


def test_no_valid_staged_plan_returns_none():
    from partitioner.hw.hardware import Chiplet

    g = _chain()
    assert split_search(g, mesh_of(2, Chiplet(sram_bytes=4096)), "anneal", budget=8, seed=0) is None


def test_pretrain_in_the_split_space_updates_the_network(tmp_path):
    corpus = [("d1", random_dag(30, 1), mesh_of(6)), ("d2", random_dag(35, 2), mesh_of(8))]
    out = tmp_path / "split.pt"
    state = pretrain(corpus, simulate_fn, out, episodes=2, episode_evals=20, seed=0, space="split")
    assert state["episode"] == 2 and state["evals"] == 40
    net = ss.load_split_policy(out)
    assert any(p.abs().sum() > 0 for p in net.score[-1].parameters())   # moved off the uniform start


def test_run_hook_returns_a_valid_plan_no_worse_than_the_staged_dp_and_stops_on_the_budget():
    from partitioner.app.budget import RunBudget
    from partitioner.app.candidates import best_staged, split_refine

    g, hw = random_dag(40, 3), mesh_of(8)
    got = split_refine(g, hw, "exact", 24, 0, 4)           # a method without a split-space loop uses anneal
    assert got.partition.status == "split-anneal" and check(g, hw, got.partition) == []
    assert got.throughput >= best_staged(g, hw, 4).throughput
    assert split_refine(g, hw, "anneal", 0, 0, 4) is None
    spent = RunBudget(max_time_s=0.0)                        # out of time: the first evaluation only, kept
    assert check(g, hw, split_refine(g, hw, "anneal", 24, 0, 4, spent).partition) == []


def test_a_negative_split_budget_is_a_user_error():
    from partitioner.app.config import RunConfig, validate_config
    from partitioner.core.errors import UserError

    with pytest.raises(UserError, match="--split-budget"):
        validate_config(RunConfig(model="examples/resnet18.onnx", split_budget=-1))


def _too_big_for_sram():
    """Two 12 MiB and two 4 MiB weight MatMuls in a chain, on four 10 MiB chiplets with a memory tier."""
    from partitioner.hw.hardware import Chiplet

    mib = 1 << 20
    ops = [Op(n, "MatMul", (n,), 2 * 4096 * 10, 2 * 4096 * 10, w * mib, 0, 0)
           for n, w in (("a", 12), ("b", 12), ("c", 4), ("d", 4))]
    g = TensorGraph.build("big4", ops, [(0, 1, 0), (1, 2, 0), (2, 3, 0)])
    return g, mesh_of(4, Chiplet(sram_bytes=10 * mib), memory_tier=True)


def test_a_moved_plan_streams_the_weights_its_overflowing_chiplets_must():
    from policies.split_moves import with_residency

    g, hw = _too_big_for_sram()
    # a, b split 2 ways on chiplets 0-1: 6 + 6 MiB each, 2 MiB over; equal weights and read ratios, so the lower
    # op id (a) streams on both chiplets of its group; c, d (8 MiB) fit chiplet 2
    part = with_residency(g, hw, to_partition((Stage(0, 2, 0, 2), Stage(2, 4, 2, 1)), 4))
    assert part.streamed.tolist() == [True, False, False, False]
    assert check(g, hw, part) == [] and check(g, hw, to_partition((Stage(0, 2, 0, 2), Stage(2, 4, 2, 1)), 4)) != []
    assert with_residency(g, mesh_of(4), to_partition(PLAN, 4)).streamed is None     # no memory tier: unchanged


@pytest.mark.parametrize("method", ["anneal", "random", "learned"])
def test_search_on_a_model_that_must_stream_evaluates_only_valid_plans(method):
    from solver.residency import choose_streamed

    g, hw = _too_big_for_sram()
    _, starts = context_for(g, hw)
    assert starts and all(check(g, hw, p) == [] for p in starts)
    assert any(p.streamed is not None for p in starts)
    seen = []
    kw = {"net": MoveNet()} if method == "learned" else {}
    res = split_search(g, hw, method, budget=16, seed=3,
                       evaluate_fn=lambda p: seen.append(p) or Evaluation(p, simulate(g, hw, p)), **kw)
    assert res.evaluations == 16 and len(seen) > len(starts)
    for p in seen:
        assert check(g, hw, p) == []
        want = choose_streamed(g, hw, p.assignment, 1, p.shard)
        assert (p.streamed is None) == (want is None) and (want is None or (p.streamed == want).all())


def test_residency_moves_flip_one_op_and_only_valid_ones_are_evaluated():
    from policies.residency_moves import residency_move_set, residency_moves
    from policies.split_moves import with_residency

    g, hw = _too_big_for_sram()
    plan = (Stage(0, 2, 0, 2), Stage(2, 4, 2, 1))
    part = with_residency(g, hw, to_partition(plan, 4))              # a streams (test above)
    ctx = SplitContext(g, hw, relaxed=True)        # a, b's stage fits SRAM only with streaming
    moves = residency_moves(ctx, plan, part)
    assert [(m.op, m.lo, m.sign) for m in moves] == [(0, 0, -1), (1, 0, 1), (2, 1, 1), (3, 1, 1)]
    # keeping a resident again puts 12 MiB on chiplets 0 and 1 (10 MiB): check() rejects it
    assert moves[0].on(part).streamed is None and check(g, hw, moves[0].on(part)) != []
    assert moves[1].on(part).streamed.tolist() == [True, True, False, False]
    assert check(g, hw, moves[1].on(part)) == []
    assert residency_moves(ctx, PLAN, to_partition(PLAN, 4)) != [] and \
        residency_moves(SplitContext(_chain(), mesh_of(4)), PLAN, to_partition(PLAN, 4)) == []
    ev = Evaluation(part, simulate(g, hw, part))
    f = residency_move_set(ctx, plan, ev).features
    # kind slot 0; sign; the piece weight freed: +-(12 MiB / 2 pieces) / 10 MiB SRAM = +-0.6
    assert f[:, 0].tolist() == [1.0] * 4 and f[:, KIND_SLOTS].tolist() == [-1, 1, 1, 1]
    assert f[:2, KIND_SLOTS + 11].tolist() == pytest.approx([-0.6, 0.6])
    assert f[2:, KIND_SLOTS + 11].tolist() == pytest.approx([0.4, 0.4])   # c, d whole: 4 MiB / 10 MiB


@pytest.mark.parametrize("method", ["anneal", "random", "learned"])
def test_search_with_residency_moves_evaluates_only_valid_plans(method):
    g, hw = _too_big_for_sram()
    seen = []
    kw = {"net": MoveNet()} if method == "learned" else {}
    res = split_search(g, hw, method, budget=24, seed=2, residency=True,
                       evaluate_fn=lambda p: seen.append(p) or Evaluation(p, simulate(g, hw, p)), **kw)
    assert res.evaluations == 24
    assert all(check(g, hw, p) == [] for p in seen)
    assert any(p.status == "residency-move" for p in seen)
