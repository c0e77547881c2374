"""The LLM rows of docs/fidelity.md (section 4): our figures for LLM decode held against silicon and beside GenZ.

    python -m benchmarks.fidelity_llm [--dir /tmp/llm-exports] [--input-tokens I ...] [--genz PYTHON] [--sweep]

1. A100, Llama-2-7B, batch-1 decode in bf16, against gpt-fast's 104.9 tokens/s (pytorch-labs/gpt-fast README).
   gpt-fast's benchmark (generate.py defaults) decodes 200 new tokens after a 5-token prompt and attends over its
   whole cache of find_multiple(5 + 200, 8) = 208 positions at every step (model.py: setup_caches, the causal
   mask masks the unused ones), so each step reads 207 cached keys plus its own: `--context 207`. The HBM roofline
   beside it is the bytes a token reads (weights and KV cache) over the preset's sustained HBM rate.
2. MI300X, Llama-2-70B in fp8, the MLPerf Inference v4.1 Offline scenario, against AMD's 3,062.7 tokens/s
   (benchmarks/mlperf_offline.py), over mean prompt lengths of 256, 512 and 1,024 tokens.
3. GenZ (genz-llm 0.0.16) on the same configurations, from benchmarks/genz_figures.json, which
   benchmarks/genz_side.py writes under a Python that has genz-llm (--genz PYTHON reruns it).

Every figure of ours is a `partition MODEL.onnx ... --no-certificate` run through the app (benchmarks/llm_runs.py),
so the tables follow the cost model in the tree. Exports are made on first use (scripts/export_models.py
--decoders-large; graph only).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llm_runs import EXPORTS, export, run_partition  # noqa: E402
from benchmarks.mlperf_offline import PUBLISHED_TOKENS_PER_S, Offline, offline, table  # noqa: E402

GPT_FAST_TOKENS_PER_S = 104.9   # pytorch-labs/gpt-fast README, Llama-2-7B, Base (bf16), 1 x A100-80GB at 330 W
GPT_FAST_CONTEXT = 207          # 208 cache positions attended each step (module docstring)
GENZ_JSON = ROOT / "benchmarks" / "genz_figures.json"
INPUT_SWEEP = (256, 512, 1024)   # mean prompt lengths: MLCommons gives only the 1,024 limit (docs/fidelity.md)
GENZ_INPUT_TOKENS = 512          # the sweep point the GenZ table uses


def a100_row(r) -> list[str]:
    pub_ms = 1e3 / GPT_FAST_TOKENS_PER_S
    return [f"`{r.command}` ({r.n_ops} ops, {r.wall_s:.0f} s)", "",
            "| | ours | HBM roofline | gpt-fast (measured) | ours / measured |", "|---|---:|---:|---:|---:|",
            f"| tokens/s | {r.tokens_per_s:.1f} | {1 / r.roofline_s:.1f} | {GPT_FAST_TOKENS_PER_S} | "
            f"{r.tokens_per_s / GPT_FAST_TOKENS_PER_S:.3f} |",
            f"| ms per token | {r.latency_s * 1e3:.2f} | {r.roofline_s * 1e3:.2f} | {pub_ms:.2f} | "
            f"{r.latency_s * 1e3 / pub_ms:.3f} |",
            f"| bytes read per token | {r.weight_read_bytes / 1e9:.3f} GB (KV cache {r.kv_bytes / 1e6:.1f} MB) | "
            f"at {r.stack_bytes_per_s / 1e9:,.0f} GB/s | | |",
            f"| bottleneck | {r.bottleneck} | | | |"]


def context_sweep(model: Path, contexts=(5, 104, 207, 1024)) -> list[str]:
    rows = ["| --context L | ours tokens/s | ms per token | KV cache read per token |", "|---:|---:|---:|---:|"]
    for c in contexts:
        r = run_partition(model, "a100", "bf16", phase="decode", context=c)
        rows.append(f"| {c} | {r.tokens_per_s:.1f} | {r.latency_s * 1e3:.2f} | {r.kv_bytes / 1e6:.1f} MB |")
    return rows


def genz_figures(python: str | None, batch: int, context: int, prompt: int) -> dict:
    """GenZ's figures for these configurations: rerun under `python` when given, else the committed JSON."""
    if python:
        out = subprocess.run([python, str(ROOT / "benchmarks" / "genz_side.py"), str(batch), str(context),
                              str(prompt)], check=True, capture_output=True, text=True).stdout
        GENZ_JSON.write_text(out)
    return json.loads(GENZ_JSON.read_text()) if GENZ_JSON.exists() else {}


