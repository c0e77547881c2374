"""The move set of learned local search: every valid move from the current partition, with the features the
move policy scores it by.

A move kind is a `MoveKind`: `enumerate(ctx, a)` lists its valid moves as (ops, targets) and `apply(a, op,
target)` makes the candidate assignment. Today there is one kind, "op" (an op to the neighbouring chiplet up or
down the pipeline, policies.baselines._valid_moves: pipeline order, memory and unsupported op types checked, so
no evaluation is spent on an invalid partition). A stage-boundary shift is the "op" move of the first or last op
of a chiplet's run (the features flag it). New kinds (shard degree once Partition.shard lands, streamed /
resident once Partition.streamed lands) are one more MoveKind appended to MOVE_KINDS, with its own kind slot in
the one-hot (KIND_SLOTS reserves room) and its own candidate construction; the network does not change.

Move features (MOVE_DIM columns, all ratios so one network serves any graph and package), with L the per-chiplet
compute cycles of the current assignment (cost.op_cycles_matrix), M = max(L), and the simulator's busy
fractions B of the current partition:
    kind one-hot (KIND_SLOTS); direction (+1 up, -1 down); L[src]/M, L[dst]/M; B[src], B[dst]; src is the
    simulator's bottleneck chiplet, dst is; the op's cycles / M; the analytic max load after the move / M - 1
    (negative: the move lowers the compute bottleneck); dst's load after the move / M; the change in bytes cut
    by the move / (M * link bytes per cycle) (positive: more traffic); dst memory use after the move / SRAM;
    the op is first / last of its chiplet's run in topological order (a stage-boundary shift).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from partitioner.model.cost import op_cycles_matrix
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.sim.report import Evaluation
from policies.baselines import _valid_moves

KIND_SLOTS = 4                     # one-hot room for op, shard, residency and one more kind without a new network
MOVE_DIM = KIND_SLOTS + 15


@dataclass(frozen=True, eq=False)
class MoveContext:
    """Static data of one (graph, hardware) the move set reads at every step."""

    graph: TensorGraph
    hw: Hardware
    cycles: np.ndarray             # [n_ops, C] op cycles on each chiplet
    allowed: np.ndarray            # [n_ops, C] op type runs there
    sram: np.ndarray               # [C] bytes
    inc_op: np.ndarray             # incidence list (both directions): op, neighbour op, bytes
    inc_nbr: np.ndarray
    inc_bytes: np.ndarray


def context(graph: TensorGraph, hw: Hardware) -> MoveContext:
    allowed = np.array([[op.op_type not in c.unsupported_ops for c in hw.chiplets] for op in graph.ops], dtype=bool)
    b = graph.edge_bytes.astype(np.float64)
    return MoveContext(graph, hw, op_cycles_matrix(graph, hw).astype(np.float64), allowed,
                       np.array([c.sram_bytes for c in hw.chiplets], dtype=np.float64),
                       np.concatenate([graph.edge_src, graph.edge_dst]), np.concatenate([graph.edge_dst, graph.edge_src]),
                       np.concatenate([b, b]))


@dataclass(frozen=True)
class MoveKind:
    name: str
    slot: int                                                                  # its column in the kind one-hot
    enumerate: Callable[[MoveContext, np.ndarray], "tuple[np.ndarray, np.ndarray]"]
    apply: Callable[[np.ndarray, int, int], np.ndarray]


def _op_moves(ctx: MoveContext, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _valid_moves(ctx.graph, ctx.hw, a, ctx.allowed)


def _apply_op(a: np.ndarray, op: int, target: int) -> np.ndarray:
    out = a.copy()
    out[op] = target
    return out


MOVE_KINDS: tuple[MoveKind, ...] = (MoveKind("op", 0, _op_moves, _apply_op),)


@dataclass(frozen=True)
class MoveSet:
    """The valid moves from one partition: kind index into MOVE_KINDS, op, target, and features [m, MOVE_DIM]."""

    kinds: np.ndarray
    ops: np.ndarray
    targets: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.ops.size)

    def candidate(self, a: np.ndarray, k: int) -> np.ndarray:
        return MOVE_KINDS[int(self.kinds[k])].apply(a, int(self.ops[k]), int(self.targets[k]))


def move_set(ctx: MoveContext, current: Evaluation) -> MoveSet:
    """Every valid move of every kind from `current`, with its features (module docstring)."""
    a = np.asarray(current.assignment, dtype=np.int64)
    kinds, ops, targets = [], [], []
    for i, kind in enumerate(MOVE_KINDS):
        o, t = kind.enumerate(ctx, a)
        kinds.append(np.full(o.size, i, dtype=np.int64))
        ops.append(o.astype(np.int64))
        targets.append(t.astype(np.int64))
    kinds_a, ops_a, tg = np.concatenate(kinds), np.concatenate(ops), np.concatenate(targets)
    return MoveSet(kinds_a, ops_a, tg, _features(ctx, current, a, kinds_a, ops_a, tg))


def _features(ctx: MoveContext, current: Evaluation, a: np.ndarray, kinds: np.ndarray, ops: np.ndarray,
              tg: np.ndarray) -> np.ndarray:
    g, n_chip = ctx.graph, ctx.hw.n_chiplets
    m = ops.size
    own = ctx.cycles[np.arange(g.n_ops), a]
    load = np.bincount(a, weights=own, minlength=n_chip)
    top = max(float(load.max()), 1.0)
    src = a[ops]
    op_src, op_dst = own[ops], ctx.cycles[ops, tg]
    new_src, new_dst = load[src] - op_src, load[tg] + op_dst
    # The largest load among chiplets other than src and dst: the first of the three largest that is neither.
    order = np.argsort(-load)[:3]
    other = np.zeros(m)
    for k in range(m):
        for c in order:
            if c != src[k] and c != tg[k]:
                other[k] = load[c]
                break
    new_max = np.maximum(other, np.maximum(new_src, new_dst))
    # Bytes newly cut minus bytes no longer cut: per op, bytes to neighbours on each chiplet it could touch.
    nbr_chip = a[ctx.inc_nbr]
    on_src = np.bincount(ctx.inc_op, weights=ctx.inc_bytes * (nbr_chip == a[ctx.inc_op]), minlength=g.n_ops)
    on_up = np.bincount(ctx.inc_op, weights=ctx.inc_bytes * (nbr_chip == a[ctx.inc_op] + 1), minlength=g.n_ops)
    on_down = np.bincount(ctx.inc_op, weights=ctx.inc_bytes * (nbr_chip == a[ctx.inc_op] - 1), minlength=g.n_ops)
    up = tg > src
    cut_delta = on_src[ops] - np.where(up, on_up[ops], on_down[ops])
    weights = np.bincount(a, weights=g.weight_bytes, minlength=n_chip)
    peak = np.zeros(n_chip)
    np.maximum.at(peak, a, g.work_bytes.astype(float))
    mem_dst = (weights[tg] + g.weight_bytes[ops] + np.maximum(peak[tg], g.work_bytes[ops])) / ctx.sram[tg]
    first = np.r_[True, a[1:] != a[:-1]]
    last = np.r_[a[1:] != a[:-1], True]
    busy = np.asarray(current.report.chiplet_busy_fraction, dtype=np.float64)
    bott = current.report.bottleneck_chiplet
    onehot = np.zeros((m, KIND_SLOTS))
    onehot[np.arange(m), [MOVE_KINDS[k].slot for k in kinds]] = 1.0
    feats = np.column_stack([
        onehot, np.where(up, 1.0, -1.0), load[src] / top, load[tg] / top, busy[src], busy[tg],
        src == bott, tg == bott, op_src / top, new_max / top - 1.0, new_dst / top,
        np.clip(cut_delta / (top * ctx.hw.link_bytes_per_cycle), -4.0, 4.0), np.minimum(mem_dst, 2.0),
        first[ops], last[ops], np.full(m, np.log(n_chip) / np.log(256.0)),
    ])
    return feats.astype(np.float32)
