"""What `partition MODEL.onnx` does, as a list of named steps: check the options, load the hardware and the model,
search with the chosen method, score the staged split plans beside it (the latency plans under --objective
latency), certify, trace the winner, write the files. Every step picks the better plan by the objective's score
(partitioner/sim/objective.py).

The CLI calls `run`; benchmarks and the other commands (simulate, split, explore, finetune) reuse `load_model`.
Each step lives in its own module: methods.py (the method registry), candidates.py (staged plans), certify.py,
outputs.py (the files), summary.py (the terminal lines)."""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

from partitioner.app import limits
from partitioner.app.budget import CERTIFICATE_MIN_S, RunBudget
from partitioner.app.candidates import best_latency, best_staged, split_refine, staged_in_order
from partitioner.app.certify import certify, keep_best, latency_certificate, sharded_certificate
from partitioner.app.config import DEFAULT_BUDGET, OnEval, Outcome, RunConfig, stream_batch, validate_config
from partitioner.app.methods import bounded_search, default_method
from partitioner.app.outputs import write_outputs
from partitioner.app.outset import output_set
from partitioner.app.staged_cert import staged_certificate
from partitioner.core.errors import DoesNotFit, UserError
from partitioner.core.graph import TensorGraph
from partitioner.frontend.load import load_onnx
from partitioner.hw.hardware import Hardware
from partitioner.hw.presets import require_precision
from partitioner.hw.toml import file_pipeline_order, load_hardware
from partitioner.model.partition import Partition
from partitioner.plan.latency_dp import latency_auto_max_shard
from partitioner.plan.staged_dp import auto_max_shard
from partitioner.sim.objective import beats
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate
from policies.anneal import SearchResult


def load_model(path: str, input_shapes: dict | None = None, precision: str = "fp32", *, granularity: str = "fused",
               phase: str | None = None, context: int | None = None, decoder: bool = False,
               sequences: int = 1, routing: str | None = None) -> TensorGraph:
    return load_onnx(path, input_shapes=input_shapes or None, precision=precision, granularity=granularity,
                     phase=phase, context=context, decoder=decoder, sequences=sequences, routing=routing)


def run(cfg: RunConfig, on_eval: OnEval | None = None) -> Outcome:
    """Load, search, certify, and write partition.json, report.md, trace.json, partition.png and config.json as
    one set (partitioner/app/outset.py). Within cfg.max_time_s and on Ctrl-C the search stops and the best valid
    partition found so far is written, marked interrupted."""
    validate_config(cfg)
    run_budget = RunBudget(cfg.max_time_s)
    hw, graph = _load(cfg)
    method = cfg.method or default_method(graph.n_ops)
    budget = DEFAULT_BUDGET if cfg.budget is None else cfg.budget
    max_shard = _max_shard(cfg, hw)
    batch = stream_batch(cfg)
    with run_budget.catch_sigint():
        staged = None
        if cfg.objective == "throughput" and max_shard > 1 and file_pipeline_order(cfg.hardware) == "auto":
            # the path through the grid (hw/order.py), within --max-time and Ctrl-C
            hw, staged = staged_in_order(graph, hw, max_shard, batch, lambda: run_budget.stop_reason() is not None)
        found, stopped, whole_op_error = _search(graph, hw, cfg, method, budget, max_shard, on_eval, run_budget)
        best, found_by, cert, stopped = keep_the_best(graph, hw, cfg, method, max_shard, found.best, stopped,
                                                      run_budget, staged)
        if best is None:
            raise whole_op_error
        best = traced(graph, hw, best, batch)
        if stopped is None and run_budget.interrupted:   # Ctrl-C during the certificate: its solve ran to its limit
            stopped = "interrupted by Ctrl-C during the certificate, after the search finished"
        outcome = Outcome(cfg.model, graph, hw, method, best, found.evaluations, found.wall_s, found.history, cert,
                          found_by=found_by, interrupted=stopped, batch=batch, objective=cfg.objective)
        config = asdict(cfg) | {"method": method, "budget": budget, "max_shard": max_shard}
        with output_set(cfg.out, "run") as staging:
            names = write_outputs(staging, outcome, config=config, hardware_spec=cfg.hardware)
    return replace(outcome, files=tuple(str(Path(cfg.out) / Path(n).name) for n in names))


