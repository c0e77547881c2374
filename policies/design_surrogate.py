"""The design agent's learned surrogate: an ensemble of small MLPs from a feature row to three heads.

    x [n, d] -> standardise -> Linear(d, h) -> SiLU -> Linear(h, h) -> SiLU -> Linear(h, 3)
    head 0: logit of P(fits); head 1: log10 throughput; head 2: log10 energy per inference (J)

Each member starts from its own seed; the ensemble's spread is the agent's uncertainty. Loss: binary cross-entropy
on fits over every row, squared error on the two regressions over the rows that fit, each row weighted (the target's
own rows outweigh the corpus's when fine-tuning). Nothing here knows about hardware or graphs: rows in, heads out.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class SurrogateConfig:
    """Shape and training of the ensemble."""

    in_dim: int
    hidden: int = 64
    """width of both hidden layers."""
    members: int = 4
    """networks in the ensemble (their spread is the uncertainty)."""
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pretrain_epochs: int = 400
    """full-batch Adam steps when pretraining on the corpus."""
    finetune_steps: int = 25
    """Adam steps after each new target evaluation."""
    seed: int = 0


def _net(cfg: SurrogateConfig) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cfg.in_dim, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.hidden), nn.SiLU(),
                         nn.Linear(cfg.hidden, 3))


class Surrogate:
    """The ensemble plus the standardisation it was pretrained with."""

    def __init__(self, cfg: SurrogateConfig, mean: np.ndarray, std: np.ndarray) -> None:
        self.cfg = cfg
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.std = torch.as_tensor(np.where(std > 1e-8, std, 1.0), dtype=torch.float32)
        self.nets = []
        for k in range(cfg.members):
            torch.manual_seed(cfg.seed * 1000 + k)
            self.nets.append(_net(cfg))
        self.opts = [torch.optim.Adam(n.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) for n in self.nets]

    def _x(self, x: np.ndarray) -> torch.Tensor:
        return (torch.as_tensor(x, dtype=torch.float32) - self.mean) / self.std

    def fit(self, x: np.ndarray, fits: np.ndarray, y: np.ndarray, weight: np.ndarray, steps: int) -> float:
        """`steps` full-batch Adam steps on every member; y [n, 2] (log10 throughput, log10 energy), read where
        fits. Returns the last mean loss."""
        xt = self._x(x)
        ft = torch.as_tensor(fits, dtype=torch.float32)
        yt = torch.as_tensor(np.nan_to_num(y), dtype=torch.float32)
        wt = torch.as_tensor(weight, dtype=torch.float32)
        wt = wt / wt.sum()
        last = 0.0
        for net, opt in zip(self.nets, self.opts):
            net.train()
            for _ in range(steps):
                out = net(xt)
                bce = nn.functional.binary_cross_entropy_with_logits(out[:, 0], ft, reduction="none")
                mse = ((out[:, 1:] - yt) ** 2).sum(1) * ft
                loss = (wt * (bce + mse)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            last += float(loss.detach()) / len(self.nets)
        return last

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(P(fits) [n], mean [n, 2], std [n, 2]) over the members."""
        xt = self._x(x)
        outs = torch.stack([net.eval()(xt) for net in self.nets])   # [members, n, 3]
        p = torch.sigmoid(outs[..., 0]).mean(0)
        return p.numpy(), outs[..., 1:].mean(0).numpy(), outs[..., 1:].std(0, unbiased=False).numpy()

    def state(self) -> dict:
        return {"config": asdict(self.cfg), "mean": self.mean, "std": self.std,
                "nets": [n.state_dict() for n in self.nets]}

    @classmethod
    def from_state(cls, state: dict) -> "Surrogate":
        s = cls(SurrogateConfig(**state["config"]), state["mean"].numpy(), state["std"].numpy())
        for net, sd in zip(s.nets, state["nets"]):
            net.load_state_dict(sd)
        return s
