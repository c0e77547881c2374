"""Stages on groups of chiplets with intra-op sharding (Alpa-style stage construction): the staged DP.

The topological order cut into pipeline stages, each on a group of consecutive chiplets with every op of the
stage split across its group (docs/simulator.md, "The staged plan"). The whole-op splits it falls back to live in
partitioner/plan/splits.py.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.frontend.blocks import Blocks, block_cuts, find_blocks
from partitioner.hw.hardware import Hardware
from partitioner.model.cost import (
    cheapest_piece_cycles, group_links, keep_column, may_group, next_stage_bytes_per_cycle, sharded_bound_cycles)
from partitioner.plan.splits import dp_partition
from partitioner.plan.stage_bands import (
    band_sources, compute_width, fit_width, periodic_layout, piece_arrays, position_cells, stage_bands)
from partitioner.plan.stage_costs import (  # noqa: F401 (group_stage_cost_matrix, group_stage_costs: re-exported)
    _fan_in, _forced_reads, _forced_stream_cycles, _stage_layout, _stream_time, _tables, group_stage_cost_matrix,
    group_stage_costs, shared_fan_in)

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


def staged_degrees(max_shard: int, n_ops: int = 0) -> list[int]:
    """The largest groups (caps) the `partition` command runs the staged DP for: every one from 1 to max_shard. The
    DP's link and stream models are estimates, so a smaller cap can give the better plan under the simulator (each
    run may use any group up to its cap); `staged_candidates` runs them all, sharing their cost matrices. A model of
    more than FINE_MAX_OPS ops gets 1, 2, 3, 4, 6, 8, 12, ... (powers of two and three times them) and max_shard:
    its DP runs at many more chiplets, and neighbouring caps mostly give the same plan."""
    if n_ops <= FINE_MAX_OPS:
        return list(range(1, max_shard + 1))
    sparse = {b << e for b in (1, 3) for e in range(max_shard.bit_length() + 1)}
    return sorted(c for c in sparse | {max_shard} if 1 <= c <= max_shard)


def staged_candidates(graph: TensorGraph, hw: Hardware, max_shard: int, caps: list[int] | None = None
                      ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The distinct plans of `staged_plans` for every cap in `caps` (default `staged_degrees`), in cap
    order: what the `partition` command simulates (app/candidates.best_staged). The caps share one memo: a group's cost
    matrices do not depend on the cap."""
    memo: dict = {}
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for k in staged_degrees(max_shard, graph.n_ops) if caps is None else caps:
        out.extend(p for p in staged_plans(graph, hw, k, memo) if not any(_same(p, q) for q in out))
    return out


