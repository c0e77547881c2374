"""Exact partitioning with CP-SAT: minimise the bottleneck chiplet's time per inference, with a proven bound.

Cost model (the simulator's, linearised). Chiplet c's time is

    T_c = sum of op cycles of its ops (cost.op_cycles_matrix, column c)
        + sum of serialization cycles (cost.serialization_cycles) of the outputs it sends to later chiplets,

and the objective is max_c T_c. An edge u->v is cut when s_u < s_v. Approximation: a producer is charged its
output's serialization once, on its own chiplet, if any of its out-edges is cut, whereas the simulator sends it
once per destination chiplet; output size is the largest out-edge's bytes. Hop latency and link contention are
left out (they overlap with compute in a pipeline). So `objective_cycles` and `lower_bound_cycles` are in this
model: the bound is a certificate for it, and the simulator's bottleneck can differ from the objective.

Model: the stage ladder of solver/_ladder.py (memory, order, pins, op types exact) plus, per producer u and
chiplet c, a Boolean sends[u][c] >= x[u][c] + y[v][c+1] - 1 for each successor v ("u is on c and some successor is
beyond c"). The hint is the best of a greedy contiguous split of the topological order (binary search on the
bottleneck, memory respected) and the caller's `hint`. lower_bound_cycles is the larger of CP-SAT's bound and
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
from solver._ladder import build_ladder, ladder_hint, read_assignment
from solver.infeasibility import check_feasible, explain_infeasible, normalize_pins


def send_cycles(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Serialization cycles of each op's output (its largest out-edge), 0 for ops with no successor."""
    out = np.zeros(graph.n_ops, dtype=np.int64)
    if graph.n_edges:
        np.maximum.at(out, graph.edge_src, graph.edge_bytes)
    return np.asarray(serialization_cycles(out, hw), dtype=np.int64)


def chiplet_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> np.ndarray:
    """T_c of the optimiser's cost model for a full assignment (compute + one send per producer with a cut)."""
    a = np.asarray(assignment, dtype=np.int64)
    cycles = op_cycles_matrix(graph, hw)
    t = np.bincount(a, weights=cycles[np.arange(graph.n_ops), a], minlength=hw.n_chiplets)
    cut = np.zeros(graph.n_ops, dtype=bool)
    cut[graph.edge_src[a[graph.edge_src] != a[graph.edge_dst]]] = True
    t += np.bincount(a[cut], weights=send_cycles(graph, hw)[cut], minlength=hw.n_chiplets)
    return t.astype(np.int64)


def trivial_lower_bound(graph: TensorGraph, hw: Hardware) -> int:
    """max(ceil(total fastest cycles / n_chiplets), slowest op's fastest cycles): valid for any partition."""
    if graph.n_ops == 0:
        return 0
    fastest = op_cycles_matrix(graph, hw).min(axis=1)
    return int(max(math.ceil(int(fastest.sum()) / hw.n_chiplets), int(fastest.max())))


