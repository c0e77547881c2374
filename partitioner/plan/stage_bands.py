"""The staged DP's stage costs as bands, built once per repeated block: what makes the DP's work grow with a model's
blocks rather than the square of its ops.

The DP (partitioner/plan/staged_dp.py) reads a group's stage costs as a band: band[j, d] is the cost of the stage of
ops j - w + d .. j - 1 (a row per end op j, its first ops ascending), w the longest stage worth considering. This
module computes exactly the costs of stage_costs.group_stage_costs (the same formulas, term for term), but only
inside the band, O(n w) rather than O(n^2), and only for the rows that differ: when the model repeats a block
(partitioner/frontend/blocks.py), a stage inside the middle blocks costs what the same stage one block earlier
costs (its ops, and the edges that touch them, repeat), so the rows of stages ending in blocks 2..N-2 are copies
of one block's rows (`band_sources`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.frontend.blocks import Blocks, periodic_edges
from partitioner.hw.hardware import Hardware
from partitioner.model.collectives import entry_ring_cycles, ring_is_faster
from partitioner.model.cost import (
    _ceil_div, collective_cycles, group_links, next_stage_bytes_per_cycle, serialization_cycles, sharded_op_cycles)
from partitioner.model.experts import a2a_cycles_band, a2a_edges
from partitioner.model.sharding import PARTIAL_AXES, piece
from partitioner.plan.splits import sram_weights
from partitioner.plan.stage_costs import stream_estimate, stream_parts


def band_sources(n: int, blocks: Blocks | None, w: int) -> np.ndarray:
    """src[j] for rows j = 0..n: the row whose costs row j repeats (itself where it is computed). Rows whose every
    stage (first op >= j - w) lies inside blocks 1..N-2 repeat with the block's period; each copies the row in the
    first whole period of them."""
    src = np.arange(n + 1)
    if blocks is None:
        return src
    p = blocks.period
    lo, hi = blocks.start + p + w, blocks.end - p          # rows lo..hi: every stage inside the middle blocks
    if lo + p > hi:
        return src
    j = np.arange(lo + p, hi + 1)
    src[j] = lo + (j - lo) % p
    return src


def periodic_layout(graph: TensorGraph, blocks: Blocks | None, axes: tuple[str, ...], aligned: np.ndarray) -> bool:
    """Whether a stage layout (each op's split axis, each edge's alignment) repeats over the middle blocks as the
    ops and edges do, so that `band_sources` may copy rows under it."""
    if blocks is None:
        return False
    p = blocks.period
    ref = axes[blocks.start + p:blocks.start + 2 * p]
    if any(axes[blocks.start + b * p:blocks.start + (b + 1) * p] != ref for b in range(2, blocks.count - 1)):
        return False
    return periodic_edges(graph, blocks, extra=aligned)


def _edge_bands(graph: TensorGraph, w: int, aligned: np.ndarray, ops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inner, send), each [r, t] for op v = ops[r] and stage ends j = v + 1 + t, t < w: inner, the largest edge
    from v to a consumer before j, leaving out aligned edges (what v all-gathers inside a stage ending at j); send,
    its largest edge to a consumer at or after j (what it ships out of that stage)."""
    row = np.full(graph.n_ops, -1, dtype=np.int64)
    row[ops] = np.arange(len(ops))
    inner = np.zeros((len(ops), w), dtype=np.int64)
    send = np.zeros((len(ops), w), dtype=np.int64)
    for s, d, b, al in zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), graph.edge_bytes.tolist(),
                           aligned.tolist()):
        r = row[s]
        if r < 0:
            continue
        t = d - s                                   # the edge is inside every stage ending after d: t >= d - s
        if not al and t < w:
            np.maximum(inner[r, t:], b, out=inner[r, t:])
        np.maximum(send[r, :min(t, w)], b, out=send[r, :min(t, w)])
    return inner, send


def recv_rows(graph: TensorGraph, starts: np.ndarray, w: int, only: np.ndarray | None = None) -> np.ndarray:
    """rows[r, L - 1], L = 1..w: the bytes a stage of ops starts[r] .. starts[r] + L - 1 takes from ops before it
    (those flagged in `only`, if given), each producer's largest such edge once (stage_costs._recv_bytes, row by
    row)."""
    order = np.argsort(graph.edge_dst, kind="stable")
    dst, src, nbytes = graph.edge_dst[order], graph.edge_src[order], graph.edge_bytes[order]
    big = int(nbytes.max(initial=0)) + 1
    rows = np.zeros((len(starts), w), dtype=np.int64)
    for r, i in enumerate(np.asarray(starts).tolist()):
        lo, hi = np.searchsorted(dst, [i, i + w])
        s, d, b = src[lo:hi], dst[lo:hi], nbytes[lo:hi]
        keep = s < i if only is None else (s < i) & only[s]
        if not keep.any():
            continue
        s, d, b = s[keep], d[keep], b[keep]
        o = np.lexsort((d, s))
        s, d, b = s[o], d[o], b[o]
        first = np.concatenate([[True], s[1:] != s[:-1]])
        gid = np.cumsum(first) - 1
        top = np.maximum.accumulate(gid * big + b) - gid * big     # each producer's running largest edge
        before = np.concatenate([[0], top[:-1]])
        before[first] = 0
        step = np.zeros(w, dtype=np.int64)
        np.add.at(step, d - i, top - before)
        rows[r] = np.cumsum(step)
    return rows


