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

from partitioner.errors import UserError
from partitioner.graph import TensorGraph
from partitioner.hardware import PRESETS, Hardware, load_hardware
from partitioner.onnx_import import load_onnx
from partitioner.partition import Partition, check
from partitioner.app.pipeline import evaluate
from partitioner.report import (Evaluation, plot_partition, report_markdown, write_chrome_trace, write_json,
                                write_text)
from partitioner.simulator import simulate
from partitioner.splits import dp_partition, greedy_partition
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

    @property
    def solver_bound_throughput_per_s(self) -> float | None:
        c = self.certificate
        if c is None or not c.lower_bound_cycles:
            return None
        return self.hw.clock_hz / c.lower_bound_cycles


def load_model(path: str, input_shapes: dict | None = None, precision: str = "fp32") -> TensorGraph:
    return load_onnx(path, input_shapes=input_shapes or None, precision=precision)


def default_method() -> str:
    """anneal: at the default budget it matches or beats rl and learned on every measured case (benchmarks/RESULTS.md,
    "Method comparison" and "Learned move selection (issue 12)"), and keep_best adds CP-SAT's solve on top."""
    return "anneal"


def search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int, time_limit_s: float | None,
           policy: str | None = None, on_eval: OnEval | None = None) -> SearchResult:
    """Run one method; every method's partitions go through the same repair + simulate."""
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}", f"use one of {', '.join(METHODS)}")
    if budget < 1:
        raise UserError(f"--budget must be at least 1, got {budget}", "pass a positive number of evaluations")
    limit = DEFAULT_REPAIR_LIMIT_S if time_limit_s is None else time_limit_s

    def evaluate_fn(proposal: np.ndarray) -> Evaluation:
        return evaluate(graph, hw, proposal, time_limit_s=limit, seed=seed)

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

        part = optimize(graph, hw, time_limit_s=DEFAULT_EXACT_LIMIT_S if time_limit_s is None else time_limit_s,
                        seed=seed, hint=dp_partition(graph, hw))
        return single(Evaluation(part, simulate(graph, hw, part)))
    if method == "learned":
        from policies.move_policy import learned_search

        return learned_search(graph, hw, budget=budget, seed=seed, evaluate_fn=evaluate_fn, policy_path=policy,
                              on_eval=on_eval)
    from policies.rl_search import rl_search

    return rl_search(graph, hw, budget=budget, seed=seed, evaluate_fn=evaluate_fn, policy_path=policy,
                     on_eval=on_eval)


def certify(graph: TensorGraph, hw: Hardware, hint: np.ndarray, seed: int = 0,
            time_limit_s: float = CERTIFICATE_LIMIT_S) -> Partition:
    """CP-SAT's proven lower bound on the bottleneck chiplet's cycles: how far any partition can go."""
    from solver.optimize import optimize

    return optimize(graph, hw, time_limit_s=time_limit_s, seed=seed, hint=hint)


def keep_best(graph: TensorGraph, hw: Hardware, searched: Evaluation, cert: Partition
              ) -> tuple[Evaluation, str | None]:
    """The better of the search's best and the partition CP-SAT found while proving the certificate (warm-started
    from the search's best), both scored by the simulator: a run never returns less than the best it evaluated.
    Returns (best, None) when the search's own partition wins, else (certificate's, its provenance)."""
    if check(graph, hw, cert.assignment) or np.array_equal(cert.assignment, searched.assignment):
        return searched, None
    solved = Evaluation(cert, simulate(graph, hw, cert, trace=True))
    if solved.throughput > searched.throughput:
        return solved, f"the certificate's CP-SAT solve ({cert.status}), warm-started from the search's best"
    return searched, None


def run(cfg: RunConfig, on_eval: OnEval | None = None) -> Outcome:
    """Load, search, certify, and write partition.json, report.md, trace.json, partition.png and config.json."""
    if cfg.chiplets is not None and cfg.chiplets < 1:
        raise UserError(f"--chiplets must be at least 1, got {cfg.chiplets}", "pass a positive chiplet count")
    if cfg.time_limit_s is not None and not cfg.time_limit_s > 0:
        raise UserError(f"--time-limit must be positive, got {cfg.time_limit_s}", "pass seconds, e.g. --time-limit 5")
    method = cfg.method or default_method()
    budget = DEFAULT_BUDGET if cfg.budget is None else cfg.budget
    graph = load_model(cfg.model, cfg.input_shapes, cfg.precision)
    hw = load_hardware(cfg.hardware, cfg.chiplets)
    out_dir = prepare_out_dir(cfg.out)
    found = search(graph, hw, method, budget=budget, seed=cfg.seed, time_limit_s=cfg.time_limit_s,
                   policy=cfg.policy, on_eval=on_eval)
    best = Evaluation(found.best.partition, simulate(graph, hw, found.best.partition, trace=True))
    cert, found_by = None, None
    if method == "exact":
        cert = found.best.partition
    elif cfg.certificate:
        cert = certify(graph, hw, best.assignment, seed=cfg.seed)
        best, found_by = keep_best(graph, hw, best, cert)
    outcome = Outcome(cfg.model, graph, hw, method, best, found.evaluations, found.wall_s, found.history, cert,
                      found_by=found_by)
    files = write_outputs(out_dir, outcome, config=asdict(cfg) | {"method": method, "budget": budget},
                          hardware_spec=cfg.hardware)
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


