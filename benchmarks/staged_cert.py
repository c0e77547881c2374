"""The certificate of runs whose ops may split: the analytical bound against CP-SAT's staged bound
(solver/staged_opt.py), its status, gap and solve time, and the run's plan as a % of the certificate. Each row is
the normal `partition` command (default method, default --max-shard auto: staged_dp.auto_max_shard) in its own process.

    python -m benchmarks.staged_cert --models examples/bert-base.onnx examples/bert-large.onnx \
        --chiplets 16 64 144 --out /tmp/staged_cert

Prints a markdown table and writes rows.json under --out.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from partitioner.model.cost import sharded_bound_cycles
from partitioner.hw.toml import load_hardware
from partitioner.frontend.load import load_onnx
from partitioner.plan.staged_dp import auto_max_shard


def run_one(model: str, chiplets: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "partitioner.app.cli", model, "--chiplets", str(chiplets), "--out", str(out)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    row = {"model": Path(model).stem, "chiplets": chiplets, "rc": proc.returncode, "wall_s": wall}
    if proc.returncode != 0:
        return row | {"error": proc.stderr.strip()[-300:]}
    doc = json.loads((out / "partition.json").read_text())
    m = doc["metrics"]
    hw = load_hardware(None, chiplets)
    graph = load_onnx(model, precision="fp16")
    staged = m.get("staged_solve", {})
    return row | {"analytical_cycles": sharded_bound_cycles(graph, hw, auto_max_shard(chiplets)),
                  "max_shard": auto_max_shard(chiplets),
                  "staged_bound_cycles": staged.get("bound_cycles"), "status": staged.get("status"),
                  "gap": staged.get("gap"), "objective_cycles": staged.get("objective_cycles"),
                  "solve_s": staged.get("solve_time_s"), "placements": staged.get("placements"),
                  "certificate_kind": m.get("certificate_kind"),
                  "certificate_per_s": m.get("solver_bound_throughput_per_s"), "throughput": m["throughput_per_s"],
                  "cycles_per_inference": m["cycles_per_inference"],
                  # the plan's busiest chiplet's compute: what a busy-time bound could at best reach for it
                  "plan_busiest_cycles": max(c["busy_fraction"] for c in doc["per_chiplet"]) * m["cycles_per_inference"]}


def table(rows: list[dict]) -> str:
    lines = ["| model | chiplets | max shard | analytical bound (cyc) | CP-SAT staged bound (cyc) | status | gap | best in "
             "model (cyc) | placements | solve s | certificate | plan cyc/inf | plan busiest chiplet (cyc) | plan % of "
             "certificate | run wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["rc"] != 0:
            lines.append(f"| {r['model']} | {r['chiplets']} | failed: {r.get('error', '')} |||||||||||")
            continue
        pct = 100 * r["throughput"] / r["certificate_per_s"] if r["certificate_per_s"] else float("nan")
        fmt = lambda x, f: "-" if x is None else format(x, f)  # noqa: E731
        lines.append(f"| {r['model']} | {r['chiplets']} | {r['max_shard']} | {r['analytical_cycles']:,.1f} | "
                     f"{fmt(r['staged_bound_cycles'], ',.0f')} | {r['status']} | "
                     f"{fmt(None if r['gap'] is None else 100 * r['gap'], '.1f')}% | "
                     f"{fmt(r['objective_cycles'], ',.0f')} | {fmt(r['placements'], ',')} | {fmt(r['solve_s'], '.1f')} | "
                     f"{r['certificate_kind']} | {r['cycles_per_inference']:,.0f} | {r['plan_busiest_cycles']:,.0f} | "
                     f"{pct:.1f}% | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["examples/bert-base.onnx", "examples/bert-large.onnx"])
    ap.add_argument("--chiplets", nargs="+", type=int, default=[16, 64, 144])
    ap.add_argument("--out", default="/tmp/staged_cert")
    args = ap.parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for model in args.models:
        for n in args.chiplets:
            rows.append(run_one(model, n, root / f"{Path(model).stem}-{n}"))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    (root / "rows.json").write_text(json.dumps(rows, indent=1))
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
