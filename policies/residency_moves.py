"""Residency moves in the split-plan space: stream one op's weights from the memory tier, or keep one streamed op's
weights resident again, leaving the plan's stages as they are (policies/split_moves.py moves the stages; after
such a move the search gives the plan solver.residency.choose_streamed's residency, which a residency move can
then change one op at a time). Offered only on a package with a memory tier, for ops with weights; the search
runs check() on the move it picks, so unstreaming an op its chiplets cannot hold (or streaming more than a stack
holds) is dropped without an evaluation: every evaluated plan is valid.

Features (MOVE_DIM columns, as split_moves' so one MoveNet scores both): kind slot 0 (the whole-op move's slot,
which never occurs in the split space), sign +1 stream / -1 keep resident, then with s the op's stage, c and B as
in split_moves: c[s]/M twice, B[s] twice, s holds the bottleneck chiplet twice, the op's own cost in s / M, 0
(the stages do not change), c[s]/M, 0 (no cut changes), the op's piece weight bytes / SRAM (signed as the move:
SRAM freed > 0), 0 (no chiplet comes into use), k_s / max_shard, log C / log 256.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from partitioner.model.partition import Partition
from partitioner.sim.report import Evaluation
from policies.moves import KIND_SLOTS, MOVE_DIM
from policies.split_moves import Plan, SplitContext, SplitMoveSet


@dataclass(frozen=True)
class ResidencyMove:
    op: int
    lo: int                 # the op's stage (lo..hi-1 = that one stage, as SplitMove's span for the bottleneck pool)
    hi: int
    sign: int               # +1: stream the op's weights; -1: keep them resident
    kind: str = "residency"

    def on(self, part: Partition) -> Partition:
        """`part` with this op's weights streamed (+1) or resident (-1); streamed None when nothing streams."""
        s = np.zeros(part.assignment.size, dtype=bool) if part.streamed is None else np.array(part.streamed)
        s[self.op] = self.sign > 0
        return replace(part, streamed=s if s.any() else None, status="residency-move")


def residency_moves(ctx: SplitContext, plan: Plan, part: Partition) -> list[ResidencyMove]:
    """Every residency move of `part` (whose stages are `plan`), in op order; none without a memory tier."""
    if not ctx.hw.memory_stacks:
        return []
    streamed = np.zeros(ctx.graph.n_ops, dtype=bool) if part.streamed is None else np.asarray(part.streamed)
    out = []
    for s, st in enumerate(plan):
        for op in range(st.first, st.end):
            if ctx.graph.weight_bytes[op] > 0:
                out.append(ResidencyMove(op, s, s + 1, -1 if streamed[op] else 1))
    return out


def residency_move_set(ctx: SplitContext, plan: Plan, current: Evaluation) -> SplitMoveSet:
    """The residency moves of `current` with their features (module docstring)."""
    moves = residency_moves(ctx, plan, current.partition)
    feats = np.zeros((len(moves), MOVE_DIM))
    if moves:
        c = np.array([ctx.cost(s) for s in plan])
        top = max(float(c.max()), 1.0)
        busy = np.asarray(current.report.chiplet_busy_fraction, dtype=np.float64)
        bott = int(current.report.bottleneck_chiplet)
        sram = float(min(ch.sram_bytes for ch in ctx.hw.chiplets))
        for r, mv in enumerate(moves):
            st = plan[mv.lo]
            b = float(busy[st.chip:st.chip + st.k].max())
            hb = float(st.chip <= bott < st.chip + st.k)
            own = ctx.matrix(st.chip, st.k)[mv.op, mv.op + 1]
            w = mv.sign * ctx.graph.weight_bytes[mv.op] / st.k / sram
            feats[r, 0] = 1.0
            feats[r, KIND_SLOTS:] = (mv.sign, c[mv.lo] / top, c[mv.lo] / top, b, b, hb, hb, own / top, 0.0,
                                     c[mv.lo] / top, 0.0, float(np.clip(w, -2.0, 2.0)), 0.0, st.k / ctx.max_shard,
                                     np.log(ctx.hw.n_chiplets) / np.log(256.0))
    ops = np.array([mv.op for mv in moves], dtype=np.int64)
    return SplitMoveSet(tuple(moves), ops, feats.astype(np.float32))


def joined(a: SplitMoveSet, b: SplitMoveSet) -> SplitMoveSet:
    return SplitMoveSet(a.moves + b.moves, np.r_[a.ops, b.ops].astype(np.int64),
                        np.vstack([a.features, b.features]).astype(np.float32))
