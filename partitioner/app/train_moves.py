"""Pre-train the move policy of `--method learned` (policies.move_train) on CP-SAT repair + simulation.

    python -m partitioner.app.train_moves --out policies/pretrained/move_policy.pt --time-budget 720 \
        --corpus examples --synthetic 40 --chiplets 16,36,64
    python -m partitioner.app.train_moves --space split --out policies/pretrained/split_move_policy.pt \
        --synthetic 60 --chiplets 16,36,64,144 --episode-evals 64 --time-budget 900

Resumes when --out exists; --time-budget counts wall seconds across resumes. The corpus: every .onnx in --corpus
on a mesh of each chiplet count, plus --synthetic random DAGs.
"""
from __future__ import annotations

import argparse
import sys

from partitioner.app.pipeline import evaluate
from partitioner.core.errors import UserError
from policies.move_train import pretrain
from policies.corpus import synthetic_corpus


def _onnx_cases(directory: str, counts: tuple[int, ...], skip_held_out: bool = False) -> list:
    """Every .onnx in `directory` on a default mesh of each chiplet count (no held-out filter by default: the
    whole-op move policy's held-out graphs are the benchmark's, see benchmarks/move_bench.py; `skip_held_out`
    leaves out policies.corpus.HELD_OUT)."""
    from pathlib import Path

    from partitioner.hw.hardware import mesh_of
    from partitioner.frontend.load import load_onnx

    if not Path(directory).is_dir():
        raise UserError(f"corpus directory {directory} does not exist", "pass a directory of .onnx files")
    from policies.corpus import HELD_OUT

    return [(load_onnx(p, precision="fp16"), mesh_of(n)) for p in sorted(Path(directory).glob("*.onnx"))
            if not (skip_held_out and p.stem in HELD_OUT) for n in counts]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="checkpoint path (resumes if it exists)")
    ap.add_argument("--corpus", default=None, help="directory of .onnx files")
    ap.add_argument("--synthetic", type=int, default=40, help="random DAGs added to the corpus")
    ap.add_argument("--chiplets", default="16,36,64", help="chiplet counts, comma-separated")
    ap.add_argument("--episodes", type=int, default=1000)
    ap.add_argument("--episode-evals", type=int, default=48)
    ap.add_argument("--time-budget", type=float, default=None, help="wall seconds in total, across resumes")
    ap.add_argument("--repair-time-limit", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--space", choices=("op", "split"), default="op",
                    help="op: whole-op moves (--method learned); split: staged-plan moves (policies/split_moves.py), "
                         "evaluated by simulation alone, held-out models (policies.corpus.HELD_OUT) left out")
    args = ap.parse_args(argv)
    try:
        counts = tuple(int(t) for t in args.chiplets.split(",") if t.strip())
        if not counts or min(counts) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --chiplets {args.chiplets!r} is not a list of positive counts. Fix: write it like 16,36,64",
              file=sys.stderr)
        return 2
    try:
        if args.time_budget is not None and not args.time_budget > 0:
            raise UserError(f"--time-budget must be positive, got {args.time_budget}", "pass seconds, e.g. 720")
        corpus = [(g.name + f"@{hw.n_chiplets}", g, hw) for g, hw in
                  (_onnx_cases(args.corpus, counts, args.space == "split") if args.corpus else [])
                  + synthetic_corpus(args.synthetic, args.seed, counts)]
        if not corpus:
            raise UserError("the training corpus is empty", "pass --corpus DIR with .onnx files or --synthetic N > 0")

        def factory(graph, hw):
            if args.space == "split":
                from policies.split_search import simulate_fn

                return simulate_fn(graph, hw)
            return lambda proposal: evaluate(graph, hw, proposal, time_limit_s=args.repair_time_limit, seed=args.seed)

        state = pretrain(corpus, factory, args.out, episodes=args.episodes, episode_evals=args.episode_evals,
                         time_budget_s=args.time_budget, seed=args.seed, log=lambda s: print(s, flush=True),
                         space=args.space)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"trained {state['episode']} episodes, {state['evals']} evaluations, {state['wall_s']:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
