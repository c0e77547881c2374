"""What a run optimises (`--objective`), and the one score every comparison between plans uses.

throughput  inferences per second of a full stream (Report.throughput_per_s, rule R8): pipelines shine.
latency     the time of one inference simulated alone in an empty package (Report.latency_s, rule R9), what
            batch-1 serving waits for; scored as 1 / latency_s, inferences per second when they run one at a time.

`score` is higher-is-better under both, so every `a beats b` test in a run is `score(a) > score(b)`. The searches in
policies/ compare `Evaluation.throughput`; `ranked` hands them evaluations whose `throughput` is the objective's
score, so they maximise it unchanged, and `plain` turns the result back into an ordinary Evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, TypeVar

from partitioner.core.errors import UserError
from partitioner.sim.report import Evaluation, Report

OBJECTIVES = ("throughput", "latency")
DEFAULT_OBJECTIVE = "throughput"

T = TypeVar("T")


def check_objective(objective: object, where: str = "--objective") -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown objective {objective!r} ({where})",
                        "pass --objective throughput (the default: inferences/s of a stream) or latency (the time of "
                        "one inference)")
    return objective


def score(evaluation: Evaluation | Report, objective: str) -> float:
    """Higher is better: inferences/s of the stream, or 1 / the latency of one inference alone. Under throughput
    anything with a `throughput` (an Evaluation, a test's stand-in) scores that."""
    report = evaluation.report if isinstance(evaluation, Evaluation) else evaluation
    if objective == "latency":
        return 1.0 / max(report.latency_s, 1e-30)
    if isinstance(report, Report):
        return report.throughput_per_s
    return evaluation.throughput


def beats(a: Evaluation, b: Evaluation | None, objective: str) -> bool:
    """Does `a` strictly beat `b` (None: nothing yet) under the objective?"""
    return b is None or score(a, objective) > score(b, objective)


@dataclass(frozen=True)
class LatencyRanked(Evaluation):
    """An Evaluation whose `throughput` is 1 / latency: the searches, which maximise `throughput`, rank it by the
    time of one inference. Only ever seen inside a search; `plain` unwraps it."""

    @property
    def throughput(self) -> float:
        return score(self.report, "latency")


def ranked(evaluation: Evaluation, objective: str) -> Evaluation:
    if objective == "latency" and evaluation is not None:
        return LatencyRanked(evaluation.partition, evaluation.report)
    return evaluation


def ranked_fn(evaluate_fn: Callable[[T], Evaluation], objective: str) -> Callable[[T], Evaluation]:
    """`evaluate_fn` whose evaluations rank by the objective (itself under throughput)."""
    if objective != "latency":
        return evaluate_fn
    return lambda proposal: ranked(evaluate_fn(proposal), objective)


def plain(evaluation: Evaluation | None) -> Evaluation | None:
    if evaluation is None or type(evaluation) is Evaluation:
        return evaluation
    return Evaluation(evaluation.partition, evaluation.report)
