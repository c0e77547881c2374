"""The tensor graph every stage works on: coarse ops in topological order with exact costs.

Ops are numbered densely 0..n-1 in a topological order, so "u before v" is "u < v" and every per-op
quantity is a numpy array indexed by op id: the simulator, CP-SAT and PyG all index the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx
import numpy as np

from partitioner.core.window import Window


@dataclass(frozen=True)
class Experts:
    """The experts of a mixture-of-experts op (partitioner/frontend/moe.py): E isomorphic FFNs, each token running
    `top_k` of them. Expert parallelism splits the op by expert (partitioner/model/experts.py), so it keeps what
    each expert costs apart.

    rows: expected (token, expert) rows each expert runs per inference: tokens x top_k x its share of the routing
        (uniform 1/E by default, `--routing FILE` for measured loads); they sum to tokens x top_k. Fractional in
        decode, where one token visits top_k of E experts.
    gemms: one expert's products per row as (K, N): its M is its rows.
    row_vector_flops: one expert's vector flops per row (activation, gating, the routing weight).
    weight_bytes: one expert's weights.
    token_bytes: one row's activation, the bytes a token takes to an expert (dispatch) and back (combine).
    source: the name of the op whose output is the tokens (its edge into this op is the dispatch); None when the
        tokens are a model input.
    """

    rows: tuple[float, ...]
    top_k: int
    tokens: int
    gemms: tuple[tuple[int, int], ...]
    row_vector_flops: int
    weight_bytes: int
    token_bytes: int
    source: str | None = None

    def __post_init__(self) -> None:
        if len(self.rows) < 2 or min(self.rows) < 0 or not 1 <= self.top_k <= len(self.rows):
            raise ValueError("experts: need >= 2 experts with rows >= 0 and 1 <= top_k <= experts")
        if self.tokens < 1 or min((min(g) for g in self.gemms), default=1) < 1:
            raise ValueError("experts: tokens and GEMM dims must be >= 1")

    @property
    def count(self) -> int:
        return len(self.rows)

    @property
    def row_matrix_flops(self) -> int:
        return sum(2 * k * n for k, n in self.gemms)

    def hit(self, e: int) -> float:
        """Chance that expert e runs at all in one inference (its weights are read): each of the tokens picks it
        with probability rows / tokens (at most 1), independently."""
        return 1.0 - (1.0 - min(1.0, self.rows[e] / self.tokens)) ** self.tokens


@dataclass(frozen=True)
class Op:
    """One schedulable unit of work: an ONNX node, or several fused into one.

    flops: total floating-point operations (2 x MACs for matrix work, element counts for the rest).
    matrix_flops: the part of `flops` that runs on the matrix (MAC) unit; the rest runs on the vector unit.
    weight_bytes: bytes of initializers (parameters) this op uses; they live in the SRAM of its chiplet.
    weight_read_bytes: bytes of those weights read per inference, when less than all of them (an embedding
        Gather reads only the rows it looks up); None means all `weight_bytes`. Drives SRAM traffic and energy,
        never capacity.
    in_bytes: bytes of activations it reads (from other ops or graph inputs).
    out_bytes: bytes of activations it writes (its output tensors).
    gemms: the matrix products in it as (batch, M, K, N) tuples (an M x K by K x N product repeated `batch`
        times; a Conv in its im2col view), so the cost model can tile them on a MAC array; None (or matrix
        flops they do not cover) keeps the plain roofline of `matrix_flops`.
    kv_cache_bytes: the part of `weight_bytes` (and of the weights read) that is a decoder's KV cache: state
        stored with the op and read whole every token, counted like a weight; reports show it apart.
    shared_weights: (initializer name, bytes) of each initializer in `weight_bytes` that other ops read too (a
        tied embedding and LM head). Ops on one chiplet hold such a tensor once (partition.shared_overcount).
    experts: for a mixture-of-experts op, its experts (Experts); its flops, GEMMs and weights read count the rows
        the routing sends each expert, not every token through every expert.
    window: for an op whose first node is a Conv or a pooling window, its rows geometry (core/window.py): what a
        piece cut along output rows holds of its input (rows plus halo).
    """

    name: str
    op_type: str
    onnx_nodes: tuple[str, ...]
    flops: int
    matrix_flops: int = 0
    weight_bytes: int = 0
    in_bytes: int = 0
    out_bytes: int = 0
    weight_read_bytes: int | None = None
    gemms: tuple[tuple[int, int, int, int], ...] | None = None
    kv_cache_bytes: int = 0
    shared_weights: tuple[tuple[str, int], ...] = ()
    experts: Experts | None = None
    window: Window | None = None

    def __post_init__(self) -> None:
        for attr in ("flops", "matrix_flops", "weight_bytes", "in_bytes", "out_bytes"):
            if getattr(self, attr) < 0:
                raise ValueError(f"op {self.name}: {attr} must be >= 0")
        if self.matrix_flops > self.flops:
            raise ValueError(f"op {self.name}: matrix_flops exceeds flops")
        if self.weight_read_bytes is not None and not 0 <= self.weight_read_bytes <= self.weight_bytes:
            raise ValueError(f"op {self.name}: weight_read_bytes must be between 0 and weight_bytes")
        if self.gemms is not None:
            if any(len(g) != 4 or min(g) < 1 for g in self.gemms):
                raise ValueError(f"op {self.name}: gemms must be (batch, M, K, N) tuples of sizes >= 1")
            if sum(2 * b * m * k * n for b, m, k, n in self.gemms) > self.matrix_flops:
                raise ValueError(f"op {self.name}: gemms exceed matrix_flops")
        if not 0 <= self.kv_cache_bytes <= self.weight_bytes:
            raise ValueError(f"op {self.name}: kv_cache_bytes must be between 0 and weight_bytes")

    @property
    def weights_read(self) -> int:
        """Weight bytes read per inference."""
        return self.weight_bytes if self.weight_read_bytes is None else self.weight_read_bytes

    @property
    def work_bytes(self) -> int:
        """Activation bytes live while the op runs: its inputs and its outputs."""
        return self.in_bytes + self.out_bytes


@dataclass(frozen=True, eq=False)
class TensorGraph:
    """Ops in topological order plus the data edges between them.

    Edge k carries `edge_bytes[k]` bytes from op `edge_src[k]` to op `edge_dst[k]` (src < dst). There is at
    most one edge per ordered pair of ops. `input_bytes` is the size of the model's inputs.
    """

    name: str
    ops: tuple[Op, ...]
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_bytes: np.ndarray
    input_bytes: int = 0
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ops)
        src, dst, nbytes = (np.asarray(a, dtype=np.int64) for a in (self.edge_src, self.edge_dst, self.edge_bytes))
        if not (src.shape == dst.shape == nbytes.shape) or src.ndim != 1:
            raise ValueError("edge arrays must be 1-D and of equal length")
        if src.size and (src.min() < 0 or dst.max() >= n):
            raise ValueError("edge endpoint out of range")
        if np.any(src >= dst):
            raise ValueError("edges must go forward in topological order (src < dst)")
        if np.any(nbytes < 0):
            raise ValueError("edge bytes must be >= 0")
        if len(set(zip(src.tolist(), dst.tolist()))) != src.size:
            raise ValueError("duplicate edge")
        for arr in (src, dst, nbytes):
            arr.setflags(write=False)
        object.__setattr__(self, "edge_src", src)
        object.__setattr__(self, "edge_dst", dst)
        object.__setattr__(self, "edge_bytes", nbytes)

    @staticmethod
    def build(name: str, ops: list[Op] | tuple[Op, ...], edges: list[tuple[int, int, int]], input_bytes: int = 0,
              metadata: dict | None = None) -> "TensorGraph":
        """Build from a list of (src, dst, bytes) edges; handy for tests and synthetic graphs."""
        arr = np.asarray(edges, dtype=np.int64).reshape(-1, 3)
        return TensorGraph(name, tuple(ops), arr[:, 0], arr[:, 1], arr[:, 2], input_bytes, dict(metadata or {}))

    # --- sizes -------------------------------------------------------------------------------------------------
    @property
    def n_ops(self) -> int:
        return len(self.ops)

    @property
    def n_edges(self) -> int:
        return int(self.edge_src.size)

    # --- per-op arrays (cached; the graph is immutable) -----------------------------------------------------------
    def _column(self, attr: str) -> np.ndarray:
        arr = np.fromiter((getattr(op, attr) for op in self.ops), dtype=np.int64, count=self.n_ops)
        arr.setflags(write=False)
        return arr

    @cached_property
    def flops(self) -> np.ndarray:
        return self._column("flops")

    @cached_property
    def matrix_flops(self) -> np.ndarray:
        return self._column("matrix_flops")

    @cached_property
    def vector_flops(self) -> np.ndarray:
        arr = self.flops - self.matrix_flops
        arr.setflags(write=False)
        return arr

    @cached_property
    def weight_bytes(self) -> np.ndarray:
        return self._column("weight_bytes")

    @cached_property
    def weight_read_bytes(self) -> np.ndarray:
        """Weight bytes each op reads per inference (SRAM traffic); `weight_bytes` is what it stores."""
        return self._column("weights_read")

    @cached_property
    def gemm_table(self) -> tuple[np.ndarray, ...]:
        """Every op's GEMMs flattened: (op id, batch, M, K, N) arrays, one entry per GEMM, for the array model."""
        return _frozen_columns([(i, *g) for i, op in enumerate(self.ops) for g in (op.gemms or ())], 5)

    @cached_property
    def kv_cache_bytes(self) -> np.ndarray:
        return self._column("kv_cache_bytes")

    @cached_property
    def in_bytes(self) -> np.ndarray:
        return self._column("in_bytes")

    @cached_property
    def out_bytes(self) -> np.ndarray:
        return self._column("out_bytes")

    @cached_property
    def work_bytes(self) -> np.ndarray:
        """Activation working set of each op (inputs + outputs): the memory constraint's activation term."""
        arr = self.in_bytes + self.out_bytes
        arr.setflags(write=False)
        return arr

    @cached_property
    def has_experts(self) -> bool:
        """Some op is a mixture-of-experts op (Op.experts): the expert split and its all-to-alls apply."""
        return any(op.experts is not None for op in self.ops)

    @property
    def total_flops(self) -> int:
        return int(self.flops.sum())

    @property
    def total_weight_bytes(self) -> int:
        """Weight bytes summed per op: a tensor several ops read counts once per reader (unique_weight_bytes
        counts it once)."""
        return int(self.weight_bytes.sum())

    @cached_property
    def shared_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every op's shared weights flattened: (op id, tensor id, bytes) arrays, one entry per (op, tensor)."""
        ids: dict[str, int] = {}
        return _frozen_columns([(i, ids.setdefault(name, len(ids)), b)
                                for i, op in enumerate(self.ops) for name, b in op.shared_weights], 3)

    @property
    def unique_weight_bytes(self) -> int:
        """Weight bytes with every shared tensor counted once: what the model really stores."""
        _, tensor, nbytes = self.shared_table
        first = np.unique(tensor, return_index=True)[1]
        return self.total_weight_bytes - int(nbytes.sum()) + int(nbytes[first].sum())

    # --- structure -----------------------------------------------------------------------------------------------
    @cached_property
    def nx(self) -> nx.DiGraph:
        """A networkx view (nodes are op ids, edges carry `bytes`) for graph algorithms; do not mutate."""
        g = nx.DiGraph()
        g.add_nodes_from(range(self.n_ops))
        g.add_weighted_edges_from(zip(self.edge_src.tolist(), self.edge_dst.tolist(), self.edge_bytes.tolist()),
                                  weight="bytes")
        return nx.freeze(g)

    @cached_property
    def depth(self) -> np.ndarray:
        """Longest-path depth of each op from the sources (sources have depth 0)."""
        d = np.zeros(self.n_ops, dtype=np.int64)
        # Relax edges in order of their source: every edge into a node is seen before any edge out of it.
        order = np.argsort(self.edge_src, kind="stable")
        for s, t in zip(self.edge_src[order].tolist(), self.edge_dst[order].tolist()):
            if d[s] + 1 > d[t]:
                d[t] = d[s] + 1
        d.setflags(write=False)
        return d

    def op_index(self, name: str) -> int:
        return self._name_to_index[name]

    @cached_property
    def _name_to_index(self) -> dict[str, int]:
        return {op.name: i for i, op in enumerate(self.ops)}

    def onnx_node_owner(self) -> dict[str, int]:
        """Original ONNX node name -> id of the op it was fused into (only nodes that do compute)."""
        return {node: i for i, op in enumerate(self.ops) for node in op.onnx_nodes}


def _frozen_columns(rows: list[tuple[int, ...]], width: int) -> tuple[np.ndarray, ...]:
    """`rows` of `width` ints as `width` read-only int64 column arrays (empty columns when there are no rows)."""
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, width)
    cols = tuple(np.ascontiguousarray(arr[:, j]) for j in range(width))
    for c in cols:
        c.setflags(write=False)
    return cols
