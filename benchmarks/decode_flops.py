"""FLOPs per decoded token against 2 x parameters + attention over the context, per model and exporter.

    python benchmarks/decode_flops.py [--dir /tmp/decode-exports] [--context 1024]

GPT-2 (124M), Llama-3.2-1B and a Llama-3-8B-shaped model, each exported from its transformers config by the
legacy and the dynamo exporter, graph only, from the meta device (`python scripts/export_models.py
--decoders-large DIR`, run by this script for what DIR lacks; a few minutes and no weight memory). Ours: the
flops of `load_onnx(MODEL, phase="decode", context=L)` (what `partition inspect MODEL --phase decode --context L`
prints) per token. The reference, from the config's parameter counts (NAME.json beside each export):

    2 x (parameters - input embeddings + LM head if tied) + 2 x 2 x layers x L x d_model

The input embeddings (token, and GPT-2's position table) are gathers, not matrix products, so they are left out;
the LM head is a d_model x vocabulary product, counted once (a tied head shares the token table's parameters);
norm and bias parameters count 2 each as in the usual 2N; Q K^T and A V each take 2 x L x d_model per layer.
Ours also counts the new token's own key (L + 1) and the vector work (norms, softmax, activations).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partitioner.frontend.load import load_onnx  # noqa: E402

MODELS = ("gpt2-124m", "llama-3.2-1b", "llama-3-8b")
EXPORTERS = ("legacy", "dynamo")


def reference(counts: dict, context: int) -> int:
    """2 x the parameters a token multiplies (module docstring) + Q K^T and A V over `context` keys."""
    params = counts["parameters"] - counts["input_embeddings"] + (counts["lm_head"] if counts["lm_head_tied"] else 0)
    return 2 * params + 2 * 2 * counts["layers"] * context * counts["d_model"]


def ensure_exports(directory: Path) -> None:
    missing = [f"{m}-{e}" for m in MODELS for e in EXPORTERS if not (directory / f"{m}-{e}.onnx").exists()]
    if missing:
        print(f"exporting {', '.join(missing)} to {directory} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "export_models.py"), "--decoders-large",
                        str(directory), "--only", *missing], check=True)


def table(directory: Path, context: int) -> str:
    rows = [f"| model | exporter | exported at | decoder evidence | ours FLOPs/token | reference | ratio | "
            f"import s |", "|---|---|---|---|---|---|---|---|"]
    for model in MODELS:
        for exporter in EXPORTERS:
            path = directory / f"{model}-{exporter}.onnx"
            counts = json.loads(path.with_suffix(".json").read_text())
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = load_onnx(path, phase="decode", context=context)
            secs = time.perf_counter() - t0
            ours = g.total_flops / g.metadata["tokens_per_inference"]
            ref = reference(counts, context)
            shape = "x".join(map(str, g.metadata["input_shapes"]["input_ids"]))
            evidence = g.metadata["decoder_evidence"].split(" '")[0]
            rows.append(f"| {model} | {exporter} | input_ids {shape} | {evidence} | {ours:,.0f} | {ref:,} | "
                        f"{ours / ref:.4f} | {secs:.0f} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", default="/tmp/decode-exports", help="where the exports are (made if missing)")
    p.add_argument("--context", type=int, default=1024, help="KV-cache length L in tokens")
    args = p.parse_args()
    directory = Path(args.dir)
    ensure_exports(directory)
    print(f"\n`python benchmarks/decode_flops.py --context {args.context}`\n\n{table(directory, args.context)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
