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

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.sim.report import Evaluation
from partitioner.plan.splits import dp_partition, greedy_partition, sram_weights
from solver.repair import RepairTimeout

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
        self.failure: RepairTimeout | None = None
        self.history: list[tuple[int, float]] = []
        self.start = time.perf_counter()

    def __call__(self, proposal: np.ndarray) -> Evaluation | None:
        """The evaluation, or None when repair ran out of time on this proposal (the evaluation is spent)."""
        try:
            ev = self.evaluate_fn(proposal)
        except RepairTimeout as exc:
            self.failure, ev = exc, None
        if ev is not None and (self.best is None or ev.throughput > self.best.throughput):
            self.best = ev
        best = self.best.throughput if self.best is not None else 0.0
        self.history.append((len(self.history) + 1, best))
        if self.on_eval is not None:
            self.on_eval(len(self.history), best)
        return ev

    def result(self, method: str) -> SearchResult:
        if self.best is None:      # every proposal timed out in repair: say so, with its fix
            raise self.failure
        return SearchResult(method, self.best, len(self.history), tuple(self.history),
                            time.perf_counter() - self.start)


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
    source chiplet only frees memory; with a memory tier, weights as `splits.sram_weights` counts them).
    allowed[op, chiplet] excludes op types a chiplet cannot run.
    """
    n_chip = hw.n_chiplets
    pred_max = np.full(graph.n_ops, -1)
    succ_min = np.full(graph.n_ops, n_chip)
    np.maximum.at(pred_max, graph.edge_dst, a[graph.edge_src])
    np.minimum.at(succ_min, graph.edge_src, a[graph.edge_dst])
    w = sram_weights(graph, hw)
    weights = np.bincount(a, weights=w, minlength=n_chip)
    peak = np.zeros(n_chip)
    np.maximum.at(peak, a, graph.work_bytes.astype(float))
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=float)
    ops, targets = [], []
    for step, ok in ((1, (a + 1 < n_chip) & (a + 1 <= succ_min)), (-1, (a >= 1) & (a - 1 >= pred_max))):
        idx = np.flatnonzero(ok)
        t = a[idx] + step
        fits = weights[t] + w[idx] + np.maximum(peak[t], graph.work_bytes[idx]) <= sram[t]
        keep = fits & allowed[idx, t]
        ops.append(idx[keep])
        targets.append(t[keep])
    return np.concatenate(ops), np.concatenate(targets)


def anneal(graph: TensorGraph, hw: Hardware, *, budget: int, seed: int, evaluate_fn: EvaluateFn,
           start: np.ndarray | None = None, t_start: float = 0.05, t_end: float = 0.001,
           restart_after: int | None = None, on_eval: ProgressFn | None = None) -> SearchResult:
    """Simulated annealing over single-op moves to a neighbouring chiplet that keep the partition valid.

    Starts from the better of the repaired greedy and DP splits (two evaluations, the anchors the learned policy
    starts from too), or from `start` (one evaluation); each step draws among all valid moves (see
    _valid_moves), half the time among those leaving the bottleneck chiplet, so no evaluation is spent on an
    invalid partition. Acceptance is Metropolis on
    log throughput with a geometric temperature schedule from t_start to t_end.

    Restart from best: after `restart_after` evaluations without a new best (default max(8, budget // 8)), the walk
    returns to the best partition found so far, so a long schedule cannot end in a worse basin than a short one.
    """
    rng = np.random.default_rng(seed)
    track = _Tracker(evaluate_fn, on_eval)
    if start is None:
        starts = [track(greedy_partition(graph, hw))] + ([track(dp_partition(graph, hw))] if budget > 1 else [])
        current = max((ev for ev in starts if ev is not None), key=lambda ev: ev.throughput, default=None)
    else:
        current = track(start)
    if current is None:                 # no start survived repair
        return track.result("anneal")
    allowed = np.array([[op.op_type not in c.unsupported_ops for c in hw.chiplets] for op in graph.ops])
    remaining = budget - len(track.history)
    steps = max(remaining, 1)
    patience = max(8, budget // 8) if restart_after is None else restart_after
    since_best = 0
    for step in range(remaining):
        if since_best >= patience:
            current, since_best = track.best, 0
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
        before = track.best.throughput
        ev = track(candidate)
        since_best = 0 if track.best.throughput > before else since_best + 1
        if ev is None:                  # repair timed out on this move: a rejected move
            continue
        delta = math.log(max(ev.throughput, 1e-30)) - math.log(max(current.throughput, 1e-30))
        if delta >= 0 or rng.random() < math.exp(delta / temp):
            current = ev
    return track.result("anneal")
