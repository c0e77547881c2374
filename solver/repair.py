"""Repair a proposed assignment into a valid partition, moving as little as possible.

A proposal that already passes `check` comes back unchanged without a model. Otherwise:

  1. Objective: keep as much of the proposal as possible, op i weighted 1 + round(9 * cycles_i / max_cycles) so
     moving the heaviest op costs as much as ten light ones (cycles_i: the op's fastest roofline cycles);
     `ops_moved` reports the plain count.
  2. Without the memory rule this is a maximum-weight closure, solved exactly by one min-cut
     (solver/_closure.py). Displaced ops are then re-placed greedily (`place_moved`); if that fits every
     chiplet's memory the answer is optimal and no model is built (the common case when SRAM is not tight).
  3. Otherwise memory is priced in by Lagrangian relaxation (a few more min-cuts, `lagrangian_repair`): its
     bound often proves the best valid answer found optimal. Failing that, CP-SAT solves the full model
     (solver/_ladder.py: stage ladders, every rule of `check` a hard constraint) with the best bound as a cap
     and the best answer so far (or the closure pushed into memory greedily) as the hint.
  4. Ties go toward balance: with the kept ops fixed, `place_moved` puts each displaced op, within the range its
     neighbours leave it, on the chiplet with the least compute load where it fits (never changes the objective).
     With `balance_time_s` > 0, CP-SAT then minimises the most loaded chiplet's compute cycles subject to the same
     kept weight for that long (lexicographic; off by default to keep repair fast).

With a memory tier (hw.memory_stacks) "valid" means valid once the overflowing chiplets stream weights
(solver/residency.py, `choose_streamed`): the proposal is first tried that way, and every candidate above is
judged that way; the Partition carries the streamed flags. The memory rule then rarely binds, so the min-cut
answer is usually valid and optimal at once.

Time limits are CP-SAT deterministic time (about seconds on one core), so a given seed always gives the same
answer; wall time is capped at twice the limit plus one second as a safety net.
"""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np
from ortools.sat.python import cp_model

from partitioner.model.cost import op_cycles_matrix
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition, check
from solver._closure import closure_repair, lagrangian_repair
from solver._ladder import build_ladder, greedy_monotone, ladder_hint, read_assignment
from solver.infeasibility import StageDomains, check_feasible, explain_infeasible, normalize_pins
from solver.residency import choose_streamed, streaming_needed

MOVE_WEIGHT_LEVELS = 9


class RepairTimeout(UserError):
    """Repair ran out of time on one proposal without finding a valid partition: that proposal is lost, but the
    problem itself may be feasible, so a search can spend the evaluation and go on (policies.baselines)."""


