"""What `partition MODEL.onnx` does, as functions the CLI and benchmarks call: load, search, certify, write.

Sits on top of the pipeline with cli.py: it may import every stage and the policies, and nothing imports it
except cli.py and benchmarks/.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import PRESETS, Hardware
from partitioner.hw.toml import load_hardware
from partitioner.app.memtier import (
    batch_from_document, memory_tier_document, memory_tier_markdown, streamed_from_document)
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import Partition, check
from partitioner.app import limits
from partitioner.core.units import si
from partitioner.app.budget import CERTIFICATE_MIN_S, Recorder, RunBudget, Stopped
from partitioner.app.outset import output_set
from partitioner.app.staged_cert import (is_staged, staged_certificate, staged_certificate_markdown,
                                          staged_solve_line)
from partitioner.app.pipeline import evaluate
from partitioner.app.markdown import report_markdown
from partitioner.app.plot import plot_partition
from partitioner.core.files import write_json, write_text
from partitioner.sim.report import Evaluation
from partitioner.sim.trace import write_chrome_trace
from partitioner.model.cost import keep_column, ring_links
from partitioner.sim.simulator import simulate, throughput_ceiling
from partitioner.model.sharding import expand, groups, layout
from partitioner.plan.splits import dp_partition, greedy_partition
from partitioner.plan.staged_dp import auto_max_shard, staged_candidates
from policies.baselines import SearchResult, anneal, random_search

METHODS = ("rl", "random", "greedy", "dp", "anneal", "exact", "learned")
SEARCH_METHODS = ("rl", "random", "anneal", "learned")
DEFAULT_BUDGET = 64
DEFAULT_REPAIR_LIMIT_S = 5.0
DEFAULT_EXACT_LIMIT_S = 30.0
CERTIFICATE_LIMIT_S = 10.0

OnEval = Callable[[int, float], None]


@dataclass(frozen=True)
class RunConfig:
    """Everything one `partition MODEL.onnx` run depends on; written to the output directory as config.json."""

    model: str
    chiplets: int | None = None
    hardware: str | None = None
    method: str | None = None
    """None picks default_method() (anneal)."""
    budget: int | None = None
    """Evaluated partitions for rl, random and anneal; None means DEFAULT_BUDGET."""
    seed: int = 0
    out: str = "out"
    input_shapes: dict = field(default_factory=dict)
    precision: str = "fp16"
    time_limit_s: float | None = None
    """CP-SAT seconds per repair; for `exact`, for the whole optimisation."""
    policy: str | None = None
    certificate: bool = True
    """Also ask CP-SAT for a proven lower bound on the bottleneck (the optimality certificate)."""
    granularity: str = "fused"
    """The unit of partitioning: fused ops, ONNX nodes or layers (partitioner/frontend/granularity.py)."""
    phase: str | None = None
    """Decoders: prefill or decode (one token with a KV cache of `context` tokens); None: a whole-sequence pass."""
    context: int | None = None
    max_time_s: float | None = None
    """Wall-clock bound on the whole run (search, certificate, writing); None: unbounded. When it runs out, or on
    Ctrl-C, the run writes the best valid partition found so far, marked interrupted (partitioner/app/budget.py)."""
    batch: int = 1
    """Inferences per read of a weight streamed from the memory tier (`--batch`)."""
    memory_tier: bool = True
    """False (`--no-memory-tier`) drops the package's memory stacks: every weight must fit in SRAM."""
    max_shard: int | None = None
    """Largest shard degree (group size) an op may split into; 1 keeps every op whole (no intra-op sharding);
    None means staged_dp.auto_max_shard(chiplets): min(16, max(4, chiplets // 8))."""
    split_budget: int = 0
    """Evaluations of local search over staged plans (policies/split_search.py) from the staged DP plans, by the
    run's method (anneal, random or learned; other methods use anneal); 0: none (`--split-budget`)."""


@dataclass(frozen=True)
class Outcome:
    """A finished run: the best partition, its report, how it was found and what was written."""

    model: str
    graph: TensorGraph
    hw: Hardware
    method: str
    best: Evaluation
    evaluations: int
    wall_s: float
    history: tuple[tuple[int, float], ...] = ()
    certificate: Partition | None = None
    files: tuple[str, ...] = ()
    found_by: str | None = None
    """Which step produced `best` when it is not the method's own search (the certificate's CP-SAT solve)."""
    interrupted: str | None = None
    """Why the search stopped before its budget of evaluations (Ctrl-C, --max-time), or None when it finished."""
    batch: int = 1

    @property
    def solver_bound_throughput_per_s(self) -> float | None:
        c = self.certificate
        if c is None or not c.lower_bound_cycles:
            return None
        return self.hw.clock_hz / c.lower_bound_cycles


def load_model(path: str, input_shapes: dict | None = None, precision: str = "fp32", *, granularity: str = "fused",
               phase: str | None = None, context: int | None = None) -> TensorGraph:
    return load_onnx(path, input_shapes=input_shapes or None, precision=precision, granularity=granularity,
                     phase=phase, context=context)


STAGED_MAX_OPS = 2000
"""Above this many ops a run skips the staged (sharded) DP plans: their DP grows with ops x chiplets x group sizes,
and the 10,000-MatMul fan-out must still plan in bounded time."""


def default_method(n_ops: int | None = None) -> str:
    """anneal: at the default budget it matches or beats rl and learned on every measured case (benchmarks/RESULTS.md,
    "Method comparison" and "Learned move selection (issue 12)"), and in the split-plan space learned is not
    >= 1.05x annealing on any measured case ("Learned search in the split-plan space"); its per-evaluation cost
    stays one repair + one simulation at any graph size, and keep_best adds CP-SAT's solve and the staged plans."""
    return "anneal"


