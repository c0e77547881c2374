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

from partitioner.cost import stream_bytes
from partitioner.errors import UserError
from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware
from partitioner.partition import memory_use
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


def choose_streamed(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, batch: int = 1) -> np.ndarray | None:
    """bool per op (True = stream) making every chiplet fit its SRAM where streaming can; None when nothing needs
    to stream or the hardware has no memory tier. A chiplet whose activations alone overflow stays over."""
    if not hw.memory_stacks or graph.n_ops == 0:
        return None
    a = np.asarray(assignment, dtype=np.int64)
    over = memory_use(graph, hw, a) - np.array([c.sram_bytes for c in hw.chiplets], dtype=np.int64)
    if not (over > 0).any():
        return None
    w = graph.weight_bytes
    ratio = stream_bytes(graph, batch) / np.maximum(w, 1)
    streamed = np.zeros(graph.n_ops, dtype=bool)
    for c in np.flatnonzero(over > 0).tolist():
        ops = [i for i in np.flatnonzero(a == c).tolist() if w[i] > 0]
        ops.sort(key=lambda i: (ratio[i], -int(w[i]), i))
        need = int(over[c])
        for i in ops:
            if need <= 0:
                break
            streamed[i] = True
            need -= int(w[i])
    return streamed if streamed.any() else None
