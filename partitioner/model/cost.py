"""The cost model shared by the simulator and the solver: op cycles (roofline), transfer cycles, energy.

All times are integer cycles of the package clock. See docs/simulator.md for the rules and a worked example.
"""
from __future__ import annotations

import functools

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, MemoryStack
from partitioner.hw.levels import level_of
from partitioner.model import collectives
from partitioner.model.kind_bound import balanced_cycles
from partitioner.model.sharding import piece, possible_axes


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-np.asarray(a, dtype=np.int64) // int(b))


def gemm_cycles(batch, m, k, n, rows: int, cols: int, dataflow: str = "os", cores: int = 1) -> np.ndarray:
    """Cycles of `batch` M x K by K x N products on `cores` rows x cols systolic arrays (docs/simulator.md, R2a).

    The dataflow maps two GEMM dims onto the array (spatial) and streams the third through it (temporal T):
    os: M x N outputs stay, T = K; ws: K x N weights stay, T = M; is: K x M inputs stay, T = N. The spatial
    dims are cut into ceil(Sr/rows) x ceil(Sc/cols) folds (tile quantisation: a partial fold costs a full one),
    and each fold takes T + rows + cols - 2 cycles (fill and drain of the skewed wavefront), plus `rows` cycles
    to preload the stationary operand under ws and is. The folds are dealt out to the cores, ceil(folds / cores)
    rounds (a GPU's SMs each take output tiles). With one core, under os, this is SCALE-Sim 3.0's count.
    """
    b, m, k, n = (np.asarray(x, dtype=np.int64) for x in (batch, m, k, n))
    sr, sc, t = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]
    folds = b * _ceil_div(sr, rows) * _ceil_div(sc, cols)
    return _ceil_div(folds, cores) * (t + rows + cols - 2 + (0 if dataflow == "os" else rows))


def compute_cycles(graph: TensorGraph, chiplet: Chiplet) -> np.ndarray:
    """Matrix work on the MAC arrays plus vector work on the vector unit, per op, at the graph's precision
    (chiplet.macs_for: MACs/cycle). At a rate r x the array's size each PE does r MACs of the reduction a cycle
    (as tensor cores' fp8 MMA takes twice bf16's K), so a GEMM's K counts as ceil(K / r); its known GEMMs are tiled
    on the arrays (gemm_cycles) and matrix flops outside them run at the full rate (2 flops per MAC)."""
    rate = chiplet.macs_for(graph.metadata.get("precision"))
    op_id, b, m, k, n = graph.gemm_table
    tiled = np.zeros(graph.n_ops, dtype=np.int64)
    rest = np.asarray(graph.matrix_flops, dtype=np.int64).copy()
    if op_id.size:
        rows, cols = chiplet.array_shape
        k_eff = _ceil_div(np.asarray(k, dtype=np.int64) * chiplet.macs_per_cycle, rate)
        np.add.at(tiled, op_id, gemm_cycles(b, m, k_eff, n, rows, cols, chiplet.dataflow, chiplet.cores))
        np.subtract.at(rest, op_id, 2 * b * m * k * n)
    return tiled + _ceil_div(rest, 2 * rate) + _ceil_div(graph.vector_flops, chiplet.vector_ops_per_cycle)


def memory_cycles(graph: TensorGraph, chiplet: Chiplet) -> np.ndarray:
    """SRAM traffic per op: the weights it reads, its inputs and its outputs each cross the SRAM port once."""
    return _ceil_div(graph.weight_read_bytes + graph.in_bytes + graph.out_bytes, chiplet.sram_bytes_per_cycle)


def op_cycles(graph: TensorGraph, chiplet: Chiplet) -> np.ndarray:
    """Roofline: an op takes the longer of its compute and its SRAM traffic, and at least one cycle."""
    return np.maximum(np.maximum(compute_cycles(graph, chiplet), memory_cycles(graph, chiplet)), 1)


