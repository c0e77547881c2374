"""Any ONNX at LLM scale: import time and op counts per granularity, per-GEMM cycles against
SCALE-Sim 3.0, and decode tokens/s with a KV cache.

    python benchmarks/llm_scale.py imports            # BERT-base, GPT-2, Llama-1B x fused/node/layer
    python benchmarks/llm_scale.py gemms              # the MAC-array model against SCALE-Sim 3.0
    python benchmarks/llm_scale.py decode --context 1024

Models come from examples/ (scripts/export_models.py --zoo); missing ones are skipped and said so. Decode
runs on examples/hardware/big-sram-64.toml (1 GiB SRAM per chiplet): the 77 MB (GPT-2) and 525 MB (Llama)
embedding/LM-head ops do not fit a 64 MiB die without a memory tier.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from partitioner.model.cost import gemm_cycles  # noqa: E402
from partitioner.frontend.load import load_onnx  # noqa: E402

ZOO = Path(__file__).resolve().parents[1] / "examples"
MODELS = {"bert-base": ZOO / "bert-base.onnx", "gpt2": ZOO / "gpt2.onnx", "llama-1b": ZOO / "llama-1b.onnx"}
BIG_SRAM = ROOT / "examples" / "hardware" / "big-sram-64.toml"
SCALESIM = [((128, 768, 768), 21_455), ((128, 768, 3072), 85_823), ((128, 3072, 768), 76_751),
            ((1, 4096, 4096), 270_207)]


def imports(precision: str) -> str:
    t0 = time.perf_counter()
    load_onnx(ROOT / "tests" / "data" / "tiny_mlp.onnx")  # loads onnxruntime and onnxslim once per process
    print(f"process warm-up (first import of a tiny model): {time.perf_counter() - t0:.1f} s", flush=True)
    rows = ["| model | ONNX nodes | fused ops | node ops | layer ops | import s (fused / node / layer) |",
            "|---|---|---|---|---|---|"]
    for name, path in MODELS.items():
        if not path.exists():
            rows.append(f"| {name} | (missing: {path}) | | | | |")
            continue
        ops, secs, total = {}, {}, 0
        for gr in ("fused", "node", "layer"):
            t0 = time.perf_counter()
            g = load_onnx(path, precision=precision, granularity=gr)
            secs[gr], ops[gr], total = time.perf_counter() - t0, g.n_ops, g.metadata["onnx_nodes_total"]
        rows.append(f"| {name} | {total:,} | {ops['fused']} | {ops['node']} | {ops['layer']} | "
                    f"{secs['fused']:.1f} / {secs['node']:.1f} / {secs['layer']:.1f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows)


def gemms() -> str:
    rows = ["| GEMM M x K x N | ours (64x64 os) | SCALE-Sim 3.0 | error | utilisation |", "|---|---|---|---|---|"]
    for (m, k, n), ref in SCALESIM:
        ours = int(gemm_cycles(1, m, k, n, 64, 64, "os"))
        rows.append(f"| {m} x {k} x {n} | {ours:,} | {ref:,} | {100 * (ours - ref) / ref:+.4f}% | "
                    f"{100 * m * k * n / (ours * 4096):.1f}% |")
    return "\n".join(rows)


def decode(context: int, precision: str, method: str) -> str:
    from partitioner.app.document import token_metrics
    from partitioner.app.methods import search
    from partitioner.hw.toml import load_hardware
    from partitioner.sim.simulator import simulate

    hw = load_hardware(str(BIG_SRAM))
    rows = ["| model | phase | ops | weights read / token | KV cache read / token | tokens/s | time per token | "
            "inferences/s | plan s |", "|---|---|---|---|---|---|---|---|---|"]
    for name in ("gpt2", "llama-1b"):
        path = MODELS[name]
        if not path.exists():
            rows.append(f"| {name} | (missing) | | | | | | | |")
            continue
        for phase, ctx in (("decode", context), ("prefill", None)):
            g = load_onnx(path, precision=precision, phase=phase, context=ctx)
            t0 = time.perf_counter()
            found = search(g, hw, method, budget=1, seed=0, time_limit_s=None)
            rep = simulate(g, hw, found.best.partition)
            m = token_metrics(g, rep)
            label = f"decode, context {context}" if phase == "decode" else f"prefill {m['tokens_per_inference']} tok"
            rows.append(f"| {name} | {label} | {g.n_ops} | {m['weight_read_bytes'] / 1e6:,.1f} MB | "
                        f"{m['kv_cache_read_bytes'] / 1e6:,.1f} MB | {m['tokens_per_s']:,.1f} | "
                        f"{m['time_per_token_s'] * 1e3:.3f} ms | {rep.throughput_per_s:,.1f} | "
                        f"{time.perf_counter() - t0:.1f} |")
            print(rows[-1], flush=True)
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["imports", "gemms", "decode"])
    p.add_argument("--precision", default="fp16")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--method", default="dp", help="decode: the planning method (dp: one deterministic plan)")
    args = p.parse_args()
    table = {"imports": lambda: imports(args.precision), "gemms": gemms,
             "decode": lambda: decode(args.context, args.precision, args.method)}[args.what]()
    print(table)


if __name__ == "__main__":
    main()
