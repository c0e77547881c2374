"""Wall time of the whole `partition MODEL.onnx --chiplets N` command (import, search, certificate, outputs).

    python benchmarks/e2e_time.py [--model examples/bert-base.onnx] [--chiplets 16] [--repeats 3]

Runs the real CLI in fresh subprocesses (so import time counts, as it does for a user), once per method, and writes
the "End-to-end run time" section of benchmarks/RESULTS.md. Target: the default method under 60 s on 2 cores.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="examples/bert-base.onnx")
    ap.add_argument("--chiplets", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", nargs="+", default=["rl", "anneal", "dp", "exact"])
    args = ap.parse_args(argv)
    rows = []
    for method in args.methods:
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                cmd = [sys.executable, "-m", "partitioner.app.cli", args.model, "--chiplets", str(args.chiplets),
                       "--method", method, "--out", out]
                start = time.perf_counter()
                subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
                times.append(time.perf_counter() - start)
        rows.append((method, statistics.median(times), min(times), max(times)))
    base = rows[0][1]
    lines = [f"Command: `python benchmarks/e2e_time.py --model {args.model} --chiplets {args.chiplets} "
             f"--repeats {args.repeats} --methods {' '.join(args.methods)}`",
             "",
             f"`partition {args.model} --chiplets {args.chiplets} --method M` in a fresh process (import, search with "
             f"the default budget of 64 evaluations, CP-SAT certificate, all outputs), {args.repeats} runs each, "
             "on the 2-core machine. Target: the default method under 60 s.",
             "",
             f"| method | median s | min s | max s | vs {rows[0][0]} |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {m} | {med:.1f} | {lo:.1f} | {hi:.1f} | {med / base:.2f} |" for m, med, lo, hi in rows]
    update_section("End-to-end run time", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
