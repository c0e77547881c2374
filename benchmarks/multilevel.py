"""Two packages on a board vs one flat package of the same chiplets: throughput, certificate, package-link bytes.
With --node: a 70B decoder on the three-level mi300x-node (8 GPUs on xGMI) against one mi300x.

    python -m benchmarks.multilevel [--models examples/bert-large.onnx examples/llama-1b.onnx]
                                    [--hardware two-package-2x16 32] [--write]
    python -m benchmarks.multilevel --node [--llm /tmp/llm-exports/llama-2-70b-legacy.onnx] [--rows ROWS.jsonl]
                                    [--write]

Each (model, hardware) runs the real CLI (`partition MODEL --hardware H`, or `--chiplets N` for a number: the flat
near-square mesh with the default HBM tier; default method, fp16) in a fresh process. The result is checked from
its files: exit 0, partition.json valid under `partition.check` (streamed weights and split groups included) and
throughput <= the certificate. --write replaces the "Two packages on a board" section of benchmarks/RESULTS.md.

--node runs `partition LLM --hardware H --precision fp8 --method dp --no-certificate` for H in mi300x, mi300x-node
and two runs (NODE_RUNS: prefill of a 512-token prompt in 64-token chunks; decode --batch 64 --context 1024; with
--latency also a decode of one sequence under --objective latency), each under /usr/bin/time (CPU seconds, peak
memory), and reads the plan back from partition.json: its stages (a chiplet running whole ops or a group of split
ops), the GPUs they run on, the groups and whether any straddles two GPUs (none may: the xGMI links are slower than
the XCD links, cost.may_group). --write replaces the "Three levels" section.
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

from benchmarks.llm_runs import EXPORTS, export  # noqa: E402
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


NODE_HARDWARE = ("mi300x", "mi300x-node")
NODE_RUNS = (
    ("prefill", ["--phase", "prefill", "--input-shape", "input_ids=1x64", "--input-shape", "attention_mask=1x64",
                 "--batch", "8"]),
    ("decode B 64", ["--phase", "decode", "--batch", "64", "--context", "1024"]))
LATENCY_RUN = ("decode B 1, latency", ["--phase", "decode", "--batch", "1", "--context", "1024", "--objective",
                                      "latency"])
"""Prefill: a 512-token prompt as 8 chunks of 64 tokens (the most whose largest op's activations fit an XCD's
SRAM), each an inference, each streamed weight read once per prompt (benchmarks/mlperf_offline.py,
docs/fidelity.md). Decode B 64: one step of 64 sequences over 1,024 cached tokens, throughput objective. Decode B 1,
latency: one sequence's next token as fast as possible (--objective latency: stages add up, so splitting an op over
a GPU's XCDs pays where pipelining cannot; LATENCY_RUN, with --latency: about 5 CPU minutes a run, and over 25
wall minutes on mi300x-node on a shared 2-core machine, mostly in the traced simulation of the final plan)."""
PROMPT = 512
NODE_TITLE = "Three levels: Llama-2-70B across an 8-GPU MI300X node"
NODE_EXPLAIN = """`tokens/s`: prefill, prompt tokens (8 chunks of 64 per 512-token prompt); decode B 64, tokens of the
64 sequences per step, steps pipelined; decode B 1, 1 / the latency of one token. `time`: per 512-token prompt, per
decode step, per token. `x one GPU`: the node's tokens/s over one mi300x's. `stages (per GPU)`: the plan's
distinct chiplets or groups (the fewest and most on one GPU); `split groups (largest)`: groups of XCDs running
split ops, and how many of them straddle two GPUs (none may: the 30 B/cycle xGMI links are slower than the XCDs'
1,024 B/cycle, cost.may_group). `bytes between packages`: per inference on links above the package (I/O-die ring
and xGMI). `valid`: partition.json re-checked by partition.check. CPU s and peak GB of the CLI process
(/usr/bin/time; the machine was shared with other jobs, so wall times are not given)."""


def timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run cmd under /usr/bin/time -v: (the process, user + sys CPU seconds, peak RSS in GB)."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], cwd=ROOT, capture_output=True, text=True)
    stats = dict(line.strip().rsplit(": ", 1) for line in proc.stderr.splitlines() if ": " in line
                 and line.startswith("\t"))
    cpu = float(stats.get("User time (seconds)", "nan")) + float(stats.get("System time (seconds)", "nan"))
    return proc, cpu, float(stats.get("Maximum resident set size (kbytes)", "nan")) / 1e6


def plan_shape(a: np.ndarray, shard: np.ndarray | None, gpu: int) -> dict:
    """Stages (distinct (first chiplet, group size) of the ops), the GPUs (`gpu` chiplets each) they run on, the
    groups of 2 or more, their largest size and how many straddle two GPUs."""
    k = np.ones_like(a) if shard is None else np.asarray(shard)
    units = sorted(set(zip(a.tolist(), k.tolist())))
    groups = [(c, g) for c, g in units if g > 1]
    per_gpu = np.bincount([c // gpu for c, _ in units])
    return dict(stages=len(units), gpus=int((per_gpu > 0).sum()), stages_per_gpu=f"{per_gpu.min()}-{per_gpu.max()}",
                groups=len(groups), largest_group=max((g for _, g in groups), default=1),
                straddling=sum(c // gpu != (c + g - 1) // gpu for c, g in groups))


def _opt(opts: list[str], key: str) -> list[str]:
    return [opts[i + 1] for i, o in enumerate(opts) if o == key]


def run_llm(model: str, hardware: str, label: str, opts: list[str], commit: str) -> dict:
    """One --node row (module docstring), re-checked by partition.check."""
    cmd = [sys.executable, "-m", "partitioner.app.cli", model, "--hardware", hardware, "--precision", "fp8", *opts,
           "--method", "dp", "--no-certificate"]
    with tempfile.TemporaryDirectory() as out:
        proc, cpu, rss = timed([*cmd, "--out", out])
        row = {"label": label, "hardware": hardware, "exit": proc.returncode, "cpu_s": cpu, "rss_gb": rss,
               "commit": commit, "command": "python -m partitioner.app.cli " + " ".join(cmd[3:])}
        if proc.returncode != 0:
            row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return row
        doc = json.loads((Path(out) / "partition.json").read_text())
    phase = _opt(opts, "--phase")[0]
    shapes = {k: tuple(int(x) for x in v.split("x")) for k, v in (s.split("=") for s in _opt(opts, "--input-shape"))}
    graph = load_model(model, shapes or None, "fp8", phase=phase, context=int((_opt(opts, "--context") or [0])[0])
                       or None, sequences=int((_opt(opts, "--batch") or [1])[0]) if phase == "decode" else 1)
    hw = load_hardware(hardware)
    part = assignment_from_document(graph, doc, "partition.json")
    a, shard = (part.assignment, part.shard) if isinstance(part, Partition) else (part, None)
    streamed = streamed_from_document(graph, doc, "partition.json")
    m = doc["metrics"]
    latency = "--objective" in opts
    row.update(tokens_per_s=1.0 / m["time_per_token_s"] if latency else m["tokens_per_s"],
               ms_per_token=1e3 * m["time_per_token_s"], bottleneck=m["bottleneck"],
               package_bytes=m.get("package_link_bytes_per_inference", 0), **plan_shape(np.asarray(a), shard, 8),
               valid=not check(graph, hw, a, streamed=None if streamed is None else np.asarray(streamed),
                               shard=shard))
    return row


def node_table(rows: list[dict]) -> str:
    lines = ["| run | hardware | tokens/s | x one GPU | time | bottleneck | stages (per GPU) | GPUs | "
             "split groups (largest) | groups across GPUs | bytes between packages / inf | valid | CPU s | "
             "peak GB |", "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    one = {r["label"]: r.get("tokens_per_s") for r in rows if r["hardware"] == "mi300x"}
    for r in rows:
        if r["exit"] != 0:
            lines.append(f"| {r['label']} | {r['hardware']} | exit {r['exit']}: {r.get('error', '')} | | | | | | | "
                         f"| | | {r['cpu_s']:.0f} | {r['rss_gb']:.1f} |")
            continue
        gain = f"{r['tokens_per_s'] / one[r['label']]:.2f}" if one.get(r["label"]) else ""
        when = (f"{1e3 * PROMPT / r['tokens_per_s']:.1f} ms / prompt" if r["label"] == "prefill"
                else f"{r['ms_per_token']:.1f} ms / {'token' if 'latency' in r['label'] else 'step'}")
        lines.append(
            f"| {r['label']} | {r['hardware']} | {r['tokens_per_s']:,.1f} | {gain} | {when} | "
            f"{r['bottleneck']} | {r['stages']} ({r['stages_per_gpu']}) | {r['gpus']} | {r['groups']} "
            f"({r['largest_group']}) | {r['straddling']} | {r['package_bytes']:,.0f} | "
            f"{'yes' if r['valid'] else 'NO'} | {r['cpu_s']:.0f} | {r['rss_gb']:.1f} |")
    return "\n".join(lines)


def node_main(llm: str | None, write: bool, rows_file: Path | None, latency: bool = False) -> None:
    """Run every (run, hardware) of NODE_RUNS x NODE_HARDWARE not in `rows_file` yet (JSON lines: rows of earlier
    runs, each with the commit it ran on), appending each row there; then the table of them all."""
    model = llm or str(export("llama-2-70b", EXPORTS))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    done = ([json.loads(line) for line in rows_file.read_text().splitlines() if line.startswith("{")]
            if rows_file is not None and rows_file.exists() else [])
    rows = []
    for label, opts in NODE_RUNS + ((LATENCY_RUN,) if latency else ()):
        for hw in NODE_HARDWARE:
            row = next((r for r in done if (r["label"], r["hardware"]) == (label, hw)), None)
            if row is None:
                row = run_llm(model, hw, label, opts, commit)
                if rows_file is not None:
                    with rows_file.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
            rows.append(row)
            print(json.dumps(row), flush=True)
    text = node_table(rows)
    print(text)
    if write:
        runs = "\n".join(f"    {r['command']}    # on {r['commit']}" for r in rows)
        flag = " --latency" if latency else ""
        update_section(NODE_TITLE, f"`python -m benchmarks.multilevel --node{flag} --rows ROWS.jsonl --write` "
                                   f"(each row "
                                   f"one run, its commit beside it):\n\n{runs}\n\n{text}\n\n{NODE_EXPLAIN}\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--hardware", nargs="+", default=DEFAULT_HARDWARE,
                    help="presets or .toml files, or a number N for the flat --chiplets N package")
    ap.add_argument("--write", action="store_true", help='replace the "Two packages on a board" section of RESULTS.md')
    ap.add_argument("--node", action="store_true", help="the 70B decoder on mi300x-node against one mi300x")
    ap.add_argument("--llm", help="with --node: a graph-only export of Llama-2-70B (default: made in /tmp/llm-exports)")
    ap.add_argument("--rows", type=Path, help="with --node: JSON lines of rows already run (reused) and to append to")
    ap.add_argument("--latency", action="store_true", help="with --node: also a batch-1 decode under --objective "
                    "latency (slow: LATENCY_RUN)")
    args = ap.parse_args(argv)
    if args.node:
        node_main(args.llm, args.write, args.rows, args.latency)
        return
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
