"""The balance term of every analytical bound on a package of several chiplet kinds: each op's work divided among
the kinds, each kind's share at that kind's own rate, and the busiest kind per chiplet.

On a homogeneous package this is total work / chiplets. On a heterogeneous one, spreading each op's fastest-kind
time over every chiplet (as if all were the fastest kind) can sit above the package's MAC ceiling; the LP below is
the tightest balance any plan can reach, and still a lower bound (docs/simulator.md, "Bounds on heterogeneous
packages"): in any plan, the chiplets of kind k run some fraction x_ik of op i's pieces, each for at least w_ik / k
cycles of a k-way split (w_ik: the least chiplet-cycles of op i on kind k), so the busiest chiplet of kind k has at
least sum_i x_ik w_ik / n_k cycles, with sum_k x_ik = 1 for every op.
"""
from __future__ import annotations

import numpy as np

SAFETY = 1e-9
"""The LP's optimum is shaded down by this relative amount, so solver tolerances never lift it above the true one."""


def balanced_cycles(work: np.ndarray, counts: np.ndarray) -> float:
    """min T such that the ops' work (work[i, k]: op i's least chiplet-cycles on kind k, inf where it cannot run)
    split among the kinds fits counts[k] chiplets of each kind within T cycles each."""
    work = np.asarray(work, dtype=float)
    counts = np.asarray(counts, dtype=float)
    if work.size == 0:
        return 0.0
    if work.shape[1] == 1:
        return float(np.ascontiguousarray(work[:, 0]).sum()) / float(counts[0])
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver("GLOP")
    scale = max(float(np.nanmax(np.where(np.isfinite(work), work, 0.0))), 1.0)   # keep coefficients near 1
    w = work / scale
    t = solver.NumVar(0.0, solver.infinity(), "T")
    x = [[solver.NumVar(0.0, 1.0, "") if np.isfinite(w[i, k]) else None for k in range(w.shape[1])]
         for i in range(w.shape[0])]
    for i in range(w.shape[0]):
        solver.Add(sum(v for v in x[i] if v is not None) == 1.0)
    for k in range(w.shape[1]):
        solver.Add(sum(w[i, k] * x[i][k] for i in range(w.shape[0]) if x[i][k] is not None) <= counts[k] * t)
    solver.Minimize(t)
    if solver.Solve() != pywraplp.Solver.OPTIMAL:   # cannot happen for finite work; fall back to a weaker bound
        return float(np.min(work, axis=1).sum()) / float(counts.sum())
    return t.solution_value() * scale * (1.0 - SAFETY)
