"""A throughput bound from the links that carry streamed weights: on a package whose memory stacks sit beside some
chiplets, every other chiplet receives what it streams over the first link of its stream route, and those links are
few. A bound for analysis (benchmarks/llm_blocks.py), not a cost the planner charges.

With T the cycles per inference, S the chiplets on a stack (empty stream route: `Hardware.stack_feed`), I the others
and L the links their stream routes start with (one link each, from a stack's chiplet), any plan at batch 1 has:

- each chiplet of S busy at least its pieces' MAC cycles, at most T: S runs at most |S| T MAC-cycles;
- every op's pieces together do its MACs (W_v MAC-cycles at the chiplet's rate) and read its weights (R_v bytes per
  inference, shared tensors left out), each of k pieces at least 1/k of both (model/sharding.piece; expert pieces
  of a mixture of experts are not covered: a dense model's bound); so if S runs a share f_v of op v, I reads at
  least sum_v (1 - f_v) R_v;
- a chiplet holds at most its SRAM of weights resident and streams the rest of what it reads: I streams at least
  sum_v (1 - f_v) R_v - |I| x SRAM;
- that crosses the links L, each carrying at most its bytes per cycle x T.

S takes the shares that spare I the most bytes, the ops of most bytes per MAC-cycle first (a fractional knapsack of
capacity |S| T), so the least T with

    reads_left(|S| T) - |I| x SRAM <= |L| x link bytes per cycle x T,   T >= sum_v W_v / n_chiplets

is a lower bound on every plan's cycles per inference (`stream_bound_cycles`, found by bisection: the left side falls
and the right side rises with T).
"""
from __future__ import annotations

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware


def _op_loads(graph: TensorGraph, hw: Hardware) -> tuple[np.ndarray, np.ndarray]:
    """(W, R) per op: MAC-cycles at the package's rate, and weight bytes read per inference (shared tensors, which
    two ops may read once, left out)."""
    rate = hw.chiplets[0].macs_for(graph.metadata.get("precision"))
    shared = np.array([sum(b for _, b in op.shared_weights) for op in graph.ops], dtype=np.int64)
    reads = np.minimum(graph.weight_read_bytes, np.maximum(graph.weight_bytes - shared, 0))
    return graph.matrix_flops.astype(float) / 2 / rate, reads.astype(float)


def _reads_left(work: np.ndarray, reads: np.ndarray, capacity: float) -> float:
    """The least bytes the ops' remaining shares read when `capacity` MAC-cycles of them go elsewhere, the ops of
    most bytes per MAC-cycle first (ops without MACs go free)."""
    free = work <= 0
    left = float(reads[~free].sum())
    w, r = work[~free], reads[~free]
    order = np.argsort(-(r / w), kind="stable")
    taken = np.concatenate([[0.0], np.cumsum(w[order])])
    gone = np.concatenate([[0.0], np.cumsum(r[order])])
    k = int(np.searchsorted(taken, capacity, side="right")) - 1     # ops wholly taken
    if k >= len(order):
        return 0.0
    return left - gone[k] - (capacity - taken[k]) * r[order[k]] / w[order[k]]


def stream_bound_cycles(graph: TensorGraph, hw: Hardware) -> float:
    """The least cycles per inference any plan at batch 1 can reach when the chiplets off the stacks stream over
    the first links of their stream routes (module docstring); the perfect-balance MAC term alone on a package
    without stacks or without such chiplets. Homogeneous packages only (a ValueError otherwise)."""
    if not hw.homogeneous:
        raise ValueError("stream_bound_cycles: homogeneous packages only")
    work, reads = _op_loads(graph, hw)
    n = hw.n_chiplets
    floor = float(work.sum()) / n
    routes = [hw.route(src, m) for m, (_, src) in enumerate(hw.stack_feed)]
    first = {r[0] for r in routes if r}
    if not first:
        return floor
    on_stack = sum(1 for r in routes if not r)
    sram = hw.chiplets[0].sram_bytes * (n - on_stack)
    carry = len(first) * hw.fastest_link_bytes_per_cycle

    def feasible(t: float) -> bool:
        return _reads_left(work, reads, on_stack * t) - sram <= carry * t

    lo, hi = floor, max(floor, 1.0)
    while not feasible(hi):
        hi *= 2
    if feasible(lo):
        return lo
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if feasible(mid) else (mid, hi)
    return hi
