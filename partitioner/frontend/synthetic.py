"""Random layered DAGs with transformer/CNN-like cost profiles, for property tests and the training corpus."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from partitioner.core.graph import Op, TensorGraph

_KINDS = (("MatMul", True), ("Conv", True), ("Add", False), ("Softmax", False), ("LayerNormalization", False))


def random_dag(n_ops: int, seed: int, *, max_fan_in: int = 3, skip_prob: float = 0.2,
               scale: float = 1.0, name: str | None = None) -> TensorGraph:
    """A connected DAG of n_ops ops in topological order.

    Each op after the first takes its main input from one of the previous few ops (a chain with short
    branches) and, with probability skip_prob, extra inputs from further back (residuals, up to max_fan_in).
    Matrix ops carry weights; `scale` multiplies every size so tests can make graphs tight or loose in memory.
    """
    if n_ops < 1:
        raise ValueError("n_ops must be >= 1")
    rng = np.random.default_rng(seed)
    ops, edges = [], {}
    for i in range(n_ops):
        op_type, matrix = _KINDS[int(rng.integers(len(_KINDS)))]
        out_bytes = int(scale * int(rng.integers(1, 64)) * 1024)
        if matrix:
            flops = int(scale * int(rng.integers(1, 200))) * 1_000_000
            weight = int(scale * int(rng.integers(1, 256)) * 1024)
            mflops = flops
        else:
            flops = int(scale * int(rng.integers(1, 50))) * 10_000
            weight, mflops = 0, 0
        preds: set[int] = set()
        if i > 0:
            preds.add(int(rng.integers(max(0, i - 3), i)))
            while len(preds) < min(max_fan_in, i) and rng.random() < skip_prob:
                preds.add(int(rng.integers(0, i)))
        for p in preds:
            edges[(p, i)] = ops[p].out_bytes
        in_bytes = sum(ops[p].out_bytes for p in preds) or out_bytes
        ops.append(Op(f"op{i}", op_type, (f"node{i}",), max(flops, 1), min(mflops, max(flops, 1)), weight,
                      in_bytes, out_bytes))
    edge_list = [(s, d, b) for (s, d), b in sorted(edges.items())]
    return TensorGraph.build(name or f"random-{n_ops}-{seed}", ops, edge_list, input_bytes=ops[0].in_bytes)


def repeated_dag(block_ops: int, count: int, seed: int, *, prefix_ops: int = 3, suffix_ops: int = 2,
                 scale: float = 1.0) -> TensorGraph:
    """A transformer-like DAG: `prefix_ops` random ops, then one random block of `block_ops` ops repeated `count`
    times (the same ops and edges in each; every block reads the previous block's last op, or the prefix's, and
    the prefix's first op, as a layer reads a mask), then `suffix_ops` ops. Ops are named by block, so only
    their costs repeat: what frontend/blocks.py finds."""
    block = random_dag(block_ops, seed, scale=scale)
    head = random_dag(prefix_ops + suffix_ops, seed + 1, scale=scale)
    ops, edges = list(head.ops[:prefix_ops]), []
    edges += [(s, d, b) for s, d, b in zip(head.edge_src.tolist(), head.edge_dst.tolist(), head.edge_bytes.tolist())
              if d < prefix_ops]
    for r in range(count):
        base = len(ops)
        ops += [replace(op, name=f"b{r}/{op.name}") for op in block.ops]
        edges += [(base + s, base + d, b) for s, d, b in
                  zip(block.edge_src.tolist(), block.edge_dst.tolist(), block.edge_bytes.tolist())]
        edges.append((base - 1, base, ops[base - 1].out_bytes if r else block.ops[0].in_bytes))
        if block_ops > 1 and prefix_ops > 1:
            edges.append((0, base + block_ops - 1, ops[0].out_bytes))
    base = len(ops)
    ops += list(head.ops[prefix_ops:])
    edges.append((base - 1, base, ops[base - 1].out_bytes))
    edges += [(base + s - prefix_ops, base + d - prefix_ops, b) for s, d, b in
              zip(head.edge_src.tolist(), head.edge_dst.tolist(), head.edge_bytes.tolist()) if s >= prefix_ops]
    return TensorGraph.build(f"repeated-{block_ops}x{count}-{seed}", ops, sorted(set(edges)),
                             input_bytes=ops[0].in_bytes)