def search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int, time_limit_s: float | None,
           policy: str | None = None, on_eval: OnEval | None = None, run_budget: RunBudget | None = None,
           batch: int = 1) -> SearchResult:
    """Run one method; every method's partitions go through the same repair + simulate. With `run_budget`, the
    search stops when it runs out or on Ctrl-C and returns the best evaluated so far (see `bounded_search`)."""
    if run_budget is not None:
        return bounded_search(graph, hw, method, budget=budget, seed=seed, time_limit_s=time_limit_s,
                              policy=policy, on_eval=on_eval, run_budget=run_budget, batch=batch)[0]
    return _search(graph, hw, method, budget=budget, seed=seed, time_limit_s=time_limit_s, policy=policy,
                   on_eval=on_eval, run_budget=RunBudget(), wrap=lambda fn: fn, batch=batch)


def bounded_search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int,
                   time_limit_s: float | None, policy: str | None = None, on_eval: OnEval | None = None,
                   run_budget: RunBudget, batch: int = 1) -> tuple[SearchResult, str | None]:
    """`search` within a RunBudget: (result, why it stopped early or None). Every evaluation passes a Recorder,
    so when the budget runs out or Ctrl-C is pressed the best partition evaluated so far is the result."""
    recorders: list[Recorder] = []

    def wrap(fn):
        recorders.append(Recorder(fn, run_budget))
        return recorders[-1]

    start = time.perf_counter()
    try:
        return _search(graph, hw, method, budget=budget, seed=seed, time_limit_s=time_limit_s, policy=policy,
                       on_eval=on_eval, run_budget=run_budget, wrap=wrap, batch=batch), None
    except Stopped as stop:
        rec = recorders[0]
        return SearchResult(method, rec.best, len(rec.history), tuple(rec.history),
                            time.perf_counter() - start), str(stop)


def _search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int, time_limit_s: float | None,
            policy: str | None, on_eval: OnEval | None, run_budget: RunBudget, wrap,
            batch: int = 1) -> SearchResult:
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    if budget < 1:
        raise UserError(f"--budget must be at least 1, got {budget}", "pass a positive number of evaluations")
    limit = DEFAULT_REPAIR_LIMIT_S if time_limit_s is None else time_limit_s

    def evaluate_fn(proposal: np.ndarray) -> Evaluation:
        return evaluate(graph, hw, proposal, time_limit_s=run_budget.limit(limit), seed=seed, batch=batch)

    evaluate_fn = wrap(evaluate_fn)

    start = time.perf_counter()

    def single(ev: Evaluation) -> SearchResult:
        """A constructive method's one evaluation, reported like a search."""
        if on_eval:
            on_eval(1, ev.throughput)
        return SearchResult(method, ev, 1, ((1, ev.throughput),), time.perf_counter() - start)

    if method in ("greedy", "dp"):
        return single(evaluate_fn(greedy_partition(graph, hw) if method == "greedy" else dp_partition(graph, hw)))
    if method == "random":
        return random_search(graph, hw, budget=budget, seed=seed, evaluate_fn=evaluate_fn, on_eval=on_eval)
    if method == "anneal":
        return anneal(graph, hw, budget=budget, seed=seed, evaluate_fn=evaluate_fn, on_eval=on_eval)
    if method == "exact":
        from solver.optimize import optimize

        exact_limit = DEFAULT_EXACT_LIMIT_S if time_limit_s is None else time_limit_s
        part = optimize(graph, hw, time_limit_s=run_budget.limit(exact_limit), seed=seed, hint=dp_partition(graph, hw),
                        deterministic=True, wall_limit_s=_wall_cap(run_budget, exact_limit), batch=batch)
        return single(Evaluation(part, simulate(graph, hw, part, batch=batch)))
    if method == "learned":
        from policies.move_policy import learned_search

        return learned_search(graph, hw, budget=budget, seed=seed, evaluate_fn=evaluate_fn, policy_path=policy,
                              on_eval=on_eval)
    from policies.rl_search import rl_search

    return rl_search(graph, hw, budget=budget, seed=seed, evaluate_fn=evaluate_fn, policy_path=policy,
                     on_eval=on_eval)


def _wall_cap(run_budget: RunBudget, wanted_s: float) -> float:
    """The wall-clock cap of a deterministic CP-SAT solve: its usual one (solver.optimize), or what the budget
    leaves."""
    from solver.optimize import DETERMINISTIC_WALL_FACTOR

    return max(min(DETERMINISTIC_WALL_FACTOR * wanted_s + 10.0, run_budget.search_left()), 0.1)


def best_staged(graph: TensorGraph, hw: Hardware, max_shard: int, batch: int = 1, caps: list[int] | None = None,
                stats: dict | None = None) -> Evaluation | None:
    """The best simulated of the staged DP plans for every largest group up to max_shard (staged_dp.
    staged_candidates; `caps` picks other ones): the DP's link and stream models are estimates, so the simulator
    picks among them. Plans are simulated by decreasing `throughput_ceiling`, stopping once no plan left can beat
    the best so far. With a memory tier, the weights of a plan's overflowing chiplets stream
    (solver.residency.choose_streamed, the rule repair uses). Plans that check() rejects (the DP knows neither op
    types a chiplet cannot run nor the exact working set at a stage's first ops) are dropped; None when none is
    valid. `stats`, if given, gets the number of candidates and of simulated plans."""
    from solver.residency import choose_streamed

    plans = staged_candidates(graph, hw, max_shard, caps)
    ceilings = [throughput_ceiling(graph, hw, a, shard) for a, shard in plans]
    best, simulated = None, 0
    for c in sorted(range(len(plans)), key=lambda c: -ceilings[c]):     # stable: ties in cap order
        if best is not None and ceilings[c] <= best.throughput:
            break
        a, shard = plans[c]
        streamed = choose_streamed(graph, hw, a, batch, shard)
        part = Partition(a, None, 0, "staged-dp", shard=shard, streamed=streamed)
        if check(graph, hw, part):
            continue
        ev = Evaluation(part, simulate(graph, hw, part, batch=batch))
        simulated += 1
        if best is None or ev.throughput > best.throughput:
            best = ev
    if stats is not None:
        stats.update(candidates=len(plans), simulated=simulated)
    return best


