"""Repair without the memory rule, solved exactly as a maximum-weight closure (one max-flow / min-cut).

With the stage ladder y[i][c] = (s_i >= c), the rules other than memory are all implications between ladder rungs
(y[i][c+1] => y[i][c]; y[u][c] => y[v][c] on an edge u->v; domain bounds fix rungs to 0 or 1; a chiplet an op
cannot take makes y[i][c] => y[i][c+1]). Keeping op i on its proposed chiplet p is the linear term
w_i * (y[i][p] - y[i][p+1]). Maximising a linear function of Booleans under implications is a max-weight closure
problem, which a min s-t cut solves exactly (Picard 1976): rungs with positive weight hang off the source, rungs
with negative weight off the sink, implications are infinite arcs, and the source side of a minimum cut is an
optimal closure. When that optimum also fits every chiplet's memory it is optimal for the full repair problem
(it is a relaxation), so no CP-SAT model is needed; otherwise it is the hint and `kept_bound` bounds CP-SAT.
"""
from __future__ import annotations

import numpy as np
from ortools.graph.python import max_flow

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import memory_use
from solver.infeasibility import StageDomains


def closure_repair(graph: TensorGraph, hw: Hardware, dom: StageDomains, proposal: np.ndarray,
                   weights: np.ndarray, penalty: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """(assignment, kept weight) maximising sum w_i [s_i == p_i] - sum penalty[i, s_i] under order, pins and op
    types (not memory). `penalty` (int64 [n_ops, n_chiplets], >= 0) prices chiplets; the kept weight returned is
    the plain sum of w_i over kept ops."""
    n, n_chip = graph.n_ops, hw.n_chiplets
    prop = np.asarray(proposal, dtype=np.int64)
    if n_chip == 1 or n == 0:
        out = np.zeros(n, dtype=np.int64)
        return out, int(weights[prop == 0].sum())
    r = n_chip - 1                          # rungs c = 1..C-1 per op; node id i * r + (c - 1)
    source, sink = n * r, n * r + 1
    big = 2 * (int(np.abs(weights).sum()) + (int(np.abs(penalty).sum()) if penalty is not None else 0)) + 1
    tails, heads, caps = [], [], []

    def arcs(t: np.ndarray, h: np.ndarray, cap) -> None:
        tails.append(np.asarray(t, dtype=np.int64).ravel())
        heads.append(np.asarray(h, dtype=np.int64).ravel())
        caps.append(np.broadcast_to(np.asarray(cap, dtype=np.int64), tails[-1].shape).ravel())

    ops = np.arange(n)
    node = ops[:, None] * r + np.arange(r)[None, :]          # node[i, c-1]
    rung = np.arange(1, n_chip)[None, :]
    # Ladder: y[i][c+1] => y[i][c].
    if r > 1:
        arcs(node[:, 1:], node[:, :-1], big)
    # Domains: rungs at or below lo are 1, above hi are 0, a disallowed chiplet c ties rung c to rung c+1.
    fix1 = rung <= dom.lo[:, None]
    fix0 = rung > dom.hi[:, None]
    arcs(np.full(int(fix1.sum()), source), node[fix1], big)
    arcs(node[fix0], np.full(int(fix0.sum()), sink), big)
    inside = (rung >= dom.lo[:, None]) & (rung < dom.hi[:, None]) & ~dom.allowed[:, 1:]
    ii, cc = np.nonzero(inside)                                # chiplet cc+1 disallowed: y[cc+1] => y[cc+2]
    arcs(node[ii, cc], node[ii, cc + 1], big)
    # Pipeline order: y[u][c] => y[v][c].
    if graph.n_edges:
        arcs(node[graph.edge_src], node[graph.edge_dst], big)
    # Objective: + w_i on rung p_i (p_i >= 1), - w_i on rung p_i + 1 (p_i + 1 <= C - 1).
    # In general the value of op i on chiplet c is coef[i, c] and rung c carries coef[i, c] - coef[i, c-1].
    coef = np.zeros((n, n_chip), dtype=np.int64)
    valid = (prop >= 0) & (prop < n_chip)
    coef[ops[valid], prop[valid]] = weights[valid]
    if penalty is not None:
        coef -= penalty
    gain = (coef[:, 1:] - coef[:, :-1]).ravel()
    pos, neg = np.flatnonzero(gain > 0), np.flatnonzero(gain < 0)
    arcs(np.full(pos.size, source), pos, gain[pos])
    arcs(neg, np.full(neg.size, sink), -gain[neg])
    arcs(np.array([sink]), np.array([source]), 0)   # makes sure both terminals exist (else the cut comes back empty)

    flow = max_flow.SimpleMaxFlow()
    flow.add_arcs_with_capacity(np.concatenate(tails).astype(np.int32), np.concatenate(heads).astype(np.int32),
                                np.concatenate(caps))
    status = flow.solve(source, sink)
    if status != flow.OPTIMAL:
        raise RuntimeError(f"max-flow failed with status {status}")
    chosen = np.zeros(n * r + 2, dtype=bool)
    chosen[np.asarray(flow.get_source_side_min_cut(), dtype=np.int64)] = True
    assignment = chosen[node].sum(axis=1).astype(np.int64)
    kept = int(weights[assignment == prop].sum())
    return assignment, kept


def lagrangian_repair(graph: TensorGraph, hw: Hardware, dom: StageDomains, proposal: np.ndarray,
                      weights: np.ndarray, feasible, iterations: int = 30) -> tuple[np.ndarray | None, int, float]:
    """Memory priced in by Lagrangian relaxation: (best valid assignment found or None, its kept weight, bound).

    Relaxing "weights on chiplet c <= sram_c" (a relaxation of the memory rule, since peak activations are >= 0)
    with prices lam_c >= 0 leaves a closure problem with penalty lam_c * weight_i for op i on chiplet c, so each
    subgradient step is one min-cut. L(lam) = best penalised kept weight + sum_c lam_c * sram_c bounds the optimum
    from above (penalties are rounded down, which only raises L). `feasible(assignment)` turns each relaxed
    answer into a valid one or None. Stops as soon as the best valid answer meets floor(min L).
    """
    scale = 1 << 10
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=np.float64)
    wbytes = graph.weight_bytes.astype(np.float64)
    lam = np.zeros(hw.n_chiplets)
    best, best_kept, bound = None, -1, float("inf")
    theta, stall = 1.0, 0
    prop = np.asarray(proposal, dtype=np.int64)
    for _ in range(iterations):
        penalty = np.floor(scale * wbytes[:, None] * lam[None, :]).astype(np.int64)
        a, kept = closure_repair(graph, hw, dom, prop, weights * scale, penalty)
        kept //= scale
        value = kept - penalty[np.arange(graph.n_ops), a].sum() / scale + float(lam @ sram)
        if value < bound - 1e-9:
            bound, stall = value, 0
        else:
            stall += 1
            if stall >= 3:
                theta, stall = theta / 2, 0
        valid = feasible(a)
        if valid is not None:
            k = int(weights[valid == prop].sum())
            if k > best_kept:
                best, best_kept = valid, k
        if best_kept >= int(np.floor(bound + 1e-9)):
            break
        # Step along the true overflow (weights + peak): any lam >= 0 gives a valid bound, this one finds
        # valid answers sooner than the weights-only subgradient when peaks tip a chiplet over.
        g = memory_use(graph, hw, a) - sram
        g[(lam <= 0) & (g < 0)] = 0.0
        norm = float(g @ g)
        if norm == 0.0:
            break
        target = best_kept if best_kept >= 0 else 0.9 * value
        step = theta * max(value - target, 1e-3 * max(value, 1.0)) / norm
        lam = np.maximum(0.0, lam + step * g)
    return best, best_kept, bound
