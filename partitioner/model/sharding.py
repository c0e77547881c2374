"""How an op splits k ways across a group of chiplets (intra-op parallelism): the one place that says it.

An op with shard degree k and assignment chiplet c runs as k pieces on the consecutive chiplets c..c+k-1 in
pipeline order (its *group*). Which axis it splits along depends on its type (docs/simulator.md, S1-S5):

  column       MatMul/Gemm with a weight matrix (Megatron ColumnParallelLinear): each piece holds 1/k of the
               weight's output columns, does 1/k of the MACs and writes 1/k of the output.
  head         MatMul between two activations (attention scores, context): each piece takes 1/k of the heads.
  out_channel  Conv: each piece holds 1/k of the filters and writes 1/k of the output channels.
  spatial      Conv, where its out_channel piece is slower on the chiplet (rule S9, cost.keep_column: early CNN
               layers, whose 64 channels cut k ways leave most of a wide array idle): each piece holds all the
               filters and writes 1/k of the output rows (image height), holding its input rows plus a halo
               (core/window.py, docs S11).
  vocab        Gather from an embedding table (vocabulary-parallel): each piece holds 1/k of the rows, looks up
               the tokens that fall in its range and writes a full-size partial result (zeros elsewhere).
  row          every other op (elementwise, normalisation, softmax, reshapes): each piece computes 1/k of the
               output rows; its (small) weights, e.g. a LayerNorm's scale, are replicated. An element-wise piece
               holds 1/k of its inputs, a pooling window's its rows plus halo (docs S11); the others their whole
               inputs.
  expert       a mixture-of-experts op (Op.experts): each piece holds 1/k of the experts (or 1/r of one expert's
               width when k > E) and runs the rows routed to them; tokens reach it and return by an all-to-all
               (partitioner/model/experts.py).

Alignment (Megatron): on one group, an op whose pieces write column or head slices feeds a consumer that can
work on its slice with no collective at all (`layout`): an attention MatMul or an elementwise/reshaping op takes
the same heads (axis *head*), and a weight GEMM becomes *row_parallel* (RowParallelLinear: 1/k of the weight's
rows, reads its slice, writes a full-size partial that is all-reduced). So Q/K/V -> attention -> output projection
and FC1 -> FC2 need one all-reduce each, as in Megatron-LM.

Otherwise every piece reads its op's full inputs. A consumer needs the whole output, so the pieces' results travel to it:
the 1/k slices of a split output are all-gathered (each piece sends its slice to every chiplet that consumes it;
between two ops on the same group this is a direct all-gather, k(k-1) neighbour-routed messages), and the full-
size partials of a vocab split are all-reduced (each piece sends its partial to every consumer chiplet). The
simulator runs these as real messages: `expand` rewrites the graph into pieces with exactly those edges, or, where
partitioner/model/collectives.py picks a ring (docs S6-S7), into ring relay ops and chunk messages.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from partitioner.model.collectives import Ring, plan_rings, relay, ring_edges
from partitioner.model.experts import a2a_edges, combine_bytes, dispatch_bytes, expert_piece, expert_pieces, \
    is_dispatch
from partitioner.core.graph import Op, TensorGraph
from partitioner.core.window import ELEMENTWISE, sliced_in_bytes

AXES = ("column", "head", "out_channel", "spatial", "vocab", "row", "expert")
WEIGHT_GEMM_MIN_BYTES = 4096
"""A MatMul/Gemm whose initializers are smaller than this (shape constants, a scalar scale) multiplies two
activations: attention, split by heads. At or above it, it has a weight matrix and splits by columns."""


def split_axis(op: Op) -> str:
    """The axis along which `op` splits (module docstring)."""
    if op.experts is not None:
        return "expert"
    if op.op_type in ("MatMul", "Gemm"):
        return "column" if op.weight_bytes >= WEIGHT_GEMM_MIN_BYTES else "head"
    if op.op_type in ("Conv", "ConvTranspose") and op.weight_bytes > 0:
        return "out_channel"
    if op.op_type == "Gather" and op.weight_bytes >= WEIGHT_GEMM_MIN_BYTES:
        return "vocab"
    return "row"


ALIGNED_TYPES = frozenset({"Add", "Sub", "Mul", "Div", "Softmax", "Relu", "Gelu", "Erf", "Tanh", "Sigmoid", "Cast",
                           "Where", "Dropout", "Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
                           "FastGelu", "BiasGelu"})
"""Row-axis op types that can work on the head/column slices of their group's producers (module docstring)."""
PARTIAL_AXES = ("vocab", "row_parallel")
"""Axes whose pieces write full-size partial sums (all-reduced) rather than slices."""
SLICE_READERS = ("row", "head", "row_parallel")
"""Axes whose pieces need only a slice of an expert op's output (its rows, or its columns): a combine sends each
1/k of the rows it routed (experts.combine_bytes)."""


