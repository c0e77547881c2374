"""LLMs as people ship them through the normal `partition` command: Llama-3-8B and Llama-3-70B-shaped prefill (128
tokens), each run in its own process, with throughput, % of the MAC ceiling, the bottleneck, the plan's groups and
split ops, and the run's wall time, CPU time (user + sys) and peak memory (RSS).

    python -m benchmarks.llm_blocks                          # 8B fp16 at 64, 70B int8 at 64, 144 and 512 chiplets
    python -m benchmarks.llm_blocks --runs llama-3-8b:64:fp16 llama-3-70b:144:int8

Models are exported graph-only from their transformers configs on the meta device (`python scripts/export_models.py
--decoders-large DIR --only NAME-legacy`, run by this script for what --dir lacks; no weight memory, a few minutes
for 70B). Hardware: `--chiplets N`, the default mesh of N chiplets with its HBM tier. The MAC ceiling is the
package's MACs per cycle at the precision x clock / the model's MACs per inference: what the chiplets' arrays could
do if every MAC slot were used. The stream bound (partitioner/model/stream_bound.py) is what no plan at batch 1 can
beat when the chiplets off the stacks stream their weights over the first links of their stream routes.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llm_runs import export  # noqa: E402
from partitioner.frontend.blocks import find_blocks  # noqa: E402
from partitioner.frontend.load import load_onnx  # noqa: E402
from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.model.stream_bound import stream_bound_cycles  # noqa: E402

RUNS = ("llama-3-8b:64:fp16", "llama-3-70b:64:int8", "llama-3-70b:144:int8", "llama-3-70b:512:int8")
"""MODEL:CHIPLETS[:PRECISION] (default precision: --precision)."""


def mac_ceiling(model: Path, chiplets: int, precision: str) -> tuple[float, float, int, str]:
    """(inferences/s the package's arrays allow, inferences/s the links from the stacks allow
    (model/stream_bound.py), ops, blocks found) for `model` at `precision`."""
    graph = load_onnx(model, precision=precision)
    hw = load_hardware(None, chiplets)
    macs = float(graph.matrix_flops.sum()) / 2
    blocks = find_blocks(graph)
    found = f"{blocks.count} x {blocks.period} from op {blocks.start}" if blocks else "none"
    return (sum(c.macs_for(precision) for c in hw.chiplets) * hw.clock_hz / macs,
            hw.clock_hz / stream_bound_cycles(graph, hw), graph.n_ops, found)


def run_one(model: Path, chiplets: int, precision: str, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "partitioner.app.cli", str(model), "--chiplets", str(chiplets), "--precision",
           precision, "--out", str(out), *extra]
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err_file:     # a file, not a pipe: a chatty child cannot block on it
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err_file)
        _, status, usage = os.wait4(proc.pid, 0)    # wait4: this child's own peak RSS and CPU time
        wall = time.perf_counter() - start
        err_file.seek(0)
        err = err_file.read().decode(errors="replace")
    rc = os.waitstatus_to_exitcode(status)
    row = {"command": " ".join(["python -m partitioner.app.cli", f"{model.name}", "--chiplets", str(chiplets),
                                "--precision", precision, *extra]), "rc": rc, "wall_s": wall,
           "rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}
    if rc != 0:
        return row | {"error": err.strip()[-300:]}
    doc = json.loads((out / "partition.json").read_text())
    return row | {"throughput": doc["metrics"]["throughput_per_s"], "found_by": doc.get("found_by") or doc["method"],
                  "split_ops": sum(g["ops"] for g in doc.get("groups", [])),    # ops, as the run's summary
                  "groups": len(doc.get("groups", [])), "bottleneck": doc["metrics"].get("bottleneck")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=list(RUNS), help="MODEL:CHIPLETS pairs (default: %(default)s)")
    ap.add_argument("--precision", default="int8")
    ap.add_argument("--dir", default="/tmp/llm-exports", help="where the exports are (made if missing)")
    ap.add_argument("--out", default="/tmp/llm_blocks")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more CLI options")
    args = ap.parse_args(argv)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| model | precision | ops | blocks | chiplets | throughput /s | MAC ceiling /s | % of it | stream bound /s | "
          "% of it | bottleneck | groups > 1 (ops split) | wall s | CPU s | max RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.runs:
        model, chiplets, precision = (spec.split(":") + [args.precision])[:3]
        path = export(model, directory)
        ceiling, streams, ops, blocks = mac_ceiling(path, int(chiplets), precision)
        r = run_one(path, int(chiplets), precision, Path(args.out) / f"{model}-{chiplets}-{precision}", args.extra)
        rows.append(r | {"model": model, "chiplets": int(chiplets), "precision": precision, "ceiling": ceiling,
                         "stream_bound": streams})
        head = f"| {model} | {precision} | {ops:,} | {blocks} | {chiplets} |"
        if r["rc"]:
            print(f"{head} exit {r['rc']}: {r['error']} | | | | | | | | | |", flush=True)
            continue
        print(f"{head} {r['throughput']:,.1f} | {ceiling:,.1f} | {100 * r['throughput'] / ceiling:.1f}% | "
              f"{streams:,.1f} | {100 * r['throughput'] / streams:.1f}% | {r['bottleneck']} | {r['groups']} ({r['split_ops']:,}) | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
              f"{r['rss_mib'] / 1024:.2f} |", flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "rows.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