def move_weights(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Cost of moving each op: 1 + round(9 * cycles / max cycles), cycles on the op's fastest chiplet."""
    if graph.n_ops == 0:
        return np.zeros(0, dtype=np.int64)
    cycles = op_cycles_matrix(graph, hw).min(axis=1).astype(np.float64)
    return 1 + np.rint(MOVE_WEIGHT_LEVELS * cycles / cycles.max()).astype(np.int64)


def set_parameters(solver: cp_model.CpSolver, time_limit_s: float, seed: int, workers: int = 1) -> None:
    """Reproducible CP-SAT: fixed workers and seed, a deterministic time limit, a wall-clock safety cap."""
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    solver.parameters.max_deterministic_time = max(time_limit_s, 1e-3)
    solver.parameters.max_time_in_seconds = 2 * max(time_limit_s, 1e-3) + 1.0
    solver.parameters.catch_sigint_signal = False   # Ctrl-C belongs to the caller (it stops the run's search)


def repair(graph: TensorGraph, hw: Hardware, proposal: np.ndarray, *, time_limit_s: float = 10.0, seed: int = 0,
           pinned: Mapping[int, int] | None = None, balance_time_s: float = 0.0, batch: int = 1,
           shard: np.ndarray | None = None, max_shard: int | None = None) -> Partition:
    """The valid partition closest to `proposal` (fewest weighted ops moved), ties broken toward balance.
    batch: inferences per read of a streamed weight (orders which weights stream first, see residency.py).
    shard: a shard degree per op; a proposal with split ops goes to solver/split_repair.py (fewest ops whose
    chiplet or degree changes, ops split at most `max_shard` ways), whose Partition carries `shard`.

    status: "unchanged" (proposal was valid), "optimal" (fewest weighted moves proven) or "feasible" (time ran
    out first). Raises UserError when no valid partition exists (with the reason) or none was found in time.
    """
    if shard is not None and (np.asarray(shard) != 1).any():
        from solver.split_repair import split_repair

        return split_repair(graph, hw, proposal, shard, max_shard=max_shard, time_limit_s=time_limit_s, seed=seed,
                            pinned=pinned)
    start = time.perf_counter()
    prop = np.asarray(proposal)
    if prop.shape != (graph.n_ops,) or not (prop.size == 0 or np.issubdtype(prop.dtype, np.integer)):
        raise UserError(f"proposal has shape {prop.shape} and dtype {prop.dtype}, expected ({graph.n_ops},) "
                        "integers", "pass one chiplet id per op")
    prop = prop.astype(np.int64)
    pins = normalize_pins(graph, hw, pinned)
    if not check(graph, hw, prop, pins):
        return Partition(prop, prop, 0, "unchanged", time.perf_counter() - start)
    if hw.memory_stacks and not streaming_needed(graph, hw, pins):
        try:   # the model may fit all resident: repair as on the SRAM-only package first
            return repair(graph, hw.without_memory_tier(), prop, time_limit_s=time_limit_s, seed=seed, pinned=pins,
                          balance_time_s=balance_time_s)
        except UserError:
            pass

    def streams_for(a: np.ndarray) -> tuple[bool, np.ndarray | None]:
        """(valid, streamed): a is valid all resident, or once its overflowing chiplets stream weights."""
        if not check(graph, hw, a, pins):
            return True, None
        streamed = choose_streamed(graph, hw, a, batch)
        return streamed is not None and not check(graph, hw, a, pins, streamed), streamed

    ok, streamed = streams_for(prop)
    if ok:
        return Partition(prop, prop, 0, "unchanged", time.perf_counter() - start, streamed=streamed)
    dom = check_feasible(graph, hw, pins)
    weights = move_weights(graph, hw)
    closure, kept_bound = closure_repair(graph, hw, dom, prop, weights)
    info: dict = {"kept_weight_bound": kept_bound, "method": "min-cut", "deterministic_time": 0.0}

    def feasible(a: np.ndarray) -> np.ndarray | None:
        """A valid assignment with a's kept ops: re-placed for balance if that fits memory, else a itself."""
        for candidate in (place_moved(graph, hw, dom, prop, a), a):
            if streams_for(candidate)[0]:
                return candidate
        return None

    assignment = feasible(closure)
    status = found = None
    if assignment is not None:
        status = "optimal"
        info["kept_weight"] = kept_bound
    else:
        assignment = closure
        found, found_kept, dual = lagrangian_repair(graph, hw, dom, prop, weights, feasible)
        kept_bound = min(kept_bound, int(np.floor(dual + 1e-9)))
        info["kept_weight_bound"] = kept_bound
    if status is None and found is not None and found_kept >= kept_bound:
        assignment, status = found, "optimal"
        info.update(method="lagrangian", kept_weight=found_kept)
    elif status is None:
        hint = found if found is not None else assignment
        solved, status = _solve_with_memory(graph, hw, dom, prop, weights, hint, kept_bound,
                                            time_limit_s, seed, pins, info)
        assignment = feasible(solved)
        if assignment is None:   # only with a memory tier: SRAM fits, but a stack cannot hold what it must stream
            stored = sum(st.capacity_bytes for st in hw.memory_stacks)
            raise UserError(f"no partition found whose streamed weights fit the memory stacks they stream from "
                            f"({len(hw.memory_stacks)} stacks, {stored} bytes in all; each chiplet reads from "
                            f"its nearest stack)", "give the stacks more capacity (capacity_gib) or attach them "
                            "to more chiplets")
    if balance_time_s > 0 and hw.n_chiplets > 1:
        assignment = _balance_exact(graph, hw, dom, prop, weights, assignment, balance_time_s, seed, info)
    ok, streamed = streams_for(assignment)
    problems = check(graph, hw, assignment, pins, streamed)
    if problems:   # a solver bug, never a user error
        raise AssertionError(f"repair produced an invalid partition: {problems[:3]}")
    moved = int(np.count_nonzero(assignment != prop))
    return Partition(assignment, prop, moved, status, time.perf_counter() - start, info=info, streamed=streamed)


def _kept_expr(ladder, prop: np.ndarray, weights: np.ndarray, n_chip: int):
    lits, coeffs = [], []
    for i, p in enumerate(prop.tolist()):
        if 0 <= p < n_chip and not isinstance(ladder.x[i][p], int):
            lits.append(ladder.x[i][p])
            coeffs.append(int(weights[i]))
    constant = sum(int(weights[i]) for i, p in enumerate(prop.tolist())
                   if 0 <= p < n_chip and isinstance(ladder.x[i][p], int) and ladder.x[i][p] == 1)
    return cp_model.LinearExpr.weighted_sum(lits, coeffs), constant


def _tune(solver: cp_model.CpSolver) -> None:
    # The models are mostly implications; a light presolve and the full LP relaxation pay off (measured on
    # 400-op graphs, 16 chiplets: about 2x faster than the defaults).
    solver.parameters.linearization_level = 2
    solver.parameters.cp_model_probing_level = 0
    solver.parameters.symmetry_level = 0
    solver.parameters.max_presolve_iterations = 1


def _solve_with_memory(graph, hw, dom: StageDomains, prop, weights, closure_assignment, kept_bound, time_limit_s,
                       seed, pins, info) -> tuple[np.ndarray, str]:
    ladder = build_ladder(graph, hw, dom)
    kept, constant = _kept_expr(ladder, prop, weights, hw.n_chiplets)
    ladder.model.add(kept + constant <= kept_bound)
    ladder.model.maximize(kept)
    ladder_hint(ladder, greedy_monotone(graph, hw, dom, closure_assignment))
    solver = cp_model.CpSolver()
    set_parameters(solver, time_limit_s, seed)
    _tune(solver)
    status = solver.solve(ladder.model)
    if status in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
        raise explain_infeasible(graph, hw, pins)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RepairTimeout(f"the repair solver found no valid partition of {graph.n_ops} ops on {hw.n_chiplets} "
                            f"chiplets within its {time_limit_s:g} s limit", "raise --time-limit")
    info.update(method="cp-sat", kept_weight=int(solver.objective_value) + constant,
                kept_weight_bound=min(kept_bound, int(solver.best_objective_bound) + constant),
                deterministic_time=solver.deterministic_time)
    return read_assignment(solver, ladder), solver.status_name(status).lower()


def place_moved(graph: TensorGraph, hw: Hardware, dom: StageDomains, prop: np.ndarray,
                assignment: np.ndarray) -> np.ndarray:
    """Re-place the displaced ops of a pipeline-ordered assignment, keeping the kept ops (those on their proposed
    chiplet) where they are, so the objective is unchanged.

    In topological order each displaced op goes to the chiplet with the least compute load, among those its
    placed predecessors and its kept descendants leave it (the latter bound never conflicts, so order always
    holds), that still has room for it in memory; with no room anywhere it stays where `assignment` had it. The
    result is valid whenever memory could be met this way; the caller checks.
    """
    n, n_chip = graph.n_ops, hw.n_chiplets
    a = np.asarray(assignment, dtype=np.int64).copy()
    keep = (a == prop) | (dom.lo == dom.hi)
    if keep.all() or n_chip == 1:
        return a
    cycles = op_cycles_matrix(graph, hw)
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=np.int64)
    weight, work = graph.weight_bytes.tolist(), graph.work_bytes.tolist()
    load = np.bincount(a[keep], weights=cycles[np.flatnonzero(keep), a[keep]], minlength=n_chip)
    used_w = np.bincount(a[keep], weights=graph.weight_bytes[keep], minlength=n_chip).astype(np.int64)
    peak = np.zeros(n_chip, dtype=np.int64)
    np.maximum.at(peak, a[keep], graph.work_bytes[keep])
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        preds[v].append(u)
        succs[u].append(v)
    # Latest chiplet each op may take: its domain and its kept descendants (backward pass).
    upper = dom.hi.copy()
    for u in range(n - 1, -1, -1):
        for v in succs[u]:
            bound = a[v] if keep[v] else upper[v]
            if bound < upper[u]:
                upper[u] = bound
    for i in np.flatnonzero(~keep).tolist():
        lo = max([int(dom.lo[i])] + [int(a[u]) for u in preds[i]])
        best, best_load = int(a[i]), None
        for c in range(lo, int(upper[i]) + 1):
            if not dom.allowed[i, c] or used_w[c] + weight[i] + max(peak[c], work[i]) > sram[c]:
                continue
            if best_load is None or load[c] + cycles[i, c] < best_load:
                best, best_load = c, load[c] + cycles[i, c]
        if best_load is None:   # nowhere with room: keep the old chiplet if order allows, else the lowest
            best = int(a[i]) if lo <= a[i] <= upper[i] else lo
        a[i] = best
        load[best] += cycles[i, best]
        used_w[best] += weight[i]
        peak[best] = max(peak[best], work[i])
    return a


