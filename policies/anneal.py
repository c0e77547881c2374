"""The one local-search loop behind every annealing search, and the evaluation bookkeeping all searches share.

Whole-op annealing (policies.baselines), the learned move search (policies.move_policy) and the split-plan searches
(policies.split_search) differ only in which move they try, so the loop is generic and the move is the caller's:
a search passes its start proposals and `propose(current, rng) -> candidate` and gets the same budget accounting,
restart patience, temperature schedule and acceptance test as every other. Comparisons between methods at equal
budgets then measure the move choice and nothing else.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from partitioner.sim.report import Evaluation
from solver.repair import RepairTimeout

EvaluateFn = Callable[[np.ndarray], Evaluation]
ProgressFn = Callable[[int, float], None]
ProposeFn = Callable[[Evaluation, np.random.Generator], Any]
"""(current evaluation, the search's rng) -> the next candidate to evaluate, or None when no move is left."""


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


class Tracker:
    """Counts evaluations and keeps the best one, so every search books its budget the same way."""

    def __init__(self, evaluate_fn: Callable[[Any], Evaluation], on_eval: ProgressFn | None) -> None:
        self.evaluate_fn, self.on_eval = evaluate_fn, on_eval
        self.best: Evaluation | None = None
        self.failure: RepairTimeout | None = None
        self.history: list[tuple[int, float]] = []
        self.start = time.perf_counter()

    def __call__(self, proposal: Any) -> Evaluation | None:
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


def anneal_loop(method: str, evaluate_fn: Callable[[Any], Evaluation], starts: Sequence[Any], propose: ProposeFn,
                *, budget: int, seed: int, on_eval: ProgressFn | None = None, t_start: float = 0.05,
                t_end: float = 0.001, restart_after: int | None = None, metropolis: bool = True,
                observe: Callable[[float], None] | None = None) -> SearchResult:
    """Local search from the best of `starts` for `budget` evaluations in all; the result is named `method`.

    starts     evaluated first, in order (they count against the budget); the walk begins at the best that
               evaluates. If none does, the result raises the repair failure.
    restart    after `restart_after` evaluations without a new best (default max(8, budget // 8)) the walk returns
               to the best so far, so a long schedule cannot end in a worse basin than a short one.
    step       propose(current, rng) gives a candidate (None ends the search); it is evaluated, and a repair
               timeout counts as a rejected move.
    observe    called with each evaluated move's log-throughput gain over the current, before acceptance (the
               learned searches' reward).
    accept     Metropolis on log throughput, temperature geometric from t_start to t_end over the steps after the
               starts; metropolis=False accepts every move (a random walk) and draws nothing from rng.
    """
    rng = np.random.default_rng(seed)
    track = Tracker(evaluate_fn, on_eval)
    evaluated = [track(s) for s in starts]
    current = max((ev for ev in evaluated if ev is not None), key=lambda ev: ev.throughput, default=None)
    if current is None:                 # no start survived repair
        return track.result(method)
    remaining = budget - len(track.history)
    steps = max(remaining, 1)
    patience = max(8, budget // 8) if restart_after is None else restart_after
    since_best = 0
    for step in range(remaining):
        if since_best >= patience:
            current, since_best = track.best, 0
        temp = t_start * (t_end / t_start) ** (step / steps)
        candidate = propose(current, rng)
        if candidate is None:
            break                       # nothing can move without breaking validity
        before = track.best.throughput
        ev = track(candidate)
        since_best = 0 if track.best.throughput > before else since_best + 1
        if ev is None:                  # repair timed out on this move: a rejected move
            continue
        delta = math.log(max(ev.throughput, 1e-30)) - math.log(max(current.throughput, 1e-30))
        if observe is not None:
            observe(delta)
        if not metropolis or delta >= 0 or rng.random() < math.exp(delta / temp):
            current = ev
    return track.result(method)
