"""What a valid partition is, checked without any solver.

A chiplet's memory holds the weights of all its ops plus the activation working set of its largest op (ops run
one at a time, so the peak live activations are the largest `work_bytes` among its ops). An op split k ways
(`Partition.shard`) counts as its piece (partitioner/model/sharding.py) on each chiplet of its group: 1/k of its split
weights, its full inputs and 1/k of its output; groups must respect pipeline order (sharding.check_groups). A
streamed split op keeps none of its pieces' weights in SRAM; each piece's share lives in the stack feeding its
chiplet. A tensor several ops read (Op.shared_weights: a tied embedding and LM head) is held once per chiplet by
the resident ops there, and once per stack by the streamed ops it feeds (a split op's slice of it never counts as
shared: conservative). Pipeline order: every
edge u->v has chiplet(u) <= chiplet(v). Pinned ops sit where the user put them; an op type a chiplet lists as
unsupported never lands there. The CP-SAT models in solver/ encode exactly these rules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from partitioner.model.cost import keep_column
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.sharding import check_groups, expand


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
    streamed: bool per op, True = its weights are not resident in SRAM but stream from the memory tier (the
    stack `hw.stack_feed` names for its chiplet) every batch; None = every weight resident.
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
    streamed: np.ndarray | None = None
    shard: np.ndarray | None = None
    """Shard degree per op (int64, >= 1): op i runs as shard[i] pieces on chiplets assignment[i].. assignment[i] +
    shard[i] - 1 (partitioner/model/sharding.py). None means every op runs whole."""

    def __post_init__(self) -> None:
        arr = np.asarray(self.assignment, dtype=np.int64).copy()
        arr.setflags(write=False)
        object.__setattr__(self, "assignment", arr)
        if self.streamed is not None:
            s = np.asarray(self.streamed, dtype=bool).copy()
            if s.shape != arr.shape:
                raise ValueError(f"streamed has shape {s.shape}, expected {arr.shape}")
            s.setflags(write=False)
            object.__setattr__(self, "streamed", s if s.any() else None)
        if self.shard is not None:
            k = np.asarray(self.shard, dtype=np.int64).copy()
            k.setflags(write=False)
            object.__setattr__(self, "shard", None if bool((k == 1).all()) else k)

    @property
    def sharded(self) -> bool:
        return self.shard is not None


def resident_weight_bytes(graph: TensorGraph, streamed: np.ndarray | None) -> np.ndarray:
    """Weight bytes each op keeps in SRAM: all of them unless the op streams."""
    if streamed is None:
        return graph.weight_bytes
    return np.where(np.asarray(streamed, dtype=bool), 0, graph.weight_bytes)


def shared_overcount(graph: TensorGraph, place: np.ndarray, counted: np.ndarray | None, n_places: int) -> np.ndarray:
    """Bytes per place (chiplet or stack) that a per-op sum of weight_bytes counts more than once: a shared tensor
    (Op.shared_weights) that several counted ops in one place read is held there once. `place` is per op;
    `counted` flags the ops whose weights the sum includes (None: all)."""
    op, tensor, nbytes = graph.shared_table
    out = np.zeros(n_places, dtype=np.int64)
    if op.size == 0:
        return out
    keep = np.ones(op.size, dtype=bool) if counted is None else np.asarray(counted, dtype=bool)[op]
    where = np.asarray(place, dtype=np.int64)[op[keep]]
    key = tensor[keep] * n_places + where
    first = np.unique(key, return_index=True)[1]
    np.add.at(out, where, nbytes[keep])
    np.subtract.at(out, where[first], nbytes[keep][first])
    return out


def stack_use(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, streamed: np.ndarray | None,
              shard: np.ndarray | None = None) -> np.ndarray:
    """Bytes each memory stack stores: the weights of the streamed ops whose chiplets it feeds, a shared tensor
    once per stack. With `shard`, each piece of a streamed split op stores its own share (1/k of the split weights,
    its copy of replicated ones) in the stack feeding its chiplet."""
    use = np.zeros(len(hw.memory_stacks), dtype=np.int64)
    if streamed is None or not hw.memory_stacks:
        return use
    if shard is not None and (np.asarray(shard) != 1).any():
        ex = expand(graph, assignment, shard)
        return stack_use(ex.graph, hw, ex.assignment, np.asarray(streamed, dtype=bool)[ex.owner])
    feed = np.array([s for s, _ in hw.stack_feed], dtype=np.int64)
    s = np.asarray(streamed, dtype=bool)
    a = np.asarray(assignment, dtype=np.int64)
    np.add.at(use, feed[a[s]], graph.weight_bytes[s])
    return use - shared_overcount(graph, feed[a], s, len(hw.memory_stacks))


def memory_use(graph: TensorGraph, hw: Hardware, assignment: np.ndarray,
               streamed: np.ndarray | None = None, shard: np.ndarray | None = None) -> np.ndarray:
    """Bytes each chiplet needs: its ops' (or pieces') resident weights plus the largest activation working set
    among them. Streamed weights pass through the op's tile buffers (part of its working set) and take no SRAM of
    their own. With `shard`, split ops count per piece (1/k of their split weights on each chiplet of the group);
    a GEMM that may run row_parallel or column (docs S8) counts the larger of the two working sets; a split Conv
    counts the axis the simulator gives it on its chiplet (S9: spatial holds all the filters and its input rows
    plus halo, S11), the axis partition.json records and `partition split` cuts."""
    if shard is not None and (np.asarray(shard) != 1).any():
        use = None
        sim = keep_column(hw, graph.metadata.get("precision"))
        layouts = [sim] + [lambda op, k, c, gemm=gemm: sim(op, k, c) if op.op_type == "Conv" else gemm
                           for gemm in (False, True)]
        for keep in layouts:
            ex = expand(graph, assignment, shard, keep_column=keep)
            got = memory_use(ex.graph, hw, ex.assignment, None if streamed is None else np.asarray(streamed)[ex.owner])
            use = got if use is None else np.maximum(use, got)
        return use
    a = np.asarray(assignment, dtype=np.int64)
    weights = np.bincount(a, weights=resident_weight_bytes(graph, streamed), minlength=hw.n_chiplets)
    peak = np.zeros(hw.n_chiplets)
    np.maximum.at(peak, a, graph.work_bytes.astype(float))
    resident = None if streamed is None else ~np.asarray(streamed, dtype=bool)
    return (weights + peak).astype(np.int64) - shared_overcount(graph, a, resident, hw.n_chiplets)


def check(graph: TensorGraph, hw: Hardware, assignment: np.ndarray,
          pinned: Mapping[int, int] | None = None, streamed: np.ndarray | None = None,
          shard: np.ndarray | None = None) -> list[str]:
    """Every violated constraint as a message naming the chiplet, edge or op; empty when valid.

    streamed: bool per op (True = weights stream from the memory tier); None = all resident. Streamed ops need a
    memory tier and weights to stream, and each stack must hold the streamed weights it feeds.
    shard: shard degree per op (None: all whole). A Partition passed as `assignment` brings its own of both.
    A streamed split op streams every piece's share from the stack feeding that piece's chiplet.""" 
    if isinstance(assignment, Partition):
        shard = assignment.shard if shard is None else shard
        streamed = assignment.streamed if streamed is None else streamed
        assignment = assignment.assignment
    a = np.asarray(assignment)
    if a.shape != (graph.n_ops,):
        return [f"assignment has shape {a.shape}, expected ({graph.n_ops},)"]
    if not np.issubdtype(a.dtype, np.integer):
        return [f"assignment has dtype {a.dtype}, expected integer chiplet ids"]
    if a.size and (a.min() < 0 or a.max() >= hw.n_chiplets):
        bad = int(np.flatnonzero((a < 0) | (a >= hw.n_chiplets))[0])
        return [f"op {graph.ops[bad].name} is on chiplet {int(a[bad])}, outside 0..{hw.n_chiplets - 1}"]
    sharded = shard is not None and (np.asarray(shard) != 1).any()
    if sharded:
        group_problems = check_groups(graph, hw.n_chiplets, a, shard)
        if group_problems:
            return group_problems
        shard = np.asarray(shard, dtype=np.int64)
    problems: list[str] = []
    if streamed is not None:
        s = np.asarray(streamed)
        if s.shape != a.shape:
            return [f"streamed has shape {s.shape}, expected ({graph.n_ops},)"]
        s = s.astype(bool)
        if s.any() and not hw.memory_stacks:
            problems.append(f"{int(s.sum())} ops stream their weights but hardware {hw.name} has no memory tier")
            s = np.zeros_like(s)
        for i in np.flatnonzero(s & (graph.weight_bytes == 0)).tolist():
            problems.append(f"op {graph.ops[i].name} is marked streamed but has no weights")
        for k, used in enumerate(stack_use(graph, hw, a, s, shard if sharded else None)):
            cap = hw.memory_stacks[k].capacity_bytes
            if used > cap:
                problems.append(f"memory stack {hw.memory_stacks[k].name} holds {used} bytes of streamed weights "
                                f"but has {cap}")
        streamed = s if s.any() else None
    if sharded:
        return problems + _check_sharded(graph, hw, a, shard, pinned, streamed)
    for c, used in enumerate(memory_use(graph, hw, a, streamed)):
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
                   pinned: Mapping[int, int] | None, streamed: np.ndarray | None = None) -> list[str]:
    """Memory per chiplet on the pieces (1/k of split weights; a streamed op's pieces hold none), pins on the
    group's first chiplet, op types on every chiplet of the group; pipeline order between groups was checked by
    check_groups."""
    problems: list[str] = []
    for c, used in enumerate(memory_use(graph, hw, a, streamed, shard=k)):
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