def split_refine(graph: TensorGraph, hw: Hardware, method: str, budget: int, seed: int, max_shard: int,
                 run_budget: RunBudget | None = None, batch: int = 1) -> Evaluation | None:
    """The best plan of `budget` evaluations of local search over staged plans (policies/split_search.py) by
    `method` (anneal, random or learned; any other method uses anneal), or None (budget 0, no valid staged plan).
    Stops early, keeping the best so far, when run_budget runs out or on Ctrl-C."""
    from policies.split_search import SPLIT_METHODS, simulate_fn, split_search

    if budget < 1:
        return None
    rec = Recorder(simulate_fn(graph, hw, batch), run_budget or RunBudget())
    try:
        res = split_search(graph, hw, method if method in SPLIT_METHODS else "anneal", budget=budget, seed=seed,
                           evaluate_fn=rec, max_shard=max_shard, batch=batch)
    except Stopped:
        return rec.best
    if res is None:
        return None
    return Evaluation(Partition(res.best.assignment, None, 0, f"split-{res.method}", shard=res.best.partition.shard,
                                streamed=res.best.partition.streamed),
                      res.best.report)


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
                    deterministic=True, wall_limit_s=_wall_cap(run_budget, time_limit_s), batch=batch)


def keep_best(graph: TensorGraph, hw: Hardware, searched: Evaluation, cert: Partition, batch: int = 1
              ) -> tuple[Evaluation, str | None]:
    """The better of the search's best and the partition CP-SAT found while proving the certificate (warm-started
    from the search's best), both scored by the simulator: a run never returns less than the best it evaluated.
    Returns (best, None) when the search's own partition wins, else (certificate's, its provenance)."""
    if check(graph, hw, cert.assignment, streamed=cert.streamed) or (
            np.array_equal(cert.assignment, searched.assignment)
            and np.array_equal(cert.streamed if cert.streamed is not None else False,
                               searched.partition.streamed if searched.partition.streamed is not None else False)):
        return searched, None
    solved = Evaluation(cert, simulate(graph, hw, cert, batch=batch))
    if solved.throughput > searched.throughput:
        return solved, f"the certificate's CP-SAT solve ({cert.status}), warm-started from the search's best"
    return searched, None


def validate_config(cfg: RunConfig) -> None:
    """Every option, checked before the model is read or --out is touched (partitioner/app/limits.py)."""
    limits.check_seed(cfg.seed)
    limits.check_budget(cfg.budget)
    limits.check_chiplets(cfg.chiplets)
    limits.check_seconds(cfg.time_limit_s, "--time-limit")
    limits.check_seconds(cfg.max_time_s, "--max-time")
    if type(cfg.batch) is not int or cfg.batch < 1:
        raise UserError(f"--batch must be a positive integer, got {cfg.batch!r}", "pass --batch 1 or more")
    if type(cfg.split_budget) is not int or cfg.split_budget < 0:
        raise UserError(f"--split-budget must be a non-negative integer, got {cfg.split_budget!r}",
                        "pass 0 (no split-plan search) or a number of evaluations, e.g. 256")
    if cfg.max_shard is not None and (type(cfg.max_shard) is not int or cfg.max_shard < 1):
        raise UserError(f"--max-shard must be a positive integer, got {cfg.max_shard!r}",
                        "pass auto (the default), or 1 (no sharding) up to the chiplet count")
    if cfg.method is not None and cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}", f"use one of {', '.join(METHODS)}")
    limits.check_model_path(cfg.model)
    limits.check_out_target(cfg.out)
    from partitioner.app.outset import check_replaceable

    check_replaceable(cfg.out)


