"""Weight residency for a given assignment: which weights stay in SRAM and which stream from the memory tier.

Streaming costs stack bandwidth and NoC traffic every batch and buys SRAM; residency is free. So only chiplets
that overflow stream anything, and on each the ops that free the most SRAM per byte streamed go first:
ascending stream_bytes / weight_bytes (an embedding table that reads a few rows per inference before a weight
matrix read whole), ties to the larger weight (fewer reads), then the lower op id, until the chiplet's resident
weights plus its peak activations fit its SRAM. The CP-SAT optimiser (solver/optimize.py) chooses residency
exactly inside its model; repair uses this rule after moving ops.
"""
from __future__ import annotations

import numpy as np

from typing import Mapping

from partitioner.model.cost import stream_bytes
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import memory_use
from partitioner.model.sharding import expand
from solver.infeasibility import check_feasible


def streaming_needed(graph: TensorGraph, hw: Hardware, pinned: Mapping[int, int] | None = None) -> bool:
    """Whether the solvers open the memory tier at all: only when the package has one and the cheap SRAM-only
    checks (solver/infeasibility.check_feasible) already prove no all-resident partition exists. Otherwise repair
    and optimize first solve as on an SRAM-only package (a model that fits keeps every weight on chip, with the
    same partitions and certificates as without a tier) and open the tier only if that proves infeasible."""
    if not hw.memory_stacks:
        return False
    try:
        check_feasible(graph, hw.without_memory_tier(), pinned)
    except UserError:
        return True
    return False


def choose_streamed(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, batch: int = 1,
                    shard: np.ndarray | None = None) -> np.ndarray | None:
    """bool per op (True = stream) making every chiplet fit its SRAM where streaming can; None when nothing needs
    to stream or the hardware has no memory tier. A chiplet whose activations alone overflow stays over.
    With `shard`, a split op streams all its pieces: streaming it frees its piece's weights on every chiplet of its
    group, and an overflowing chiplet picks among the ops with a piece on it by the same rule."""
    if not hw.memory_stacks or graph.n_ops == 0:
        return None
    a = np.asarray(assignment, dtype=np.int64)
    if shard is not None and (np.asarray(shard) != 1).any():
        ex = expand(graph, a, shard)
        owner, place, held = ex.owner, ex.assignment, ex.graph.weight_bytes
    else:
        owner, place, held = np.arange(graph.n_ops), a, graph.weight_bytes
    cap = np.array([c.sram_bytes for c in hw.chiplets], dtype=np.int64)
    w = graph.weight_bytes
    ratio = stream_bytes(graph, batch) / np.maximum(w, 1)
    streamed = np.zeros(graph.n_ops, dtype=bool)
    while True:     # twice at most in practice: a tensor shared on a chiplet frees nothing until all its readers go
        over = memory_use(graph, hw, a, streamed if streamed.any() else None, shard) - cap
        todo = [c for c in np.flatnonzero(over > 0).tolist()
                if (~streamed[owner[place == c]] & (held[place == c] > 0)).any()]
        if not todo:
            return streamed if streamed.any() else None
        for c in todo:
            pieces = np.flatnonzero((place == c) & ~streamed[owner] & (held > 0)).tolist()
            pieces.sort(key=lambda p: (ratio[owner[p]], -int(w[owner[p]]), int(owner[p])))
            need = int(over[c])
            for p in pieces:
                if need <= 0:
                    break
                i = int(owner[p])
                if streamed[i]:
                    continue
                streamed[i] = True
                freed = held[owner == i]
                np.subtract.at(over, place[owner == i], freed)
                need = int(over[c])
