"""Exact partitioning with CP-SAT: minimise the bottleneck resource's busy time per inference, with a proven bound.

Cost model: a linear relaxation of the simulator's steady state (docs/simulator.md, R5-R8), so that the bound is a
true certificate: the simulator's cycles per inference are at least the busiest resource's busy time, and

  * chiplet c is busy for C_c = sum of its ops' cycles (cost.op_cycles_matrix, column c);
  * its out-links together carry at least S_c = sum over its ops u with a consumer on a later chiplet of
    ser(largest such cut edge of u) (cost.serialization_cycles): u sends at least one message at least that big
    (the simulator sends one per destination chiplet), and every message leaves over one of c's out-links, so
    the busiest of c's out_degree(c) links carries at least S_c / out_degree(c). With links of several classes
    (packages, docs/hardware.md "Levels") ser divides by the fastest class's bandwidth, so this stays a lower bound.

  * with a memory tier, stack k is busy for at least T_k = sum over the streamed ops on the chiplets it feeds
    (hw.stack_feed) of floor(ceil(stream bytes per batch / its sustained_bytes_per_cycle) / batch): the simulator holds
    the stack that long per batch for each read, and a sum of floors is at most the floor of the sum. A read for
    chiplet c from a stack attached elsewhere enters c over one of its in_degree(c) links, holding it
    floor(ceil(bytes / link_bytes_per_cycle) / batch) per inference, so c's busiest in-link carries at least
    R_c / in_degree(c). Which weights stream is a decision of the model (residency literals, solver/_ladder.py).

  * with packages (hw.package_level), at each package boundary k (the first chiplet id of package p >= 1), P_k =
    sum over producers u on a chiplet below k with a consumer at or above k of ceil(largest such edge / board link
    bandwidth), over L_k, the directed links from below k to k and above: every such message's route crosses one
    of those L_k links, all of them board links, so the busiest of them carries at least P_k / L_k.

Objective: bottleneck = max(max_c max(C_c, ceil(S_c / out_degree(c)), ceil(R_c / in_degree(c))), max_k T_k, max_k P_k). Its lower end is the larger of
the trivial compute bound and `stack_lower_bound` (how much must stream at least, at the stacks' total bandwidth). Under-counted against the simulator: the NoC
hops of stream reads, stack latency, messages to second and further destination chiplets, the later hops of multi-hop routes, hop latency and contention, so the
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

from partitioner.model.cost import op_cycles_matrix, serialization_cycles, stream_bytes
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition, check
from partitioner.plan.splits import contiguous_split, trivial_lower_bound
from solver._ladder import build_ladder, ladder_hint, read_assignment, read_streamed
from solver.infeasibility import check_feasible, explain_infeasible, normalize_pins
from solver.residency import choose_streamed, streaming_needed


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


def in_degree(hw: Hardware) -> np.ndarray:
    """Number of incoming links of each chiplet (at least 1)."""
    deg = np.zeros(hw.n_chiplets, dtype=np.int64)
    for _, b in hw.links:
        deg[b] += 1
    return np.maximum(deg, 1)


def stream_link_cycles(graph: TensorGraph, hw: Hardware, batch: int = 1) -> np.ndarray:
    """Per op: floor(ceil(stream bytes per batch / link bandwidth) / batch), what one stream read holds a link."""
    return np.asarray(serialization_cycles(stream_bytes(graph, batch), hw), dtype=np.int64) // batch


def stream_receive_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, streamed: np.ndarray | None,
                          batch: int = 1) -> np.ndarray:
    """R_c per chiplet (module docstring): link cycles of the stream reads entering it from another chiplet."""
    out = np.zeros(hw.n_chiplets, dtype=np.int64)
    if streamed is None or not hw.memory_stacks:
        return out
    a = np.asarray(assignment, dtype=np.int64)
    src = np.array([at for _, at in hw.stack_feed], dtype=np.int64)
    s = np.flatnonzero(np.asarray(streamed, dtype=bool) & (src[a] != a))
    np.add.at(out, a[s], stream_link_cycles(graph, hw, batch)[s])
    return out


def stack_read_cycles(graph: TensorGraph, hw: Hardware, batch: int = 1) -> np.ndarray:
    """[op, stack]: floor(ceil(stream bytes per batch / stack bandwidth) / batch), the optimiser's per-inference
    charge on stack k when op streams from it."""
    if not hw.memory_stacks:
        return np.zeros((graph.n_ops, 0), dtype=np.int64)
    sb = stream_bytes(graph, batch)
    bw = np.array([st.sustained_bytes_per_cycle for st in hw.memory_stacks], dtype=np.int64)
    return (-(-sb[:, None] // bw[None, :])) // batch


def stack_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, streamed: np.ndarray | None,
                 batch: int = 1) -> np.ndarray:
    """T_k per stack (module docstring) for a full assignment and its streamed flags."""
    out = np.zeros(len(hw.memory_stacks), dtype=np.int64)
    if streamed is None or not hw.memory_stacks:
        return out
    a = np.asarray(assignment, dtype=np.int64)
    s = np.flatnonzero(np.asarray(streamed, dtype=bool))
    feed = np.array([k for k, _ in hw.stack_feed], dtype=np.int64)
    np.add.at(out, feed[a[s]], stack_read_cycles(graph, hw, batch)[s, feed[a[s]]])
    return out


def stack_lower_bound(graph: TensorGraph, hw: Hardware, batch: int = 1) -> int:
    """A bound on max_k T_k valid for every partition, without a solver. Resident weights fit in SRAM, so at least
    D = total weights (a shared tensor once) - total SRAM bytes must stream; the fewest read bytes that stream
    that much is a fractional knapsack (ops by read bytes per weight byte, cheapest first): R. The stacks together read at most
    sum_k sustained_bytes_per_cycle per cycle, and each op's floor(ceil(b / bw) / batch) loses less than one cycle, so
    max_k T_k >= floor(R / (batch x sum_k bw)) - (ops with weights). 0 when everything fits or without a tier."""
    if not hw.memory_stacks:
        return 0
    w = graph.weight_bytes.astype(np.float64)
    # a tensor several ops read may be held once (partition.shared_overcount): count it once here too
    deficit = float(graph.unique_weight_bytes) - sum(c.sram_bytes for c in hw.chiplets)
    if deficit <= 0:
        return 0
    reads = stream_bytes(graph, batch).astype(np.float64)
    has = np.flatnonzero(w > 0)
    total = 0.0
    for i in sorted(has.tolist(), key=lambda i: reads[i] / w[i]):
        take = min(w[i], deficit)
        total += reads[i] * take / w[i]
        deficit -= take
        if deficit <= 0:
            break
    bw = sum(st.sustained_bytes_per_cycle for st in hw.memory_stacks)
    return max(0, int(total // (batch * bw)) - int(has.size))


def package_cuts(hw: Hardware) -> list[tuple[int, int]]:
    """(k, links) for every package boundary k = p x m (p >= 1) of a package level: how many directed links run from
    a chiplet below k to one at or above k. All of them are board links (ids are grouped by package). Empty when
    flat."""
    if hw.package_level is None:
        return []
    m = hw.chiplets_per_package
    return [(k, sum(1 for a, b in hw.links if a < k <= b)) for k in range(m, hw.n_chiplets, m)]


def board_ser(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Per edge: ceil(bytes / board link bandwidth), what its tensor holds a package link. With more levels, the
    fastest link above the package (a boundary of a node is crossed by a node's links): still the least any crossing
    link is held."""
    return -(-graph.edge_bytes.astype(np.int64) // max(c.bytes_per_cycle for c in hw.link_classes[1:]))


def package_cut_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> np.ndarray:
    """P_k per package boundary (module docstring): sum over producers u below k with a consumer at or above k of
    the board serialisation of the largest such edge, over the links crossing k (rounded up)."""
    cuts = package_cuts(hw)
    out = np.zeros(len(cuts), dtype=np.int64)
    if not cuts:
        return out
    a = np.asarray(assignment, dtype=np.int64)
    ser = board_ser(graph, hw)
    for j, (k, n_links) in enumerate(cuts):
        cross = (a[graph.edge_src] < k) & (a[graph.edge_dst] >= k)
        biggest = np.zeros(graph.n_ops, dtype=np.int64)
        np.maximum.at(biggest, graph.edge_src[cross], ser[cross])
        out[j] = -(-int(biggest.sum()) // max(n_links, 1))
    return out


def bottleneck_cycles(graph: TensorGraph, hw: Hardware, assignment: np.ndarray,
                      streamed: np.ndarray | None = None, batch: int = 1) -> int:
    """max(max_c max(C_c, ceil(S_c / out_degree(c))), max_k T_k, max_k P_k): the objective of `optimize` for a full
    assignment and its streamed flags."""
    compute, sends = resource_cycles(graph, hw, assignment)
    links = -(-sends // out_degree(hw))
    receive = -(-stream_receive_cycles(graph, hw, assignment, streamed, batch) // in_degree(hw))
    return int(max(compute.max(initial=0), links.max(initial=0), receive.max(initial=0),
                   stack_cycles(graph, hw, assignment, streamed, batch).max(initial=0),
                   package_cut_cycles(graph, hw, assignment).max(initial=0)))


def _edges_by_producer(graph: TensorGraph, ser: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    """u -> [(v, ser of u->v)] over the edges with ser > 0."""
    out: dict[int, list[tuple[int, int]]] = {}
    for u, v, k in zip(graph.edge_src.tolist(), graph.edge_dst.tolist(), ser.tolist()):
        if k > 0:
            out.setdefault(u, []).append((v, k))
    return out


def optimize(graph: TensorGraph, hw: Hardware, *, time_limit_s: float = 30.0, seed: int = 0,
             pinned: Mapping[int, int] | None = None, hint: np.ndarray | None = None,
             workers: int = 2, deterministic: bool = False, wall_limit_s: float | None = None,
             batch: int = 1) -> Partition:
    """Minimise the bottleneck chiplet time (see module docstring) within `time_limit_s` wall seconds.

    workers=2 (default) runs CP-SAT's parallel portfolio: on a 400-op random DAG at 16 chiplets and 10 s it closes
    the gap to 1.8% where one worker stays at 7.6%, but its answer can vary between runs when the time limit
    stops it. workers=1 is sequential and reproducible for a seed unless the wall clock, rather than the equal
    deterministic-time budget or optimality, stops it.
    deterministic=True: one worker, `time_limit_s` as CP-SAT deterministic time only, and a wall-clock safety cap
    of `wall_limit_s` from the call (default: 10 x time_limit_s + 10 s for the solve): the same seed
    gives the same answer on any machine load unless that cap ends the solve (`info["wall_capped"]` says so).
    batch: inferences per read of a streamed weight (the stack term). With a memory tier the model also chooses
    which weights stream; the Partition carries them in `streamed`.
    Returns a Partition with status "optimal" or "feasible", objective_cycles, lower_bound_cycles and gap.
    """
    start = time.perf_counter()
    pins = normalize_pins(graph, hw, pinned)
    if hw.memory_stacks and not streaming_needed(graph, hw, pins):
        try:   # every weight may fit on chip: solve as on the SRAM-only package (residency.streaming_needed)
            return optimize(graph, hw.without_memory_tier(), time_limit_s=time_limit_s, seed=seed, pinned=pins,
                            hint=hint, workers=workers, deterministic=deterministic, wall_limit_s=wall_limit_s,
                            batch=batch)
        except UserError:
            pass
    dom = check_feasible(graph, hw, pins)
    n_chip = hw.n_chiplets
    cycles = op_cycles_matrix(graph, hw)
    ladder = build_ladder(graph, hw, dom)
    model, x, y = ladder.model, ladder.x, ladder.y
    lower = max(trivial_lower_bound(graph, hw), stack_lower_bound(graph, hw, batch))
    edge_ser = np.asarray(serialization_cycles(graph.edge_bytes, hw), dtype=np.int64)
    cut_ser = board_ser(graph, hw) if hw.package_level is not None else np.zeros(0, dtype=np.int64)
    upper = int(cycles.max(axis=1).sum() + edge_ser.sum() + stack_read_cycles(graph, hw, batch).max(axis=1, initial=0).sum()
                + stream_link_cycles(graph, hw, batch).sum() + cut_ser.sum())
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
    # Package boundaries: what crosses from below k to k and above holds one of the board links crossing k.
    for k, n_links in package_cuts(hw):
        cut_terms = []
        for u, vs in _edges_by_producer(graph, cut_ser).items():
            yu = y[u][k]
            if isinstance(yu, int) and yu == 1:
                continue
            beyond = [(y[v][k], s) for v, s in vs if not (isinstance(y[v][k], int) and y[v][k] == 0)]
            if not beyond:
                continue
            cut = model.new_int_var(0, max(s for _, s in beyond), f"cut{u}_{k}")
            for lit, s in beyond:
                model.add(cut >= s * (lit - yu))
            cut_terms.append(cut)
        if cut_terms and n_links:
            model.add(sum(cut_terms) <= n_links * bottleneck)
    # Memory stacks: each is busy reading the weights that stream to the chiplets it feeds; what it stores fits.
    if ladder.resident:
        reads = stack_read_cycles(graph, hw, batch)
        per_stack: list[list] = [[] for _ in hw.memory_stacks]
        for (i, c), r in ladder.resident.items():
            per_stack[hw.stack_feed[c][0]].append((i, c, r))
        for k, items in enumerate(per_stack):
            st = hw.memory_stacks[k]
            used = [(i, c, r) for i, c, r in items if reads[i, k] > 0]
            if used:
                model.add(sum(int(reads[i, k]) * (x[i][c] - r) for i, c, r in used) <= bottleneck)
            if items and sum(int(graph.weight_bytes[i]) for i, _, _ in items) > st.capacity_bytes:
                model.add(sum(int(graph.weight_bytes[i]) * (x[i][c] - r) for i, c, r in items) <= st.capacity_bytes)
        # Stream reads entering a chiplet that no stack is attached to load its in-links.
        link_reads, indeg = stream_link_cycles(graph, hw, batch), in_degree(hw)
        per_chiplet: list[list] = [[] for _ in range(n_chip)]
        for (i, c), r in ladder.resident.items():
            if hw.stack_feed[c][1] != c and link_reads[i] > 0:
                per_chiplet[c].append((int(link_reads[i]), x[i][c] - r))
        for c, items in enumerate(per_chiplet):
            if items:
                model.add(sum(k * e for k, e in items) <= int(indeg[c]) * bottleneck)
    model.minimize(bottleneck)

    # Hint: the best valid of the contiguous split and the caller's hint (overflowing weights streamed).
    starts = [contiguous_split(graph, hw)] + ([np.asarray(hint, dtype=np.int64)] if hint is not None else [])
    valid = []
    for a in starts:
        if a.shape != (graph.n_ops,):
            continue
        streamed = choose_streamed(graph, hw, a, batch) if check(graph, hw, a, pins) else None
        if not check(graph, hw, a, pins, streamed):
            valid.append((a, streamed))
    best_start, best_streamed = (min(valid, key=lambda v: bottleneck_cycles(graph, hw, v[0], v[1], batch))
                                 if valid else (starts[-1], None))
    ladder_hint(ladder, np.clip(best_start, 0, n_chip - 1), best_streamed)

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
            assignment, streamed, status_name = best_start, best_streamed, "feasible"
        else:
            raise UserError(f"the exact solver found no valid partition of {graph.n_ops} ops on {n_chip} chiplets "
                            f"within its {time_limit_s:g} s limit", "raise --time-limit")
    else:
        assignment, status_name = read_assignment(solver, ladder), solver.status_name(status).lower()
        streamed = read_streamed(solver, ladder, assignment)
    problems = check(graph, hw, assignment, pins, streamed)
    if problems:
        raise AssertionError(f"optimize produced an invalid partition: {problems[:3]}")
    objective = bottleneck_cycles(graph, hw, assignment, streamed, batch)
    start_cycles = bottleneck_cycles(graph, hw, best_start, best_streamed, batch) if valid else None
    if start_cycles is not None and start_cycles < objective:
        # A wall-capped search can end on a solution worse than its hint (CP-SAT need not keep a hint it could
        # not complete in time); the valid start is still an answer, and never returning less is the contract.
        assignment, streamed, objective = best_start, best_streamed, start_cycles
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
                     info={"deterministic_time": solver.deterministic_time, "workers": workers, "batch": batch,
                           "wall_capped": bool(wall_capped),
                           "start_cycles": start_cycles},
                     streamed=streamed)
