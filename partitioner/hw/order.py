"""The pipeline order of a package's chiplets: which path through the grid its ids follow.

Every plan is a chain of stages on consecutive chiplet ids, and a group of chiplets that splits an op must be of one
kind (the staged DP costs a group at its kind's rate). The row snake suits a homogeneous package, but on one whose
kinds alternate along the rows (hetero-64: a kind per column) consecutive ids change kind at almost every step, so
no group of more than one chiplet can form and the plan cannot split its large ops. Another path through the grid
can keep each kind's chiplets together: on hetero-64 the column snake (down column 0, up column 1, ...) changes
kind 7 times where the row snake changes 56 times.

`ORDERS` are the paths a package may take (each visits neighbouring cells one after another); `kind_changes` counts
how often consecutive ids change kind; `best_order` picks the path with the fewest (ties: the row snake, so a
homogeneous package or one whose kinds already follow the rows keeps its ids); `reordered` renumbers a package's
chiplets along a path (its chiplets, places and memory stacks' attached ids), the one place a pipeline order
other than the row snake is made.
"""
from __future__ import annotations

from dataclasses import replace

from partitioner.hw.hardware import Hardware

ORDERS = ("rows", "columns", "rows-reversed", "columns-reversed")
"""rows: the row snake (row 0 left to right, row 1 right to left, ...); columns: the column snake (column 0 top to
bottom, column 1 bottom to top, ...); -reversed: the same path from its other end."""


def snake_cells(rows: int, cols: int, order: str) -> list[tuple[int, int]]:
    """The (row, col) cells of a rows x cols grid in the order the path visits them."""
    if order.endswith("-reversed"):
        return snake_cells(rows, cols, order[:-len("-reversed")])[::-1]
    if order == "rows":
        return [(r, c if r % 2 == 0 else cols - 1 - c) for r in range(rows) for c in range(cols)]
    if order == "columns":
        return [(r if c % 2 == 0 else rows - 1 - r, c) for c in range(cols) for r in range(rows)]
    raise ValueError(f"unknown pipeline order {order!r}; expected one of {', '.join(ORDERS)}")


def path_ids(hw: Hardware, order: str) -> list[int]:
    """hw's chiplet ids in the order the path visits their cells (the identity for "rows" on a row-snake package)."""
    at = {pos: i for i, pos in enumerate(hw.positions)}
    return [at[cell] for cell in snake_cells(hw.rows, hw.cols, order)]


def kind_changes(hw: Hardware, ids: list[int]) -> int:
    """How many consecutive pairs of `ids` are chiplets of different kinds (different Chiplet values)."""
    return sum(hw.chiplets[a] != hw.chiplets[b] for a, b in zip(ids, ids[1:]))


def reordered(hw: Hardware, ids: list[int]) -> Hardware:
    """hw with its chiplets renumbered: new chiplet i is hw's chiplet ids[i] (same kind, same cell of the grid);
    memory stacks stay wired to the same cells. Routing, links and every cost follow the cells (Hardware.positions),
    so only the pipeline order changes."""
    new_id = {old: new for new, old in enumerate(ids)}
    stacks = tuple(replace(st, attached=tuple(sorted(new_id[a] for a in st.attached))) for st in hw.memory_stacks)
    return replace(hw, chiplets=tuple(hw.chiplets[i] for i in ids), memory_stacks=stacks,
                   places=tuple(hw.positions[i] for i in ids))


def tied_orders(hw: Hardware) -> list[str]:
    """The paths of `ORDERS` along which the kinds change least, in ORDERS' order; ["rows"] on a homogeneous
    package and off a flat grid (a chain, ring, all-to-all or packages on a board keep their ids). A path and its
    reverse always tie: they differ in which kind the pipeline starts on, which a run settles by simulating both
    (app/candidates.staged_in_order)."""
    if hw.topology not in ("mesh", "torus") or hw.package_level is not None or hw.homogeneous:
        return ["rows"]
    changes = {order: kind_changes(hw, path_ids(hw, order)) for order in ORDERS}
    return [order for order in ORDERS if changes[order] == min(changes.values())]


def best_order(hw: Hardware) -> str:
    """The first of `tied_orders`: "rows" unless another path changes kind strictly less."""
    return tied_orders(hw)[0]


def order_of(hw: Hardware) -> str | None:
    """The name of the path hw's ids follow ("rows" off a grid), or None if it is none of `ORDERS`."""
    if hw.places is None:
        return "rows"
    return next((o for o in ORDERS if snake_cells(hw.rows, hw.cols, o) == list(hw.places)), None)


def in_order(hw: Hardware, order: str) -> Hardware:
    """hw with its ids along `order` ("auto": `best_order`); hw itself when that is the path its ids follow."""
    if order == "auto":
        order = best_order(hw)
    if order == "rows" and hw.places is None:
        return hw
    ids = path_ids(hw, order)
    return hw if ids == list(range(hw.n_chiplets)) else reordered(hw, ids)
