"""Models x chiplet counts through the normal `partition` command with intra-op sharding: throughput, % of the
MAC-only ceiling (chiplets x 4096 MACs x 1 GHz / the model's MACs), % of the certificate, whether it is proven,
planner wall time and peak memory (RSS) of each run, each run in its own process.

    python -m benchmarks.shard_scale --models bert-base bert-large distilbert vit-base resnet50 t5-small-encoder \
        --chiplets 16 64 144 --method dp --out /tmp/shard_scale

Prints a markdown table (and writes rows.json under --out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from partitioner.onnx_import import load_onnx


def run_one(model: str, chiplets: int, method: str, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "partitioner.app.cli", model, "--chiplets", str(chiplets), "--method", method,
           "--out", str(out), *extra]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err_file:     # a file, not a pipe: a chatty child cannot block on it
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
        _, status, usage = os.wait4(proc.pid, 0)    # wait4: this child's own peak RSS
        wall = time.perf_counter() - start
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        return {"model": Path(model).stem, "chiplets": chiplets, "rc": rc, "error": err.strip()[-300:]}
    doc = json.loads((out / "partition.json").read_text())
    m = doc["metrics"]
    graph = load_onnx(model, precision="fp16")
    ceiling = chiplets * 4096 * 1e9 / (float(graph.matrix_flops.sum()) / 2)
    cert = m.get("solver_bound_throughput_per_s")
    return {"model": Path(model).stem, "chiplets": chiplets, "rc": 0, "throughput": m["throughput_per_s"],
            "ceiling": ceiling, "certificate": cert, "proven": m.get("solver_bound_status"),
            "split_ops": sum(1 for v in doc["assignment"].values() if isinstance(v, dict)),
            "groups": len(doc.get("groups", [])), "wall_s": wall, "rss_mib": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", required=True, help="names in --dir (without .onnx)")
    ap.add_argument("--dir", default="/work/models")
    ap.add_argument("--chiplets", nargs="+", type=int, default=[16, 64, 144])
    ap.add_argument("--method", default="dp")
    ap.add_argument("--out", default="/tmp/shard_scale")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more CLI options, e.g. --max-shard 1")
    args = ap.parse_args(argv)
    rows = []
    print("| model | chiplets | throughput /s | % MAC ceiling | % certificate | certificate | split ops (groups) "
          "| wall s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for n in args.chiplets:
            out = Path(args.out) / f"{name}-{n}"
            r = run_one(str(Path(args.dir) / f"{name}.onnx"), n, args.method, out, args.extra)
            rows.append(r)
            if r["rc"]:
                print(f"| {name} | {n} | exit {r['rc']}: {r['error']} | | | | | | |", flush=True)
                continue
            cert = r["certificate"]
            print(f"| {name} | {n} | {r['throughput']:,.0f} | {100 * r['throughput'] / r['ceiling']:.1f}% | "
                  f"{100 * r['throughput'] / cert:.1f}% | {r['proven']} | {r['split_ops']} ({r['groups']}) | "
                  f"{r['wall_s']:.0f} | {r['rss_mib']:.0f} |", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "rows.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
