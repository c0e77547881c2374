"""Models x chiplet counts through the normal `partition` command with intra-op sharding: throughput, % of the
MAC-only ceiling (chiplets x 4096 MACs x 1 GHz / the model's MACs), % of the certificate, whether it is proven,
planner wall time and peak memory (RSS) of each run, each run in its own process.

    python -m benchmarks.shard_scale --models bert-base bert-large distilbert gpt2 llama-1b vit-base resnet50 \
        t5-small-encoder --chiplets 16 64 144 --method default --out /tmp/shard_scale

`--method default` runs the command exactly as a user types it (no --method). Each row also checks the written
partition.json against the ONNX file itself: every ONNX edge in pipeline order (a producer's last chiplet at or
before its consumer's first, or both in one group) and throughput <= the certificate. Prints a markdown table (and
writes rows.json under --out).
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

from partitioner.frontend.load import load_onnx


def run_one(model: str, chiplets: int, method: str, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "partitioner.app.cli", model, "--chiplets", str(chiplets),
           *([] if method == "default" else ["--method", method]), "--out", str(out), *extra]
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
            "groups": len(doc.get("groups", [])), "wall_s": wall, "rss_mib": usage.ru_maxrss / 1024,
            "backward_edges": onnx_order_violations(model, doc["assignment"]), "method": doc.get("method"),
            "streamed_ops": len(doc.get("memory_tier", {}).get("streamed", []) or [])}


def onnx_order_violations(model: str, by_node: dict) -> int:
    """ONNX edges whose producer's last chiplet is after its consumer's first, unless both share one group."""
    import onnx

    def span(v) -> tuple[int, int]:
        chips = v["chiplets"] if isinstance(v, dict) else [v]
        return min(chips), max(chips)

    graph = onnx.load(model, load_external_data=False).graph
    producer = {out: n.name for n in graph.node for out in n.output}
    bad = 0
    for n in graph.node:
        for inp in n.input:
            src = producer.get(inp)
            if src in by_node and n.name in by_node:
                (s0, s1), (d0, d1) = span(by_node[src]), span(by_node[n.name])
                bad += (s0, s1) != (d0, d1) and s1 > d0
    return bad


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", required=True, help="names in --dir (without .onnx)")
    ap.add_argument("--dir", default="examples")
    ap.add_argument("--chiplets", nargs="+", type=int, default=[16, 64, 144])
    ap.add_argument("--method", default="dp")
    ap.add_argument("--out", default="/tmp/shard_scale")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more CLI options, e.g. --max-shard 1")
    args = ap.parse_args(argv)
    rows = []
    print("| model | chiplets | method | throughput /s | % MAC ceiling | % certificate | certificate | split ops (groups) "
          "| streamed ops | backward ONNX edges | wall s | peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        for n in args.chiplets:
            out = Path(args.out) / f"{name}-{n}"
            r = run_one(str(Path(args.dir) / f"{name}.onnx"), n, args.method, out, args.extra)
            rows.append(r)
            if r["rc"]:
                print(f"| {name} | {n} | exit {r['rc']}: {r['error']} | | | | | | | | | |", flush=True)
                continue
            cert = r["certificate"]
            pct = f"{100 * r['throughput'] / cert:.1f}%" if cert else "-"
            print(f"| {name} | {n} | {r['method']} | {r['throughput']:,.0f} | "
                  f"{100 * r['throughput'] / r['ceiling']:.1f}% | {pct} | {r['proven']} | "
                  f"{r['split_ops']} ({r['groups']}) | {r['streamed_ops']} | {r['backward_edges']} | "
                  f"{r['wall_s']:.0f} | {r['rss_mib']:.0f} |", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "rows.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
