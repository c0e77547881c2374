"""Repeated blocks in the topological order: a transformer's N identical layers, found from the ops themselves.

Exporters name layers (granularity.py reads those names), but names are not needed to see the repetition: in the
topological order, the ops of a stack of identical layers repeat with a period p, op for op, in type, work and
bytes, and so do their edges, taken relative to the block they sit in. `find_blocks` returns the longest such run
(`Blocks`: first op, period, count); the ops before it (embeddings, masks, rotary tables) and after it (the final
norm, the LM head) are the prefix and the suffix.

The staged DP (partitioner/plan/staged_dp.py) uses it twice: a stage's cost depends only on its ops and the edges
that touch them, so the cost of every stage inside the middle blocks repeats with the period and is computed for
one block (partitioner/plan/stage_bands.py); and on a large model its stages start and end only at a block's
candidate cuts (`block_cuts`), so its work grows with the blocks, not the ops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from partitioner.core.graph import TensorGraph

MIN_BLOCKS = 2
"""Fewest repetitions that count as blocks. Stage costs repeat only from the third block on (the middle blocks,
1..N-2, have blocks on both sides), so a model of two blocks gains nothing but is still found."""


@dataclass(frozen=True)
class Blocks:
    """`count` blocks of `period` ops each, the first starting at op `start`."""

    start: int
    period: int
    count: int

    @property
    def end(self) -> int:
        """One past the last op of the last block."""
        return self.start + self.period * self.count

    def block_of(self, op: int) -> int | None:
        """The block index of `op`, or None outside the blocks."""
        return (op - self.start) // self.period if self.start <= op < self.end else None


def op_signatures(graph: TensorGraph) -> np.ndarray:
    """A small integer per op, equal for ops with the same type, work, bytes and matrix products: the identity of
    an op up to its name."""
    ids: dict[tuple, int] = {}
    out = np.empty(graph.n_ops, dtype=np.int64)
    for i, op in enumerate(graph.ops):
        key = (op.op_type, op.flops, op.matrix_flops, op.weight_bytes, op.weights_read, op.in_bytes, op.out_bytes,
               op.gemms, op.kv_cache_bytes)
        out[i] = ids.setdefault(key, len(ids))
    return out


def find_blocks(graph: TensorGraph, min_count: int = MIN_BLOCKS) -> Blocks | None:
    """The repeated blocks covering the most ops (ties: the shortest period, then the earliest start) whose ops
    repeat op for op (`op_signatures`) and whose middle blocks (all but the first and last) have the same edges
    relative to their block (`periodic_edges`); None when no period repeats `min_count` times."""
    sig = op_signatures(graph)
    n = graph.n_ops
    best: tuple[int, int, int] | None = None      # (-covered, period, start)
    for p in range(1, n // min_count + 1):
        same = np.concatenate([[False], sig[p:] == sig[:-p], [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        starts, stops = edges[::2], edges[1::2]        # runs of t with sig[t] == sig[t + p]
        if not starts.size:
            continue
        count = (stops - starts + p) // p              # a run of L matches spans L + p ops
        k = int(np.argmax(count))
        if count[k] < min_count:
            continue
        key = (-int(count[k]) * p, p, int(starts[k]))
        if best is None or key < best:
            best = key
    if best is None:
        return None
    covered, p, start = -best[0], best[1], best[2]
    blocks = Blocks(start, p, covered // p)
    return blocks if periodic_edges(graph, blocks) else None


def _labels(graph: TensorGraph, blocks: Blocks, inbound: bool, extra: np.ndarray | None = None
            ) -> dict[int, list[tuple]]:
    """Per block, the sorted labels of its ops' in-edges (`inbound`) or out-edges: the op's offset in the block,
    the other end as (blocks apart, offset) inside the blocks or its op id outside them, the bytes, and `extra`'s
    value for the edge when given."""
    out: dict[int, list[tuple]] = {b: [] for b in range(blocks.count)}
    p, s0 = blocks.period, blocks.start
    more = [0] * graph.n_edges if extra is None else np.asarray(extra).tolist()
    for s, d, b, x in zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), graph.edge_bytes.tolist(), more):
        mine, other = (d, s) if inbound else (s, d)
        bm = blocks.block_of(mine)
        if bm is None:
            continue
        bo = blocks.block_of(other)
        far = (1, other, 0) if bo is None else (0, bm - bo, (other - s0) % p)
        out[bm].append(((mine - s0) % p, far, b, x))
    return {k: sorted(v) for k, v in out.items()}


def periodic_edges(graph: TensorGraph, blocks: Blocks, extra: np.ndarray | None = None) -> bool:
    """Whether every middle block (1..count-2) has the same in- and out-edges as block 1, each labelled relative to
    its block (`_labels`, with `extra`'s per-edge values): then a stage inside the middle blocks costs what the same
    stage one block earlier does."""
    for inbound in (True, False):
        labels = _labels(graph, blocks, inbound, extra)
        if any(labels[b] != labels[1] for b in range(2, blocks.count - 1)):
            return False
    return True


def cut_bytes(graph: TensorGraph) -> np.ndarray:
    """cut[j] for j = 0..n: the bytes crossing a cut before op j, each producer's largest edge across it once."""
    n = graph.n_ops
    step = np.zeros(n + 2, dtype=np.int64)
    largest: dict[int, list[tuple[int, int]]] = {}
    for s, d, b in zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), graph.edge_bytes.tolist()):
        largest.setdefault(s, []).append((d, b))
    for s, outs in largest.items():
        # the producer's tensor crosses every cut j in (s, last consumer]; its size there is its largest edge to a
        # consumer >= j: a step function falling at each consumer
        outs.sort()
        top = 0
        for d, b in reversed(outs):
            if b > top:
                step[s + 1] += b - top      # rises at s + 1, falls again after d
                step[d + 1] -= b - top
                top = b
    return np.cumsum(step)[:n + 1]


def block_cuts(graph: TensorGraph, blocks: Blocks, heavy_share: float) -> tuple[int, ...]:
    """The offsets (0..period-1) in a block where a large model's stages may start: before and after each heavy op
    (at least `heavy_share` of the block's flops), so any two of them can land in different stages, and where the
    least activation crosses (the residual stream between sublayers), so stages hand over the least. Taken from
    block 1 (a middle block)."""
    p, first = blocks.period, blocks.start + blocks.period
    flops = graph.flops[first:first + p].astype(float)
    heavy = np.flatnonzero(flops >= heavy_share * flops.sum())
    cut = cut_bytes(graph)[first:first + p]
    keep = {0} | {int(r) for r in heavy} | {int(r) + 1 for r in heavy if r + 1 < p}
    keep |= {int(r) for r in np.flatnonzero(cut == cut.min())}
    return tuple(sorted(keep))