# --- outputs ------------------------------------------------------------------------------------------------------------
def partition_document(outcome: Outcome, hardware_spec: str | None, config: dict | None = None) -> dict:
    """The partition.json payload: the assignment by original ONNX node name, metrics and per-chiplet loads."""
    graph, hw, rep = outcome.graph, outcome.hw, outcome.best.report
    a = outcome.best.assignment
    per_chiplet = []
    for c in range(hw.n_chiplets):
        mask = a == c
        per_chiplet.append({
            "chiplet": c,
            "ops": int(mask.sum()),
            "flops": int(graph.flops[mask].sum()),
            "weight_bytes": int(graph.weight_bytes[mask].sum()),
            "busy_fraction": float(rep.chiplet_busy_fraction[c]),
            "memory_fraction": float(rep.chiplet_memory_fraction[c]),
        })
    assignment = {node: int(a[i]) for node, i in graph.onnx_node_owner().items()}
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
    solver_bound = outcome.solver_bound_throughput_per_s
    if solver_bound is not None:
        metrics["solver_bound_throughput_per_s"] = solver_bound
        metrics["solver_bound_status"] = outcome.certificate.status
    return {
        "model": str(outcome.model),
        "hardware": _resolvable(hardware_spec),
        "hardware_name": hw.name,
        "chiplets": hw.n_chiplets,
        "method": outcome.method,
        "found_by": outcome.found_by or outcome.method,
        "precision": graph.metadata.get("precision", "fp32"),
        "input_shapes": {k: list(v) for k, v in graph.metadata.get("input_shapes", {}).items()},
        "assignment": assignment,
        "metrics": metrics,
        "per_chiplet": per_chiplet,
        "search": {"evaluations": outcome.evaluations, "wall_s": outcome.wall_s,
                   "ops_moved_by_repair": outcome.best.partition.ops_moved,
                   "history": [list(h) for h in outcome.history]},
        "config": config or {},
    }


def _resolvable(spec: str | None) -> str | None:
    """A preset name as is, a hardware file as an absolute path, None for the default mesh of `chiplets`."""
    if spec is None or spec in PRESETS:
        return spec
    return str(Path(spec).resolve())


def write_outputs(out_dir: Path, outcome: Outcome, *, config: dict | None, hardware_spec: str | None
                  ) -> tuple[str, ...]:
    """Each file is written to a temp name and renamed, so a killed run leaves old or new files, never halves."""
    graph, hw, rep = outcome.graph, outcome.hw, outcome.best.report
    a = outcome.best.assignment
    files = {
        "partition.json": lambda p: write_json(p, partition_document(outcome, hardware_spec, config)),
        "report.md": lambda p: write_text(p, report_markdown(rep, graph, hw, a, outcome.method)
                                          + _provenance_markdown(outcome) + _certificate_markdown(outcome)),
        "trace.json": lambda p: write_chrome_trace(p, rep, graph, hw),
        "partition.png": lambda p: plot_partition(p, graph, hw, a, rep),
    }
    if config is not None:
        files["config.json"] = lambda p: write_json(p, config)
    for name, write in files.items():
        write(out_dir / name)
    return tuple(str(out_dir / name) for name in files)


def _provenance_markdown(outcome: Outcome) -> str:
    if outcome.found_by is None:
        return f"\n## Found by\n\n{outcome.method}: its own search found this partition.\n"
    return (f"\n## Found by\n\n{outcome.found_by}: it scored above the best of the {outcome.method} search's "
            f"{outcome.evaluations} evaluations, so the run returns it.\n")


def _certificate_markdown(outcome: Outcome) -> str:
    bound = outcome.solver_bound_throughput_per_s
    if bound is None:
        return ""
    thr = outcome.best.report.throughput_per_s
    cert = outcome.certificate
    return (f"\n## Optimality certificate\n\nCP-SAT ({cert.status}, {cert.solve_time_s:.1f} s) proves no valid "
            f"partition's bottleneck chiplet is below {cert.lower_bound_cycles:,.0f} cycles per inference in the "
            f"cost model, so no partition exceeds {bound:,.1f} inferences/s. This partition reaches "
            f"{thr:,.1f}/s: at least {100 * thr / bound:.1f}% of the best possible.\n")


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


