"""A proven certificate for split plans: CP-SAT chooses every op's group (start chiplet) and shard degree.

What it bounds. In the simulator a chiplet runs one piece at a time, so its cycles per inference are at least
every chiplet's busy cycles: L_c = the sum of the cycles of the pieces on c. The model (solver/split_model.py,
mode "bound") minimises max_c L_c over every plan whose ops split at most `max_shard` ways, with each piece
charged its cycles along the cheapest axis it may take (cost.cheapest_piece_cycles) and memory relaxed (the
smallest working set over those axes; with a memory tier no weight counts, since any may stream), so every plan
check() accepts, streamed weights included, is a solution of the model and the model's optimum is at most its
busiest chiplet's cycles. CP-SAT's proven bound on that optimum is therefore a lower bound on the simulated cycles
per inference of ANY plan the tool can output with ops split <= max_shard ways, whole-op plans (d = 1) included.
Links, collectives, hop latency and stalls are left out (never charged), so the bound covers compute only.

lower_bound_cycles = max(cost.sharded_bound_cycles (the analytical bound, which the model implies), the window bound
(`window_bound`, below), ceil(CP-SAT's best bound)): never looser than the analytical bound. info["bound_source"]
names the one that set it.

Scale. With a valid hint of model cost U, only solutions of cost <= U matter, and then (valid, not a
restriction): a piece is at most U cycles; op v's ancestors lie on chiplets 0..E_v (pipeline order), so their
least chiplet-cycles W_anc(v) (v included) fit in (E_v + 1) x U, hence E_v >= ceil(W_anc / U) - 1; likewise
S_v <= n_chiplets - ceil(W_desc(v) / U). These windows keep BERT-large at 144 chiplets to tens of thousands of
placements. The same windows at a cap X in place of U give a bound of their own: if some op has no placement
inside its windows whose pieces are at most X, no plan has a busiest chiplet of X or less (`window_bound`, a
bisection on X that needs no solver).
"""
from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import numpy as np
from ortools.sat.python import cp_model

from partitioner.model.cost import sharded_bound_cycles
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition, check
from solver import split_model
from solver.split_model import PieceTables

DETERMINISTIC_WALL_FACTOR = 10
"""As solver.optimize: the wall-clock safety cap is 10x the deterministic limit + 10 s."""


def load_cycles(tables: PieceTables, assignment: np.ndarray, shard: np.ndarray, n_chiplets: int) -> np.ndarray:
    """L_c per chiplet: the model's busy cycles of the pieces on each chiplet (module docstring)."""
    a, k = np.asarray(assignment, dtype=np.int64), np.asarray(shard, dtype=np.int64)
    load = np.zeros(n_chiplets, dtype=np.int64)
    for i in range(a.size):
        for c in range(int(a[i]), int(a[i] + k[i])):
            load[c] += int(tables.chiplet_cycles(int(k[i]), c)[i])
    return load


def _reach(graph: TensorGraph) -> np.ndarray:
    """anc[v, u]: u is an ancestor of v (ops are in topological order)."""
    n = graph.n_ops
    anc = np.zeros((n, n), dtype=bool)
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        preds[v].append(u)
    for v in range(n):
        for u in preds[v]:
            anc[v] |= anc[u]
            anc[v, u] = True
    return anc


def windows(graph: TensorGraph, tables: PieceTables, n_chiplets: int, upper: int) -> tuple[np.ndarray, np.ndarray]:
    """(end_min, start_max) per op for solutions of cost <= upper (module docstring, "Scale")."""
    work = tables.min_work_cycles().astype(np.float64)
    anc = _reach(graph)
    w_anc = anc.astype(np.float64) @ work + work
    w_desc = anc.T.astype(np.float64) @ work + work
    end_min = np.ceil(w_anc / upper - 1e-9).astype(np.int64) - 1
    start_max = n_chiplets - np.ceil(w_desc / upper - 1e-9).astype(np.int64)
    return end_min, start_max