def run(cfg: RunConfig, on_eval: OnEval | None = None) -> Outcome:
    """Load, search, certify, and write partition.json, report.md, trace.json, partition.png and config.json as
    one set (partitioner/app/outset.py). Within cfg.max_time_s and on Ctrl-C the search stops and the best valid
    partition found so far is written, marked interrupted."""
    validate_config(cfg)
    run_budget = RunBudget(cfg.max_time_s)
    budget = DEFAULT_BUDGET if cfg.budget is None else cfg.budget
    hw = load_hardware(cfg.hardware, cfg.chiplets, memory_tier=cfg.memory_tier)
    limits.check_chiplets(hw.n_chiplets, f"hardware {cfg.hardware}")
    graph = load_model(cfg.model, cfg.input_shapes, cfg.precision, granularity=cfg.granularity, phase=cfg.phase,
                       context=cfg.context)
    method = cfg.method or default_method(graph.n_ops)
    if cfg.max_shard is not None and cfg.max_shard > hw.n_chiplets:
        raise UserError(f"--max-shard {cfg.max_shard} is larger than the package's {hw.n_chiplets} chiplets",
                        f"pass --max-shard between 1 and {hw.n_chiplets}")
    max_shard = auto_max_shard(hw.n_chiplets) if cfg.max_shard is None else cfg.max_shard
    with run_budget.catch_sigint():
        found, stopped = bounded_search(graph, hw, method, budget=budget, seed=cfg.seed,
                                        time_limit_s=cfg.time_limit_s, policy=cfg.policy, on_eval=on_eval,
                                        run_budget=run_budget, batch=cfg.batch)
        chosen, found_by, staged = found.best, None, None
        if max_shard > 1 and run_budget.stop_reason() is None and graph.n_ops <= STAGED_MAX_OPS:
            staged = best_staged(graph, hw, max_shard, batch=cfg.batch)
            if staged is not None and staged.throughput > chosen.throughput:
                chosen, found_by = staged, f"the staged DP with ops split up to {max_shard} ways (staged_dp.py)"
            refined = split_refine(graph, hw, method, cfg.split_budget, cfg.seed, max_shard, run_budget, cfg.batch)
            if refined is not None and refined.throughput > chosen.throughput:
                chosen, found_by = refined, (f"{refined.partition.status}: split-plan local search from the staged "
                                             f"DP ({cfg.split_budget} evaluations)")
        best = chosen     # candidates are scored untraced; the winner is traced once, below
        cert = None
        if method == "exact":
            cert = found.best.partition
        elif cfg.certificate and run_budget.stop_reason() is None \
                and run_budget.search_left() >= CERTIFICATE_MIN_S:
            cert = certify(graph, hw, found.best.assignment, seed=cfg.seed, run_budget=run_budget, batch=cfg.batch)
            best, solved_by = keep_best(graph, hw, best, cert, batch=cfg.batch)
            found_by = solved_by or found_by
        if cert is not None and max_shard > 1:
            # CP-SAT's whole-op bound still says how far plans without splits can go; shown beside the certificate
            cert = sharded_certificate(graph, hw, max_shard, cert)
            if cfg.certificate:   # CP-SAT over split plans: a tighter proven bound, and its plan competes
                cert, plan = staged_certificate(graph, hw, max_shard, cert,
                                                [best.partition] + ([staged.partition] if staged else []), seed=cfg.seed,
                                                run_budget=run_budget, batch=cfg.batch)
                if plan is not None and plan.throughput > best.throughput:
                    best, found_by = plan, (f"the certificate's staged CP-SAT solve over split plans "
                                            f"({cert.info['staged_status']}), warm-started from the run's best plan")
        elif cfg.certificate and cert is None:
            stopped = stopped or run_budget.stop_reason() or "the --max-time budget left no time for the certificate"
        if not best.report.trace_events:   # the same figures (tests/test_simulator.py), plus trace.json's events
            best = Evaluation(best.partition, simulate(graph, hw, best.partition, trace=True, batch=cfg.batch))
        if stopped is None and run_budget.interrupted:   # Ctrl-C during the certificate: its solve ran to its limit
            stopped = "interrupted by Ctrl-C during the certificate, after the search finished"
        outcome = Outcome(cfg.model, graph, hw, method, best, found.evaluations, found.wall_s, found.history, cert,
                          found_by=found_by, interrupted=stopped, batch=cfg.batch)
        config = asdict(cfg) | {"method": method, "budget": budget, "max_shard": max_shard}
        with output_set(cfg.out, "run") as staging:
            names = write_outputs(staging, outcome, config=config, hardware_spec=cfg.hardware)
    files = tuple(str(Path(cfg.out) / Path(n).name) for n in names)
    return Outcome(**{**outcome.__dict__, "files": files})


def prepare_out_dir(out: str) -> Path:
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out} ({exc.strerror})", "pass a writable --out directory")
    if not os.access(path, os.W_OK):
        raise UserError(f"output directory {out} is not writable", "pass a writable --out directory")
    return path


SHARD_AXES_SIMULATED = "simulated"
"""partition.json's "shard_axes" when each group's "axis" is the one the simulated plan ran (sharding.layout with
rule S8). Files without it record each op's base axis (sharding.split_axis); `partition split` then re-derives
the layout without S8, as it did when they were written."""


# --- outputs ------------------------------------------------------------------------------------------------------------
def partition_document(outcome: Outcome, hardware_spec: str | None, config: dict | None = None) -> dict:
    """The partition.json payload: the assignment by original ONNX node name, metrics and per-chiplet loads."""
    graph, hw, rep = outcome.graph, outcome.hw, outcome.best.report
    a = outcome.best.assignment
    pg, pa = _pieces(outcome)
    per_chiplet = []
    for c in range(hw.n_chiplets):
        mask = pa == c
        per_chiplet.append({
            "chiplet": c,
            "ops": int(mask.sum()),
            "flops": int(pg.flops[mask].sum()),
            "weight_bytes": int(pg.weight_bytes[mask].sum()),
            "busy_fraction": float(rep.chiplet_busy_fraction[c]),
            "memory_fraction": float(rep.chiplet_memory_fraction[c]),
        })
    shard = outcome.best.partition.shard
    keep = keep_column(hw)
    if shard is None:
        assignment = {node: int(a[i]) for node, i in graph.onnx_node_owner().items()}
    else:   # a split op's nodes map to its group of chiplets and the axis the simulated plan split it along
        axes, _ = layout(graph, a, shard, keep)     # as simulate/expand lay it out (rule S8 included)
        assignment = {node: int(a[i]) if shard[i] == 1 else
                      {"chiplets": list(range(int(a[i]), int(a[i] + shard[i]))), "axis": axes[i]}
                      for node, i in graph.onnx_node_owner().items()}
    metrics = {
        "throughput_per_s": rep.throughput_per_s,
        "latency_s": rep.latency_s,
        "energy_j": rep.energy_j,
        "energy_breakdown_j": dict(rep.energy_breakdown_j),
        "cycles_per_inference": rep.cycles_per_inference,
        "bound_throughput_per_s": rep.bound_throughput_per_s,
        "bottleneck_chiplet": int(rep.bottleneck_chiplet),
        "bottleneck": rep.bottleneck,
    }
    metrics.update(token_metrics(graph, rep))
    if hw.package_level is not None:
        metrics["package_link_bytes_per_inference"] = rep.package_link_bytes_per_inference
    solver_bound = outcome.solver_bound_throughput_per_s
    if solver_bound is not None:
        metrics["solver_bound_throughput_per_s"] = solver_bound
        metrics["solver_bound_status"] = outcome.certificate.status
        if "bound_kind" in outcome.certificate.info:   # a run whose ops may split (partitioner/app/staged_cert.py)
            metrics["certificate_kind"] = outcome.certificate.info["bound_kind"]
            metrics["staged_solve"] = {k[len("staged_"):]: v for k, v in outcome.certificate.info.items()
                                       if k.startswith("staged_")}
        whole = _whole_op_bound(outcome)
        if whole is not None:
            metrics["whole_op_bound_throughput_per_s"] = whole
            metrics["whole_op_bound_status"] = outcome.certificate.info["whole_op_status"]
    doc = {
        "model": str(outcome.model),
        "hardware": _resolvable(hardware_spec),
        "hardware_name": hw.name,
        "chiplets": hw.n_chiplets,
        "method": outcome.method,
        "found_by": outcome.found_by or outcome.method,
        "precision": graph.metadata.get("precision", "fp32"),
        "input_shapes": {k: list(v) for k, v in graph.metadata.get("input_shapes", {}).items()},
        "granularity": graph.metadata.get("granularity", "fused"),
        "phase": graph.metadata.get("phase"),
        "context": graph.metadata.get("context"),
        "assignment": assignment,
        "metrics": metrics,
        "per_chiplet": per_chiplet,
        "groups": groups(graph, a, shard, links=ring_links(hw), keep_column=keep),
        "search": {"evaluations": outcome.evaluations, "wall_s": outcome.wall_s,
                   "ops_moved_by_repair": outcome.best.partition.ops_moved,
                   "history": [list(h) for h in outcome.history]},
        "config": config or {},
        "interrupted": outcome.interrupted,
        "memory_tier": memory_tier_document(graph, hw, a, outcome.best.partition.streamed, rep, outcome.batch,
                                              outcome.best.partition.shard),
    }
    if shard is not None and (np.asarray(shard) > 1).any():
        doc["shard_axes"] = SHARD_AXES_SIMULATED   # `partition split` cuts along these axes (older files: base ones)
    return doc


