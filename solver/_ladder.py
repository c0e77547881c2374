"""The CP-SAT encoding shared by repair and optimize: an ordinal ("stage") ladder per op.

Op i's chiplet is s_i in [lo_i, hi_i]. It is encoded by Booleans y[i][c] = (s_i >= c) for c = 0..C, a monotone
ladder (y[i][c+1] => y[i][c], y[i][0] = 1, y[i][C] = 0), and membership x[i][c] = y[i][c] - y[i][c+1]. Pipeline
order s_u <= s_v on an edge is then C implications y[u][c] => y[v][c] with no big-M and a tight LP. Entries that
the stage domains fix are Python ints 0/1, not variables, and a chiplet the op cannot run (x = 0) makes two
ladder rungs the same variable, so the model only holds the choices that are really open.

Memory on chiplet c: sum_i weight_i * x[i][c] + peak_c <= sram_c, exactly the rule of
partitioner.model.partition.memory_use, with peak_c = the largest work_bytes among its ops written as a ladder over the
distinct work sizes (level k on = "peak_c >= size_k", x[i][c] => level of op i's size, each step's bytes counted
once); about 3x faster in CP-SAT than peak_c >= work_i * x[i][c] per op. The constraint is left out where even
every candidate op fits.

With a memory tier (hw.memory_stacks) each weighted op i that may sit on a memory-constrained chiplet c gets a
residency literal r[i][c] => x[i][c] ("on c and resident"), and the memory sum counts w_i * r[i][c]: the op
streams when x[i][c] and not r[i][c]. Where memory does not bind, every weight is resident (streaming there only
adds load, so leaving it out loses no optimum).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from ortools.sat.python import cp_model

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from solver.infeasibility import StageDomains

Lit = cp_model.IntVar | int


@dataclass
class Ladder:
    model: cp_model.CpModel
    y: list[list[Lit]]   # y[i][c] = (s_i >= c), c = 0..C
    x: list[list[Lit]]   # x[i][c] = (s_i == c), c = 0..C-1
    candidates: list[np.ndarray]   # ops that may sit on chiplet c
    peak_levels: list[tuple[int, list, list[int]]]   # (chiplet, level literals, their work sizes)
    work: np.ndarray               # work_bytes per op (for hints)
    resident: dict = field(default_factory=dict)   # (op, chiplet) -> r literal, with a memory tier only


def _is_var(lit: Lit) -> bool:
    return not isinstance(lit, int)


def build_ladder(graph: TensorGraph, hw: Hardware, dom: StageDomains) -> Ladder:
    model = cp_model.CpModel()
    n, n_chip = graph.n_ops, hw.n_chiplets
    allowed, lo, hi = dom.allowed, dom.lo.tolist(), dom.hi.tolist()

    # Stage ladders: y[i][c] for c <= lo is 1, above hi is 0; a disallowed chiplet c repeats rung c into c+1.
    y: list[list[Lit]] = []
    for i in range(n):
        rungs: list[Lit] = [1] * (lo[i] + 1)
        for c in range(lo[i] + 1, hi[i] + 1):
            rungs.append(model.new_bool_var(f"y{i}_{c}") if allowed[i, c - 1] else rungs[-1])
        rungs += [0] * (n_chip - hi[i])
        for c in range(lo[i] + 1, hi[i]):
            if rungs[c + 1] is not rungs[c]:
                model.add_implication(rungs[c + 1], rungs[c])
        y.append(rungs)

    # Membership x[i][c] = y[i][c] - y[i][c+1].
    x: list[list[Lit]] = []
    for i in range(n):
        row: list[Lit] = [0] * n_chip
        for c in range(lo[i], hi[i] + 1):
            if not allowed[i, c]:
                continue
            a, b = y[i][c], y[i][c + 1]
            if not _is_var(a) and not _is_var(b):
                row[c] = a - b
            elif not _is_var(a):
                row[c] = b.negated()   # a == 1
            elif not _is_var(b):
                row[c] = a             # b == 0
            else:
                row[c] = model.new_bool_var(f"x{i}_{c}")
                model.add(row[c] == a - b)
        x.append(row)

    # Pipeline order: s_u <= s_v on every edge, rung by rung (skipping rungs that repeat the next one).
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        yu, yv = y[u], y[v]
        for c in range(max(lo[u], lo[v]) + 1, min(hi[u], hi[v]) + 1):
            if _is_var(yu[c]) and yu[c] is not yu[c + 1] and _is_var(yv[c]):
                model.add_implication(yu[c], yv[c])

    # Memory: weights of the chiplet's ops plus the largest activation working set among them fit its SRAM.
    w, work = graph.weight_bytes, graph.work_bytes
    candidates, peak_levels = [], []
    resident: dict = {}
    for c, chip in enumerate(hw.chiplets):
        cand = np.flatnonzero(allowed[:, c])
        candidates.append(cand)
        if cand.size == 0 or int(w[cand].sum()) + int(work[cand].max()) <= chip.sram_bytes:
            continue
        # Peak working set as a ladder over the distinct work sizes above what fixed members already need:
        # level[k] = (peak_c >= sizes[k]); an op on c switches on the level of its own size.
        fixed_peak = max((int(work[i]) for i in cand.tolist() if not _is_var(x[i][c])), default=0)
        open_ops = [i for i in cand.tolist() if _is_var(x[i][c]) and work[i] > fixed_peak]
        sizes = sorted({int(work[i]) for i in open_ops})
        level = [model.new_bool_var(f"peak{c}_{k}") for k in range(len(sizes))]
        for k in range(1, len(sizes)):
            model.add_implication(level[k], level[k - 1])
        peak_levels.append((c, level, sizes))
        rank = {v: k for k, v in enumerate(sizes)}
        for i in open_ops:
            model.add_implication(x[i][c], level[rank[int(work[i])]])
        steps = [b - a for a, b in zip([fixed_peak] + sizes[:-1], sizes)]
        if hw.memory_stacks:
            for i in cand.tolist():
                if w[i]:
                    r = model.new_bool_var(f"r{i}_{c}")
                    if _is_var(x[i][c]):
                        model.add_implication(r, x[i][c])
                    resident[(i, c)] = r
            terms = [(resident[(i, c)], int(w[i])) for i in cand.tolist() if w[i]] + list(zip(level, steps))
        else:
            terms = [(x[i][c], int(w[i])) for i in cand.tolist() if w[i]] + list(zip(level, steps))
        model.add(cp_model.LinearExpr.weighted_sum([t for t, _ in terms], [k for _, k in terms])
                  <= chip.sram_bytes - fixed_peak)
    return Ladder(model, y, x, candidates, peak_levels, graph.work_bytes, resident)


def ladder_hint(ladder: Ladder, assignment: np.ndarray, streamed: np.ndarray | None = None) -> None:
    """Hint every ladder variable from a full assignment (need not be feasible) and its streamed flags."""
    model = ladder.model
    seen: set[int] = set()
    for i, s in enumerate(np.asarray(assignment).tolist()):
        for c, lit in enumerate(ladder.y[i]):
            if _is_var(lit) and lit.index not in seen:
                seen.add(lit.index)
                model.add_hint(lit, c <= s)
        for c, lit in enumerate(ladder.x[i]):
            if isinstance(lit, cp_model.IntVar) and lit.index not in seen:
                seen.add(lit.index)
                model.add_hint(lit, c == s)
    a = np.asarray(assignment)
    for c, levels, sizes in ladder.peak_levels:
        on = a == c
        peak = int(ladder.work[on].max()) if on.any() else 0
        for lit, size in zip(levels, sizes):
            model.add_hint(lit, peak >= size)
    for (i, c), lit in ladder.resident.items():
        model.add_hint(lit, bool(a[i] == c and (streamed is None or not streamed[i])))


def read_streamed(solver: cp_model.CpSolver, ladder: Ladder, assignment: np.ndarray) -> np.ndarray | None:
    """Streamed flag per op: on chiplet c with a residency literal that is false."""
    out = np.zeros(len(ladder.y), dtype=bool)
    for (i, c), lit in ladder.resident.items():
        if assignment[i] == c and not solver.boolean_value(lit):
            out[i] = True
    return out if out.any() else None


def read_assignment(solver: cp_model.CpSolver, ladder: Ladder) -> np.ndarray:
    """s_i = number of true rungs above 0."""
    out = np.empty(len(ladder.y), dtype=np.int64)
    for i, rungs in enumerate(ladder.y):
        out[i] = sum(1 for c in range(1, len(rungs)) if (solver.boolean_value(rungs[c]) if _is_var(rungs[c])
                                                          else rungs[c]))
    return out


def greedy_monotone(graph: TensorGraph, hw: Hardware, dom: StageDomains, proposal: np.ndarray) -> np.ndarray:
    """A quick pipeline-ordered assignment near the proposal (the hint): in topological order each op takes its
    proposed chiplet, raised to its predecessors' and to its domain, and pushed later while the chiplet is full.
    Always satisfies order, pins and op types; memory only when the pushes succeed."""
    n, n_chip = graph.n_ops, hw.n_chiplets
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=np.int64)
    used_w = np.zeros(n_chip, dtype=np.int64)
    peak = np.zeros(n_chip, dtype=np.int64)
    w, work = graph.weight_bytes.tolist(), graph.work_bytes.tolist()
    floor = dom.lo.copy()
    out = np.empty(n, dtype=np.int64)
    prop = np.clip(np.asarray(proposal, dtype=np.int64), 0, n_chip - 1)
    start_of = {}
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        start_of.setdefault(v, []).append(u)
    for v in range(n):
        base = max([int(floor[v]), int(prop[v])] + [int(out[u]) for u in start_of.get(v, [])])
        base = min(base, int(dom.hi[v]))
        choices = [c for c in range(base, int(dom.hi[v]) + 1) if dom.allowed[v, c]]   # hi is allowed
        pick = choices[-1]
        for c in choices:
            if used_w[c] + w[v] + max(peak[c], work[v]) <= sram[c]:
                pick = c
                break
        out[v] = pick
        used_w[pick] += w[v]
        peak[pick] = max(peak[pick], work[v])
    return out
