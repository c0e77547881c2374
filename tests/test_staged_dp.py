"""The staged DP (partitioner/staged_dp.py): its vectorised recurrence against a plain loop, the candidate plans
of every cap, and best_staged's early stop against simulating every candidate."""
from __future__ import annotations

import numpy as np
import pytest

from partitioner.hardware import Chiplet, mesh_of
from partitioner.partition import Partition, check
from partitioner.simulator import simulate
from partitioner.staged_dp import _dp, _stage_fn, staged_candidates, staged_plans
from partitioner.synthetic import random_dag


def reference_dp(n: int, n_chip: int, max_shard: int, stage) -> tuple[np.ndarray, np.ndarray] | None:
    """The recurrence of staged_dp._dp as plain loops over the last stage's end j and first op i."""
    best = np.full((n_chip + 1, n + 1), np.inf)
    best[0, 0] = 0.0
    choice = np.zeros((n_chip + 1, n + 1, 2), dtype=np.int64)
    for c in range(1, n_chip + 1):
        for g in range(1, min(max_shard, c) + 1):
            st = stage(c - g, g)
            if st is None:
                continue
            for j in range(1, n + 1):
                for i in range(j):
                    v = max(best[c - g, i], st[i, j])
                    if v < best[c, j]:
                        best[c, j], choice[c, j] = v, (i, g)
        for j in range(n + 1):
            if best[c - 1, j] < best[c, j]:
                best[c, j], choice[c, j] = best[c - 1, j], (0, 0)
    if not np.isfinite(best[n_chip, n]):
        return None
    a, k = np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    c, j = n_chip, n
    while j > 0:
        i, g = (int(x) for x in choice[c, j])
        if g == 0:
            c -= 1
            continue
        a[i:j], k[i:j] = c - g, g
        c, j = c - g, i
    return a, k


def same(p, q) -> bool:
    return (p is None) == (q is None) and (p is None or all(np.array_equal(x, y) for x, y in zip(p, q)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("relaxed,serial", [(False, False), (True, False), (True, True)])
def test_the_vectorised_dp_equals_the_loop_on_random_graphs(seed, relaxed, serial):
    # small SRAMs and a memory tier: some stages overflow, so the stream estimates take part
    g = random_dag(12, seed=seed, scale=4.0)
    hw = mesh_of(6, Chiplet(sram_bytes=256 * 1024), memory_tier=True, link_bytes_per_cycle=8)
    stage = _stage_fn(g, hw, relaxed, serial, {})
    for cap in (1, 2, 4):
        assert same(_dp(g.n_ops, hw.n_chiplets, cap, stage), reference_dp(g.n_ops, hw.n_chiplets, cap, stage))


def test_the_vectorised_dp_equals_the_loop_on_random_stage_costs_with_ties():
    # small integer costs: many ties, so the first best start and group must match too
    rng = np.random.default_rng(0)
    n, n_chip = 7, 5
    mats = {(c, g): np.where(rng.random((n + 1, n + 1)) < 0.2, np.inf, rng.integers(0, 4, (n + 1, n + 1)))
            for c in range(n_chip) for g in range(1, 4)}

    def stage(c, g):
        if (c, g) == (1, 2):
            return None
        return np.where(np.triu(np.ones((n + 1, n + 1), dtype=bool), 1), mats[c, g], np.inf)

    for cap in (1, 2, 3):
        assert same(_dp(n, n_chip, cap, stage), reference_dp(n, n_chip, cap, stage))


def test_the_candidates_are_distinct_and_include_the_cap_1_plan():
    g, hw = random_dag(30, seed=1), mesh_of(9, link_bytes_per_cycle=8)
    plans = staged_candidates(g, hw, 4)
    assert len(plans) >= 1
    assert all(not same(p, q) for i, p in enumerate(plans) for q in plans[:i])
    assert same(plans[0], staged_plans(g, hw, 1)[0]) and (plans[0][1] == 1).all()
    for cap in (2, 3, 4):       # every cap's plan is among them
        assert any(same(staged_plans(g, hw, cap)[0], p) for p in plans)


@pytest.mark.parametrize("seed", range(3))
def test_best_staged_stops_early_with_the_best_of_all_candidates(seed):
    from partitioner.app.run import best_staged, throughput_ceiling

    g, hw = random_dag(30, seed=seed), mesh_of(9, link_bytes_per_cycle=8)
    every = []
    for a, k in staged_candidates(g, hw, 4):
        part = Partition(a, shard=k)
        if check(g, hw, part) == []:
            tp = simulate(g, hw, part).throughput_per_s
            assert tp <= throughput_ceiling(g, hw, a, k) * (1 + 1e-12)     # the ceiling bounds the simulator
            every.append(tp)
    stats: dict = {}
    ev = best_staged(g, hw, 4, stats=stats)
    assert ev.throughput == max(every)
    assert stats["candidates"] == len(every) and 1 <= stats["simulated"] <= len(every)
