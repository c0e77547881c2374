"""`--method rl`: fine-tune the pre-trained policy on one graph within a budget of evaluations.

The search loop of policies.train.finetune behind the same interface as the baselines' search loops: every
proposal goes through the caller's `evaluate_fn` (repair + simulate), and the best Evaluation is returned.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from policies.anneal import EvaluateFn, ProgressFn, SearchResult
from policies.ppo import FINETUNE_CONFIG
from policies.train import finetune

SHIPPED_POLICY = Path(__file__).resolve().parent / "pretrained" / "policy.pt"


def shipped_policy() -> Path:
    if not SHIPPED_POLICY.exists():
        raise UserError(f"no shipped policy at {SHIPPED_POLICY}",
                        "pass --policy CKPT (from `partition train`) or use --method anneal")
    return SHIPPED_POLICY


def rl_search(graph: TensorGraph, hw: Hardware, *, budget: int, seed: int, evaluate_fn: EvaluateFn,
              policy_path: str | Path | None = None, on_eval: ProgressFn | None = None,
              zero_shot: bool = False) -> SearchResult:
    """Fine-tune the policy (default: the shipped one) on `graph` for `budget` evaluations; the best found.
    zero_shot: sample from the fixed policy instead (no updates)."""
    cfg = replace(FINETUNE_CONFIG, seed=seed, update_epochs=0 if zero_shot else FINETUNE_CONFIG.update_epochs)
    path = shipped_policy() if policy_path is None else policy_path
    best: dict = {}
    history: list[tuple[int, float]] = []
    start = time.perf_counter()

    def reward_fn(g: TensorGraph, h: Hardware, proposal: np.ndarray) -> tuple[float, np.ndarray]:
        try:
            ev = evaluate_fn(proposal)
        except UserError:
            history.append((len(history) + 1, best["ev"].throughput if "ev" in best else 0.0))
            raise
        if "ev" not in best or ev.throughput > best["ev"].throughput:
            best["ev"] = ev
        history.append((len(history) + 1, best["ev"].throughput))
        return float(ev.throughput), np.asarray(ev.assignment)

    finetune(graph, hw, path, budget, cfg, None, reward_fn=reward_fn, on_eval=on_eval, progress=False)
    return SearchResult("rl", best["ev"], len(history), tuple(history), time.perf_counter() - start)