def possible_axes(op: Op) -> tuple[str, ...]:
    """Every axis `op` may take in some context (`layout`): its own, row_parallel for a column GEMM, head for an
    aligned row op, spatial for a Conv (rule S9). The bound takes the cheapest."""
    base = split_axis(op)
    if base == "column":
        return (base, "row_parallel")
    if base == "row" and op.op_type in ALIGNED_TYPES:
        return (base, "head")
    if base == "out_channel" and op.op_type == "Conv":
        return (base, "spatial")
    return (base,)


def collective(op: Op, k: int, axis: str | None = None) -> str:
    """The collective that delivers a k-way split op's output to its consumers."""
    if k <= 1:
        return "none"
    if (axis or split_axis(op)) == "expert":
        return "all-to-all"
    return "all-reduce" if (axis or split_axis(op)) in PARTIAL_AXES else "all-gather"


def layout(graph: TensorGraph, assignment: np.ndarray, shard: np.ndarray | None,
           keep_column: Callable[[Op, int, int], bool] | None = None) -> tuple[tuple[str, ...], np.ndarray]:
    """(axis per op in context, aligned flag per edge). An edge u -> v is aligned when both ops share a group of
    k > 1 and u writes column or head slices; then v takes head (attention MatMul, ALIGNED_TYPES: its other
    inputs, e.g. an attention mask, still reach every piece in full) or row_parallel (a column GEMM, whose one
    activation input must be such a slice), and u_i feeds only v_i. `keep_column(op, k, chiplet)` (docs S8,
    cost.keep_column) may keep such a GEMM a column split instead: its input slices are then all-gathered. The same
    rule decides a split Conv (docs S9): out_channel where it keeps it, else spatial; without a rule Convs take
    out_channel. Rule S12: an ALIGNED_TYPES op on a Conv's out_channel slices takes head (the same channels), and
    edges between pieces that hold rows (spatial Convs, pooling windows, element-wise ops on rows) are aligned too:
    rows to an element-wise op go u_i -> v_i, rows to a windowed op as its halo (expand)."""
    a = np.asarray(assignment, dtype=np.int64)
    k = shard_degrees(graph, shard)
    axes = [split_axis(op) if k[i] > 1 else "none" for i, op in enumerate(graph.ops)]
    if keep_column is not None:
        for i, op in enumerate(graph.ops):
            if axes[i] == "out_channel" and op.op_type == "Conv" and not keep_column(op, int(k[i]), int(a[i])):
                axes[i] = "spatial"
    src, dst = graph.edge_src, graph.edge_dst
    same = (a[src] == a[dst]) & (k[src] == k[dst]) & (k[src] > 1)
    aligned = np.zeros(graph.n_edges, dtype=bool)
    by_dst: dict[int, list[int]] = {}
    for e in np.flatnonzero(same).tolist():
        by_dst.setdefault(int(dst[e]), []).append(e)
    rows = [ax in ("spatial", "row") and op.window is not None for ax, op in zip(axes, graph.ops)]
    for v in sorted(by_dst):        # topological order: producers' axes are final
        op = graph.ops[v]
        base = split_axis(op)
        sliced = [e for e in by_dst[v] if axes[int(src[e])] in ("column", "head")]
        if not sliced and base == "row" and op.op_type in ALIGNED_TYPES:     # a Conv's channel slices (S12)
            sliced = [e for e in by_dst[v] if axes[int(src[e])] == "out_channel"]
        if not sliced:
            _align_rows(graph, v, [e for e in by_dst[v] if rows[int(src[e])]], axes, rows, aligned)
            continue
        if base == "head" or (base == "row" and op.op_type in ALIGNED_TYPES):
            axes[v] = "head"
        elif base == "column" and len(sliced) == len(by_dst[v]) == 1 and not (
                keep_column is not None and keep_column(op, int(k[v]), int(a[v]))):
            axes[v] = "row_parallel"
        else:
            continue
        aligned[sliced] = True
    return tuple(axes), aligned


