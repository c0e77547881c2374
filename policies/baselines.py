"""The methods the learned policy is measured against: random search, greedy, DP and simulated annealing.

greedy and dp are constructive (one proposal each); random and anneal are search loops that spend a budget of
evaluated partitions through the same `evaluate_fn` (propose -> repair -> simulate) as the policy does, so
budgets compare like with like.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from partitioner.cost import op_cycles, serialization_cycles
from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware
from partitioner.pipeline import Evaluation

EvaluateFn = Callable[[np.ndarray], Evaluation]
ProgressFn = Callable[[int, float], None]


@dataclass(frozen=True)
class SearchResult:
    """Best partition a method found, with its convergence history.

    history[k] = (evaluations spent, best throughput so far) after the k-th evaluation.
    """

    method: str
    best: Evaluation
    evaluations: int
    history: tuple[tuple[int, float], ...]
    wall_s: float


class _Tracker:
    """Counts evaluations and keeps the best one; the loops below share it."""

    def __init__(self, evaluate_fn: EvaluateFn, on_eval: ProgressFn | None) -> None:
        self.evaluate_fn, self.on_eval = evaluate_fn, on_eval
        self.best: Evaluation | None = None
        self.history: list[tuple[int, float]] = []
        self.start = time.perf_counter()

    def __call__(self, proposal: np.ndarray) -> Evaluation:
        ev = self.evaluate_fn(proposal)
        if self.best is None or ev.throughput > self.best.throughput:
            self.best = ev
        self.history.append((len(self.history) + 1, self.best.throughput))
        if self.on_eval is not None:
            self.on_eval(len(self.history), self.best.throughput)
        return ev

    def result(self, method: str) -> SearchResult:
        assert self.best is not None, "a search spends at least one evaluation"
        return SearchResult(method, self.best, len(self.history), tuple(self.history),
                            time.perf_counter() - self.start)


# --- constructive methods ---------------------------------------------------------------------------------------------
def greedy_partition(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Topological load balancing: fill chiplets in pipeline order up to an equal share of the total cycles,
    moving on early when the next op would overflow the chiplet's SRAM."""
    n_chip = hw.n_chiplets
    cycles = op_cycles(graph, hw.chiplets[0]).astype(float)
    target = cycles.sum() / n_chip
    assignment = np.zeros(graph.n_ops, dtype=np.int64)
    chip, load, weights, peak = 0, 0.0, 0, 0
    for i in range(graph.n_ops):
        w, work = int(graph.weight_bytes[i]), int(graph.work_bytes[i])
        # `load` is cumulative, so the op's midpoint is compared with this chiplet's share boundary.
        over_time = load > 0 and load + cycles[i] / 2 > target * (chip + 1)
        over_memory = weights + w + max(peak, work) > hw.chiplets[chip].sram_bytes and (weights or peak)
        if chip < n_chip - 1 and (over_time or over_memory):
            chip, weights, peak = chip + 1, 0, 0
        assignment[i] = chip
        load += cycles[i]
        weights += w
        peak = max(peak, work)
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


def stage_cost_matrix(graph: TensorGraph, hw: Hardware, chiplet: int) -> np.ndarray:
    """cost[i, j]: cycles of running ops i..j-1 on `chiplet` plus shipping their cut outputs (inf if the ops do
    not fit its SRAM, 0 for the empty stage i == j). The DP's stage cost, in the simulator's cost model."""
    n = graph.n_ops
    chip = hw.chiplets[chiplet]
    cyc = np.concatenate([[0], np.cumsum(op_cycles(graph, chip))]).astype(float)
    wts = np.concatenate([[0], np.cumsum(graph.weight_bytes)])
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
        ship = serialization_cycles(cross[i, j], hw).astype(float)
        cost[i, i + 1:] = np.where(fits, cyc[j] - cyc[i] + ship, np.inf)
    return cost


