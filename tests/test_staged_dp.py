"""The staged DP (partitioner/plan/staged_dp.py): its vectorised recurrence against a plain loop, the candidate plans
of every cap, and best_staged's early stop against simulating every candidate."""
from __future__ import annotations

import numpy as np
import pytest

from partitioner.hw.hardware import Chiplet, mesh_of
from partitioner.model.partition import Partition, check
from partitioner.sim.simulator import simulate
from partitioner.plan.staged_dp import _band, _dp, _stage_fn, _width, staged_candidates, staged_plans
from partitioner.frontend.synthetic import random_dag


def reference_dp(n: int, n_chip: int, max_shard: int, stage) -> tuple[np.ndarray, np.ndarray] | None:
    """The recurrence of staged_dp._dp as plain loops over the last stage's end j, first op i and the size s of
    the stage before it: the entry ring's cost only after a stage of 1 or g chiplets (or none)."""
    best = np.full((n_chip + 1, max_shard + 1, n + 1), np.inf)
    best[0, 0, 0] = 0.0
    choice = {}
    for c in range(1, n_chip + 1):
        for g in range(1, min(max_shard, c) + 1):
            pair = stage(c - g, g)
            if pair is None:
                continue
            w = pair[0].shape[1]        # band[j, d]: ops j - w + d..j-1
            for j in range(1, n + 1):
                for i in range(j):
                    cost = [np.inf if i < j - w else m[j, i - j + w] for m in pair]
                    v, ring = max(min(best[c - g, s, i] for s in range(max_shard + 1)), cost[0]), False
                    if g > 1:
                        r = max(min(best[c - g, s, i] for s in (0, 1, g)), cost[1])
                        v, ring = (r, True) if r < v else (v, False)
                    if v < best[c, g, j]:
                        best[c, g, j], choice[c, g, j] = v, (i, ring)
        for s in range(max_shard + 1):
            for j in range(n + 1):
                if best[c - 1, s, j] < best[c, s, j]:
                    best[c, s, j], choice[c, s, j] = best[c - 1, s, j], None
    if not np.isfinite(best[n_chip, :, n].min()):
        return None
    a, k = np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    c, j = n_chip, n
    s = min(range(max_shard + 1), key=lambda s: (best[c, s, j], s))
    while j > 0:
        if choice[c, s, j] is None:
            c -= 1
            continue
        i, ring = choice[c, s, j]
        a[i:j], k[i:j] = c - s, s
        c, j = c - s, i
        s = min((0, 1, s) if ring else range(max_shard + 1), key=lambda x: (best[c, x, j], x))
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
    later = np.triu(np.ones((n + 1, n + 1), dtype=bool), 1)

    def draw():
        return np.where(later & (rng.random((n + 1, n + 1)) >= 0.2), rng.integers(0, 4, (n + 1, n + 1)), np.inf)

    pairs = {}
    for c in range(n_chip):
        for g in range(1, 4):
            copies = draw()
            ring = copies if g == 1 else np.where(np.isfinite(copies), np.minimum(copies, draw()), np.inf)
            pairs[c, g] = (_band(copies, _width(copies)), _band(ring, _width(copies)))

    def stage(c, g):
        return None if (c, g) == (1, 2) else pairs[c, g]

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
    from partitioner.app.candidates import best_staged
    from partitioner.sim.simulator import throughput_ceiling

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


# --- the entry rule: an entry ring only after a whole producer or a group of the same size ----------------------------
def test_a_stage_after_a_group_of_another_size_is_charged_k_copies():
    """A LayerNorm feeds a 4-way MatMul 32,768 B on a chain of 6 (64 B/cycle, 20-cycle hops). The MatMul's stage
    on 4 chiplets: k copies = 4 x 512 = 2,048 cycles of entry; an entry ring 512 + 20 + 1 + 3 x 129 + 5 x 20 = 1,020
    (collectives.entry_ring_cycles), the pieces' compute (128) below both. The simulator runs the ring after the
    LayerNorm whole (768 cycles per inference) and 4 copies after it split 2 ways (2,048: what the DP charges)."""
    from partitioner.core.graph import Op, TensorGraph
    from partitioner.hw.hardware import Hardware
    from partitioner.plan.staged_dp import group_stage_costs

    norm = Op("ln", "LayerNormalization", ("ln",), 5120, 0, 0, 1024, 32768)
    fc = Op("fc", "MatMul", ("fc",), 8192 * 1000, 8192 * 1000, 65536, 16384, 32768)
    g = TensorGraph.build("g", [norm, fc], [(0, 1, 32768)])
    hw = Hardware("chain-6", (Chiplet(),) * 6, "chain", 1, 6)
    copies, ring = group_stage_costs(g, hw, 2, 4)
    assert (copies[1, 2], ring[1, 2]) == (2048.0, 1020.0)
    after_whole = Partition(np.array([0, 1]), shard=np.array([1, 4]))
    after_two = Partition(np.array([0, 2]), shard=np.array([2, 4]))
    assert simulate(g, hw, after_whole).cycles_per_inference == 768.0
    assert simulate(g, hw, after_two).cycles_per_inference == 2048.0


