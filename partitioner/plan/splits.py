"""Contiguous splits of the topological order onto chiplets in pipeline order: the one home of the greedy, DP and
binary-search splits that the solver (as its first hint) and the baselines and policies (as anchors) all use.
The staged splits (stages on groups of chiplets, ops split across each group) are in partitioner/plan/staged_dp.py.

Each returns an assignment (chiplet id per op) whose stages follow pipeline order by construction.
"""
from __future__ import annotations

import math

import numpy as np

from partitioner.model.cost import _ceil_div, next_stage_bytes_per_cycle, op_cycles, op_cycles_matrix
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware


def sram_weights(graph: TensorGraph, hw: Hardware, relaxed: bool = False) -> np.ndarray:
    """Weight bytes the splits must fit in SRAM. SRAM-only package: all of them. With a memory tier, an op whose
    weights and activations exceed the largest SRAM streams anyway and counts 0; `relaxed` (the splits' second
    try when the first cannot fit) counts none, so an LLM's split balances compute instead of running out of
    chiplets, and repair streams what overflows (solver/residency.py)."""
    w = graph.weight_bytes
    if not hw.memory_stacks:
        return w
    if relaxed:
        return np.zeros_like(w)
    return np.where(w + graph.work_bytes > max(c.sram_bytes for c in hw.chiplets), 0, w)


def trivial_lower_bound(graph: TensorGraph, hw: Hardware) -> int:
    """max(ceil(total fastest cycles / n_chiplets), slowest op's fastest cycles): valid for any partition."""
    if graph.n_ops == 0:
        return 0
    fastest = op_cycles_matrix(graph, hw).min(axis=1)
    return int(max(math.ceil(int(fastest.sum()) / hw.n_chiplets), int(fastest.max())))


def contiguous_split(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Cut the topological order into at most n_chiplets consecutive runs: the smallest compute bottleneck (binary
    search) for which a greedy fill that also respects memory fits. Always pipeline-ordered (src < dst)."""
    n, n_chip = graph.n_ops, hw.n_chiplets
    cycles = op_cycles_matrix(graph, hw)
    sram = [c.sram_bytes for c in hw.chiplets]
    w, work = sram_weights(graph, hw).tolist(), graph.work_bytes.tolist()

    def fill(limit: int) -> np.ndarray | None:
        out = np.empty(n, dtype=np.int64)
        c, load, used, peak = 0, 0, 0, 0
        for i in range(n):
            while c < n_chip and load > 0 and (load + cycles[i, c] > limit
                                               or used + w[i] + max(peak, work[i]) > sram[c]):
                c, load, used, peak = c + 1, 0, 0, 0
            if c == n_chip:
                return None
            out[i] = c
            load, used, peak = load + int(cycles[i, c]), used + w[i], max(peak, work[i])
        return out

    lo, hi = trivial_lower_bound(graph, hw), int(cycles.max(axis=1).sum())
    best = fill(hi)
    if best is None and hw.memory_stacks:   # weights that do not fit will stream: split on activations only
        w = sram_weights(graph, hw, relaxed=True).tolist()
        best = fill(hi)
    if best is None:   # memory alone defeats a contiguous split; spread evenly by count instead
        return (np.arange(n) * n_chip // max(n, 1)).astype(np.int64)
    while lo < hi:
        mid = (lo + hi) // 2
        got = fill(mid)
        if got is None:
            lo = mid + 1
        else:
            hi, best = mid, got
    return best


def greedy_partition(graph: TensorGraph, hw: Hardware, relaxed: bool = False) -> np.ndarray:
    """Topological load balancing: fill chiplets in pipeline order up to an equal share of the total cycles,
    moving on early when the next op would overflow the chiplet's SRAM (weights counted by `sram_weights`; with
    a memory tier, if the last chiplet overflows, once more with `relaxed`)."""
    n_chip = hw.n_chiplets
    fit_w = sram_weights(graph, hw, relaxed)
    overflow = False
    cycles = op_cycles(graph, hw.chiplets[0]).astype(float)
    target = cycles.sum() / n_chip
    assignment = np.zeros(graph.n_ops, dtype=np.int64)
    chip, load, weights, peak = 0, 0.0, 0, 0
    for i in range(graph.n_ops):
        w, work = int(fit_w[i]), int(graph.work_bytes[i])
        # `load` is cumulative, so the op's midpoint is compared with this chiplet's share boundary.
        over_time = load > 0 and load + cycles[i] / 2 > target * (chip + 1)
        over_memory = weights + w + max(peak, work) > hw.chiplets[chip].sram_bytes and (weights or peak)
        if chip < n_chip - 1 and (over_time or over_memory):
            chip, weights, peak = chip + 1, 0, 0
        elif over_memory:
            overflow = True
        assignment[i] = chip
        load += cycles[i]
        weights += w
        peak = max(peak, work)
    if overflow and hw.memory_stacks and not relaxed:
        return greedy_partition(graph, hw, relaxed=True)
    return assignment


def _send_bytes(graph: TensorGraph) -> np.ndarray:
    """send[s, j]: bytes op s must ship out of a stage that ends before op j (its largest edge to an op >= j).
    A producer's tensor leaves its chiplet once; fan-out to several later stages is charged once."""
    n = graph.n_ops
    send = np.zeros((n, n + 1), dtype=np.int64)
    for s, d, b in zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), graph.edge_bytes.tolist()):
        # The edge is cut by every stage end j in (s, d].
        np.maximum(send[s, s + 1:d + 1], b, out=send[s, s + 1:d + 1])
    return send


