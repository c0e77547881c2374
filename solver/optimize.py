"""Exact partitioning with CP-SAT: minimise the bottleneck resource's busy time per inference, with a proven bound.

Cost model: a linear relaxation of the simulator's steady state (docs/simulator.md, R5-R8), so that the bound is a
true certificate: the simulator's cycles per inference are at least the busiest resource's busy time, and

  * chiplet c is busy for C_c = sum of its ops' cycles (cost.op_cycles_matrix, column c);
  * its out-links together carry at least S_c = sum over its ops u with a consumer on a later chiplet of
    ser(largest such cut edge of u) (cost.serialization_cycles): u sends at least one message at least that big
    (the simulator sends one per destination chiplet), and every message leaves over one of c's out-links, so
    the busiest of c's out_degree(c) links carries at least S_c / out_degree(c).

Objective: bottleneck = max_c max(C_c, ceil(S_c / out_degree(c))). Under-counted against the simulator: messages to
second and further destination chiplets, the later hops of multi-hop routes, hop latency and contention, so the
simulator's bottleneck can be larger than `objective_cycles` but never smaller than `lower_bound_cycles`.

Model: the stage ladder of solver/_ladder.py (memory, order, pins, op types exact) plus, per producer u and chiplet
c, an integer send[u][c] >= ser(b_uv) * (x[u][c] + y[v][c+1] - 1) for each out-edge u->v of b_uv bytes ("u is on c
and v is beyond c"). The hint is the best of a greedy contiguous split of the topological order (binary search on
compute, memory respected) and the caller's `hint`. lower_bound_cycles is the larger of CP-SAT's bound and
max(ceil(sum of each op's fastest cycles / n_chiplets), the slowest op's fastest cycles).
"""
from __future__ import annotations

import math
import time
from typing import Mapping

import numpy as np
from ortools.sat.python import cp_model

from partitioner.cost import op_cycles_matrix, serialization_cycles
from partitioner.errors import UserError
from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware
from partitioner.partition import Partition, check
from partitioner.splits import contiguous_split, trivial_lower_bound
from solver._ladder import build_ladder, ladder_hint, read_assignment
from solver.infeasibility import check_feasible, explain_infeasible, normalize_pins


DETERMINISTIC_WALL_FACTOR = 10
"""Deterministic solves get 10x their deterministic time in wall seconds (+10 s) before the safety cap ends them
(and makes the answer depend on the machine): on the shared 2-core build machine at load 10, 0.3 deterministic
seconds took 7 wall seconds."""


def out_degree(hw: Hardware) -> np.ndarray:
    """Number of outgoing links of each chiplet (at least 1, so a lone chiplet divides by 1)."""
    deg = np.zeros(hw.n_chiplets, dtype=np.int64)
    for a, _ in hw.links:
        deg[a] += 1
    return np.maximum(deg, 1)


def resource_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C_c compute cycles, S_c send cycles) per chiplet in the optimiser's cost model (module docstring)."""
    a = np.asarray(assignment, dtype=np.int64)
    cycles = op_cycles_matrix(graph, hw)
    compute = np.bincount(a, weights=cycles[np.arange(graph.n_ops), a], minlength=hw.n_chiplets).astype(np.int64)
    biggest = np.zeros(graph.n_ops, dtype=np.int64)
    cut = a[graph.edge_src] != a[graph.edge_dst]
    if cut.any():
        np.maximum.at(biggest, graph.edge_src[cut], graph.edge_bytes[cut])
    ser = np.asarray(serialization_cycles(biggest, hw), dtype=np.int64)
    sends = np.bincount(a, weights=ser, minlength=hw.n_chiplets).astype(np.int64)
    return compute, sends


