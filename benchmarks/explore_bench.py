"""Design-space exploration benchmarks for RESULTS.md.

    python -m benchmarks.explore_bench hv MODEL.onnx --budget 30 --seeds 0 1 2 --out bench_dse
        hypervolume of the (throughput, power, cost) front after each evaluation, NSGA-II vs random sampling
    python -m benchmarks.explore_bench rate MODEL.onnx --budget 20 --out bench_rate
        designs per hour on 2 local worker processes and on a local Ray instance (2 tasks in flight)
    python -m benchmarks.explore_bench rerun MODEL.onnx --budget 30 --seeds 0 --out bench_rerun
        every Pareto design re-run as `partition MODEL --hardware design.toml` (the default run: search, staged
        plans, certificate): its throughput over the one explore recorded (target: within 2%)

Hypervolume is measured in log space, every objective turned into a minimisation: (-log10 throughput, log10 W,
log10 USD) (partitioner/app/pareto.hv_point), against the fixed reference partitioner/app/pareto.HV_REFERENCE:
1 inference/s, 1 kW, $10,000. Designs that do not fit the model add nothing.

    python -m benchmarks.explore_bench codesign --models distilbert resnet18 t5-small-encoder gpt2 --budget 30 \
        --seeds 0 1 2 --methods learned nsga2 random --out bench_codesign
        the same per method on the held-out models (never in the design agent's corpus); each run is kept in
        OUT/MODEL/METHOD-SEED and not redone, so methods can be run apart and summarised together
    python -m benchmarks.explore_bench hetero --methods learned nsga2 random --out bench_codesign
        each heterogeneous front design of those runs against its two homogeneous versions
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from partitioner.app.explore import ExploreConfig, run_explore
from partitioner.app.pareto import HV_REFERENCE, hv_point, hypervolume  # noqa: F401 - tests import it from here
from partitioner.core.files import write_json


def _trial_rows(out: Path) -> list[dict | None]:
    """Per evaluation in trial order: the design's scores, or None when it did not fit."""
    doc = json.loads((out / "pareto.json").read_text())
    by_trial = {d["trial"]: d for d in doc["designs"]}
    n = doc["evaluated"]
    return [by_trial.get(t) for t in range(n)], doc


def hv_curve(rows: list[dict | None]) -> list[float]:
    """Hypervolume of the fitting designs after each evaluation."""
    pts, curve = [], []
    for r in rows:
        if r is not None:
            pts.append(hv_point(r))
        curve.append(hypervolume(list(pts), HV_REFERENCE))
    return curve


