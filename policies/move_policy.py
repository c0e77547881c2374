"""`--method learned`: local search whose moves a network picks, trained by PPO on the simulator's reward.

Network (MoveNet). A small GATv2 encoder (policies.gnn.PolicyNet's encoder, hidden 32, 2 blocks) embeds every op
from the static features of policies.features (computed once per graph); a move k of op o gets the logit
    z_k = MLP([move features_k (policies.moves), h_o])           (MLP: MOVE_DIM + hidden -> 64 -> 64 -> 1)
and the policy is softmax(z) over the valid moves of the current partition. The last layer starts at zero, so
the untrained network draws uniformly among valid moves.

Search (`learned_search`, one loop for pre-training and per-graph use). Annealing's own loop
(policies.anneal.anneal_loop, as policies.baselines.anneal): start from the better of the repaired greedy and DP
splits (two evaluations), one evaluation per move, restart from the best after max(8, budget // 8) evaluations
without a new best, and Metropolis acceptance on log throughput with the same geometric temperature
(0.05 -> 0.001). We keep Metropolis rather than greedy acceptance so that the only difference from annealing is
which move is tried.

Learning (PPO, a one-step bandit per move). The reward of a tried move is r = clip(log(thr_candidate /
thr_current), -1, 1), the simulated gain of the move. Every `update_every` moves the batch's advantages are
(r - mean r) / (std r + 1e-6) (the batch mean is the baseline) and the network takes `epochs` Adam steps on
PPO's clipped surrogate (clip 0.2) plus an entropy bonus (0.01 x mean entropy of the move distributions).
Fine-tuning per graph is the same loop with learning on (`finetune=True`, the default of the method).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.plan.splits import dp_partition, greedy_partition
from partitioner.sim.report import Evaluation
from policies.anneal import EvaluateFn, ProgressFn, SearchResult, anneal_loop
from policies.checkpoints import atomic_torch_save
from policies.features import FEATURES_VERSION, graph_features
from policies.gnn import PolicyConfig, PolicyNet
from policies.moves import MOVE_DIM, context, move_set

CHECKPOINT_KIND = "chiplet-partitioner-move-policy"
SHIPPED_MOVE_POLICY = Path(__file__).resolve().parent / "pretrained" / "move_policy.pt"
REWARD_CLIP = 1.0


@dataclass(frozen=True)
class MoveConfig:
    """Architecture and learning settings of the move policy (stored in every checkpoint)."""

    hidden: int = 32
    """Width of the op embeddings (GATv2 encoder)."""
    layers: int = 2
    """GATv2 blocks in the encoder."""
    mlp: int = 64
    """Width of the move-scoring MLP."""
    lr: float = 1e-3
    """Adam learning rate (pre-training and fine-tuning)."""
    update_every: int = 16
    """Moves per PPO batch."""
    epochs: int = 3
    """Gradient passes over each batch."""
    clip: float = 0.2
    """PPO ratio clip."""
    ent_coef: float = 0.01
    """Weight of the mean entropy bonus."""
    features_version: int = FEATURES_VERSION


class MoveNet(nn.Module):
    def __init__(self, cfg: MoveConfig = MoveConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        self.enc = PolicyNet(PolicyConfig(hidden=cfg.hidden, layers=cfg.layers, heads=4))
        self.score = nn.Sequential(nn.Linear(MOVE_DIM + cfg.hidden, cfg.mlp), nn.GELU(), nn.Linear(cfg.mlp, cfg.mlp),
                                   nn.GELU(), nn.Linear(cfg.mlp, 1))
        nn.init.zeros_(self.score[-1].weight)    # untrained: uniform over valid moves
        nn.init.zeros_(self.score[-1].bias)

    def embed(self, graph: TensorGraph, hw: Hardware) -> torch.Tensor:
        return self.enc.encode(graph_features(graph, hw))

    def logits(self, h: torch.Tensor, ops: np.ndarray, feats: np.ndarray) -> torch.Tensor:
        x = torch.cat([torch.from_numpy(feats), h[torch.from_numpy(ops)]], dim=1)
        return self.score(x).squeeze(1)


# --- checkpoints --------------------------------------------------------------------------------------------------------
def save_move_policy(path: str | Path, net: MoveNet, extra: dict | None = None) -> None:
    atomic_torch_save({"kind": CHECKPOINT_KIND, "features_version": FEATURES_VERSION, "config": asdict(net.cfg),
                       "model": net.state_dict(), **(extra or {})}, path)


def read_move_checkpoint(path: str | Path) -> dict:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"move policy checkpoint {path} does not exist",
                        "pass a checkpoint written by `python -m partitioner.app.train_moves`, or omit --policy")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise UserError(f"{path} is not a readable move policy checkpoint ({exc.__class__.__name__})",
                        "pass a checkpoint written by `python -m partitioner.app.train_moves`")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        raise UserError(f"{path} is not a move policy checkpoint (--method learned)",
                        "pass a checkpoint written by `python -m partitioner.app.train_moves`")
    if ckpt.get("features_version") != FEATURES_VERSION:
        raise UserError(f"move policy {path} was built for features version {ckpt.get('features_version')}, this "
                        f"code computes version {FEATURES_VERSION}", "retrain with `python -m partitioner.app.train_moves`")
    return ckpt


def load_move_policy(path: str | Path | None, shipped: Path = SHIPPED_MOVE_POLICY,
                     missing: str = "no shipped move policy; --method learned starts from an untrained network"
                     ) -> MoveNet:
    """The network in `path`; None: the `shipped` checkpoint, or an untrained network (warning `missing`) when
    none is shipped."""
    if path is None and not shipped.exists():
        warnings.warn(missing)
        return MoveNet()
    ckpt = read_move_checkpoint(shipped if path is None else path)
    net = MoveNet(MoveConfig(**ckpt["config"]))
    net.load_state_dict(ckpt["model"])
    return net


# --- learning -----------------------------------------------------------------------------------------------------------
@dataclass
class Learner:
    """PPO on the moves tried so far: call `record` per move, `update` when `ready`."""

    net: MoveNet
    opt: torch.optim.Optimizer | None = None
    batch: list = field(default_factory=list)
    updates: int = 0

    def __post_init__(self) -> None:
        if self.opt is None:
            self.opt = torch.optim.Adam(self.net.parameters(), lr=self.net.cfg.lr)

    def record(self, ops: np.ndarray, feats: np.ndarray, chosen: int, old_logp: float, reward: float) -> None:
        self.batch.append((ops, feats, chosen, old_logp, reward))

    @property
    def ready(self) -> bool:
        return len(self.batch) >= self.net.cfg.update_every

    def update(self, graph: TensorGraph, hw: Hardware) -> None:
        cfg = self.net.cfg
        r = torch.tensor([b[4] for b in self.batch], dtype=torch.float32)
        adv = (r - r.mean()) / (r.std(unbiased=False) + 1e-6)
        old = torch.tensor([b[3] for b in self.batch], dtype=torch.float32)
        self.net.train()
        for _ in range(cfg.epochs):
            h = self.net.embed(graph, hw)
            new, ent = [], []
            for ops, feats, k, _, _ in self.batch:
                logp = F.log_softmax(self.net.logits(h, ops, feats), dim=0)
                new.append(logp[k])
                ent.append(-(logp.exp() * logp).sum())
            ratio = torch.exp(torch.stack(new) - old)
            surr = torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * adv)
            loss = -surr.mean() - cfg.ent_coef * torch.stack(ent).mean()
            self.opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(self.net.parameters(), 0.5)
            self.opt.step()
        self.net.eval()
        self.batch.clear()
        self.updates += 1


# --- the search loop ----------------------------------------------------------------------------------------------------
def learned_search(graph: TensorGraph, hw: Hardware, *, budget: int, seed: int, evaluate_fn: EvaluateFn,
                   net: MoveNet | None = None, policy_path: str | Path | None = None, finetune: bool = True,
                   learner: Learner | None = None, t_start: float = 0.05, t_end: float = 0.001,
                   restart_after: int | None = None, on_eval: ProgressFn | None = None) -> SearchResult:
    """Local search with policy-sampled moves (module docstring). `net` (else the checkpoint at policy_path, else
    the shipped one) is updated in place when finetune; pre-training passes its own `learner` to share the
    optimiser across graphs."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)            # tiny matrices: extra threads only contend with the evaluator
    if net is None:
        net = load_move_policy(policy_path)
    net.eval()
    if finetune and learner is None:
        learner = Learner(net)
    ctx = context(graph, hw)
    with torch.no_grad():
        h = net.embed(graph, hw)
    tried: list = []                    # the PPO record of the move just proposed

    def propose(current: Evaluation, rng: np.random.Generator) -> np.ndarray | None:
        moves = move_set(ctx, current)
        if not len(moves):
            return None
        with torch.no_grad():
            logp = F.log_softmax(net.logits(h, moves.ops, moves.features), dim=0).numpy().astype(np.float64)
        p = np.exp(logp)
        k = int(rng.choice(len(moves), p=p / p.sum()))
        tried[:] = [(moves.ops, moves.features, k, float(logp[k]))]
        return moves.candidate(current.assignment, k)

    def observe(delta: float) -> None:
        nonlocal h
        learner.record(*tried[0], float(np.clip(delta, -REWARD_CLIP, REWARD_CLIP)))
        if learner.ready:
            learner.update(graph, hw)
            with torch.no_grad():
                h = net.embed(graph, hw)

    starts = [greedy_partition(graph, hw)] + ([dp_partition(graph, hw)] if budget > 1 else [])
    return anneal_loop("learned", evaluate_fn, starts, propose, budget=budget, seed=seed, on_eval=on_eval,
                       t_start=t_start, t_end=t_end, restart_after=restart_after,
                       observe=None if learner is None else observe)
