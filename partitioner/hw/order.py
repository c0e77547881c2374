"""The pipeline order of a package's chiplets: which path through the grid its ids follow.

Every plan is a chain of stages on consecutive chiplet ids, and a group of chiplets that splits an op must be of one
kind (the staged DP costs a group at its kind's rate). The row snake suits a homogeneous package, but on one whose
kinds alternate along the rows (hetero-64: a kind per column) consecutive ids change kind at almost every step, so
no group of more than one chiplet forms and the plan cannot split its large ops. Other orders keep each kind's
chiplets together:
- the column snake (down column 0, up column 1, ...): on hetero-64 it changes kind 7 times where the row snake
  changes 56 times, and every id is one hop from the next;
- kinds first: every chiplet of one kind, then every one of the next, each kind's chiplets in the order the best
  snake visits them (2 changes on a package of 3 kinds). Where a kind's chiplets are not contiguous the pipeline
  jumps a few hops between them, which the DP's link estimates and the simulator's routes charge.

`candidate_orders` lists the orders (snakes first, then kinds first in every order of the kinds), `tied_orders` those
with the fewest kind changes, which a run simulates to choose among (app/candidates.staged_in_order); loading a
package takes the first of them (`in_order(hw, "auto")`), so a homogeneous package or one whose kinds already
follow the row snake keeps its ids. `reordered` renumbers a package's chiplets (their kinds, cells and memory
stacks' attached ids), the one place a pipeline order other than the row snake is made.
"""
from __future__ import annotations

from dataclasses import replace
from itertools import permutations

from partitioner.hw.hardware import Hardware

ORDERS = ("rows", "columns", "rows-reversed", "columns-reversed")
"""The snakes: rows (row 0 left to right, row 1 right to left, ...); columns (column 0 top to bottom, column 1
bottom to top, ...); -reversed: the same path from its other end."""
NAMED = ("auto", "kinds", *ORDERS)
"""What a hardware file's `pipeline_order` may say: auto (the first of `tied_orders`), kinds (kinds first, in the
order the best snake meets them), or a snake."""
KIND_PERMUTATIONS_UP_TO = 3
"""Kinds first in every order of the kinds up to this many kinds (3! = 6 orders, each a staged DP in a run); beyond,
the order the best snake meets them and its reverse."""


