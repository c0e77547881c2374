"""The methods the learned policy is measured against: random search, greedy, DP and simulated annealing.

greedy and dp are constructive (one proposal each); random and anneal are search loops that spend a budget of
evaluated partitions through the same `evaluate_fn` (propose -> repair -> simulate) as the policy does, so
budgets compare like with like.
"""
from __future__ import annotations

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.sim.report import Evaluation
from partitioner.plan.splits import dp_partition, greedy_partition, sram_weights
from policies.anneal import EvaluateFn, ProgressFn, SearchResult, Tracker, anneal_loop


# --- search loops ---------------------------------------------------------------------------------------------------------
def random_search(graph: TensorGraph, hw: Hardware, *, budget: int, seed: int, evaluate_fn: EvaluateFn,
                  on_eval: ProgressFn | None = None) -> SearchResult:
    """Uniformly random chiplet per op, repaired by CP-SAT, `budget` times; keep the best."""
    rng = np.random.default_rng(seed)
    track = Tracker(evaluate_fn, on_eval)
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
    invalid partition. Restarts, temperature and acceptance are policies.anneal.anneal_loop's.
    """
    allowed = np.array([[op.op_type not in c.unsupported_ops for c in hw.chiplets] for op in graph.ops])

    def propose(current: Evaluation, rng: np.random.Generator) -> np.ndarray | None:
        ops, targets = _valid_moves(graph, hw, current.assignment, allowed)
        if not len(ops):
            return None
        # Half the moves take an op off the bottleneck chiplet, the only kind that can raise throughput at once;
        # the rest explore anywhere.
        off_bottleneck = np.flatnonzero(current.assignment[ops] == current.report.bottleneck_chiplet)
        pool = off_bottleneck if len(off_bottleneck) and rng.random() < 0.5 else np.arange(len(ops))
        k = int(pool[rng.integers(len(pool))])
        candidate = current.assignment.copy()
        candidate[ops[k]] = targets[k]
        return candidate

    starts = ([greedy_partition(graph, hw)] + ([dp_partition(graph, hw)] if budget > 1 else []) if start is None
              else [start])
    return anneal_loop("anneal", evaluate_fn, starts, propose, budget=budget, seed=seed, on_eval=on_eval,
                       t_start=t_start, t_end=t_end, restart_after=restart_after)