def _align_rows(graph: TensorGraph, v: int, rowed: list[int], axes: list[str], rows: list[bool],
                aligned: np.ndarray) -> None:
    """Rule S12: on one group, in-edges of v from producers whose pieces hold output rows (bounds(H, k)) need no
    collective when v works on rows too: an element-wise op takes its piece's rows (u_i feeds v_i), a windowed op
    (spatial Conv, pooling) its rows plus halo from its neighbours (core/window.py Window.halo, in expand)."""
    op = graph.ops[v]
    if not rowed or axes[v] not in ("row", "spatial"):
        return
    if op.window is not None:
        rowed = [e for e in rowed if (graph.ops[int(graph.edge_src[e])].window or op.window).out_rows
                 == op.window.in_rows]
    elif not (axes[v] == "row" and op.op_type in ELEMENTWISE):
        return
    if rowed:
        aligned[rowed] = True
        rows[v] = True


def _part(x: int, k: int) -> int:
    return -(-int(x) // k)


def piece(op: Op, k: int, axis: str | None = None) -> Op:
    """The op each of the k pieces runs along `axis` (default: its own, split_axis): 1/k (rounded up) of the work,
    of the split weights and of the output (full-size partials for vocab and row_parallel); full inputs, except
    1/k for head and row_parallel pieces, which read only their slice, and the slice core/window.py gives a
    spatial piece (its input rows plus the halo its kernel reads) and a row piece of an element-wise op (1/k) or a
    pooling window (rows plus halo)."""
    if k <= 1:
        return op
    axis = axis or split_axis(op)
    if axis == "expert":
        return expert_piece(op, k)
    split_weights = split_axis(op) != "row" and axis != "spatial"
    w = _part(op.weight_bytes, k) if split_weights else op.weight_bytes
    wr = op.weight_read_bytes
    if wr is not None and split_weights:
        wr = min(_part(wr, k), w)
    # A decode step's KV cache sits inside weight_bytes (per head, so it splits with them)
    kv = min(_part(op.kv_cache_bytes, k), w) if split_weights else op.kv_cache_bytes
    gemms = None if op.gemms is None else tuple(_piece_gemm(g, k, axis) for g in op.gemms)
    # An uneven split's largest piece may do a little more than 1/k of the matrix work (its GEMM dims round up).
    matrix = max(_part(op.matrix_flops, k), sum(2 * b * m * kk * n for b, m, kk, n in gemms or ()))
    # a split op's piece holds a slice of a shared tensor: never counted as the same tensor as another op's
    shared = () if split_weights else op.shared_weights
    held = sliced_in_bytes(op.op_type, op.window, op.in_bytes, k) if axis in ("spatial", "row") else None
    return replace(op, name=op.name, flops=max(_part(op.flops, k), matrix), matrix_flops=matrix,
                   weight_bytes=w, weight_read_bytes=wr, gemms=gemms, kv_cache_bytes=kv, shared_weights=shared,
                   in_bytes=_part(op.in_bytes, k) if axis in ("head", "row_parallel") else
                   op.in_bytes if held is None else held,
                   out_bytes=op.out_bytes if axis in PARTIAL_AXES else _part(op.out_bytes, k))


def _piece_gemm(gemm: tuple[int, int, int, int], k: int, axis: str) -> tuple[int, int, int, int]:
    """The (batch, M, K, N) product one of k pieces runs: a column, out-channel or vocab split takes 1/k of N (the
    weight's output columns; a Conv's im2col N is its output channels), head 1/k of the batch (heads), row_parallel
    1/k of K (partial sums), row and spatial 1/k of M (its rows; a Conv's output pixels). Dims round up: the
    largest piece sets the time."""
    b, m, kk, n = gemm
    if axis in ("column", "out_channel", "vocab"):
        return b, m, kk, _part(n, k)
    if axis == "head":
        return _part(b, k), m, kk, n
    if axis == "row_parallel":
        return b, m, _part(kk, k), n
    return b, _part(m, k), kk, n


def piece_bytes(op: Op, k: int, nbytes: int, axis: str | None = None) -> int:
    """Bytes one piece sends over an out-edge of `nbytes`: its slice, or a full partial (vocab, row_parallel)."""
    if k <= 1 or (axis or split_axis(op)) in PARTIAL_AXES:
        return int(nbytes)
    return _part(nbytes, k)


def shard_degrees(graph: TensorGraph, shard: np.ndarray | None) -> np.ndarray:
    """The shard degree per op as int64 (all ones for None)."""
    if shard is None:
        return np.ones(graph.n_ops, dtype=np.int64)
    return np.asarray(shard, dtype=np.int64)


def check_groups(graph: TensorGraph, n_chiplets: int, assignment: np.ndarray, shard: np.ndarray | None
                 ) -> list[str]:
    """Shard degrees that are not positive or run past the package, and edges that break pipeline order between
    groups: for u -> v, either both ops have the same group, or u's last chiplet <= v's first chiplet."""
    if shard is None:
        return []
    k = np.asarray(shard)
    if k.shape != (graph.n_ops,) or not np.issubdtype(k.dtype, np.integer):
        return [f"shard has shape {k.shape} and dtype {k.dtype}, expected ({graph.n_ops},) integers"]
    a = np.asarray(assignment, dtype=np.int64)
    problems = []
    for i in np.flatnonzero(k < 1).tolist():
        problems.append(f"op {graph.ops[i].name} has shard degree {int(k[i])}, expected at least 1")
    for i in np.flatnonzero((k >= 1) & (a + k > n_chiplets)).tolist():
        problems.append(f"op {graph.ops[i].name} is split {int(k[i])} ways from chiplet {int(a[i])}, past the "
                        f"package's last chiplet {n_chiplets - 1}")
    if problems:
        return problems
    src, dst = graph.edge_src, graph.edge_dst
    same = (a[src] == a[dst]) & (k[src] == k[dst])
    back = np.flatnonzero(~same & (a[src] + k[src] - 1 > a[dst]))
    for e in back.tolist():
        u, v = int(src[e]), int(dst[e])
        problems.append(f"edge {graph.ops[u].name} -> {graph.ops[v].name} goes backwards between groups "
                        f"(chiplets {_span(a[u], k[u])} -> {_span(a[v], k[v])})")
    return problems


def _span(c: int, k: int) -> str:
    return str(int(c)) if k == 1 else f"{int(c)}..{int(c + k - 1)}"


@dataclass(frozen=True)
class Expanded:
    """A graph rewritten into pieces: `graph` has one op per piece (pieces of an op consecutive, so topological
    order holds), `assignment` the chiplet of each piece, `owner` the original op of each piece and `collective`
    per piece the collective its out-edges form ("none" for whole ops)."""

    graph: TensorGraph
    assignment: np.ndarray
    owner: np.ndarray
    collective: tuple[str, ...]
    engine: np.ndarray | None = None
    """Per piece: True for a ring relay (it runs on its chiplet's collective engine, docs R4c)."""
    group: np.ndarray | None = None
    """Per piece: an id of its group (first chiplet x (largest degree + 1) + degree), -1 for a whole op; an
    entry ring's relays take their consumer group's."""


EXPAND_CACHE = 8
"""Plans whose pieces `expand` keeps: a plan's residency, checks and simulation each ask for its pieces."""
EXPAND_CACHE_SIZE = 2_000_000
"""Pieces plus piece edges the kept plans may hold in all (a 512-chiplet LLM plan's pieces run to hundreds of MB):
the oldest go first; the newest plan is always kept."""
_expanded: OrderedDict = OrderedDict()


def expand(graph: TensorGraph, assignment: np.ndarray, shard: np.ndarray | None,
           links: tuple[int, int] | None = None, keep_column: Callable[[Op, int, int], bool] | None = None
           ) -> Expanded:
    """`_expand`, memoised for the last EXPAND_CACHE plans of EXPAND_CACHE_SIZE pieces and piece edges in all
    (graph and keep_column by identity, the plan by value; the arrays read-only): the same plan's pieces serve its
    residency, its memory check, its ceiling and its simulation."""
    a = np.asarray(assignment, dtype=np.int64)
    k = shard_degrees(graph, shard)
    key = (id(graph), a.tobytes(), k.tobytes(), links, id(keep_column))
    hit = _expanded.get(key)
    if hit is not None and hit[0] is graph and hit[1] is keep_column:
        _expanded.move_to_end(key)
        return hit[2]
    ex = _expand(graph, a, k, links, keep_column)
    for arr in (ex.assignment, ex.owner, ex.engine, ex.group):
        if arr is not None:
            arr.setflags(write=False)
    _expanded[key] = (graph, keep_column, ex)
    while len(_expanded) > 1 and (len(_expanded) > EXPAND_CACHE or sum(
            e.graph.n_ops + e.graph.n_edges for _, _, e in _expanded.values()) > EXPAND_CACHE_SIZE):
        _expanded.popitem(last=False)
    return ex


def _expand(graph: TensorGraph, assignment: np.ndarray, shard: np.ndarray | None,
            links: tuple[int, int] | None = None, keep_column: Callable[[Op, int, int], bool] | None = None
            ) -> Expanded:
    """Pieces as ops; edge u->v of b bytes becomes u_i -> v_j of piece_bytes(u, k_u, b) for every pair (direct
    collectives). With `links` = (link bytes per cycle, hop cycles), the rings collectives.plan_rings picks
    (a split op's own collective, S6; a tensor entering a group, S7) run as relay ops and chunk messages instead,
    each ring's relays placed just before its first consumer in topological order. keep_column: as for layout."""
    a = np.asarray(assignment, dtype=np.int64)
    k = shard_degrees(graph, shard)
    axes, aligned = layout(graph, a, k, keep_column)
    kinds = [collective(op, int(k[i]), axes[i]) for i, op in enumerate(graph.ops)]
    a2a = a2a_edges(graph, k)
    own, entry = plan_rings(graph, a, k, kinds, aligned | a2a, links)
    before: dict[int, list[Ring]] = {}
    for ring in list(own.values()) + list(entry.values()):      # a producer's own ring before its entry rings
        before.setdefault(ring.before, []).append(ring)
    ops: list[Op] = []
    first = np.zeros(graph.n_ops, dtype=np.int64)
    chips: list[int] = []
    owner: list[int] = []
    coll: list[str] = []
    for i, op in enumerate(graph.ops):
        for ring in before.get(i, []):
            ring.base = len(ops)
            for s, phase in enumerate(ring.phases, start=1):
                for j in range(ring.k):
                    ops.append(relay(graph.ops[ring.owner], phase, s, j))
                    chips.append(ring.first + j)
                    owner.append(ring.owner)
                    coll.append("relay")
        first[i] = len(ops)
        ki = int(k[i])
        p = piece(op, ki, axes[i] if ki > 1 else None)
        own_pieces = expert_pieces(op, ki) if ki > 1 and axes[i] == "expert" else None
        for j in range(ki):
            ops.append(p if ki == 1 else own_pieces[j] if own_pieces else replace(p, name=f"{op.name}#{j}"))
            chips.append(int(a[i]) + j)
            owner.append(i)
            coll.append(kinds[i])
    edges = []
    for ring in own.values():
        edges.extend(ring_edges(ring, [int(first[ring.owner]) + j for j in range(ring.k)]))
    for (u, _), ring in entry.items():
        mine = own.get(u)
        held = int(first[u]) if mine is None or mine.reduced is None else mine.reduced
        edges.extend(ring_edges(ring, [held + (j if k[u] > 1 else 0) for j in range(ring.k)]))
    for e, (u, v, b) in enumerate(zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), graph.edge_bytes.tolist())):
        pb = piece_bytes(graph.ops[u], int(k[u]), b, axes[u] if k[u] > 1 else None)
        if a2a[e]:
            edges.extend(_all_to_all(graph, u, v, k, axes, first))
            continue
        window = graph.ops[v].window
        if aligned[e] and window is not None and axes[v] in ("row", "spatial"):     # its rows plus halo (S12)
            edges.extend((int(first[u]) + i, int(first[v]) + j, hb) for i, j, hb in window.halo(b, int(k[u])))
            continue
        if aligned[e]:      # u_i feeds only v_i, on the same chiplet
            edges.extend((int(first[u]) + i, int(first[v]) + i, pb) for i in range(int(k[u])))
            continue
        mine, into = own.get(u), entry.get((u, (int(a[v]), int(k[v]))))
        if mine is not None and _same_group(a, k, u, v) or into is not None:    # a ring's last step, same chiplet
            last = (into or mine).last
            edges.extend((last + j, int(first[v]) + j, b) for j in range(int(k[v])))
            continue
        src = [int(first[u]) + i for i in range(int(k[u]))]
        if mine is not None and mine.reduced is not None:      # reduced chunks, not full partials
            src, pb = [mine.reduced + i for i in range(int(k[u]))], _part(b, int(k[u]))
        for s in src:
            for j in range(int(k[v])):
                edges.append((s, int(first[v]) + j, pb))
    g = TensorGraph.build(graph.name, ops, edges, input_bytes=graph.input_bytes, metadata=dict(graph.metadata))
    own_op = np.asarray(owner, dtype=np.int64)
    n1 = _group_base(k)
    group = np.where(k[own_op] > 1, a[own_op] * n1 + k[own_op], -1)
    engine = np.array([c == "relay" for c in coll], dtype=bool)
    for ring in entry.values():     # an entry ring's relays belong to the consumer group: its consumers wait on them
        group[ring.base:ring.base + ring.k * len(ring.phases)] = ring.first * n1 + ring.k
    return Expanded(g, np.asarray(chips, dtype=np.int64), own_op, tuple(coll), engine, group)


