"""Expert parallelism: a mixture-of-experts op (Op.experts) split k ways by expert, and which of its edges are
the all-to-all that carries tokens to the experts (dispatch) and back (combine). docs/simulator.md, "Expert
parallelism".

Piece j of k holds experts j E / k .. (j + 1) E / k - 1 when k <= E; when k > E each expert spans the pieces
e k / E .. (e + 1) k / E - 1, each holding 1 / r of its width (w1 and w3's columns, w2's rows: Megatron inside the
expert), running all its rows and writing partial sums that the combine adds. A piece runs its experts' routed rows,
holds and reads (with the chance each is routed to, Experts.hit) their weights, takes in the rows routed to it and
writes their outputs. What the op holds beyond its experts (the combine's adds, a routing side input) is shared
evenly, as a row split.

Dispatch is the edge from the op that produces the tokens (Experts.source); every out-edge is the combine; other
in-edges (routing weights, masks) reach every piece whole. collectives.all_to_all_bytes sizes each message.
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import numpy as np

from partitioner.core.graph import Experts, Op, TensorGraph
from partitioner.model.collectives import all_to_all_bytes, all_to_all_cycles


def owners(count: int, k: int) -> tuple[tuple[tuple[int, ...], int], ...]:
    """For each of k pieces: the experts it holds and the ways each of them is split."""
    if k <= count:
        return tuple((tuple(range(j * count // k, (j + 1) * count // k)), 1) for j in range(k))
    first = [e * k // count for e in range(count + 1)]
    return tuple(((e,), first[e + 1] - first[e]) for e in range(count) for _ in range(first[e], first[e + 1]))


def _hidden(ex: Experts) -> int:
    """The model width: the last product's N (w2 writes the hidden state)."""
    return ex.gemms[-1][1]


