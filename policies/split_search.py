"""Local search in the split-plan space (policies/split_moves.py): annealing, random search and the learned move
policy in one loop (policies.anneal.anneal_loop, as every annealing search), so the only differences between them
are how a move is chosen and whether it is accepted.

    start    the staged DP plans staged_dp.staged_partition(max_shard=g) for g = 1..max_shard that check() accepts,
             each evaluated (they count against the budget); the walk starts at the best.
    step     list the offered moves of the current plan; choose one (below); if check() rejects the candidate, drop
             it and choose again (no evaluation spent); evaluate it (simulate: a staged plan needs no repair).
    choose   anneal: uniform, half the time among moves touching the stage that holds the simulator's bottleneck
             chiplet (as policies.baselines.anneal); random: uniform; learned: the same two pools as anneal, and
             within the pool drawn the softmax of the MoveNet's scores (policies/move_policy.py) over the moves'
             features (so the untrained network is exactly annealing's proposer).
    accept   anneal and learned: Metropolis on log throughput, temperature 0.05 -> 0.001 geometric over the budget;
             random: every move (a random walk).
    residency  with `residency=True` (off by default: no gain measured), all three also offer residency moves
             (policies/residency_moves.py: stream or keep resident one op's weights), chosen like stage moves.
    restart  all three: back to the best plan after max(8, budget // 8) evaluations without a new best.
    learn    learned only, fine-tuning on the graph: PPO (move_policy.Learner) on each tried move's reward
             r = clip(log(thr_candidate / thr_current), 0, 1): only gains count. With the whole-op moves' signed
             reward (-1..1) and batch-normalised advantages, a move that changes nothing (r = 0) beats the usual
             loss, which pushes the policy towards moves that stop the search; with r >= 0 a batch without a gain
             has zero advantage everywhere and the only signal points at moves that improved the plan.

Every evaluation goes through `evaluate_fn(partition) -> Evaluation` (default: the simulator), so equal budgets
compare like with like; revisited plans are served from a cache but still count as evaluations.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition, check
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate
from partitioner.plan.staged_dp import DEFAULT_MAX_SHARD, staged_partition
from policies.anneal import ProgressFn, SearchResult, anneal_loop
from policies.move_policy import REWARD_CLIP, Learner, MoveNet, load_move_policy
from policies.residency_moves import ResidencyMove, joined, residency_move_set, residency_moves
from policies.split_moves import (Plan, SplitContext, enumerate_moves, plan_of, split_move_set, to_partition,
                                  with_residency)

SPLIT_METHODS = ("anneal", "random", "learned")
SHIPPED_SPLIT_POLICY = Path(__file__).resolve().parent / "pretrained" / "split_move_policy.pt"
PartitionEvaluateFn = Callable[[Partition], Evaluation]

_contexts: list = []        # the last few (graph, hw, max_shard, context, starts): cost matrices are reused


def context_for(graph: TensorGraph, hw: Hardware, max_shard: int = DEFAULT_MAX_SHARD, batch: int = 1
                ) -> tuple[SplitContext, list[Partition]]:
    """The move context and the valid staged DP start plans of (graph, hw), cached for the last 16 pairs. A start
    plan streams the weights its overflowing chiplets must (with_residency, as run.best_staged); when a start has
    a stage that fits SRAM only so (the DP ran relaxed), the context is relaxed (split_moves docstring)."""
    for g, h, k, b, ctx, starts in _contexts:
        if g is graph and h is hw and k == max_shard and b == batch:
            return ctx, starts
    ctx = SplitContext(graph, hw, max_shard)
    starts, seen, memo = [], set(), {}
    for g in range(1, ctx.max_shard + 1):
        a, k = staged_partition(graph, hw, g, memo=memo)    # one memo: a group's cost matrices do not depend on g
        part = with_residency(graph, hw, Partition(a, None, 0, f"staged-dp-{g}", shard=k), batch)
        key = (a.tobytes(), k.tobytes())
        if key not in seen and plan_of(a, k) is not None and not check(graph, hw, part):
            seen.add(key)
            starts.append(part)
    if hw.memory_stacks and any(not np.isfinite(ctx.cost(s)) for p in starts
                                for s in plan_of(p.assignment, p.shard)):
        ctx.relaxed = True
        ctx._costs.clear()
    _contexts.append((graph, hw, max_shard, batch, ctx, starts))
    del _contexts[:-16]
    return ctx, starts


def simulate_fn(graph: TensorGraph, hw: Hardware, batch: int = 1) -> PartitionEvaluateFn:
    return lambda part: Evaluation(part, simulate(graph, hw, part, batch=batch))


def load_split_policy(path: str | Path | None) -> MoveNet:
    """The network in `path`; None: the shipped split-space checkpoint, or an untrained network without one."""
    return load_move_policy(path, SHIPPED_SPLIT_POLICY,
                            "no shipped split-move policy; the learned split search starts from an untrained network")


def _cached(evaluate_fn: PartitionEvaluateFn) -> PartitionEvaluateFn:
    seen: dict = {}

    def fn(part: Partition) -> Evaluation:
        key = (part.assignment.tobytes(), b"" if part.shard is None else part.shard.tobytes(),
               b"" if part.streamed is None else np.asarray(part.streamed, dtype=bool).tobytes())
        if key not in seen:
            seen[key] = evaluate_fn(part)
        return seen[key]

    return fn


def split_search(graph: TensorGraph, hw: Hardware, method: str, *, budget: int, seed: int,
                 evaluate_fn: PartitionEvaluateFn | None = None, max_shard: int = DEFAULT_MAX_SHARD,
                 net: MoveNet | None = None, policy_path: str | Path | None = None, finetune: bool = True,
                 learner: Learner | None = None, t_start: float = 0.05, t_end: float = 0.001,
                 restart_after: int | None = None, on_eval: ProgressFn | None = None, batch: int = 1,
                 residency: bool = False) -> SearchResult | None:
    """`method` (anneal, random or learned) over staged plans for `budget` evaluations (module docstring). None
    when no staged plan is valid on this package. With a memory tier every plan evaluated streams the weights its
    overflowing chiplets must (split_moves.with_residency at `batch`). `residency`: residency moves
    (policies/residency_moves.py) join the offered moves of all three methods (off by default: no gain measured)."""
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split-space method {method!r}; use one of {SPLIT_METHODS}")
    ctx, starts = context_for(graph, hw, max_shard, batch)
    if not starts:
        return None
    h = None
    if method == "learned":
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        if net is None:
            net = load_split_policy(policy_path)
        net.eval()
        if finetune and learner is None:
            learner = Learner(net)
        with torch.no_grad():
            h = net.embed(graph, hw)
    tried: list = [None]                # the PPO record of the move just proposed (learned only)

    def propose(current: Evaluation, rng: np.random.Generator) -> Partition | None:
        picked = _pick(ctx, plan_of(current.assignment, current.partition.shard), current, method, rng, net, h,
                       batch, residency)
        if picked is None:
            return None                 # no move keeps the plan valid
        cand, tried[0] = picked
        return cand

    def observe(delta: float) -> None:
        nonlocal h
        if tried[0] is None:
            return
        learner.record(*tried[0], float(np.clip(delta, 0.0, REWARD_CLIP)))
        if learner.ready:
            learner.update(graph, hw)
            with torch.no_grad():
                h = net.embed(graph, hw)

    return anneal_loop(method, _cached(evaluate_fn or simulate_fn(graph, hw, batch)), starts[:budget], propose,
                       budget=budget, seed=seed, on_eval=on_eval, t_start=t_start, t_end=t_end,
                       restart_after=restart_after, metropolis=method != "random",
                       observe=None if learner is None else observe)


def _candidate(ctx: SplitContext, plan: Plan, current: Evaluation, mv, batch: int) -> Partition:
    """The partition a move leads to: a residency move changes the current plan's residency; a stage move gets
    choose_streamed's residency for its new stages."""
    if isinstance(mv, ResidencyMove):
        return mv.on(current.partition)
    return with_residency(ctx.graph, ctx.hw, to_partition(mv.apply(plan), ctx.graph.n_ops), batch)