def _all_to_all(graph: TensorGraph, u: int, v: int, k: np.ndarray, axes: tuple[str, ...], first: np.ndarray
                ) -> list[tuple[int, int, int]]:
    """The messages of a dispatch (u's tokens into expert op v's pieces) or a combine (expert op u's outputs to v's
    pieces), one per pair of pieces, sized by the routing (partitioner/model/experts.py)."""
    ku, kv = int(k[u]), int(k[v])
    pairs = [(i, j) for i in range(ku) for j in range(kv)]
    if kv > 1 and is_dispatch(graph, u, v):
        partial = ku > 1 and axes[u] in PARTIAL_AXES
        return [(int(first[u]) + i, int(first[v]) + j, dispatch_bytes(graph, u, ku, partial, v, kv, j))
                for i, j in pairs]
    sliced = kv > 1 and axes[v] in SLICE_READERS
    return [(int(first[u]) + i, int(first[v]) + j, combine_bytes(graph, u, ku, i, kv, sliced)) for i, j in pairs]


def _group_base(k: np.ndarray) -> int:
    """Group ids are first chiplet x base + degree, with base above every degree (Expanded.group)."""
    return int(k.max(initial=1)) + 1


def _same_group(a: np.ndarray, k: np.ndarray, u: int, v: int) -> bool:
    return bool(a[u] == a[v] and k[u] == k[v])