def _skew(per_start: np.ndarray, starts: np.ndarray, first: np.ndarray, n: int) -> np.ndarray:
    """band[r, d] = per_start[row of first[r, d] in starts, w - 1 - d]: the stage of w - d ops from that first op;
    0 where first < 0."""
    w = first.shape[1]
    row = np.zeros(n, dtype=np.int64)
    row[starts] = np.arange(len(starts))
    out = per_start[row[np.maximum(first, 0)], (w - 1 - np.arange(w))[None, :]]
    return np.where(first >= 0, out, 0)


def _from_end(x: np.ndarray, accumulate) -> np.ndarray:
    """out[r, d] = accumulate of x[r, d..w-1]: a stage's sum or max over its ops, from its end op back."""
    return np.flip(accumulate(np.flip(x, axis=1), axis=1), axis=1)


@dataclass(frozen=True, eq=False)
class PieceArrays:
    """Per op, what a k-way stage on one chiplet kind costs under one layout: prefix sums (length n + 1) of the
    pieces' cycles, of the weights they hold in SRAM (`sram_weights`), of their weights that could stay and are read
    whole and of the reads of those that never can (stage_costs.stream_parts); each piece's whole-read weights and
    working set, the prefix count of ops the kind cannot run, and the layout."""

    k: int
    cyc: np.ndarray
    wts: np.ndarray
    whole: np.ndarray
    forced: np.ndarray
    piece_whole: np.ndarray
    work: np.ndarray
    banned: np.ndarray
    axes: tuple[str, ...]
    aligned: np.ndarray


def piece_arrays(graph: TensorGraph, hw: Hardware, chiplet: int, k: int, layout_of: tuple, relaxed: bool
                 ) -> PieceArrays:
    axes, aligned = layout_of
    chip = hw.chiplets[chiplet]
    pieces = [piece(op, k, axes[i]) for i, op in enumerate(graph.ops)]
    pg = TensorGraph.build(graph.name, pieces, [])
    whole, forced = stream_parts(pieces, chip.sram_bytes)

    def prefix(x) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(x)])

    return PieceArrays(k, prefix(sharded_op_cycles(graph, chip, k, axes)).astype(float),
                       prefix(sram_weights(pg, hw, relaxed)), prefix(whole), prefix(forced), whole, pg.work_bytes,
                       prefix([op.op_type in chip.unsupported_ops for op in graph.ops]), axes,
                       # an expert op's dispatch and combine are all-to-alls, not all-gathers (as stage_costs._tables)
                       np.asarray(aligned) | a2a_edges(graph, np.full(graph.n_ops, 2)))


def fit_width(pa: PieceArrays, sram: int) -> int:
    """The longest stage (in ops, at least 1) whose pieces fit `sram`: weights held plus the largest working set,
    and no op the chiplet kind cannot run (both only grow as a stage grows, so each first op's longest is a
    prefix)."""
    n, best = len(pa.work), 1
    for i in range(n):
        hi = min(int(np.searchsorted(pa.wts, pa.wts[i] + sram, "right")) - 1,
                 int(np.searchsorted(pa.banned, pa.banned[i], "right")) - 1)
        if hi - i <= best:
            continue
        ok = pa.wts[i + 1:hi + 1] - pa.wts[i] + np.maximum.accumulate(pa.work[i:hi]) <= sram
        best = max(best, int(np.argmin(ok)) if not ok.all() else hi - i)
    return best


def compute_width(pa: PieceArrays, limit: float) -> int:
    """The longest stage (in ops, at least 1) whose pieces' cycles stay within `limit`: no stage longer can cost
    less than `limit` (a stage costs at least its compute)."""
    if not np.isfinite(limit):
        return len(pa.work)
    reach = np.searchsorted(pa.cyc, pa.cyc[:-1] + limit, "right") - 1 - np.arange(len(pa.work))
    return max(int(reach.max(initial=1)), 1)


