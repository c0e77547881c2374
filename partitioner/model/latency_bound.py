"""A lower bound on one inference's latency under any plan the tool can output: the latency certificate.

The simulator's latency (docs/simulator.md R9) is the completion time of one inference alone in an empty package.
With `p_k(v)` the cycles of a k-way piece of op v on the fastest chiplet kind, at its cheapest axis
(cost.cheapest_piece_cycles; k = 1: the whole op), and K the largest group:

  work  sum_v min_{k <= K} k p_k(v) / n_chiplets: every op keeps its group's chiplets busy for at least its least
        chiplet-cycles, and n chiplets cannot do that work in less time than its average per chiplet;
  path  the heaviest path through the graph with each op at its fastest piece, min_{k <= K} p_k(v): every piece of
        an op starts after a piece of each of its producers has ended (it waits for their slices, partials or
        whole outputs), and no piece is faster than that op's fastest.

latency >= max(work, path): links, collectives, ring relays, stream reads and contention only add time.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.cost import cheapest_piece_cycles


@dataclass(frozen=True)
class LatencyBound:
    """The bound in cycles and its two terms; `max_shard` is the largest group it covers."""

    cycles: float
    work_cycles: float
    path_cycles: float
    max_shard: int


@functools.lru_cache(maxsize=16)
def latency_bound(graph: TensorGraph, hw: Hardware, max_shard: int) -> LatencyBound:
    """max(work, path) (module docstring) over plans whose ops split at most `max_shard` ways, at least 1 cycle.
    Memoised (graph by identity, hardware by value)."""
    max_shard = max(1, min(int(max_shard), hw.n_chiplets))
    if graph.n_ops == 0:
        return LatencyBound(1.0, 0.0, 0.0, max_shard)
    kinds = set(hw.chiplets)
    work = np.full(graph.n_ops, np.inf)
    fastest = np.full(graph.n_ops, np.inf)
    for k in range(1, max_shard + 1):
        cyc = np.min([cheapest_piece_cycles(graph, c, k) for c in kinds], axis=0).astype(float)
        work, fastest = np.minimum(work, k * cyc), np.minimum(fastest, cyc)
    w = float(work.sum()) / hw.n_chiplets
    p = longest_path(graph, fastest)
    return LatencyBound(max(w, p, 1.0), w, p, max_shard)


def longest_path(graph: TensorGraph, weight: np.ndarray) -> float:
    """The heaviest path through the graph with `weight` per op (op ids are a topological order)."""
    done = np.zeros(graph.n_ops)
    ready = np.zeros(graph.n_ops)
    order = np.argsort(graph.edge_src, kind="stable")
    src, dst = graph.edge_src[order].tolist(), graph.edge_dst[order].tolist()
    e = 0
    for v in range(graph.n_ops):
        done[v] = ready[v] + weight[v]
        while e < len(src) and src[e] == v:     # edges by producer: v's consumers wait for it
            ready[dst[e]] = max(ready[dst[e]], done[v])
            e += 1
    return float(done.max(initial=0.0))
