"""Moves in the split-plan space: local search over staged plans (pipeline stages on groups of chiplets, every
op of a stage split across its group, staged_dp.staged_partition), shared by annealing, random search and the
learned policy (policies/split_search.py).

A plan is a tuple of `Stage`s in pipeline order: ops first..end-1 (a run of the topological order) on the k
consecutive chiplets chip..chip+k-1, each op split k ways (Partition.shard). Stages follow each other in op order
and in chiplet order (stage s's last chiplet < stage s+1's first), so pipeline order holds by construction;
chiplets between groups may be unused. Moves (each replaces stages[lo:hi] by new stages):

  shift   (slot 1) stage-boundary shift: the last op of stage s joins stage s+1, or the first op of s+1 joins s
          (taking that stage's group and degree); each stage keeps at least one op.
  degree  (slot 2) one chiplet changes hands: stage s gives its last chiplet to s+1 when their groups touch, or
          s+1 its first to s; a stage grows onto an unused neighbouring chiplet, or shrinks by its last chiplet
          (k -> k +- 1, within 1..max_shard).
  split   (slot 3) a stage of k >= 2 chiplets and >= 2 ops becomes two (k // 2 and k - k // 2 chiplets, cut where
          the larger of the two analytic stage costs is least), or two neighbouring stages whose groups touch
          merge into one of k_s + k_{s+1} <= max_shard chiplets (k -> k/2 and back: halving and
          doubling with the chiplet count kept).

A move is offered only if every new stage fits SRAM and runs only op types its chiplets support (the DP's
analytic stage cost `staged_dp.group_stage_cost_matrix` is finite exactly then); the search runs `check()` on the
move it picks before spending an evaluation (the DP's working-set estimate at a stage's first ops is not exact),
and drops it if check() disagrees. With a memory tier whose staged plans must stream weights (the DP ran
`relaxed`), the context is `relaxed` too: a stage is offered when its activations fit, weights not counted, and
the search gives every moved plan the residency run.best_staged gives a start plan
(solver.residency.choose_streamed, `with_residency`), so every evaluated plan is valid.

Features (MOVE_DIM columns, as policies/moves.py so one MoveNet scores both spaces). c = the analytic cost of each
stage (cycles per inference, group_stage_cost_matrix), M = max c; "a" and "b" are the first and last stage the
move replaces; B = the simulator's busy fraction (a stage's: the max over its chiplets):
    kind one-hot (KIND_SLOTS); sign (+1: ops or a chiplet go to the later stage, or a chiplet comes into use;
    -1 the reverse; split +1, merge -1); c[a]/M, c[b]/M; B[a], B[b]; a holds the simulator's bottleneck chiplet,
    b does; the moved op's own stage cost in its new stage / M; (max c after the move) / M - 1; the largest new
    stage's c / M; (bytes cut after - before) / (M x link bytes per cycle), clipped to +-4; the largest new stage's
    SRAM use / SRAM; chiplets in use after - before, / max_shard; largest new degree / max_shard; log C / log 256.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from partitioner.model.cost import keep_column
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition
from partitioner.sim.report import Evaluation
from partitioner.model.sharding import piece
from partitioner.plan.staged_dp import DEFAULT_MAX_SHARD, _stage_layout, _tables, group_stage_cost_matrix
from policies.moves import KIND_SLOTS, MOVE_DIM
from solver.residency import choose_streamed

SPLIT_KINDS = ("shift", "degree", "split")
SLOTS = {"shift": 1, "degree": 2, "split": 3}          # slot 0 is the whole-op "op" move of policies/moves.py


@dataclass(frozen=True)
class Stage:
    first: int          # first op (topological index)
    end: int            # one past its last op
    chip: int           # first chiplet of its group
    k: int              # chiplets in the group = shard degree of its ops


Plan = tuple[Stage, ...]


def plan_of(assignment: np.ndarray, shard: np.ndarray | None) -> Plan | None:
    """The stages of a partition whose (chiplet, degree) runs follow the topological order and the chiplet order;
    None when it is not such a plan (an op placed out of run order)."""
    a = np.asarray(assignment, dtype=np.int64)
    k = np.ones_like(a) if shard is None else np.asarray(shard, dtype=np.int64)
    if a.size == 0:
        return None
    cut = np.flatnonzero((a[1:] != a[:-1]) | (k[1:] != k[:-1])) + 1
    bounds = np.r_[0, cut, a.size]
    plan = tuple(Stage(int(i), int(j), int(a[i]), int(k[i])) for i, j in zip(bounds[:-1], bounds[1:]))
    if any(s.chip + s.k > t.chip for s, t in zip(plan, plan[1:])):
        return None
    return plan


def with_residency(graph: TensorGraph, hw: Hardware, part: Partition, batch: int = 1) -> Partition:
    """`part` with the weights its overflowing chiplets must stream (solver.residency.choose_streamed, as
    run.best_staged chooses them); unchanged without a memory tier."""
    if not hw.memory_stacks:
        return part
    return replace(part, streamed=choose_streamed(graph, hw, part.assignment, batch, part.shard))


def to_partition(plan: Plan, n_ops: int, status: str = "split-move") -> Partition:
    a = np.empty(n_ops, dtype=np.int64)
    k = np.empty(n_ops, dtype=np.int64)
    for s in plan:
        a[s.first:s.end], k[s.first:s.end] = s.chip, s.k
    return Partition(a, None, 0, status, shard=k)


@dataclass(eq=False)
class SplitContext:
    """Static data of one (graph, hardware): the DP's stage-cost matrices per (chiplet kind, degree), built on
    first use, and per-degree piece memory prefix sums."""

    graph: TensorGraph
    hw: Hardware
    max_shard: int = DEFAULT_MAX_SHARD
    _tables: tuple | None = None
    _costs: dict = field(default_factory=dict)
    _mem: dict = field(default_factory=dict)
    cut: np.ndarray | None = None          # cut[p]: bytes of edges u -> v with u < p <= v (a stage boundary at p)
    relaxed: bool = False                  # weights stream where they overflow: stage costs count none (module doc)

    def __post_init__(self) -> None:
        self.max_shard = max(1, min(int(self.max_shard), self.hw.n_chiplets))
        g = self.graph
        diff = np.zeros(g.n_ops + 2)
        np.add.at(diff, g.edge_src + 1, g.edge_bytes.astype(float))
        np.add.at(diff, g.edge_dst + 1, -g.edge_bytes.astype(float))
        self.cut = np.cumsum(diff)[:g.n_ops + 1]

    def matrix(self, chip: int, k: int) -> np.ndarray | None:
        """group_stage_cost_matrix for a group of k chiplets from `chip`; None if they are not one kind."""
        kinds = self.hw.chiplets[chip:chip + k]
        if len(kinds) < k or any(c != kinds[0] for c in kinds):
            return None
        key = (kinds[0], k)
        if key not in self._costs:
            if self._tables is None:
                self._tables = _tables(self.graph)
            self._costs[key] = group_stage_cost_matrix(self.graph, self.hw, chip, k, self._tables,
                                                         self.relaxed)
        return self._costs[key]

    def cost(self, s: Stage) -> float:
        m = self.matrix(s.chip, s.k)
        return float("inf") if m is None else float(m[s.first, s.end])

    def memory(self, s: Stage) -> float:
        """SRAM bytes of one piece-holding chiplet of the stage: its pieces' weights plus their largest working set,
        the larger of Megatron's layout and the simulator's (S8/S9: a spatial Conv holds all its filters), as
        partition.memory_use counts them."""
        key = (s.k, self.hw.chiplets[s.chip])
        if key not in self._mem:
            layouts = (_stage_layout(self.graph)[0],
                       _stage_layout(self.graph, max(s.k, 2), s.chip,
                                     keep_column(self.hw, self.graph.metadata.get("precision")))[0])
            pieces = [[piece(op, s.k, axes[i]) for i, op in enumerate(self.graph.ops)] for axes in layouts]
            weights = np.max([[p.weight_bytes for p in ps] for ps in pieces], axis=0)
            w = np.concatenate([[0], np.cumsum(weights)]).astype(float)
            self._mem[key] = (w, np.max([[p.in_bytes + p.out_bytes for p in ps] for ps in pieces], axis=0)
                              .astype(float))
        w, work = self._mem[key]
        return float(w[s.end] - w[s.first] + work[s.first:s.end].max())


def _fits(ctx: SplitContext, stages: tuple[Stage, ...]) -> bool:
    return all(s.end > s.first and 1 <= s.k <= ctx.max_shard and np.isfinite(ctx.cost(s)) for s in stages)


@dataclass(frozen=True)
class SplitMove:
    kind: str
    lo: int                         # stages[lo:hi] are replaced by `new`
    hi: int
    new: tuple[Stage, ...]
    op: int                         # the op whose embedding scores the move (the moved op, the cut, the group's first)
    sign: int

    def apply(self, plan: Plan) -> Plan:
        return plan[:self.lo] + self.new + plan[self.hi:]


def enumerate_moves(ctx: SplitContext, plan: Plan) -> list[SplitMove]:
    """Every offered move from `plan` (module docstring), in a fixed order."""
    out: list[SplitMove] = []
    n_chip = ctx.hw.n_chiplets

    def add(kind: str, lo: int, hi: int, new: tuple[Stage, ...], op: int, sign: int) -> None:
        if _fits(ctx, new):
            out.append(SplitMove(kind, lo, hi, new, op, sign))

    for s, st in enumerate(plan):
        nxt = plan[s + 1] if s + 1 < len(plan) else None
        prev_end = plan[s - 1].chip + plan[s - 1].k if s else 0
        next_start = nxt.chip if nxt is not None else n_chip
        if nxt is not None:
            if st.end - st.first >= 2:          # last op of s -> s+1
                add("shift", s, s + 2, (Stage(st.first, st.end - 1, st.chip, st.k),
                                        Stage(st.end - 1, nxt.end, nxt.chip, nxt.k)), st.end - 1, 1)
            if nxt.end - nxt.first >= 2:        # first op of s+1 -> s
                add("shift", s, s + 2, (Stage(st.first, st.end + 1, st.chip, st.k),
                                        Stage(nxt.first + 1, nxt.end, nxt.chip, nxt.k)), nxt.first, -1)
            if st.chip + st.k == nxt.chip:      # groups touch: a chiplet changes hands, or the two merge
                if st.k >= 2:
                    add("degree", s, s + 2, (Stage(st.first, st.end, st.chip, st.k - 1),
                                             Stage(nxt.first, nxt.end, nxt.chip - 1, nxt.k + 1)), nxt.first, 1)
                if nxt.k >= 2:
                    add("degree", s, s + 2, (Stage(st.first, st.end, st.chip, st.k + 1),
                                             Stage(nxt.first, nxt.end, nxt.chip + 1, nxt.k - 1)), st.first, -1)
                add("split", s, s + 2, (Stage(st.first, nxt.end, st.chip, st.k + nxt.k),), nxt.first, -1)
        if st.chip + st.k < next_start:         # grow onto the unused chiplet above
            add("degree", s, s + 1, (Stage(st.first, st.end, st.chip, st.k + 1),), st.first, 1)
        if st.chip > prev_end:                  # ... or below
            add("degree", s, s + 1, (Stage(st.first, st.end, st.chip - 1, st.k + 1),), st.first, 1)
        if st.k >= 2:
            add("degree", s, s + 1, (Stage(st.first, st.end, st.chip, st.k - 1),), st.first, -1)
            if st.end - st.first >= 2:
                cut = _best_cut(ctx, st)
                if cut is not None:
                    k1 = st.k // 2
                    add("split", s, s + 1, (Stage(st.first, cut, st.chip, k1),
                                            Stage(cut, st.end, st.chip + k1, st.k - k1)), cut, 1)
    return out


def _best_cut(ctx: SplitContext, st: Stage) -> int | None:
    """The cut m of a k-way stage into (first..m-1 on k//2) and (m..end-1 on the rest) with the least larger cost."""
    k1 = st.k // 2
    left, right = ctx.matrix(st.chip, k1), ctx.matrix(st.chip + k1, st.k - k1)
    if left is None or right is None:
        return None
    m = np.arange(st.first + 1, st.end)
    worst = np.maximum(left[st.first, m], right[m, st.end])
    if not np.isfinite(worst).any():
        return None
    return int(m[int(np.argmin(worst))])


@dataclass(frozen=True)
class SplitMoveSet:
    """The offered moves from one plan, with their features [m, MOVE_DIM] and scoring ops [m]."""

    moves: tuple[SplitMove, ...]
    ops: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.moves)

    def subset(self, idx: list[int]) -> "SplitMoveSet":
        return SplitMoveSet(tuple(self.moves[i] for i in idx), self.ops[idx], self.features[idx])

    def without(self, idx: int) -> "SplitMoveSet":
        keep = np.arange(len(self.moves)) != idx
        return SplitMoveSet(tuple(m for i, m in enumerate(self.moves) if i != idx), self.ops[keep],
                            self.features[keep])


