"""`partition explore MODEL`: hardware design-space exploration with a learned design agent (design_agent.py) or
optuna's NSGA-II.

Each trial is a Design (dse_space.py). Evaluating one builds its Hardware at its node, maps the model with the cheap
inner partitioner (the DP contiguous split, or the greedy one when it scores higher, then check(); a CP-SAT repair
only if neither is valid) and simulates it: throughput and energy per inference. ppa.py adds area, leakage and cost.
Objectives: maximise throughput, minimise power and cost. After the study the front's designs are re-scored by the
default run itself (rescore.py), so each records what `partition MODEL --hardware DESIGN.toml` gives. Designs evaluate in parallel on a local process pool or on
Ray (`--ray auto|ADDRESS`); both hand back concurrent.futures.Future, so one ask/tell loop serves both.

The study lives in OUT/study.journal (optuna's JournalStorage): a killed explore, run again with the same --out,
resumes: finished trials are kept, trials that were running are failed and their designs re-queued, and a design
already evaluated is never evaluated twice (its stored result is reused).
"""
from __future__ import annotations

import concurrent.futures as cf
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from partitioner.hw import ppa
from partitioner.app import backend
from partitioner.app.backend import LocalPool, RayBackend  # noqa: F401 - the names explore had
from partitioner.app.dse_space import Space, design_from_params, hardware_of, validate
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.model.partition import Partition

STUDY_FILE = "study.journal"
OBJECTIVES = ("throughput_per_s", "power_w", "cost_usd")
DIRECTIONS = ("maximize", "minimize", "minimize")


@dataclass(frozen=True)
class ExploreConfig:
    """Everything one `partition explore` run depends on; written to OUT/config.json."""

    model: str
    budget: int = 30
    """designs to try (trials), resumed trials included."""
    workers: int = 2
    """designs evaluated at once (local processes, or Ray tasks in flight)."""
    seed: int = 0
    out: str = "explore"
    space: str | None = None
    """--space FILE.toml; None is the default Space()."""
    sampler: str = "learned"
    """--method: learned (the design agent, design_agent.py; the default: the best hypervolume in
    benchmarks/RESULTS.md, "Co-design"), nsga2 or random (the baseline)."""
    agent: str | None = None
    """--agent FILE: a pretrained design agent for --method learned; None: policies/pretrained/design_agent.pt."""
    population: int | None = None
    """NSGA-II population; None: max(4, min(50, budget // 4)), so a small budget still sees a few generations."""
    ray: str | None = None
    """None: local process pool. 'auto' or a cluster address: Ray."""
    input_shapes: dict = field(default_factory=dict)
    precision: str = "fp16"
    max_area_mm2: float | None = None
    """area budget (silicon, mm2): a design above it is rejected before it is simulated."""
    max_power_w: float | None = None
    """power budget (W, flat out): a design above it is rejected after it is simulated."""


@dataclass(frozen=True)
class DesignResult:
    """What one evaluated design scored; fits=False when the model does not fit it (no valid partition)."""

    fits: bool
    throughput_per_s: float = 0.0
    power_w: float = 0.0
    cost_usd: float = 0.0
    area_mm2: float = 0.0
    energy_j: float = 0.0
    latency_s: float = 0.0
    partitioner: str = ""
    why: str = ""
    seconds: float = 0.0
    violation_mib: float = 0.0
    """how far a design that does not fit is from fitting (NSGA-II's constraint: 0 when it fits)."""


# --- one design (runs in a worker) -------------------------------------------------------------------------------
_GRAPHS: dict[tuple, TensorGraph] = {}


def _graph(model: str, shapes: tuple, precision: str) -> TensorGraph:
    """Each worker process loads the model once."""
    key = (model, shapes, precision)
    if key not in _GRAPHS:
        from partitioner.app.run import load_model

        _GRAPHS[key] = load_model(model, dict(shapes), precision)
    return _GRAPHS[key]


