"""The default run against `--method exact`: does the default ever return less than the proven optimum?

    python benchmarks/default_vs_exact.py [--models examples/bert-base.onnx ...] [--chiplets 16] [--seeds 0 1 2]

For each model, runs the default command (`partition MODEL --chiplets N --seed S`: default method, default budget,
certificate on) and `--method exact` in process, and tabulates both throughputs, the ratio and exact's status.
Target: default >= 99.9% of exact wherever exact proves optimality. Writes the "Default vs exact"
section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from partitioner.app.config import RunConfig  # noqa: E402
from partitioner.app.methods import default_method
from partitioner.app.run import run


def one(model: str, chiplets: int, seed: int, method: str | None) -> tuple[float, str, str, float]:
    """(throughput, method used, who found the winner, wall s) of one in-process run."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        o = run(RunConfig(model=model, chiplets=chiplets, method=method, seed=seed, out=out,
                          certificate=method != "exact"))
        wall = time.perf_counter() - start
    cert = o.certificate
    # exact's CP-SAT status over whole-op plans (with sharding on, the certificate wraps it as "analytical")
    status = "-" if cert is None else cert.info.get("whole_op_status", cert.status)
    return o.best.throughput, o.method, status if method == "exact" else (o.found_by or o.method), wall


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["examples/bert-base.onnx"])
    ap.add_argument("--chiplets", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        ratios, found = [], []
        for seed in args.seeds:
            d_thr, d_method, d_found, d_wall = one(model, args.chiplets, seed, None)
            e_thr, _, e_status, e_wall = one(model, args.chiplets, seed, "exact")
            ratios.append(d_thr / e_thr)
            found.append(d_found)
            print(f"{model} seed {seed}: default ({d_method}) {d_thr:,.1f}/s in {d_wall:.1f} s, exact ({e_status}) "
                  f"{e_thr:,.1f}/s in {e_wall:.1f} s: {100 * d_thr / e_thr:.2f}%", flush=True)
        rows.append((Path(model).name, d_method, e_status, min(ratios), statistics.mean(ratios),
                     sum(f != d_method for f in found)))
    seeds = " ".join(map(str, args.seeds))
    lines = [f"Command: `python benchmarks/default_vs_exact.py --models {' '.join(args.models)} --chiplets "
             f"{args.chiplets} --seeds {seeds} --write`", "",
             f"The default command (method {default_method()}, budget 64, certificate on) against `--method exact` "
             f"at {args.chiplets} chiplets, fp16, seeds {seeds}. A run returns the better of its search's best and "
             "the partition the certificate's CP-SAT solve found (warm-started from it) and the staged (sharded) DP plans, all "
             "simulated; `--method exact` keeps the staged plans too. Target: "
             "default >= 99.9% of exact wherever exact proves optimality.", "",
             "| model | default method | exact's CP-SAT status | min default/exact | mean | seeds won by a step after the search (staged DP or certificate solve) |",
             "|---|---|---|---:|---:|---:|"]
    lines += [f"| {m} | {dm} | {st} | {100 * lo:.2f}% | {100 * mean:.2f}% | {won}/{len(args.seeds)} |"
              for m, dm, st, lo, mean, won in rows]
    print("\n".join(lines))
    if args.write:
        update_section("CP-SAT: the default command against `--method exact`", "\n".join(lines))


if __name__ == "__main__":
    main()