def stage_bands(graph: TensorGraph, hw: Hardware, chiplet: int, pa: PieceArrays, w: int, ends: np.ndarray,
                latency: bool = False, relaxed: bool = False, cache: dict | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(copies, ring, excess), each [r, d] for the stage of ops ends[r] - w + d .. ends[r] - 1 on the pa.k chiplets
    from `chiplet`: group_stage_costs' two costs (inf where the stage does not fit or starts before op 0), and the
    bytes each member streams beyond its SRAM in the relaxed estimate (stage_costs.stream_estimate; 0 unless
    `relaxed`). `cache` keeps the edge bands per layout and width."""
    k, chip = pa.k, hw.chiplets[chiplet]
    ends = np.asarray(ends, dtype=np.int64)
    first = ends[:, None] - w + np.arange(w)[None, :]           # each band cell's first op
    valid = first >= 0
    f0 = np.maximum(first, 0)
    peak = _from_end(np.where(valid, pa.work[f0], 0), np.maximum.accumulate)    # largest working set in the stage
    fits = valid & (pa.wts[ends][:, None] - pa.wts[f0] + peak <= chip.sram_bytes) & (
        pa.banned[ends][:, None] == pa.banned[f0])
    compute = pa.cyc[ends][:, None] - pa.cyc[f0]
    cache = {} if cache is None else cache
    ops = np.unique(f0)
    key = ("edges", pa.aligned.tobytes(), w, ops.tobytes())
    if key not in cache:
        cache[key] = _edge_bands(graph, w, pa.aligned, ops)
    inner, send = cache[key]
    row = np.zeros(graph.n_ops, dtype=np.int64)
    row[ops] = np.arange(len(ops))
    e0 = row[f0]                                # each cell's first op in _edge_bands' rows
    t = (w - 1 - np.arange(w))[None, :]         # ops first[r, d] .. ends[r] - 1: their edges' column in _edge_bands
    cross = _from_end(np.where(valid, send[e0, t], 0), np.cumsum)
    out_bw = next_stage_bytes_per_cycle(hw, chiplet + k - 1)
    if out_bw < hw.fastest_link_bytes_per_cycle:   # every member's share leaves over one slower link
        ship = _ceil_div(cross, out_bw).astype(float)
    else:
        ship = serialization_cycles(-(-cross // k), hw).astype(float)
    if k > 1:
        partial = np.array([ax in PARTIAL_AXES for ax in pa.axes])
        ag = np.where(partial[ops][:, None], collective_cycles("all-reduce", inner, k, hw, chiplet),
                      collective_cycles("all-gather", inner, k, hw, chiplet)) + a2a_cycles_band(
            graph, k, *group_links(hw, chiplet, k), ops, w)
        gather = _from_end(np.where(valid, ag[e0, t], 0), np.cumsum)
        starts = np.unique(first[valid])
        recv = _skew(recv_rows(graph, starts, w), starts, first, graph.n_ops)
        recv_partial = _skew(recv_rows(graph, starts, w, partial), starts, first, graph.n_ops)
        direct = ~ring_is_faster("all-reduce", recv_partial, k, *group_links(hw, chiplet, k)) if k > 2 else True
        copies = (k * serialization_cycles(recv + direct * (k - 1) * recv_partial, hw)).astype(float)
        ring = np.minimum(copies, entry_ring_cycles(recv, k, *group_links(hw, chiplet, k)))
    else:
        gather = np.zeros(first.shape)
        copies = ring = np.zeros(first.shape)
    links = gather + ship
    out = []
    for entry in (copies, ring):
        # the collectives, the shipping and the entry all cross the group's own links: their times add up
        cost = compute + links + entry if latency else np.maximum(compute, links + entry)
        out.append(np.where(fits, cost, np.inf))
    excess = np.zeros(first.shape, dtype=np.int64)
    if relaxed:
        largest = _from_end(np.where(valid, pa.piece_whole[f0], 0), np.maximum.accumulate)
        excess = np.where(valid, stream_estimate(pa.whole[ends][:, None] - pa.whole[f0],
                                                 pa.forced[ends][:, None] - pa.forced[f0], largest, peak,
                                                 chip.sram_bytes), 0)
    return out[0], out[1], excess


def position_cells(positions: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, column) for a DP over the cut positions `positions` (sorted op indices, 0 and n among them) with
    stages of at most w ops: first[jj, dd] is the first op of the stage from position jj - wp + dd to position jj
    (-1 where that start is more than w ops back or before 0), column its column in an op band of width w; wp, the
    most positions within w ops of one, is their width. With every op a position, first[j, d] = j - w + d."""
    lo = np.searchsorted(positions, positions - w, "left")
    idx = np.arange(len(positions))
    wp = max(int((idx - lo).max(initial=1)), 1)
    ii = idx[:, None] - wp + np.arange(wp)[None, :]
    ok = ii >= lo[:, None]
    first = np.where(ok, positions[np.maximum(ii, 0)], -1)
    return first, np.where(ok, first - positions[:, None] + w, 0)
