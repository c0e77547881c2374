"""The certificate of a run whose ops may split: the tighter of the analytical bound and CP-SAT's staged bound
(solver/staged_opt.py), and the plan that CP-SAT solve found, which competes with the run's best.

Both bounds hold for every plan the tool can output with ops split up to max_shard ways (whole-op plans and
streamed weights included), so their maximum in cycles (the smaller throughput) is a valid certificate.
"""
from __future__ import annotations

import math

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition, check
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate
from partitioner.app.budget import RunBudget

STAGED_CERT_MAX_OPS = 2000
"""Above this many ops the staged CP-SAT model is not built (its ancestor table is n x n) and the analytical bound
stands alone."""


def staged_certificate(graph: TensorGraph, hw: Hardware, max_shard: int, analytical: Partition,
                       hints: list[Partition], *, seed: int = 0, time_limit_s: float = 10.0,
                       run_budget: RunBudget | None = None, batch: int = 1) -> tuple[Partition, Evaluation | None]:
    """(certificate, the CP-SAT plan's evaluation or None). `analytical` is run.sharded_certificate's Partition
    (its info carries the whole-op bound); the result keeps that info and adds the staged solve's: status, gap,
    bound_kind ("staged" when CP-SAT's bound is used, else "analytical" with the staged solve's figures)."""
    from solver.optimize import DETERMINISTIC_WALL_FACTOR
    from solver.staged_opt import staged_optimize

    run_budget = run_budget or RunBudget()
    if graph.n_ops > STAGED_CERT_MAX_OPS or run_budget.stop_reason() is not None:
        return analytical, None
    wall = max(min(DETERMINISTIC_WALL_FACTOR * time_limit_s + 10.0, run_budget.search_left()), 0.1)
    solved = staged_optimize(graph, hw, max_shard, hints=hints, time_limit_s=run_budget.limit(time_limit_s),
                             seed=seed, wall_limit_s=wall)
    staged = {"staged_status": solved.status, "staged_bound_cycles": solved.lower_bound_cycles,
              "staged_objective_cycles": solved.objective_cycles, "staged_gap": solved.gap,
              "staged_solve_time_s": solved.solve_time_s, "staged_placements": solved.info["placements"],
              "staged_wall_capped": solved.info["wall_capped"], "staged_bound_source": solved.info["bound_source"]}
    info = dict(analytical.info) | staged | {"analytical_cycles": analytical.lower_bound_cycles}
    plan = None
    if solved.info["plan_valid"] and not check(graph, hw, solved):
        plan = Evaluation(solved, simulate(graph, hw, solved, batch=batch))   # traced only if it wins
    if solved.lower_bound_cycles > math.ceil(analytical.lower_bound_cycles):   # more than integer rounding
        cert = Partition(solved.assignment, None, 0, solved.status, solved.solve_time_s,
                         lower_bound_cycles=solved.lower_bound_cycles, objective_cycles=solved.objective_cycles,
                         gap=solved.gap, info=info | {"bound_kind": "staged"}, shard=solved.shard)
    else:
        cert = Partition(np.zeros(graph.n_ops, dtype=np.int64), None, 0, "analytical",
                         lower_bound_cycles=analytical.lower_bound_cycles, info=info | {"bound_kind": "analytical"})
    return cert, plan


def is_staged(cert: Partition | None) -> bool:
    return cert is not None and cert.info.get("bound_kind") == "staged"


def staged_solve_line(cert: Partition) -> str:
    """One sentence on the staged CP-SAT solve: status, bound, best plan in its model, gap, time."""
    info = cert.info
    if "staged_status" not in info:
        return ""
    st = info["staged_status"]
    if st not in ("optimal", "feasible"):
        return (f"CP-SAT's model over split plans (solver/staged_opt.py) found no solution ({st}) in its time limit, "
                f"so it proves nothing beyond the analytical bound.")
    head = (f"CP-SAT's model over split plans (solver/staged_opt.py: every op's group and shard degree up to "
            f"{info['max_shard']}, each chiplet's piece cycles, memory relaxed) ran {info['staged_solve_time_s']:.1f} s "
            f"on {info['staged_placements']:,} placements: ")
    if st == "optimal":
        return head + (f"optimal, the busiest chiplet needs at least {info['staged_bound_cycles']:,.0f} cycles per "
                       f"inference in every such plan (proven tight in its model).")
    return head + (f"not proven optimal within its time limit; its bound is {info['staged_bound_cycles']:,.0f} "
                   f"cycles, its best plan {info['staged_objective_cycles']:,.0f} cycles in its model, a gap of "
                   f"{100 * (info['staged_gap'] or 0.0):.1f}%.")


_PROOF = {"cp-sat": "CP-SAT proves", "analytical": "the analytical bound shows",
          "windows": "pipeline order proves (an op's ancestors fill the chiplets up to its group's last one, its "
                     "descendants those from its first; below this many cycles some op has no room: "
                     "solver/staged_opt.window_bound)"}


def staged_certificate_markdown(cert: Partition, bound_per_s: float, thr: float) -> str:
    """The report's certificate section when CP-SAT's staged bound is the certificate."""
    return (f"\n## Optimality certificate\n\nWhat it bounds: the simulated steady-state throughput of every plan this "
            f"tool can output with ops split up to {cert.info['max_shard']} ways (any groups, shard degrees and "
            f"stages in pipeline order; whole-op plans and streamed weights included). In the simulator a chiplet runs "
            f"one piece at a time, so the cycles per inference are at least the busiest chiplet's piece cycles; "
            f"{_PROOF[cert.info['staged_bound_source']]} that in every such plan some chiplet has at least "
            f"{cert.lower_bound_cycles:,.0f} cycles per inference (each piece on its cheapest axis; links, "
            f"collectives and latency not charged), so none exceeds {bound_per_s:,.1f} inferences/s. "
            f"{staged_solve_line(cert)} The analytical bound (perfect balance) is "
            f"{cert.info['analytical_cycles']:,.0f} cycles. This partition reaches {thr:,.1f}/s: at least "
            f"{100 * thr / bound_per_s:.1f}% of the best possible.\n")
