"""An MLPerf-style Offline scenario for a decoder LLM: every prompt is available at once, and the figure of merit is
output tokens per second over the whole run.

    python -m benchmarks.mlperf_offline [--hardware mi300x] [--precision fp8] [--input-tokens I]
        [--output-tokens 294.45] [--batch auto|B] [--dir /tmp/llm-exports]

The workload is Llama-2-70B on OpenOrca as MLPerf Inference processes it (mlcommons/inference,
language/llama2-70b/README.md): prompts of at most 1,024 tokens (processorca.py --seqlen_limit=1024) and 294.45
output tokens per sample at the accuracy target ("Tokens per sample: 294.45"). Each sample is one prefill of its
prompt and then one decode step per output token, in steps that decode `batch` sequences together (continuous
batching keeps the batch full, so a sequence's neighbours are at every point of their own generation):

    time per sample = 1 / prefills per s  +  output tokens / (batch x decode steps per s)
    tokens/s        = output tokens / time per sample

Prefill is `partition MODEL --phase prefill --input-shape input_ids=1xC ... --batch N`: a prompt of I tokens in
N = ceil(I / C) chunks of C tokens (chunked prefill), C the most tokens whose largest op's activations fit one
chiplet's SRAM (in whole folds of the MAC array's rows), each chunk an inference, each streamed weight read once per prompt (--batch N); attention across
chunks (about 1% of a 512-token prompt's FLOPs) is left out. A decode step is `partition MODEL --phase decode
--context L --batch B ...` with L = I + O / 2, the mean number of cached tokens a sequence holds over its
generation (the step's KV reads and attention work are linear in L, so the mean context gives the mean step). The
run's throughput objective streams inferences through the package's chiplets as an offline server streams requests:
with S pipeline stages about S steps are in flight, so S x B sequences are resident (their KV caches fit: the
stacks hold far more than B sequences, see below).

`--batch auto` is the largest B the app places with whole ops (fitting_batch): the KV caches of B sequences at L
fit beside the weights in the package's memory stacks, the largest op's activations for B sequences fit one
chiplet's SRAM, and B is at most the app's limit (1024 sequences). What the
model leaves out is said in docs/fidelity.md, section 4.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llm_runs import EXPORTS, RunFigures, export, run_partition  # noqa: E402

OUTPUT_TOKENS = 294.45       # mlcommons/inference language/llama2-70b/README.md, "Tokens per sample"
MAX_INPUT_TOKENS = 1024      # the same README: processorca.py --seqlen_limit=1024
PUBLISHED_TOKENS_PER_S = 3062.7   # MLPerf Inference v4.1 closed, AMD, 1xMI300X, llama2-70b-99.9 Offline (fp8, vLLM)


@dataclass(frozen=True)
class Offline:
    """One Offline-scenario estimate and the two runs it comes from."""

    input_tokens: int
    output_tokens: float
    context: int
    batch: int
    chunk: int
    """Prompt tokens per prefill inference; a prompt is ceil(input_tokens / chunk) of them (chunked prefill)."""
    prefill: RunFigures
    decode: RunFigures

    @property
    def chunks(self) -> int:
        return math.ceil(self.input_tokens / self.chunk)

    @property
    def prefill_s(self) -> float:
        """Prefill time per sample: its chunks at the prefill run's inferences per second."""
        return self.chunks / self.prefill.inferences_per_s

    @property
    def decode_s(self) -> float:
        """Decode time per sample: its output tokens at batch x steps/s tokens a second."""
        return self.output_tokens / self.decode.tokens_per_s

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / (self.prefill_s + self.decode_s)

    @property
    def roofline_tokens_per_s(self) -> float:
        """Decode alone at the HBM roofline (a step's weight and KV bytes at the sustained rate), prefill free."""
        return self.batch / self.decode.roofline_s


@dataclass(frozen=True)
class Fit:
    """What the app places with whole ops (fits)."""

    batch: int
    """Sequences per decode step: their KV caches fit beside the weights in the memory stacks, and the largest op's
    activations for all of them fit one chiplet's SRAM; at most limits.MAX_BATCH."""
    chunk: int
    """Prompt tokens per prefill inference whose largest op's activations fit one chiplet's SRAM, rounded down to
    whole folds of the MAC array's rows where that leaves any."""


