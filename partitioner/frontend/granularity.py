"""The unit of partitioning: fused ops (default), one unit per ONNX compute node, or repeated blocks (layers).

Layers are found from the name scopes exporters write into node names: the torch exporters name a node after
its module path ("/model/layers.3/self_attn/q_proj/MatMul", "/transformer/h.0/attn/MatMul",
"/bert/encoder/layer.11/output/dense/MatMul", "/layer2/layer2.1/conv1/Conv"). A node's layer is the path up to
the first scope that ends in a list index (".N" or "_N", or a scope that is a bare number); the op's own name
(the last segment) never counts. No model-specific names are matched.
"""
from __future__ import annotations

import re

GRANULARITIES = ("fused", "node", "layer")
_INDEXED = re.compile(r"(?:[._]\d+|^\d+)$")


def layer_key(node_name: str) -> str | None:
    """The repeated block a node belongs to, or None (embeddings, heads, unnamed nodes)."""
    scopes = node_name.split("/")[:-1]
    for j, scope in enumerate(scopes):
        if scope and _INDEXED.search(scope):
            return "/".join(scopes[:j + 1])
    return None


def layer_runs(keys: list[str | None]) -> list[int]:
    """Unit index of each fused group, given the groups' layer keys in topological order.

    A unit is a run of consecutive groups with the same key, so units are contiguous in a topological order
    and the unit graph stays acyclic whatever the names say. A group without a key between two groups of the
    same layer joins that layer (a residual Add the exporter left unscoped); other unkeyed runs (embeddings,
    the head) are units of their own.
    """
    filled = list(keys)
    nxt: str | None = None
    following = [None] * len(keys)
    for j in range(len(keys) - 1, -1, -1):
        following[j] = nxt
        if keys[j] is not None:
            nxt = keys[j]
    prev: str | None = None
    for j, k in enumerate(keys):
        if k is None and prev is not None and following[j] == prev:
            filled[j] = prev
        if k is not None:
            prev = k
    unit, out = -1, []
    for j, k in enumerate(filled):
        if j == 0 or k != filled[j - 1]:
            unit += 1
        out.append(unit)
    return out
