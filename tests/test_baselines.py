"""Baselines: DP is optimal among contiguous splits (brute force), every method's output is valid."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from partitioner.model.cost import op_cycles, serialization_cycles
from partitioner.hw.hardware import Chiplet, mesh_of
from partitioner.model.partition import check, memory_use
from partitioner.app.pipeline import evaluate
from partitioner.frontend.synthetic import random_dag
from partitioner.plan.splits import dp_partition, greedy_partition, stage_cost_matrix
from policies.baselines import anneal, random_search


def _stage_costs(graph, hw, a):
    """Each chiplet's cycles plus the serialisation of what it ships, computed from scratch."""
    cyc = op_cycles(graph, hw.chiplets[0])
    out = []
    for c in range(hw.n_chiplets):
        ship = 0
        for s in np.flatnonzero(a == c):
            sent = [b for u, v, b in zip(graph.edge_src, graph.edge_dst, graph.edge_bytes) if u == s and a[v] != c]
            ship += int(serialization_cycles(max(sent), hw)) if sent else 0
        out.append(int(cyc[a == c].sum()) + ship)
    return out


def _contiguous_splits(n, k):
    for cuts in itertools.combinations_with_replacement(range(n + 1), k - 1):
        bounds = (0, *cuts, n)
        a = np.zeros(n, dtype=np.int64)
        for c in range(k):
            a[bounds[c]:bounds[c + 1]] = c
        yield a


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 9), k=st.integers(1, 4), seed=st.integers(0, 10_000), sram_kib=st.integers(200, 4000))
def test_dp_matches_brute_force(n, k, seed, sram_kib):
    graph = random_dag(n, seed)
    hw = mesh_of(k, Chiplet(sram_bytes=sram_kib * 1024, macs_per_cycle=64, vector_ops_per_cycle=16))
    feasible = [a for a in _contiguous_splits(n, k) if not check(graph, hw, a)]
    a = dp_partition(graph, hw)
    if not feasible:
        return  # dp falls back to greedy; nothing to compare
    assert check(graph, hw, a) == []
    best = min(max(_stage_costs(graph, hw, s)) for s in feasible)
    # Stages with ships to several later chiplets are charged once per producer in both computations.
    assert max(_stage_costs(graph, hw, a)) == best


def test_stage_cost_matrix_by_hand():
    from partitioner.core.graph import Op, TensorGraph
    ops = [Op(f"o{i}", "Add", (f"o{i}",), 100 * (i + 1), 0, 0, 64, 64) for i in range(3)]
    g = TensorGraph.build("chain", ops, [(0, 1, 640), (1, 2, 640)])
    hw = mesh_of(2, Chiplet(vector_ops_per_cycle=10, sram_bytes_per_cycle=1024), link_bytes_per_cycle=64)
    cost = stage_cost_matrix(g, hw, 0)
    # ops cost 10, 20, 30 cycles; a cut after op 0 ships 640 B at 64 B/cycle = 10 cycles.
    assert cost[0, 1] == 10 + 10
    assert cost[0, 2] == 30 + 10
    assert cost[0, 3] == 60
    assert cost[1, 1] == 0


