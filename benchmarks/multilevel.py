"""Two packages on a board vs one flat package of the same chiplets: throughput, certificate, package-link bytes.

    python -m benchmarks.multilevel [--models examples/bert-large.onnx examples/llama-1b.onnx]
                                    [--hardware two-package-2x16 32] [--write]

Each (model, hardware) runs the real CLI (`partition MODEL --hardware H`, or `--chiplets N` for a number: the flat
near-square mesh with the default HBM tier; default method, fp16) in a fresh process. The result is checked from
its files: exit 0, partition.json valid under `partition.check` (streamed weights and split groups included) and
throughput <= the certificate. --write replaces the "Two packages on a board" section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from partitioner.app.document import assignment_from_document  # noqa: E402
from partitioner.app.run import load_model
from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.app.memtier import streamed_from_document  # noqa: E402
from partitioner.model.partition import Partition, check  # noqa: E402

DEFAULT_MODELS = ["examples/bert-large.onnx", "examples/llama-1b.onnx"]
EXPLAIN = """Each row is the command a user types (`partition MODEL --hardware H`, or `--chiplets N` for "flat N"),
default method, fp16, in its own process. `package-link bytes / inf`: bytes per inference on the package links
(`package_link_bytes_per_inference` in partition.json). `valid, <= cert`: partition.json re-checked by
`partition.check` (streamed weights and split groups included) and throughput <= the certificate."""
DEFAULT_HARDWARE = ["two-package-2x16", "32"]


def run_one(model: str, hardware: str) -> dict:
    flat = hardware.isdigit()
    spec = ["--chiplets", hardware] if flat else ["--hardware", hardware]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "partitioner.app.cli", model, *spec, "--out", out], cwd=ROOT,
                              capture_output=True, text=True)
        row = {"model": Path(model).stem, "hardware": f"flat {hardware}" if flat else hardware,
               "exit": proc.returncode, "wall_s": time.perf_counter() - start}
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return row
        doc = json.loads((Path(out) / "partition.json").read_text())
    graph = load_model(model, None, "fp16")
    hw = load_hardware(None, int(hardware)) if flat else load_hardware(hardware)
    part = assignment_from_document(graph, doc, "partition.json")
    a, shard = (part.assignment, part.shard) if isinstance(part, Partition) else (part, None)
    streamed = streamed_from_document(graph, doc, "partition.json")
    m = doc["metrics"]
    cert = m.get("solver_bound_throughput_per_s")
    row.update(throughput=m["throughput_per_s"], certificate=cert, status=m.get("solver_bound_status"),
               bottleneck=m["bottleneck"], package_bytes=m.get("package_link_bytes_per_inference"),
               link_mj=1e3 * m["energy_breakdown_j"]["link"], streamed_ops=len(doc["memory_tier"]["streamed"]),
               groups=len(doc["groups"]),
               valid=not check(graph, hw, a, streamed=None if streamed is None else np.asarray(streamed),
                               shard=shard),
               under_certificate=cert is None or m["throughput_per_s"] <= cert * (1 + 1e-9))
    return row


def table(rows: list[dict]) -> str:
    lines = ["| model | hardware | exit | throughput /s | certificate /s | % of cert | bottleneck | package-link bytes "
             "/ inf | link energy / inf | streamed ops | split groups | valid, <= cert | wall s |",
             "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        if r["exit"] != 0:
            lines.append(f"| {r['model']} | {r['hardware']} | {r['exit']} | | | | | | | | | {r.get('error', '')} "
                         f"| {r['wall_s']:.0f} |")
            continue
        cert = r["certificate"]
        pkg = "-" if r["package_bytes"] is None else f"{r['package_bytes']:,.0f}"
        lines.append(
            f"| {r['model']} | {r['hardware']} | 0 | {r['throughput']:,.1f} | {cert:,.1f} ({r['status']}) | "
            f"{100 * r['throughput'] / cert:.1f}% | {r['bottleneck']} | {pkg} | {r['link_mj']:.3f} mJ | "
            f"{r['streamed_ops']} | {r['groups']} | {'yes' if r['valid'] else 'NO'}, "
            f"{'yes' if r['under_certificate'] else 'NO'} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--hardware", nargs="+", default=DEFAULT_HARDWARE,
                    help="presets or .toml files, or a number N for the flat --chiplets N package")
    ap.add_argument("--write", action="store_true", help='replace the "Two packages on a board" section of RESULTS.md')
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        for hw in args.hardware:
            rows.append(run_one(model, hw))
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows)
    print(text)
    if args.write:
        cmd = "python -m benchmarks.multilevel " + " ".join(["--models", *args.models, "--hardware", *args.hardware])
        update_section("Two packages on a board", f"Command: `{cmd} --write`\n\n{EXPLAIN}\n\n{text}\n")


if __name__ == "__main__":
    main()
