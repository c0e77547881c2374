"""A stage's cost on a group of chiplets as full matrices over (first op, end op): the staged DP's cost model,
written for clarity over all O(n^2) stages at once. The DP itself builds the same costs as bands, only for stages
that can be best and once per repeated block (partitioner/plan/stage_bands.py); split-plan moves
(policies/split_moves.py) and the tests read these.

Every cost is cycles per inference: the pieces' compute, the group's collectives, shipping the cut outputs to the
next stage, the entry of the inputs, and with a memory tier the stream reads of weights that do not stay in SRAM.
"""
from __future__ import annotations

import functools

import numpy as np

from partitioner.model.collectives import entry_ring_cycles, ring_is_faster
from partitioner.model.cost import (
    _ceil_div, collective_cycles, group_links, keep_column, next_stage_bytes_per_cycle, serialization_cycles,
    sharded_op_cycles)
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.experts import a2a_cycles_table, a2a_edges
from partitioner.model.sharding import PARTIAL_AXES, layout, piece
from partitioner.plan.splits import _send_bytes, sram_weights

def _inner_bytes(graph: TensorGraph, skip: np.ndarray | None = None) -> np.ndarray:
    """inner[v, j]: the largest edge from op v to a consumer w < j (what v all-gathers inside a stage ending at j),
    leaving out the edges flagged in `skip` (aligned: no collective)."""
    n = graph.n_ops
    inner = np.zeros((n, n + 1), dtype=np.int64)
    for e, (s, d, b) in enumerate(zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), graph.edge_bytes.tolist())):
        if skip is None or not skip[e]:
            np.maximum(inner[s, d + 1:], b, out=inner[s, d + 1:])
    return inner


def _recv_bytes(graph: TensorGraph, only: np.ndarray | None = None) -> np.ndarray:
    """recv[i, j]: bytes a stage of ops i..j-1 takes from ops before i (those flagged in `only`, if given), each
    producer's largest such edge once (tensors that only pass the stage by, to later stages, are not counted)."""
    n = graph.n_ops
    recv = np.zeros((n + 1, n + 1), dtype=np.int64)
    if only is not None and not only.any():
        return recv
    edges = sorted(zip(graph.edge_dst.tolist(), graph.edge_src.tolist(), graph.edge_bytes.tolist()))
    for i in range(1, n):
        best: dict[int, int] = {}
        step = np.zeros(n + 2, dtype=np.int64)
        for w, s, b in edges:           # by consumer: a producer's running max rises at j = w + 1
            if w < i or s >= i or b <= best.get(s, 0) or (only is not None and not only[s]):
                continue
            step[w + 1] += b - best.get(s, 0)
            best[s] = b
        recv[i] = np.cumsum(step[:n + 1])
    return recv


def _tables(graph: TensorGraph, layout_of: tuple | None = None) -> tuple:
    """What group_stage_cost_matrix needs: send, inner, axes, recv, recv of partials, for the layout `layout_of`
    = (axes, aligned) (default: _stage_layout)."""
    axes, aligned = layout_of or _stage_layout(graph)
    partial = np.array([ax in PARTIAL_AXES for ax in axes], dtype=bool)
    # an expert op's dispatch and combine are all-to-alls (group_stage_costs), not its neighbours' all-gathers
    a2a = a2a_edges(graph, np.full(graph.n_ops, 2))
    return (_send_bytes(graph), _inner_bytes(graph, aligned | a2a), axes, _recv_bytes(graph),
            _recv_bytes(graph, partial))


def _stage_layout(graph: TensorGraph, k: int = 2, chiplet: int = 0, keep=None) -> tuple[tuple[str, ...],
                                                                                          np.ndarray]:
    """The axes and aligned edges when every op shares one group of k from `chiplet` (sharding.layout, with the
    keep-column rule `keep`), as the DP assumes inside a stage: exact for ops whose producers are in the same
    stage, an estimate at a stage's first ops."""
    return layout(graph, np.full(graph.n_ops, chiplet, dtype=np.int64), np.full(graph.n_ops, k, dtype=np.int64),
                  keep)


