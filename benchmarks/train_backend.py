"""`partition train` rollouts per second: in-process, on a local process pool and on a local Ray instance.

    python -m benchmarks.train_backend --steps 12 --synthetic 12 --chiplets 8,16 --out /tmp/train_backend

Runs the same `partition train` command (an empty --corpus plus --synthetic random DAGs, seed 0) once per backend,
each in a fresh process with a fresh checkpoint, and reads each run's learning curve (OUT/NAME.csv): evaluations
per second over the whole run and after the first update (which pays for spawning the pool's or Ray's worker
processes and their imports), the command's wall time (imports, corpus, Ray start-up included), and whether the
curves agree (they must: same seed, same evaluations; only wall_s may differ).
"""
from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

BACKENDS = {"serial": ("in-process (--workers 1)", ["--workers", "1"]),
            "pool": ("2 local workers (--workers 2)", ["--workers", "2"]),
            "ray": ("local Ray, 2 CPUs (--ray local --workers 2)", ["--ray", "local", "--workers", "2"])}


def run(key: str, args: argparse.Namespace, out: Path) -> dict:
    name, flags = BACKENDS[key]
    ckpt = out / f"{key}.pt"
    for stale in (ckpt, ckpt.with_suffix(".csv")):
        stale.unlink(missing_ok=True)
    corpus = out / "empty-corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "partitioner.app.cli", "train", "--corpus", str(corpus), "--synthetic",
           str(args.synthetic), "--chiplets", args.chiplets, "--steps", str(args.steps), "--seed", "0", "--out",
           str(ckpt), *flags]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    with open(ckpt.with_suffix(".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    evals, secs = int(rows[-1]["evals"]), float(rows[-1]["wall_s"])
    later = (evals - int(rows[0]["evals"])) / (secs - float(rows[0]["wall_s"]))
    curve = [(r["step"], r["evals"], r["mean_reward"], r["max_reward"], r["best_throughput"]) for r in rows]
    return {"name": name, "evals": evals, "train_s": secs, "rate": evals / secs, "later": later, "wall": wall,
            "curve": curve}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--synthetic", type=int, default=12)
    ap.add_argument("--chiplets", default="8,16")
    ap.add_argument("--out", default="/tmp/train_backend")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run(key, args, out) for key in BACKENDS]
    print("| backend | evaluations | training s | evaluations/s | after update 1 | command wall s | same curve |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['evals']} | {r['train_s']:.1f} | {r['rate']:.2f} | {r['later']:.2f} | "
              f"{r['wall']:.1f} | {'yes' if r['curve'] == results[0]['curve'] else 'NO'} |")
    return 0 if all(r["curve"] == results[0]["curve"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
