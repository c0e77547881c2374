"""What `partition train` and `partition finetune` do, as functions of the parsed arguments.

cli.py calls these and prints the string they return; they raise UserError for bad input and never print.
Like partitioner/app/run.py this is top-of-stack glue: it may import every stage.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from partitioner.app.backend import check_ray_address, check_workers, make_backend, require_ray
from partitioner.app.pipeline import PipelineReward
from partitioner.core.errors import UserError
from policies import train as tr
from policies.checkpoints import read_checkpoint
from policies.corpus import HELD_OUT, onnx_corpus, synthetic_corpus
from policies.ppo import FINETUNE_CONFIG, PPOConfig
from policies.train import pretrain

TRAIN_CONFIG = PPOConfig(total_steps=2000, proposals_per_step=16, graphs_per_step=2, update_epochs=4,
                         repair_time_limit_s=1.0, save_every=10)
"""Defaults of `partition train` (the shipped policy's run is described in policies/pretrained/MODEL_CARD.md)."""


def _chiplet_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise UserError(f"--chiplets {text!r} is not a list of positive counts", "write it like 2,4,8,16,36")
    return counts


def _empty_corpus(directory: str) -> UserError:
    """Why a corpus directory gave no training graphs: no .onnx files, or only the held-out benchmark models."""
    found = sorted(p.stem for p in Path(directory).glob("*.onnx"))
    if found:
        return UserError(f"the training corpus is empty: the .onnx files in {directory} ({', '.join(found)}) are "
                         f"all held out for benchmarks ({', '.join(HELD_OUT)} are never trained on)",
                         "export a corpus with `python scripts/export_models.py --corpus DIR`, or add --synthetic N")
    return UserError(f"the training corpus is empty: {directory} has no .onnx files",
                     "pass a directory with .onnx files (`python scripts/export_models.py --corpus DIR`) or add "
                     "--synthetic N")


def _backend_args(args: argparse.Namespace) -> tuple[int, str | None]:
    """--workers and --ray, checked before anything loads: a missing ray package is the first thing to hear about."""
    workers, ray = getattr(args, "workers", 1), getattr(args, "ray", None)
    check_workers(workers)
    check_ray_address(ray)
    if ray is not None:
        require_ray()
    return workers, ray


def train(args: argparse.Namespace) -> str:
    """`partition train --corpus DIR --out policy.pt [--steps N] [--chiplets 2,4,..] [--synthetic N]
    [--workers N] [--ray local|auto|ADDRESS]`."""
    counts = _chiplet_counts(args.chiplets)
    workers, ray = _backend_args(args)
    if args.time_budget is not None and not args.time_budget > 0:
        raise UserError(f"--time-budget must be positive, got {args.time_budget}", "pass seconds, e.g. 1200")
    corpus = onnx_corpus(args.corpus, counts, args.precision)
    if not corpus and not args.synthetic:
        raise _empty_corpus(args.corpus)
    if args.synthetic:
        corpus += synthetic_corpus(args.synthetic, args.seed, counts)
    cfg = replace(TRAIN_CONFIG, seed=args.seed, time_budget_s=args.time_budget,
                  total_steps=TRAIN_CONFIG.total_steps if args.steps is None else args.steps)
    if cfg.total_steps < 0:
        raise UserError(f"--steps must be >= 0, got {cfg.total_steps}", "pass a number of PPO updates")
    backend = make_backend(workers, ray)   # rollouts on a local pool or Ray; the update stays here
    try:
        ckpt = pretrain(corpus, cfg, args.out, resume=True, map_fn=backend.map,
                        reward_fn=PipelineReward(cfg.repair_time_limit_s, cfg.seed))
    finally:
        backend.close()
    out = Path(args.out)
    where = f"Ray ({ray})" if ray is not None else f"{workers} local worker{'s' if workers > 1 else ''}"
    return (f"trained {ckpt['step']} updates ({ckpt['evals']} evaluations, {ckpt['wall_s']:.0f} s, "
            f"{ckpt['evals'] / max(ckpt['wall_s'], 1e-9):.2f}/s on {where}) on {len(corpus)} (graph, package) "
            f"pairs\ncheckpoint: {out}\ncurve: {out.with_suffix('.csv')}")


def finetune(args: argparse.Namespace) -> str:
    """`partition finetune MODEL.onnx --chiplets N --policy CKPT --budget N --out DIR [--workers N] [--ray ...]`:
    fine-tune (the proposals of each update evaluated on the backend, as in `train`), then write the
    best partition's outputs (partition.json, report.md, ...) next to the checkpoint and curve."""
    from partitioner.app.budget import RunBudget
    from partitioner.app.config import Outcome, RunConfig
    from partitioner.app.methods import DEFAULT_REPAIR_LIMIT_S
    from partitioner.app.outputs import prepare_out_dir, write_outputs
    from partitioner.app.run import keep_the_best, load_model, traced
    from partitioner.plan.staged_dp import auto_max_shard
    from partitioner.app.summary import format_outcome
    from partitioner.frontend.read import parse_input_shapes
    from partitioner.hw.toml import load_hardware
    from partitioner.app.pipeline import evaluate
    from policies.rl_search import shipped_policy

    if args.budget < 1:
        raise UserError(f"--budget must be at least 1, got {args.budget}", "pass a positive number of evaluations")
    workers, ray = _backend_args(args)
    out_dir = prepare_out_dir(args.out)
    graph = load_model(args.model, parse_input_shapes(args.input_shape or []), args.precision,
                              granularity=args.granularity or "fused", phase=args.phase, context=args.context,
                              decoder=args.decoder)
    hw = load_hardware(args.hardware, args.chiplets, memory_tier=not getattr(args, "no_memory_tier", False))
    limit = DEFAULT_REPAIR_LIMIT_S if args.time_limit is None else args.time_limit
    cfg = replace(FINETUNE_CONFIG, seed=args.seed, repair_time_limit_s=limit)
    policy = shipped_policy() if args.policy is None else args.policy
    backend = make_backend(workers, ray)   # each update's proposals on a local pool or Ray (docs/training.md)
    try:
        best_a, _ = tr.finetune(graph, hw, policy, args.budget, cfg, out_dir, resume=True, map_fn=backend.map,
                                reward_fn=PipelineReward(limit, args.seed))
    finally:
        backend.close()
    searched = evaluate(graph, hw, best_a, time_limit_s=limit, seed=args.seed)
    # Never below the default run: the staged DP's split plans and the certificate's solves compete with the
    # fine-tuned policy's best, exactly as they do after a run's search (run.keep_the_best).
    run_cfg = RunConfig(args.model, seed=args.seed, precision=args.precision, phase=args.phase, context=args.context)
    best, found_by, cert, _ = keep_the_best(graph, hw, run_cfg, "rl", auto_max_shard(hw.n_chiplets), searched, None,
                                            RunBudget())
    best = traced(graph, hw, best, 1)
    ckpt = read_checkpoint(out_dir / "finetune.pt")
    outcome = Outcome(args.model, graph, hw, "rl", best, int(ckpt["evals"]), float(ckpt["wall_s"]), certificate=cert,
                      found_by=found_by)
    files = write_outputs(out_dir, outcome, config=None, hardware_spec=args.hardware)
    return format_outcome(Outcome(**{**outcome.__dict__, "files": files}))

