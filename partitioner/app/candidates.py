"""Plans a run scores beside its method's own search: the staged DP's split plans (one per largest group size), the
latency plans under `--objective latency` (partitioner/plan/latency_dp.py), and the optional local search over
staged plans (`--split-budget`)."""
from __future__ import annotations

from typing import Callable

import numpy as np

from partitioner.app.budget import Recorder, RunBudget, Stopped
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.hw.order import reordered, tied_orders
from partitioner.model.partition import Partition, check
from partitioner.plan.latency_dp import latency_candidates, latency_floor_cycles
from partitioner.plan.staged_dp import auto_max_shard, staged_candidates
from partitioner.sim.objective import beats, plain, ranked_fn
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate, throughput_ceiling

def best_staged(graph: TensorGraph, hw: Hardware, max_shard: int, batch: int = 1, caps: list[int] | None = None,
                stats: dict | None = None) -> Evaluation | None:
    """The best simulated of the staged DP plans for every largest group up to max_shard (staged_dp.
    staged_candidates; `caps` picks other ones): the DP's link and stream models are estimates, so the simulator
    picks among them. Plans are simulated by decreasing `throughput_ceiling` (busiest chiplet, engine, link or
    stack: a bound on the simulated throughput), stopping once no plan left can beat the best so far (ties: the
    earlier in cap order wins); a plan whose ceiling with its stream reads cannot is skipped. With a memory tier,
    the weights of a plan's overflowing chiplets stream (solver.residency.choose_streamed, the rule repair uses). Plans that check() rejects (the DP knows neither op
    types a chiplet cannot run nor the exact working set at a stage's first ops) are dropped; None when none is
    valid. `stats`, if given, gets the number of candidates and of simulated plans."""
    plans = staged_candidates(graph, hw, max_shard, caps)
    ceilings = [throughput_ceiling(graph, hw, a, shard, batch=batch) for a, shard in plans]
    best, best_c, simulated = None, -1, 0
    for c in sorted(range(len(plans)), key=lambda c: -ceilings[c]):     # stable: ties in cap order
        if best is not None and not _may_beat(ceilings[c], c, best.throughput, best_c):
            break
        part = _valid(graph, hw, *plans[c], batch, "staged-dp")
        if part is None:
            continue
        if best is not None and part.streamed is not None and not _may_beat(
                throughput_ceiling(graph, hw, *plans[c], part.streamed, batch), c, best.throughput, best_c):
            continue    # its stream reads' link and stack load bound it below the best
        ev = Evaluation(part, simulate(graph, hw, part, batch=batch))
        simulated += 1
        if best is None or _may_beat(ev.throughput, c, best.throughput, best_c):
            best, best_c = ev, c
    if stats is not None:
        stats.update(candidates=len(plans), simulated=simulated)
    return best


def staged_in_order(graph: TensorGraph, hw: Hardware, max_shard: int, batch: int = 1,
                    stop: Callable[[], bool] | None = None) -> tuple[Hardware, Evaluation | None]:
    """(hw along the pipeline order the run keeps, that order's `best_staged` plan): on a heterogeneous grid, the
    order among hw/order.tied_orders (those of fewest kind changes: a snake and its reverse, or kinds first in every
    order of the kinds) whose staged plan simulates fastest (ties: the first); with one such order, hw and None, and
    the run scores the staged plans later as on any package. `stop` (the run's --max-time or Ctrl-C): once it says
    so, the orders not yet tried are left out (the first is always tried)."""
    orders = tied_orders(hw)
    if len(orders) < 2:
        return hw, None
    best_hw, best = hw, None
    for n, (_, ids) in enumerate(orders):
        if n and stop is not None and stop():
            break
        there = reordered(hw, ids)
        ev = best_staged(graph, there, max_shard, batch=batch)
        if ev is not None and (best is None or ev.throughput > best.throughput):
            best_hw, best = there, ev
    return best_hw, best


