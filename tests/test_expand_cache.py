"""sharding.expand's memo: bounded by plan count and by the pieces and edges it holds in all."""
from __future__ import annotations

from partitioner.frontend.synthetic import random_dag
from partitioner.hw.hardware import mesh_of
from partitioner.model import sharding
from partitioner.plan.staged_dp import staged_candidates


def test_the_memo_keeps_plans_up_to_its_size_and_always_the_newest(monkeypatch):
    g = random_dag(20, seed=1)
    plans = staged_candidates(g, mesh_of(9), 4)[:3]
    monkeypatch.setattr(sharding, "_expanded", type(sharding._expanded)())
    sizes = [sharding._expand(g, a, k).graph for a, k in plans]
    sizes = [x.n_ops + x.n_edges for x in sizes]
    monkeypatch.setattr(sharding, "EXPAND_CACHE_SIZE", sizes[0] + sizes[1])
    first = [sharding.expand(g, a, k) for a, k in plans[:2]]
    assert len(sharding._expanded) == 2 and sharding.expand(g, *plans[0]) is first[0]     # a hit
    sharding.expand(g, *plans[2])       # over the size: the oldest (plan 1, plan 0 was just used) goes
    kept = [e for _, _, e in sharding._expanded.values()]
    both = sizes[0] + sizes[2] <= sizes[0] + sizes[1]
    assert [e is first[0] for e in kept[:-1]] == ([True] if both else [])      # plan 0 stays if it still fits
    assert kept[-1] is sharding.expand(g, *plans[2])
    monkeypatch.setattr(sharding, "EXPAND_CACHE_SIZE", 1)
    sharding.expand(g, *plans[1])       # over the size alone: kept, as the only one
    assert len(sharding._expanded) == 1
