"""GenZ (genz-llm, a peer LLM-inference simulator) on the configurations of docs/fidelity.md's LLM rows.

    /path/to/genz-venv/bin/python benchmarks/genz_side.py > benchmarks/genz_figures.json

Runs under a Python that has genz-llm 0.0.16 installed, never under this project's own environment: it imports
GenZ only, so the project never depends on it. benchmarks/fidelity_llm.py reads the JSON this prints (committed as
benchmarks/genz_figures.json) and, with --genz PYTHON, reruns this script to refresh it.

GenZ is run as it ships: system_eff=1 (ideal compute and memory efficiency), its own system table (A100_80GB_GPU:
312 TFLOPS, 2,039 GB/s; H100_GPU: 989 TFLOPS, 3,400 GB/s; MI300X: 1,307 TFLOPS, 5,300 GB/s; fp8 at twice the
TFLOPS), except the beam: decode_moddeling defaults to a beam of Bb = 4 (four times the work per sequence), and
the measurements decode one sequence per request, so Bb = 1. Its decode figure is one step over a KV cache of
`input_tokens`; Latency is in ms and Throughput in tokens/s.
"""
from __future__ import annotations

import json
import sys

# (label, function, kwargs): the configurations the LLM rows use (docs/fidelity.md, section 4).
CONFIGS = [
    ("a100 llama-2-7b bf16 decode b1 L207", "decode",
     dict(model="meta-llama/Llama-2-7B", batch_size=1, input_tokens=207, output_tokens=1, Bb=1,
          system_name="A100_80GB_GPU", bits="bf16")),
    ("h100 llama-2-7b bf16 decode b1 L207", "decode",
     dict(model="meta-llama/Llama-2-7B", batch_size=1, input_tokens=207, output_tokens=1, Bb=1,
          system_name="H100_GPU", bits="bf16")),
]


def mi300x_configs(batch: int, context: int, prompt: int) -> list[tuple[str, str, dict]]:
    """The MLPerf-offline configuration of benchmarks/mlperf_offline.py: one decode step at `batch` sequences over
    `context` cached tokens, and one prefill of a `prompt`-token prompt."""
    return [
        (f"mi300x llama-2-70b fp8 decode b{batch} L{context}", "decode",
         dict(model="meta-llama/Llama-2-70B", batch_size=batch, input_tokens=context, output_tokens=1, Bb=1,
              system_name="MI300X", bits="fp8")),
        (f"mi300x llama-2-70b fp8 prefill {prompt}", "prefill",
         dict(model="meta-llama/Llama-2-70B", batch_size=1, input_tokens=prompt, system_name="MI300X", bits="fp8")),
    ]


def run(configs: list[tuple[str, str, dict]]) -> dict:
    from GenZ import decode_moddeling, prefill_moddeling

    out = {}
    for label, kind, kw in configs:
        fn = decode_moddeling if kind == "decode" else prefill_moddeling
        r = fn(**kw)
        # the result is a dict subclass: its attributes are not its values, so index it
        out[label] = {"kind": kind, "args": kw, "latency_ms": float(r["Latency"]),
                      "throughput_per_s": float(r["Throughput"])}
    return out


def main(argv: list[str]) -> int:
    """argv: optional BATCH CONTEXT PROMPT for the MI300X rows (default 1024 400 200)."""
    batch, context, prompt = (int(a) for a in argv) if argv else (1024, 400, 200)
    print(json.dumps(run(CONFIGS + mi300x_configs(batch, context, prompt)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