def _run(model: str, method: str, seed: int, args, out: Path) -> dict:
    if not (out / "pareto.json").exists():
        start = time.perf_counter()
        run_explore(ExploreConfig(model, budget=args.budget, workers=args.workers, seed=seed, out=str(out),
                                  sampler=method, space=args.space))
        print(f"{Path(model).stem} {method} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    rows, doc = _trial_rows(out)
    return {"curve": hv_curve(rows), "front": doc["pareto"], "fit": sum(r is not None for r in rows)}


def hv_bench(args) -> None:
    """NSGA-II against random sampling on one model (the earlier table); use `codesign` for the design agent."""
    args.models, args.methods = [args.model], ["nsga2", "random"]
    codesign_bench(args)


def codesign_bench(args) -> None:
    results: dict[str, dict] = {}
    for model in args.models:
        path = model if model.endswith(".onnx") else f"examples/{model}.onnx"
        stem = Path(path).stem
        for method in args.methods:
            for seed in args.seeds:
                results[f"{stem}/{method}-{seed}"] = _run(path, method, seed, args, Path(args.out) / stem
                                                          / f"{method}-{seed}")
    write_json(Path(args.out) / "hv.json", {"reference": HV_REFERENCE, "runs": results})
    summarise(results, args)


def summarise(results: dict, args) -> None:
    marks = sorted({m for m in (5, 10, 15, 20, 30, args.budget) if m <= args.budget})
    models = list(dict.fromkeys(k.split("/")[0] for k in results))
    methods = list(dict.fromkeys(k.split("/")[1].rsplit("-", 1)[0] for k in results))

    def mean_curve(model: str, method: str) -> list[float]:
        cs = [results[f"{model}/{method}-{s}"]["curve"] for s in args.seeds]
        return [sum(c[i] for c in cs) / len(cs) for i in range(min(len(c) for c in cs))]

    print("| model | method | " + " | ".join(f"HV@{m}" for m in marks) + " | fronts' heterogeneous designs |")
    print("|---|---|" + "---|" * (len(marks) + 1))
    for model in models:
        for method in methods:
            cells = []
            for m in marks:
                v = [results[f"{model}/{method}-{s}"]["curve"][m - 1] for s in args.seeds]
                cells.append(f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f})")
            fronts = [results[f"{model}/{method}-{s}"]["front"] for s in args.seeds]
            het = f"{sum(d['heterogeneous'] for f in fronts for d in f)} of {sum(len(f) for f in fronts)}"
            print(f"| {model} | {method} | " + " | ".join(cells) + f" | {het} |")
    if "learned" in methods:
        print()
        for model in models:
            learned = mean_curve(model, "learned")
            parts = []
            for other in (m for m in methods if m != "learned"):
                ref = mean_curve(model, other)
                reach = next((i + 1 for i, v in enumerate(learned) if v >= ref[-1]), None)
                parts.append(f"{learned[-1] / ref[-1]:.3f}x {other} at {len(ref)}; reaches {other}'s "
                             f"{len(ref)}-evaluation HV at {reach if reach else 'never'}")
            print(f"{model}: learned " + "; ".join(parts))
    _plot(Path(args.out) / "hv.png", results, models, methods, args.seeds)


