"""Random layered DAGs with transformer/CNN-like cost profiles, for property tests and the training corpus."""
from __future__ import annotations

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