def bottleneck_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> int:
    """max_c max(C_c, ceil(S_c / out_degree(c))): the objective of `optimize` for a full assignment."""
    compute, sends = resource_cycles(graph, hw, assignment)
    links = -(-sends // out_degree(hw))
    return int(max(compute.max(initial=0), links.max(initial=0)))


def optimize(graph: TensorGraph, hw: Hardware, *, time_limit_s: float = 30.0, seed: int = 0,
             pinned: Mapping[int, int] | None = None, hint: np.ndarray | None = None,
             workers: int = 2, deterministic: bool = False, wall_limit_s: float | None = None) -> Partition:
    """Minimise the bottleneck chiplet time (see module docstring) within `time_limit_s` wall seconds.

    workers=2 (default) runs CP-SAT's parallel portfolio: on a 400-op random DAG at 16 chiplets and 10 s it closes
    the gap to 1.8% where one worker stays at 7.6%, but its answer can vary between runs when the time limit
    stops it. workers=1 is sequential and reproducible for a seed unless the wall clock, rather than the equal
    deterministic-time budget or optimality, stops it.
    deterministic=True: one worker, `time_limit_s` as CP-SAT deterministic time only, and a wall-clock safety cap
    of `wall_limit_s` from the call (default: 10 x time_limit_s + 10 s for the solve): the same seed
    gives the same answer on any machine load unless that cap ends the solve (`info["wall_capped"]` says so).
    Returns a Partition with status "optimal" or "feasible", objective_cycles, lower_bound_cycles and gap.
    """
    start = time.perf_counter()
    pins = normalize_pins(graph, hw, pinned)
    dom = check_feasible(graph, hw, pins)
    n_chip = hw.n_chiplets
    cycles = op_cycles_matrix(graph, hw)
    ladder = build_ladder(graph, hw, dom)
    model, x, y = ladder.model, ladder.x, ladder.y
    lower = trivial_lower_bound(graph, hw)
    edge_ser = np.asarray(serialization_cycles(graph.edge_bytes, hw), dtype=np.int64)
    upper = int(cycles.max(axis=1).sum() + edge_ser.sum())
    bottleneck = model.new_int_var(lower, max(lower, upper), "bottleneck")

    # Sends: send[u][c] >= ser(u->v) when u sits on c and v beyond c, for every out-edge u->v.
    out_edges: dict[int, list[tuple[int, int]]] = {}
    for u, v, k in zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), edge_ser.tolist()):
        if k > 0:
            out_edges.setdefault(u, []).append((v, k))
    send_terms: list[list[tuple[cp_model.IntVar, int]]] = [[] for _ in range(n_chip)]
    for u, vs in out_edges.items():
        for c in range(int(dom.lo[u]), min(int(dom.hi[u]), n_chip - 2) + 1):
            if isinstance(x[u][c], int) and x[u][c] == 0:
                continue
            beyond = [(y[v][c + 1], k) for v, k in vs if not (isinstance(y[v][c + 1], int) and y[v][c + 1] == 0)]
            if not beyond:
                continue
            send = model.new_int_var(0, max(k for _, k in beyond), f"send{u}_{c}")
            for lit, k in beyond:
                model.add(send >= k * (x[u][c] + lit - 1))
            send_terms[c].append((send, 1))

    # Objective: the busiest resource, a chiplet's compute or (on average) one of its out-links.
    degree = out_degree(hw)
    for c in range(n_chip):
        terms = [(x[i][c], int(cycles[i, c])) for i in ladder.candidates[c].tolist()]
        model.add(cp_model.LinearExpr.weighted_sum([t for t, _ in terms], [k for _, k in terms]) <= bottleneck)
        if send_terms[c]:
            model.add(sum(t for t, _ in send_terms[c]) <= int(degree[c]) * bottleneck)
    model.minimize(bottleneck)

    # Hint: the best valid of the contiguous split and the caller's hint.
    starts = [contiguous_split(graph, hw)] + ([np.asarray(hint, dtype=np.int64)] if hint is not None else [])
    valid = [a for a in starts if a.shape == (graph.n_ops,) and not check(graph, hw, a, pins)]
    best_start = min(valid, key=lambda a: bottleneck_cycles(graph, hw, a)) if valid else starts[-1]
    ladder_hint(ladder, np.clip(best_start, 0, n_chip - 1))

    solver = cp_model.CpSolver()
    solver.parameters.random_seed = seed
    solver.parameters.catch_sigint_signal = False   # Ctrl-C belongs to the caller (it stops the run's search)
    if deterministic:
        workers = 1
        # The usual cap counts the solve alone (building the model can take seconds on a large graph); a caller's
        # wall_limit_s counts from the call, so a run budget holds.
        wall = (DETERMINISTIC_WALL_FACTOR * max(time_limit_s, 1e-3) + 10.0 if wall_limit_s is None
                else wall_limit_s - (time.perf_counter() - start))
        solver.parameters.max_time_in_seconds = max(wall, 0.1)
    else:
        # Wall clock is the hard limit; with one worker a deterministic limit of the same size usually ends the
        # search first (or it ends at optimality), which makes the answer reproducible.
        solver.parameters.max_time_in_seconds = max(time_limit_s - (time.perf_counter() - start), 0.1)
    solver.parameters.num_workers = workers
    if workers == 1:
        solver.parameters.max_deterministic_time = max(time_limit_s, 1e-3)
    solve_start = time.perf_counter()
    status = solver.solve(model)
    wall_capped = (status != cp_model.OPTIMAL and solver.deterministic_time < 0.99 * time_limit_s
                   and time.perf_counter() - solve_start >= solver.parameters.max_time_in_seconds * 0.99)
    if status in (cp_model.INFEASIBLE, cp_model.MODEL_INVALID):
        raise explain_infeasible(graph, hw, pins)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        if valid:   # the solver found nothing better than a valid start; it is still an answer
            assignment, status_name = best_start, "feasible"
        else:
            raise UserError(f"the exact solver found no valid partition of {graph.n_ops} ops on {n_chip} chiplets "
                            f"within its {time_limit_s:g} s limit", "raise --time-limit")
    else:
        assignment, status_name = read_assignment(solver, ladder), solver.status_name(status).lower()
    problems = check(graph, hw, assignment, pins)
    if problems:
        raise AssertionError(f"optimize produced an invalid partition: {problems[:3]}")
    objective = bottleneck_cycles(graph, hw, assignment)
    bound = lower
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        bound = max(lower, int(math.ceil(solver.best_objective_bound - 1e-6)))
    bound = min(bound, objective)
    gap = (objective - bound) / objective if objective > 0 else 0.0
    if gap == 0.0:
        status_name = "optimal"
    prop = None if hint is None else np.asarray(hint, dtype=np.int64)
    moved = int(np.count_nonzero(assignment != prop)) if prop is not None and prop.shape == assignment.shape else 0
    return Partition(assignment, prop, moved, status_name, time.perf_counter() - start,
                     lower_bound_cycles=float(bound), objective_cycles=float(objective), gap=gap,
                     info={"deterministic_time": solver.deterministic_time, "workers": workers,
                           "wall_capped": bool(wall_capped),
                           "start_cycles": bottleneck_cycles(graph, hw, best_start) if valid else None})