def _plot(path: Path, results: dict, models: list[str], methods: list[str], seeds) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(4 * len(models), 3.4), constrained_layout=True, squeeze=False)
    colours = {"learned": "tab:green", "nsga2": "tab:blue", "random": "tab:orange"}
    for ax, model in zip(axes[0], models):
        for method in methods:
            for i, s in enumerate(seeds):
                c = results[f"{model}/{method}-{s}"]["curve"]
                ax.plot(range(1, len(c) + 1), c, color=colours.get(method, "grey"), alpha=0.75,
                        label=method if i == 0 else None)
        ax.set_title(model)
        ax.set_xlabel("designs evaluated")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("hypervolume (log decades^3)")
    axes[0][0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def hetero_bench(args) -> None:
    """Each heterogeneous design on the fronts of a `codesign` run (OUT/MODEL/METHOD-SEED, up to --per-model per
    model) against its two homogeneous versions: the main kind everywhere and the second kind everywhere, each
    evaluated as explore does. A heterogeneous design wins where neither version dominates it."""
    from partitioner.app.dse_space import Design, design_from_params
    from partitioner.app.explore import evaluate_design
    from partitioner.app.pareto import dominates

    print("| model | heterogeneous design | /s | W | $ | main kind everywhere: /s, W, $ | second kind everywhere: "
          "/s, W, $ | wins |")
    print("|---|---|---:|---:|---:|---|---|---|")
    wins = total = 0
    for model in args.models:
        path = model if model.endswith(".onnx") else f"examples/{model}.onnx"
        stem = Path(path).stem
        fronts = [d for method in args.methods for s in args.seeds
                  for d in json.loads((Path(args.out) / stem / f"{method}-{s}" / "pareto.json").read_text())["pareto"]]
        seen, picked = set(), []
        for d in sorted((d for d in fronts if d["heterogeneous"]), key=lambda d: -d["throughput_per_s"]):
            name = Path(d["hardware_file"]).stem
            if name not in seen:
                seen.add(name)
                picked.append(d)
        for d in picked[:args.per_model]:
            design = design_from_params(d)
            params = {k: d[k] for k in Design.__dataclass_fields__}
            main = {**params, "b_macs_per_cycle": 0}
            second = {**params, "macs_per_cycle": design.b_macs_per_cycle, "vector_ratio": design.b_vector_ratio,
                      "sram_mib": design.b_sram_mib, "b_macs_per_cycle": 0}
            mine = (d["throughput_per_s"], d["power_w"], d["cost_usd"])
            cells, beaten = [], False
            for alt in (main, second):
                r = evaluate_design(path, (), "fp16", alt)
                if r.fits:
                    cells.append(f"{r.throughput_per_s:,.0f}, {r.power_w:.1f}, {r.cost_usd:,.0f}")
                    beaten |= dominates((r.throughput_per_s, r.power_w, r.cost_usd), mine)
                else:
                    cells.append(f"does not fit ({r.why.split(';')[0][:60]})")
            wins += not beaten
            total += 1
            print(f"| {stem} | {Path(d['hardware_file']).stem} | {mine[0]:,.0f} | {mine[1]:.1f} | {mine[2]:,.0f} | "
                  f"{cells[0]} | {cells[1]} | {'yes' if not beaten else 'no'} |", flush=True)
    print(f"\n{wins} of {total} heterogeneous front designs are dominated by neither homogeneous version")


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
    """Each front design's file through the default run, against the throughput explore recorded (the default run's
    own figure since the front is re-scored, app/rescore.py) and the cheap inner planner's figure beside it."""
    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    print("| seed | design | cheap planner | cheap /s | recorded /s | re-run /s | re-run found by | re-run / recorded |")
    print("|---|---|---|---:|---:|---:|---|---:|")
    ratios, cheap = [], []
    for seed in args.seeds:
        out = Path(args.out) / f"explore-{seed}"
        start = time.perf_counter()
        summary = run_explore(ExploreConfig(args.model, budget=args.budget, workers=args.workers, seed=seed,
                                            out=str(out), space=args.space, precision="fp16",
                                            sampler=args.methods[0]))
        explore_s = time.perf_counter() - start
        for d in summary["pareto"]:
            res = run(RunConfig(args.model, hardware=d["hardware_file"], precision="fp16",
                                seed=seed, out=str(Path(args.out) / f"run-{seed}-{d['trial']}")))
            ratio = res.best.throughput / d["throughput_per_s"]
            ratios.append(ratio)
            cheap.append(res.best.throughput / d["throughput_cheap_per_s"])
            print(f"| {seed} | {Path(d['hardware_file']).name}{' (hetero)' if d['heterogeneous'] else ''} | "
                  f"{d['partitioner_cheap']} | {d['throughput_cheap_per_s']:,.1f} | {d['throughput_per_s']:,.1f} | "
                  f"{res.best.throughput:,.1f} | {(res.found_by or res.method).split(',')[0]} | {ratio:.4f} |",
                  flush=True)
        rs = summary["rescore"]
        print(f"\nseed {seed}: explore {explore_s:.0f} s wall, of which re-scoring {rs['rescored_now']} front designs "
              f"in {rs['rounds']} rounds ({rs['rescore_s']:.0f} s of runs); hypervolume {summary['hypervolume']:.3f}")
    print(f"\n{len(ratios)} designs: re-run / recorded from {min(ratios):.4f} to {max(ratios):.4f}, "
          f"{sum(abs(r - 1) <= 0.02 for r in ratios)} within 2%; re-run / cheap planner from {min(cheap):.4f} to "
          f"{max(cheap):.4f}, {sum(abs(r - 1) <= 0.02 for r in cheap)} within 2%")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["hv", "rate", "rerun", "codesign", "hetero"])
    p.add_argument("--per-model", type=int, default=3, help="hetero: heterogeneous front designs per model")
    p.add_argument("model", nargs="?", default=None)
    p.add_argument("--models", nargs="+", default=["distilbert", "resnet18", "t5-small-encoder", "gpt2"])
    p.add_argument("--methods", nargs="+", default=["learned", "nsga2", "random"])
    p.add_argument("--budget", type=int, default=30)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--space", default=None)
    p.add_argument("--out", default="bench_dse")
    args = p.parse_args()
    {"hv": hv_bench, "rate": rate_bench, "rerun": rerun_bench, "codesign": codesign_bench,
     "hetero": hetero_bench}[args.what](args)


if __name__ == "__main__":
    main()