def dp_partition(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Optimal contiguous split of the topological order into at most n_chiplets stages (stage k on chiplet k),
    minimising the slowest stage's cycles under SRAM limits. Falls back to greedy if no split fits."""
    n, n_chip = graph.n_ops, hw.n_chiplets
    costs: dict = {}
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    choice = np.zeros((n_chip, n + 1), dtype=np.int64)
    for k in range(n_chip):
        chip = hw.chiplets[k]
        cost = costs.get(chip)
        if cost is None:
            cost = costs[chip] = stage_cost_matrix(graph, hw, k)
        nxt = np.full(n + 1, np.inf)
        for j in range(n + 1):
            cand = np.maximum(best[:j + 1], cost[:j + 1, j])
            i = int(np.argmin(cand))
            nxt[j], choice[k, j] = cand[i], i
        best = nxt
    if not np.isfinite(best[n]):
        return greedy_partition(graph, hw)
    assignment = np.zeros(n, dtype=np.int64)
    j = n
    for k in range(n_chip - 1, -1, -1):
        i = int(choice[k, j])
        assignment[i:j] = k
        j = i
    return assignment


# --- search loops ---------------------------------------------------------------------------------------------------------
def random_search(graph: TensorGraph, hw: Hardware, *, budget: int, seed: int, evaluate_fn: EvaluateFn,
                  on_eval: ProgressFn | None = None) -> SearchResult:
    """Uniformly random chiplet per op, repaired by CP-SAT, `budget` times; keep the best."""
    rng = np.random.default_rng(seed)
    track = _Tracker(evaluate_fn, on_eval)
    for _ in range(budget):
        track(rng.integers(0, hw.n_chiplets, size=graph.n_ops))
    return track.result("random")


def _valid_moves(graph: TensorGraph, hw: Hardware, a: np.ndarray, allowed: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Every single-op move to a neighbouring chiplet that keeps the partition valid: (ops, target chiplets).

    Pipeline order: an op may go up to c+1 if no successor sits on c, down to c-1 if no predecessor sits on c.
    Memory: the target must hold its weights plus the op's, with the larger of the two activation peaks (the
    source chiplet only frees memory). allowed[op, chiplet] excludes op types a chiplet cannot run.
    """
    n_chip = hw.n_chiplets
    pred_max = np.full(graph.n_ops, -1)
    succ_min = np.full(graph.n_ops, n_chip)
    np.maximum.at(pred_max, graph.edge_dst, a[graph.edge_src])
    np.minimum.at(succ_min, graph.edge_src, a[graph.edge_dst])
    weights = np.bincount(a, weights=graph.weight_bytes, minlength=n_chip)
    peak = np.zeros(n_chip)
    np.maximum.at(peak, a, graph.work_bytes.astype(float))
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=float)
    ops, targets = [], []
    for step, ok in ((1, (a + 1 < n_chip) & (a + 1 <= succ_min)), (-1, (a >= 1) & (a - 1 >= pred_max))):
        idx = np.flatnonzero(ok)
        t = a[idx] + step
        fits = weights[t] + graph.weight_bytes[idx] + np.maximum(peak[t], graph.work_bytes[idx]) <= sram[t]
        keep = fits & allowed[idx, t]
        ops.append(idx[keep])
        targets.append(t[keep])
    return np.concatenate(ops), np.concatenate(targets)


def anneal(graph: TensorGraph, hw: Hardware, *, budget: int, seed: int, evaluate_fn: EvaluateFn,
           start: np.ndarray | None = None, t_start: float = 0.05, t_end: float = 0.001,
           on_eval: ProgressFn | None = None) -> SearchResult:
    """Simulated annealing over single-op moves to a neighbouring chiplet that keep the partition valid.

    Starts from the better of the repaired greedy and DP splits (two evaluations, the anchors the learned policy
    starts from too), or from `start` (one evaluation); each step draws among all valid moves (see
    _valid_moves), half the time among those leaving the bottleneck chiplet, so no evaluation is spent on an
    invalid partition. Acceptance is Metropolis on
    log throughput with a geometric temperature schedule from t_start to t_end.
    """
    rng = np.random.default_rng(seed)
    track = _Tracker(evaluate_fn, on_eval)
    if start is None:
        starts = [track(greedy_partition(graph, hw))] + ([track(dp_partition(graph, hw))] if budget > 1 else [])
        current = max(starts, key=lambda ev: ev.throughput)
    else:
        current = track(start)
    allowed = np.array([[op.op_type not in c.unsupported_ops for c in hw.chiplets] for op in graph.ops])
    remaining = budget - len(track.history)
    steps = max(remaining, 1)
    for step in range(remaining):
        temp = t_start * (t_end / t_start) ** (step / steps)
        ops, targets = _valid_moves(graph, hw, current.assignment, allowed)
        if not len(ops):
            break  # nothing can move without breaking validity
        # Half the moves take an op off the bottleneck chiplet, the only kind that can raise throughput at once;
        # the rest explore anywhere.
        off_bottleneck = np.flatnonzero(current.assignment[ops] == current.report.bottleneck_chiplet)
        pool = off_bottleneck if len(off_bottleneck) and rng.random() < 0.5 else np.arange(len(ops))
        k = int(pool[rng.integers(len(pool))])
        candidate = current.assignment.copy()
        candidate[ops[k]] = targets[k]
        ev = track(candidate)
        delta = math.log(max(ev.throughput, 1e-30)) - math.log(max(current.throughput, 1e-30))
        if delta >= 0 or rng.random() < math.exp(delta / temp):
            current = ev
    return track.result("anneal")
