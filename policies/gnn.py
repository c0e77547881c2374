"""The policy network: a GATv2 encoder over the tensor graph and an ordinal decoder over pipeline positions.

Encoder. Input h0 = LayerNorm(Linear([x_i, u])) (node features with the package features broadcast), then L
residual blocks  h <- LayerNorm(h + GELU(GATv2Conv(h, edge_index, edge_attr))), hidden H (64), `heads` heads
concatenated (H / heads each). Shapes: x [N, NODE_DIM], edge_attr [2E, EDGE_DIM], u [1, GLOBAL_DIM] -> h [N, H].

Decoder (independent of the chiplet count). Chiplet ids are pipeline stages; everything is in stage units:
    mu_i = (anchor_i + 0.5 + d_i) / C,   s_i = (lo + (hi - lo) * sigmoid(r_i + r0)) / C     (d_i, r_i: MLP(h_i))
where anchor_i is the op's chiplet in the anchor split (DP by default, see policies.features; prior_i =
(anchor_i + 0.5) / C), d_i is a shift in stages and the spread s_i stays within [lo, hi] = [min_spread,
max_spread] stages (unbounded, PPO either collapsed it to 0.03 stages or, with an entropy bonus, blew it up past
one stage, since repair makes stray ops cheap). r0 puts the untrained net (zero-initialised output layer) at
init_spread, keeping each op on its anchor chiplet with probability sigma(0.5/init_spread) - sigma(-0.5/init_spread)
(0.93 for init_spread 0.15).
Chiplet c owns the bin [c/C, (c+1)/C) (the first and last bins extend to -inf and +inf) and gets the mass of a
logistic(mu_i, s_i) on its bin:
    log p_ic = log(sigma(b) - sigma(a)),  a = (c/C - mu_i)/s_i,  b = ((c+1)/C - mu_i)/s_i
computed stably as log sigma(b) + log sigma(-a) + log1p(-exp(a - b)). For heterogeneous packages a bilinear
correction <W h_i, g(chip_c)> is added before renormalising; it is constant over c (so has no effect) when all
chiplets are identical. The same weights therefore decode for 2, 4, 16 or 36 chiplets.

An assignment is sampled independently per op (proposals may break pipeline order or memory; CP-SAT repairs
them). log_prob and entropy of an assignment are sums over ops.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

with warnings.catch_warnings():                  # PyG's import trips torch.jit.script's deprecation notice
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch_geometric.data import Data
    from torch_geometric.nn import GATv2Conv

from policies.features import CHIP_DIM, EDGE_DIM, FEATURES_VERSION, GLOBAL_DIM, NODE_DIM


@dataclass(frozen=True)
class PolicyConfig:
    """Architecture of the policy network (stored in every checkpoint so it can be rebuilt)."""

    hidden: int = 64
    """Width of node embeddings."""
    layers: int = 4
    """Number of GATv2 message-passing blocks (each residual + LayerNorm)."""
    heads: int = 4
    """Attention heads per block; their outputs are concatenated (hidden / heads each)."""
    init_spread: float = 0.15
    """Logistic scale of the untrained decoder, in chiplet bins (stages)."""
    min_spread: float = 0.12
    """Smallest logistic scale the decoder can express, in stages (keeps some exploration)."""
    max_spread: float = 0.4
    """Largest logistic scale, in stages (keeps proposals near the anchor)."""
    chip_hidden: int = 16
    """Width of the chiplet embedding used by the heterogeneous-package correction."""
    features_version: int = FEATURES_VERSION
    """Version of policies.features the network was built for; loading a mismatching checkpoint is an error."""


class PolicyNet(nn.Module):
    def __init__(self, cfg: PolicyConfig = PolicyConfig()) -> None:
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.inp = nn.Linear(NODE_DIM + GLOBAL_DIM, h)
        self.inp_norm = nn.LayerNorm(h)
        self.convs = nn.ModuleList(GATv2Conv(h, h // cfg.heads, heads=cfg.heads, edge_dim=EDGE_DIM)
                                   for _ in range(cfg.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(h) for _ in range(cfg.layers))
        self.head = nn.Sequential(nn.Linear(h + GLOBAL_DIM, h), nn.GELU(), nn.Linear(h, 2))
        nn.init.zeros_(self.head[-1].weight)     # untrained net: centred on the DP split
        nn.init.zeros_(self.head[-1].bias)
        self.chip = nn.Sequential(nn.Linear(CHIP_DIM, cfg.chip_hidden), nn.GELU(),
                                  nn.Linear(cfg.chip_hidden, cfg.chip_hidden))
        self.node_to_chip = nn.Linear(h, cfg.chip_hidden, bias=False)
        nn.init.zeros_(self.node_to_chip.weight)

    def encode(self, data: Data) -> torch.Tensor:
        """Node embeddings [N, hidden]."""
        u = data.u.expand(data.x.size(0), -1)
        h = self.inp_norm(self.inp(torch.cat([data.x, u], dim=1)))
        for conv, norm in zip(self.convs, self.norms):
            h = norm(h + F.gelu(conv(h, data.edge_index, data.edge_attr)))
        return h

    def position(self, data: Data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mu [N], s [N], h [N, hidden]): each op's predicted pipeline position and its logistic scale."""
        h = self.encode(data)
        out = self.head(torch.cat([h, data.u.expand(h.size(0), -1)], dim=1))
        n_chip = int(data.n_chiplets)
        mu = data.prior + out[:, 0] / n_chip
        lo, hi = self.cfg.min_spread, self.cfg.max_spread
        r0 = math.log((self.cfg.init_spread - lo) / (hi - self.cfg.init_spread))
        s = (lo + (hi - lo) * torch.sigmoid(out[:, 1] + r0)) / n_chip
        return mu, s, h

    def forward(self, data: Data) -> torch.Tensor:
        """Log-probabilities [N, C] over chiplets C = data.n_chiplets (rows sum to 1 after exp)."""
        mu, s, h = self.position(data)
        n_chip = int(data.n_chiplets)
        edges = torch.arange(n_chip + 1, dtype=mu.dtype) / n_chip
        z = (edges[None, :] - mu[:, None]) / s[:, None]                   # [N, C + 1]
        a, b = z[:, :-1].clone(), z[:, 1:].clone()
        a[:, 0] = -1e4
        b[:, -1] = 1e4
        logp = F.logsigmoid(b) + F.logsigmoid(-a) + torch.log1p(-torch.exp((a - b).clamp(max=-1e-6)))
        corr = self.node_to_chip(h) @ self.chip(data.chip_x).T           # [N, C]; constant over C if homogeneous
        return torch.log_softmax(logp + corr, dim=1)


def log_prob(logp: torch.Tensor, assignment: torch.Tensor) -> torch.Tensor:
    """Log-probability of assignments: logp [N, C], assignment [N] or [K, N] -> scalar or [K] (sum over ops)."""
    if assignment.dim() == 1:
        return logp.gather(1, assignment[:, None]).sum()
    return logp[torch.arange(logp.size(0))[None, :], assignment].sum(dim=1)


def entropy(logp: torch.Tensor) -> torch.Tensor:
    """Entropy of the factorised distribution (sum over ops of each op's categorical entropy)."""
    return -(logp.exp() * logp).sum()


def sample(logp: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k independent assignments [k, N] drawn by inverse CDF (deterministic given `generator`)."""
    cdf = logp.exp().cumsum(dim=1)
    u = torch.rand(k, logp.size(0), 1, generator=generator) * cdf[None, :, -1:]
    return (cdf[None, :, :] < u).sum(dim=2).clamp(max=logp.size(1) - 1)


def greedy(logp: torch.Tensor) -> torch.Tensor:
    """The most likely chiplet of each op [N]."""
    return logp.argmax(dim=1)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def config_dict(cfg: PolicyConfig) -> dict:
    return asdict(cfg)
