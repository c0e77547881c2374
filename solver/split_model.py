"""The CP-SAT encoding of split plans, shared by the staged certificate (solver/staged_opt.py) and the repair of
split proposals (solver/split_repair.py).

Every op i takes one *placement* p = (s, d): its d pieces run on chiplets s..s+d-1 (sharding.py; d = 1 is the whole
op on chiplet s). A Boolean z[i][p] per candidate placement, exactly one per op. With S_i = sum s z and
E_i = sum (s + d - 1) z (the group's first and last chiplet), the rules of partition.check become:

  * pipeline order between groups (sharding.check_groups), per edge u -> v: either both ops share their group
    (same[e] => S_u = S_v and E_u = E_v), or E_u <= S_v; as one linear row E_u <= S_v + (max_shard - 1) same[e].
    `same` exists only where u and v have a common candidate group of two or more chiplets (a shared single
    chiplet already satisfies E_u <= S_v);
  * memory per chiplet c: the pieces on c (placements covering c) hold their weights (1/d of split weights,
    sharding.piece) plus the largest working set among them, written as partition.memory_use counts it, with the
    peak as a ladder over distinct work sizes (as solver/_ladder.py does for whole ops);
  * pins: a pinned op has only the placement (pin, 1); op types: a placement covers only chiplets that can run
    the op; a piece that alone overflows a chiplet of its group is no candidate.

`mode` says which side the model must err on. "bound" (the certificate) is a relaxation of every plan check()
accepts, so its optimum is a valid lower bound: a piece's working set is the smallest over the axes it may take in
any context (sharding.possible_axes), and with a memory tier weights count 0 (any of them may stream). "exact"
(repair) is a restriction, so every plan it returns passes check(): the largest working set over those axes, every
weight resident (a restriction: repaired plans never stream, though check() now accepts split ops that stream).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
from ortools.sat.python import cp_model

from partitioner.model.cost import cheapest_piece_cycles
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.sharding import piece, possible_axes


@dataclass(frozen=True)
class PieceTables:
    """Per degree d (index d - 1): cycles[d-1][kind] one piece's cycles on each chiplet kind (the cheapest axis),
    weight[d-1] and work[d-1] one piece's SRAM bytes, per op. `kind_of[c]` indexes the kinds."""

    cycles: tuple[tuple[np.ndarray, ...], ...]
    weight: tuple[np.ndarray, ...]
    work: tuple[np.ndarray, ...]
    kind_of: np.ndarray

    def chiplet_cycles(self, d: int, c: int) -> np.ndarray:
        return self.cycles[d - 1][int(self.kind_of[c])]

    def min_work_cycles(self) -> np.ndarray:
        """The fewest chiplet-cycles each op can cost: min over d and kinds of d x piece cycles."""
        return np.min([d * np.min(self.cycles[d - 1], axis=0) for d in range(1, len(self.cycles) + 1)], axis=0)


def piece_tables(graph: TensorGraph, hw: Hardware, max_shard: int, mode: str) -> PieceTables:
    kinds = list(dict.fromkeys(hw.chiplets))
    kind_of = np.array([kinds.index(c) for c in hw.chiplets], dtype=np.int64)
    stream_free = mode == "bound" and bool(hw.memory_stacks)
    pick = np.minimum if mode == "bound" else np.maximum
    cycles, weight, work = [], [], []
    for d in range(1, max_shard + 1):
        cycles.append(tuple(np.asarray(cheapest_piece_cycles(graph, k, d), dtype=np.int64) for k in kinds))
        if d == 1:
            w, wk = graph.weight_bytes.copy(), graph.work_bytes.copy()
        else:
            w = np.array([piece(op, d).weight_bytes for op in graph.ops], dtype=np.int64)
            wk = np.array([piece(op, d).work_bytes for op in graph.ops], dtype=np.int64)
            for i, op in enumerate(graph.ops):
                for axis in possible_axes(op)[1:]:
                    wk[i] = pick(wk[i], piece(op, d, axis).work_bytes)
                    w[i] = pick(w[i], piece(op, d, axis).weight_bytes)   # a spatial Conv holds all its filters
        weight.append(np.zeros_like(w) if stream_free else np.asarray(w, dtype=np.int64))
        work.append(np.asarray(wk, dtype=np.int64))
    return PieceTables(tuple(cycles), tuple(weight), tuple(work), kind_of)


@dataclass
class SplitModel:
    model: cp_model.CpModel
    place: list[list[tuple[int, int, cp_model.IntVar]]]   # per op: (start, degree, literal)
    same: dict[int, cp_model.IntVar]                       # edge id -> "both ops share their group"
    levels: list[tuple[int, list, list[int]]]              # (chiplet, peak-level literals, their work sizes)
    tables: PieceTables

    def members(self, c: int) -> list[tuple[int, int, cp_model.IntVar]]:
        """(op, degree, literal) of every placement with a piece on chiplet c."""
        return [(i, d, z) for i, ps in enumerate(self.place) for s, d, z in ps if s <= c < s + d]


