"""`partition finetune` against the default run on the same model, package and seed (target: >= 0.999x).

    PYTHONPATH=. python -m benchmarks.finetune_vs_default --cases examples/bert-large.onnx:64 \
        examples/distilbert.onnx:16 --seeds 0 1 2 --budget 64

Each case runs `partition MODEL --chiplets N --seed S` and `partition finetune MODEL --chiplets N --seed S
--budget B` in fresh processes and prints both throughputs and their ratio.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _throughput(args: list[str], out: Path) -> tuple[float, str]:
    subprocess.run([sys.executable, "-m", "partitioner.app.cli", *args, "--out", str(out)], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    doc = json.loads((out / "partition.json").read_text())
    return doc["metrics"]["throughput_per_s"], doc.get("found_by", "")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=["examples/bert-large.onnx:64", "examples/distilbert.onnx:16"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--budget", type=int, default=64)
    args = ap.parse_args(argv)
    print("| model | chiplets | seed | default /s | finetune /s | finetune found by | ratio |")
    print("|---|---:|---:|---:|---:|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases:
            model, chiplets = case.rsplit(":", 1)
            for seed in args.seeds:
                base = ["--chiplets", chiplets, "--seed", str(seed)]
                tag = f"{Path(model).stem}-{chiplets}-{seed}"   # a fresh --out: finetune resumes its own
                default, _ = _throughput([model, *base], Path(tmp) / f"run-{tag}")
                tuned, how = _throughput(["finetune", model, *base, "--budget", str(args.budget)],
                                         Path(tmp) / f"ft-{tag}")
                print(f"| {Path(model).name} | {chiplets} | {seed} | {default:,.1f} | {tuned:,.1f} | "
                      f"{how.split(',')[0]} | {tuned / default:.4f} |", flush=True)


if __name__ == "__main__":
    main()
