"""TensorGraph + Hardware -> a PyG `Data` the policy reads: fixed-width features for any graph and package.

Every feature is a ratio or a log, so one policy serves 2 or 36 chiplets, 64 KiB or 64 MiB of SRAM:

node (`x`, NODE_DIM columns)
    one-hot op type over OP_VOCAB (+ "other"); log1p flops, matrix share of the flops, log1p weight and output
    bytes (all logs / 30 so they sit near [0, 1]); depth / max depth and op id / n; log1p fan-in, fan-out; the op's
    cycles as a fraction of a perfectly balanced stage (total cycles / n_chiplets), raw (clipped at 4) and log1p;
    weight bytes / one chiplet's SRAM (clipped at 4); the cumulative cycle and weight fractions before and after
    the op (where a balanced contiguous split would put it); the op's own share of all cycles; work bytes / SRAM;
    the DP stage centre (the prior below), DP stage first/last flags and the position inside the DP stage, and
    the anchor's chiplet loads around the op (its own, the previous and next chiplet's, over the busiest; a
    bottleneck flag; the op's share of its chiplet), see _anchor_columns.
edge (`edge_attr`, EDGE_DIM columns; every data edge appears in both directions)
    log1p bytes / 30; log1p(link serialisation cycles of the tensor / balanced stage cycles); 1 for the forward
    copy (producer -> consumer), 0 for the reversed copy.
graph and package (`u`, shape [1, GLOBAL_DIM])
    log n_chiplets, n_chiplets / 36, log10(total cycles / n_chiplets), total weights / total SRAM, log2 link
    bytes per cycle, log10 n_ops, total edge serialisation cycles / total cycles.
chiplets (`chip_x`, shape [n_chiplets, CHIP_DIM]; constant rows on a homogeneous package)
    SRAM / mean SRAM, MACs / mean MACs, vector ops / mean, the chiplet's total op cycles / mean of that.

`prior` ([n_ops]) is the centre of the op's stage in the DP baseline (partitioner.plan.splits.dp_partition, the optimal
contiguous split of the topological order under SRAM limits): (stage + 0.5) / n_chiplets. `with_anchor` swaps
in another assignment (fine-tuning re-centres on the best partition found so far). The decoder predicts
positions relative to it, so the untrained policy's greedy proposal is the DP split and learning spends its effort
on where to deviate. The node features also carry the DP stage position, whether the op sits at a DP stage
boundary and where it sits inside its stage.

Features are static: `graph_features` caches them per (graph, hardware) in a WeakKeyDictionary keyed on the graph
object (TensorGraph hashes by identity and is immutable), so an entry dies with its graph.
"""
from __future__ import annotations

import copy
import re
import warnings
import weakref

import numpy as np
import torch

with warnings.catch_warnings():                  # PyG's import trips torch.jit.script's deprecation notice
    warnings.simplefilter("ignore", DeprecationWarning)
    from torch_geometric.data import Data

from partitioner.model.cost import op_cycles_matrix
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.plan.splits import dp_partition

FEATURES_VERSION = 5
OP_VOCAB = ("MatMul", "Gemm", "Conv", "ConvTranspose", "Add", "Sub", "Mul", "Div", "Softmax", "LayerNormalization",
            "BatchNormalization", "Relu", "Gelu", "Sigmoid", "Tanh", "Erf", "MaxPool", "AveragePool",
            "GlobalAveragePool", "Gather", "Concat", "Reshape", "Transpose", "ReduceMean", "Pow", "Sqrt", "Split",
            "Slice", "Attention", "Embedding")
_VOCAB_INDEX = {name.lower(): i for i, name in enumerate(OP_VOCAB)}
N_TYPES = len(OP_VOCAB) + 1                       # + "other"
ANCHOR_DIM = 9                                    # the last columns of x: see _anchor_columns
NODE_DIM = N_TYPES + 17 + ANCHOR_DIM
EDGE_DIM = 3
GLOBAL_DIM = 7
CHIP_DIM = 4
_LOG_SCALE = 30.0                                 # log1p(1e13) ~ 30: keeps byte/flop logs near [0, 1]

_cache: "weakref.WeakKeyDictionary[TensorGraph, dict[Hardware, Data]]" = weakref.WeakKeyDictionary()


def op_type_index(op_type: str) -> int:
    """Vocabulary slot of an op type; fused types such as "MatMul+Add" or "Conv_Relu" use their first known
    part; anything else is "other" (the last slot)."""
    for part in re.split(r"[^A-Za-z0-9]+", op_type):
        idx = _VOCAB_INDEX.get(part.lower())
        if idx is not None:
            return idx
    return N_TYPES - 1


def graph_features(graph: TensorGraph, hw: Hardware, *, cache: bool = True) -> Data:
    """Static features of `graph` on `hw` (see the module docstring). Cached per (graph object, hw)."""
    if cache:
        per_graph = _cache.setdefault(graph, {})
        if hw not in per_graph:
            per_graph[hw] = _build(graph, hw)
        return per_graph[hw]
    return _build(graph, hw)


def clear_cache() -> None:
    _cache.clear()


