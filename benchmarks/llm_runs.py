"""What the LLM fidelity rows share: the graph-only Llama-2 exports, one `partition MODEL.onnx ...` run as the CLI
does it (partitioner/app/run.run, so the numbers are the CLI's), and the HBM roofline beside it.

Exports are made on first use by scripts/export_models.py --decoders-large (graph only, from the meta device: no
weight is allocated; transformers and onnxscript must be installed, the optional extra `export`). They go to a
scratch directory (default /tmp/llm-exports), never into the repository.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPORTS = Path("/tmp/llm-exports")


def export(name: str, directory: Path = EXPORTS) -> Path:
    """directory/NAME-legacy.onnx, exported if missing (Llama-2-7B: about 10 minutes on 2 busy cores; -70B longer)."""
    path = directory / f"{name}-legacy.onnx"
    if not path.exists():
        print(f"exporting {name} to {directory} (graph only) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "export_models.py"), "--decoders-large",
                        str(directory), "--only", f"{name}-legacy"], check=True)
    return path


@dataclass(frozen=True)
class RunFigures:
    """One run's figures: per inference (a decode step of `sequences` sequences, or one prompt's prefill)."""

    command: str
    inferences_per_s: float
    latency_s: float
    tokens_per_inference: int
    weight_read_bytes: float
    """Weights and KV cache read per inference (the importer's weight_read_bytes)."""
    kv_bytes: float
    stack_bytes_per_s: float
    """The memory tier's sustained streaming rate: every stack's bytes_per_cycle x efficiency x clock, summed."""
    bottleneck: str
    n_ops: int
    wall_s: float
    energy_j: float = 0.0
    """Dynamic energy per inference (the simulator's)."""

    @property
    def tokens_per_s(self) -> float:
        return self.inferences_per_s * self.tokens_per_inference

    @property
    def roofline_s(self) -> float:
        """Bytes read per inference over the sustained HBM rate: the time a pure weight-and-KV stream takes."""
        return self.weight_read_bytes / self.stack_bytes_per_s


def run_partition(model: Path, hardware: str, precision: str, *, phase: str, context: int | None = None,
                  batch: int = 1, prompt: int | None = None, objective: str = "throughput",
                  granularity: str = "fused", max_shard: int | None = None, budget: int | None = None) -> RunFigures:
    """`partition MODEL --hardware H --precision P --phase ... --no-certificate` through the app's own `run`; the
    output files go to a temporary directory. Prefill takes one prompt of `prompt` tokens (input_ids and
    attention_mask 1 x prompt); decode one token for each of `batch` sequences over `context` cached tokens."""
    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    shapes = {"input_ids": (1, prompt), "attention_mask": (1, prompt)} if phase == "prefill" else {}
    opts = [f"--hardware {hardware}", f"--precision {precision}", f"--phase {phase}"]
    opts += [f"--context {context}"] if context is not None else []
    opts += [f"--batch {batch}"] if batch != 1 else []
    opts += [f"--input-shape {k}={'x'.join(map(str, v))}" for k, v in shapes.items()]
    opts += [f"--objective {objective}"] if objective != "throughput" else []
    opts += [f"--granularity {granularity}"] if granularity != "fused" else []
    opts += [f"--max-shard {max_shard}"] if max_shard is not None else []
    opts += [f"--budget {budget}"] if budget is not None else []
    command = f"python -m partitioner.app.cli {model} {' '.join(opts)} --no-certificate"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = RunConfig(model=str(model), hardware=hardware, precision=precision, phase=phase, context=context,
                        batch=batch, input_shapes=shapes, objective=objective, granularity=granularity,
                        max_shard=max_shard, budget=budget, certificate=False, out=out)
        outcome = run(cfg)
    rep, graph, hw = outcome.best.report, outcome.graph, outcome.hw
    latency = rep.latency_s
    per_s = 1.0 / latency if objective == "latency" else rep.throughput_per_s
    kv = float(graph.kv_cache_bytes.sum())
    stream = sum(s.bytes_per_cycle * s.efficiency for s in hw.memory_stacks) * hw.clock_hz
    return RunFigures(command, per_s, latency, int(graph.metadata.get("tokens_per_inference", 1)),
                      float(np.sum(graph.weight_read_bytes)), kv, stream, rep.bottleneck, graph.n_ops,
                      time.perf_counter() - t0, rep.energy_j)