def _same(p: tuple[np.ndarray, np.ndarray], q: tuple[np.ndarray, np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(p, q))


def staged_plans(graph: TensorGraph, hw: Hardware, max_shard: int = DEFAULT_MAX_SHARD, memo: dict | None = None,
                 latency: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """`staged_partition`'s plan, or, when it has to run relaxed (weights beyond SRAM stream), the plans of the
    stream estimates (overlapped and serial, each with a stage's own links or the package's shared ones:
    `_staged_dp`), distinct ones only: the simulator picks among them. When the weights exceed the package's SRAM
    (`must_stream`), both: the plan that fits and the relaxed ones. `memo`: as
    for `_staged_dp`. `latency`: minimise the sum of the stages' one-inference times instead of the slowest stage
    (partitioner/plan/latency_dp.py)."""
    memo = {} if memo is None else memo
    plan = _staged_dp(graph, hw, max_shard, relaxed=False, memo=memo, latency=latency)
    if not hw.memory_stacks or (plan is not None and not must_stream(graph, hw)):
        return [plan if plan is not None else _whole(graph, hw, memo)]
    # weights beyond the package's SRAM stream whatever the plan: the plan that fits SRAM (streaming only the
    # pieces too big for any chiplet) keeps ops whole where splitting them would make their pieces count, so the
    # relaxed plans, which split and stream, compete with it
    plans: list[tuple[np.ndarray, np.ndarray]] = [] if plan is None else [plan]
    for serial, shared in ((False, False), (True, False), (False, True), (True, True)):
        plan = _staged_dp(graph, hw, max_shard, relaxed=True, serial_streams=serial, memo=memo, latency=latency,
                          shared_links=shared)
        if plan is None:
            plan = _whole(graph, hw, memo)
        if not any(_same(plan, p) for p in plans):
            plans.append(plan)
    return plans


def _whole(graph: TensorGraph, hw: Hardware, memo: dict) -> tuple[np.ndarray, np.ndarray]:
    """The whole-op plan (`dp_partition`, shard 1) a DP that finds no staged plan falls back to, once per memo."""
    if "whole" not in memo:
        memo["whole"] = (dp_partition(graph, hw), np.ones(graph.n_ops, dtype=np.int64))
    return tuple(x.copy() for x in memo["whole"])


def must_stream(graph: TensorGraph, hw: Hardware) -> bool:
    """Whether the model's weights exceed the SRAM of the whole package, so that some stream in every plan."""
    return graph.unique_weight_bytes > sum(c.sram_bytes for c in hw.chiplets)


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
    back to `dp_partition` (shard 1) if no staged plan fits SRAM. With levels (hw.levels) a group never straddles
    a level whose links are slower than the die-to-die ones (cost.may_group), its collectives are timed at the
    slowest links its span crosses (cost.group_links), and a stage ships its cut outputs at the slowest link to the
    next chiplet (cost.next_stage_bytes_per_cycle). `memo`: as for `_staged_dp` (callers running several caps
    share it)."""
    plan = _staged_dp(graph, hw, max_shard, relaxed, serial_streams, memo)
    if plan is None and hw.memory_stacks and not relaxed:
        plan = _staged_dp(graph, hw, max_shard, True, serial_streams, memo)
    return plan if plan is not None else (dp_partition(graph, hw), np.ones(graph.n_ops, dtype=np.int64))


def _staged_dp(graph: TensorGraph, hw: Hardware, max_shard: int, relaxed: bool, serial_streams: bool = False,
               memo: dict | None = None, latency: bool = False, shared_links: bool = False
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """staged_partition's DP for one setting; None when no plan fits. `memo` (a dict, kept by the caller) shares
    the groups' bands between runs on the same graph and hardware. `latency`: stages cost their one-inference
    time and add up (`staged_plans`). `shared_links`: a stage's stream reads load their links as if every chiplet
    streamed as much (stage_costs.shared_fan_in), else only its own members count.

    The DP only looks at stages whose pieces' compute stays within a limit (`_first_limit`, a multiple of the
    package's lower bound): a stage costs at least its compute, so when the best plan found costs no more than the
    limit, no longer stage could be in a best plan and the plan is the one the DP over every stage gives, tie for
    tie; otherwise it runs once more with the limit at what it found (or wider, if it found none)."""
    memo = {} if memo is None else memo
    n_chip = hw.n_chiplets
    cap = max(1, min(int(max_shard), n_chip))
    positions = _space(graph, memo)[1]
    # a plan found under a smaller cap is one this cap may take too: its value bounds this one's, so a limit at it
    # takes one pass (unless it is far above the first limit, whose bands are narrower)
    setting = ("value", relaxed, serial_streams, latency, shared_links)
    limit = _first_limit(graph, hw, cap, latency)
    below = min((v for k, v in memo.get(setting, {}).items() if k <= cap), default=np.inf)
    if below <= 2 * limit:
        limit = below
    while True:
        capped: list[bool] = []
        stage = _stage_fn(graph, hw, relaxed, serial_streams, memo, latency, limit, capped, shared_links)
        plan, value = _solve(len(positions) - 1, n_chip, cap, stage, np.add if latency else np.maximum)
        if (plan is not None and value <= limit) or not any(capped):
            if plan is not None:
                memo.setdefault(setting, {})[cap] = value
            return None if plan is None else tuple(np.repeat(x, np.diff(positions)) for x in plan)
        limit = value if plan is not None else 4 * limit


FIRST_LIMIT = 1.5
"""The first limit on a stage's compute, as a multiple of the perfect-balance bound (`_first_limit`)."""


def _first_limit(graph: TensorGraph, hw: Hardware, cap: int, latency: bool) -> float:
    """FIRST_LIMIT x the cycles no plan can beat: the perfect-balance bound of ops split up to `cap` ways
    (cost.sharded_bound_cycles), or under `latency` the sum of every op's smallest piece."""
    if latency:
        return FIRST_LIMIT * float(sum(cheapest_piece_cycles(graph, c, cap).sum() for c in set(hw.chiplets)))
    return FIRST_LIMIT * sharded_bound_cycles(graph, hw, cap)


FINE_MAX_OPS = 2000
"""Up to this many ops a stage may start at any op. Above it the DP's stages start at most at this many positions:
in a model of repeated blocks (frontend/blocks.py) at its blocks' candidate cuts (blocks.block_cuts), or at their
first ops alone when those are too many, and anywhere in its prefix and suffix; so the DP's work grows with the
blocks, not the ops. What is still too many (a model without blocks, or of more blocks than this) is thinned
evenly."""
RECENT_STAGES = 64
"""Charged bands (a group's bands with its stream estimates) kept for the groups alike that follow (`_stage_fn`)."""
HEAVY_SHARE = 0.01
"""An op with at least this share of its block's flops gets a cut before and after it (blocks.block_cuts)."""


def _space(graph: TensorGraph, memo: dict) -> tuple[Blocks | None, np.ndarray]:
    """(blocks, positions): the model's repeated blocks (or None) and the cuts the DP's stages start and end at
    (sorted op indices, 0 and n among them; FINE_MAX_OPS), memoised."""
    if "space" not in memo:
        n, blocks = graph.n_ops, find_blocks(graph)
        positions = np.arange(n + 1)
        if n > FINE_MAX_OPS and blocks is not None:
            outside = np.concatenate([np.arange(blocks.start + 1), np.arange(blocks.end, n + 1)])
            starts = blocks.start + blocks.period * np.arange(blocks.count)
            offsets = np.array(block_cuts(graph, blocks, HEAVY_SHARE))
            if len(outside) + blocks.count * len(offsets) > FINE_MAX_OPS:
                offsets = offsets[:1]
            positions = np.unique(np.concatenate([outside, (starts[:, None] + offsets[None, :]).ravel()]))
        memo["space"] = (blocks, _thin(positions, FINE_MAX_OPS))
    return memo["space"]


def _thin(positions: np.ndarray, most: int) -> np.ndarray:
    """At most `most` + 1 of the positions, evenly spread, the first and last kept."""
    if len(positions) <= most + 1:
        return positions
    keep = np.unique(np.round(np.linspace(0, len(positions) - 1, most + 1)).astype(np.int64))
    return positions[keep]


def _stage_fn(graph: TensorGraph, hw: Hardware, relaxed: bool, serial_streams: bool, memo: dict,
              latency: bool = False, limit: float = np.inf, capped: list | None = None, shared_links: bool = False):
    """stage(c, g): (copies, ring) as `group_stage_costs` for the group c..c+g-1, as the DP charges them (with the
    stage's stream estimates), each as a band over the DP's positions (`_space`, stage_bands.position_cells):
    band[jj, dd] the cost of the stage from position jj - wp + dd to position jj, covering every stage that fits
    and whose compute is within `limit`; or None where no group may stand. Appends to `capped` whether `limit`
    shortened a band. `shared_links`: as for `_staged_dp`."""
    blocks, positions = _space(graph, memo)
    fan_in = shared_fan_in if shared_links else _fan_in
    capped = [] if capped is None else capped
    precision = graph.metadata.get("precision")

    def cached(key: tuple, make):
        if key not in memo:
            memo[key] = make()
        return memo[key]

    def bands(c: int, g: int, kind) -> tuple:
        pa = cached(("pieces", kind, g, relaxed), lambda: piece_arrays(
            graph, hw, c, g, _stage_layout(graph, max(g, 2), c, keep_column(hw, precision)), relaxed))
        fit = cached(("fit", kind, g, relaxed), lambda: fit_width(pa, kind.sram_bytes))
        w = min(fit, compute_width(pa, limit))
        capped.append(w < fit)
        key = ("band", kind, g, next_stage_bytes_per_cycle(hw, c + g - 1), group_links(hw, c, g), relaxed, latency)
        if key not in memo or memo[key][0] < w:
            memo[key] = (w, *_position_bands(graph, hw, c, pa, w, blocks, positions, latency, relaxed, memo))
        return pa, key + (memo[key][0],), memo[key][1:]

    recent = memo.setdefault("stages", OrderedDict())

    def stage(c: int, g: int) -> tuple[np.ndarray, np.ndarray] | None:
        kind = hw.chiplets[c]
        if any(hw.chiplets[m] != kind for m in range(c, c + g)):
            return None     # groups of one chiplet kind only
        if not may_group(hw, c, g):
            return None     # and never across a level whose links are slower than the die-to-die ones
        pa, key, arrays = bands(c, g, kind)
        if relaxed or _forced(pa, g, kind) is not None:
            # a group's charges differ from another's of its size only by its streams' fan-in: groups alike share
            key += (fan_in(hw, c, g), serial_streams)
            if key not in recent:
                recent[key] = _charged(c, g, kind, pa, *arrays)
                if len(recent) > RECENT_STAGES:
                    recent.popitem(last=False)
            recent.move_to_end(key)
            return recent[key]
        copies, ring = arrays[:2]
        return copies, (copies if g == 1 else ring)

    def _forced(pa, g: int, kind):
        return cached(("reads", kind, g), lambda: _forced_reads(graph, hw, g, pa.axes))

    def _charged(c: int, g: int, kind, pa, copies, ring, over, first) -> tuple[np.ndarray, np.ndarray]:
        """The group's bands with its stream estimates charged."""
        if g == 1:
            ring = copies
        if relaxed:
            extra = _stream_time(hw, fan_in(hw, c, g), over)
            if serial_streams:
                # M4: a read is prefetched during the segment before its op's; a one-op stage's segment before is
                # its own, of the previous inference, so its read hides behind its compute
                one_op = first == positions[:, None] - 1
                add = lambda m: np.where(one_op, np.maximum(m, extra), m + extra)  # noqa: E731
            else:
                add = lambda m: np.maximum(m, extra)  # noqa: E731
        else:
            streams = _forced_stream_cycles(hw, c, g, _forced(pa, g, kind), fan_in)
            since = streams[positions][:, None] - streams[np.maximum(first, 0)]      # the stage's own reads
            add = lambda m: np.maximum(m, since)  # noqa: E731
        copies = add(copies)
        return copies, (copies if g == 1 else add(ring))

    return stage


def _position_bands(graph: TensorGraph, hw: Hardware, c: int, pa, w: int, blocks: Blocks | None,
                    positions: np.ndarray, latency: bool, relaxed: bool, memo: dict) -> tuple:
    """(copies, ring, excess, first) over the DP's positions for the group from chiplet c (`stage_bands`, band
    width w ops), the rows inside the middle blocks copied from one block's (`band_sources`) when the layout repeats
    with the blocks."""
    n = graph.n_ops
    periodic = periodic_layout(graph, blocks, pa.axes, pa.aligned)
    src = band_sources(n, blocks, w) if periodic else np.arange(n + 1)
    rows = np.unique(src[positions])
    copies, ring, excess = stage_bands(graph, hw, c, pa, w, rows, latency, relaxed, memo.setdefault("edges", {}))
    row_of = np.zeros(n + 1, dtype=np.int64)
    row_of[rows] = np.arange(len(rows))
    first, col = position_cells(positions, w)
    r = row_of[src[positions]][:, None]
    return (np.where(first >= 0, copies[r, col], np.inf), np.where(first >= 0, ring[r, col], np.inf),
            np.where(first >= 0, excess[r, col], 0), first)


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
    """`_solve`'s plan alone."""
    return _solve(n, n_chip, max_shard, stage, combine)[0]


def _solve(n: int, n_chip: int, max_shard: int, stage, combine=np.maximum
           ) -> tuple[tuple[np.ndarray, np.ndarray] | None, float]:
    """The staged DP over `stage` (`_stage_fn`). best[c, s, j]: the smallest bottleneck placing ops 0..j-1 on
    chiplets 0..c-1 (some maybe unused) with a last stage of s chiplets (s = 0: none yet, j = 0). A stage of g
    chiplets pays its entry ring only after a stage of 1 or g (or none), where the simulator runs entry rings
    (collectives.plan_rings), else k copies; inputs from stages further back are taken as from the last one (the
    state holds one size). Each (c, g) takes every (first op i, end j) of its band at once: the first best i per
    j, as a loop over i would. (assignment, shard), or None when no plan fits. `combine` joins the stages placed
    so far with the next: np.maximum (the bottleneck, for throughput) or np.add (the latency DP's sum of one
    inference's stage times). Returns ((assignment, shard) or None, the plan's value)."""
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
        return None, np.inf
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
    return (assignment, shard), float(best[n_chip, :, n].min())