def _pieces(outcome: Outcome) -> tuple[TensorGraph, np.ndarray]:
    """The graph and assignment the simulator ran: the pieces of a sharded partition, else the ops."""
    part = outcome.best.partition
    if part.shard is None:
        return outcome.graph, part.assignment
    ex = expand(outcome.graph, part.assignment, part.shard, links=ring_links(outcome.hw),
                keep_column=keep_column(outcome.hw))
    return ex.graph, ex.assignment


def _resolvable(spec: str | None) -> str | None:
    """A preset name as is, a hardware file as an absolute path, None for the default mesh of `chiplets`."""
    if spec is None or spec in PRESETS:
        return spec
    return str(Path(spec).resolve())


def write_outputs(out_dir: Path, outcome: Outcome, *, config: dict | None, hardware_spec: str | None
                  ) -> tuple[str, ...]:
    """Each file is written to a temp name and renamed, so a killed run leaves old or new files, never halves."""
    hw, rep = outcome.hw, outcome.best.report
    graph, a = _pieces(outcome)
    files = {
        "partition.json": lambda p: write_json(p, partition_document(outcome, hardware_spec, config)),
        "report.md": lambda p: write_text(p, _interrupted_markdown(outcome)
                                          + report_markdown(rep, graph, hw, a, outcome.method)
                                          + _phase_markdown(graph, rep) + _provenance_markdown(outcome)
                                          + memory_tier_markdown(memory_tier_document(
                                              outcome.graph, hw, outcome.best.assignment,
                                              outcome.best.partition.streamed, rep, outcome.batch,
                                              outcome.best.partition.shard), outcome.graph, rep)
                                          + _groups_markdown(outcome) + _certificate_markdown(outcome)),
        "trace.json": lambda p: write_chrome_trace(p, rep, graph, hw),
        "partition.png": lambda p: plot_partition(
            p, graph, hw, a, rep, groups=tuple(tuple(g["chiplets"]) for g in groups(
                outcome.graph, outcome.best.partition.assignment, outcome.best.partition.shard))),
    }
    if config is not None:
        files["config.json"] = lambda p: write_json(p, config)
    for name, write in files.items():
        write(out_dir / name)
    return tuple(str(out_dir / name) for name in files)


def _interrupted_markdown(outcome: Outcome) -> str:
    if outcome.interrupted is None:
        return ""
    return (f"> **Interrupted**: {outcome.interrupted}. This is the best valid partition of the "
            f"{outcome.evaluations} evaluations finished when the run stopped.\n\n")


def token_metrics(graph: TensorGraph, rep) -> dict:
    """Tokens/s and time per token for a decoder phase (empty otherwise). Tokens per inference: the prompt's
    tokens in prefill, one per sequence in decode. Time per token: in decode, one step's latency (a sequence's
    next token needs the previous one, so its tokens cannot overlap); in prefill, 1 / tokens/s."""
    tokens = graph.metadata.get("tokens_per_inference")
    if not tokens:
        return {}
    per_s = rep.throughput_per_s * tokens
    per_token = rep.latency_s if graph.metadata.get("phase") == "decode" else 1.0 / per_s
    return {"tokens_per_inference": tokens, "tokens_per_s": per_s, "time_per_token_s": per_token,
            "weight_read_bytes": int(graph.weight_read_bytes.sum() - graph.kv_cache_bytes.sum()),
            "kv_cache_read_bytes": int(graph.kv_cache_bytes.sum())}


def _phase_markdown(graph: TensorGraph, rep) -> str:
    m = token_metrics(graph, rep)
    if not m:
        return ""
    meta = graph.metadata
    what = (f"decode, one token per sequence reading a KV cache of {meta.get('context')} tokens"
            if meta.get("phase") == "decode" else f"prefill of {m['tokens_per_inference']} tokens")
    return (f"\n## Tokens ({what})\n\n| metric | value |\n|---|---|\n"
            f"| inferences/s | {rep.throughput_per_s:,.1f} |\n| tokens/s | {m['tokens_per_s']:,.1f} |\n"
            f"| time per token | {si(m['time_per_token_s'], 's')} |\n"
            f"| weight bytes read per inference | {m['weight_read_bytes']:,} |\n"
            f"| KV-cache bytes read per inference | {m['kv_cache_read_bytes']:,} |\n")