def _tables_for(graph: TensorGraph, hw: Hardware, chiplet: int, k: int, cache: dict) -> tuple:
    """The DP's tables for a group of k from `chiplet` under the simulator's layout (cost.keep_column), computed
    once per distinct layout."""
    axes, aligned = _stage_layout(graph, max(k, 2), chiplet, keep_column(hw, graph.metadata.get("precision")))
    key = (axes, aligned.tobytes())
    if key not in cache:
        cache[key] = _tables(graph, (axes, aligned))
    return cache[key]


def group_stage_cost_matrix(graph: TensorGraph, hw: Hardware, chiplet: int, k: int,
                            tables: tuple | None = None, relaxed: bool = False, entry_ring: bool = True
                            ) -> np.ndarray:
    """cost[i, j]: cycles per inference of ops i..j-1 run as a stage on the k chiplets from `chiplet`, every op
    split k ways (`group_stage_costs`), with an entry ring where it is faster (`entry_ring`, the default: the
    producers are whole or a group of k) or with k copies of the inputs (False: a group of another size)."""
    return group_stage_costs(graph, hw, chiplet, k, tables, relaxed)[1 if entry_ring else 0]


def group_stage_costs(graph: TensorGraph, hw: Hardware, chiplet: int, k: int, tables: tuple | None = None,
                      relaxed: bool = False, latency: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(copies, ring), each cost[i, j]: cycles per inference of ops i..j-1 run as a stage on the k chiplets from
    `chiplet`, every op split k ways: the larger of the pieces' cycles and the group's link work, the sum of the
    collectives (cost.collective_cycles: direct or ring, as the simulator runs them) of the ops with a consumer
    inside the stage, shipping each member's share of the cut outputs and the entry: k copies of the inputs
    (`copies`), or the cheaper of that and an entry ring (`ring`), which the simulator runs only from a whole
    producer or a group of the same size (collectives.plan_rings). Under the simulator's rounds (R4b) a stage's
    compute overlaps its links; the links' own work does not overlap (one group's links carry it all). inf if the
    pieces do not fit SRAM. tables: `_tables_for` (default: computed here for this group). Piece weights count as
    `sram_weights` counts them: with a memory tier a piece too big for any SRAM streams anyway, and `relaxed`
    counts none. `latency`: the stage's time for one inference alone instead (the latency DP,
    partitioner/plan/latency_dp.py): nothing overlaps, each op's collective waits for its pieces and its consumers for
    the collective, so compute, collectives, shipping and entry add up."""
    n = graph.n_ops
    chip = hw.chiplets[chiplet]
    out_bw = next_stage_bytes_per_cycle(hw, chiplet + k - 1)
    if tables is None:
        tables = _tables_for(graph, hw, chiplet, k, {})
    send, inner, axes, recv, recv_partial = tables
    pieces = TensorGraph.build(graph.name, [piece(op, k, axes[i]) for i, op in enumerate(graph.ops)], [])
    cyc = np.concatenate([[0], np.cumsum(sharded_op_cycles(graph, chip, k, axes))]).astype(float)
    wts = np.concatenate([[0], np.cumsum(sram_weights(pieces, hw, relaxed))])
    cross = np.flip(np.cumsum(np.flip(send, axis=0), axis=0), axis=0)
    if k > 1:
        # slices of an all-gather; full partials (row_parallel, vocab) of an all-reduce
        # the collective the simulator runs (cost.collective_cycles: direct or ring, whichever is faster)
        partial = np.array([ax in PARTIAL_AXES for ax in axes])
        ag = np.where(partial[:, None], collective_cycles("all-reduce", inner, k, hw, chiplet),
                      collective_cycles("all-gather", inner, k, hw, chiplet)) + a2a_cycles_table(
            graph, k, *group_links(hw, chiplet, k))
        gather = np.flip(np.cumsum(np.flip(ag, axis=0), axis=0), axis=0)
        # a split producer's slices add up to its tensor; full partials (row_parallel, vocab) come from each of
        # its pieces, taken as k of them, unless a ring reduces them first (then k chunks: the tensor once);
        # every member needs the whole input: k copies over the entry link
        direct = ~ring_is_faster("all-reduce", recv_partial, k, *group_links(hw, chiplet, k)) if k > 2 else True
        copies = (k * serialization_cycles(recv + direct * (k - 1) * recv_partial, hw)).astype(float)
        # or, when an entry ring is faster (collectives.entry_is_ring), the inputs once and a ring all-gather
        ring = np.minimum(copies, entry_ring_cycles(recv, k, *group_links(hw, chiplet, k)))
    else:
        gather = np.zeros_like(cross)
        copies = ring = np.zeros((n + 1, n + 1))
    links = np.zeros((n + 1, n + 1))
    fits = np.zeros((n + 1, n + 1), dtype=bool)
    work = pieces.work_bytes
    # an op type the chiplet kind cannot run rules out every stage that holds it
    banned = np.concatenate([[0], np.cumsum([op.op_type in chip.unsupported_ops for op in graph.ops])])
    for i in range(n):
        j = np.arange(i + 1, n + 1)
        peak = np.maximum.accumulate(work[i:])
        fits[i, i + 1:] = (wts[j] - wts[i] + peak <= chip.sram_bytes) & (banned[j] == banned[i])
        # gather[i, j] sums ops >= i (edges go forward, so only consumers inside i..j-1 count).
        if out_bw < hw.fastest_link_bytes_per_cycle:   # every member's share leaves over one slower link
            ship = _ceil_div(cross[i, j], out_bw).astype(float)
        else:
            ship = serialization_cycles(-(-cross[i, j] // k), hw).astype(float)
        links[i, i + 1:] = gather[i, j] + ship
    compute = cyc[None, :] - cyc[:, None]
    out = []
    for entry in (copies, ring):
        # the collectives, the shipping and the entry all cross the group's own links: their times add up
        cost = np.where(fits, compute + links + entry if latency else np.maximum(compute, links + entry), np.inf)
        np.fill_diagonal(cost, 0.0)
        out.append(cost)
    return out[0], out[1]


def _forced_reads(graph: TensorGraph, hw: Hardware, g: int, axes: tuple[str, ...] | None) -> np.ndarray | None:
    """Per op, the bytes each of its g pieces reads per inference if the piece must stream (its weights and
    working set exceed the largest SRAM), else 0; None when no piece must stream or there is no memory tier."""
    if not hw.memory_stacks:
        return None
    ops = graph.ops if g == 1 else [piece(op, g, axes[i]) for i, op in enumerate(graph.ops)]
    w = np.array([op.weight_bytes for op in ops], dtype=np.int64)
    work = np.array([op.work_bytes for op in ops], dtype=np.int64)
    forced = (w > 0) & (w + work > max(c.sram_bytes for c in hw.chiplets))
    if not forced.any():
        return None
    return np.minimum(w, [op.weights_read for op in ops]) * forced


def _fan_in(hw: Hardware, first: int, g: int) -> tuple[int, int]:
    """(m_link, m_stack): the most members of the group first..first+g-1 whose stream routes (hw.stack_feed, then
    the NoC route from the stack's chiplet) share one link (0 when every member sits on its stack's chiplet), and
    one stack."""
    links: dict[int, int] = {}
    stacks: dict[int, int] = {}
    for m in range(first, first + g):
        k, src = hw.stack_feed[m]
        stacks[k] = stacks.get(k, 0) + 1
        for link in hw.route(src, m):
            links[link] = links.get(link, 0) + 1
    return max(links.values(), default=0), max(stacks.values())


def shared_fan_in(hw: Hardware, first: int, g: int) -> tuple[int, int]:
    """(m_link, m_stack) as `_fan_in`, but counting every chiplet of the package whose stream route uses the link
    (or stack), not only the group's members: the load when every chiplet streams what a member does. A stage's
    reads share the links from the package's edge with the stages beside it (a row of single-chiplet stages fed
    from one edge chiplet loads its first link with all of them), which the group's own count cannot see."""
    links, stacks = _stream_loads(hw)
    used = {link for m in range(first, first + g) for link in hw.route(hw.stack_feed[m][1], m)}
    return max((links[link] for link in used), default=0), max(stacks[hw.stack_feed[m][0]]
                                                               for m in range(first, first + g))


