"""Mixtral-8x7B-shaped MoE decoders planned and simulated with expert parallelism: tokens/s, FLOPs per token against
the hand formula, where the experts went and what their all-to-alls carry.

    python benchmarks/moe.py [--dir /tmp/moe-large] [--chiplets 16 64] [--forms contrib sparse-dynamo]
                             [--phases prefill decode] [--context 1024] [--batch 16]

The graphs come from `python scripts/export_moe.py --large DIR` (graph only: the contrib-op model in a second, the
plain-torch one, sparse dispatch by the dynamo exporter, from the meta device in minutes; `--large-legacy` adds the
legacy exporter's, `--forms sparse-legacy` here); this script runs that for a form DIR lacks. Each case is the
`partition` command's whole run (RunConfig: anneal, the staged plans, no certificate), so a case equals

    python -m partitioner.app.cli DIR/mixtral-8x7b-FORM.onnx --chiplets N --precision P --phase PHASE
        [--context L --batch B] --no-certificate

Precision: int8 at 16 chiplets (93.4 GB of fp16 weights exceed the default package's 64 GiB of stacks; int8 is
46.7 GB), fp16 at 64 (256 GiB of stacks). The hand formula per token, with H = 4096, I = 14336, E = 8, k = 2, 32
layers, 8 KV heads of 128, vocabulary V = 32,000 and S keys (the prompt length in prefill, L + 1 in decode):

    layers x (2 H (2 H + 2 x 8 x 128)  [q, o; k, v]  +  4 S H  [Q K^T, A V]  +  2 H E  [router]  +  k x 6 H I)
    + 2 H V  [LM head]

and the MoE part alone (router and the k experts): layers x (2 H E + k x 6 H I). Ours is the imported graph's
matrix flops per token (vector work, norms and softmax, is left out of both).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partitioner.app.config import RunConfig  # noqa: E402
from partitioner.app.run import run  # noqa: E402
from partitioner.model.layout import simulated_experts  # noqa: E402

H, I, E, K, LAYERS, KV, HEAD, V = 4096, 14336, 8, 2, 32, 8, 128, 32000
PRECISION = {16: "int8", 64: "fp16"}


def formula(keys: int) -> tuple[int, int]:
    """(whole model, MoE part) matrix flops per token (module docstring)."""
    moe = 2 * H * E + K * 6 * H * I
    layer = 2 * H * (2 * H + 2 * KV * HEAD) + 4 * keys * H + moe
    return LAYERS * layer + 2 * H * V, LAYERS * moe


def ensure(directory: Path, forms: list[str]) -> None:
    if any(not (directory / f"mixtral-8x7b-{f}.onnx").exists() for f in forms):
        print(f"exporting to {directory} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "export_moe.py"), "--large", str(directory)],
                       check=True)


def case(path: Path, chiplets: int, phase: str, context: int, batch: int) -> dict:
    decode = phase == "decode"
    with tempfile.TemporaryDirectory() as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = RunConfig(model=str(path), chiplets=chiplets, precision=PRECISION.get(chiplets, "fp16"),
                        phase=phase, context=context if decode else None, batch=batch if decode else 1,
                        certificate=False, out=str(Path(out) / "o"))
        outcome = run(cfg)
    g, part, rep = outcome.graph, outcome.best.partition, outcome.best.report
    tokens = g.metadata["tokens_per_inference"]
    moe = [op for op in g.ops if op.experts is not None]
    # the routers: the H x E products (no other GEMM of the model has N = E)
    router_flops = sum(op.matrix_flops for op in g.ops if op.gemms and op.gemms[0][2:] == (H, E))
    placed = simulated_experts(g, outcome.hw, part.assignment, part.shard)
    whole, moe_ref = formula(context + 1 if decode else tokens)
    return {"model": path.name, "chiplets": chiplets, "precision": cfg.precision, "phase": phase,
            "context": context if decode else None, "batch": batch if decode else 1,
            "tokens_per_s": rep.throughput_per_s * tokens, "inferences_per_s": rep.throughput_per_s,
            "flops_per_token": int(g.matrix_flops.sum()) // tokens, "formula_per_token": whole,
            "moe_flops_per_token": (sum(op.matrix_flops for op in moe) + router_flops) // tokens,
            "moe_formula_per_token": moe_ref, "moe_layers": len(moe),
            "experts": _where(placed), "all_to_all_bytes": sum(p["dispatch_bytes"] + p["combine_bytes"] for p in placed),
            "wall_s": round(outcome.wall_s, 1)}


def _where(placed: list[dict]) -> str:
    """e.g. '24 layers x 8 chiplets (1 expert each), 8 whole'."""
    shapes: dict[str, int] = {}
    for p in placed:
        n = len(p["chiplets"])
        per = sorted({len(e) for e in p["experts_per_chiplet"]})
        key = "whole on 1 chiplet" if n == 1 else f"{n} chiplets ({'/'.join(map(str, per))} experts each)"
        shapes[key] = shapes.get(key, 0) + 1
    return ", ".join(f"{v} x {k}" for k, v in sorted(shapes.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default="/tmp/moe-large", type=Path)
    p.add_argument("--chiplets", type=int, nargs="+", default=[16, 64])
    p.add_argument("--forms", nargs="+", default=["contrib", "sparse-dynamo"])
    p.add_argument("--phases", nargs="+", default=["prefill", "decode"])
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16, help="decode: sequences per step")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    ensure(args.dir, args.forms)
    rows = []
    print("| model | chiplets | precision | phase | tokens/s | FLOPs/token ours / formula | MoE FLOPs/token ours / "
          "formula | experts | all-to-all B/inference |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    for form in args.forms:
        for n in args.chiplets:
            for phase in args.phases:
                r = case(args.dir / f"mixtral-8x7b-{form}.onnx", n, phase, args.context, args.batch)
                rows.append(r)
                what = phase if phase == "prefill" else f"decode L={r['context']} B={r['batch']}"
                print(f"| {form} | {n} | {r['precision']} | {what} | {r['tokens_per_s']:,.1f} | "
                      f"{r['flops_per_token'] / 1e9:.3f} / {r['formula_per_token'] / 1e9:.3f} G | "
                      f"{r['moe_flops_per_token'] / 1e9:.3f} / {r['moe_formula_per_token'] / 1e9:.3f} G | "
                      f"{r['experts']} | {r['all_to_all_bytes']:,} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