def fits(model: Path, hardware: str, precision: str, context: int, granularity: str = "fused") -> Fit:
    """Fit from one import of the model at one sequence: KV cache bytes per sequence at `context` tokens and the
    largest op's activations per token (inputs and outputs), which grow linearly with sequences and with prompt
    tokens alike. An op's activations stay in the SRAM of the chiplet it runs on (docs/fidelity.md, section 2);
    weights and KV caches are held by the memory stacks (SRAM, tens of MiB against their GiB, is left to
    activations)."""
    from partitioner.app import limits
    from partitioner.frontend.load import load_onnx
    from partitioner.hw.toml import load_hardware

    hw = load_hardware(hardware, None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = load_onnx(str(model), precision=precision, phase="decode", context=context, sequences=1,
                      granularity=granularity)
    kv = float(g.kv_cache_bytes.sum())
    weights = float(g.weight_bytes.sum()) - kv
    by_sram = math.floor(max(c.sram_bytes for c in hw.chiplets) / float(g.work_bytes.max()))
    by_capacity = math.floor((sum(s.capacity_bytes for s in hw.memory_stacks) - weights) / kv)
    # a chunk's tokens are the GEMMs' rows: a whole number of array folds wastes none (docs/simulator.md R2a)
    rows = min(c.array_shape[0] for c in hw.chiplets)
    chunk = by_sram // rows * rows if by_sram >= rows else by_sram
    return Fit(max(1, min(limits.MAX_BATCH, by_capacity, by_sram)), max(1, chunk))


def fitting_batch(model: Path, hardware: str, precision: str, context: int, granularity: str = "fused") -> int:
    return fits(model, hardware, precision, context, granularity).batch


def offline(model: Path, hardware: str, precision: str, input_tokens: int, output_tokens: float = OUTPUT_TOKENS,
            batch: int | None = None, prefill_tokens: int | None = None, **run_opts) -> Offline:
    """The Offline estimate (module docstring); batch None: the largest that fits. `run_opts` go to both runs
    (granularity, max_shard, budget). A prompt longer than the largest chunk that fits is prefilled in equal chunks,
    each an inference; each streamed weight is read once per `prefill_tokens` prompt tokens (None: once per
    prompt), so --batch is that many tokens' chunks."""
    context = round(input_tokens + output_tokens / 2)
    fit = fits(model, hardware, precision, context, run_opts.get("granularity", "fused"))
    batch = batch or fit.batch
    n = math.ceil(input_tokens / min(fit.chunk, input_tokens))
    chunk = math.ceil(input_tokens / n)
    share = max(n, (prefill_tokens or 0) // chunk)
    pre = run_partition(model, hardware, precision, phase="prefill", prompt=chunk, batch=share, **run_opts)
    dec = run_partition(model, hardware, precision, phase="decode", context=context, batch=batch, **run_opts)
    return Offline(input_tokens, output_tokens, context, batch, chunk, pre, dec)


def table(results: list[Offline], published: float = PUBLISHED_TOKENS_PER_S) -> str:
    rows = ["| prompt I | chunks x tokens | context L | batch B | prefill per prompt | decode step (B tokens) | "
            "HBM roofline step | ours tokens/s | published | ratio | run s |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r.input_tokens} | {r.chunks} x {r.chunk} | {r.context} | {r.batch} | {r.prefill_s * 1e3:.1f} ms | "
                    f"{1e3 / r.decode.inferences_per_s:.1f} ms | {r.decode.roofline_s * 1e3:.1f} ms | "
                    f"{r.tokens_per_s:,.0f} | {published:,.1f} | {r.tokens_per_s / published:.2f} | "
                    f"{r.prefill.wall_s + r.decode.wall_s:.0f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="llama-2-70b", help="export name (scripts/export_decoders.py LARGE)")
    p.add_argument("--dir", type=Path, default=EXPORTS, help="where the graph-only exports are (made if missing)")
    p.add_argument("--hardware", default="mi300x")
    p.add_argument("--precision", default="fp8")
    p.add_argument("--input-tokens", type=int, nargs="+", default=[256, 512, MAX_INPUT_TOKENS],
                   help="mean prompt length(s) in tokens; several give a sweep (default 256 512 1024)")
    p.add_argument("--output-tokens", type=float, default=OUTPUT_TOKENS)
    p.add_argument("--batch", default="auto", help="sequences per decode step, or auto (the largest that fits)")
    p.add_argument("--prefill-tokens", type=int, default=None,
                   help="prompt tokens per read of a streamed weight in prefill (default: one prompt's)")
    p.add_argument("--granularity", default="fused", choices=("fused", "node", "layer"))
    p.add_argument("--max-shard", type=int, default=None)
    p.add_argument("--budget", type=int, default=None)
    args = p.parse_args(argv)
    model = export(args.model, args.dir)
    batch = None if args.batch == "auto" else int(args.batch)
    opts = dict(granularity=args.granularity, max_shard=args.max_shard, budget=args.budget)
    results, t0 = [], time.perf_counter()
    for i in args.input_tokens:
        results.append(offline(model, args.hardware, args.precision, i, args.output_tokens, batch,
                               args.prefill_tokens, **opts))
        r = results[-1]
        print(f"I={i}: {r.tokens_per_s:,.0f} tokens/s (B={r.batch}, L={r.context}); prefill: {r.prefill.command}; "
              f"decode: {r.decode.command}", file=sys.stderr, flush=True)
    print(f"\n`python -m benchmarks.mlperf_offline --hardware {args.hardware} --precision {args.precision} "
          f"--input-tokens {' '.join(map(str, args.input_tokens))} --batch {args.batch}"
          f"{f' --prefill-tokens {args.prefill_tokens}' if args.prefill_tokens else ''}"
          f"{f' --granularity {args.granularity}' if args.granularity != 'fused' else ''}` "
          f"({time.perf_counter() - t0:.0f} s)\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