def _balance_exact(graph, hw, dom, prop, weights, assignment, budget_s, seed, info) -> np.ndarray:
    """Lexicographic second phase: same kept weight, smallest bottleneck compute, for `budget_s`."""
    ladder = build_ladder(graph, hw, dom)
    kept, constant = _kept_expr(ladder, prop, weights, hw.n_chiplets)
    ladder.model.add(kept + constant >= int(weights[assignment == prop].sum()))
    cycles = op_cycles_matrix(graph, hw)
    bottleneck = ladder.model.new_int_var(0, int(cycles.max(axis=1).sum()), "bottleneck")
    for c in range(hw.n_chiplets):
        cand = ladder.candidates[c].tolist()
        lits = [ladder.x[i][c] for i in cand]
        ladder.model.add(cp_model.LinearExpr.weighted_sum(lits, [int(cycles[i, c]) for i in cand]) <= bottleneck)
    ladder.model.minimize(bottleneck)
    ladder_hint(ladder, assignment)
    solver = cp_model.CpSolver()
    set_parameters(solver, budget_s, seed)
    _tune(solver)
    status = solver.solve(ladder.model)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        info["balance"] = solver.status_name(status).lower()
        info["bottleneck_cycles"] = int(solver.objective_value)
        info["deterministic_time"] += solver.deterministic_time
        return read_assignment(solver, ladder)
    return assignment