def test_the_dp_takes_the_entry_ring_only_after_a_stage_of_1_or_g():
    """Two ops, five chiplets, groups up to 3 (hand-set costs). op 0 costs 50 whole, 10 on 2 or 3 chiplets; op 1
    costs 90 whole, 60 on 2, and on 3 100 with k copies or 20 with an entry ring. Taking the ring everywhere would
    give op 0 on 2 + op 1 on 3 at max(10, 20) = 20, but after a stage of 2 the simulator sends copies: 100. So the
    best is op 0 whole + op 1 on 3 with its ring: max(50, 20) = 50."""
    n, inf = 2, np.inf
    op0, op1 = {1: 50, 2: 10, 3: 10}, {1: (90, 90), 2: (60, 60), 3: (100, 20)}

    def stage(c, g):
        m = [np.full((n + 1, n + 1), inf) for _ in range(2)]
        for v in range(2):
            m[v][0, 1], m[v][1, 2], m[v][0, 2] = op0[g], op1[g][v], 1000
        return _band(m[0], 2), _band(m[1], 2)

    a, k = _dp(n, 5, 3, stage)
    assert k.tolist() == [1, 3] and a[1] == a[0] + 1        # (a chiplet before it may stay empty: a tie)
    assert same((a, k), reference_dp(n, 5, 3, stage))


# --- bands built per block (plan/stage_bands.py) against the full matrices (plan/stage_costs.py) ----------------------
@pytest.mark.parametrize("seed", range(3))
def test_the_bands_are_the_full_matrices_cost_for_cost(seed):
    from partitioner.model.cost import keep_column
    from partitioner.plan.stage_bands import piece_arrays, stage_bands
    from partitioner.plan.stage_costs import _excess_bytes, _stage_layout, _tables_for, group_stage_costs

    g = random_dag(25, seed=seed, scale=4.0)
    hw = mesh_of(9, Chiplet(sram_bytes=256 * 1024), memory_tier=True, link_bytes_per_cycle=8)
    n = g.n_ops
    for k in (1, 2, 3):
        lay = _stage_layout(g, max(k, 2), 0, keep_column(hw, None))
        for relaxed in (False, True):
            for latency in (False, True):
                tables = _tables_for(g, hw, 0, k, {})
                copies, ring = group_stage_costs(g, hw, 0, k, tables, relaxed, latency)
                for w in (1, _width(copies), n):
                    c, r, excess = stage_bands(g, hw, 0, piece_arrays(g, hw, 0, k, lay, relaxed), w, np.arange(n + 1),
                                               latency, relaxed)
                    assert np.array_equal(c, _band(copies, w)) and np.array_equal(r, _band(ring, w))
                    if relaxed:
                        assert np.array_equal(excess, _band(_excess_bytes(g, hw.chiplets[0], k, tables[2]), w, 0))


@pytest.mark.parametrize("seed", range(4))
def test_the_dp_with_blocks_gives_the_plan_without(seed, monkeypatch):
    """Rows copied from one block's (a repeated stack of 20 blocks) give the plans of rows all computed, for every cap
    and setting, the latency DP's too; and so does any first compute limit (the DP reruns until the limit holds)."""
    from partitioner.frontend.synthetic import repeated_dag
    from partitioner.plan import staged_dp

    g = repeated_dag(6, 20, seed=seed, scale=4.0)
    for hw in (mesh_of(12, Chiplet(sram_bytes=256 * 1024), memory_tier=True, link_bytes_per_cycle=8),
               mesh_of(10, link_bytes_per_cycle=8)):
        with_blocks = staged_candidates(g, hw, 4), staged_plans(g, hw, 4, latency=True)
        assert staged_dp._space(g, {})[0] is not None
        monkeypatch.setattr(staged_dp, "FIRST_LIMIT", 1e-3 if seed % 2 else 1e9)
        monkeypatch.setattr(staged_dp, "find_blocks", lambda graph: None)
        without = staged_candidates(g, hw, 4), staged_plans(g, hw, 4, latency=True)
        monkeypatch.undo()
        for ours, theirs in zip(with_blocks, without):
            assert len(ours) == len(theirs) and all(same(p, q) for p, q in zip(ours, theirs))


def test_above_2000_ops_the_dp_runs_at_block_cuts_and_splits_ops():
    """No op cap: 2,103 ops (70 blocks of 30) plan through best_staged, stages starting only at the blocks' cuts."""
    from partitioner.app import candidates
    from partitioner.frontend.blocks import block_cuts
    from partitioner.frontend.synthetic import repeated_dag
    from partitioner.plan.staged_dp import FINE_MAX_OPS, HEAVY_SHARE, _space

    assert not hasattr(candidates, "STAGED_MAX_OPS")
    g = repeated_dag(30, 70, seed=1, scale=8.0)
    assert g.n_ops > FINE_MAX_OPS
    hw = mesh_of(16, link_bytes_per_cycle=8)
    blocks, positions = _space(g, {})
    assert blocks is not None and len(positions) < g.n_ops
    cuts = set(block_cuts(g, blocks, HEAVY_SHARE))
    ev = candidates.best_staged(g, hw, 4)
    a, k = ev.partition.assignment, ev.partition.shard
    assert k is not None and (k > 1).any()
    starts = np.flatnonzero((np.diff(a) != 0) | (np.diff(k) != 0)) + 1
    assert all(blocks.block_of(int(s)) is None or (int(s) - blocks.start) % blocks.period in cuts for s in starts)


def test_positions_thin_evenly_keeping_both_ends():
    from partitioner.plan.staged_dp import _thin

    p = np.arange(0, 101)
    assert _thin(p, 200) is p
    t = _thin(p, 10)
    assert len(t) == 11 and t[0] == 0 and t[-1] == 100 and (np.diff(t) == 10).all()