def op_cycles_matrix(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """cycles[op, chiplet]; columns repeat for identical chiplets, so each kind is computed once."""
    by_kind: dict[Chiplet, np.ndarray] = {}
    for c in hw.chiplets:
        if c not in by_kind:
            by_kind[c] = op_cycles(graph, c)
    cols = [by_kind[c] for c in hw.chiplets]
    return np.stack(cols, axis=1)


def bound_cycles_per_inference(graph: TensorGraph, hw: Hardware) -> float:
    """Analytical lower bound on cycles per inference (perfect balance, free communication): max(the ops' work
    balanced over the chiplet kinds at each kind's rate (kind_bound.balanced_cycles; sum of op cycles / n_chiplets on
    a homogeneous package), the largest op on its fastest chiplet)."""
    if graph.n_ops == 0:
        return 1.0
    kinds = list(dict.fromkeys(hw.chiplets))
    work = np.stack([op_cycles(graph, c) for c in kinds], axis=1).astype(float)
    counts = np.array([hw.chiplets.count(c) for c in kinds])
    return max(balanced_cycles(work, counts), float(work.min(axis=1).max()), 1.0)


def serialization_cycles(nbytes: int | np.ndarray, hw: Hardware) -> np.ndarray:
    """Cycles a tensor occupies one link: its bytes over the link bandwidth. With several link classes (levels),
    over the fastest one: the least any link is held, so every bound built on it stays a lower bound."""
    return _ceil_div(nbytes, hw.fastest_link_bytes_per_cycle)


def next_stage_bytes_per_cycle(hw: Hardware, chiplet: int) -> int:
    """The bandwidth a pipeline stage on `chiplet` ships its cut outputs at, in the DP's estimate: the slowest link
    on the route to chiplet + 1 (a package's last chiplet: the package-to-package link); on a flat package, and for
    the last chiplet, the link bandwidth."""
    if hw.package_level is None or chiplet + 1 >= hw.n_chiplets:
        return hw.link_bytes_per_cycle if hw.package_level is None else hw.fastest_link_bytes_per_cycle
    return min(hw.link_bw[k] for k in hw.route(chiplet, chiplet + 1))


def route_holds(nbytes: int, route: tuple[int, ...], hw: Hardware) -> tuple[int, ...]:
    """Cycles a tensor of nbytes holds each link of a route: ceil(bytes / that link's bandwidth)."""
    bw = hw.link_bw
    return tuple(-(-int(nbytes) // bw[k]) for k in route)


def route_transfer_cycles(nbytes: int, route: tuple[int, ...], hw: Hardware) -> int:
    """Uncontended transfer time over a route of mixed links: each link's latency, plus the slowest link's
    serialisation once (cut-through: the tail moves at the slowest link's pace). On one class of links it is
    transfer_cycles(nbytes, len(route), hw)."""
    if not route or nbytes == 0:
        return 0
    lat = hw.link_latency
    return int(sum(lat[k] for k in route) + max(route_holds(nbytes, route, hw)))


def transfer_cycles(nbytes: int, hops: int, hw: Hardware) -> int:
    """Uncontended transfer time: per-hop latency on each hop plus serialisation once (cut-through routing)."""
    if hops == 0 or nbytes == 0:
        return 0
    return int(hops * hw.hop_latency_cycles + serialization_cycles(nbytes, hw))


def compute_energy_pj(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> tuple[float, float]:
    """(compute, SRAM) energy in pJ of one inference under an assignment."""
    compute = sram = 0.0
    a = np.asarray(assignment)
    for c, chip in enumerate(hw.chiplets):
        mask = a == c
        if not mask.any():
            continue
        compute += float(graph.matrix_flops[mask].sum()) / 2 * chip.mac_pj \
            + float(graph.vector_flops[mask].sum()) * chip.vector_op_pj
        traffic = graph.weight_read_bytes[mask] + graph.in_bytes[mask] + graph.out_bytes[mask]
        sram += float(traffic.sum()) * chip.sram_pj_per_byte
    return compute, sram


def link_energy_pj(nbytes: int, hops: int, hw: Hardware) -> float:
    return float(nbytes) * 8.0 * hops * hw.link_pj_per_bit


def route_energy_pj(nbytes: int, route: tuple[int, ...], hw: Hardware) -> float:
    """Energy of nbytes crossing a route: bits x each link's own pJ/bit (link_energy_pj on a flat package)."""
    if hw.package_level is None:
        return link_energy_pj(nbytes, len(route), hw)
    pj = hw.link_pj
    return float(nbytes) * 8.0 * sum(pj[k] for k in route)


# --- memory tier (docs/simulator.md, "Streamed weights") -------------------------------------------------------------
def stream_bytes(graph: TensorGraph, batch: int = 1) -> np.ndarray:
    """Bytes each op reads from its memory stack per batch of `batch` inferences if its weights stream:
    min(weight_bytes, batch x weights read per inference). A weight matrix is read once per batch; an embedding
    table only for the rows the batch looks up, never more than the whole table."""
    return np.minimum(graph.weight_bytes, int(batch) * graph.weight_read_bytes)


def stream_cycles(nbytes: int, stack: MemoryStack, hops: int, hw: Hardware) -> int:
    """Uncontended time of one stream read: the stack's latency, then per-hop latency on each NoC hop from the
    stack's attached chiplet to the consumer, and the slower of the stack's (at its sustained rate) and (if any
    hop) a link's serialisation (cut-through: the tail moves at the slowest resource's pace)."""
    if nbytes == 0:
        return 0
    ser = -(-int(nbytes) // stack.sustained_bytes_per_cycle)
    if hops:
        ser = max(ser, int(serialization_cycles(nbytes, hw)))
    return int(stack.latency_cycles + hops * hw.hop_latency_cycles + ser)


def stream_energy_pj(nbytes: int, stack: MemoryStack, hops: int, hw: Hardware,
                     route: tuple[int, ...] | None = None) -> float:
    """Energy of one stream read: the stack's access energy per byte plus the links it crosses (`route`, when
    given, charges each link its own class's energy)."""
    links = link_energy_pj(nbytes, hops, hw) if route is None else route_energy_pj(nbytes, route, hw)
    return float(nbytes) * stack.pj_per_byte + links
# --- sharded ops (partitioner/model/sharding.py) ---------------------------------------------------------------------------
def sharded_op_cycles(graph: TensorGraph, chiplet: Chiplet, k: int, axes: tuple[str, ...] | None = None
                      ) -> np.ndarray:
    """Cycles of one piece of each op split k ways (sharding.piece, along `axes` per op or each op's own), on
    `chiplet`; k = 1 is `op_cycles`."""
    if k <= 1:
        return op_cycles(graph, chiplet)
    ops = [piece(op, k, None if axes is None else axes[i]) for i, op in enumerate(graph.ops)]
    return op_cycles(TensorGraph.build(graph.name, ops, [], metadata=graph.metadata), chiplet)


@functools.lru_cache(maxsize=64)
def cheapest_piece_cycles(graph: TensorGraph, chiplet: Chiplet, k: int) -> np.ndarray:
    """The fewest cycles of a k-way piece of each op over every axis it may take (sharding.possible_axes: its
    own, and at most one alternative). Memoised (graph by identity, chiplet by value; read-only): the bounds of
    every cap up to max_shard ask for the same degrees."""
    own = sharded_op_cycles(graph, chiplet, k)
    out = own if k <= 1 else np.minimum(own, sharded_op_cycles(graph, chiplet, k, tuple(
        possible_axes(op)[-1] for op in graph.ops)))
    out = np.array(out)
    out.setflags(write=False)
    return out


def all_gather_cycles(nbytes: int, k: int, hw: Hardware) -> int:
    """Uncontended time of the direct all-gather of an `nbytes` output among k consecutive chiplets of a chain:
    every piece sends its ceil(nbytes / k) slice to each other member; the link between members m and m + 1
    carries the slices of members 0..m bound for m+1..k-1, (m + 1)(k - 1 - m) of them, at most
    floor(k/2) ceil(k/2); the last slice is one (k - 1)-hop route behind (collectives.direct_cycles)."""
    return int(collectives.direct_cycles("all-gather", int(nbytes), k, *ring_links(hw)))


def ring_links(hw: Hardware) -> tuple[int, int]:
    """(link bytes per cycle, hop cycles): what sharding.expand needs to pick ring or direct collectives
    (collectives.algorithm) on `hw`."""
    return int(hw.link_bytes_per_cycle), int(hw.hop_latency_cycles)


def group_links(hw: Hardware, first: int, k: int) -> tuple[int, int]:
    """(link bytes per cycle, hop cycles) a collective among the k chiplets first..first+k-1 is timed at: a group
    inside one package, its die-to-die links (ring_links); a group whose span crosses units of level L
    (levels.level_of its first and last chiplets) has links of every class up to L on its ring, and a ring or
    direct collective waits on its slowest: the least bandwidth and the longest hop of those classes."""
    top = level_of(first, first + k - 1, hw.spans) if k > 1 else 0
    if top == 0:
        return ring_links(hw)
    classes = hw.link_classes[:top + 1]
    return min(c.bytes_per_cycle for c in classes), max(c.hop_latency_cycles for c in classes)


def may_group(hw: Hardware, first: int, k: int) -> bool:
    """Whether the k chiplets first..first+k-1 may form one group (one stage's tensor-parallel group): a group never
    straddles a slow level boundary, i.e. every level its span crosses has links of at least the die-to-die
    bandwidth (docs/hardware.md, "Levels"). Inside one package always."""
    top = level_of(first, first + k - 1, hw.spans) if k > 1 else 0
    return all(c.bytes_per_cycle >= hw.link_bytes_per_cycle for c in hw.link_classes[1:top + 1])


def collective_cycles(kind: str, nbytes, k: int, hw: Hardware, first: int | None = None) -> np.ndarray:
    """Uncontended time of a k-way all-gather or all-reduce of `nbytes` on a chain under the algorithm the
    simulator picks (collectives.collective_cycles: min of direct and ring), at the links of the group from `first`
    (group_links; None: the die-to-die links). Elementwise; the staged DP's cost."""
    links = ring_links(hw) if first is None else group_links(hw, first, k)
    return collectives.collective_cycles(kind, nbytes, k, *links)


@functools.lru_cache(maxsize=16)
def keep_column(hw: Hardware, precision: str | None = None):
    """The rules S8 and S9 (docs/simulator.md): whether an op keeps its own split axis over its alternative on a
    chiplet. S8, a weight GEMM: keep_column(op, k, chiplet) is True when its k-way column piece is strictly faster
    on that chiplet than its row_parallel piece, so the GEMM stays a column split (its input slices all-gathered)
    instead of Megatron's row-parallel one. On a systolic array a row_parallel piece keeps every output tile and
    only shortens the streamed K, paying the fill and drain once per tile; a column piece has 1/k of the tiles.
    S9, a Conv: True when its out_channel piece is no slower than its spatial one (1/k of the output pixels, all
    the filters); 64 channels cut 4 ways fill a quarter of a 64-wide array, 3,136 pixels cut 4 ways fill it. Where
    only one of the two pieces' activations (inputs + outputs, S11) fit the chiplet's SRAM, the Conv takes that one:
    an out_channel piece holds its whole input, a spatial piece its rows plus halo.
    Memoised per (op, k, chiplet kind); costed at `precision` (the graph's, metadata["precision"]). One rule per
    (hardware, precision), so its memo and its identity (sharding.expand's cache key) last across calls."""
    seen: dict = {}

    def rule(op, k: int, chiplet: int) -> bool:
        chip = hw.chiplets[chiplet]
        key = (op, k, chip)
        if key not in seen:
            conv = op.op_type == "Conv"
            own, alt = ("out_channel", "spatial") if conv else ("column", "row_parallel")
            pair = TensorGraph.build(op.name, [piece(op, k, own), piece(op, k, alt)], [],
                                     metadata={"precision": precision})
            mine, other = op_cycles(pair, chip).tolist()
            fits = (pair.work_bytes <= chip.sram_bytes).tolist()
            # ties: a Conv keeps out_channel (1/k of the filters), a GEMM takes Megatron's row_parallel
            seen[key] = fits[0] if conv and fits[0] != fits[1] else mine <= other if conv else mine < other
        return seen[key]
    return rule


@functools.lru_cache(maxsize=16)
def sharded_bound_cycles(graph: TensorGraph, hw: Hardware, max_shard: int) -> float:
    """Lower bound on cycles per inference of any partition whose ops split at most `max_shard` ways (free
    communication): max(the ops' least chiplet-cycles (k x piece over k <= max_shard) balanced over the chiplet kinds
    (kind_bound.balanced_cycles: sum / n_chiplets on a homogeneous package), the largest op's smallest piece). Equals bound_cycles_per_inference for max_shard = 1. Memoised (graph by
    identity, hardware by value): every simulation of a split plan reports it, and search loops simulate
    thousands of plans of one (graph, package)."""
    if graph.n_ops == 0:
        return 1.0
    max_shard = max(1, min(int(max_shard), hw.n_chiplets))
    kinds = list(dict.fromkeys(hw.chiplets))
    work = np.full((graph.n_ops, len(kinds)), np.inf)     # least chiplet-cycles of each op on each kind
    longest = np.full(graph.n_ops, np.inf)
    for k in range(1, max_shard + 1):
        cyc = np.stack([cheapest_piece_cycles(graph, c, k) for c in kinds], axis=1).astype(float)
        work, longest = np.minimum(work, k * cyc), np.minimum(longest, cyc.min(axis=1))
    counts = np.array([hw.chiplets.count(c) for c in kinds])
    return max(balanced_cycles(work, counts), float(longest.max()), 1.0)