def candidates(graph: TensorGraph, hw: Hardware, tables: PieceTables, max_shard: int,
               pins: Mapping[int, int] | None = None, end_min: np.ndarray | None = None,
               start_max: np.ndarray | None = None, cycle_cap: int | None = None) -> list[list[tuple[int, int]]]:
    """Candidate placements (s, d) per op: pins, op types and a piece that fits alone (module docstring); with
    `end_min`/`start_max` only groups ending at or after end_min[i] and starting at or before start_max[i]; with
    `cycle_cap` only pieces of at most that many cycles on each of their chiplets."""
    n_chip = hw.n_chiplets
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=np.int64)
    runs = np.array([[op.op_type not in c.unsupported_ops for c in hw.chiplets] for op in graph.ops], dtype=bool)
    pins = pins or {}
    out: list[list[tuple[int, int]]] = []
    for i in range(graph.n_ops):
        if i in pins:
            out.append([(int(pins[i]), 1)])
            continue
        mine = []
        for d in range(1, max_shard + 1):
            need = int(tables.weight[d - 1][i] + tables.work[d - 1][i])
            for s in range(0, n_chip - d + 1):
                e = s + d - 1
                if (end_min is not None and e < end_min[i]) or (start_max is not None and s > start_max[i]):
                    continue
                if not runs[i, s:e + 1].all() or (sram[s:e + 1] < need).any():
                    continue
                if cycle_cap is not None and any(tables.chiplet_cycles(d, c)[i] > cycle_cap for c in range(s, e + 1)):
                    continue
                mine.append((s, d))
        out.append(mine)
    return out


def build(graph: TensorGraph, hw: Hardware, tables: PieceTables, cands: list[list[tuple[int, int]]],
          max_shard: int) -> SplitModel:
    """The model of the module docstring over the given candidate placements (each op needs one)."""
    model = cp_model.CpModel()
    place: list[list[tuple[int, int, cp_model.IntVar]]] = []
    for i, ps in enumerate(cands):
        lits = [(s, d, model.new_bool_var(f"z{i}_{s}_{d}")) for s, d in ps]
        model.add_exactly_one([z for _, _, z in lits])
        place.append(lits)
    start = [cp_model.LinearExpr.weighted_sum([z for _, _, z in ps], [s for s, _, _ in ps]) for ps in place]
    end = [cp_model.LinearExpr.weighted_sum([z for _, _, z in ps], [s + d - 1 for s, d, _ in ps]) for ps in place]
    lo_start = [min(s for s, _ in ps) for ps in cands]
    hi_end = [max(s + d - 1 for s, d in ps) for ps in cands]

    # Pipeline order between groups: the same group, or u's group ends where v's begins at the latest.
    same: dict[int, cp_model.IntVar] = {}
    for e, (u, v) in enumerate(zip(graph.edge_src.tolist(), graph.edge_dst.tolist())):
        if hi_end[u] <= lo_start[v]:
            continue
        shared = {p for p in cands[u] if p[1] > 1} & {p for p in cands[v] if p[1] > 1}
        if not shared:
            model.add(end[u] <= start[v])
            continue
        sm = model.new_bool_var(f"same{e}")
        model.add(end[u] <= start[v] + (max_shard - 1) * sm)
        model.add(start[u] == start[v]).only_enforce_if(sm)
        model.add(end[u] == end[v]).only_enforce_if(sm)
        same[e] = sm

    # Memory: the pieces' weights plus the largest working set among them fit each chiplet's SRAM.
    covering: list[list[tuple[cp_model.IntVar, int, int]]] = [[] for _ in range(hw.n_chiplets)]
    for i, ps in enumerate(place):
        for s, d, z in ps:
            w, wk = int(tables.weight[d - 1][i]), int(tables.work[d - 1][i])
            for c in range(s, s + d):
                covering[c].append((z, w, wk))
    levels = []
    for c, items in enumerate(covering):
        cap = hw.chiplets[c].sram_bytes
        if not items:
            continue
        by_op_weight = sum(w for _, w, _ in items)   # an upper bound on what c can hold: skip when even that fits
        if by_op_weight + max(wk for _, _, wk in items) <= cap:
            continue
        sizes = sorted({wk for _, _, wk in items if wk > 0})
        level = [model.new_bool_var(f"peak{c}_{k}") for k in range(len(sizes))]
        for k in range(1, len(sizes)):
            model.add_implication(level[k], level[k - 1])
        rank = {size: k for k, size in enumerate(sizes)}
        for z, _, wk in items:
            if wk > 0:
                model.add_implication(z, level[rank[wk]])
        steps = [b - a for a, b in zip([0] + sizes[:-1], sizes)]
        terms = [(z, w) for z, w, _ in items if w] + list(zip(level, steps))
        model.add(cp_model.LinearExpr.weighted_sum([t for t, _ in terms], [k for _, k in terms]) <= cap)
        levels.append((c, level, sizes))
    return SplitModel(model, place, same, levels, tables)


def hint(sm: SplitModel, graph: TensorGraph, assignment: np.ndarray, shard: np.ndarray) -> None:
    """Hint every variable from a plan (need not be a candidate everywhere: those ops get no hint)."""
    a, k = np.asarray(assignment, dtype=np.int64), np.asarray(shard, dtype=np.int64)
    for i, ps in enumerate(sm.place):
        for s, d, z in ps:
            sm.model.add_hint(z, bool(s == a[i] and d == k[i]))
    for e, lit in sm.same.items():
        u, v = int(graph.edge_src[e]), int(graph.edge_dst[e])
        sm.model.add_hint(lit, bool(a[u] == a[v] and k[u] == k[v] and k[u] > 1))
    for c, level, sizes in sm.levels:
        on = (a <= c) & (c < a + k)
        peak = max((int(sm.tables.work[int(k[i]) - 1][i]) for i in np.flatnonzero(on).tolist()), default=0)
        for lit, size in zip(level, sizes):
            sm.model.add_hint(lit, peak >= size)


def read(solver: cp_model.CpSolver, sm: SplitModel) -> tuple[np.ndarray, np.ndarray]:
    """(assignment, shard) of the solver's plan: each op's chosen placement."""
    n = len(sm.place)
    a, k = np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)
    for i, ps in enumerate(sm.place):
        for s, d, z in ps:
            if solver.boolean_value(z):
                a[i], k[i] = s, d
                break
    return a, k
