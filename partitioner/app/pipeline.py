"""propose -> repair -> simulate: the one evaluation every method and the RL reward go through.

Application glue: it joins solver/ (repair) and the simulator, so it sits on the top floor with the CLI; policies
receive it as an injected `evaluate_fn` / `reward_fn` and never import it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate
from solver.repair import repair


def evaluate(graph: TensorGraph, hw: Hardware, proposal: np.ndarray, *, time_limit_s: float = 5.0, seed: int = 0,
             pinned: Mapping[int, int] | None = None, trace: bool = False, batch: int = 1) -> Evaluation:
    """Repair a (possibly invalid) proposal against the hardware, then simulate it. The reward is its throughput.
    batch: inferences per read of a weight streamed from the memory tier."""
    partition = repair(graph, hw, np.asarray(proposal, dtype=np.int64), time_limit_s=time_limit_s, seed=seed,
                       pinned=pinned, batch=batch)
    return Evaluation(partition, simulate(graph, hw, partition, trace=trace, batch=batch))


class PipelineReward:
    """The real training reward: CP-SAT repair then simulation (`evaluate`), as policies.ppo.RewardFn."""

    def __init__(self, time_limit_s: float = 2.0, seed: int = 0) -> None:
        self.time_limit_s, self.seed = time_limit_s, seed

    def __call__(self, graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> tuple[float, np.ndarray]:
        ev = evaluate(graph, hw, assignment, time_limit_s=self.time_limit_s, seed=self.seed)
        return float(ev.throughput), np.asarray(ev.assignment, dtype=np.int64)
