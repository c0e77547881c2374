"""Stages on groups of chiplets with intra-op sharding (Alpa-style stage construction): the staged DP.

The topological order cut into pipeline stages, each on a group of consecutive chiplets with every op of the
stage split across its group (docs/simulator.md, "The staged plan"). The whole-op splits it falls back to live in
partitioner/plan/splits.py.
"""
from __future__ import annotations

import numpy as np

from partitioner.model.collectives import entry_ring_cycles, ring_is_faster
from partitioner.model.cost import (
    _ceil_div, collective_cycles, keep_column, next_stage_bytes_per_cycle, ring_links, serialization_cycles,
    sharded_op_cycles)
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.experts import a2a_cycles_table, a2a_edges
from partitioner.model.sharding import PARTIAL_AXES, layout, piece
from partitioner.plan.splits import _send_bytes, dp_partition, sram_weights

DEFAULT_MAX_SHARD = 4
"""The smallest default largest group (auto_max_shard's floor)."""
AUTO_MAX_SHARD_CAP = 16
"""The largest default largest group: the staged DP's time grows with its square (every cap up to it runs; about
8 s for BERT-large at 144 chiplets and 16)."""


def auto_max_shard(n_chiplets: int) -> int:
    """The default largest group (`--max-shard auto`): min(16, max(4, chiplets // 8)), at most the chiplet count.
    4 up to 32 chiplets, 8 at 64, 16 from 128: a bigger package has room for wider groups, which ring
    collectives (partitioner/model/collectives.py) keep cheap, and the largest op's smallest piece bounds throughput."""
    return max(1, min(AUTO_MAX_SHARD_CAP, max(DEFAULT_MAX_SHARD, int(n_chiplets) // 8), int(n_chiplets)))


def staged_degrees(max_shard: int) -> list[int]:
    """The largest groups (caps) the `partition` command runs the staged DP for: every one from 1 to max_shard. The
    DP's link and stream models are estimates, so a smaller cap can give the better plan under the simulator (each
    run may use any group up to its cap); `staged_candidates` runs them all, sharing their cost matrices."""
    return list(range(1, max_shard + 1))


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
        ag = np.where(partial[:, None], collective_cycles("all-reduce", inner, k, hw),
                      collective_cycles("all-gather", inner, k, hw)) + a2a_cycles_table(graph, k, *ring_links(hw))
        gather = np.flip(np.cumsum(np.flip(ag, axis=0), axis=0), axis=0)
        # a split producer's slices add up to its tensor; full partials (row_parallel, vocab) come from each of
        # its pieces, taken as k of them, unless a ring reduces them first (then k chunks: the tensor once);
        # every member needs the whole input: k copies over the entry link
        direct = ~ring_is_faster("all-reduce", recv_partial, k, *ring_links(hw)) if k > 2 else True
        copies = (k * serialization_cycles(recv + direct * (k - 1) * recv_partial, hw)).astype(float)
        # or, when an entry ring is faster (collectives.entry_is_ring), the inputs once and a ring all-gather
        ring = np.minimum(copies, entry_ring_cycles(recv, k, *ring_links(hw)))
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


def _stream_time(hw: Hardware, fan_in: tuple[int, int], nbytes: np.ndarray) -> np.ndarray:
    """Cycles per inference the busiest stream resource of a group with `fan_in` (`_fan_in`) spends when each
    member streams `nbytes`: a link or stack on m members' routes carries m reads."""
    m_link, m_stack = fan_in
    stack_bw = min(st.sustained_bytes_per_cycle for st in hw.memory_stacks)
    cyc = m_stack * -(-np.asarray(nbytes, dtype=np.int64) // stack_bw)
    if m_link:
        cyc = np.maximum(cyc, m_link * serialization_cycles(nbytes, hw))
    return cyc.astype(float)


def _forced_stream_cycles(hw: Hardware, first: int, g: int, reads: np.ndarray) -> np.ndarray:
    """Cumulative (length n + 1) cycles per inference that the busiest stream resource of the group
    first..first+g-1 spends on the pieces that must stream (`_forced_reads`), by `_stream_time`. The staged DP's
    estimate (so it places such a stage next to the stacks); the simulator routes the real reads."""
    return np.concatenate([[0], np.cumsum(_stream_time(hw, _fan_in(hw, first, g), reads))])


def _excess_bytes(graph: TensorGraph, chip, g: int, axes: tuple[str, ...] | None) -> np.ndarray:
    """excess[i, j]: bytes each member of a g-group running ops i..j-1 streams per inference when the pieces'
    weights that are read whole (weight matrices; an embedding table costs only its looked-up rows, so it streams
    first at almost no cost) plus the largest working set exceed the chiplet's SRAM: the relaxed DP's estimate of
    what residency (solver/residency.py) will stream there."""
    ops = graph.ops if g == 1 else [piece(op, g, axes[i]) for i, op in enumerate(graph.ops)]
    whole = np.array([op.weight_bytes if op.weights_read >= op.weight_bytes else 0 for op in ops], dtype=np.int64)
    work = np.array([op.work_bytes for op in ops], dtype=np.int64)
    wts = np.concatenate([[0], np.cumsum(whole)])
    n = graph.n_ops
    excess = np.zeros((n + 1, n + 1), dtype=np.int64)
    for i in range(n):
        peak = np.maximum.accumulate(work[i:])
        excess[i, i + 1:] = np.maximum(wts[i + 1:] - wts[i] + peak - chip.sram_bytes, 0)
    return excess


def staged_candidates(graph: TensorGraph, hw: Hardware, max_shard: int, caps: list[int] | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The distinct plans of `staged_plans` for every cap in `caps` (default `staged_degrees(max_shard)`), in cap
    order: what the `partition` command simulates (app/candidates.best_staged). The caps share one memo: a group's cost
    matrices do not depend on the cap."""
    memo: dict = {}
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for k in staged_degrees(max_shard) if caps is None else caps:
        out.extend(p for p in staged_plans(graph, hw, k, memo) if not any(_same(p, q) for q in out))
    return out


def _same(p: tuple[np.ndarray, np.ndarray], q: tuple[np.ndarray, np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(p, q))


def staged_plans(graph: TensorGraph, hw: Hardware, max_shard: int = DEFAULT_MAX_SHARD, memo: dict | None = None,
                 latency: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """`staged_partition`'s plan, or, when it has to run relaxed (weights beyond SRAM stream), the plans of both
    stream estimates (overlapped and serial), distinct ones only: the simulator picks between them. `memo`: as
    for `_staged_dp`. `latency`: minimise the sum of the stages' one-inference times instead of the slowest stage
    (partitioner/plan/latency_dp.py)."""
    plan = _staged_dp(graph, hw, max_shard, relaxed=False, memo=memo, latency=latency)
    if plan is not None or not hw.memory_stacks:
        return [plan if plan is not None else (dp_partition(graph, hw), np.ones(graph.n_ops, dtype=np.int64))]
    plans: list[tuple[np.ndarray, np.ndarray]] = []
    for serial in (False, True):
        plan = _staged_dp(graph, hw, max_shard, relaxed=True, serial_streams=serial, memo=memo, latency=latency)
        if plan is None:
            plan = (dp_partition(graph, hw), np.ones(graph.n_ops, dtype=np.int64))
        if not any(_same(plan, p) for p in plans):
            plans.append(plan)
    return plans


def staged_partition(graph: TensorGraph, hw: Hardware, max_shard: int = DEFAULT_MAX_SHARD,
                     relaxed: bool = False, serial_streams: bool = False, memo: dict | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(assignment, shard): the topological order cut into pipeline stages, stage s on a group of g_s consecutive
    chiplets (g_s <= max_shard, groups in pipeline order, at most n_chiplets chiplets in all) with every op of the
    stage split g_s ways, minimising the slowest stage (`group_stage_costs`). A DP over (ops placed, chiplets used,
    last stage's size) x group size, as Alpa's stage construction over layers x submeshes. max_shard = 1 is
    `dp_partition`. Piece weights count as `sram_weights` counts them, and a piece too big for any SRAM costs its
    stage its stream reads where the stage sits (`_forced_stream_cycles`). With a memory tier, if no staged plan
    fits, once more `relaxed`: every weight may stream, and what a stage holds beyond its SRAM (`_excess_bytes`)
    costs its stream time, overlapped with the stage's compute (max), or with `serial_streams` after it (sum: a
    chiplet prefetches one segment ahead, so reads a short segment cannot hide add up; a one-op stage's read hides
    behind its own previous inference, so max there too). The caller chooses residency (solver/residency.py). Falls
    back to `dp_partition` (shard 1) if no staged plan fits SRAM. With packages (hw.package_level) a group never
    straddles two packages, and a stage ships its cut outputs at the slowest link to the next chiplet
    (cost.next_stage_bytes_per_cycle). `memo`: as for `_staged_dp` (callers running several caps share it)."""
    plan = _staged_dp(graph, hw, max_shard, relaxed, serial_streams, memo)
    if plan is None and hw.memory_stacks and not relaxed:
        plan = _staged_dp(graph, hw, max_shard, True, serial_streams, memo)
    return plan if plan is not None else (dp_partition(graph, hw), np.ones(graph.n_ops, dtype=np.int64))


def _staged_dp(graph: TensorGraph, hw: Hardware, max_shard: int, relaxed: bool, serial_streams: bool = False,
               memo: dict | None = None, latency: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
    """staged_partition's DP for one setting; None when no plan fits. `memo` (a dict, kept by the caller) shares
    the groups' matrices between runs on the same graph and hardware. `latency`: stages cost their one-inference
    time and add up (`staged_plans`)."""
    n_chip = hw.n_chiplets
    stage = _stage_fn(graph, hw, relaxed, serial_streams, {} if memo is None else memo, latency)
    return _dp(graph.n_ops, n_chip, max(1, min(int(max_shard), n_chip)), stage, np.add if latency else np.maximum)


def _stage_fn(graph: TensorGraph, hw: Hardware, relaxed: bool, serial_streams: bool, memo: dict,
              latency: bool = False):
    """stage(c, g): (copies, ring) as `group_stage_costs` for the group c..c+g-1, as the DP charges them (with the
    stage's stream estimates), each as a band (`_band`): band[j, d] the cost of ops j-w+d..j-1, w the longest
    stage that fits; or None where no group may stand."""
    tables = memo.setdefault("tables", {})

    def cached(key: tuple, make):
        if key not in memo:
            memo[key] = make()
        return memo[key]

    def _costs_and_axes(c: int, g: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
        tabs = _tables_for(graph, hw, c, g, tables)
        copies, ring = group_stage_costs(graph, hw, c, g, tabs, relaxed, latency)
        w = _width(copies)
        return (_band(copies, w), _band(copies if g == 1 else ring, w)), tabs[2]

    def stage(c: int, g: int) -> tuple[np.ndarray, np.ndarray] | None:
        kind = hw.chiplets[c]
        if any(hw.chiplets[m] != kind for m in range(c, c + g)):
            return None     # groups of one chiplet kind only
        if g > 1 and hw.package_of(c) != hw.package_of(c + g - 1):
            return None     # and inside one package: collectives never cross a package link
        ms, axes = cached(("cost", kind, g, next_stage_bytes_per_cycle(hw, c + g - 1), relaxed, latency),
                          lambda: _costs_and_axes(c, g))
        w = ms[0].shape[1]
        if relaxed:
            over = cached(("excess", kind, g, w), lambda: _band(_excess_bytes(graph, kind, g, axes), w, 0))
            extra = _stream_time(hw, _fan_in(hw, c, g), over)
            if serial_streams:
                def add(m):
                    # M4: a read is prefetched during the segment before its op's; a one-op stage's (the band's
                    # last column) segment before is its own, of the previous inference, so its read hides
                    # behind its compute
                    out = m + extra
                    out[:, -1] = np.maximum(m[:, -1], extra[:, -1])
                    return out
            else:
                add = lambda m: np.maximum(m, extra)  # noqa: E731
        else:
            reads = cached(("reads", kind, g), lambda: _forced_reads(graph, hw, g, axes))
            if reads is None:
                return ms
            streams = _forced_stream_cycles(hw, c, g, reads)
            since = _windows(np.concatenate([np.zeros(w), streams]), w, len(streams))    # streams[i] per (j, d)
            add = lambda m: np.maximum(m, streams[:, None] - since)  # noqa: E731
        copies = add(ms[0])
        return copies, (copies if g == 1 else add(ms[1]))

    return stage


def _width(m: np.ndarray) -> int:
    """The longest stage (j - i) with a finite cost in m[i, j], at least 1."""
    i, j = np.nonzero(np.isfinite(m) & np.triu(np.ones(m.shape, dtype=bool), 1))
    return max(int((j - i).max(initial=1)), 1)


def _band(m: np.ndarray, w: int, fill: float = np.inf) -> np.ndarray:
    """m[i, j] (ops i..j-1) as band[j, d] = m[j - w + d, j] for d < w (`fill` where j - w + d < 0): a row per end
    op, its possible first ops ascending, so the DP's search over them runs along memory and skips every stage
    longer than w (which cannot fit)."""
    n1 = m.shape[0]
    j = np.arange(n1)[:, None]
    i = j - w + np.arange(w)[None, :]
    return np.where(i >= 0, m[np.maximum(i, 0), j], fill)


def _windows(padded: np.ndarray, w: int, rows: int) -> np.ndarray:
    """windows[j, d] = padded[j + d] for j < rows, d < w (a view): with w leading pads, the value at first op
    j - w + d of a band."""
    return np.lib.stride_tricks.sliding_window_view(padded, w)[:rows]


def _dp(n: int, n_chip: int, max_shard: int, stage, combine=np.maximum) -> tuple[np.ndarray, np.ndarray] | None:
    """The staged DP over `stage` (`_stage_fn`). best[c, s, j]: the smallest bottleneck placing ops 0..j-1 on
    chiplets 0..c-1 (some maybe unused) with a last stage of s chiplets (s = 0: none yet, j = 0). A stage of g
    chiplets pays its entry ring only after a stage of 1 or g (or none), where the simulator runs entry rings
    (collectives.plan_rings), else k copies; inputs from stages further back are taken as from the last one (the
    state holds one size). Each (c, g) takes every (first op i, end j) of its band at once: the first best i per
    j, as a loop over i would. (assignment, shard), or None when no plan fits. `combine` joins the stages placed
    so far with the next: np.maximum (the bottleneck, for throughput) or np.add (the latency DP's sum of one
    inference's stage times)."""
    best = np.full((n_chip + 1, max_shard + 1, n + 1), np.inf)
    best[0, 0, 0] = 0.0
    choice = np.zeros((n_chip + 1, max_shard + 1, n + 1, 2), dtype=np.int32)   # (i, entry ring?) of the stage
    unused = np.zeros((n_chip + 1, max_shard + 1, n + 1), dtype=bool)          # chiplet c-1 left empty
    cols = np.arange(n + 1)
    bufs = [np.empty((n + 1) * (n + 1)) for _ in range(3)]                      # reused
    for c in range(1, n_chip + 1):
        for g in range(1, min(max_shard, c) + 1):
            pair = stage(c - g, g)
            if pair is None:
                continue
            w = pair[0].shape[1]
            copies, ring, either = (b[:(n + 1) * w].reshape(n + 1, w) for b in bufs)
            prev = np.concatenate([np.full((max_shard + 1, w), np.inf), best[c - g]], axis=1)
            combine(_windows(prev.min(axis=0), w, n + 1), pair[0], out=copies)
            if g > 1:
                combine(_windows(prev[[0, 1, g]].min(axis=0), w, n + 1), pair[1], out=ring)
                np.minimum(copies, ring, out=either)
            d = np.argmin(either if g > 1 else copies, axis=1)
            best[c, g] = (either if g > 1 else copies)[cols, d]
            choice[c, g, :, 0] = cols - w + d
            choice[c, g, :, 1] = ring[cols, d] < copies[cols, d] if g > 1 else False
        unused[c] = best[c - 1] < best[c]          # leaving chiplet c-1 empty is strictly better (ties: use it)
        best[c][unused[c]] = best[c - 1][unused[c]]
    if not np.isfinite(best[n_chip, :, n].min()):
        return None
    assignment = np.zeros(n, dtype=np.int64)
    shard = np.ones(n, dtype=np.int64)
    c, s, j = n_chip, int(np.argmin(best[n_chip, :, n])), n
    while j > 0:
        if unused[c, s, j]:
            c -= 1
            continue
        i, ring = (int(x) for x in choice[c, s, j])
        assignment[i:j], shard[i:j] = c - s, s
        c, j = c - s, i
        allowed = [0, 1, s] if ring else list(range(max_shard + 1))     # the state the stage's value came from
        s = allowed[int(np.argmin(best[c, allowed, j]))]
    return assignment, shard
