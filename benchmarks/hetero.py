"""Heterogeneous packages: the default `partition` run against the package's MAC ceiling and its bounds.

    python -m benchmarks.hetero [--model examples/bert-large.onnx]
                                [--hardware examples/hardware/hetero-64.toml examples/hardware/hetero-blocks-64.toml]
                                [--rows] [--write]

Each package runs the real CLI (`partition MODEL --hardware H`: default method, fp16, pipeline_order auto) in a
fresh process; `--rows` runs each once more with `pipeline_order = "rows"` (the row snake the ids follow in the file,
as every run did before the pipeline order became a choice). The MAC ceiling is the model's MACs (its matrix flops
/ 2) at the sum of the chiplets' MACs per cycle times the clock: no plan on the package can beat it. Every result is
checked from its files: exit 0, partition.json valid under `partition.check` on the path it records, throughput
<= the analytical bound <= the ceiling. --write replaces the "Heterogeneous packages" section of
benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from partitioner.app.document import assignment_from_document  # noqa: E402
from partitioner.app.run import load_model  # noqa: E402
from partitioner.app.simulate_cmd import saved_order  # noqa: E402
from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.model.partition import Partition, check  # noqa: E402

DEFAULT_MODEL = "examples/bert-large.onnx"
DEFAULT_HARDWARE = ["examples/hardware/hetero-64.toml", "examples/hardware/hetero-blocks-64.toml"]
EXPLAIN = """Each row is `partition MODEL --hardware H` (default method, fp16) in its own process; "rows" rows run the
same file with `pipeline_order = "rows"` prepended (the row snake, as before the pipeline order became a choice).
`path`: the pipeline order the run took (partition.json's `pipeline_order`). `MAC ceiling`: the model's MACs at the
package's total MACs per cycle. `bound`: the analytical bound (kinds balanced, model/kind_bound.py); `certificate`:
the run's certificate and its gap (1 - throughput / certificate). `valid`: partition.json re-checked by
`partition.check` on the recorded path, throughput <= bound <= ceiling. CPU s: user + sys of the run's process (a
shared 2-core machine, so wall time is not comparable between rows)."""


def run_one(model: str, hardware: str, rows: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        spec = hardware
        if rows:
            spec = str(Path(out) / Path(hardware).name)
            Path(spec).write_text('pipeline_order = "rows"\n' + Path(hardware).read_text())
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "partitioner.app.cli", model, "--hardware", spec,
                               "--out", str(Path(out) / "run")], cwd=ROOT, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        row = {"package": Path(hardware).stem + (" (rows)" if rows else ""), "exit": proc.returncode,
               "wall_s": time.perf_counter() - start,
               "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime}
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return row
        doc = json.loads((Path(out) / "run" / "partition.json").read_text())
        hw = saved_order(load_hardware(spec), doc, "partition.json")
    graph = load_model(model, None, "fp16")
    macs = float(graph.matrix_flops.sum()) / 2
    ceiling = sum(c.macs_per_cycle for c in hw.chiplets) * hw.clock_hz / macs
    part = assignment_from_document(graph, doc, "partition.json")
    a, shard = (part.assignment, part.shard) if isinstance(part, Partition) else (part, None)
    m = doc["metrics"]
    cert = m.get("solver_bound_throughput_per_s")
    bound = m["bound_throughput_per_s"]
    row.update(path=doc.get("pipeline_order"), throughput=m["throughput_per_s"], ceiling=ceiling, bound=bound,
               certificate=cert, certificate_kind=m.get("certificate_kind", m.get("solver_bound_status")),
               bottleneck=m["bottleneck"], groups=len(doc["groups"]), gmac=macs / 1e9,
               valid=not check(graph, hw, a, shard=shard)
               and m["throughput_per_s"] <= bound * (1 + 1e-9) and bound <= ceiling * (1 + 1e-9))
    return row


def table(rows: list[dict]) -> str:
    lines = ["| package | path | throughput /s | % of MAC ceiling | MAC ceiling /s | bound /s (% of ceiling) | "
             "certificate /s | certificate gap | bottleneck | split groups | valid | CPU s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---:|"]
    for r in rows:
        if r["exit"] != 0:
            lines.append(f"| {r['package']} | | | | | | | | | | exit {r['exit']}: {r.get('error', '')} | "
                         f"{r['cpu_s']:.0f} |")
            continue
        cert = r["certificate"]
        cert_text = "-" if cert is None else f"{cert:,.1f} ({r['certificate_kind']})"
        gap = "-" if cert is None else f"{100 * (1 - r['throughput'] / cert):.1f}%"
        lines.append(
            f"| {r['package']} | {r['path']} | {r['throughput']:,.1f} | {100 * r['throughput'] / r['ceiling']:.1f}% "
            f"| {r['ceiling']:,.1f} | {r['bound']:,.1f} ({100 * r['bound'] / r['ceiling']:.1f}%) | {cert_text} | "
            f"{gap} | {r['bottleneck']} | {r['groups']} | {'yes' if r['valid'] else 'NO'} | {r['cpu_s']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--hardware", nargs="+", default=DEFAULT_HARDWARE, help="heterogeneous .toml files")
    ap.add_argument("--rows", action="store_true", help="also run each package on the row snake")
    ap.add_argument("--write", action="store_true", help='replace the "Heterogeneous packages" section of RESULTS.md')
    args = ap.parse_args(argv)
    out = []
    for hw in args.hardware:
        for rows in (False, True) if args.rows else (False,):
            out.append(run_one(args.model, hw, rows))
            print(json.dumps(out[-1]), flush=True)
    text = table(out)
    print(text)
    if args.write:
        cmd = "python -m benchmarks.hetero " + " ".join(
            ["--model", args.model, "--hardware", *args.hardware] + (["--rows"] if args.rows else []))
        update_section("Heterogeneous packages", f"Command: `{cmd} --write`\n\n{EXPLAIN}\n\n{text}\n")


if __name__ == "__main__":
    main()