def _provenance_markdown(outcome: Outcome) -> str:
    if outcome.found_by is None:
        return f"\n## Found by\n\n{outcome.method}: its own search found this partition.\n"
    return (f"\n## Found by\n\n{outcome.found_by}: it scored above the best of the {outcome.method} search's "
            f"{outcome.evaluations} evaluations, so the run returns it.\n")


def _groups_markdown(outcome: Outcome) -> str:
    part = outcome.best.partition
    found = groups(outcome.graph, part.assignment, part.shard, links=ring_links(outcome.hw),
                   keep_column=keep_column(outcome.hw))
    if not found:
        return ""
    lines = ["", "## Groups and collectives", "",
             "Ops split k ways run as k pieces on the group's chiplets (docs/simulator.md, S1-S7); the collective "
             "bytes are what the pieces and ring relays send per inference (all-gather of slices, all-reduce of "
             "partials, direct or as rings).", "",
             "| chiplets | shard | ops | axes | collectives | rings | collective bytes |",
             "|---|---|---|---|---|---|---|"]
    for g in found:
        axes = ", ".join(f"{k} {v}" for k, v in g["axes"].items())
        colls = ", ".join(f"{k} {v}" for k, v in g["collectives"].items())
        lines.append(f"| {g['chiplets'][0]}..{g['chiplets'][-1]} | {g['shard']} | {g['ops']} | {axes} | {colls} | "
                     f"{g.get('rings', 0)} | {g['collective_bytes']:,} |")
    return "\n".join(lines) + "\n"


def _whole_op_bound(outcome: Outcome) -> float | None:
    cert = outcome.certificate
    cycles = cert.info.get("whole_op_bound_cycles") if cert is not None else None
    return outcome.hw.clock_hz / cycles if cycles else None


def _whole_op_line(outcome: Outcome) -> str:
    whole = _whole_op_bound(outcome)
    if whole is None:
        return ""
    return (f"\nPlans that split no op: CP-SAT ({outcome.certificate.info['whole_op_status']}) proves none exceeds "
            f"{whole:,.1f} inferences/s (its relaxation of R5-R8 with every op whole).\n")


def _certificate_markdown(outcome: Outcome) -> str:
    bound = outcome.solver_bound_throughput_per_s
    if bound is None:
        return ""
    thr = outcome.best.report.throughput_per_s
    cert = outcome.certificate
    if is_staged(cert):
        return staged_certificate_markdown(cert, bound, thr) + _whole_op_line(outcome)
    if cert.status == "analytical":
        return (f"\n## Optimality certificate\n\nOps may split across groups, so CP-SAT's whole-op bound does not "
                f"apply and this certificate is analytical, not proven tight by CP-SAT: no partition the tool can "
                f"output (any stages, groups and shard degrees up to {cert.info['max_shard']}) has its busiest "
                f"chiplet below {cert.lower_bound_cycles:,.0f} cycles per "
                f"inference (perfect balance of the least chiplet-cycles of every op, free links, no op faster than "
                f"its smallest piece), so none exceeds {bound:,.1f} inferences/s in the simulator. This partition "
                f"reaches {thr:,.1f}/s: at least {100 * thr / bound:.1f}% of the best possible; the gap is at most "
                f"{100 * (1 - thr / bound):.1f}%." + (" " + staged_solve_line(cert) if staged_solve_line(cert) else "")
                + "\n" + _whole_op_line(outcome))
    tier = ""
    if outcome.hw.memory_stacks:
        tier = (f", a memory stack's reads (streamed weights, amortised over batch {outcome.batch}); any choice of "
                "which weights stream is covered")
    proven = ("CP-SAT proved this bound tight (optimal)." if cert.status == "optimal" else
              f"CP-SAT did not prove optimality within its time limit: its best partition in the cost model is "
              f"{cert.objective_cycles:,.0f} cycles, a gap of {100 * (cert.gap or 0.0):.1f}% to the bound.")
    return (f"\n## Optimality certificate\n\nWhat it bounds: the simulated steady-state throughput of every "
            f"partition this tool can output on {outcome.hw.name} (pipeline order, memory and pins valid). The "
            f"simulator's cycles per inference are never below the busiest resource's busy cycles per inference "
            f"(a chiplet's op cycles, the average over a chiplet's out-links of what it sends{tier}); CP-SAT "
            f"({cert.status}, {cert.solve_time_s:.1f} s) proves that in every valid partition that busiest "
            f"resource has at least {cert.lower_bound_cycles:,.0f} cycles per inference, so none exceeds "
            f"{bound:,.1f} inferences/s. {proven} This partition reaches {thr:,.1f}/s: at least "
            f"{100 * thr / bound:.1f}% of the best possible.\n")


# --- re-scoring a saved partition -----------------------------------------------------------------------------------------
def read_partition_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"partition file {path} does not exist", "pass the partition.json a run wrote")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"partition file {path} is unreadable ({exc.__class__.__name__}: {exc})",
                        "pass the partition.json a run wrote")
    if not isinstance(doc, dict) or not isinstance(doc.get("assignment"), dict):
        raise UserError(f"partition file {path} has no 'assignment' object", "pass the partition.json a run wrote")
    return doc


