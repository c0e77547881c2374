"""What one `partition MODEL.onnx` run is given (RunConfig) and what it returns (Outcome), and the checks every
option passes before the model is read or --out is touched."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from partitioner.app import limits
from partitioner.app.methods import METHODS, check_method
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition
from partitioner.sim.objective import DEFAULT_OBJECTIVE, check_objective
from partitioner.sim.report import Evaluation

DEFAULT_BUDGET = 64
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
    """Inferences per read of a weight streamed from the memory tier (`--batch`). In decode, the sequences one step
    decodes together: the model is imported at `batch` sequences (one token each, `batch` KV caches) and each
    streamed weight is read once per step, so tokens/s = batch x steps/s (stream_batch, docs/onnx_import.md)."""
    decoder: bool = False
    """`--decoder`: the model is a decoder even where the importer finds no causal mask or KV cache."""
    memory_tier: bool = True
    """False (`--no-memory-tier`) drops the package's memory stacks: every weight must fit in SRAM."""
    max_shard: int | None = None
    """Largest shard degree (group size) an op may split into; 1 keeps every op whole (no intra-op sharding);
    None means staged_dp.auto_max_shard(chiplets): min(16, max(4, chiplets // 8)), or under --objective latency
    latency_dp.latency_auto_max_shard(chiplets): every chiplet up to 36 (a layer spread over the whole package)."""
    split_budget: int = 0
    """Evaluations of local search over staged plans (policies/split_search.py) from the staged DP plans, by the
    run's method (anneal, random or learned; other methods use anneal); 0: none (`--split-budget`)."""
    routing: str | None = None
    """`--routing FILE`: measured expert loads for mixture-of-experts layers (partitioner/frontend/moe_cost.py);
    None: uniform top-k routing."""
    objective: str = DEFAULT_OBJECTIVE
    """What the run optimises (`--objective`, partitioner/sim/objective.py): throughput (inferences/s of a stream)
    or latency (the time of one inference alone, batch-1 serving)."""


def stream_batch(cfg: RunConfig) -> int:
    """Inferences per read of a streamed weight in the simulated stream: cfg.batch, except in decode, where the
    batch's sequences are one inference (a step) and share each read inside it."""
    return 1 if cfg.phase == "decode" else cfg.batch


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
    objective: str = DEFAULT_OBJECTIVE
    """What the run optimised; under latency the certificate bounds one inference's latency (latency_bound_s)."""

    @property
    def solver_bound_throughput_per_s(self) -> float | None:
        c = self.certificate
        if c is None or not c.lower_bound_cycles or self.objective == "latency":
            return None
        return self.hw.clock_hz / c.lower_bound_cycles

    @property
    def latency_bound_s(self) -> float | None:
        """Under --objective latency, the certificate's lower bound on one inference's latency (seconds)."""
        c = self.certificate
        if c is None or not c.lower_bound_cycles or self.objective != "latency":
            return None
        return c.lower_bound_cycles / self.hw.clock_hz


def validate_config(cfg: RunConfig) -> None:
    """Every option, checked before the model is read or --out is touched (partitioner/app/limits.py)."""
    limits.check_seed(cfg.seed)
    limits.check_budget(cfg.budget)
    limits.check_chiplets(cfg.chiplets)
    limits.check_seconds(cfg.time_limit_s, "--time-limit")
    limits.check_seconds(cfg.max_time_s, "--max-time")
    limits.check_batch(cfg.batch)
    if type(cfg.split_budget) is not int or cfg.split_budget < 0:
        raise UserError(f"--split-budget must be a non-negative integer, got {cfg.split_budget!r}",
                        "pass 0 (no split-plan search) or a number of evaluations, e.g. 256")
    if cfg.max_shard is not None and (type(cfg.max_shard) is not int or cfg.max_shard < 1):
        raise UserError(f"--max-shard must be a positive integer, got {cfg.max_shard!r}",
                        "pass auto (the default), or 1 (no sharding) up to the chiplet count")
    if cfg.method is not None and cfg.method not in METHODS:
        raise UserError(f"unknown method {cfg.method!r}", f"use one of {', '.join(METHODS)}")
    check_objective(cfg.objective)
    if cfg.method is not None:
        check_method(cfg.method, cfg.objective)
    limits.check_model_path(cfg.model)
    limits.check_out_target(cfg.out)
    from partitioner.app.outset import check_replaceable

    check_replaceable(cfg.out)