def groups(graph: TensorGraph, assignment: np.ndarray, shard: np.ndarray | None,
           links: tuple[int, int] | None = None, keep_column: Callable[[Op, int, int], bool] | None = None
           ) -> list[dict]:
    """The split ops' groups in pipeline order: chiplets, shard degree, ops, their axes and collective bytes (what
    every piece sends per inference, summed over the group's pieces and destination chiplets). With `links` (as
    for expand), the bytes are the messages the simulator sends, ring relays included, and "rings" counts the
    ring collectives each group runs (its own and entry rings, S6-S7). keep_column: as for layout."""
    a = np.asarray(assignment, dtype=np.int64)
    k = shard_degrees(graph, shard)
    axes, aligned = layout(graph, a, k, keep_column)
    out: dict[tuple[int, int], dict] = {}
    consumers: dict[int, set] = {}
    for e, (u, v) in enumerate(zip(graph.edge_src.tolist(), graph.edge_dst.tolist())):
        if not aligned[e]:
            consumers.setdefault(u, set()).update(range(int(a[v]), int(a[v] + k[v])))
    biggest: dict[int, int] = {}
    for u, b in zip(graph.edge_src.tolist(), graph.edge_bytes.tolist()):
        biggest[u] = max(biggest.get(u, 0), int(b))
    for i in np.flatnonzero(k > 1).tolist():
        key = (int(a[i]), int(k[i]))
        g = out.setdefault(key, {"chiplets": list(range(key[0], key[0] + key[1])), "shard": key[1], "ops": 0,
                                 "axes": {}, "collectives": {}, "collective_bytes": 0})
        op = graph.ops[i]
        g["ops"] += 1
        axis = axes[i]
        g["axes"][axis] = g["axes"].get(axis, 0) + 1
        kind = collective(op, key[1], axis) if consumers.get(i) else "none"
        g["collectives"][kind] = g["collectives"].get(kind, 0) + 1
        pb = piece_bytes(op, key[1], biggest.get(i, 0), axis)
        for j in range(key[1]):
            g["collective_bytes"] += pb * len(consumers.get(i, set()) - {key[0] + j})
    if links is not None and out:
        _count_messages(graph, a, k, links, out, keep_column)
    return [out[key] for key in sorted(out)]


def _count_messages(graph: TensorGraph, a: np.ndarray, k: np.ndarray, links: tuple[int, int],
                    out: dict[tuple[int, int], dict], keep_column: Callable | None) -> None:
    """Set each group's collective bytes to what its pieces and relays send as messages (one per (piece,
    destination chiplet), the largest edge), and count its rings."""
    ex = expand(graph, a, k, links, keep_column)
    n1 = _group_base(k)
    chip, grp = ex.assignment.tolist(), ex.group.tolist()
    sent: dict[tuple[int, int], int] = {}
    for u, v, b in zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist(), ex.graph.edge_bytes.tolist()):
        if chip[u] != chip[v] and grp[u] >= 0:
            sent[(u, chip[v])] = max(sent.get((u, chip[v]), 0), b)
    for g in out.values():
        g["collective_bytes"], g["rings"] = 0, 0
    for (u, _), b in sent.items():
        out[(grp[u] // n1, grp[u] % n1)]["collective_bytes"] += b
    for gid, owner in {(grp[i], int(ex.owner[i])) for i in np.flatnonzero(ex.engine).tolist()}:
        out[(gid // n1, gid % n1)]["rings"] += 1