def stage_cost_matrix(graph: TensorGraph, hw: Hardware, chiplet: int, relaxed: bool = False) -> np.ndarray:
    """cost[i, j]: cycles of running ops i..j-1 on `chiplet` plus shipping their cut outputs (inf if the ops do
    not fit its SRAM, 0 for the empty stage i == j). The DP's stage cost, in the simulator's cost model."""
    n = graph.n_ops
    chip = hw.chiplets[chiplet]
    out_bw = next_stage_bytes_per_cycle(hw, chiplet)
    cyc = np.concatenate([[0], np.cumsum(op_cycles(graph, chip))]).astype(float)
    wts = np.concatenate([[0], np.cumsum(sram_weights(graph, hw, relaxed))])
    send = _send_bytes(graph)
    # cross[i, j] = sum_{i <= s < j} send[s, j]: a reverse cumulative sum down each column (send[s, j] is 0 for
    # s >= j, so the sum may run to the end).
    cross = np.flip(np.cumsum(np.flip(send, axis=0), axis=0), axis=0)
    cost = np.full((n + 1, n + 1), np.inf)
    work = graph.work_bytes
    for i in range(n + 1):
        cost[i, i] = 0.0
        if i == n:
            break
        j = np.arange(i + 1, n + 1)
        peak = np.maximum.accumulate(work[i:])
        fits = wts[j] - wts[i] + peak <= chip.sram_bytes
        ship = _ceil_div(cross[i, j], out_bw).astype(float)
        cost[i, i + 1:] = np.where(fits, cyc[j] - cyc[i] + ship, np.inf)
    return cost


DP_MAX_OPS = 3000
"""Above this many ops dp_partition is the binary-search split (contiguous_split): the DP's stage-cost and send
matrices are (n+1)^2 each, 3 x 72 MB at 3,000 ops but 3 x 800 MB and about 100 s at 10,000."""


def dp_partition(graph: TensorGraph, hw: Hardware, relaxed: bool = False) -> np.ndarray:
    """Optimal contiguous split of the topological order into at most n_chiplets stages (stage k on chiplet k),
    minimising the slowest stage's cycles under SRAM limits (weights counted by `sram_weights`). If no split
    fits: with a memory tier, once more with `relaxed`; otherwise greedy. Above DP_MAX_OPS ops, the
    binary-search split instead (optimal for compute alone, without shipping costs)."""
    n, n_chip = graph.n_ops, hw.n_chiplets
    if n > DP_MAX_OPS:
        return contiguous_split(graph, hw)
    costs: dict = {}
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    choice = np.zeros((n_chip, n + 1), dtype=np.int64)
    for k in range(n_chip):
        chip = (hw.chiplets[k], next_stage_bytes_per_cycle(hw, k))
        cost = costs.get(chip)
        if cost is None:
            cost = costs[chip] = stage_cost_matrix(graph, hw, k, relaxed)
        nxt = np.full(n + 1, np.inf)
        for j in range(n + 1):
            cand = np.maximum(best[:j + 1], cost[:j + 1, j])
            i = int(np.argmin(cand))
            nxt[j], choice[k, j] = cand[i], i
        best = nxt
    if not np.isfinite(best[n]):
        if hw.memory_stacks and not relaxed:
            return dp_partition(graph, hw, relaxed=True)
        return greedy_partition(graph, hw)
    assignment = np.zeros(n, dtype=np.int64)
    j = n
    for k in range(n_chip - 1, -1, -1):
        i = int(choice[k, j])
        assignment[i:j] = k
        j = i
    return assignment
