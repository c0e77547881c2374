"""What ring collectives, round lags and the keep-column rule each contribute on one staged plan: the staged DP's
plan for a largest group K (staged_dp.staged_partition), simulated as the tool does (rings, R4b rounds, S8), then with
overlap=False (plain (inference, op) order), and the % of the MAC-only ceiling of each. One process, no CLI run.

    python -m benchmarks.collectives_ablation --model bert-large --chiplets 144 --max-shard 4 8

Prints a markdown table.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from partitioner.hw.toml import load_hardware
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import Partition, check
from partitioner.sim.simulator import simulate
from partitioner.plan.staged_dp import staged_partition


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bert-large")
    ap.add_argument("--chiplets", type=int, default=144)
    ap.add_argument("--max-shard", type=int, nargs="+", default=[4])
    args = ap.parse_args(argv)
    graph = load_onnx(f"examples/{args.model}.onnx", precision="fp16")
    hw = load_hardware(None, args.chiplets)
    ceiling = args.chiplets * 4096 * 1e9 / (float(graph.matrix_flops.sum()) / 2)
    print("| model | chiplets | K | groups (degree: ops) | throughput /s | % MAC ceiling | busiest chiplet cycles "
          "| bottleneck | in (inference, op) order /s | DP s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k_max in args.max_shard:
        start = time.perf_counter()
        a, shard = staged_partition(graph, hw, k_max)
        dp_s = time.perf_counter() - start
        part = Partition(a, shard=shard)
        assert not check(graph, hw, part)
        rep = simulate(graph, hw, part)
        plain = simulate(graph, hw, part, overlap=False)
        degrees = dict(zip(*(x.tolist() for x in np.unique(shard, return_counts=True))))
        print(f"| {args.model} | {args.chiplets} | {k_max} | {degrees} | {rep.throughput_per_s:,.0f} | "
              f"{100 * rep.throughput_per_s / ceiling:.1f}% | {max(rep.chiplet_busy_cycles):,} | {rep.bottleneck} | "
              f"{plain.throughput_per_s:,.0f} | {dp_s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
