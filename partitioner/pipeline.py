"""propose -> repair -> simulate: the one evaluation every method and the RL reward go through."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware
from partitioner.partition import Partition
from partitioner.report import Report
from partitioner.simulator import simulate
from solver.repair import repair


@dataclass(frozen=True)
class Evaluation:
    """A proposal after repair, and its simulated report."""

    partition: Partition
    report: Report

    @property
    def assignment(self) -> np.ndarray:
        return self.partition.assignment

    @property
    def throughput(self) -> float:
        return self.report.throughput_per_s


def evaluate(graph: TensorGraph, hw: Hardware, proposal: np.ndarray, *, time_limit_s: float = 5.0, seed: int = 0,
             pinned: Mapping[int, int] | None = None, trace: bool = False) -> Evaluation:
    """Repair a (possibly invalid) proposal against the hardware, then simulate it. The reward is its throughput."""
    partition = repair(graph, hw, np.asarray(proposal, dtype=np.int64), time_limit_s=time_limit_s, seed=seed,
                       pinned=pinned)
    return Evaluation(partition, simulate(graph, hw, partition, trace=trace))
