"""Repair a split proposal (a chiplet and a shard degree per op) into a plan check() accepts, changing as few
decisions as possible.

The model is solver/split_model.py in mode "exact" (its constraints are at least as strict as check(): the
largest working set over the axes a piece may take, every weight resident), so every plan it returns is valid.
Objective: keep the most decisions, each op scoring 1 for keeping its proposed start chiplet and 1 for keeping its
proposed degree; `ops_moved` counts the ops whose (chiplet, degree) changed. Placements are first searched within
`radius` chiplets of the proposal (a small model that nearly always holds the answer; a restriction, fine for
repair), then, if that is infeasible, over the whole package.
"""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np
from ortools.sat.python import cp_model

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition, check
from partitioner.plan.splits import contiguous_split
from partitioner.plan.staged_dp import DEFAULT_MAX_SHARD
from solver import split_model
from solver.infeasibility import normalize_pins

REPAIR_RADIUS = 8
"""Chiplets either side of an op's proposed start that the first, smaller model considers."""


def split_repair(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray | None, *,
                 max_shard: int | None = None, time_limit_s: float = 10.0, seed: int = 0,
                 pinned: Mapping[int, int] | None = None) -> Partition:
    """The valid split plan closest to (assignment, shard) (module docstring). max_shard: largest degree the
    repaired plan may use (default: the larger of staged_dp.DEFAULT_MAX_SHARD and the proposal's largest).
    status: "unchanged", "optimal" (most kept decisions proven) or "feasible". Raises UserError when the proposal
    is malformed or no valid plan was found in time."""
    start = time.perf_counter()
    n, n_chip = graph.n_ops, hw.n_chiplets
    a = np.asarray(assignment)
    k = np.ones(n, dtype=np.int64) if shard is None else np.asarray(shard)
    for name, arr in (("assignment", a), ("shard", k)):
        if arr.shape != (n,) or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
            raise UserError(f"split proposal {name} has shape {arr.shape} and dtype {arr.dtype}, expected ({n},) "
                            "integers", "pass one chiplet id and one shard degree per op")
    a, k = a.astype(np.int64), k.astype(np.int64)
    pins = normalize_pins(graph, hw, pinned)
    if not check(graph, hw, a, pins, None, k):
        return Partition(a, a, 0, "unchanged", time.perf_counter() - start, shard=k)
    top = max(DEFAULT_MAX_SHARD, int(k.max(initial=1))) if max_shard is None else int(max_shard)
    top = max(1, min(top, n_chip))
    tables = split_model.piece_tables(graph, hw, top, "exact")
    full = split_model.candidates(graph, hw, tables, top, pins)
    near = [[(s, d) for s, d in ps if abs(s - int(a[i])) <= REPAIR_RADIUS] for i, ps in enumerate(full)]
    tries = [near, full] if all(near) and any(len(x) < len(y) for x, y in zip(near, full)) else [full]
    for cands in tries:
        if not all(cands):
            continue
        got = _solve(graph, hw, tables, cands, top, a, k, time_limit_s, seed)
        if got is not None:
            plan_a, plan_k, status, info = got
            problems = check(graph, hw, plan_a, pins, None, plan_k)
            if problems:   # the exact model is stricter than check(): a solver bug, never a user error
                raise AssertionError(f"split repair produced an invalid plan: {problems[:3]}")
            moved = int(np.count_nonzero((plan_a != a) | (plan_k != k)))
            info |= {"proposal_shard": k.tolist(), "candidates": sum(len(c) for c in cands)}
            return Partition(plan_a, a, moved, status, time.perf_counter() - start, info=info, shard=plan_k)
    raise UserError(f"no valid split plan of {n} ops on {n_chip} chiplets (ops split at most {top} ways) was found "
                    f"within {time_limit_s:g} s", "raise --time-limit, use more chiplets, or allow a larger "
                    "--max-shard")


def _solve(graph, hw, tables, cands, top, a, k, time_limit_s, seed):
    sm = split_model.build(graph, hw, tables, cands, top)
    lits, coefs = [], []
    for i, ps in enumerate(sm.place):
        for s, d, z in ps:
            score = int(s == a[i]) + int(d == k[i])
            if score:
                lits.append(z)
                coefs.append(score)
    # Objective: keep the proposal's decisions (start chiplet, degree) on as many ops as possible.
    sm.model.maximize(cp_model.LinearExpr.weighted_sum(lits, coefs))
    whole = contiguous_split(graph, hw)
    ones = np.ones(graph.n_ops, dtype=np.int64)
    if not check(graph, hw, whole):
        split_model.hint(sm, graph, whole, ones)
    solver = cp_model.CpSolver()
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = max(time_limit_s, 1e-3)
    solver.parameters.max_time_in_seconds = 2 * max(time_limit_s, 1e-3) + 1.0
    solver.parameters.catch_sigint_signal = False
    status = solver.solve(sm.model)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    plan_a, plan_k = split_model.read(solver, sm)
    info = {"kept_decisions": int(solver.objective_value), "kept_bound": int(solver.best_objective_bound),
            "deterministic_time": solver.deterministic_time, "method": "cp-sat split model"}
    return plan_a, plan_k, solver.status_name(status).lower(), info