def test_greedy_balances_a_uniform_chain():
    from partitioner.core.graph import Op, TensorGraph
    ops = [Op(f"o{i}", "Add", (f"o{i}",), 5120, 0, 0, 4, 4) for i in range(8)]
    g = TensorGraph.build("chain", ops, [(i, i + 1, 4) for i in range(7)])
    assert greedy_partition(g, mesh_of(4)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("seed", [0, 1])
def test_search_loops_spend_budget_and_stay_valid(seed):
    graph, hw = random_dag(40, seed), mesh_of(4)

    def fn(p):
        return evaluate(graph, hw, p, time_limit_s=5, seed=0)

    for result in (random_search(graph, hw, budget=6, seed=seed, evaluate_fn=fn),
                   anneal(graph, hw, budget=12, seed=seed, evaluate_fn=fn)):
        assert result.evaluations == len(result.history) <= 12
        assert check(graph, hw, result.best.assignment) == []
        best = [h[1] for h in result.history]
        assert best == sorted(best) and best[-1] == result.best.throughput


def test_anneal_never_worse_than_its_start_and_is_seeded():
    graph, hw = random_dag(60, 3), mesh_of(8)

    def fn(p):
        return evaluate(graph, hw, p, time_limit_s=5, seed=0)

    start = fn(greedy_partition(graph, hw)).throughput
    r1 = anneal(graph, hw, budget=30, seed=5, evaluate_fn=fn)
    r2 = anneal(graph, hw, budget=30, seed=5, evaluate_fn=fn)
    assert r1.best.throughput >= start
    assert np.array_equal(r1.best.assignment, r2.best.assignment)
    assert memory_use(graph, hw, r1.best.assignment).max() <= hw.chiplets[0].sram_bytes


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 30), k=st.integers(2, 6), seed=st.integers(0, 10_000), sram_kib=st.integers(300, 3000))
def test_valid_moves_are_exactly_the_valid_single_op_moves(n, k, seed, sram_kib):
    from policies.baselines import _valid_moves
    graph = random_dag(n, seed)
    hw = mesh_of(k, Chiplet(sram_bytes=sram_kib * 1024))
    a = dp_partition(graph, hw)
    if check(graph, hw, a):
        return
    allowed = np.ones((n, k), dtype=bool)
    ops, targets = _valid_moves(graph, hw, a, allowed)
    listed = set(zip(ops.tolist(), targets.tolist()))
    for op in range(n):
        for t in (a[op] - 1, a[op] + 1):
            if not 0 <= t < k:
                continue
            trial = a.copy()
            trial[op] = t
            assert ((op, t) in listed) == (check(graph, hw, trial) == []), (op, t)


def test_anneal_restarts_from_its_best_after_the_patience_runs_out():
    """Every move is worse than the start and is accepted anyway (huge temperature), so without restarts the walk
    drifts away; with restart_after=3 the 4th proposal after the start is again one move from the start."""
    from dataclasses import replace

    from partitioner.model.partition import Partition
    from partitioner.sim.report import Evaluation
    from partitioner.sim.simulator import simulate

    graph, hw = random_dag(40, 1), mesh_of(4)
    start = dp_partition(graph, hw)
    seen = []

    def fn(p):
        seen.append(np.asarray(p).copy())
        thr = 1000.0 if len(seen) == 1 else 1000.0 - len(seen)      # the start stays the best
        rep = simulate(graph, hw, p)
        return Evaluation(Partition(p), replace(rep, throughput_per_s=thr))

    anneal(graph, hw, budget=12, seed=0, evaluate_fn=fn, start=start, t_start=1e9, t_end=1e9, restart_after=3)
    moved = [int((s != start).sum()) for s in seen]
    assert moved[0] == 0 and moved[1] == 1
    # evaluations 1-3 do not improve, so evaluation 4 restarts from the start (one op away again); 4-6 do not
    # improve either, so evaluation 7 restarts too
    assert moved[4] == 1 and moved[7] == 1
    assert max(moved[2:4]) >= 2        # in between, the walk did drift (the restart is what brings it back)


def test_a_repair_timeout_spends_the_evaluation_and_the_search_goes_on():
    """Random search and annealing count a proposal whose repair timed out as a spent evaluation and keep going;
    only when every proposal times out does the search raise it (with its fix)."""
    from solver.repair import RepairTimeout

    graph, hw = random_dag(30, 2), mesh_of(4)
    calls = []

    def flaky(p):
        calls.append(1)
        if len(calls) % 2 == 0:
            raise RepairTimeout("the repair solver found no valid partition within its 5 s limit", "raise --time-limit")
        return evaluate(graph, hw, p, time_limit_s=5, seed=0)

    for search in (random_search, anneal):
        calls.clear()
        result = search(graph, hw, budget=10, seed=0, evaluate_fn=flaky)
        assert result.evaluations == 10 and len(calls) == 10
        assert not check(graph, hw, result.best.assignment)

    def always(p):
        raise RepairTimeout("the repair solver found no valid partition within its 5 s limit", "raise --time-limit")

    with pytest.raises(RepairTimeout, match="raise --time-limit"):
        random_search(graph, hw, budget=3, seed=0, evaluate_fn=always)
    with pytest.raises(RepairTimeout):
        anneal(graph, hw, budget=3, seed=0, evaluate_fn=always)