def split_move_set(ctx: SplitContext, plan: Plan, current: Evaluation) -> SplitMoveSet:
    """Every offered move from `plan` (the plan of `current`) with its features (module docstring)."""
    moves = enumerate_moves(ctx, plan)
    m = len(moves)
    if not m:
        return SplitMoveSet((), np.zeros(0, dtype=np.int64), np.zeros((0, MOVE_DIM), dtype=np.float32))
    c = np.array([ctx.cost(s) for s in plan])
    top = max(float(c.max()), 1.0)
    pre = np.maximum.accumulate(np.r_[0.0, c])          # pre[i] = max c[:i]
    suf = np.r_[np.maximum.accumulate(c[::-1])[::-1], 0.0]   # suf[i] = max c[i:]
    busy = np.asarray(current.report.chiplet_busy_fraction, dtype=np.float64)
    bott = int(current.report.bottleneck_chiplet)
    stage_busy = np.array([busy[s.chip:s.chip + s.k].max() for s in plan])
    holds_bott = np.array([s.chip <= bott < s.chip + s.k for s in plan], dtype=float)
    sram = float(min(ch.sram_bytes for ch in ctx.hw.chiplets))
    feats = np.zeros((m, MOVE_DIM))
    for r, mv in enumerate(moves):
        new_c = np.array([ctx.cost(s) for s in mv.new])
        a, b = mv.lo, mv.hi - 1
        owner = next(s for s in mv.new if s.first <= mv.op < s.end)
        own = ctx.matrix(owner.chip, owner.k)[mv.op, mv.op + 1]
        old_cuts = sum(ctx.cut[s.end] for s in plan[mv.lo:mv.hi - 1])
        new_cuts = sum(ctx.cut[s.end] for s in mv.new[:-1])
        feats[r, SLOTS[mv.kind]] = 1.0
        feats[r, KIND_SLOTS:] = (
            mv.sign, c[a] / top, c[b] / top, stage_busy[a], stage_busy[b], holds_bott[a], holds_bott[b],
            own / top, max(pre[mv.lo], suf[mv.hi], new_c.max()) / top - 1.0, new_c.max() / top,
            np.clip((new_cuts - old_cuts) / (top * ctx.hw.link_bytes_per_cycle), -4.0, 4.0),
            min(max(ctx.memory(s) for s in mv.new) / sram, 2.0),
            (sum(s.k for s in mv.new) - sum(s.k for s in plan[mv.lo:mv.hi])) / ctx.max_shard,
            max(s.k for s in mv.new) / ctx.max_shard, np.log(ctx.hw.n_chiplets) / np.log(256.0))
    ops = np.array([mv.op for mv in moves], dtype=np.int64)
    return SplitMoveSet(tuple(moves), ops, feats.astype(np.float32))
