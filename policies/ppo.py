"""PPO for the partitioning policy: its settings, rewards, proposals and the clipped-surrogate update.

One episode proposes a whole assignment (a one-step contextual bandit): the policy samples K proposals for a
graph, each is repaired and simulated, and its reward is r = log(throughput / baseline throughput), where the
baseline is the repaired DP contiguous split of the same graph (so r > 0 means "better than DP"). The advantage
is r minus the mean over the K proposals of the same graph, divided by their standard deviation (a risk-seeking
variant that only credits the top quantile is available: PPOConfig.risk_quantile). The loss is
PPO's clipped surrogate with one ratio per op (the policy factorises over ops; a ratio of the summed log-prob
over hundreds of ops would almost always be clipped), minus an entropy bonus, for `update_epochs` passes.

Optionally the first `bc_steps` updates are behavioural cloning: cross-entropy towards the repaired DP
assignment, which teaches the decoder where DP puts stage boundaries before PPO explores around them.

The reward comes from an injected `reward_fn(graph, hw, assignment) -> (throughput, repaired_assignment)`;
the application passes `PipelineReward` (partitioner.app.pipeline: CP-SAT repair + simulation). Tests pass the
cheap `bottleneck_reward`. The loops that drive these pieces are policies.train's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.plan.splits import dp_partition, greedy_partition
from policies.gnn import PolicyConfig, PolicyNet, greedy, sample

RewardFn = Callable[[TensorGraph, Hardware, np.ndarray], "tuple[float, np.ndarray]"]
BaselineFn = Callable[[TensorGraph, Hardware], np.ndarray]


@dataclass(frozen=True)
class PPOConfig:
    """Every hyper-parameter of pre-training and fine-tuning (written next to each run's outputs)."""

    seed: int = 0
    """Seeds network initialisation, corpus sampling and proposal sampling."""
    lr: float = 5e-4
    """Adam learning rate."""
    total_steps: int = 200
    """PPO updates (after the behavioural-cloning steps). Fine-tuning ignores it: its budget sets the steps."""
    bc_steps: int = 0
    """Behavioural-cloning updates towards the repaired DP assignment before PPO (pre-training only)."""
    proposals_per_step: int = 16
    """Assignments sampled per graph per update (K); advantages are normalised within these K."""
    graphs_per_step: int = 1
    """Corpus graphs per pre-training update; their losses are summed."""
    update_epochs: int = 4
    """Gradient passes over each batch of proposals (0: no learning, i.e. zero-shot sampling)."""
    risk_quantile: float | None = None
    """Risk-seeking policy gradient (Petersen et al., ICLR 2021): only proposals whose reward is above this
    quantile of their batch get an advantage, (r - quantile) / std(r); the rest get 0. None (default): the classic
    advantage (r - mean) / std. In our runs the risk-seeking variant let the decoder's shifts drift and lowered
    both the mean and the best-of-K reward, so it is off."""
    reanchor: bool = True
    """Fine-tuning: centre each batch of proposals on the best repaired partition found so far (a learned local
    search) instead of the DP split."""
    incumbent_prob: float = 0.5
    """Pre-training: probability that a graph's proposals are centred on the best partition found for it so far
    rather than on its DP split (teaches the policy to improve on partitions other than DP)."""
    clip_coef: float = 0.2
    """PPO ratio clip (per op)."""
    ent_coef: float = 0.003
    """Weight of the mean per-op entropy bonus."""
    max_grad_norm: float = 0.5
    """Gradient norm clip."""
    reward_clip: float = 3.0
    """|log(throughput / baseline)| is clipped to this; a failed evaluation scores -reward_clip."""
    repair_time_limit_s: float = 2.0
    """CP-SAT seconds per repair for the pipeline reward (partitioner.app.pipeline.PipelineReward)."""
    save_every: int = 5
    """Checkpoint every this many updates (and always at the end)."""
    time_budget_s: float | None = None
    """Stop pre-training (with a checkpoint) once this much wall time has been spent in total; None: no limit."""
    torch_threads: int = 1
    """torch.set_num_threads for the run (the evaluator dominates; the network is small)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Architecture for a fresh network; a resumed or fine-tuned network keeps its checkpoint's."""


FINETUNE_CONFIG = PPOConfig(lr=1e-3, proposals_per_step=8, update_epochs=4)
"""Defaults for fine-tuning on one graph (`partition finetune`, `--method rl`)."""


def zero_shot_config(cfg: PPOConfig) -> PPOConfig:
    """Best-of-budget sampling from a fixed policy: fine-tuning without updates."""
    return replace(cfg, update_epochs=0)


# --- rewards ----------------------------------------------------------------------------------------------------------
def bottleneck_reward(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> tuple[float, np.ndarray]:
    """A cheap analytic stand-in for tests: repair by moving each op up to its latest producer's chiplet (pipeline
    order), then throughput = clock / slowest chiplet, whose time is its op cycles plus the link serialisation of
    every tensor it sends or receives. Ignores memory and contention."""
    from partitioner.model.cost import op_cycles_matrix

    a = np.asarray(assignment, dtype=np.int64).copy()
    order = np.argsort(graph.edge_dst, kind="stable")
    for s, d in zip(graph.edge_src[order].tolist(), graph.edge_dst[order].tolist()):
        if a[s] > a[d]:
            a[d] = a[s]
    cyc = op_cycles_matrix(graph, hw)[np.arange(graph.n_ops), a].astype(float)
    load = np.bincount(a, weights=cyc, minlength=hw.n_chiplets)
    cut = a[graph.edge_src] != a[graph.edge_dst]
    ser = graph.edge_bytes[cut] / hw.link_bytes_per_cycle
    load += np.bincount(a[graph.edge_src][cut], weights=ser, minlength=hw.n_chiplets)
    load += np.bincount(a[graph.edge_dst][cut], weights=ser, minlength=hw.n_chiplets)
    return hw.clock_hz / float(load.max()), a


def default_baseline(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """partitioner.plan.splits.dp_partition: the optimal contiguous split of the topological order."""
    return dp_partition(graph, hw)


def default_anchor(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """partitioner.plan.splits.greedy_partition: a second heuristic split the policy may start from."""
    return greedy_partition(graph, hw)


def log_gain_reward(thr: float, base: float, clip: float) -> float:
    """log(thr / base) clipped to +-clip; a failed or degenerate evaluation scores -clip."""
    if not (thr > 0 and base > 0) or not math.isfinite(thr):
        return -clip
    return float(np.clip(math.log(thr / base), -clip, clip))


# --- proposals --------------------------------------------------------------------------------------------------------
@torch.no_grad()
def propose(policy: PolicyNet, data, n_chiplets: int, *, sample: bool,
            generator: torch.Generator | None = None) -> np.ndarray:
    """One assignment (int64 [n_ops]) for the graph behind `data` (from policies.features.graph_features):
    sampled from the policy when `sample`, else each op's most likely chiplet. Pure given `generator`."""
    if int(data.n_chiplets) != n_chiplets:
        raise ValueError(f"features were built for {int(data.n_chiplets)} chiplets, not {n_chiplets}")
    policy.eval()
    logp = policy(data)
    out = _sample(logp, 1, generator)[0] if sample else greedy(logp)
    return out.numpy().astype(np.int64)


_sample = sample


# --- the update -------------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    """K proposals for one graph: features, proposals [K, N], their per-op log-probs when sampled, advantages."""

    data: object
    proposals: torch.Tensor
    old_logp: torch.Tensor
    adv: torch.Tensor


def ppo_loss(net: PolicyNet, batch: Batch, cfg: PPOConfig) -> torch.Tensor:
    logp = net(batch.data)                                                          # [N, C]
    n = logp.size(0)
    new = logp[torch.arange(n)[None, :], batch.proposals]                          # [K, N]
    ratio = torch.exp(new - batch.old_logp)
    adv = batch.adv[:, None]
    pg = -torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef) * adv).mean()
    ent = -(logp.exp() * logp).sum(dim=1).mean()
    return pg - cfg.ent_coef * ent


def bc_loss(net: PolicyNet, data, target: np.ndarray) -> torch.Tensor:
    logp = net(data)
    return -logp[torch.arange(logp.size(0)), torch.from_numpy(target)].mean()


def gradient_step(net: PolicyNet, opt: torch.optim.Optimizer, losses: Callable[[], torch.Tensor], cfg: PPOConfig
                  ) -> None:
    opt.zero_grad()
    loss = losses()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
    opt.step()


def sample_proposals(net: PolicyNet, data, k: int, sampler: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k sampled proposals [k, N] and their per-op log-probs [k, N] under the current policy."""
    with torch.no_grad():
        logp = net(data)
        props = _sample(logp, k, sampler)
        old = logp[torch.arange(logp.size(0))[None, :], props]
    return props, old


def advantages(rewards: np.ndarray, cfg: PPOConfig) -> torch.Tensor:
    std = rewards.std()
    if cfg.risk_quantile is None:
        adv = rewards - rewards.mean()
    else:
        adv = np.maximum(rewards - np.quantile(rewards, cfg.risk_quantile), 0.0)
    return torch.as_tensor(adv / std if std > 1e-8 else adv, dtype=torch.float32)


def new_optimizer(net: PolicyNet, cfg: PPOConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)
