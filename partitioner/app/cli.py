"""`partition`: the command line. The only module that prints or exits.

Usage:
    partition MODEL.onnx --chiplets 16 [--method M] [--budget N] [--out DIR] ...   partition a model
    partition inspect MODEL.onnx [--json]                                          what the importer sees
    partition simulate MODEL.onnx --partition partition.json                       re-score a saved partition
    partition train --corpus DIR --out policy.pt                                   pre-train the policy
    partition finetune MODEL.onnx --chiplets N --policy CKPT --budget N --out DIR  fine-tune on one graph
    partition split MODEL.onnx --partition partition.json --out DIR [--verify]     one ONNX model per chiplet
    partition explore MODEL.onnx [--budget 30] [--space FILE.toml] [--ray auto]     hardware design-space search
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from contextlib import contextmanager

from partitioner.core.errors import UserError
from partitioner.frontend.read import parse_input_shapes

SUBCOMMANDS = ("inspect", "simulate", "train", "finetune", "run", "split", "explore")


def _add_model_args(p: argparse.ArgumentParser, precision: str | None = "fp16", saved_defaults: bool = False) -> None:
    """precision None: keep the model's own element sizes unless --precision is given (inspect)."""
    p.add_argument("model", help="ONNX file (weights may be absent: only shapes are read)")
    p.add_argument("--input-shape", action="append", metavar="NAME=1x128",
                   help="fix a model input's shape (repeatable); symbolic dims default to batch 1, sequence 128")
    p.add_argument("--precision", default=precision, choices=["fp32", "fp16", "bf16", "fp8", "int8"],
                   help="element size of weights and activations on the accelerator "
                        f"(default {precision or 'as stored: fp32 for inspect, the saved one for simulate'})")
    saved = " (default: the saved one)" if saved_defaults else ""
    p.add_argument("--granularity", choices=["fused", "node", "layer"], default=None,
                   help="unit of partitioning: fused ops (default), one per ONNX node, or repeated layers" + saved)
    p.add_argument("--phase", default=None, metavar="prefill|decode",
                   help="decoder LLMs: prefill (whole prompt) or decode (one token reading a KV cache)" + saved)
    p.add_argument("--context", type=int, default=None, metavar="L",
                   help="decode: KV-cache length in tokens per layer" + saved)
    p.add_argument("--decoder", action="store_true",
                   help="with --phase: the model is a decoder even if no causal mask or KV cache is found in it"
                        + (" (default: as saved)" if saved_defaults else ""))


def _add_routing_arg(p: argparse.ArgumentParser, saved: bool = False) -> None:
    p.add_argument("--routing", default=None, metavar="FILE",
                   help="mixture-of-experts models: a JSON list of E measured expert loads (fractions of the routed "
                        "tokens) instead of uniform top-k routing" + (" (default: the saved one)" if saved else ""))


def _add_hw_args(p: argparse.ArgumentParser, default_chiplets: int | None = None) -> None:
    p.add_argument("--chiplets", type=int, default=default_chiplets,
                   help="number of chiplets: a near-square mesh of the default chiplet unless --hardware says more")
    p.add_argument("--hardware", help="a preset name (default-16, sram-only-16, simba-36, two-package-2x16, a100, "
                                      "h100, mi300x) or a .toml file (see docs/hardware.md)")
    p.add_argument("--no-memory-tier", action="store_true",
                   help="drop the package's HBM memory stacks: every weight must fit in SRAM")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {message}. Fix: see `{self.prog} --help`.\n")


