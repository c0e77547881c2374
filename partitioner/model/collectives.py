"""How a split op's collective travels: direct sends or a ring, and the one link-time formula of each.

A k-way split op (partitioner/model/sharding.py) delivers its output to its consumers by a collective (docs/simulator.md,
"Sharding", S3 and S6):

  direct  every piece sends its slice (all-gather) or its full-size partial (all-reduce) straight to every
          consumer chiplet: k(k - 1) messages inside a group, the busiest chain link carrying floor(k/2) ceil(k/2).
  ring    the group's members pass chunks of ceil(b / k) bytes around the ring c, c+1, ..., c+k-1, c (on a chain
          the closing message k-1 -> 0 routes back over the reverse links, so every directed link carries one
          chunk per step). An all-gather takes k - 1 steps; an all-reduce is a reduce-scatter of k - 1 steps (each
          member adds the chunk it receives to its own), after which each member holds one reduced chunk, then an
          all-gather of k - 1 steps if a consumer shares the group. Consumers on other chiplets get the reduced
          chunks (all-reduce) or the slices (all-gather) directly.

An *entry ring* does the same for a tensor that enters a group from outside (docs S7): when every piece of a
k-way consumer needs the whole input, the producer sends chunk j of it to member j only (or, from a group of the
same size, piece j its slice or reduced chunk), and the members all-gather it around their ring, instead of k
copies crossing the group's entry link (`entry_is_ring`).

Each step is a *relay* op on each member (zero work, so the cost model's one-cycle minimum; the additions are not
charged, as in S3) whose inputs are its own previous step and the chunk its ring predecessor sent: so the
simulator runs a ring as ordinary ops and messages, with real contention and latency, and stays generic.

An *all-to-all* (expert parallelism, partitioner/model/experts.py) carries tokens between a group's token pieces
and its expert pieces, both ways: member i sends member j the rows of its share of the tokens that the routing
sends to j's experts (`all_to_all_bytes`), as direct messages; never a ring.

`algorithm` picks per collective the one whose uncontended time on a chain (the formulas below, used by the staged
DP too) is smaller, ties to direct: for large tensors, the ring for an all-reduce from k = 3 and for an all-gather
from k = 4; direct for k = 2 and for tensors so small that the ring's 2(k-1) hop latencies dominate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from partitioner.core.graph import Op, TensorGraph

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


def all_to_all_bytes(rows: float, token_bytes: int, parts: int) -> int:
    """The one sizing rule of an all-to-all message: `rows` (token, expert) rows of `token_bytes` each, of which the
    sender (dispatch) or receiver (combine) holds 1/`parts` of the tokens: ceil(rows x token_bytes / parts)."""
    return int(math.ceil(rows * token_bytes / max(1, parts)))


def all_to_all_cycles(rows: float, token_bytes: int, k: int, bw: int, hop: int) -> int:
    """Uncontended time of the direct all-to-all among k consecutive chiplets of a chain, each member holding 1/k of
    the tokens and one expert piece running `rows` rows (the busiest's): every member sends each other member a
    message of all_to_all_bytes(rows, token_bytes, k); the link between members m and m + 1 carries the messages of
    members 0..m to m+1..k-1, (m + 1)(k - 1 - m) of them, at most floor(k/2) ceil(k/2), and the last is one
    (k - 1)-hop route behind (the direct all-gather's shape, S3). 0 for k <= 1 or no rows."""
    msg = all_to_all_bytes(rows, token_bytes, k)
    if k <= 1 or msg <= 0:
        return 0
    return (k // 2) * ((k + 1) // 2) * -(-msg // bw) + (k - 1) * hop


def entry_direct_cycles(nbytes, k: int, bw: int, hop: int) -> np.ndarray:
    """A tensor of `nbytes` that all k members of a group need, sent to each: k copies cross the entry link."""
    b = np.asarray(nbytes, dtype=np.int64)
    return np.where(b > 0, k * _ceil(b, bw) + hop, 0)


def entry_ring_cycles(nbytes, k: int, bw: int, hop: int) -> np.ndarray:
    """The same tensor as k chunks, one per member (the tensor crosses the entry link once), then the landing
    relay's cycle and a ring all-gather among the members."""
    b = np.asarray(nbytes, dtype=np.int64)
    return np.where(b > 0, _ceil(b, bw) + hop + 1 + ring_cycles("all-gather", b, k, bw, hop), 0)


def entry_is_ring(nbytes, k: int, bw: int, hop: int) -> np.ndarray:
    """Elementwise: does an entry ring beat k copies (strictly)? From k = 2 for tensors above a few hops' worth."""
    if k <= 1:
        return np.zeros_like(np.asarray(nbytes, dtype=bool))
    return entry_ring_cycles(nbytes, k, bw, hop) < entry_direct_cycles(nbytes, k, bw, hop)


def relay(owner: Op, phase: str, step: int, member: int) -> Op:
    """The zero-work op that receives step `step` of `owner`'s ring on member `member` (phase "rs": the
    reduce-scatter, "ag": the all-gather) and passes its chunk on."""
    return Op(f"{owner.name}@{phase}{step}#{member}", "RingStep", owner.onnx_nodes, 0)


@dataclass
class Ring:
    """One ring to lay out as relay ops: the op whose tensor it carries, the group it runs on (first chiplet,
    degree), its chunk, its steps' phases, the op before which its relays go, and whether it is an entry ring.
    `base` (the id of its first relay) is set when its relays are placed."""

    owner: int
    first: int
    k: int
    chunk: int
    phases: list[str]
    before: int
    entry: bool = False
    base: int = -1

    def step(self, s: int) -> int:
        """Id of member 0's relay at step s (0-based); member j's is this + j."""
        return self.base + s * self.k

    @property
    def last(self) -> int:
        return self.step(len(self.phases) - 1)

    @property
    def reduced(self) -> int | None:
        """Member 0's relay holding its reduced chunk after the reduce-scatter (None without one)."""
        n = self.phases.count("rs")
        return self.step(n - 1) if n else None


def plan_rings(graph: TensorGraph, a: np.ndarray, k: np.ndarray, kinds: list[str], aligned: np.ndarray,
               links: tuple[int, int] | None) -> tuple[dict[int, Ring], dict[tuple, Ring]]:
    """The rings of a sharded plan: per producer, its own collective's ring when `algorithm` picks one (S6); per
    (producer, consumer group's first chiplet), an entry ring when `entry_is_ring` (S7) and the producer is whole,
    or a group of the same size whose pieces hold slices or (after its own ring's reduce-scatter) reduced chunks.
    `kinds[u]` is u's collective ("none" for whole ops)."""
    own: dict[int, Ring] = {}
    entry: dict[tuple[int, int], Ring] = {}
    if links is None:
        return own, entry
    src, dst, nb = graph.edge_src.tolist(), graph.edge_dst.tolist(), graph.edge_bytes.tolist()
    same = [bool(a[u] == a[v] and k[u] == k[v]) for u, v in zip(src, dst)]
    inner: dict[int, int] = {}
    outer: dict[int, int] = {}
    into: dict[tuple, list[int]] = {}      # (u, (first chiplet, degree)) -> [bytes, first consumer, chiplet, k]
    for e, (u, v, b) in enumerate(zip(src, dst, nb)):
        if aligned[e]:
            continue
        if k[u] > 1:
            side = inner if same[e] else outer
            side[u] = max(side.get(u, 0), b)
        if k[v] > 1 and not same[e]:
            key = (u, (int(a[v]), int(k[v])))
            got = into.setdefault(key, [0, v, int(a[v]), int(k[v])])
            got[0], got[1] = max(got[0], b), min(got[1], v)
    out_edges: dict[int, list[int]] = {}
    for e, u in enumerate(src):
        out_edges.setdefault(u, []).append(e)
    for u in sorted(set(inner) | set(outer)):
        ku, kind = int(k[u]), kinds[u]
        carried = max(inner.get(u, 0), outer.get(u, 0)) if kind == "all-reduce" else inner.get(u, 0)
        if algorithm(kind, carried, ku, links) != "ring":
            continue
        phases = (["rs"] * (ku - 1) if kind == "all-reduce" else []) + (["ag"] * (ku - 1) if u in inner else [])
        firsts = [dst[e] for e in out_edges[u] if not aligned[e] and (kind == "all-reduce" or same[e])]
        own[u] = Ring(u, int(a[u]), ku, -(-carried // ku), phases, min(firsts))
    for (u, key), (b, v0, c, kv) in sorted(into.items()):
        ku = int(k[u])
        partial = kinds[u] == "all-reduce"
        usable = ku == 1 or (ku == kv and (not partial or (u in own and own[u].reduced is not None)))
        if usable and bool(entry_is_ring(b, kv, *links)):
            entry[(u, key)] = Ring(u, c, kv, -(-b // kv), ["in"] + ["ag"] * (kv - 1), v0, entry=True)
    return own, entry


def ring_edges(ring: Ring, sources: list[int]) -> list[tuple[int, int, int]]:
    """The edges of a placed ring: member j's first step takes sources[j] (its own piece, or what lands on it), and
    step s on member j takes its own step s - 1 and its ring predecessor's (j - 1 mod k), a chunk apart."""
    k, c = ring.k, ring.chunk
    edges = [(sources[j], ring.step(0) + j, c) for j in range(k)]
    if not ring.entry:      # a producer ring's first step also takes its predecessor's piece
        edges += [(sources[(j - 1) % k], ring.step(0) + j, c) for j in range(k)]
    for s in range(1, len(ring.phases)):
        prev, here = ring.step(s - 1), ring.step(s)
        edges += [(prev + j, here + j, c) for j in range(k)]
        edges += [(prev + (j - 1) % k, here + j, c) for j in range(k)]
    return edges
