"""How a trainer hands its rollouts' evaluations out: one map function, injected, so policies/ knows nothing of
process pools or Ray (partitioner/app/backend.py provides them; tests pass `serial_map`).

    map_fn(fn, items) -> [fn(*args) for args in items]      results in the order of `items`

The trainer maps `reward_or_none` over (reward_fn, graph, hw, proposal) tuples. Every RNG draw and every update
stays in the driver, and evaluations are pure, so a run gives the same rewards in the same order on any backend.
This module is light (numpy only) because each worker process imports it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from partitioner.core.errors import UserError

MapFn = Callable[[Callable, Sequence[tuple]], list]


def serial_map(fn: Callable, items: Sequence[tuple]) -> list:
    """The default map: one evaluation after another in this process."""
    return [fn(*args) for args in items]


def reward_or_none(reward_fn: Callable, graph, hw, assignment: np.ndarray) -> tuple[float, np.ndarray | None] | UserError:
    """(throughput, repaired assignment), or the UserError of a proposal that cannot be repaired (returned, not
    raised, so one bad proposal does not lose the others' results; the trainer decides what a failure means)."""
    try:
        thr, repaired = reward_fn(graph, hw, assignment)
    except UserError as exc:
        return exc
    return float(thr), None if repaired is None else np.asarray(repaired, dtype=np.int64)
