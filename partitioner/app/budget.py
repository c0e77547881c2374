"""The whole-run budget and Ctrl-C: stop the search, keep the best valid partition found so far.

`--max-time S` bounds the whole run (search, certificate, writing); the first Ctrl-C asks the search to stop after
the evaluation in flight (each is bounded by its CP-SAT limit), a second one aborts at once. Either way the search
loops see it through `Recorder`, the evaluate_fn wrapper every method's proposals pass through, which raises
`Stopped` instead of starting another evaluation; the run then writes the best partition recorded so far, marked
interrupted. The policies never import this: they only ever see an evaluate_fn.
"""
from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np

from partitioner.sim.objective import beats, score
from partitioner.sim.report import Evaluation

CERTIFICATE_MIN_S = 1.0
"""Below this much time left the certificate is skipped (and the report says so) rather than cut short."""
WRITE_RESERVE_S = 2.0
"""Time kept back from the search for simulating with a trace and writing the outputs."""


class Stopped(Exception):
    """Raised by Recorder instead of starting an evaluation once the budget is spent or Ctrl-C was pressed."""


class RunBudget:
    """A wall-clock deadline (None: unbounded) and the Ctrl-C flag."""

    def __init__(self, max_time_s: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.deadline = None if max_time_s is None else self.start + max_time_s
        self.interrupted = False

    def remaining(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - self.clock()

    def search_left(self) -> float:
        """Seconds the search may still start evaluations in (the write reserve kept back)."""
        return self.remaining() - WRITE_RESERVE_S

    def stop_reason(self) -> str | None:
        if self.interrupted:
            return "interrupted by Ctrl-C"
        if self.search_left() <= 0:
            return "the --max-time budget ran out"
        return None

    def limit(self, wanted_s: float, floor_s: float = 0.1) -> float:
        """A CP-SAT time limit that ends within the budget: wanted_s, or what is left of the search time."""
        return max(min(wanted_s, self.search_left()), floor_s)

    @contextmanager
    def catch_sigint(self) -> Iterator[None]:
        """First Ctrl-C sets `interrupted` (the search stops after the evaluation in flight); the second raises
        KeyboardInterrupt as usual. Only in the main thread (signal handlers cannot be installed elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame) -> None:
            if self.interrupted:
                raise KeyboardInterrupt
            self.interrupted = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class Recorder:
    """Wraps an evaluate_fn: records every evaluation's best under the objective (sim/objective.py), and raises
    Stopped before starting one once the budget says stop. The first evaluation always runs, so a stopped search
    still has a partition to return."""

    def __init__(self, evaluate_fn: Callable[[np.ndarray], Evaluation], budget: RunBudget,
                 objective: str = "throughput") -> None:
        self.evaluate_fn, self.budget, self.objective = evaluate_fn, budget, objective
        self.best: Evaluation | None = None
        self.history: list[tuple[int, float]] = []
        self.stopped: str | None = None

    def __call__(self, proposal: np.ndarray) -> Evaluation:
        reason = self.budget.stop_reason()
        if reason is not None and self.best is not None:
            self.stopped = reason
            raise Stopped(reason)
        ev = self.evaluate_fn(proposal)
        if beats(ev, self.best, self.objective):
            self.best = ev
        self.history.append((len(self.history) + 1, score(self.best, self.objective)))
        return ev


def wall_cap(run_budget: RunBudget, wanted_s: float) -> float:
    """The wall-clock cap of a deterministic CP-SAT solve: its usual one (solver.optimize), or what the budget
    leaves."""
    from solver.optimize import DETERMINISTIC_WALL_FACTOR

    return max(min(DETERMINISTIC_WALL_FACTOR * wanted_s + 10.0, run_budget.search_left()), 0.1)
