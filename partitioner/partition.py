"""What a valid partition is, checked without any solver.

A chiplet's memory holds the weights of all its ops plus the activation working set of its largest op (ops run
one at a time, so the peak live activations are the largest `work_bytes` among its ops). An op split k ways
(`Partition.shard`) counts as its piece (partitioner/sharding.py) on each chiplet of its group: 1/k of its split
weights, its full inputs and 1/k of its output; groups must respect pipeline order (sharding.check_groups).
Pipeline order: every
edge u->v has chiplet(u) <= chiplet(v). Pinned ops sit where the user put them; an op type a chiplet lists as
unsupported never lands there. The CP-SAT models in solver/ encode exactly these rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware
from partitioner.sharding import check_groups, expand


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
    shard: np.ndarray | None = None
    """Shard degree per op (int64, >= 1): op i runs as shard[i] pieces on chiplets assignment[i].. assignment[i] +
    shard[i] - 1 (partitioner/sharding.py). None means every op runs whole."""

    def __post_init__(self) -> None:
        arr = np.asarray(self.assignment, dtype=np.int64).copy()
        arr.setflags(write=False)
        object.__setattr__(self, "assignment", arr)
        if self.shard is not None:
            k = np.asarray(self.shard, dtype=np.int64).copy()
            k.setflags(write=False)
            object.__setattr__(self, "shard", None if bool((k == 1).all()) else k)

    @property
    def sharded(self) -> bool:
        return self.shard is not None


def memory_use(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray | None = None
               ) -> np.ndarray:
    """Bytes each chiplet needs: its ops' (or pieces') weights plus the largest activation working set among them."""
    if shard is not None and (np.asarray(shard) != 1).any():
        ex = expand(graph, assignment, shard)
        return memory_use(ex.graph, hw, ex.assignment)
    a = np.asarray(assignment, dtype=np.int64)
    weights = np.bincount(a, weights=graph.weight_bytes, minlength=hw.n_chiplets)
    peak = np.zeros(hw.n_chiplets)
    np.maximum.at(peak, a, graph.work_bytes.astype(float))
    return (weights + peak).astype(np.int64)


def check(graph: TensorGraph, hw: Hardware, assignment: np.ndarray,
          pinned: Mapping[int, int] | None = None, shard: np.ndarray | None = None) -> list[str]:
    """Every violated constraint as a message naming the chiplet, edge or op; empty when valid.

    shard: shard degree per op (None: all whole); a Partition passed as `assignment` brings its own."""
    if isinstance(assignment, Partition):
        shard = assignment.shard if shard is None else shard
        assignment = assignment.assignment
    a = np.asarray(assignment)
    if a.shape != (graph.n_ops,):
        return [f"assignment has shape {a.shape}, expected ({graph.n_ops},)"]
    if not np.issubdtype(a.dtype, np.integer):
        return [f"assignment has dtype {a.dtype}, expected integer chiplet ids"]
    if a.size and (a.min() < 0 or a.max() >= hw.n_chiplets):
        bad = int(np.flatnonzero((a < 0) | (a >= hw.n_chiplets))[0])
        return [f"op {graph.ops[bad].name} is on chiplet {int(a[bad])}, outside 0..{hw.n_chiplets - 1}"]
    if shard is not None:
        group_problems = check_groups(graph, hw.n_chiplets, a, shard)
        if group_problems:
            return group_problems
        return _check_sharded(graph, hw, a, np.asarray(shard, dtype=np.int64), pinned)
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


def _check_sharded(graph: TensorGraph, hw: Hardware, a: np.ndarray, k: np.ndarray,
                   pinned: Mapping[int, int] | None) -> list[str]:
    """Memory per chiplet on the pieces (1/k of split weights), pins on the group's first chiplet, op types on
    every chiplet of the group; pipeline order between groups was checked by check_groups."""
    problems: list[str] = []
    for c, used in enumerate(memory_use(graph, hw, a, k)):
        cap = hw.chiplets[c].sram_bytes
        if used > cap:
            problems.append(f"chiplet {c} needs {used} bytes (weights + peak activations) but has {cap}")
    for op_id, chiplet in (pinned or {}).items():
        if int(a[op_id]) != chiplet or k[op_id] != 1:
            problems.append(f"op {graph.ops[op_id].name} is pinned to chiplet {chiplet} but sits on "
                            f"{int(a[op_id])}" + (f" split {int(k[op_id])} ways" if k[op_id] != 1 else ""))
    for i, op in enumerate(graph.ops):
        for c in range(int(a[i]), int(a[i] + k[i])):
            if op.op_type in hw.chiplets[c].unsupported_ops:
                problems.append(f"op {op.name} ({op.op_type}) is on chiplet {c}, which cannot run it")
    return problems
