"""How a split op's collective travels: direct sends or a ring, and the one link-time formula of each.

A k-way split op (partitioner/sharding.py) delivers its output to its consumers by a collective (docs/simulator.md,
"Sharding", S3 and S6):

  direct  every piece sends its slice (all-gather) or its full-size partial (all-reduce) straight to every
          consumer chiplet: k(k - 1) messages inside a group, the busiest chain link carrying floor(k/2) ceil(k/2).
  ring    the group's members pass chunks of ceil(b / k) bytes around the ring c, c+1, ..., c+k-1, c (on a chain
          the closing message k-1 -> 0 routes back over the reverse links, so every directed link carries one
          chunk per step). An all-gather takes k - 1 steps; an all-reduce is a reduce-scatter of k - 1 steps (each
          member adds the chunk it receives to its own), after which each member holds one reduced chunk, then an
          all-gather of k - 1 steps if a consumer shares the group. Consumers on other chiplets get the reduced
          chunks (all-reduce) or the slices (all-gather) directly.

Each step is a *relay* op on each member (zero work, so the cost model's one-cycle minimum; the additions are not
charged, as in S3) whose inputs are its own previous step and the chunk its ring predecessor sent: so the
simulator runs a ring as ordinary ops and messages, with real contention and latency, and stays generic.

`algorithm` picks per collective the one whose uncontended time on a chain (the formulas below, used by the staged
DP too) is smaller, ties to direct: for large tensors, the ring for an all-reduce from k = 3 and for an all-gather
from k = 4; direct for k = 2 and for tensors so small that the ring's 2(k-1) hop latencies dominate.
"""
from __future__ import annotations

import numpy as np

from partitioner.graph import Op

KINDS = ("all-gather", "all-reduce")


def _ceil(a, b) -> np.ndarray:
    return -(-np.asarray(a, dtype=np.int64) // np.int64(b))


def direct_cycles(kind: str, nbytes, k: int, bw: int, hop: int) -> np.ndarray:
    """Uncontended time of the direct collective of an `nbytes` tensor among k consecutive chiplets of a chain:
    the link between members m and m + 1 carries (m + 1)(k - 1 - m) messages, at most floor(k/2) ceil(k/2), of
    a ceil(b / k) slice (all-gather) or a full b partial (all-reduce); the last is one (k - 1)-hop route behind.
    0 for k <= 1 or an empty tensor. Elementwise over an array of sizes."""
    b = np.asarray(nbytes, dtype=np.int64)
    if k <= 1:
        return np.zeros_like(b)
    msg = _ceil(b, k) if kind == "all-gather" else b
    return np.where(b > 0, (k // 2) * ((k + 1) // 2) * _ceil(msg, bw) + (k - 1) * hop, 0)


def ring_cycles(kind: str, nbytes, k: int, bw: int, hop: int) -> np.ndarray:
    """Uncontended time of the ring collective on a chain of k (module docstring): `steps` = k - 1 (all-gather) or
    2(k - 1) (all-reduce), each a chunk of ceil(b / k) bytes over one ring edge plus its relay's cycle. The slowest
    member's chain of steps runs over `steps` consecutive ring edges, the closing edge (k - 1 hops) as often as it
    can be: (k - 2) + (k - 1) = 2k - 3 hops for the all-gather, one lap (2k - 2) plus 2k - 4 more for the
    all-reduce, 4k - 6 in all. So steps x (ser(chunk) + 1) + hops x hop."""
    b = np.asarray(nbytes, dtype=np.int64)
    if k <= 1:
        return np.zeros_like(b)
    steps, hops = (k - 1, 2 * k - 3) if kind == "all-gather" else (2 * (k - 1), 4 * k - 6)
    return np.where(b > 0, steps * (_ceil(_ceil(b, k), bw) + 1) + hops * hop, 0)


def ring_is_faster(kind: str, nbytes, k: int, bw: int, hop: int) -> np.ndarray:
    """Elementwise: does the ring beat the direct form (strictly) for this tensor size?"""
    return ring_cycles(kind, nbytes, k, bw, hop) < direct_cycles(kind, nbytes, k, bw, hop)


def algorithm(kind: str, nbytes: int, k: int, links: tuple[int, int] | None) -> str:
    """"ring" or "direct" for one collective (module docstring); `links` = (bytes per cycle, hop cycles), None
    for direct always."""
    if links is None or k <= 2 or kind not in KINDS or nbytes <= 0:
        return "direct"
    return "ring" if bool(ring_is_faster(kind, nbytes, k, *links)) else "direct"


def collective_cycles(kind: str, nbytes, k: int, bw: int, hop: int) -> np.ndarray:
    """The time of the collective `algorithm` picks: min(direct, ring). Elementwise. The staged DP's estimate."""
    d = direct_cycles(kind, nbytes, k, bw, hop)
    return np.minimum(d, ring_cycles(kind, nbytes, k, bw, hop)) if k > 2 else d


def relay(owner: Op, phase: str, step: int, member: int) -> Op:
    """The zero-work op that receives step `step` of `owner`'s ring on member `member` (phase "rs": the
    reduce-scatter, "ag": the all-gather) and passes its chunk on."""
    return Op(f"{owner.name}@{phase}{step}#{member}", "RingStep", owner.onnx_nodes, 0)


def ring_steps(kind: str, k: int, inner: bool) -> list[str]:
    """The phase of each step of a ring: k - 1 reduce-scatter steps for an all-reduce, then k - 1 all-gather
    steps when a consumer shares the group (an all-gather ring only exists for such consumers)."""
    rs = ["rs"] * (k - 1) if kind == "all-reduce" else []
    return rs + (["ag"] * (k - 1) if inner else [])