def map_design(graph: TensorGraph, hw, staged=None) -> tuple[Partition | None, str]:
    """The inner partitioner, the default run's planner without its search: the best simulated of the DP and
    greedy contiguous splits and the staged DP's split plans at every group cap up to the run's --max-shard auto
    (app/candidates.best_staged, as `partition MODEL --hardware design.toml` scores them), else a short CP-SAT
    repair. With a memory tier, a plan streams the weights its chiplets cannot hold (solver.residency.choose_streamed,
    the rule repair uses). The run adds annealing and CP-SAT's plans, which rarely beat the staged DP
    (benchmarks/RESULTS.md, "Exploration": a design's recorded throughput against its re-run). `staged`: the staged
    DP's best plan on hw when in_run_order has scored it already."""
    from partitioner.app.candidates import best_staged
    from partitioner.model.partition import check
    from partitioner.plan.splits import dp_partition, greedy_partition
    from partitioner.plan.staged_dp import auto_max_shard
    from partitioner.sim.simulator import simulate
    from solver.residency import choose_streamed

    best, best_thr, how = None, -1.0, ""
    for name, split in (("dp", dp_partition), ("greedy", greedy_partition)):
        a = split(graph, hw)
        part = Partition(a, a, 0, name, streamed=choose_streamed(graph, hw, a))
        if not check(graph, hw, part):
            thr = simulate(graph, hw, part).throughput_per_s
            if thr > best_thr:
                best, best_thr, how = part, thr, name
    max_shard = auto_max_shard(hw.n_chiplets)
    if max_shard > 1:
        staged = staged if staged is not None else best_staged(graph, hw, max_shard)
        if staged is not None and staged.throughput > best_thr:
            best, best_thr, how = staged.partition, staged.throughput, "staged-dp"
    if best is not None:
        return best, how
    from solver.repair import repair

    # what `partition MODEL --method dp` does too (repair of the DP split, same limit and seed), so it reproduces
    part = repair(graph, hw, dp_partition(graph, hw), time_limit_s=5.0, seed=0)
    return (part, "repair") if not check(graph, hw, part) else (None, "")


def in_run_order(graph: TensorGraph, hw) -> tuple:
    """(hw along the pipeline order `partition MODEL --hardware design.toml` keeps, that order's best staged plan
    or None when no order was chosen): a design file leaves pipeline_order to auto, so on a heterogeneous grid the
    run simulates each tied order's staged plan and keeps the fastest (app/candidates.staged_in_order); a design is
    scored on the chiplet order its re-run uses, and map_design reuses the plan rather than solving it again."""
    from partitioner.app.candidates import staged_in_order
    from partitioner.plan.staged_dp import auto_max_shard

    max_shard = auto_max_shard(hw.n_chiplets)
    return staged_in_order(graph, hw, max_shard) if max_shard > 1 else (hw, None)


def evaluate_design(model: str, shapes: tuple, precision: str, params: dict,
                    budgets: tuple[float | None, float | None] = (None, None)) -> DesignResult:
    """Score one design: map, simulate, then power, area and cost from ppa. budgets: (mm2, W) or None each; a
    design over one does not fit (its violation: the relative excess, in percent)."""
    from partitioner.sim.simulator import simulate

    start = time.perf_counter()
    graph = _graph(model, shapes, precision)
    design = design_from_params(params)
    hw = hardware_of(design, precision)
    mib = 2.0 ** 20
    # Necessary conditions: the weights fit SRAM plus HBM, and the largest op fits a chiplet's SRAM (its weights
    # too unless they can stream from a memory tier).
    need = int(graph.weight_bytes.sum())
    have = sum(c.sram_bytes for c in hw.chiplets) + sum(st.capacity_bytes for st in hw.memory_stacks)
    largest_op = largest_resident(graph, bool(hw.memory_stacks))
    biggest = max(c.sram_bytes for c in hw.chiplets)
    short = max(0, need - have) + max(0, largest_op - biggest)

    def no_fit(why: str, violation: float) -> DesignResult:
        return DesignResult(False, why=why, seconds=time.perf_counter() - start, violation_mib=violation)

    if short > 0:
        return no_fit(f"weights {need / mib:,.1f} MiB vs SRAM+HBM {have / mib:,.1f} MiB; largest op "
                      f"{largest_op / mib:,.1f} MiB vs the largest chiplet's {biggest / mib:,.1f} MiB",
                      short / mib)
    if hw.memory_stacks and design.package != "interposer":
        return no_fit(f"{len(hw.memory_stacks)} HBM stacks on an {design.package} package: HBM's interface needs a "
                      "silicon interposer", 1.0)
    try:
        cost = ppa.ppa(hw, design.process_nm, precision=precision, package=design.package)
    except UserError as exc:   # a die or interposer too large for a wafer
        return no_fit(exc.problem, 1.0)
    max_area, max_power = budgets
    if max_area is not None and cost.area_mm2 > max_area:
        return no_fit(f"{cost.area_mm2:,.0f} mm2 of silicon over the {max_area:g} mm2 budget",
                      100 * (cost.area_mm2 / max_area - 1))
    try:
        hw, staged = in_run_order(graph, hw)
        part, how = map_design(graph, hw, staged)
    except UserError as exc:   # the repair proves no valid partition exists
        return no_fit(exc.problem, 1.0)
    if part is None:
        return no_fit("no valid partition (SRAM too small for the split)", 1.0)
    rep = simulate(graph, hw, part)
    power = ppa.power_w(rep.energy_j, rep.throughput_per_s, cost.leakage_w)
    if max_power is not None and power > max_power:
        return no_fit(f"{power:,.1f} W over the {max_power:g} W budget", 100 * (power / max_power - 1))
    return DesignResult(True, rep.throughput_per_s, power, cost.cost_usd, cost.area_mm2, rep.energy_j,
                        rep.latency_s, how, seconds=time.perf_counter() - start)


