"""Simulator speed: evaluations of `simulate` per second on one core.

    python benchmarks/sim_speed.py                       # BERT-base (examples/bert-base.onnx), 16 chiplets
    python benchmarks/sim_speed.py --model random --ops 300

The assignment is the balanced contiguous split: ops in topological order cut into `chiplets` stages of equal
cycles (on the first chiplet's cost), the shape most partitions found by search have. The figure is recorded in
benchmarks/RESULTS.md, "Simulator speed: one process, the balanced contiguous split".
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from partitioner.model.cost import op_cycles_matrix  # noqa: E402
from partitioner.core.graph import TensorGraph  # noqa: E402
from partitioner.hw.hardware import Hardware  # noqa: E402
from partitioner.hw.toml import load_hardware
from partitioner.sim.simulator import simulate  # noqa: E402
from partitioner.frontend.synthetic import random_dag  # noqa: E402

BERT = Path(__file__).resolve().parents[1] / "examples" / "bert-base.onnx"


@dataclass(frozen=True)
class SpeedConfig:
    model: str = str(BERT)
    """ONNX file, or "random" for random_dag(ops, seed)."""
    ops: int = 300
    """Op count of the random stand-in graph."""
    seed: int = 0
    """Seed of the random stand-in graph."""
    precision: str = "fp32"
    """Precision for ONNX models."""
    chiplets: int = 16
    """Package size (a near-square mesh of default chiplets)."""
    seconds: float = 5.0
    """Wall time to measure over (after one warm-up evaluation)."""
    granularity: str = "fused"
    """Unit of partitioning for ONNX models: fused, node or layer."""


def balanced_split(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """Contiguous stages of (nearly) equal cycles over the topological order: op i goes to stage
    floor(n_chiplets x (cycles before i + half its own) / total)."""
    cycles = op_cycles_matrix(graph, hw)[:, 0].astype(float)
    mid = np.cumsum(cycles) - cycles / 2
    return np.minimum((mid * hw.n_chiplets // cycles.sum()).astype(np.int64), hw.n_chiplets - 1)


def load_graph(cfg: SpeedConfig) -> TensorGraph:
    if cfg.model == "random":
        return random_dag(cfg.ops, cfg.seed)
    from partitioner.frontend.load import load_onnx
    return load_onnx(cfg.model, precision=cfg.precision, granularity=cfg.granularity)


def measure(cfg: SpeedConfig) -> dict:
    graph = load_graph(cfg)
    hw = load_hardware(None, cfg.chiplets)
    a = balanced_split(graph, hw)
    report = simulate(graph, hw, a)               # warm-up (and the numbers we print)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < cfg.seconds:
        simulate(graph, hw, a)
        n += 1
    elapsed = time.perf_counter() - t0
    return {"graph": graph.name, "ops": graph.n_ops, "edges": graph.n_edges, "chiplets": hw.n_chiplets,
            "inferences": report.inferences_simulated, "evals": n, "seconds": elapsed, "evals_per_s": n / elapsed,
            "ms_per_eval": 1e3 * elapsed / n, "throughput_per_s": report.throughput_per_s,
            "bound_per_s": report.bound_throughput_per_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = SpeedConfig()
    p.add_argument("--model", default=d.model if Path(d.model).exists() else "random")
    p.add_argument("--ops", type=int, default=d.ops)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--precision", default=d.precision)
    p.add_argument("--chiplets", type=int, default=d.chiplets)
    p.add_argument("--seconds", type=float, default=d.seconds)
    p.add_argument("--granularity", default=d.granularity, choices=["fused", "node", "layer"])
    p.add_argument("--write", action="store_true", help='replace the "Simulator speed: one process, the balanced contiguous split" section of RESULTS.md')
    args = vars(p.parse_args())
    write = args.pop("write")
    cfg = SpeedConfig(**args)
    r = measure(cfg)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{r['graph']}: {r['ops']} ops, {r['edges']} edges, {r['chiplets']} chiplets, "
          f"{r['inferences']} inferences per evaluation")
    print(f"{r['evals_per_s']:.1f} evaluations/s ({r['ms_per_eval']:.2f} ms each, {r['evals']} in "
          f"{r['seconds']:.1f} s, one process on a {cores}-core machine)")
    print(f"simulated throughput {r['throughput_per_s']:,.1f}/s, bound {r['bound_per_s']:,.1f}/s")
    if write:
        from benchmarks.results_md import update_section
        command = "python benchmarks/sim_speed.py " + " ".join(sys.argv[1:])
        model = "examples/bert-base.onnx" if Path(cfg.model) == BERT else cfg.model
        update_section("Simulator speed: one process, the balanced contiguous split", f"""
Command: `{command.strip()}`

| graph | ops | edges | chiplets | inferences per evaluation | evaluations/s | ms per evaluation |
|---|---|---|---|---|---|---|
| {r['graph']} ({model}) | {r['ops']} | {r['edges']} | {r['chiplets']} | {r['inferences']} | \
{r['evals_per_s']:.1f} | {r['ms_per_eval']:.2f} |

One Python process, one core, on a {cores}-core machine with other work running; target >= 50 evaluations/s.
The assignment is the balanced contiguous split into {r['chiplets']} equal-cycle stages; its simulated throughput
is {r['throughput_per_s']:,.1f} inferences/s against the analytical bound {r['bound_per_s']:,.1f}/s.
""")


if __name__ == "__main__":
    main()