def _split_gemm(k_dim: int, n_dim: int, ways: int, hidden: int) -> tuple[int, int]:
    """One 1/ways slice of an expert's product: its inner width is cut (N of w1 and w3, K of w2)."""
    if ways <= 1:
        return k_dim, n_dim
    return (k_dim, -(-n_dim // ways)) if n_dim != hidden else (-(-k_dim // ways), n_dim)


def expert_flops(op: Op) -> tuple[float, float]:
    """(flops, matrix flops) of the op's experts alone, at their routed rows."""
    ex = op.experts
    rows = sum(ex.rows)
    return rows * (ex.row_matrix_flops + ex.row_vector_flops), rows * ex.row_matrix_flops


@lru_cache(maxsize=4096)
def expert_pieces(op: Op, k: int) -> tuple[Op, ...]:
    """The k pieces of an expert-split op, each its own (module docstring)."""
    ex = op.experts
    hidden = _hidden(ex)
    flops, matrix = expert_flops(op)
    extra_flops = max(0, op.flops - round(flops))
    extra_weights = max(0, op.weight_bytes - op.kv_cache_bytes - ex.count * ex.weight_bytes)
    side_in = max(0, op.in_bytes - ex.tokens * ex.token_bytes)
    out = []
    for j, (experts, ways) in enumerate(owners(ex.count, k)):
        rows = sum(ex.rows[e] for e in experts)
        gemms = tuple((1, math.floor(ex.rows[e]), *_split_gemm(kk, n, ways, hidden))
                      for e in experts if ex.rows[e] >= 1 for kk, n in ex.gemms)
        mm = max(math.ceil(rows * ex.row_matrix_flops / ways), sum(2 * b * m * kk * n for b, m, kk, n in gemms))
        vec = math.ceil(rows * ex.row_vector_flops / ways) + -(-extra_flops // k)
        w = -(-len(experts) * ex.weight_bytes // ways) + extra_weights
        read = math.ceil(sum(ex.hit(e) for e in experts) * ex.weight_bytes / ways) + extra_weights
        out.append(replace(op, name=f"{op.name}#{j}", flops=mm + vec, matrix_flops=mm, gemms=gemms or None,
                           weight_bytes=w, weight_read_bytes=min(w, read), kv_cache_bytes=0, shared_weights=(),
                           in_bytes=math.ceil(rows * ex.token_bytes) + side_in,
                           out_bytes=math.ceil(rows * ex.token_bytes)))
    return tuple(out)


def expert_piece(op: Op, k: int) -> Op:
    """The piece the planner, the memory checks and the bounds count for every member (sharding.piece): the real
    piece when all k are alike (uniform routing, k dividing E or E dividing k); otherwise their mean work (no GEMM
    tiling: k of it sum to the pieces' work, so bounds stay bounds) with the largest piece's weights and working set
    (so memory checks never under-count). The simulator runs each piece's own (expert_pieces)."""
    pieces = expert_pieces(op, k)
    first = pieces[0]
    if all(replace(p, name=first.name) == first for p in pieces[1:]):
        return replace(first, name=op.name)
    mean = lambda attr: -(-sum(getattr(p, attr) for p in pieces) // k)  # noqa: E731
    mm = mean("matrix_flops")
    return replace(first, name=op.name, flops=max(mean("flops"), mm), matrix_flops=mm, gemms=None,
                   weight_bytes=max(p.weight_bytes for p in pieces),
                   weight_read_bytes=min(max(p.weight_bytes for p in pieces), max(p.weights_read for p in pieces)),
                   in_bytes=max(p.in_bytes for p in pieces), out_bytes=max(p.out_bytes for p in pieces))


def piece_rows(op: Op, k: int) -> tuple[float, ...]:
    """Rows each of the k pieces runs (an expert split r ways: all its rows on each of its r pieces)."""
    ex = op.experts
    return tuple(sum(ex.rows[e] for e in experts) for experts, _ in owners(ex.count, k))


def is_dispatch(graph: TensorGraph, u: int, v: int) -> bool:
    """Edge u -> v carries the tokens into v's experts."""
    ex = graph.ops[v].experts
    return ex is not None and ex.source is not None and graph.ops[u].name == ex.source


def a2a_edges(graph: TensorGraph, k: np.ndarray) -> np.ndarray:
    """Per edge: a dispatch into, or a combine out of, an expert op split k > 1 ways (no ring, no alignment)."""
    out = np.zeros(graph.n_edges, dtype=bool)
    if not graph.has_experts:
        return out
    for e, (u, v) in enumerate(zip(graph.edge_src.tolist(), graph.edge_dst.tolist())):
        out[e] = (k[v] > 1 and is_dispatch(graph, u, v)) or (k[u] > 1 and graph.ops[u].experts is not None)
    return out


def dispatch_bytes(graph: TensorGraph, u: int, k_u: int, partial: bool, v: int, k_v: int, j: int) -> int:
    """Bytes one piece of producer u sends expert piece j of v: the rows of its tokens routed to j's experts (its
    1/k_u of the tokens, or of their width; all of them from a whole producer or a full-size partial)."""
    ex = graph.ops[v].experts
    return all_to_all_bytes(piece_rows(graph.ops[v], k_v)[j], ex.token_bytes, 1 if partial else k_u)


def combine_bytes(graph: TensorGraph, u: int, k_u: int, j: int, k_v: int, sliced: bool) -> int:
    """Bytes expert piece j of u sends one piece of a consumer: its share of the outputs of j's rows (1/k_v of
    them for a consumer whose pieces take slices: rows, heads or a row-parallel GEMM's inputs; all of them for a
    whole consumer or one whose pieces need every row, a column GEMM)."""
    ex = graph.ops[u].experts
    return all_to_all_bytes(piece_rows(graph.ops[u], k_u)[j], ex.token_bytes, k_v if sliced else 1)


def a2a_terms(graph: TensorGraph, k: int, bw: int, hop: int):
    """(u, v, cycles, summed) per edge u -> v that is an all-to-all when its expert op is split k ways
    (collectives.all_to_all_cycles, the busiest piece's rows): a dispatch into expert op v (summed over v), or an
    expert op u's combine (one per u, whichever consumers: the largest, not summed)."""
    if k <= 1 or not graph.has_experts:
        return
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        if is_dispatch(graph, u, v):            # u's tokens scattered to v's experts
            yield u, v, all_to_all_cycles(max(piece_rows(graph.ops[v], k)), graph.ops[v].experts.token_bytes,
                                          k, bw, hop), True
        elif graph.ops[u].experts is not None:  # u's outputs gathered back: one combine, whichever consumers
            yield u, v, all_to_all_cycles(max(piece_rows(graph.ops[u], k)), graph.ops[u].experts.token_bytes,
                                          k, bw, hop), False


def a2a_cycles_table(graph: TensorGraph, k: int, bw: int, hop: int) -> np.ndarray | float:
    """cycles[u, j]: the all-to-all time (`a2a_terms`) a producer u charges a k-way stage ending before op j: its
    dispatch into an expert op v < j, or, for an expert op, its combine to a consumer w < j. The staged DP's
    estimate, beside the all-gathers; 0 without expert ops."""
    if k <= 1 or not graph.has_experts:
        return 0.0
    out = np.zeros((graph.n_ops, graph.n_ops + 1))
    for u, v, c, summed in a2a_terms(graph, k, bw, hop):
        if summed:
            out[u, v + 1:] += c
        else:
            np.maximum(out[u, v + 1:], c, out=out[u, v + 1:])
    return out


def a2a_cycles_band(graph: TensorGraph, k: int, bw: int, hop: int, ops: np.ndarray, w: int) -> np.ndarray | float:
    """band[r, t] = a2a_cycles_table[ops[r], ops[r] + 1 + t] for t < w: the same charges in the staged DP's band
    layout (partitioner/plan/stage_bands.py); 0 without expert ops."""
    if k <= 1 or not graph.has_experts:
        return 0.0
    row = np.full(graph.n_ops, -1, dtype=np.int64)
    row[ops] = np.arange(len(ops))
    out = np.zeros((len(ops), w))
    for u, v, c, summed in a2a_terms(graph, k, bw, hop):
        r, t = row[u], v - u
        if r < 0 or t >= w:
            continue
        if summed:
            out[r, t:] += c
        else:
            np.maximum(out[r, t:], c, out=out[r, t:])
    return out
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        if is_dispatch(graph, u, v):            # u's tokens scattered to v's experts
            c = all_to_all_cycles(max(piece_rows(graph.ops[v], k)), graph.ops[v].experts.token_bytes, k, bw, hop)
            out[u, v + 1:] += c
        elif graph.ops[u].experts is not None:  # u's outputs gathered back: one combine, whichever consumers
            c = all_to_all_cycles(max(piece_rows(graph.ops[u], k)), graph.ops[u].experts.token_bytes, k, bw, hop)
            np.maximum(out[u, v + 1:], c, out=out[u, v + 1:])
    return out
