"""Plans for the latency objective: one inference at a time, each layer spread over many chiplets.

A throughput plan is a pipeline: an inference visits the stages one after another, so its latency is at least the
whole network at one stage's rate. With one inference in flight nothing else could use the other chiplets, so a
latency plan splits every op across as many chiplets as pay off (Simba's intra-layer parallelism):

  uniform     for a group size g, every op split g ways on chiplets 0..g-1: one group, so every layer runs on all
              g chiplets and its pieces hand their slices to the next op's pieces by the group's collectives
              (docs/simulator.md S3, S6). g runs over the powers of two up to the largest group and that group.
  latency DP  staged_dp's DP with each stage costing its one-inference time (its pieces' cycles + its collectives
              + shipping + entry, `group_stage_costs(latency=True)`) and the stages' times added, not maxed: it
              gives early ops a wide group and ops whose collectives cost more than their pieces save a narrower
              one further on (groups in pipeline order, as every plan the simulator runs).

The DP's link model is an estimate, so the simulator picks among the plans (app/candidates.best_latency), in order of
`latency_floor_cycles`, a lower bound on a plan's simulated latency that needs no simulation.
"""
from __future__ import annotations

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.cost import cheapest_piece_cycles, may_group
from partitioner.model.latency_bound import longest_path
from partitioner.model.sharding import shard_degrees
from partitioner.plan.staged_dp import staged_plans

Plan = tuple[np.ndarray, np.ndarray]

LATENCY_AUTO_MAX_SHARD = 36
"""The largest default group under --objective latency: the whole of a Simba-sized package. A k-way group's
collectives run as k(k - 1) ring relays per op, so simulating a plan grows with ops x k^2: BERT-base split 64 ways
takes 20 s and 1.3 GB for one inference (and ran slower than 32 ways); ResNet-50 split 36 ways 3 s."""


def latency_auto_max_shard(n_chiplets: int) -> int:
    """`--max-shard auto` under --objective latency: every chiplet, up to LATENCY_AUTO_MAX_SHARD."""
    return max(1, min(int(n_chiplets), LATENCY_AUTO_MAX_SHARD))


def uniform_sizes(max_group: int) -> list[int]:
    """The group sizes of the uniform plans: 1, 2, 4, ... below max_group, and max_group."""
    sizes, g = [], 1
    while g < max_group:
        sizes.append(g)
        g *= 2
    return sizes + [max(1, int(max_group))]


def uniform_plan(graph: TensorGraph, g: int, first: int = 0) -> Plan:
    """Every op split g ways on chiplets first..first+g-1 (g = 1: every op whole on chiplet `first`)."""
    return (np.full(graph.n_ops, first, dtype=np.int64), np.full(graph.n_ops, g, dtype=np.int64))


def latency_candidates(graph: TensorGraph, hw: Hardware, max_group: int) -> list[Plan]:
    """The uniform plans for every size of `uniform_sizes`, then the latency DP's plans (both stream estimates when
    weights must stream), distinct ones only; a uniform plan of a group of chiplets of more than one kind is left out
    (the DP keeps its groups to one kind)."""
    max_group = max(1, min(int(max_group), hw.n_chiplets))
    out: list[Plan] = []
    for g in uniform_sizes(max_group):
        if len({hw.chiplets[c] for c in range(g)}) == 1 and may_group(hw, 0, g):
            out.append(uniform_plan(graph, g))
    for plan in staged_plans(graph, hw, max_group, latency=True):
        if not any(all(np.array_equal(x, y) for x, y in zip(plan, q)) for q in out):
            out.append(plan)
    return out


def latency_floor_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray | None
                         ) -> float:
    """A lower bound on the simulated latency of the plan (cycles), without simulating it: the larger of the
    busiest chiplet's piece cycles (a chiplet runs one piece at a time) and the longest path of piece cycles (a
    piece starts after a piece of each of its producers ends), each piece at its cheapest axis on the fastest
    chiplet kind; links and collectives are free."""
    a = np.asarray(assignment, dtype=np.int64)
    k = shard_degrees(graph, shard)
    piece = np.zeros(graph.n_ops)
    for d in np.unique(k).tolist():
        fastest = np.min([cheapest_piece_cycles(graph, c, d) for c in set(hw.chiplets)], axis=0)
        piece[k == d] = fastest[k == d]
    busy = np.zeros(hw.n_chiplets + 1)
    np.add.at(busy, a, piece)                   # each op's pieces on its group a..a+k-1 (a difference array)
    np.subtract.at(busy, a + k, piece)
    return max(float(np.cumsum(busy)[:-1].max(initial=0.0)), longest_path(graph, piece))
