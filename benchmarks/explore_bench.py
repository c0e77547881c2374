"""Design-space exploration benchmarks for RESULTS.md.

    python -m benchmarks.explore_bench hv MODEL.onnx --budget 30 --seeds 0 1 2 --out bench_dse
        hypervolume of the (throughput, power, cost) front after each evaluation, NSGA-II vs random sampling
    python -m benchmarks.explore_bench rate MODEL.onnx --budget 20 --out bench_rate
        designs per hour on 2 local worker processes and on a local Ray instance (2 tasks in flight)
    python -m benchmarks.explore_bench rerun MODEL.onnx --budget 30 --seeds 0 --out bench_rerun
        every Pareto design re-run as `partition MODEL --hardware design.toml` (the default run: search, staged
        plans, certificate): its throughput over the one explore recorded (target: within 2%)

Hypervolume is measured in log space, every objective turned into a minimisation: (-log10 throughput, log10 power,
log10 cost), against a reference point 0.1 decade worse than the worst fitting design any run saw, so runs of one
model compare on one scale. Designs that do not fit the model add nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from partitioner.app.explore import ExploreConfig, run_explore
from partitioner.core.files import write_json


def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Exact hypervolume dominated by minimisation points up to ref (any dimension, by slicing the first axis)."""
    pts = [p for p in points if all(a < r for a, r in zip(p, ref))]
    # only the non-dominated points matter; dropping the rest keeps the slicing cheap
    pts = [p for p in pts if not any(q != p and all(a <= b for a, b in zip(q, p)) for q in pts)]
    pts = list(dict.fromkeys(pts))
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    pts.sort(key=lambda p: p[0])   # slice i spans [p_i, p_i+1) on axis 0, covered by the points up to i
    total = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][0] if i + 1 < len(pts) else ref[0]
        if upper > p[0]:
            total += (upper - p[0]) * hypervolume([q[1:] for q in pts[:i + 1]], ref[1:])
    return total


def _objectives(row: dict) -> tuple[float, float, float]:
    return (-math.log10(row["throughput_per_s"]), math.log10(row["power_w"]), math.log10(row["cost_usd"]))


def _trial_rows(out: Path) -> list[dict | None]:
    """Per evaluation in trial order: the design's scores, or None when it did not fit."""
    doc = json.loads((out / "pareto.json").read_text())
    by_trial = {d["trial"]: d for d in doc["designs"]}
    n = doc["evaluated"]
    return [by_trial.get(t) for t in range(n)], doc


def hv_bench(args) -> None:
    runs = {}
    for sampler in ("nsga2", "random"):
        for seed in args.seeds:
            out = Path(args.out) / f"{sampler}-{seed}"
            start = time.perf_counter()
            run_explore(ExploreConfig(args.model, budget=args.budget, workers=args.workers, seed=seed,
                                      out=str(out), sampler=sampler, space=args.space))
            rows, _ = _trial_rows(out)
            runs[(sampler, seed)] = rows
            print(f"{sampler} seed {seed}: {sum(r is not None for r in rows)} fit, {time.perf_counter() - start:.0f} s",
                  flush=True)
    every = [_objectives(r) for rows in runs.values() for r in rows if r is not None]
    ref = tuple(max(p[k] for p in every) + 0.1 for k in range(3))
    curves = {}
    for (sampler, seed), rows in runs.items():
        pts, curve = [], []
        for r in rows:
            if r is not None:
                pts.append(_objectives(r))
            curve.append(hypervolume(list(pts), ref))
        curves[f"{sampler}-{seed}"] = curve
    write_json(Path(args.out) / "hv.json", {"reference": ref, "curves": curves})
    marks = [m for m in (5, 10, 15, 20, 25, 30, 50, 75, args.budget) if m <= args.budget]
    marks = sorted(set(marks))
    print("| sampler | " + " | ".join(f"HV@{m}" for m in marks) + " |")
    print("|---|" + "---|" * len(marks))
    for sampler in ("nsga2", "random"):
        vals = [[curves[f"{sampler}-{s}"][m - 1] for s in args.seeds] for m in marks]
        cells = [f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in vals]
        print(f"| {sampler} | " + " | ".join(cells) + " |")
    _plot(Path(args.out) / "hv.png", curves, args.seeds)


def _plot(path: Path, curves: dict, seeds) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), constrained_layout=True)
    for sampler, colour in (("nsga2", "tab:blue"), ("random", "tab:orange")):
        for i, s in enumerate(seeds):
            c = curves[f"{sampler}-{s}"]
            ax.plot(range(1, len(c) + 1), c, color=colour, alpha=0.8, label=sampler if i == 0 else None)
    ax.set_xlabel("designs evaluated")
    ax.set_ylabel("hypervolume (log decades^3)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rate_bench(args) -> None:
    for label, ray in (("2 local workers", None), ("local Ray, 2 in flight", "local")):
        out = Path(args.out) / ("ray" if ray else "local")
        summary = run_explore(ExploreConfig(args.model, budget=args.budget, workers=2, seed=0, out=str(out),
                                            space=args.space, sampler="random", ray=ray))
        steady = summary["wall_s"] - summary["backend_start_s"]
        print(f"{label}: {summary['evaluated']} designs in {summary['wall_s']:.1f} s "
              f"(start-up {summary['backend_start_s']:.1f} s) = {3600 * summary['evaluated'] / summary['wall_s']:,.0f} "
              f"designs/hour, {3600 * summary['evaluated'] / steady:,.0f} after start-up", flush=True)


def rerun_bench(args) -> None:
    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    print("| seed | design | explore's planner | recorded /s | re-run /s | re-run found by | ratio |")
    print("|---|---|---|---:|---:|---|---:|")
    ratios = []
    for seed in args.seeds:
        out = Path(args.out) / f"explore-{seed}"
        run_explore(ExploreConfig(args.model, budget=args.budget, workers=args.workers, seed=seed, out=str(out),
                                  space=args.space, precision="fp16"))
        doc = json.loads((out / "pareto.json").read_text())
        for d in doc["pareto"]:
            res = run(RunConfig(args.model, hardware=d["hardware_file"], precision="fp16",
                                seed=seed, out=str(Path(args.out) / f"run-{seed}-{d['trial']}")))
            ratio = res.best.throughput / d["throughput_per_s"]
            ratios.append(ratio)
            print(f"| {seed} | {Path(d['hardware_file']).name} | {d['partitioner']} | {d['throughput_per_s']:,.1f} | "
                  f"{res.best.throughput:,.1f} | {(res.found_by or res.method).split(',')[0]} | {ratio:.4f} |",
                  flush=True)
    print(f"\n{len(ratios)} designs: re-run / recorded from {min(ratios):.4f} to {max(ratios):.4f}; "
          f"{sum(abs(r - 1) <= 0.02 for r in ratios)} within 2%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["hv", "rate", "rerun"])
    p.add_argument("model")
    p.add_argument("--budget", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--space", default=None)
    p.add_argument("--out", default="bench_dse")
    args = p.parse_args()
    {"hv": hv_bench, "rate": rate_bench, "rerun": rerun_bench}[args.what](args)


if __name__ == "__main__":
    main()
