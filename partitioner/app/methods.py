"""The methods `partition --method` offers, as a registry of typed options (the way Alpa's stage_construction.py
types its StageOption): each option says what it is and whether it reads --budget and --policy, and runs through
one signature. The CLI's choices, the option checks and the dispatch all read this one table.

Every method's proposals go through the same repair + simulate (app/pipeline.py): `search` wraps that as the
evaluate_fn the method calls, so a method only decides what to propose."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from partitioner.app.budget import Recorder, RunBudget, Stopped, wall_cap
from partitioner.app.pipeline import evaluate
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.plan.splits import dp_partition, greedy_partition
from partitioner.sim.objective import DEFAULT_OBJECTIVE, OBJECTIVES, check_objective, plain, ranked_fn
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate
from policies.anneal import SearchResult
from policies.baselines import anneal, random_search

DEFAULT_REPAIR_LIMIT_S = 5.0
DEFAULT_EXACT_LIMIT_S = 30.0

OnEval = Callable[[int, float], None]


@dataclass(frozen=True)
class SearchContext:
    """What every method is run with: the problem, its budgets, and the evaluate_fn (repair + simulate, wrapped
    by the run's Recorder) its proposals go through."""

    graph: TensorGraph
    hw: Hardware
    budget: int
    seed: int
    time_limit_s: float | None
    policy: str | None
    on_eval: OnEval | None
    run_budget: RunBudget
    evaluate_fn: Callable[[np.ndarray], Evaluation]
    batch: int
    start: float

    def single(self, method: str, ev: Evaluation) -> SearchResult:
        """A constructive method's one evaluation, reported like a search."""
        if self.on_eval:
            self.on_eval(1, ev.throughput)
        return SearchResult(method, ev, 1, ((1, ev.throughput),), time.perf_counter() - self.start)


@dataclass(frozen=True)
class MethodOption:
    """One --method: its name, what it does (the CLI's help), whether it spends --budget evaluations (a search) or
    builds one plan, whether it reads a --policy checkpoint, how it runs and which objectives it serves."""

    name: str
    help: str
    searches: bool
    uses_policy: bool
    run: Callable[[SearchContext], SearchResult]
    objectives: tuple[str, ...] = OBJECTIVES
    """The --objective values it can optimise: every search maximises what its evaluate_fn ranks by; exact's CP-SAT
    model minimises the busiest resource, a throughput objective only."""


def _greedy(ctx: SearchContext) -> SearchResult:
    return ctx.single("greedy", ctx.evaluate_fn(greedy_partition(ctx.graph, ctx.hw)))


def _dp(ctx: SearchContext) -> SearchResult:
    return ctx.single("dp", ctx.evaluate_fn(dp_partition(ctx.graph, ctx.hw)))


def _random(ctx: SearchContext) -> SearchResult:
    return random_search(ctx.graph, ctx.hw, budget=ctx.budget, seed=ctx.seed, evaluate_fn=ctx.evaluate_fn,
                         on_eval=ctx.on_eval)


def _anneal(ctx: SearchContext) -> SearchResult:
    return anneal(ctx.graph, ctx.hw, budget=ctx.budget, seed=ctx.seed, evaluate_fn=ctx.evaluate_fn,
                  on_eval=ctx.on_eval)


def _exact(ctx: SearchContext) -> SearchResult:
    from solver.optimize import optimize

    limit = DEFAULT_EXACT_LIMIT_S if ctx.time_limit_s is None else ctx.time_limit_s
    part = optimize(ctx.graph, ctx.hw, time_limit_s=ctx.run_budget.limit(limit), seed=ctx.seed,
                    hint=dp_partition(ctx.graph, ctx.hw), deterministic=True,
                    wall_limit_s=wall_cap(ctx.run_budget, limit), batch=ctx.batch)
    return ctx.single("exact", Evaluation(part, simulate(ctx.graph, ctx.hw, part, batch=ctx.batch)))


def _learned(ctx: SearchContext) -> SearchResult:
    from policies.move_policy import learned_search

    return learned_search(ctx.graph, ctx.hw, budget=ctx.budget, seed=ctx.seed, evaluate_fn=ctx.evaluate_fn,
                          policy_path=ctx.policy, on_eval=ctx.on_eval)


def _rl(ctx: SearchContext) -> SearchResult:
    from policies.rl_search import rl_search

    return rl_search(ctx.graph, ctx.hw, budget=ctx.budget, seed=ctx.seed, evaluate_fn=ctx.evaluate_fn,
                     policy_path=ctx.policy, on_eval=ctx.on_eval)


REGISTRY: dict[str, MethodOption] = {m.name: m for m in (
    MethodOption("rl", "the GNN policy proposes whole-op assignments (policies/pretrained/policy.pt or --policy)",
                 searches=True, uses_policy=True, run=_rl),
    MethodOption("random", "random contiguous splits", searches=True, uses_policy=False, run=_random),
    MethodOption("greedy", "one greedy split by work", searches=False, uses_policy=False, run=_greedy),
    MethodOption("dp", "the optimal contiguous split of the topological order", searches=False,
                 uses_policy=False, run=_dp),
    MethodOption("anneal", "simulated annealing over op moves (the default)", searches=True, uses_policy=False,
                 run=_anneal),
    MethodOption("exact", "CP-SAT over whole-op assignments, with its bound", searches=False, uses_policy=False,
                 run=_exact, objectives=("throughput",)),
    MethodOption("learned", "policy-picked moves in local search (docs/learned_moves.md)", searches=True,
                 uses_policy=True, run=_learned),
)}
METHODS = tuple(REGISTRY)
SEARCH_METHODS = tuple(name for name, m in REGISTRY.items() if m.searches)


def default_method(n_ops: int | None = None) -> str:
    """anneal: at the default budget it matches or beats rl and learned on every measured case (benchmarks/RESULTS.md,
    "Search methods"), and in the split-plan space learned is not >= 1.05x annealing on any measured case; its
    per-evaluation cost stays one repair + one simulation at any graph size, and the run adds CP-SAT's solve and
    the staged plans."""
    return "anneal"


def check_method(method: str, objective: str = DEFAULT_OBJECTIVE) -> None:
    if method not in REGISTRY:
        raise UserError(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    check_objective(objective)
    if objective not in REGISTRY[method].objectives:
        able = [m for m, opt in REGISTRY.items() if objective in opt.objectives]
        raise UserError(f"--method {method} optimises {' or '.join(REGISTRY[method].objectives)} only, not "
                        f"--objective {objective}", f"use --method {' or '.join(able[:3])} with --objective "
                        f"{objective}, or drop --objective")


def search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int, time_limit_s: float | None,
           policy: str | None = None, on_eval: OnEval | None = None, run_budget: RunBudget | None = None,
           batch: int = 1, objective: str = DEFAULT_OBJECTIVE) -> SearchResult:
    """Run one method; every method's partitions go through the same repair + simulate. With `run_budget`, the
    search stops when it runs out or on Ctrl-C and returns the best evaluated so far (see `bounded_search`).
    The method maximises the objective's score (sim/objective.py); the result is a plain Evaluation."""
    if run_budget is not None:
        return bounded_search(graph, hw, method, budget=budget, seed=seed, time_limit_s=time_limit_s,
                              policy=policy, on_eval=on_eval, run_budget=run_budget, batch=batch,
                              objective=objective)[0]
    return _search(graph, hw, method, budget=budget, seed=seed, time_limit_s=time_limit_s, policy=policy,
                   on_eval=on_eval, run_budget=RunBudget(), wrap=lambda fn: fn, batch=batch, objective=objective)


def bounded_search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int,
                   time_limit_s: float | None, policy: str | None = None, on_eval: OnEval | None = None,
                   run_budget: RunBudget, batch: int = 1, objective: str = DEFAULT_OBJECTIVE
                   ) -> tuple[SearchResult, str | None]:
    """`search` within a RunBudget: (result, why it stopped early or None). Every evaluation passes a Recorder,
    so when the budget runs out or Ctrl-C is pressed the best partition evaluated so far is the result."""
    recorders: list[Recorder] = []

    def wrap(fn):
        recorders.append(Recorder(fn, run_budget, objective))
        return recorders[-1]

    start = time.perf_counter()
    try:
        return _search(graph, hw, method, budget=budget, seed=seed, time_limit_s=time_limit_s, policy=policy,
                       on_eval=on_eval, run_budget=run_budget, wrap=wrap, batch=batch, objective=objective), None
    except Stopped as stop:
        rec = recorders[0]
        return SearchResult(method, plain(rec.best), len(rec.history), tuple(rec.history),
                            time.perf_counter() - start), str(stop)


def _search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int, time_limit_s: float | None,
            policy: str | None, on_eval: OnEval | None, run_budget: RunBudget, wrap, batch: int = 1,
            objective: str = DEFAULT_OBJECTIVE) -> SearchResult:
    check_method(method, objective)
    if budget < 1:
        raise UserError(f"--budget must be at least 1, got {budget}", "pass a positive number of evaluations")
    limit = DEFAULT_REPAIR_LIMIT_S if time_limit_s is None else time_limit_s

    def evaluate_fn(proposal: np.ndarray) -> Evaluation:
        return evaluate(graph, hw, proposal, time_limit_s=run_budget.limit(limit), seed=seed, batch=batch)

    # the policies maximise `Evaluation.throughput`: under --objective latency they see 1 / latency there
    ctx = SearchContext(graph, hw, budget, seed, time_limit_s, policy, on_eval, run_budget,
                        wrap(ranked_fn(evaluate_fn, objective)), batch, time.perf_counter())
    found = REGISTRY[method].run(ctx)
    return found if type(found.best) is Evaluation else replace(found, best=plain(found.best))
