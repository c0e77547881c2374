"""The compiled event loop (partitioner/sim/sim_loop.py) against the plain-Python one it replaces in searches: the
same completion time for every inference, on random plans with contention, stream reads, batches and zero-byte
edges, and assignments that break pipeline order."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import mesh_of
from partitioner.sim.traced_loop import run_traced
from partitioner.sim.simulator import _plan, _run, default_inferences
from partitioner.frontend.synthetic import random_dag


def _with_zero_edges(graph: TensorGraph, rng: np.random.Generator) -> TensorGraph:
    nbytes = np.where(rng.random(graph.n_edges) < 0.2, 0, graph.edge_bytes)
    edges = list(zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), nbytes.tolist()))
    return TensorGraph.build(graph.name, graph.ops, edges, graph.input_bytes)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 12), seed=st.integers(0, 10_000), ordered=st.booleans(),
       stream=st.booleans(), batch=st.sampled_from([1, 2, 3]), link=st.sampled_from([4, 16, 64]))
def test_compiled_loop_matches_the_python_loop(n, k, seed, ordered, stream, batch, link):
    rng = np.random.default_rng(seed)
    graph = _with_zero_edges(random_dag(n, seed), rng)
    hw = mesh_of(k, memory_tier=stream, link_bytes_per_cycle=link)
    a = rng.integers(0, k, n)
    if ordered:
        a = np.sort(a)
    streamed = (rng.random(n) < 0.5) & (graph.weight_bytes > 0) if stream else None
    if streamed is not None and not streamed.any():
        streamed = None
    plan = _plan(graph, hw, a, streamed, batch)
    n_inf = default_inferences(int(np.unique(a).size), batch)
    fast, _ = _run(plan, hw, n_inf, False, batch)
    slow, _ = run_traced(plan, hw, n_inf, False, batch)
    assert fast == slow


def test_the_comparison_covers_stream_reads_and_zero_byte_edges():
    """A fixed case that surely has both: every weighted op streams, batch 2, a fifth of the edges carry 0 bytes."""
    rng = np.random.default_rng(7)
    graph = _with_zero_edges(random_dag(50, 7), rng)
    hw = mesh_of(9, memory_tier=True, link_bytes_per_cycle=16)
    a = np.sort(rng.integers(0, 9, 50))
    plan = _plan(graph, hw, a, graph.weight_bytes > 0, 2)
    assert plan.first_stream < len(plan.msg_route)                     # stream reads
    assert any(s[0] == 0 for s in plan.msg_ser[:plan.first_stream])    # zero-byte messages
    n_inf = default_inferences(9, 2)
    assert _run(plan, hw, n_inf, False, 2)[0] == run_traced(plan, hw, n_inf, False, 2)[0]


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), chips=st.integers(3, 12), seed=st.integers(0, 10_000), k_max=st.integers(2, 6),
       link=st.sampled_from([4, 16, 64]), stream=st.booleans(), batch=st.sampled_from([1, 2]))
def test_compiled_loop_matches_on_sharded_plans_with_rings_and_round_lags(n, chips, seed, k_max, link, stream,
                                                                          batch):
    """Staged plans run as pieces (sharding.expand): ring relays on the collective-engine lanes and round lags
    (docs R4b, R4c), with stream reads of the pieces' weights."""
    from partitioner.model.cost import ring_links
    from partitioner.model.sharding import expand
    from partitioner.plan.staged_dp import staged_partition

    graph = random_dag(n, seed)
    hw = mesh_of(chips, memory_tier=stream, link_bytes_per_cycle=link)
    a, k = staged_partition(graph, hw, min(k_max, chips))
    ex = expand(graph, a, k, links=ring_links(hw))
    rng = np.random.default_rng(seed)
    streamed = (rng.random(ex.graph.n_ops) < 0.5) & (ex.graph.weight_bytes > 0) if stream else None
    plan = _plan(ex.graph, hw, ex.assignment, streamed, batch, ex.engine, ex.group)
    n_inf = default_inferences(chips, batch) + 4
    fast, _ = _run(plan, hw, n_inf, False, batch)
    slow, _ = run_traced(plan, hw, n_inf, False, batch)
    assert fast == slow


def test_the_sharded_comparison_covers_rings_and_lags():
    """A fixed case that surely has both: every op of a random graph split 6 ways on one group, slow links."""
    from partitioner.model.sharding import expand

    graph = random_dag(20, 3)
    hw = mesh_of(12, link_bytes_per_cycle=8)
    ex = expand(graph, np.zeros(20, dtype=np.int64), np.full(20, 6), links=(8, hw.hop_latency_cycles))
    plan = _plan(ex.graph, hw, ex.assignment, None, 1, ex.engine, ex.group)
    assert ex.engine.any() and plan.n_chiplets == 24 and any(any(lg) for lg in plan.seg_lag)
    assert _run(plan, hw, 12, False)[0] == run_traced(plan, hw, 12, False)[0]