def _group_value(value: object, op_name: str, path: str, n_chiplets: int | None) -> object:
    """A split op's {"chiplets": [c, c+1, ...], "axis": ...} as (c, k); any other value unchanged."""
    if not isinstance(value, dict):
        return value
    chips = value.get("chiplets")
    fix = "give a split op's nodes {\"chiplets\": [c, c+1, ...], \"axis\": ...} with consecutive chiplet ids"
    if not isinstance(chips, list) or not chips or any(type(c) is not int or c < 0 for c in chips):
        raise UserError(f"partition file {path} gives op {op_name} a group that is not a list of chiplet ids "
                        f"({chips!r})", fix)
    if chips != list(range(chips[0], chips[0] + len(chips))):
        raise UserError(f"partition file {path} splits op {op_name} over chiplets {chips}, which are not "
                        f"consecutive in pipeline order", fix)
    if n_chiplets is not None and chips[-1] >= n_chiplets:
        raise UserError(f"partition file {path} splits op {op_name} {len(chips)} ways over chiplets "
                        f"{chips[0]}..{chips[-1]}, {chips[-1] - n_chiplets + 1} past the package's {n_chiplets} "
                        f"chiplets", f"use a group inside chiplets 0..{n_chiplets - 1}, or more --chiplets")
    return (chips[0], len(chips))


def assignment_from_document(graph: TensorGraph, doc: dict, path: str, n_chiplets: int | None = None
                             ) -> np.ndarray | Partition:
    """Map ONNX node name -> chiplet (or -> group of chiplets with a shard axis) back onto the graph's ops (every
    op needs at least one named node). Returns the assignment, or a Partition with `shard` when any op is split."""
    by_node = doc["assignment"]
    known = graph.onnx_node_owner()
    unknown = [n for n in by_node if n not in known]
    if unknown:
        raise UserError(f"partition file {path} places {len(unknown)} node(s) this model does not have "
                        f"(first: {unknown[0]!r})", "pass the model the partition was made for, with the same "
                        "import options")
    a = np.full(graph.n_ops, -1, dtype=np.int64)
    k = np.ones(graph.n_ops, dtype=np.int64)
    for i, op in enumerate(graph.ops):
        values = [_group_value(by_node[n], op.name, path, n_chiplets) for n in op.onnx_nodes if n in by_node]
        if any(isinstance(c, tuple) for c in values) and len(set(values)) == 1:
            a[i], k[i] = values[0]
            continue
        if any(type(c) is not int for c in values):
            raise UserError(f"partition file {path} gives op {op.name} a chiplet that is not an integer "
                            f"({values!r})", "use integer chiplet ids")
        if any(not 0 <= c <= limits.MAX_CHIPLETS for c in values):
            raise UserError(f"partition file {path} gives op {op.name} chiplet {max(values, key=abs)}, outside "
                            f"0..{limits.MAX_CHIPLETS}", "use chiplet ids of the hardware, 0..chiplets-1")
        chips = set(values)
        if not chips:
            raise UserError(f"partition file {path} does not place op {op.name} (ONNX nodes {list(op.onnx_nodes)})",
                            "re-run `partition` on this model; the file belongs to another model or import options")
        if len(chips) > 1:
            raise UserError(f"partition file {path} puts the nodes of op {op.name} on chiplets {sorted(chips)}",
                            "give every node of a fused op the same integer chiplet")
        a[i] = chips.pop()
    return a if (k == 1).all() else Partition(a, a, 0, "loaded", shard=k)


def _document_settings(doc: dict, path: str) -> tuple[str | None, int, dict, str]:
    """(hardware spec, chiplets, input shapes, precision) a partition file was made with, type-checked."""
    spec, chiplets = doc.get("hardware"), doc.get("chiplets")
    shapes, precision = doc.get("input_shapes", {}), doc.get("precision", "fp32")
    fix = "pass the partition.json a run wrote, unedited"
    if spec is not None and not isinstance(spec, str):
        raise UserError(f"partition file {path}: 'hardware' must be a preset name or a file path", fix)
    if type(chiplets) is not int or chiplets < 1:
        raise UserError(f"partition file {path}: 'chiplets' must be a positive integer, got {chiplets!r}", fix)
    if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and v and all(type(d) is int and d > 0 for d in v) for v in shapes.values()):
        raise UserError(f"partition file {path}: 'input_shapes' must map input names to lists of positive ints", fix)
    if not isinstance(precision, str):
        raise UserError(f"partition file {path}: 'precision' must be a string", fix)
    return spec, chiplets, {k: tuple(v) for k, v in shapes.items()}, precision


