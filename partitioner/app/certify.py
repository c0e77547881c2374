"""The optimality certificate: CP-SAT's proven lower bound on the busiest resource (whole ops), the analytical
bound when ops may split, the latency bound under --objective latency, and keeping whichever of the search's plan
and the solve's plan scores better."""
from __future__ import annotations

import numpy as np

from partitioner.app.budget import RunBudget, wall_cap
from partitioner.app.config import CERTIFICATE_LIMIT_S
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition, check
from partitioner.sim.objective import beats
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate


def sharded_certificate(graph: TensorGraph, hw: Hardware, max_shard: int, whole: Partition | None = None
                        ) -> Partition:
    """When ops may split up to max_shard ways, CP-SAT's whole-op bound does not hold; the certificate is the
    analytical bound cost.sharded_bound_cycles (perfect balance of the least chiplet-cycles, free links, no op
    faster than its smallest piece), valid for every plan the tool can output, and not proven tight."""
    from partitioner.model.cost import sharded_bound_cycles

    bound = sharded_bound_cycles(graph, hw, max_shard)
    info = {"max_shard": max_shard}
    if whole is not None and whole.lower_bound_cycles:
        info |= {"whole_op_bound_cycles": whole.lower_bound_cycles, "whole_op_status": whole.status}
    return Partition(np.zeros(graph.n_ops, dtype=np.int64), None, 0, "analytical", lower_bound_cycles=bound,
                     info=info)


def certify(graph: TensorGraph, hw: Hardware, hint: np.ndarray, seed: int = 0,
            time_limit_s: float = CERTIFICATE_LIMIT_S, run_budget: RunBudget | None = None,
            batch: int = 1) -> Partition:
    """CP-SAT's proven lower bound on the busiest resource's cycles: how far any partition can go.
    Deterministic (one worker, deterministic time limit), so a seed gives the same certificate and partition."""
    from solver.optimize import optimize

    run_budget = run_budget or RunBudget()
    return optimize(graph, hw, time_limit_s=run_budget.limit(time_limit_s), seed=seed, hint=hint,
                    deterministic=True, wall_limit_s=wall_cap(run_budget, time_limit_s), batch=batch)


def keep_best(graph: TensorGraph, hw: Hardware, searched: Evaluation, cert: Partition, batch: int = 1,
              objective: str = "throughput") -> tuple[Evaluation, str | None]:
    """The better of the search's best and the partition CP-SAT found while proving the certificate (warm-started
    from the search's best), both scored by the simulator under the objective: a run never returns less than the
    best it evaluated. Returns (best, None) when the search's own partition wins, else (certificate's, its
    provenance)."""
    if check(graph, hw, cert.assignment, streamed=cert.streamed) or (
            np.array_equal(cert.assignment, searched.assignment)
            and np.array_equal(cert.streamed if cert.streamed is not None else False,
                               searched.partition.streamed if searched.partition.streamed is not None else False)):
        return searched, None
    solved = Evaluation(cert, simulate(graph, hw, cert, batch=batch))
    if beats(solved, searched, objective):
        return solved, f"the certificate's CP-SAT solve ({cert.status}), warm-started from the search's best"
    return searched, None


def latency_certificate(graph: TensorGraph, hw: Hardware, max_shard: int) -> Partition:
    """Under --objective latency: model.latency_bound's lower bound on one inference's latency over every plan
    with ops split up to max_shard ways, max(work at the package's rate, the critical path at the fastest
    pieces). Analytical, not proven tight; lower_bound_cycles holds the latency bound in cycles."""
    from partitioner.model.latency_bound import latency_bound

    b = latency_bound(graph, hw, max_shard)
    return Partition(np.zeros(graph.n_ops, dtype=np.int64), None, 0, "analytical", lower_bound_cycles=b.cycles,
                     info={"bound_kind": "latency", "max_shard": b.max_shard, "work_cycles": b.work_cycles,
                           "path_cycles": b.path_cycles})