def _anchor_columns(anchor: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """[n, ANCHOR_DIM] from an assignment and the op cycles [n, C] on each chiplet: stage centre (anchor + 0.5) /
    n_chiplets, first-of-run and last-of-run flags (runs of equal chiplet along the topological order), the
    position inside the run; then the loads the assignment gives: the op's chiplet, the chiplets before and after
    it (1 past either end: no room there), each over the busiest chiplet's, a flag for the busiest chiplet, and
    the op's share of its chiplet's load. The loads let a trained policy move ops off the bottleneck towards a
    lighter neighbour, which an anchor position alone cannot tell it."""
    a = np.asarray(anchor, dtype=np.int64)
    n, n_chip = a.size, cycles.shape[1]
    first = np.r_[True, a[1:] != a[:-1]]
    last = np.r_[a[1:] != a[:-1], True]
    run_start = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    run_end = np.minimum.accumulate(np.where(last, np.arange(n), n)[::-1])[::-1]
    in_run = (np.arange(n) - run_start) / np.maximum(run_end - run_start, 1)
    own = cycles[np.arange(n), a]
    load = np.bincount(a, weights=own, minlength=n_chip)
    rel = np.r_[1.0, load / max(load.max(), 1.0), 1.0]                 # padded: index c + 1 is chiplet c
    return np.stack([(a + 0.5) / n_chip, first, last, in_run, rel[a + 1], rel[a], rel[a + 2],
                     load[a] >= load.max(), own / np.maximum(load[a], 1.0)], axis=1).astype(np.float64)


def with_anchor(data: Data, assignment: np.ndarray) -> Data:
    """A copy of `data` centred on another assignment (e.g. the best found so far) instead of the DP split:
    the prior and the anchor columns of `x` change, everything else is shared."""
    cols = torch.from_numpy(_anchor_columns(assignment, data.cycles.numpy()).astype(np.float32))
    out = copy.copy(data)
    out.x = torch.cat([data.x[:, :NODE_DIM - ANCHOR_DIM], cols], dim=1)
    out.prior = cols[:, 0].contiguous()
    return out


def _dp_stages(graph: TensorGraph, hw: Hardware) -> np.ndarray:

    return np.asarray(dp_partition(graph, hw), dtype=np.int64)


def _build(graph: TensorGraph, hw: Hardware) -> Data:
    n, n_chip = graph.n_ops, hw.n_chiplets
    src, dst, nbytes = graph.edge_src, graph.edge_dst, graph.edge_bytes.astype(np.float64)

    # --- per-op costs on this package ------------------------------------------------------------------------
    cyc_matrix = op_cycles_matrix(graph, hw).astype(np.float64)          # [n, C]
    cyc = cyc_matrix.mean(axis=1)
    total_cyc = float(cyc.sum())
    stage = total_cyc / n_chip                                            # a perfectly balanced stage
    weights = graph.weight_bytes.astype(np.float64)
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=np.float64)
    total_w = float(weights.sum())
    cum_cyc = np.cumsum(cyc) / total_cyc
    cum_w = np.cumsum(weights) / total_w if total_w > 0 else np.arange(1, n + 1) / n
    dp = _dp_stages(graph, hw)
    anchor = _anchor_columns(dp, cyc_matrix)
    prior = anchor[:, 0]

    # --- node features -----------------------------------------------------------------------------------------
    onehot = np.zeros((n, N_TYPES))
    onehot[np.arange(n), [op_type_index(op.op_type) for op in graph.ops]] = 1.0
    flops = graph.flops.astype(np.float64)
    fan_in = np.bincount(dst, minlength=n)
    fan_out = np.bincount(src, minlength=n)
    depth = graph.depth.astype(np.float64)
    numeric = np.stack([
        np.log1p(flops) / _LOG_SCALE,
        graph.matrix_flops / np.maximum(flops, 1.0),
        np.log1p(weights) / _LOG_SCALE,
        np.log1p(graph.out_bytes.astype(np.float64)) / _LOG_SCALE,
        depth / max(depth.max(), 1.0),
        np.arange(n) / max(n - 1, 1),
        np.log1p(fan_in),
        np.log1p(fan_out),
        np.minimum(cyc / stage, 4.0),
        np.log1p(cyc / stage),
        np.minimum(weights / sram.mean(), 4.0),
        cum_cyc - cyc / total_cyc,
        cum_cyc,
        cum_w - (weights / total_w if total_w > 0 else 1.0 / n),
        cum_w,
        cyc / total_cyc * np.sqrt(n),                                     # share of all cycles, O(1) for any n
        np.minimum(graph.work_bytes / sram.mean(), 4.0),
    ], axis=1)
    x = np.concatenate([onehot, numeric, anchor], axis=1)

    # --- edges, both directions --------------------------------------------------------------------------------
    ser = nbytes / hw.link_bytes_per_cycle
    e_fwd = np.stack([np.log1p(nbytes) / _LOG_SCALE, np.log1p(ser / stage), np.ones_like(nbytes)], axis=1)
    e_bwd = e_fwd.copy()
    e_bwd[:, 2] = 0.0
    edge_index = np.concatenate([np.stack([src, dst]), np.stack([dst, src])], axis=1)
    edge_attr = np.concatenate([e_fwd, e_bwd], axis=0)

    # --- package and chiplets ----------------------------------------------------------------------------------
    u = np.array([[np.log(n_chip) / np.log(64.0), n_chip / 36.0, np.log10(max(stage, 1.0)) / 10.0,
                   total_w / sram.sum(), np.log2(hw.link_bytes_per_cycle) / 10.0, np.log10(max(n, 1)) / 4.0,
                   float(ser.sum()) / total_cyc]])
    macs = np.array([c.macs_per_cycle for c in hw.chiplets], dtype=np.float64)
    vec = np.array([c.vector_ops_per_cycle for c in hw.chiplets], dtype=np.float64)
    chip_total = cyc_matrix.sum(axis=0)
    chip_x = np.stack([sram / sram.mean(), macs / macs.mean(), vec / vec.mean(), chip_total / chip_total.mean()],
                      axis=1)

    def f32(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    return Data(x=f32(x), edge_index=torch.from_numpy(edge_index.astype(np.int64)), edge_attr=f32(edge_attr),
                u=f32(u), chip_x=f32(chip_x), prior=f32(prior), cycles=torch.from_numpy(cyc_matrix),
                n_chiplets=n_chip, num_nodes=n)