def assignment_from_document(graph: TensorGraph, doc: dict, path: str) -> np.ndarray:
    """Map ONNX node name -> chiplet back onto the graph's ops (every op needs at least one named node)."""
    by_node = doc["assignment"]
    a = np.full(graph.n_ops, -1, dtype=np.int64)
    for i, op in enumerate(graph.ops):
        values = [by_node[n] for n in op.onnx_nodes if n in by_node]
        if any(type(c) is not int for c in values):
            raise UserError(f"partition file {path} gives op {op.name} a chiplet that is not an integer "
                            f"({values!r})", "use integer chiplet ids")
        chips = set(values)
        if not chips:
            raise UserError(f"partition file {path} does not place op {op.name} (ONNX nodes {list(op.onnx_nodes)})",
                            "re-run `partition` on this model; the file belongs to another model or import options")
        if len(chips) > 1:
            raise UserError(f"partition file {path} puts the nodes of op {op.name} on chiplets {sorted(chips)}",
                            "give every node of a fused op the same integer chiplet")
        a[i] = chips.pop()
    return a


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
               chiplets: int | None, out: str | None) -> Outcome:
    """Re-score a saved partition on the settings it was made with (or the ones given explicitly)."""
    doc = read_partition_file(partition_path)
    spec, saved_chiplets, saved_shapes, saved_precision = _document_settings(doc, partition_path)
    graph = load_model(model, input_shapes or saved_shapes, precision or saved_precision)
    if hardware is None and spec is not None and spec not in PRESETS and not Path(spec).exists():
        raise UserError(f"partition file {partition_path} was made on hardware file {spec}, which is gone",
                        "pass --hardware with the package description to score it on")
    hw = load_hardware(hardware or spec, chiplets if chiplets is not None else saved_chiplets)
    a = assignment_from_document(graph, doc, partition_path)
    problems = check(graph, hw, a)
    if problems:
        raise UserError(f"partition in {partition_path} is invalid on {hw.name}: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                        "re-run `partition` for this hardware")
    start = time.perf_counter()
    best = Evaluation(Partition(a, a, 0, "loaded"), simulate(graph, hw, a, trace=True))
    outcome = Outcome(model, graph, hw, str(doc.get("method", "loaded")), best, 1, time.perf_counter() - start)
    if out:
        config = {"command": "simulate", "model": model, "partition": partition_path, "hardware": hardware or spec,
                  "chiplets": hw.n_chiplets, "precision": graph.metadata.get("precision"),
                  "input_shapes": {k: list(v) for k, v in graph.metadata.get("input_shapes", {}).items()}}
        files = write_outputs(prepare_out_dir(out), outcome, config=config, hardware_spec=hardware or spec)
        outcome = Outcome(**{**outcome.__dict__, "files": files})
    return outcome


# --- terminal summary ---------------------------------------------------------------------------------------------------
def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def format_outcome(outcome: Outcome) -> str:
    rep, hw = outcome.best.report, outcome.hw
    rows = [
        ("model", f"{outcome.model} ({outcome.graph.n_ops} ops, {outcome.graph.total_flops / 1e9:.2f} GFLOP)"),
        ("hardware", f"{hw.name}: {hw.n_chiplets} chiplets, {hw.topology} {hw.rows}x{hw.cols}"),
        ("method", f"{outcome.method}: {outcome.evaluations} evaluation{'s' * (outcome.evaluations != 1)} in {outcome.wall_s:.1f} s, "
                   + (f"repair moved {outcome.best.partition.ops_moved} ops" if outcome.found_by is None
                      else "best found by the certificate's CP-SAT solve")),
        ("throughput", f"{rep.throughput_per_s:,.1f} inferences/s"),
        ("latency", _si(rep.latency_s, "s")),
        ("energy", f"{_si(rep.energy_j, 'J')} per inference"),
        ("utilisation", f"mean {100 * float(np.mean(rep.chiplet_busy_fraction)):.1f}%, "
                        f"max {100 * float(np.max(rep.chiplet_busy_fraction)):.1f}%"),
        ("bottleneck", rep.bottleneck),
        ("bound", f"{rep.bound_throughput_per_s:,.1f}/s analytical (perfect balance)"),
    ]
    solver_bound = outcome.solver_bound_throughput_per_s
    if solver_bound is not None:
        rows.append(("certificate", f"{solver_bound:,.1f}/s proven by CP-SAT ({outcome.certificate.status}); "
                                    f"this is {100 * rep.throughput_per_s / solver_bound:.1f}% of it"))
    if outcome.files:
        rows.append(("written", ", ".join(outcome.files)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
