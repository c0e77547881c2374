"""What a valid partition is, checked without any solver.

A chiplet's memory holds the weights of all its ops plus the activation working set of its largest op (ops run
one at a time, so the peak live activations are the largest `work_bytes` among its ops). Pipeline order: every
edge u->v has chiplet(u) <= chiplet(v). Pinned ops sit where the user put them; an op type a chiplet lists as
unsupported never lands there. The CP-SAT models in solver/ encode exactly these rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware


@dataclass(frozen=True, eq=False)
class Partition:
    """A chiplet for every op, after repair or optimisation.

    assignment: chiplet id per op (int64, length n_ops).
    proposal: what the proposer asked for (None when the solver built it from scratch).
    ops_moved: ops whose chiplet differs from the proposal.
    status: the solver's word for it ("unchanged", "optimal", "feasible").
    solve_time_s: wall time in the solver.
    lower_bound_cycles / gap: for exact optimisation, the proven lower bound on the bottleneck chiplet's cycles
    per inference and the relative gap (objective - bound) / objective; None otherwise.
    """

    assignment: np.ndarray
    proposal: np.ndarray | None = None
    ops_moved: int = 0
    status: str = "unchanged"
    solve_time_s: float = 0.0
    lower_bound_cycles: float | None = None
    objective_cycles: float | None = None
    gap: float | None = None
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        arr = np.asarray(self.assignment, dtype=np.int64).copy()
        arr.setflags(write=False)
        object.__setattr__(self, "assignment", arr)


def memory_use(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> np.ndarray:
    """Bytes each chiplet needs: its ops' weights plus the largest activation working set among them."""
    a = np.asarray(assignment, dtype=np.int64)
    weights = np.bincount(a, weights=graph.weight_bytes, minlength=hw.n_chiplets)
    peak = np.zeros(hw.n_chiplets)
    np.maximum.at(peak, a, graph.work_bytes.astype(float))
    return (weights + peak).astype(np.int64)


def check(graph: TensorGraph, hw: Hardware, assignment: np.ndarray,
          pinned: Mapping[int, int] | None = None) -> list[str]:
    """Every violated constraint as a message naming the chiplet, edge or op; empty when valid."""
    a = np.asarray(assignment)
    if a.shape != (graph.n_ops,):
        return [f"assignment has shape {a.shape}, expected ({graph.n_ops},)"]
    if not np.issubdtype(a.dtype, np.integer):
        return [f"assignment has dtype {a.dtype}, expected integer chiplet ids"]
    if a.size and (a.min() < 0 or a.max() >= hw.n_chiplets):
        bad = int(np.flatnonzero((a < 0) | (a >= hw.n_chiplets))[0])
        return [f"op {graph.ops[bad].name} is on chiplet {int(a[bad])}, outside 0..{hw.n_chiplets - 1}"]
    problems: list[str] = []
    for c, used in enumerate(memory_use(graph, hw, a)):
        cap = hw.chiplets[c].sram_bytes
        if used > cap:
            problems.append(f"chiplet {c} needs {used} bytes (weights + peak activations) but has {cap}")
    back = np.flatnonzero(a[graph.edge_src] > a[graph.edge_dst])
    for k in back.tolist():
        u, v = int(graph.edge_src[k]), int(graph.edge_dst[k])
        problems.append(f"edge {graph.ops[u].name} -> {graph.ops[v].name} goes backwards "
                        f"(chiplet {int(a[u])} -> {int(a[v])})")
    for op_id, chiplet in (pinned or {}).items():
        if int(a[op_id]) != chiplet:
            problems.append(f"op {graph.ops[op_id].name} is pinned to chiplet {chiplet} but sits on {int(a[op_id])}")
    for i, op in enumerate(graph.ops):
        if op.op_type in hw.chiplets[int(a[i])].unsupported_ops:
            problems.append(f"op {op.name} ({op.op_type}) is on chiplet {int(a[i])}, which cannot run it")
    return problems
