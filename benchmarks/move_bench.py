"""Learned move selection vs annealing vs random search vs CP-SAT, at equal simulator evaluations, on held-out models.

    python benchmarks/move_bench.py --start                 # where greedy/DP start against the bound, every case
    python benchmarks/move_bench.py --table --budget 64 --seeds 0 1 2
    python benchmarks/move_bench.py --pretrained --budget 64
    python benchmarks/move_bench.py --write                 # RESULTS.md section + benchmarks/move_curves.png

Models come from examples/ (exported by scripts/export_models.py; none is in the move policy's training corpus,
see policies/pretrained/MOVE_MODEL_CARD.md). Methods, each through the same repair + simulate evaluation
(partitioner.app.methods.search):
    learned  the shipped move policy, fine-tuned on the graph during the search (`--method learned`)
    scratch  the same loop from an untrained network (uniform over valid moves at first), fine-tuned likewise
    anneal   simulated annealing with restart-from-best (`--method anneal`)
    random   random assignments repaired by CP-SAT (`--method random`)
    cpsat    CP-SAT minimising the bottleneck from the DP split as hint, --exact-time seconds (one run per case)
Every run is cached in benchmarks/.move_cache.json (keyed on case, method, budget, seed), so a killed run resumes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from partitioner.app.pipeline import evaluate  # noqa: E402
from partitioner.app.certify import certify  # noqa: E402
from partitioner.app.methods import DEFAULT_REPAIR_LIMIT_S, search
from partitioner.app.run import load_model
from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.core.files import write_json  # noqa: E402
from partitioner.sim.simulator import simulate  # noqa: E402
from partitioner.plan.splits import dp_partition, greedy_partition  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "examples"
LARGE = (("bert-large", 64), ("resnet50", 64), ("resnet50", 144))
"""The held-out cases at 64/144 chiplets where greedy and DP start below the bound (see --start)."""
ALL_LARGE = tuple((m, n) for m in ("bert-large", "vit-base", "resnet50", "t5-small-encoder", "distilbert")
                  for n in (64, 144))
PRETRAINED_CASES = LARGE + (("bert-large", 16), ("distilbert", 16), ("vit-base", 16), ("t5-small-encoder", 16),
                            ("resnet50", 16))
CACHE = Path(__file__).resolve().parent / ".move_cache.json"
PLOT = Path(__file__).resolve().parent / "move_curves.png"

_graphs: dict = {}


def _case(model: str, n: int):
    if model not in _graphs:
        _graphs[model] = load_model(str(MODELS / f"{model}.onnx"), precision="fp16")
    return _graphs[model], load_hardware(None, n)


def cpsat_row(model: str, n: int, seed: int, exact_time: float) -> dict:
    """CP-SAT with a time limit from the DP split (whole-op plans), its partition simulated: the solver baseline
    of move_bench and split_bench."""
    graph, hw = _case(model, n)
    start = time.perf_counter()
    part = certify(graph, hw, dp_partition(graph, hw), seed=seed, time_limit_s=exact_time)
    rep = simulate(graph, hw, part)
    return {"best": rep.throughput_per_s, "history": [], "wall_s": time.perf_counter() - start,
            "status": part.status, "bound": hw.clock_hz / part.lower_bound_cycles if part.lower_bound_cycles else None}


def _run(model: str, n: int, method: str, budget: int, seed: int, exact_time: float) -> dict:
    if method == "cpsat":
        return cpsat_row(model, n, seed, exact_time)
    graph, hw = _case(model, n)
    if method == "scratch":
        from policies.move_policy import MoveNet, learned_search

        res = learned_search(graph, hw, budget=budget, seed=seed, net=MoveNet(), evaluate_fn=lambda p: evaluate(
            graph, hw, p, time_limit_s=DEFAULT_REPAIR_LIMIT_S, seed=seed))
    else:
        res = search(graph, hw, method, budget=budget, seed=seed, time_limit_s=None)
    return {"best": res.best.throughput, "history": [b for _, b in res.history], "wall_s": res.wall_s}


def _cached(cache: dict, key: str, make) -> dict:
    if key not in cache:
        cache[key] = make()
        write_json(CACHE, cache)
        print(key, f"{cache[key]['best']:,.1f}/s {cache[key]['wall_s']:.0f} s", flush=True)
    return cache[key]


def _start_table() -> str:
    rows = ["| case | ops | greedy / bound | DP / bound |", "|---|---:|---:|---:|"]
    for model, n in ALL_LARGE:
        graph, hw = _case(model, n)
        g, d = (evaluate(graph, hw, f(graph, hw)) for f in (greedy_partition, dp_partition))
        b = g.report.bound_throughput_per_s
        rows.append(f"| {model} / {n} | {graph.n_ops} | {g.throughput / b:.3f} | {d.throughput / b:.3f} |")
    return "\n".join(rows)


def _reach(history: list[float], target: float) -> int | None:
    """Evaluations a run needed to reach `target` (None: never)."""
    return next((i + 1 for i, v in enumerate(history) if v >= target * (1 - 1e-9)), None)


def _write(cache: dict, budget: int, seeds: list[int], exact_time: float, start_table: str | None) -> str:
    def runs(model, n, method, ss=seeds):
        return [cache[k] for s in ss if (k := f"{model}|{n}|{method}|{budget}|{s}") in cache]

    lines = [f"Budget {budget} evaluations, seeds {' '.join(map(str, seeds))}; mean ± standard deviation of the best "
             f"throughput (inferences/s); ratios are of the means. CP-SAT: {exact_time:.0f} s, its partition's "
             "simulated throughput (status).", "",
             "| case | learned | anneal | random | scratch | CP-SAT | learned / anneal | learned / random |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model, n in LARGE:
        cells, means = [], {}
        for m in ("learned", "anneal", "random", "scratch"):
            vals = [r["best"] for r in runs(model, n, m)]
            means[m] = statistics.mean(vals) if vals else float("nan")
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{means[m]:,.0f} ± {sd:,.0f} ({len(vals)})" if vals else "-")
        cp = cache.get(f"{model}|{n}|cpsat|0|0")
        cells.append(f"{cp['best']:,.0f} ({cp['status']})" if cp else "-")
        lines.append(f"| {model} / {n} | " + " | ".join(cells)
                     + f" | {means['learned'] / means['anneal']:.3f} | {means['learned'] / means['random']:.3f} |")
    lines += ["", "Pretrained (learned) vs untrained (scratch) network, both fine-tuned on the graph, seed 0; "
              "'reach' = evaluations the pretrained run needed to reach the untrained run's final best:", "",
              "| case | pretrained | untrained | winner | reach |", "|---|---:|---:|---|---:|"]
    wins = 0
    for model, n in PRETRAINED_CASES:
        p, u = runs(model, n, "learned", [0]), runs(model, n, "scratch", [0])
        if not p or not u:
            continue
        p, u = p[0], u[0]
        win = "pretrained" if p["best"] > u["best"] * (1 + 1e-9) else (
            "untrained" if u["best"] > p["best"] * (1 + 1e-9) else "tie")
        wins += win == "pretrained"
        lines.append(f"| {model} / {n} | {p['best']:,.1f} | {u['best']:,.1f} | {win} | "
                     f"{_reach(p['history'], u['best']) or 'never'} of {budget} |")
    lines.append(f"\nPretrained wins {wins} of {len(PRETRAINED_CASES)}.")
    if start_table:
        lines += ["", "Where greedy and DP start on every held-out case at 64 and 144 chiplets (1.000: already at "
                  "the analytical bound, nothing left to search):", "", start_table]
    _plot(cache, budget)
    return "\n".join(lines)


def _plot(cache: dict, budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(LARGE), figsize=(5 * len(LARGE), 3.6))
    for ax, (model, n) in zip(axes, LARGE):
        for m in ("learned", "scratch", "anneal", "random"):
            hs = [cache[k]["history"] for k in cache if k.startswith(f"{model}|{n}|{m}|{budget}|")]
            if hs:
                mean = [statistics.mean(v) for v in zip(*hs)]
                ax.plot(range(1, len(mean) + 1), mean, label=f"{m} ({len(hs)} seeds)")
        ax.set_title(f"{model}, {n} chiplets")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best throughput (/s)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=90)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--pretrained", action="store_true")
    ap.add_argument("--start", action="store_true")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--methods", nargs="+", default=["learned", "anneal", "random", "scratch", "cpsat"])
    ap.add_argument("--budget", type=int, default=64)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--exact-time", type=float, default=30.0)
    args = ap.parse_args(argv)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    if args.table:
        for model, n in LARGE:
            for m in args.methods:
                for s in ([0] if m == "cpsat" else args.seeds):
                    b = 0 if m == "cpsat" else args.budget
                    _cached(cache, f"{model}|{n}|{m}|{b}|{s}",
                            lambda: _run(model, n, m, args.budget, s, args.exact_time))
    if args.pretrained:
        for model, n in PRETRAINED_CASES:
            for m in ("learned", "scratch"):
                _cached(cache, f"{model}|{n}|{m}|{args.budget}|0", lambda: _run(model, n, m, args.budget, 0, 0))
    start = _start_table() if args.start else None
    if start:
        print(start)
    if args.write:
        cmd = "python benchmarks/move_bench.py --table --pretrained --start --write"
        update_section("Learned move selection",
                       f"```\n{cmd}\n```\n\n" + _write(cache, args.budget, args.seeds, args.exact_time, start))


if __name__ == "__main__":
    main()