def _parser() -> argparse.ArgumentParser:
    from partitioner.app.methods import METHODS, REGISTRY

    top = _OneLineParser(prog="partition", description=__doc__.split("\n\n", 1)[1],
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="partition a model (the default: `partition MODEL.onnx ...`)")
    _add_model_args(run)
    _add_routing_arg(run)
    _add_hw_args(run)
    run.add_argument("--method", choices=METHODS, default=None,
                     help="; ".join(f"{m.name}: {m.help}" for m in REGISTRY.values()))
    run.add_argument("--budget", type=int, default=None, help="evaluated partitions for search methods")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", default="out", help="output directory (default ./out)")
    run.add_argument("--time-limit", type=float, default=None,
                     help="CP-SAT seconds per repair (exact: for the whole optimisation)")
    run.add_argument("--max-time", type=float, default=None,
                     help="wall-clock seconds for the whole run: the search stops then (or on Ctrl-C) and the best "
                          "partition found so far is written, marked interrupted")
    run.add_argument("--policy", default=None, help="policy checkpoint for --method rl or learned (default: the shipped one)")
    run.add_argument("--no-certificate", action="store_true",
                     help="skip the CP-SAT lower bound on the bottleneck (saves a few seconds)")
    run.add_argument("--batch", type=int, default=1,
                     help="inferences per read of a weight streamed from the memory tier; with --phase decode, the "
                          "sequences one step decodes together, sharing each weight read (default 1)")
    run.add_argument("--max-shard", type=_max_shard, default=None,
                     help="largest group an op may split across (intra-op sharding); 1 keeps ops whole "
                          "(default auto: min(16, max(4, chiplets // 8)), at most the chiplet count; with "
                          "--objective latency every chiplet, up to 36)")
    run.add_argument("--objective", default="throughput", metavar="throughput|latency",
                     help="what to optimise: throughput (inferences/s of a stream, the default) or latency (the time "
                          "of one inference alone, batch-1 serving: layers spread over many chiplets)")
    run.add_argument("--split-budget", type=int, default=0,
                     help="evaluations of local search over staged (split) plans from the staged DP, by the run's "
                          "method (anneal, random or learned); default 0: none")

    ins = sub.add_parser("inspect", help="show ops, FLOPs and parameters as the importer sees them")
    _add_model_args(ins, precision=None)
    _add_routing_arg(ins)
    ins.add_argument("--json", action="store_true", help="print JSON (keys ops, onnx_nodes, flops, param_bytes, ...)")

    sim = sub.add_parser("simulate", help="re-score a saved partition.json")
    _add_model_args(sim, precision=None, saved_defaults=True)
    _add_routing_arg(sim, saved=True)
    _add_hw_args(sim)
    sim.add_argument("--partition", required=True, help="partition.json written by `partition`")
    sim.add_argument("--out", default=None, help="also write report.md, trace.json and partition.png here")
    sim.add_argument("--objective", default=None, metavar="throughput|latency",
                     help="what the report leads with and certifies (default: the one the file was made for)")

    train = sub.add_parser("train", help="pre-train the GNN policy over a corpus of ONNX models")
    train.add_argument("--corpus", required=True, help="directory of .onnx files")
    train.add_argument("--out", required=True, help="checkpoint path (resumes if it exists)")
    train.add_argument("--steps", type=int, default=None, help="PPO updates")
    train.add_argument("--chiplets", default="2,4,8,16,36", help="chiplet counts to train on, comma separated")
    train.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16", "int8"])
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--synthetic", type=int, default=0, help="also train on this many random DAGs")
    train.add_argument("--time-budget", type=float, default=None,
                       help="stop (with a checkpoint) after this many seconds of training in total, resumes included")

    fine = sub.add_parser("finetune", help="fine-tune the policy on one model and write its best partition")
    _add_model_args(fine)
    _add_hw_args(fine)
    fine.add_argument("--policy", default=None, help="checkpoint to start from (default: the shipped one)")
    fine.add_argument("--budget", type=int, default=256, help="evaluated partitions")
    fine.add_argument("--seed", type=int, default=0)
    fine.add_argument("--out", default="out", help="output directory (checkpoint, curves, partition)")
    fine.add_argument("--time-limit", type=float, default=None, help="CP-SAT seconds per repair")
    for sub_parser in (train, fine):
        sub_parser.add_argument("--workers", type=int, default=1, help="rollout evaluations at once: local "
                                "processes, or the CPUs of --ray local (default 1)")
        sub_parser.add_argument("--ray", default=None, metavar="auto|ADDRESS|local", help="evaluate rollouts on "
                                "Ray: auto (a running cluster), ADDRESS, or local (start one here)")

    spl = sub.add_parser("split", help="write one ONNX model per chiplet of a saved partition, and manifest.json")
    spl.add_argument("model", help="the ONNX file the partition was made from (with weights, to run the stages)")
    spl.add_argument("--input-shape", action="append", metavar="NAME=1x128",
                     help="fix a model input's shape (default: the ones the partition file records)")
    spl.add_argument("--partition", required=True, help="partition.json written by `partition`")
    spl.add_argument("--out", required=True, help="directory for stage_<chiplet>.onnx and manifest.json")
    spl.add_argument("--verify", action="store_true",
                     help="run the stages in onnxruntime on random inputs and compare with the whole model")
    spl.add_argument("--tolerance", type=float, default=1e-4,
                     help="largest max-abs difference --verify accepts (default 1e-4)")
    spl.add_argument("--seed", type=int, default=0, help="seed of --verify's random inputs")

    exp = sub.add_parser("explore", help="search hardware (node, chiplets, MACs, SRAM, links, clock, package) "
                                         "for the throughput / power / cost Pareto front")
    _add_model_args(exp)
    exp.add_argument("--budget", type=int, default=30, help="designs to evaluate (default 30)")
    exp.add_argument("--workers", type=int, default=2, help="designs evaluated in parallel (default 2)")
    exp.add_argument("--space", default=None, help="TOML file narrowing or widening the space (docs/explore.md)")
    exp.add_argument("--method", "--sampler", dest="method", default="learned", choices=["learned", "nsga2", "random"],
                     help="learned: the pretrained design agent, fine-tuned on the model as it searches (default); "
                          "nsga2: optuna's genetic search; random: uniform sampling")
    exp.add_argument("--agent", default=None, help="design agent file for --method learned "
                                                   "(default: the shipped policies/pretrained/design_agent.pt)")
    exp.add_argument("--max-area-mm2", type=float, default=None, help="area budget: larger designs are rejected")
    exp.add_argument("--max-power-w", type=float, default=None, help="power budget: hungrier designs are rejected")
    exp.add_argument("--population", type=int, default=None, help="NSGA-II population (default budget/4)")
    exp.add_argument("--ray", default=None, metavar="auto|ADDRESS|local",
                     help="evaluate on Ray: auto (a running cluster), ADDRESS, or local (start one here)")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--out", default="explore", help="output directory; run again with it to resume")
    return top