def resimulate(model: str, partition_path: str, input_shapes: dict, precision: str | None, hardware: str | None,
               chiplets: int | None, out: str | None, *, granularity: str | None = None, phase: str | None = None,
               context: int | None = None, memory_tier: bool = True) -> Outcome:
    """Re-score a saved partition on the settings it was made with (or the ones given explicitly).
    memory_tier=False drops the memory stacks; a file written without a memory tier is scored without one."""
    limits.check_chiplets(chiplets)
    limits.check_model_path(model)
    if out:
        limits.check_out_target(out)
        from partitioner.app.outset import check_replaceable

        check_replaceable(out)
    doc = read_partition_file(partition_path)
    spec, saved_chiplets, saved_shapes, saved_precision = _document_settings(doc, partition_path)
    if hardware is None:
        limits.check_chiplets(saved_chiplets, f"partition file {partition_path}: 'chiplets'")
    granularity = granularity or doc.get("granularity") or "fused"
    phase = phase or doc.get("phase")
    context = context if context is not None else doc.get("context")
    if granularity not in ("fused", "node", "layer") or phase not in (None, "prefill", "decode") or not (
            context is None or (type(context) is int and context >= 0)):
        raise UserError(f"partition file {partition_path}: bad 'granularity', 'phase' or 'context'",
                        "pass the partition.json a run wrote, unedited")
    graph = load_model(model, input_shapes or saved_shapes, precision or saved_precision, granularity=granularity,
                       phase=phase, context=context if phase == "decode" else None)
    if hardware is None and spec is not None and spec not in PRESETS and not Path(spec).exists():
        raise UserError(f"partition file {partition_path} was made on hardware file {spec}, which is gone",
                        "pass --hardware with the package description to score it on")
    tier = doc.get("memory_tier")
    saved_tier = not (isinstance(tier, dict) and tier.get("stacks") == [])   # [] = made without a memory tier
    hw = load_hardware(hardware or spec, chiplets if chiplets is not None else saved_chiplets,
                       memory_tier=memory_tier and (saved_tier or hardware is not None))
    a = assignment_from_document(graph, doc, partition_path, hw.n_chiplets)
    streamed = streamed_from_document(graph, doc, partition_path)
    batch = batch_from_document(doc, partition_path)
    problems = check(graph, hw, a, streamed=streamed)
    if problems:
        raise UserError(f"partition in {partition_path} is invalid on {hw.name}: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                        "re-run `partition` for this hardware")
    start = time.perf_counter()
    if isinstance(a, Partition):
        part = Partition(a.assignment, a.assignment, 0, "loaded", streamed=streamed, shard=a.shard)
    else:
        part = Partition(a, a, 0, "loaded", streamed=streamed)
    best = Evaluation(part, simulate(graph, hw, part, trace=True, batch=batch))
    outcome = Outcome(model, graph, hw, str(doc.get("method", "loaded")), best, 1, time.perf_counter() - start,
                      batch=batch)
    if out:
        config = {"command": "simulate", "model": model, "partition": partition_path, "hardware": hardware or spec,
                  "chiplets": hw.n_chiplets, "precision": graph.metadata.get("precision"),
                  "input_shapes": {k: list(v) for k, v in graph.metadata.get("input_shapes", {}).items()},
                  "granularity": granularity, "phase": phase, "context": graph.metadata.get("context")}
        with output_set(out, "simulate") as staging:
            names = write_outputs(staging, outcome, config=config, hardware_spec=hardware or spec)
        outcome = Outcome(**{**outcome.__dict__, "files": tuple(str(Path(out) / Path(n).name) for n in names)})
    return outcome


# --- terminal summary ---------------------------------------------------------------------------------------------------
def _token_rows(graph: TensorGraph, rep) -> list[tuple[str, str]]:
    m = token_metrics(graph, rep)
    if not m:
        return []
    return [("tokens", f"{m['tokens_per_s']:,.1f} tokens/s ({graph.metadata.get('phase')}, "
                       f"{m['tokens_per_inference']} per inference), {si(m['time_per_token_s'], 's')} per token"),
            ("traffic", f"{m['weight_read_bytes'] / 1e6:,.1f} MB weights + {m['kv_cache_read_bytes'] / 1e6:,.1f} MB "
                        "KV cache read per inference")]


def _groups_line(outcome: Outcome) -> str:
    part = outcome.best.partition
    if part.shard is None:
        return "none (every op whole)"
    found = groups(outcome.graph, part.assignment, part.shard)
    sizes = sorted({g["shard"] for g in found})
    return (f"{len(found)} group{'s' * (len(found) != 1)} of {'/'.join(map(str, sizes))} chiplets, {int((part.shard > 1).sum())} ops split "
            f"(report.md, 'Groups and collectives')")


def format_outcome(outcome: Outcome) -> str:
    rep, hw = outcome.best.report, outcome.hw
    rows = [
        ("model", f"{outcome.model} ({outcome.graph.n_ops} ops, {outcome.graph.total_flops / 1e9:.2f} GFLOP)"),
        ("hardware", f"{hw.name}: {hw.n_chiplets} chiplets, {hw.layout}"),
        ("method", f"{outcome.method}: {outcome.evaluations} evaluation{'s' * (outcome.evaluations != 1)} in {outcome.wall_s:.1f} s, "
                   + (f"repair moved {outcome.best.partition.ops_moved} ops" if outcome.found_by is None
                      else f"best found by {outcome.found_by.split(',')[0]}")),
        ("throughput", f"{rep.throughput_per_s:,.1f} inferences/s"),
        *_token_rows(outcome.graph, rep),
        ("latency", si(rep.latency_s, "s")),
        ("energy", f"{si(rep.energy_j, 'J')} per inference"),
        ("utilisation", f"mean {100 * float(np.mean(rep.chiplet_busy_fraction)):.1f}%, "
                        f"max {100 * float(np.max(rep.chiplet_busy_fraction)):.1f}%"),
        ("bottleneck", rep.bottleneck),
        ("groups", _groups_line(outcome)),
        ("bound", f"{rep.bound_throughput_per_s:,.1f}/s analytical (perfect balance)"),
    ]
    solver_bound = outcome.solver_bound_throughput_per_s
    if solver_bound is not None:
        cert = outcome.certificate
        prover = "CP-SAT" if cert.info.get("staged_bound_source") == "cp-sat" else "pipeline order (window bound)"
        how = ("analytical (ops may split; not proven tight by CP-SAT)" if cert.status == "analytical"
               else f"proven over split plans by {prover} ({cert.status}, gap {100 * (cert.gap or 0.0):.1f}%)"
               if is_staged(cert) else f"proven by CP-SAT ({cert.status})")
        if cert.status == "analytical" and cert.info.get("staged_status") in ("optimal", "feasible"):
            how += (f"; CP-SAT over split plans ({cert.info['staged_status']}) proves no more, gap "
                    f"{100 * (cert.info['staged_gap'] or 0.0):.1f}%")
        whole = _whole_op_bound(outcome)
        if whole is not None:
            how += f"; without splits <= {whole:,.1f}/s ({outcome.certificate.info['whole_op_status']})"
        rows.append(("certificate", f"{solver_bound:,.1f}/s {how}; "
                                    f"this is {100 * rep.throughput_per_s / solver_bound:.1f}% of it"))
    if outcome.files:
        rows.append(("written", ", ".join(outcome.files)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