def keep_the_best(graph: TensorGraph, hw: Hardware, cfg: RunConfig, method: str, max_shard: int,
                  searched: Evaluation | None, stopped: str | None, run_budget: RunBudget,
                  staged: Evaluation | None = None
                  ) -> tuple[Evaluation | None, str | None, Partition | None, str | None]:
    """What every method and `partition finetune` do after their own search, so none returns less than the
    default run would: the staged DP's split plans (or the latency plans), the split-plan local search, the
    certificate and its solves' plans, each kept when it scores better. Returns (best, what found it when not the
    search, the certificate, why the run stopped early); best is None only when `searched` is None (no whole-op
    plan fits) and no split plan fits either. `staged`: the staged DP's best plan when the run has scored it already
    (candidates.staged_in_order)."""
    best, found_by, staged = _staged_plans(graph, hw, cfg, method, max_shard, searched, run_budget, staged)
    if best is None:
        return None, None, None, stopped
    return _certificate(graph, hw, cfg, method, max_shard, searched, best, found_by, staged, stopped, run_budget)


def _load(cfg: RunConfig) -> tuple[Hardware, TensorGraph]:
    hw = load_hardware(cfg.hardware, cfg.chiplets, memory_tier=cfg.memory_tier)
    limits.check_chiplets(hw.n_chiplets, f"hardware {cfg.hardware}")
    require_precision(hw, cfg.precision)   # before the model loads and any search starts
    graph = load_model(cfg.model, cfg.input_shapes, cfg.precision, granularity=cfg.granularity, phase=cfg.phase,
                       context=cfg.context, decoder=cfg.decoder,
                       sequences=cfg.batch if cfg.phase == "decode" else 1, routing=cfg.routing)
    return hw, graph


def _max_shard(cfg: RunConfig, hw: Hardware) -> int:
    if cfg.max_shard is not None and cfg.max_shard > hw.n_chiplets:
        raise UserError(f"--max-shard {cfg.max_shard} is larger than the package's {hw.n_chiplets} chiplets",
                        f"pass --max-shard between 1 and {hw.n_chiplets}")
    if cfg.max_shard is not None:
        return cfg.max_shard
    # one inference at a time leaves every chiplet free for every layer
    return latency_auto_max_shard(hw.n_chiplets) if cfg.objective == "latency" else auto_max_shard(hw.n_chiplets)


def _search(graph: TensorGraph, hw: Hardware, cfg: RunConfig, method: str, budget: int, max_shard: int,
            on_eval: OnEval | None, run_budget: RunBudget) -> tuple[SearchResult, str | None, DoesNotFit | None]:
    """The method's search over whole-op plans: (result, why it stopped early, None). When no plan with every op
    whole fits the package (the repair proves it) but split plans may, the result holds no plan and the error is
    kept: the staged plans run, and the error is raised only if none of them fits either."""
    try:
        found, stopped = bounded_search(graph, hw, method, budget=budget, seed=cfg.seed,
                                        time_limit_s=cfg.time_limit_s, policy=cfg.policy, on_eval=on_eval,
                                        run_budget=run_budget, batch=stream_batch(cfg), objective=cfg.objective)
        return found, stopped, None
    except DoesNotFit as exc:
        if not (max_shard > 1 or cfg.objective == "latency") or method == "exact":
            raise
        return SearchResult(method, None, 0, (), 0.0), None, exc