# --- backends (partitioner/app/backend.py; the names stay importable from here) -----------------------------------
def _install_graph(key: tuple, graph: TensorGraph) -> None:
    _GRAPHS[key] = graph


def make_backend(workers: int, ray_address: str | None, graph_key: tuple | None = None,
                 graph: TensorGraph | None = None):
    """explore's backend: each local worker receives the loaded graph once (Ray workers load it on first use)."""
    init = (_install_graph, (graph_key, graph)) if graph is not None else (None, ())
    return backend.make_backend(workers, ray_address, *init)


# --- the study ----------------------------------------------------------------------------------------------------
def _sampler(cfg: ExploreConfig):
    import optuna

    if cfg.sampler in ("random", "learned"):   # learned: every trial is enqueued by the agent
        return optuna.samplers.RandomSampler(seed=cfg.seed)
    if cfg.sampler != "nsga2":
        raise UserError(f"unknown method {cfg.sampler!r}", "use learned, nsga2 or random")
    pop = cfg.population or max(4, min(50, cfg.budget // 4))
    return optuna.samplers.NSGAIISampler(population_size=pop, seed=cfg.seed)


def open_study(cfg: ExploreConfig, out: Path):
    """Create or resume OUT/study.journal. Trials left RUNNING by a killed run are failed and their designs
    re-queued, so they are evaluated once, now."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(out / STUDY_FILE)))
    study = optuna.create_study(study_name="explore", storage=storage, directions=list(DIRECTIONS),
                                sampler=_sampler(cfg), load_if_exists=True)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        study.enqueue_trial(t.params, user_attrs={"requeued": True}, skip_if_exists=True)
    return study


def _suggest(trial, space: Space) -> dict:
    return {name: trial.suggest_categorical(name, list(values)) for name, values in space.axes().items()}


def _done_key(params: dict) -> tuple:
    """Designs equal up to their moot axes (Design.canonical) share a key, so one is evaluated once."""
    return tuple(sorted(asdict(design_from_params(params).canonical()).items()))


def explore_study(cfg: ExploreConfig, graph: TensorGraph, space: Space, out: Path,
                  on_done: Callable[[int, int], None] | None = None):
    """Run trials until `budget` are finished (COMPLETE or FAIL=does not fit). Returns the study."""
    from optuna.trial import TrialState

    study = open_study(cfg, out)
    finished = {TrialState.COMPLETE, TrialState.FAIL}
    results: dict[tuple, dict] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state in finished and "result" in t.user_attrs:
            results[_done_key(t.params)] = t.user_attrs["result"]
    n_done = sum(1 for t in study.get_trials(deepcopy=False) if t.state in finished and "result" in t.user_attrs)
    shapes = tuple(sorted((k, tuple(v)) for k, v in graph.metadata.get("input_shapes", {}).items()))
    _GRAPHS[(cfg.model, shapes, cfg.precision)] = graph   # the in-process (1 worker) path reuses it too
    started = time.perf_counter()
    backend = make_backend(cfg.workers, cfg.ray, (cfg.model, shapes, cfg.precision), graph)
    study.set_user_attr("backend_start_s", time.perf_counter() - started)
    pending: dict[cf.Future, object] = {}
    agent = _agent(cfg, graph, space, study, finished)
    try:
        if on_done:
            on_done(n_done, cfg.budget)
        while n_done + len(pending) < cfg.budget or pending:
            while n_done + len(pending) < cfg.budget and len(pending) < max(1, cfg.workers):
                if agent is not None:
                    study.enqueue_trial(agent.propose({_done_key(t.params) for t in pending.values()}))
                trial = study.ask()
                params = _suggest(trial, space)
                known = results.get(_done_key(params))
                if known is not None:   # the same design again: reuse it, do not re-evaluate
                    _tell(study, trial, DesignResult(**known), reused=True)
                    if agent is not None:
                        agent.observe(params, known)
                    n_done += 1
                    if on_done:
                        on_done(n_done, cfg.budget)
                    continue
                pending[backend.submit(evaluate_design, cfg.model, shapes, cfg.precision, params,
                                       (cfg.max_area_mm2, cfg.max_power_w))] = trial
            if not pending:
                continue
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                trial = pending.pop(fut)
                res = fut.result()
                _tell(study, trial, res)
                results[_done_key(trial.params)] = asdict(res)
                if agent is not None:
                    agent.observe(trial.params, asdict(res))
                n_done += 1
                if on_done:
                    on_done(n_done, cfg.budget)
    finally:
        backend.close()
    return study


def _agent(cfg: ExploreConfig, graph: TensorGraph, space: Space, study, finished):
    """--method learned: the design agent, told every result a resumed study already holds."""
    if cfg.sampler != "learned":
        return None
    from partitioner.app.design_agent import DesignAgent, load_agent

    agent = DesignAgent(graph, space, cfg.precision, cfg.seed, (cfg.max_area_mm2, cfg.max_power_w),
                        load_agent(cfg.agent))
    done = [t for t in study.get_trials(deepcopy=False) if t.state in finished and "result" in t.user_attrs]
    for t in done:
        agent.observe(t.params, t.user_attrs["result"], fine_tune=False)
    if done:
        agent.fine_tune()
    return agent


def _tell(study, trial, res: DesignResult, reused: bool = False) -> None:
    trial.set_user_attr("result", asdict(res))
    if reused:
        trial.set_user_attr("reused", True)
    # Designs that do not fit are COMPLETE with placeholder objectives (0/s, 0 W, $0) and a positive constraint
    # violation, which NSGA-II ranks below every fitting design; the Pareto files list fitting designs only.
    # The constraint drives NSGA-II's constrained domination: designs that fit beat those that do not, and among
    # those that do not, the closer to fitting (MiB of SRAM short) the better, so the search leaves that region.
    trial.set_constraint("sram_short_mib", res.violation_mib)
    study.tell(trial, [res.throughput_per_s, res.power_w, res.cost_usd])


def largest_resident(graph: TensorGraph, memory_tier: bool) -> int:
    """Bytes the largest op needs in one chiplet's SRAM: weights plus activations, or activations alone when its
    weights can stream from a memory tier."""
    if not graph.n_ops:
        return 0
    return int((graph.work_bytes if memory_tier else graph.weight_bytes + graph.work_bytes).max())


def prune_space(graph: TensorGraph, space: Space) -> Space:
    """Drop SRAM sizes smaller than the model's largest op (weights plus activations; activations alone when the
    space has HBM): no design with them can fit, whatever the other axes, and a genetic search over categories
    wastes its budget learning that."""
    from dataclasses import replace

    tier = max(space.hbm_gib) > 0
    largest = largest_resident(graph, tier)
    keep = tuple(v for v in space.sram_mib if v * 2**20 >= largest)
    if not keep:
        raise UserError(f"the model's largest op needs {largest / 2**20:,.1f} MiB but the space's largest SRAM is "
                        f"{max(space.sram_mib):g} MiB per chiplet",
                        f"allow sram_mib of at least {math.ceil(largest / 2**20)}"
                        + ("" if tier else " or HBM (hbm_gib) to stream weights from") + " (--space FILE.toml)")
    return replace(space, sram_mib=keep)


def check_fits_somewhere(graph: TensorGraph, space: Space) -> None:
    """A design where nothing fits: the largest package in the space holds less than the model's weights."""
    from partitioner.hw.hardware import edge_stacks, near_square

    need = int(graph.weight_bytes.sum())
    n = max(space.chiplets) * max(space.packages)
    sram = max(max(space.sram_mib), max(space.b_sram_mib) if max(space.b_macs_per_cycle) else 0)
    per_package = max(len(edge_stacks(*near_square(max(space.chiplets)))), max(space.hbm_stacks))
    stacks = per_package * max(space.packages) if max(space.hbm_gib) else 0
    have = (n * sram + stacks * max(space.hbm_gib) * 1024) * 2**20
    if need > have:
        raise UserError(f"the model's weights ({need / 2**20:,.0f} MiB) exceed the largest board in the space "
                        f"({n} chiplets x {sram:g} MiB"
                        + (f" + {stacks} HBM stacks x {max(space.hbm_gib):g} GiB" if stacks else "")
                        + f" = {have / 2**20:,.0f} MiB)",
                        "widen the space: more chiplets, more sram_mib or hbm_gib (--space FILE.toml)")


def check_resumable(out: Path, cfg: ExploreConfig, space: Space) -> None:
    """A study in --out is resumed only for the same model, import options and space (budget, workers, seed,
    sampler and backend may change): mixing designs of two questions in one front would be wrong."""
    import json

    from partitioner.app.dse_space import space_file_text

    if not (out / STUDY_FILE).exists():
        return
    try:
        old = json.loads((out / "config.json").read_text())
        old_space = (out / "space.toml").read_text()
    except (OSError, ValueError):
        raise UserError(f"{out} holds a study journal but no readable config.json and space.toml",
                        "pass a fresh --out directory")
    mine = asdict(cfg)
    for key in ("model", "precision", "input_shapes", "max_area_mm2", "max_power_w"):
        if old.get(key) != json.loads(json.dumps(mine[key])):
            raise UserError(f"{out} holds a study for {key} {old.get(key)!r}, not {mine[key]!r}",
                            "pass a fresh --out directory, or the same options to resume it")
    if old_space != space_file_text(space):
        raise UserError(f"{out} holds a study over another design space ({out / 'space.toml'})",
                        "pass a fresh --out directory, or the same --space to resume it")


def validate_config(cfg: ExploreConfig) -> None:
    if cfg.budget < 1:
        raise UserError(f"--budget must be at least 1, got {cfg.budget}", "pass a number of designs, e.g. 30")
    backend.check_workers(cfg.workers)
    backend.check_ray_address(cfg.ray)
    for name, value in (("--max-area-mm2", cfg.max_area_mm2), ("--max-power-w", cfg.max_power_w)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise UserError(f"{name} must be a positive number, got {value}", f"pass e.g. {name} 500, or leave it out")
    if cfg.precision == "fp8":   # dse_space.hardware_of designs chiplets with the legacy rates only
        raise UserError("partition explore designs chiplets without fp8 MAC rates",
                        "pass --precision bf16 (or fp16, int8), or run fp8 on a preset such as h100")


def run_explore(cfg: ExploreConfig, on_done: Callable[[int, int], None] | None = None) -> dict:
    """Validate, search, and write pareto.json, pareto.csv, designs/*.toml, pareto.png and config.json."""
    from partitioner.app.dse_space import load_space, save_space
    from partitioner.app.pareto import fitting_designs, write_results
    from partitioner.app.rescore import rescore_front
    from partitioner.app.outputs import prepare_out_dir
    from partitioner.app.run import load_model
    from partitioner.core.files import write_json

    validate_config(cfg)
    space = load_space(cfg.space)
    validate(space)
    graph = load_model(cfg.model, cfg.input_shapes, cfg.precision)
    space = prune_space(graph, space)
    check_fits_somewhere(graph, space)
    out = prepare_out_dir(cfg.out)
    check_resumable(out, cfg, space)
    write_json(out / "config.json", asdict(cfg))
    save_space(out / "space.toml", space)
    start = time.perf_counter()
    study = explore_study(cfg, graph, space, out, on_done)
    # the front re-scored by the default run's own planner, so each design records what its re-run gives
    rows, front, stats = rescore_front(study, cfg, fitting_designs(study), lambda: make_backend(cfg.workers, cfg.ray))
    return write_results(study, cfg, out, time.perf_counter() - start, rows, front, stats)


def format_summary(summary: dict) -> str:
    rows = [f"explored     {summary['evaluated']} designs ({summary['fitting']} fit the model) "
            f"in {summary['wall_s']:.1f} s",
            f"pareto       {len(summary['pareto'])} non-dominated designs on nodes "
            f"{', '.join(str(n) + ' nm' for n in summary['nodes'])}"]
    for d in summary["pareto"][:8]:
        rows.append(f"  {d['throughput_per_s']:>12,.1f}/s {d['power_w']:>8.2f} W {d['cost_usd']:>9,.0f} $ "
                    f"{d['area_mm2']:>8,.0f} mm2  {d['process_nm']:>2} nm  {d['hardware_file']}")
    rows.append(f"written      {', '.join(summary['files'])}")
    return "\n".join(rows)