def _pick(ctx: SplitContext, plan: Plan, current: Evaluation, method: str, rng: np.random.Generator,
          net: MoveNet | None, h: torch.Tensor | None, batch: int = 1, residency: bool = False
          ) -> tuple[Partition, tuple | None] | None:
    """(candidate partition, PPO record or None), drawing again whenever check() rejects the candidate; None when
    no offered move survives."""
    if method != "learned":
        moves = enumerate_moves(ctx, plan) + (residency_moves(ctx, plan, current.partition) if residency else [])
        bott = int(current.report.bottleneck_chiplet)
        while moves:
            pool = range(len(moves))
            if method == "anneal" and rng.random() < 0.5:
                hot = [i for i, mv in enumerate(moves)
                       if any(s.chip <= bott < s.chip + s.k for s in plan[mv.lo:mv.hi])]
                pool = hot or pool
            i = pool[int(rng.integers(len(pool)))]
            cand = _candidate(ctx, plan, current, moves[i], batch)
            if not check(ctx.graph, ctx.hw, cand):
                return cand, None
            moves = moves[:i] + moves[i + 1:]
        return None
    ms = split_move_set(ctx, plan, current)
    if residency:
        ms = joined(ms, residency_move_set(ctx, plan, current))
    if len(ms) and rng.random() < 0.5:          # annealing's pools: half the draws among bottleneck-stage moves
        bott = int(current.report.bottleneck_chiplet)
        hot = [i for i, mv in enumerate(ms.moves) if any(s.chip <= bott < s.chip + s.k for s in plan[mv.lo:mv.hi])]
        if hot:
            ms = ms.subset(hot)
    while len(ms):
        with torch.no_grad():
            logp = F.log_softmax(net.logits(h, ms.ops, ms.features), dim=0).numpy().astype(np.float64)
        p = np.exp(logp)
        k = int(rng.choice(len(ms), p=p / p.sum()))
        cand = _candidate(ctx, plan, current, ms.moves[k], batch)
        if not check(ctx.graph, ctx.hw, cand):
            return cand, (ms.ops, ms.features, k, float(logp[k]))
        ms = ms.without(k)
    return None