def genz_table(genz: dict, a100, h100, mi: Offline) -> list[str]:
    def g(label: str, key: str = "throughput_per_s") -> float | None:
        return genz.get(label, {}).get(key)

    dec = f"mi300x llama-2-70b fp8 decode b{mi.batch} L{mi.context}"
    pre = f"mi300x llama-2-70b fp8 prefill {mi.input_tokens}"
    genz_offline = None
    if g(dec) and g(pre, "latency_ms"):   # the same composition as ours: prefill + output tokens at the step rate
        genz_offline = mi.output_tokens / (g(pre, "latency_ms") / 1e3 + mi.output_tokens / g(dec))

    def cell(v):
        return "n/a" if v is None else f"{v:,.1f}"

    def ratio(a, b):
        return "" if a is None or b is None else f"{a / b:.2f}"

    rows = [("A100, Llama-2-7B bf16, decode batch 1, L 207 (tokens/s)", a100.tokens_per_s,
             g("a100 llama-2-7b bf16 decode b1 L207"), GPT_FAST_TOKENS_PER_S),
            ("H100 SXM, Llama-2-7B bf16, decode batch 1, L 207 (tokens/s)", h100.tokens_per_s,
             g("h100 llama-2-7b bf16 decode b1 L207"), None),
            (f"MI300X, Llama-2-70B fp8, one decode step, B {mi.batch}, L {mi.context} (tokens/s)",
             mi.decode.tokens_per_s, g(dec), None),
            (f"MI300X, Llama-2-70B fp8, prefill of {mi.input_tokens} tokens (ms)", mi.prefill_s * 1e3,
             g(pre, "latency_ms"), None),
            (f"MI300X, Llama-2-70B fp8, MLPerf Offline, I {mi.input_tokens} (tokens/s)", mi.tokens_per_s,
             genz_offline, PUBLISHED_TOKENS_PER_S)]
    out = ["| configuration | ours | GenZ (ideal efficiency) | published | ours / published | GenZ / published | "
           "ours / GenZ |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, ours, gz, pub in rows:
        out.append(f"| {label} | {cell(ours)} | {cell(gz)} | {cell(pub) if pub else ''} | {ratio(ours, pub)} | "
                   f"{ratio(gz, pub)} | {ratio(ours, gz)} |")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=EXPORTS, help="graph-only exports (made if missing)")
    p.add_argument("--input-tokens", type=int, nargs="+", default=list(INPUT_SWEEP),
                   help="MLPerf mean prompt lengths to sweep (no MLCommons figure found: docs/fidelity.md)")
    p.add_argument("--genz", metavar="PYTHON", help="a Python with genz-llm: rerun benchmarks/genz_side.py")
    p.add_argument("--sweep", action="store_true", help="also sweep the A100 context length")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    m7, m70 = export("llama-2-7b", args.dir), export("llama-2-70b", args.dir)
    print("## A100, Llama-2-7B, batch-1 decode, bf16\n")
    a100 = run_partition(m7, "a100", "bf16", phase="decode", context=GPT_FAST_CONTEXT)
    print("\n".join(a100_row(a100)))
    if args.sweep:
        print("\n" + "\n".join(context_sweep(m7)))
    print("\n## MI300X, Llama-2-70B, MLPerf Offline, fp8\n")
    runs = [offline(m70, "mi300x", "fp8", i) for i in args.input_tokens]
    for r in runs:
        print(f"I = {r.input_tokens}: prefill `{r.prefill.command}`; decode `{r.decode.command}`")
    print("\n" + table(runs))
    mi = min(runs, key=lambda r: abs(r.input_tokens - GENZ_INPUT_TOKENS))
    h100 = run_partition(m7, "h100", "bf16", phase="decode", context=GPT_FAST_CONTEXT)
    print("\n## Beside GenZ\n")
    genz = genz_figures(args.genz, mi.batch, mi.context, mi.input_tokens)
    print("\n".join(genz_table(genz, a100, h100, mi)))
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
