"""Models that need the memory tier, on the default hardware: throughput, certificate, planner time, peak memory.

    python benchmarks/memtier.py [--models examples/gpt2.onnx examples/llama-1b.onnx] [--chiplets 16 64]
                                 [--batch 1] [--write]

Each (model, chiplets) runs the real CLI (`partition MODEL --chiplets N --batch B`, default method, fp16) in a fresh
process, timed with its peak RSS (os.wait4). The result is checked from the files alone: exit 0, partition.json
valid under `partition.check` with its streamed weights, pipeline order on every edge of the ONNX graph (producer
node's chiplet <= consumer node's), and throughput <= the CP-SAT certificate. --write replaces the "Memory tier"
section of benchmarks/RESULTS.md.
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

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from benchmarks.shard_scale import onnx_order_violations  # noqa: E402
from partitioner.app.document import assignment_from_document  # noqa: E402
from partitioner.app.run import load_model
from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.app.memtier import streamed_from_document  # noqa: E402
from partitioner.model.partition import check  # noqa: E402

EXPLAIN = (
    "The models in examples/ that do not fit the SRAM-only package (GPT-2: its 75 MiB token embedding, tied "
    "to the LM head, exceeds one chiplet's 64 MiB; the 16-layer 1B Llama: 2.1 GB of fp16 weights, and a 501 MiB "
    "embedding / LM head), partitioned by the default command on the default hardware (near-square mesh, HBM3 "
    "stacks on the west and east edges, fp16, default method rl, 64 evaluations, 10 s CP-SAT certificate) on the "
    "2-core machine. `weights`: all fp16 weights; `streamed`: the weights the partition keeps off-chip (and how "
    "many ops); `stack reads / inf`: bytes read from the stacks per inference. `certificate`: CP-SAT's proven upper "
    "bound on the simulated throughput of any partition the tool can output (busiest chiplet, link average or "
    "stack, over every assignment and every choice of streamed weights); `proven`: CP-SAT closed the gap. `planner "
    "s` and `peak RSS`: the whole command in a fresh process (import, search, certificate, all outputs). `valid, "
    "ONNX order`: partition.json re-checked by `partition.check` with its streamed weights, and the number of ONNX "
    "edges whose producer node sits on a later chiplet than its consumer (must be 0).")

DEFAULT_MODELS = ["examples/gpt2.onnx", "examples/llama-1b.onnx"]


def run_one(model: str, chiplets: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "partitioner.app.cli", model, "--chiplets", str(chiplets), "--batch", str(batch),
               "--out", out]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.stdout.read()
        stderr = proc.stderr.read().decode()
        proc.returncode = os.waitstatus_to_exitcode(status)
        row = {"model": Path(model).stem, "chiplets": chiplets, "exit": proc.returncode, "wall_s": wall,
               "rss_mib": usage.ru_maxrss / 1024}
        if proc.returncode != 0:
            row["error"] = (stderr.strip().splitlines() or ["?"])[-1]
            return row
        doc = json.loads((Path(out) / "partition.json").read_text())
    graph = load_model(model, None, "fp16")
    hw = load_hardware(None, chiplets)
    a = assignment_from_document(graph, doc, "partition.json")
    streamed = streamed_from_document(graph, doc, "partition.json")
    m = doc["metrics"]
    tier = doc["memory_tier"]
    row.update(
        ops=graph.n_ops, weights_mib=graph.total_weight_bytes / 2**20,
        streamed_ops=len(tier["streamed"]), streamed_mib=sum(r["weight_bytes"] for r in tier["streamed"]) / 2**20,
        stack_read_mib=sum(s["read_bytes_per_inference"] for s in tier["stacks"]) / 2**20,
        throughput=m["throughput_per_s"], certificate=m.get("solver_bound_throughput_per_s"),
        status=m.get("solver_bound_status"), bottleneck=m["bottleneck"],
        valid=not check(graph, hw, a, streamed=np.asarray(streamed) if streamed is not None else None),
        onnx_order_violations=onnx_order_violations(model, doc["assignment"]))
    return row


def table(rows: list[dict], batch: int) -> str:
    lines = ["| model | chiplets | exit | weights | streamed (ops) | stack reads / inf | throughput /s | certificate /s "
             "| % of cert | proven | planner s | peak RSS | valid, ONNX order |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        if r["exit"] != 0:
            lines.append(f"| {r['model']} | {r['chiplets']} | {r['exit']} | | | | | | | | {r['wall_s']:.0f} "
                         f"| {r['rss_mib']:.0f} MiB | {r.get('error', '')} |")
            continue
        cert = r["certificate"]
        pct = f"{100 * r['throughput'] / cert:.1f}%" if cert else "n/a"
        lines.append(
            f"| {r['model']} | {r['chiplets']} | 0 | {r['weights_mib']:,.0f} MiB | {r['streamed_mib']:,.0f} MiB "
            f"({r['streamed_ops']}) | {r['stack_read_mib']:,.1f} MiB | {r['throughput']:,.1f} | "
            f"{cert:,.1f} | {pct} | {'yes' if r['status'] == 'optimal' else 'no (' + str(r['status']) + ')'} | "
            f"{r['wall_s']:.0f} | {r['rss_mib']:.0f} MiB | "
            f"{'yes' if r['valid'] else 'NO'}, {r['onnx_order_violations']} backward edges |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--chiplets", nargs="+", type=int, default=[16, 64])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--write", action="store_true", help='replace the "Models larger than SRAM: the memory tier" section of RESULTS.md')
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        for n in args.chiplets:
            rows.append(run_one(model, n, args.batch))
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args.batch)
    print(text)
    if args.write:
        cmd = "python benchmarks/memtier.py " + " ".join(["--models", *args.models, "--chiplets",
                                                          *map(str, args.chiplets), "--batch", str(args.batch)])
        update_section("Models larger than SRAM: the memory tier", f"Command: `{cmd} --write`\n\n{EXPLAIN}\n\n{text}\n")


if __name__ == "__main__":
    main()