def best_latency(graph: TensorGraph, hw: Hardware, max_shard: int, batch: int = 1, stats: dict | None = None,
                 full_report: bool = True) -> Evaluation | None:
    """The plan of least simulated latency among latency_dp.latency_candidates (ops split up to max_shard ways) and
    the staged DP plans a throughput run weighs (caps up to min(max_shard, auto_max_shard)), so a latency run never
    returns a plan slower than those; streamed and checked as in `best_staged`. Each is simulated one inference
    alone (all its latency needs), by increasing `latency_floor_cycles`, stopping once no plan left can beat the
    best so far; with `full_report` the winner is simulated once more over a whole stream, so its report has every
    figure (a run leaves that to its traced simulation of the winner). None when no plan is valid."""
    plans = latency_candidates(graph, hw, max_shard)
    cap = min(max_shard, auto_max_shard(hw.n_chiplets))
    plans += [p for p in staged_candidates(graph, hw, cap) if not any(_same(p, q) for q in plans)]
    floors = [latency_floor_cycles(graph, hw, a, shard) for a, shard in plans]
    best, simulated = None, 0
    for c in sorted(range(len(plans)), key=lambda c: floors[c]):      # stable: ties in candidate order
        if best is not None and floors[c] >= best.report.latency_cycles:
            break
        part = _valid(graph, hw, *plans[c], batch, "latency-plan")
        if part is None:
            continue
        ev = Evaluation(part, simulate(graph, hw, part, batch=batch, inferences=1))
        simulated += 1
        if beats(ev, best, "latency"):
            best = ev
    if stats is not None:
        stats.update(candidates=len(plans), simulated=simulated)
    if best is None or not full_report:
        return best
    return Evaluation(best.partition, simulate(graph, hw, best.partition, batch=batch))


def _may_beat(throughput: float, c: int, best: float, best_c: int) -> bool:
    """Whether candidate c at `throughput` (simulated, or its ceiling) would replace the best so far: faster, or as
    fast and earlier in cap order, so the pick is the one simulating every plan in cap order would make."""
    return throughput > best or (throughput == best and c < best_c)


def _same(p: tuple[np.ndarray, np.ndarray], q: tuple[np.ndarray, np.ndarray]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(p, q))


def _valid(graph: TensorGraph, hw: Hardware, a: np.ndarray, shard: np.ndarray, batch: int, status: str
           ) -> Partition | None:
    """The plan with the weights its overflowing chiplets must stream (solver.residency.choose_streamed), or None
    when check() rejects it."""
    from solver.residency import choose_streamed

    streamed = choose_streamed(graph, hw, a, batch, shard)
    part = Partition(a, None, 0, status, shard=shard, streamed=streamed)
    return None if check(graph, hw, part) else part


def split_refine(graph: TensorGraph, hw: Hardware, method: str, budget: int, seed: int, max_shard: int,
                 run_budget: RunBudget | None = None, batch: int = 1, objective: str = "throughput"
                 ) -> Evaluation | None:
    """The best plan of `budget` evaluations of local search over staged plans (policies/split_search.py) by
    `method` (anneal, random or learned; any other method uses anneal), or None (budget 0, no valid staged plan).
    The search maximises the objective's score (sim/objective.py). Stops early, keeping the best so far, when
    run_budget runs out or on Ctrl-C."""
    from policies.split_search import SPLIT_METHODS, simulate_fn, split_search

    if budget < 1:
        return None
    rec = Recorder(ranked_fn(simulate_fn(graph, hw, batch), objective), run_budget or RunBudget(), objective)
    try:
        res = split_search(graph, hw, method if method in SPLIT_METHODS else "anneal", budget=budget, seed=seed,
                           evaluate_fn=rec, max_shard=max_shard, batch=batch)
    except Stopped:
        return plain(rec.best)
    if res is None:
        return None
    return Evaluation(Partition(res.best.assignment, None, 0, f"split-{res.method}", shard=res.best.partition.shard,
                                streamed=res.best.partition.streamed),
                      res.best.report)
