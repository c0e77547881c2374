"""Every method on the shipped models at equal budgets: throughput, gain over random search, gap to the bound.

    python benchmarks/compare.py                          # full table (all models, 4/16/36 chiplets, 3 seeds)
    python benchmarks/compare.py --models bert-base --chiplets 16 --budget 32 --seeds 0 1 2

Writes the "Whole-op search at equal budgets" section of benchmarks/RESULTS.md and benchmarks/convergence.png (best
throughput against evaluations, per method, on the first model at the middle chiplet count). Results of each
(model, chiplets, method, seed) are cached in benchmarks/.compare_cache.json so a killed run resumes; the cache
is dropped when the code changes (it records a hash of the .py files in partitioner/, solver/, policies/), and rl
results are keyed on the shipped policy file too.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from partitioner.core.errors import UserError  # noqa: E402
from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.app.certify import certify  # noqa: E402
from partitioner.app.methods import search
from partitioner.app.run import load_model
from partitioner.core.files import atomic_write, write_json  # noqa: E402
from partitioner.sim.simulator import simulate  # noqa: E402
from partitioner.plan.splits import dp_partition  # noqa: E402

MODELS = {"bert-base": "examples/bert-base.onnx", "gpt-decoder": "examples/gpt-decoder.onnx",
          "resnet18": "examples/resnet18.onnx"}
SAMPLING = ("random", "anneal", "rl")
CONSTRUCTIVE = ("greedy", "dp", "exact")
CACHE = Path(__file__).resolve().parent / ".compare_cache.json"


def code_fingerprint() -> str:
    """Hash of the pipeline's code, which every cached result depends on (rl keys also carry the policy's tag)."""
    digest = hashlib.sha256()
    files = sorted(p for d in ("partitioner", "solver", "policies") for p in (ROOT / d).rglob("*")
                   if p.suffix == ".py" and "__pycache__" not in p.parts)
    for path in files:
        digest.update(str(path.relative_to(ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--chiplets", nargs="+", type=int, default=[4, 16, 36])
    ap.add_argument("--methods", nargs="+", default=list(SAMPLING + CONSTRUCTIVE), choices=SAMPLING + CONSTRUCTIVE)
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--exact-time", type=float, default=60.0, help="CP-SAT seconds for the exact method and bound")
    ap.add_argument("--fresh", action="store_true", help="ignore cached results")
    args = ap.parse_args(argv)

    cache = {} if args.fresh or not CACHE.exists() else json.loads(CACHE.read_text())
    fingerprint = code_fingerprint()
    if cache.get("__fingerprint__") != fingerprint:
        cache = {"__fingerprint__": fingerprint}    # results of other code are not comparable
    rows, curves = [], {}
    for model in args.models:
        graph = load_model(str(ROOT / MODELS[model]), precision=args.precision)
        for n in args.chiplets:
            hw = load_hardware(None, n)
            key = f"{model}|{args.precision}|{n}|exact|{args.exact_time}"
            if key not in cache:
                # One CP-SAT run gives both the `exact` method's partition and the bound every method is held to.
                start = time.perf_counter()
                try:
                    cert = certify(graph, hw, dp_partition(graph, hw), time_limit_s=args.exact_time)
                except UserError as exc:
                    cache[key] = {"infeasible": exc.problem}
                else:
                    thr = simulate(graph, hw, cert).throughput_per_s
                    cache[key] = {"bound_thr": hw.clock_hz / cert.lower_bound_cycles, "status": cert.status,
                                  "thr": thr, "evals": 1, "wall_s": time.perf_counter() - start, "history": [thr]}
                write_json(CACHE, cache)
                print(f"{model} {n} exact: {cache[key]}"[:200], flush=True)
            if "infeasible" in cache[key]:
                rows.append({"model": model, "chiplets": n, "infeasible": cache[key]["infeasible"]})
                continue
            exact = cache[key]
            bound = exact["bound_thr"]
            for method in args.methods:
                seeds = args.seeds if method in SAMPLING else [0]
                results = [exact] if method == "exact" else []
                for seed in seeds if method != "exact" else []:
                    key = f"{model}|{args.precision}|{n}|{method}|{args.budget}|{seed}" + \
                        (_policy_tag() if method == "rl" else "")
                    if key not in cache:
                        start = time.perf_counter()
                        res = search(graph, hw, method, budget=args.budget, seed=seed, time_limit_s=None)
                        cache[key] = {"thr": res.best.throughput, "evals": res.evaluations,
                                      "wall_s": time.perf_counter() - start,
                                      "history": [h[1] for h in res.history]}
                        write_json(CACHE, cache)
                        print(f"{model} {n} {method} seed {seed}: {res.best.throughput:,.1f}/s "
                              f"in {cache[key]['wall_s']:.1f} s", flush=True)
                    results.append(cache[key])
                thr = [r["thr"] for r in results]
                rows.append({"model": model, "chiplets": n, "method": method, "mean": statistics.mean(thr),
                             "spread": (max(thr) - min(thr)) / 2, "evals": statistics.mean(r["evals"] for r in results),
                             "wall_s": statistics.mean(r["wall_s"] for r in results), "bound": bound,
                             "seeds": len(thr)})
                if method in SAMPLING:
                    curves[(model, n, method)] = np.mean([_pad(r["history"], args.budget) for r in results], axis=0)

    _write(rows, curves, args)


def _policy_tag() -> str:
    """rl results are only reused while the shipped checkpoint is the same file."""
    from policies.rl_search import SHIPPED_POLICY

    if not SHIPPED_POLICY.exists():
        raise SystemExit(f"error: no shipped policy at {SHIPPED_POLICY}. Fix: train one or leave rl out of --methods.")
    st = SHIPPED_POLICY.stat()
    return f"|policy:{st.st_size}:{int(st.st_mtime)}"


def _pad(history: list[float], budget: int) -> list[float]:
    return (history + [history[-1]] * budget)[:budget]


def _write(rows: list[dict], curves: dict, args) -> None:
    random_mean = {(r["model"], r["chiplets"]): r["mean"] for r in rows if r.get("method") == "random"}
    lines = [
        f"Command: `python benchmarks/compare.py --models {' '.join(args.models)} --chiplets "
        f"{' '.join(map(str, args.chiplets))} --budget {args.budget} --seeds {' '.join(map(str, args.seeds))} "
        f"--exact-time {args.exact_time:g}` ({args.precision}, default chiplet mesh; 2-core machine).",
        "",
        "Sampling methods (random, anneal, rl) get the same budget of evaluated partitions and the listed seeds; "
        "greedy, dp and exact are deterministic. Throughput in inferences/s (mean ± half-range over seeds). "
        "`vs random` is the ratio to random search's mean. `of bound` is throughput over the CP-SAT-proven upper "
        "bound (clock / proven lower bound on the busiest resource's cycles per inference over all valid partitions, "
        "in a relaxation of the simulator's timing; 100% means provably optimal).",
        "",
        "| model | chiplets | method | throughput/s | vs random | of bound | evals | wall s |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "infeasible" in r:
            lines.append(f"| {r['model']} | {r['chiplets']} | - | does not fit: {r['infeasible']} | | | | |")
            continue
        base = random_mean.get((r["model"], r["chiplets"]))
        ratio = f"{r['mean'] / base:.3f}" if base else "-"
        lines.append(f"| {r['model']} | {r['chiplets']} | {r['method']} | {r['mean']:,.1f} ± {r['spread']:,.1f} | "
                     f"{ratio} | {100 * r['mean'] / r['bound']:.1f}% | {r['evals']:.0f} | {r['wall_s']:.1f} |")
    if curves:
        lines += ["", "Convergence (best throughput vs evaluations, mean over seeds): "
                      "![convergence](convergence.png)"]
        _plot(curves, args.models[0], args.chiplets[len(args.chiplets) // 2])
    update_section("Whole-op search at equal budgets", "\n".join(lines))


def _plot(curves: dict, model: str, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (m, c, method), ys in curves.items():
        if (m, c) == (model, n):
            ax.plot(np.arange(1, len(ys) + 1), ys, label=method)
    ax.set_xlabel("evaluated partitions")
    ax.set_ylabel("best throughput (inferences/s)")
    ax.set_title(f"{model}, {n} chiplets")
    ax.legend()
    fig.tight_layout()
    atomic_write(Path(__file__).resolve().parent / "convergence.png", lambda tmp: fig.savefig(tmp, dpi=110,
                                                                                             format="png"))
    plt.close(fig)


if __name__ == "__main__":
    main()