def window_bound(graph: TensorGraph, tables: PieceTables, n_chiplets: int, lower: int, upper: int) -> int:
    """The least cap in [lower, upper] at which every op keeps a placement inside its windows (`windows`) whose
    pieces are at most the cap: below it some op has none, so no plan has a busiest chiplet below it. Pins, op types
    and memory are ignored here (fewer filters only keep more placements, so the proof stays valid)."""
    anc = _reach(graph)
    work = tables.min_work_cycles().astype(np.float64)
    w_anc, w_desc = anc.astype(np.float64) @ work + work, anc.T.astype(np.float64) @ work + work
    smallest = [np.min(tables.cycles[d - 1], axis=0) for d in range(1, len(tables.cycles) + 1)]

    def placeable(cap: int) -> bool:
        end_min = np.ceil(w_anc / cap - 1e-9).astype(np.int64) - 1
        start_max = n_chiplets - np.ceil(w_desc / cap - 1e-9).astype(np.int64)
        ok = np.zeros(graph.n_ops, dtype=bool)
        for d, piece_cycles in enumerate(smallest, start=1):
            first = np.maximum(0, end_min - d + 1)
            last = np.minimum(start_max, n_chiplets - d)
            ok |= (first <= last) & (piece_cycles <= cap)
        return bool(ok.all())

    lo, hi = lower, max(lower, upper)
    while lo < hi:      # placeable is monotone in the cap: a larger cap only widens windows and admits pieces
        mid = (lo + hi) // 2
        if placeable(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def staged_optimize(graph: TensorGraph, hw: Hardware, max_shard: int, *,
                    hints: Sequence[Partition | tuple[np.ndarray, np.ndarray | None]] = (),
                    time_limit_s: float = 10.0, seed: int = 0, wall_limit_s: float | None = None,
                    pinned: Mapping[int, int] | None = None) -> Partition:
    """CP-SAT over split plans (module docstring): a Partition with the best plan found (check()-valid, shard set),
    status "optimal" or "feasible", lower_bound_cycles (the certificate), objective_cycles (the plan's model
    cost), gap. Deterministic: one worker, `time_limit_s` of CP-SAT deterministic time, a wall-clock safety cap
    (`wall_limit_s` from the call, default 10 x time_limit_s + 10 s). info: analytical_cycles, bound_source
    ("analytical", "windows" or "cp-sat": which set lower_bound_cycles), window_bound_cycles, placements, plan_source ("cp-sat", "cp-sat, repaired" or "hint"), wall_capped.
    Without a valid plan to start from or found, the Partition's assignment is the hint's or zeros and
    info["plan_valid"] is False."""
    start = time.perf_counter()
    n, n_chip = graph.n_ops, hw.n_chiplets
    max_shard = max(1, min(int(max_shard), n_chip))
    pins = dict(pinned or {})
    tables = split_model.piece_tables(graph, hw, max_shard, "bound")
    analytical = sharded_bound_cycles(graph, hw, max_shard)
    lower = int(math.ceil(analytical - 1e-9))

    # The best valid hint bounds the optimum from above (module docstring, "Scale").
    best_hint, hint_cost, upper = None, None, None
    for h in hints:
        a, k, streamed = (h.assignment, h.shard, h.streamed) if isinstance(h, Partition) else (h[0], h[1], None)
        k = np.ones(n, dtype=np.int64) if k is None else np.asarray(k, dtype=np.int64)
        if k.max(initial=1) > max_shard or check(graph, hw, a, pins, streamed, k):
            continue
        cost = int(load_cycles(tables, a, k, n_chip).max(initial=0))
        if hint_cost is None or cost < hint_cost:
            best_hint, hint_cost = (np.asarray(a, dtype=np.int64), k, streamed), cost
    if hint_cost is not None:
        upper = max(hint_cost, lower)
        lower = window_bound(graph, tables, n_chip, lower, upper)
        end_min, start_max = windows(graph, tables, n_chip, upper)
        cands = split_model.candidates(graph, hw, tables, max_shard, pins, end_min, start_max, upper)
    else:
        cands = split_model.candidates(graph, hw, tables, max_shard, pins)
    info: dict = {"analytical_cycles": analytical, "max_shard": max_shard, "window_bound_cycles": lower,
                  "bound_source": "analytical" if lower <= math.ceil(analytical - 1e-9) else "windows",
                  "placements": sum(len(c) for c in cands), "plan_valid": False, "wall_capped": False,
                  "hint_cycles": upper}
    if any(not c for c in cands):   # some op has no placement at all: only the analytical bound stands
        return _result(graph, best_hint, "no model", max(analytical, lower), None, start, info)

    sm = split_model.build(graph, hw, tables, cands, max_shard)
    model = sm.model
    # Without a hint: every chiplet's load is at most the sum over ops of their slowest piece.
    hi = upper if upper is not None else int(np.max([np.max(c, axis=0) for c in tables.cycles], axis=0).sum())
    bottleneck = model.new_int_var(lower, max(lower, hi), "bottleneck")
    _add_loads(sm, tables, n_chip, bottleneck)
    model.minimize(bottleneck)
    if best_hint is not None:
        split_model.hint(sm, graph, best_hint[0], best_hint[1])
        model.add_hint(bottleneck, upper)

    wall = (DETERMINISTIC_WALL_FACTOR * max(time_limit_s, 1e-3) + 10.0 if wall_limit_s is None
            else wall_limit_s - (time.perf_counter() - start))
    solver = _solver(time_limit_s, seed, wall)
    solve_start = time.perf_counter()
    status = solver.solve(model)
    info["deterministic_time"] = solver.deterministic_time
    info["wall_capped"] = bool(status != cp_model.OPTIMAL and solver.deterministic_time < 0.99 * time_limit_s
                               and time.perf_counter() - solve_start >= solver.parameters.max_time_in_seconds * 0.99)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        # INFEASIBLE cannot happen with a valid hint; without one, no split plan fits and only the analytical
        # bound stands. UNKNOWN: nothing found in time.
        return _result(graph, best_hint, solver.status_name(status).lower(), max(analytical, lower), None, start,
                       info)
    proven = float(math.ceil(solver.best_objective_bound - 1e-6))
    bound = max(analytical, lower, proven)
    if proven > lower:
        info["bound_source"] = "cp-sat"
    a, k = split_model.read(solver, sm)
    objective = float(load_cycles(tables, a, k, n_chip).max(initial=0))
    bound = min(bound, objective)
    plan, source = _valid_plan(graph, hw, a, k, pins, max_shard, seed, time_limit_s, best_hint)
    if plan is not None:
        objective = float(load_cycles(tables, plan[0], plan[1], n_chip).max(initial=0))
        if best_hint is not None and plan is not best_hint and hint_cost < objective:
            # A repaired plan can cost more than the hint the model started from: keep the better (never less).
            plan, source, objective = best_hint, "hint", float(hint_cost)
        info["plan_source"] = source
        bound = min(bound, objective)
    status_name = "optimal" if bound >= objective else "feasible"
    return _result(graph, plan, status_name, bound, objective, start, info)


def _valid_plan(graph: TensorGraph, hw: Hardware, a: np.ndarray, k: np.ndarray, pins: dict, max_shard: int,
                seed: int, time_limit_s: float, hint: tuple | None) -> tuple[tuple | None, str]:
    """(assignment, shard, streamed) of a check()-valid plan from the model's (whose memory is relaxed) and where
    it came from: as is; whole ops with the weights that overflow streamed (solver/residency.py); repaired by
    solver/split_repair.py (every weight resident); else the hint (None without one)."""
    from solver.residency import choose_streamed
    from solver.split_repair import split_repair

    if not check(graph, hw, a, pins, None, k):
        return (a, k, None), "cp-sat"
    if hw.memory_stacks and bool((k == 1).all()):
        streamed = choose_streamed(graph, hw, a)
        if streamed is not None and not check(graph, hw, a, pins, streamed):
            return (a, k, streamed), "cp-sat, overflow streamed"
    try:
        fixed = split_repair(graph, hw, a, k, max_shard=max_shard, pinned=pins, seed=seed,
                             time_limit_s=max(time_limit_s / 4, 0.5))
        shard = fixed.shard if fixed.shard is not None else np.ones(graph.n_ops, np.int64)
        return (fixed.assignment, shard, None), "cp-sat, repaired"
    except UserError:   # no repaired plan: fall back on the hint; the bound still stands
        return hint, "hint"


def _add_loads(sm: split_model.SplitModel, tables: PieceTables, n_chiplets: int, bottleneck) -> None:
    """Busy cycles: the pieces on every chiplet fit in the bottleneck."""
    per_chip: list[tuple[list, list]] = [([], []) for _ in range(n_chiplets)]
    for i, ps in enumerate(sm.place):
        for s, d, z in ps:
            for c in range(s, s + d):
                per_chip[c][0].append(z)
                per_chip[c][1].append(int(tables.chiplet_cycles(d, c)[i]))
    for lits, coefs in per_chip:
        if lits:
            sm.model.add(cp_model.LinearExpr.weighted_sum(lits, coefs) <= bottleneck)


def _solver(time_limit_s: float, seed: int, wall_s: float) -> cp_model.CpSolver:
    """One worker, a deterministic limit, a wall-clock safety cap. Probing and repeated presolve spent the whole
    budget on BERT-large at 144 chiplets before the hint was even tried; a light presolve leaves the time to search
    (as solver/repair.py's _tune)."""
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = max(time_limit_s, 1e-3)
    solver.parameters.max_time_in_seconds = max(wall_s, 0.1)
    solver.parameters.catch_sigint_signal = False
    solver.parameters.cp_model_probing_level = 0
    solver.parameters.symmetry_level = 0
    solver.parameters.max_presolve_iterations = 1
    return solver


def _result(graph: TensorGraph, plan, status: str, bound: float, objective: float | None, start: float,
            info: dict) -> Partition:
    if plan is None:
        a, k, streamed = np.zeros(graph.n_ops, dtype=np.int64), None, None
    else:
        a, k, streamed = plan
        info["plan_valid"] = True
    gap = None if objective is None else ((objective - bound) / objective if objective > 0 else 0.0)
    return Partition(a, None, 0, status, time.perf_counter() - start, lower_bound_cycles=float(bound),
                     objective_cycles=objective, gap=gap, info=info, shard=k, streamed=streamed)