def snake_cells(rows: int, cols: int, order: str) -> list[tuple[int, int]]:
    """The (row, col) cells of a rows x cols grid in the order the snake visits them."""
    if order.endswith("-reversed"):
        return snake_cells(rows, cols, order[:-len("-reversed")])[::-1]
    if order == "rows":
        return [(r, c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]
    if order == "columns":
        return [(r if c % 2 == 0 else rows - 1 - r, c) for c in range(cols) for r in range(rows)]
    raise ValueError(f"unknown pipeline order {order!r}; expected one of {', '.join(ORDERS)}")


def cell_ids(hw: Hardware, cells: list[tuple[int, int]]) -> list[int]:
    """hw's chiplet ids at `cells`, in that order."""
    at = {pos: i for i, pos in enumerate(hw.positions)}
    return [at[tuple(cell)] for cell in cells]


def path_ids(hw: Hardware, order: str) -> list[int]:
    """hw's chiplet ids in the order the snake visits their cells."""
    return cell_ids(hw, snake_cells(hw.rows, hw.cols, order))


def kind_changes(hw: Hardware, ids: list[int]) -> int:
    """How many consecutive pairs of `ids` are chiplets of different kinds (different Chiplet values)."""
    return sum(hw.chiplets[a] != hw.chiplets[b] for a, b in zip(ids, ids[1:]))


def on_a_grid(hw: Hardware) -> bool:
    """Whether hw's ids may follow another order: a flat mesh or torus (a chain, ring, all-to-all or packages on a
    board keep theirs)."""
    return hw.topology in ("mesh", "torus") and hw.package_level is None


def best_snake(hw: Hardware) -> list[int]:
    """The ids along the snake of ORDERS with the fewest kind changes (ties: the first)."""
    return min((path_ids(hw, o) for o in ORDERS), key=lambda ids: kind_changes(hw, ids))


def kinds_first(hw: Hardware, kinds: tuple | None = None) -> list[int]:
    """Every chiplet of the first of `kinds` (Chiplet values), then of the next, ..., each kind's chiplets in the
    order `best_snake` visits them; `kinds` None: the order that snake meets them."""
    base = best_snake(hw)
    kinds = tuple(dict.fromkeys(hw.chiplets[i] for i in base)) if kinds is None else kinds
    return sorted(base, key=lambda i: kinds.index(hw.chiplets[i]))


def candidate_orders(hw: Hardware) -> list[tuple[str, list[int]]]:
    """(name, ids in pipeline order) of every order a heterogeneous grid may take, distinct ones only (the first
    name kept): the snakes of ORDERS, then `kinds_first` in every order of the kinds (KIND_PERMUTATIONS_UP_TO), the
    order the best snake meets them first. [("rows", ...)] on a homogeneous package and off a grid."""
    if not on_a_grid(hw) or hw.homogeneous:
        return [("rows", path_ids(hw, "rows") if on_a_grid(hw) else list(range(hw.n_chiplets)))]
    met = list(dict.fromkeys(hw.chiplets[i] for i in best_snake(hw)))
    seqs = list(permutations(met)) if len(met) <= KIND_PERMUTATIONS_UP_TO else [tuple(met), tuple(met[::-1])]
    out: list[tuple[str, list[int]]] = []
    for name, ids in [(o, path_ids(hw, o)) for o in ORDERS] + [
            ("kinds: " + ", ".join(k.kind for k in seq), kinds_first(hw, seq)) for seq in seqs]:
        if all(ids != other for _, other in out):
            out.append((name, ids))
    return out


def tied_orders(hw: Hardware) -> list[tuple[str, list[int]]]:
    """The `candidate_orders` with the fewest kind changes, in candidate order."""
    cands = candidate_orders(hw)
    least = min(kind_changes(hw, ids) for _, ids in cands)
    return [(name, ids) for name, ids in cands if kind_changes(hw, ids) == least]


def reordered(hw: Hardware, ids: list[int]) -> Hardware:
    """hw with its chiplets renumbered: new chiplet i is hw's chiplet ids[i] (same kind, same cell of the grid);
    memory stacks stay wired to the same cells. Routing, links and every cost follow the cells (Hardware.positions),
    so only the pipeline order changes. hw itself when ids is its own order."""
    if list(ids) == list(range(hw.n_chiplets)):
        return hw
    new_id = {old: new for new, old in enumerate(ids)}
    stacks = tuple(replace(st, attached=tuple(sorted(new_id[a] for a in st.attached))) for st in hw.memory_stacks)
    return replace(hw, chiplets=tuple(hw.chiplets[i] for i in ids), memory_stacks=stacks,
                   places=tuple(hw.positions[i] for i in ids))


def in_order(hw: Hardware, order: str) -> Hardware:
    """hw with its ids along `order` (one of NAMED): "auto" the first of `tied_orders`, "kinds" `kinds_first` in
    the order the best snake meets the kinds, or a snake."""
    if order in ORDERS:
        return hw if order == "rows" and hw.places is None else reordered(hw, path_ids(hw, order))
    if order == "auto":
        return reordered(hw, tied_orders(hw)[0][1])
    if order == "kinds":
        return reordered(hw, kinds_first(hw))
    raise ValueError(f"unknown pipeline order {order!r}; expected one of {', '.join(NAMED)}")


def order_name(hw: Hardware) -> str:
    """What hw's ids follow: the name of that order among `candidate_orders` ("rows" off a grid), else "cells"."""
    if hw.places is None:
        return "rows"
    own = list(range(hw.n_chiplets))
    return next((name for name, ids in candidate_orders(hw) if ids == own), "cells")
