"""Coarsen the costed ONNX nodes into the ops of a TensorGraph and wire the bytes between them.

fused: cheap elementwise and data-movement nodes join the group of their producer. node: one op per compute
node. layer: fused groups merged into runs of the same layer, found from the exporter's name scopes
(granularity.py). An op's weights are the initializers its nodes read, through any folded constants.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import onnx

from partitioner.core.graph import Op
from partitioner.frontend.fold import Folded
from partitioner.frontend.granularity import layer_key, layer_runs
from partitioner.frontend.op_cost import ELEMENTWISE, FUSED_MOVEMENT, NodeCosts, weights_read


@dataclass
class Groups:
    """Which op each kept node belongs to: its group root (a node index; roots in order are a topological order
    of the ops), the layer name of each root that heads a layer, and the kept node producing each tensor."""
    group_of: dict[int, int]
    unit_name: dict[int, str]
    producer: dict[str, int]


def group_nodes(nodes: list, names: list[str], folded: Folded, granularity: str,
                forced: dict[int, int] | None = None) -> Groups:
    """Group the kept nodes into ops at `granularity`. `forced`: node -> the root of the group it must join (a
    mixture-of-experts layer's nodes all join its last node, at every granularity but layer: moe.py)."""
    real, sources = folded.real, folded.sources
    producer: dict[str, int] = {}
    for i in folded.kept:
        for out in nodes[i].output:
            if out:
                producer[out] = i
    group_of: dict[int, int] = {}
    for i in folded.kept:
        node = nodes[i]
        group_of[i] = i
        if forced and i in forced:
            group_of[i] = forced[i]
            continue
        if granularity == "node" or (node.op_type not in ELEMENTWISE and node.op_type not in FUSED_MOVEMENT):
            continue
        act = [real(t) for t in node.input if t and real(t) not in sources]
        groups = {group_of[producer[t]] if t in producer else None for t in act}
        if len(groups) == 1 and None not in groups:
            group_of[i] = groups.pop()
    unit_name = _merge_layers(folded.kept, names, group_of) if granularity == "layer" else {}
    return Groups(group_of, unit_name, producer)


def _merge_layers(kept: list[int], names: list[str], group_of: dict[int, int]) -> dict[int, str]:
    """Merge fused groups into runs of the same layer, in place; the layer name of each run's root."""
    fused_roots = sorted({group_of[i] for i in kept})
    keys = [layer_key(names[r]) for r in fused_roots]
    runs = layer_runs(keys)
    first: dict[int, int] = {}
    for r, u in zip(fused_roots, runs):
        first.setdefault(u, r)
    run_of_root = {r: first[u] for r, u in zip(fused_roots, runs)}
    unit_name: dict[int, str] = {}
    seen_names: set[str] = set()
    for r, u, key in zip(fused_roots, runs, keys):
        if first[u] == r and key is not None:
            name = key
            while name in seen_names:
                name += "+"
            seen_names.add(name)
            unit_name[r] = name
    for i in kept:
        group_of[i] = run_of_root[group_of[i]]
    return unit_name


def build_ops(graph: onnx.GraphProto, nodes: list, names: list[str], folded: Folded, groups: Groups,
              costs: NodeCosts, nbytes: Callable[[str], int]) -> tuple[list[Op], list[tuple[int, int, int]]]:
    """One Op per group with its summed costs and bytes, and the (src, dst, bytes) edges between ops: a tensor
    crosses an edge from the op producing it to each op reading it."""
    real, sources, group_of = folded.real, folded.sources, groups.group_of
    members: dict[int, list[int]] = defaultdict(list)
    for i in folded.kept:
        members[group_of[i]].append(i)
    roots = sorted(members)  # roots in topological order are a topological order of the groups
    op_id = {r: k for k, r in enumerate(roots)}

    consumers: dict[str, set[int]] = defaultdict(set)
    for i in folded.kept:
        for t in nodes[i].input:
            if t:
                consumers[real(t)].add(op_id[group_of[i]])
    graph_outputs = {real(o.name) for o in graph.output}

    ops: list[Op] = []
    op_weights: list[frozenset[str]] = []
    edges: dict[tuple[int, int], int] = defaultdict(int)
    for k, root in enumerate(roots):
        group = members[root]
        produced = {o for i in group for o in nodes[i].output if o}
        read = {real(t) for i in group for t in nodes[i].input if t}
        weights = frozenset().union(*(sources[t] for t in read if t in sources))
        op_weights.append(weights)
        read_bytes = weights_read(group, nodes, folded, nbytes)
        in_tensors = {t for t in read if t not in sources and t not in produced}
        out_tensors = {t for t in produced
                       if t in graph_outputs or any(c != k for c in consumers.get(t, ()))}
        for t in in_tensors:
            if t in groups.producer:
                edges[(op_id[group_of[groups.producer[t]]], k)] += nbytes(t)
        cache = sum(costs.kv.get(i, 0) for i in group)
        ops.append(Op(
            name=groups.unit_name.get(root, names[root]),
            op_type="Layer" if root in groups.unit_name else nodes[root].op_type,
            onnx_nodes=tuple(names[i] for i in group),
            flops=sum(costs.flops[i][0] for i in group), matrix_flops=sum(costs.flops[i][1] for i in group),
            weight_bytes=sum(nbytes(w) for w in weights) + cache,
            weight_read_bytes=sum(read_bytes.get(w, nbytes(w)) for w in weights) + cache,
            in_bytes=sum(nbytes(t) for t in in_tensors), out_bytes=sum(nbytes(t) for t in out_tensors),
            gemms=tuple(costs.gemms[i] for i in group if i in costs.gemms) or None, kv_cache_bytes=cache,
            window=None if root in groups.unit_name else costs.windows.get(root)))
    ops = _mark_shared_weights(ops, op_weights, nbytes)
    return ops, [(s, d, b) for (s, d), b in sorted(edges.items())]


def _mark_shared_weights(ops: list[Op], op_weights: list[frozenset[str]], nbytes) -> list[Op]:
    """Each op's initializers that another op reads too (a tied embedding and LM head), as Op.shared_weights."""
    readers = Counter(w for ws in op_weights for w in ws)
    out = []
    for op, ws in zip(ops, op_weights):
        shared = tuple(sorted((w, nbytes(w)) for w in ws if readers[w] > 1 and nbytes(w) > 0))
        out.append(replace(op, shared_weights=shared) if shared else op)
    return out