@functools.lru_cache(maxsize=8)
def _stream_loads(hw: Hardware) -> tuple[dict[int, int], dict[int, int]]:
    """(link -> chiplets whose stream route crosses it, stack -> chiplets it feeds), over the whole package."""
    links: dict[int, int] = {}
    stacks: dict[int, int] = {}
    for m, (k, src) in enumerate(hw.stack_feed):
        stacks[k] = stacks.get(k, 0) + 1
        for link in hw.route(src, m):
            links[link] = links.get(link, 0) + 1
    return links, stacks


def _stream_time(hw: Hardware, fan_in: tuple[int, int], nbytes: np.ndarray) -> np.ndarray:
    """Cycles per inference the busiest stream resource of a group with `fan_in` (`_fan_in`) spends when each
    member streams `nbytes`: a link or stack on m members' routes carries m reads."""
    m_link, m_stack = fan_in
    stack_bw = min(st.sustained_bytes_per_cycle for st in hw.memory_stacks)
    cyc = m_stack * -(-np.asarray(nbytes, dtype=np.int64) // stack_bw)
    if m_link:
        cyc = np.maximum(cyc, m_link * serialization_cycles(nbytes, hw))
    return cyc.astype(float)


def _forced_stream_cycles(hw: Hardware, first: int, g: int, reads: np.ndarray, fan_in=None) -> np.ndarray:
    """Cumulative (length n + 1) cycles per inference that the busiest stream resource of the group
    first..first+g-1 spends on the pieces that must stream (`_forced_reads`), by `_stream_time` with `fan_in`
    (default `_fan_in`). The staged DP's
    estimate (so it places such a stage next to the stacks); the simulator routes the real reads."""
    return np.concatenate([[0], np.cumsum(_stream_time(hw, (fan_in or _fan_in)(hw, first, g), reads))])


def stream_parts(pieces: list, sram: int) -> tuple[np.ndarray, np.ndarray]:
    """(whole, forced) per piece: its weight bytes if it reads them whole per inference and could stay in an SRAM
    of `sram` bytes, else 0 (an embedding table costs only its looked-up rows, so residency streams it first, at
    almost no cost); and what a piece that can never stay (its weights and working set exceed the SRAM) reads per
    inference, else 0."""
    w = np.array([op.weight_bytes for op in pieces], dtype=np.int64)
    read = np.array([op.weights_read for op in pieces], dtype=np.int64)
    work = np.array([op.work_bytes for op in pieces], dtype=np.int64)
    forced = (w > 0) & (w + work > sram)
    return np.where((read >= w) & ~forced, w, 0), np.where(forced, np.minimum(w, read), 0)


def stream_estimate(whole: np.ndarray, forced: np.ndarray, largest: np.ndarray, peak: np.ndarray, sram: int
                    ) -> np.ndarray:
    """Bytes each member streams per inference, elementwise, when it holds `whole` bytes of weights read whole
    (`stream_parts`), the largest of them `largest`, its largest working set is `peak`, and `forced` bytes can
    never stay: those, and what exceeds its SRAM in whole ops, as residency (solver/residency.py) streams them,
    largest first (so the excess rounded up to a multiple of the largest)."""
    over = np.maximum(whole + peak - sram, 0)
    rounded = np.minimum(-(-over // np.maximum(largest, 1)) * largest, whole)
    return forced + np.where(over > 0, rounded, 0)


def _excess_bytes(graph: TensorGraph, chip, g: int, axes: tuple[str, ...] | None) -> np.ndarray:
    """excess[i, j]: bytes each member of a g-group running ops i..j-1 streams per inference (`stream_estimate`):
    the relaxed DP's estimate of what residency (solver/residency.py) will stream there."""
    ops = graph.ops if g == 1 else [piece(op, g, axes[i]) for i, op in enumerate(graph.ops)]
    work = np.array([op.work_bytes for op in ops], dtype=np.int64)
    whole, forced = stream_parts(ops, chip.sram_bytes)
    wts, frc = np.concatenate([[0], np.cumsum(whole)]), np.concatenate([[0], np.cumsum(forced)])
    n = graph.n_ops
    excess = np.zeros((n + 1, n + 1), dtype=np.int64)
    for i in range(n):
        peak, largest = np.maximum.accumulate(work[i:]), np.maximum.accumulate(whole[i:])
        excess[i, i + 1:] = stream_estimate(wts[i + 1:] - wts[i], frc[i + 1:] - frc[i], largest, peak,
                                            chip.sram_bytes)
    return excess