def _normalise_argv(argv: list[str]) -> list[str]:
    """`partition MODEL.onnx ...` means `partition run MODEL.onnx ...`."""
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help"):
        return ["run", *argv]
    return argv


def _max_shard(text: str) -> int | str | None:
    """--max-shard: "auto" (None: staged_dp.auto_max_shard), an integer, or the text as given for
    run.validate_config to reject in one line."""
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    args = parser.parse_args(argv)
    warnings.simplefilter("default")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return _dispatch(args)
    except UserError as exc:
        print(exc.one_line(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_INTERRUPTED.get(args.command, _INTERRUPTED["run"]), file=sys.stderr)
        return 130


_INTERRUPTED = {
    "run": "interrupted before a result could be written; the previous outputs in --out are intact",
    "simulate": "interrupted; the previous outputs in --out are intact",
    "inspect": "interrupted",
    "train": "interrupted; the last checkpoint is intact, run the same command again to resume",
    "finetune": "interrupted; the last checkpoint in --out is intact, run the same command again to resume",
}
PROGRESS_EVERY_S = 5.0
"""When stderr is not a terminal (a log file, CI), one plain progress line at most this often."""


@contextmanager
def _progress(desc: str, total: int | None, stream=None, every_s: float = PROGRESS_EVERY_S,
              objective: str = "throughput"):
    """A tqdm bar fed by the search loops' on_eval(evaluations, best score) callback on a terminal; on a file
    or pipe, a plain line every `every_s` seconds instead (so a logged run shows it is alive). The score is
    inferences/s, or 1 / latency under --objective latency (shown as the latency)."""
    import time

    from tqdm import tqdm

    from partitioner.core.units import si

    def shown(best: float, unit: str) -> str:
        return f"{si(1.0 / best, 's')} latency" if objective == "latency" and best > 0 else f"{best:,.1f}{unit}"

    stream = sys.stderr if stream is None else stream
    tty = hasattr(stream, "isatty") and stream.isatty()
    bar = tqdm(desc=desc, total=total, unit="eval", leave=False, disable=not tty, file=stream)
    start = last = time.monotonic()

    def on_eval(evaluations: int, best: float) -> None:
        nonlocal last
        bar.update(evaluations - bar.n)
        bar.set_postfix_str(f"best {shown(best, '/s')}", refresh=False)
        now = time.monotonic()
        if not tty and now - last >= every_s:
            last = now
            print(f"{desc}: {evaluations} evaluations in {now - start:.0f} s, best {shown(best, ' inferences/s')}",
                  file=stream, flush=True)

    try:
        yield on_eval
    finally:
        bar.close()


def _dispatch(args: argparse.Namespace) -> int:
    from partitioner.app.config import RunConfig, validate_config
    from partitioner.app.run import load_model, run
    from partitioner.app.simulate_cmd import resimulate
    from partitioner.app.summary import format_outcome

    if args.command == "inspect":
        from partitioner.app.summary import format_summary, summarize

        graph = load_model(args.model, parse_input_shapes(args.input_shape or []), args.precision or "fp32",
                           granularity=args.granularity or "fused", phase=args.phase, context=args.context,
                           decoder=args.decoder, routing=args.routing)
        summary = summarize(graph)
        print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
        return 0
    if args.command == "run":
        cfg = RunConfig(model=args.model, chiplets=args.chiplets, hardware=args.hardware,
                               method=args.method, budget=args.budget, seed=args.seed, out=args.out,
                               input_shapes=parse_input_shapes(args.input_shape or []), precision=args.precision,
                               time_limit_s=args.time_limit, policy=args.policy,
                               certificate=not args.no_certificate, granularity=args.granularity or "fused",
                               phase=args.phase, context=args.context, decoder=args.decoder,
                               max_time_s=args.max_time, batch=args.batch, memory_tier=not args.no_memory_tier,
                               max_shard=args.max_shard, split_budget=args.split_budget,
                               objective=args.objective, routing=args.routing)
        validate_config(cfg)
        with _progress("evaluating", total=None, objective=cfg.objective) as on_eval:
            outcome = run(cfg, on_eval=on_eval)
        print(format_outcome(outcome))
        if outcome.interrupted is None:
            return 0
        print(f"warning: run stopped early ({outcome.interrupted}); wrote the best partition of "
              f"{outcome.evaluations} evaluations, marked interrupted", file=sys.stderr)
        return 130 if outcome.interrupted.startswith("interrupted by Ctrl-C") else 0
    if args.command == "simulate":
        outcome = resimulate(args.model, args.partition, parse_input_shapes(args.input_shape or []),
                             args.precision, args.hardware, args.chiplets, args.out,
                             granularity=args.granularity, phase=args.phase, context=args.context,
                             memory_tier=not args.no_memory_tier, objective=args.objective, decoder=args.decoder,
                             routing=args.routing)
        print(format_outcome(outcome))
        return 0
    if args.command in ("train", "finetune", "split", "explore"):
        from partitioner.app import limits

        limits.check_seed(args.seed)
    if args.command == "finetune":
        from partitioner.app import limits

        limits.check_budget(args.budget)
        limits.check_chiplets(args.chiplets)
    if args.command == "train":
        from partitioner.app import train_cli as cli_entry

        print(cli_entry.train(args))
        return 0
    if args.command == "explore":
        from partitioner.app import explore

        cfg = explore.ExploreConfig(model=args.model, budget=args.budget, workers=args.workers, seed=args.seed,
                                    out=args.out, space=args.space, sampler=args.method, agent=args.agent,
                                    max_area_mm2=args.max_area_mm2, max_power_w=args.max_power_w,
                                    population=args.population, ray=args.ray,
                                    input_shapes=parse_input_shapes(args.input_shape or []),
                                    precision=args.precision)
        from tqdm import tqdm

        bar = tqdm(desc="designs", total=args.budget, unit="design", leave=False, disable=None, file=sys.stderr)
        try:
            summary = explore.run_explore(cfg, on_done=lambda n, _total: bar.update(n - bar.n))
        finally:
            bar.close()
        print(explore.format_summary(summary))
        return 0
    if args.command == "finetune":
        from partitioner.app import train_cli as cli_entry

        print(cli_entry.finetune(args))
        return 0
    if args.command == "split":
        from partitioner.app.split_cmd import format_split, split

        outcome = split(args.model, args.partition, args.out, parse_input_shapes(args.input_shape or []),
                        verify=args.verify, seed=args.seed, tolerance=args.tolerance)
        print(format_split(outcome))
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