def contiguous_split(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Cut the topological order into at most n_chiplets consecutive runs: the smallest compute bottleneck (binary
    search) for which a greedy fill that also respects memory fits. Always pipeline-ordered (src < dst)."""
    n, n_chip = graph.n_ops, hw.n_chiplets
    cycles = op_cycles_matrix(graph, hw)
    sram = [c.sram_bytes for c in hw.chiplets]
    w, work = graph.weight_bytes.tolist(), graph.work_bytes.tolist()

    def fill(limit: int) -> np.ndarray | None:
        out = np.empty(n, dtype=np.int64)
        c, load, used, peak = 0, 0, 0, 0
        for i in range(n):
            while c < n_chip and load > 0 and (load + cycles[i, c] > limit
                                               or used + w[i] + max(peak, work[i]) > sram[c]):
                c, load, used, peak = c + 1, 0, 0, 0
            if c == n_chip:
                return None
            out[i] = c
            load, used, peak = load + int(cycles[i, c]), used + w[i], max(peak, work[i])
        return out

    lo, hi = trivial_lower_bound(graph, hw), int(cycles.max(axis=1).sum())
    best = fill(hi)
    if best is None:   # memory alone defeats a contiguous split; spread evenly by count instead
        return (np.arange(n) * n_chip // max(n, 1)).astype(np.int64)
    while lo < hi:
        mid = (lo + hi) // 2
        got = fill(mid)
        if got is None:
            lo = mid + 1
        else:
            hi, best = mid, got
    return best


def optimize(graph: TensorGraph, hw: Hardware, *, time_limit_s: float = 30.0, seed: int = 0,
             pinned: Mapping[int, int] | None = None, hint: np.ndarray | None = None,
             workers: int = 2) -> Partition:
    """Minimise the bottleneck chiplet time (see module docstring) within `time_limit_s` wall seconds.

    workers=2 (default) runs CP-SAT's parallel portfolio: on a 400-op random DAG at 16 chiplets and 10 s it closes
    the gap to 1.8% where one worker stays at 7.6%, but its answer can vary between runs when the time limit
    stops it. workers=1 is sequential and reproducible for a seed unless the wall clock, rather than the equal
    deterministic-time budget or optimality, stops it.
    Returns a Partition with status "optimal" or "feasible", objective_cycles, lower_bound_cycles and gap.
    """
    start = time.perf_counter()
    pins = normalize_pins(graph, hw, pinned)
    dom = check_feasible(graph, hw, pins)
    n_chip = hw.n_chiplets
    cycles = op_cycles_matrix(graph, hw)
    send = send_cycles(graph, hw)
    ladder = build_ladder(graph, hw, dom)
    model, x, y = ladder.model, ladder.x, ladder.y

    # Sends: sends[u][c] is forced to 1 when u sits on c and one of its successors sits beyond c.
    succs: dict[int, list[int]] = {}
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        succs.setdefault(u, []).append(v)
    send_terms: list[list[tuple[cp_model.IntVar, int]]] = [[] for _ in range(n_chip)]
    for u, vs in succs.items():
        if send[u] == 0:
            continue
        for c in range(int(dom.lo[u]), min(int(dom.hi[u]), n_chip - 2) + 1):
            if isinstance(x[u][c], int) and x[u][c] == 0:
                continue
            beyond = [y[v][c + 1] for v in vs if not (isinstance(y[v][c + 1], int) and y[v][c + 1] == 0)]
            if not beyond:
                continue
            s = model.new_bool_var(f"send{u}_{c}")
            for lit in beyond:
                model.add(s >= x[u][c] + lit - 1)
            send_terms[c].append((s, int(send[u])))

    # Objective: the most loaded chiplet, compute plus sends.
    lower = trivial_lower_bound(graph, hw)
    upper = int(cycles.max(axis=1).sum() + send.sum())
    bottleneck = model.new_int_var(lower, max(lower, upper), "bottleneck")
    for c in range(n_chip):
        terms = [(x[i][c], int(cycles[i, c])) for i in ladder.candidates[c].tolist()] + send_terms[c]
        lits = [t for t, _ in terms]
        model.add(cp_model.LinearExpr.weighted_sum(lits, [k for _, k in terms]) <= bottleneck)
    model.minimize(bottleneck)

    # Hint: the best valid of the contiguous split and the caller's hint.
    starts = [contiguous_split(graph, hw)] + ([np.asarray(hint, dtype=np.int64)] if hint is not None else [])
    valid = [a for a in starts if a.shape == (graph.n_ops,) and not check(graph, hw, a, pins)]
    best_start = min(valid, key=lambda a: int(chiplet_cycles(graph, hw, a).max())) if valid else starts[-1]
    ladder_hint(ladder, np.clip(best_start, 0, n_chip - 1))

    solver = cp_model.CpSolver()
    solver.parameters.random_seed = seed
    solver.parameters.num_workers = workers
    # Wall clock is the hard limit; with one worker a deterministic limit of the same size usually ends the search
    # first (or it ends at optimality), which makes the answer reproducible.
    solver.parameters.max_time_in_seconds = max(time_limit_s - (time.perf_counter() - start), 0.1)
    if workers == 1:
        solver.parameters.max_deterministic_time = max(time_limit_s, 1e-3)
    status = solver.solve(model)
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
    objective = int(chiplet_cycles(graph, hw, assignment).max())
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
                           "start_cycles": int(chiplet_cycles(graph, hw, best_start).max()) if valid else None})