def _staged_plans(graph: TensorGraph, hw: Hardware, cfg: RunConfig, method: str, max_shard: int,
                  searched: Evaluation | None, run_budget: RunBudget, staged: Evaluation | None = None
                  ) -> tuple[Evaluation | None, str | None, Evaluation | None]:
    """The best of the search's plan, the staged DP's split plans (the latency plans under --objective latency, which
    include whole-op ones) and the split-plan local search: (best, what found it when not the search, the best
    staged plan). `searched` is None when no whole-op plan fits; then the best is None if no split plan fits."""
    chosen, found_by = searched, None
    latency = cfg.objective == "latency"
    if (max_shard > 1 or latency) and run_budget.stop_reason() is None:
        if latency:
            # scored one inference alone: if it wins, traced() simulates it over a whole stream
            staged = best_latency(graph, hw, max_shard, batch=stream_batch(cfg), full_report=False)
            what = f"the latency plans with ops split up to {max_shard} ways (latency_dp.py)"
        else:
            staged = staged if staged is not None else best_staged(graph, hw, max_shard, batch=stream_batch(cfg))
            what = f"the staged DP with ops split up to {max_shard} ways (staged_dp.py)"
        if staged is not None and (chosen is None or beats(staged, chosen, cfg.objective)):
            chosen, found_by = staged, what + ("; no plan with every op whole fits" if searched is None else "")
        refined = split_refine(graph, hw, method, cfg.split_budget, cfg.seed, max_shard, run_budget,
                               stream_batch(cfg), cfg.objective)
        if refined is not None and chosen is not None and beats(refined, chosen, cfg.objective):
            chosen, found_by = refined, (f"{refined.partition.status}: split-plan local search from the staged "
                                         f"DP ({cfg.split_budget} evaluations)")
    return chosen, found_by, staged


def _certificate(graph: TensorGraph, hw: Hardware, cfg: RunConfig, method: str, max_shard: int,
                 searched: Evaluation | None, best: Evaluation, found_by: str | None, staged: Evaluation | None,
                 stopped: str | None, run_budget: RunBudget
                 ) -> tuple[Evaluation, str | None, Partition | None, str | None]:
    """Certify the run's best and keep any better plan a certificate's solve finds:
    (best, found_by, certificate, why the run stopped early). Under --objective latency the certificate is the
    analytical latency bound (certify.latency_certificate) and no CP-SAT model runs: they bound the busiest
    resource, a throughput."""
    cert = None
    if cfg.objective == "latency":
        return best, found_by, latency_certificate(graph, hw, max_shard) if cfg.certificate else None, stopped
    if searched is None:   # no whole-op plan fits: the certificate covers the split plans alone
        cert = sharded_certificate(graph, hw, max_shard) if cfg.certificate else None
    elif method == "exact":
        cert = searched.partition
    elif cfg.certificate and run_budget.stop_reason() is None and run_budget.search_left() >= CERTIFICATE_MIN_S:
        cert = certify(graph, hw, searched.assignment, seed=cfg.seed, run_budget=run_budget, batch=stream_batch(cfg))
        best, solved_by = keep_best(graph, hw, best, cert, batch=stream_batch(cfg), objective=cfg.objective)
        found_by = solved_by or found_by
    if cert is not None and max_shard > 1:
        # CP-SAT's whole-op bound still says how far plans without splits can go; shown beside the certificate
        if searched is not None:
            cert = sharded_certificate(graph, hw, max_shard, cert)
        if cfg.certificate:   # CP-SAT over split plans: a tighter proven bound, and its plan competes
            cert, plan = staged_certificate(graph, hw, max_shard, cert,
                                            [best.partition] + ([staged.partition] if staged else []), seed=cfg.seed,
                                            run_budget=run_budget, batch=stream_batch(cfg))
            if plan is not None and beats(plan, best, cfg.objective):
                best, found_by = plan, (f"the certificate's staged CP-SAT solve over split plans "
                                        f"({cert.info['staged_status']}), warm-started from the run's best plan")
    elif cfg.certificate and cert is None:
        stopped = stopped or run_budget.stop_reason() or "the --max-time budget left no time for the certificate"
    return best, found_by, cert, stopped


def traced(graph: TensorGraph, hw: Hardware, best: Evaluation, batch: int) -> Evaluation:
    """Candidates are scored untraced; the winner is simulated once more with a trace (the same figures,
    tests/test_simulator.py, plus trace.json's events)."""
    if best.report.trace_events:
        return best
    return Evaluation(best.partition, simulate(graph, hw, best.partition, trace=True, batch=batch))
