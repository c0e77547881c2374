"""Find the mixture-of-experts layers of an imported graph: a router, top-k, and E expert FFNs.

Two forms are recognised (docs/onnx_import.md, "Mixture of experts"):

- the com.microsoft `MoE` contrib op (onnxruntime-genai's builder): one node holds the router's softmax and top-k,
  every expert's weights and the weighted combine;
- plain torch, exported by either exporter: a router GEMM whose [tokens, E] output reaches a `TopK`, and E
  parallel expert branches that read the router's input (directly: dense masking; or through a Gather of the
  routed rows: sparse dispatch with NonZero/Gather/ScatterND) and whose outputs are summed (an Add chain, or a
  chain of scatter-adds).

A torch-form block is found structurally, on the costed nodes:
1. the router: a TopK whose input comes (through non-GEMM nodes: softmax, casts) from a weight GEMM with N = E;
   its activation input, traced up through data movement, is the block's input x;
2. the first-layer expert GEMMs: the other weight GEMMs whose activation input traces up to x the same way;
3. the experts: each later weight GEMM is reached from some of the first-layer GEMMs; the smallest of those sets
   (w2 reached from w1 and w3) are the experts, and E of them with one shape signature must be found;
4. an expert's branch: the nodes reached from its first-layer GEMMs only, plus the nodes upstream that serve only it
   (its NonZero, its Gather of rows, its slice of the gates); the merge: the elementwise and scatter nodes after
   them that read only the block. Exactly one tensor may leave the block.
Anything else (a block that does not close, a count other than E) is left as ordinary ops with a warning.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import onnx
import onnx.numpy_helper

from partitioner.frontend.fold import Folded
from partitioner.frontend.op_cost import NodeCosts

_GEMMS = {"MatMul", "Gemm"}
# Data movement between a block's input and an expert's first GEMM (the sparse form's Gather of routed rows).
_MOVE = {"Gather", "GatherND", "GatherElements", "Reshape", "Squeeze", "Unsqueeze", "Slice", "Expand", "Transpose",
         "Flatten", "Cast", "Identity", "Index", "Tile"}
# What the merge of the experts' outputs may be made of: sums, weights, scatters and views; never a GEMM.
_MERGE = {"Add", "Sum", "Mul", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Expand",
          "ScatterND", "ScatterElements", "Scatter", "Concat", "Slice", "Gather", "Where"}


@dataclass(frozen=True)
class Block:
    """One mixture-of-experts layer among the ordered nodes: its nodes (all become one op), the node whose output
    leaves it (`root`), per expert its branch nodes and their rows as imported, the router GEMM (None for the
    contrib op), the expert count and top-k, and the block's input tensor."""

    nodes: frozenset[int]
    root: int
    branches: tuple[frozenset[int], ...]
    router: int | None
    experts: int
    top_k: int
    x: str
    contrib: bool = False


def is_contrib_moe(node) -> bool:
    return node.op_type == "MoE" and node.domain == "com.microsoft"


def bound_routed_counts(inferred: onnx.ModelProto) -> None:
    """Shapes of a routing that shape inference leaves symbolic, fixed in place in every shape that carries them:
    - a OneHot's depth (the expert count) read from its constant depth input (the legacy exporter's
      F.one_hot(chosen, E));
    - a NonZero over a top-k routing mask (its input computed from a TopK) counts the rows routed to one expert,
      which only the data decides: its count takes its upper bound, the mask's element count. The block's costs
      are then rescaled to the routing distribution (moe_cost.py); other NonZeros keep their unknown size (an
      error that says so)."""
    g = inferred.graph
    infos = {vi.name: vi for vi in list(g.input) + list(g.value_info) + list(g.output)}
    producer = {o: n for n in g.node for o in n.output if o}
    values = _constants(g)
    for kind in ("OneHot", "NonZero"):
        fixed: dict[str, int] = {}
        for n in g.node:
            if n.op_type != kind or not n.output or n.output[0] not in infos:
                continue
            if kind == "OneHot" and len(n.input) > 1 and n.input[1] in values:
                size = int(values[n.input[1]])
            elif kind == "NonZero" and _from_topk(n.input[0], producer) and None not in (_dims(infos.get(n.input[0]))
                                                                                         or [None]):
                size = 1
                for d in _dims(infos[n.input[0]]):
                    size *= d
            else:
                continue
            for d in infos[n.output[0]].type.tensor_type.shape.dim:
                if d.dim_param:
                    fixed[d.dim_param] = size
        for vi in infos.values():
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
                for d in vi.type.tensor_type.shape.dim:
                    if d.dim_param in fixed:
                        d.dim_value = fixed[d.dim_param]


def _constants(g: onnx.GraphProto) -> dict[str, float]:
    """Scalar (or one-element) values of Constant nodes and inline initializers, by tensor name."""
    out: dict[str, float] = {}
    tensors = [(t.name, t) for t in g.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    tensors += [(n.output[0], a.t) for n in g.node if n.op_type == "Constant" and n.output
                for a in n.attribute if a.name == "value"]
    for name, t in tensors:
        if len(t.dims) <= 1 and (not t.dims or t.dims[0] == 1):
            try:
                out[name] = float(onnx.numpy_helper.to_array(t).reshape(-1)[0])
            except (ValueError, IndexError, TypeError):
                continue
    return out


def _dims(vi) -> list | None:
    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _from_topk(tensor: str, producer: dict) -> bool:
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        node = producer.get(t)
        if node is None or t in seen:
            continue
        seen.add(t)
        if node.op_type == "TopK":
            return True
        stack.extend(x for x in node.input if x)
    return False


def find_blocks(nodes: list, names: list[str], folded: Folded, shapes: dict, costs: NodeCosts,
                outputs: set[str]) -> list[Block]:
    """Every mixture-of-experts layer (module docstring), in node order. `outputs`: the graph's output tensors."""
    real, sources = folded.real, folded.sources
    producer = {real(o): i for i in folded.kept for o in nodes[i].output if o}
    blocks = [_contrib_block(i, nodes[i], shapes, real) for i in folded.kept if is_contrib_moe(nodes[i])]
    weight = {i: _activation(nodes[i], real, sources) for i in folded.kept
              if nodes[i].op_type in _GEMMS and i in costs.gemms}
    weight = {i: x for i, x in weight.items() if x is not None}
    base = {i: _base(x, producer, nodes, real) for i, x in weight.items()}
    for t in folded.kept:
        if nodes[t].op_type != "TopK" or not nodes[t].output:
            continue
        router = _router(t, nodes, producer, weight, costs, shapes, real)
        if router is None:
            continue
        e, k = router[1], router[2]
        first = [i for i in weight if i != router[0] and base[i] == base[router[0]]]
        if len(first) < 2:      # a top-k over a head's scores (sampling), not a router of experts
            continue
        found = _close(nodes, names, folded, producer, weight, costs, outputs, first, e, router[0])
        if found is not None:
            nodes_s, root, branches = found
            blocks.append(Block(nodes_s, root, branches, router[0], e, k, weight[router[0]]))
    return sorted(blocks, key=lambda b: b.root)


def _contrib_block(i: int, node, shapes: dict, real) -> Block:
    fc1 = shapes.get(real(node.input[2])) if len(node.input) > 2 else None
    k = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "k"), 1)
    return Block(frozenset([i]), i, (frozenset([i]),), None, int(fc1[0]) if fc1 else 1, int(k), real(node.input[0]),
                 contrib=True)


def _activation(node, real, sources) -> str | None:
    """The activation operand of a GEMM with a weight (an initializer-derived operand of rank 2), else None."""
    ins = [real(t) for t in node.input[:2] if t]
    if len(ins) != 2:
        return None
    consts = [t in sources and bool(sources[t]) for t in ins]
    if consts == [False, True]:
        return ins[0]
    if consts == [True, False]:
        return ins[1]
    return None


def _base(tensor: str, producer: dict, nodes: list, real) -> str:
    """The tensor reached walking up data-movement nodes along their data input: what a Gather of rows reads."""
    seen = set()
    while tensor in producer and tensor not in seen:
        seen.add(tensor)
        node = nodes[producer[tensor]]
        if node.op_type not in _MOVE or not node.input:
            break
        tensor = real(node.input[0])
    return tensor


def _router(topk: int, nodes: list, producer: dict, weight: dict, costs: NodeCosts, shapes: dict, real
            ) -> tuple[int, int, int] | None:
    """(router GEMM, E, k) of a TopK over a [tokens, E] routing score, or None."""
    node = nodes[topk]
    score, values = shapes.get(real(node.input[0])), shapes.get(node.output[0])
    if not score or not values or None in score or None in values:
        return None
    e, k = int(score[-1]), int(values[-1])
    if e < 2 or not 1 <= k < e:
        return None
    stack, seen = [real(node.input[0])], set()
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in seen:
            continue
        seen.add(i)
        if i in weight:
            return (i, e, k) if costs.gemms[i][3] == e else None
        if nodes[i].op_type not in _GEMMS:
            stack.extend(real(t) for t in nodes[i].input if t)
    return None


def _close(nodes, names, folded: Folded, producer: dict, weight: dict, costs: NodeCosts, outputs: set[str],
           first: list[int], e: int, router: int):
    """(block nodes, root, branch nodes per expert) for the first-layer GEMMs `first` of a router with e experts,
    or None (with a warning where a router was found but its experts were not)."""
    real = folded.real
    order = folded.kept
    consumers: dict[int, set[int]] = {i: set() for i in order}
    readers: dict[str, set[int]] = {}
    for i in order:
        for t in nodes[i].input:
            if t and real(t) in producer:
                consumers[producer[real(t)]].add(i)
                readers.setdefault(real(t), set()).add(i)
    bit = {g: 1 << j for j, g in enumerate(first)}
    reach: dict[int, int] = {}
    for i in order:
        r = bit.get(i, 0)
        for t in nodes[i].input:
            if t and real(t) in producer:
                r |= reach.get(producer[real(t)], 0)
        reach[i] = r
    everything = (1 << len(first)) - 1
    later = {reach[g] for g in weight if g not in bit and g != router and reach[g] and reach[g] != everything}
    sets = [m for m in later if not any(o != m and o & m == o for o in later)]
    covered = 0
    for m in sets:
        covered |= m
    sets += [b for b in bit.values() if not b & covered]
    by_sig: dict[tuple, list[int]] = {}
    for m in sets:
        sig = tuple(sorted(costs.gemms[g][2:] for g in order if g in weight and reach[g] and reach[g] & ~m == 0))
        by_sig.setdefault(sig, []).append(m)
    masks = next((ms for ms in by_sig.values() if len(ms) == e and _disjoint(ms)), None)
    if masks is None:
        warnings.warn(f"router '{names[router]}' scores {e} experts but {len(sets)} expert branches of "
                      f"{len(by_sig)} shapes were found after it; costing its layer as ordinary ops", stacklevel=4)
        return None
    block_of = {}
    for j, m in enumerate(masks):
        for i in order:
            if reach[i] and reach[i] & ~m == 0:
                block_of[i] = j
    multi = {i for i in order if sum(1 for m in masks if reach[i] & m) >= 2}
    feeds: dict[int, int] = {}
    for i in reversed(order):
        f = 0
        for c in consumers[i]:
            f |= feeds.get(c, 0) | (1 << block_of[c] if c in block_of else 0)
        feeds[i] = f
    # The merge and the nodes upstream that serve one expert only depend on each other (an expert's row indices
    # feed its Gather and its scatter-add): start from every merge candidate and shrink both to a fixpoint.
    candidates = [i for i in order if i in multi and i not in block_of and nodes[i].op_type in _MERGE]
    merge = set(candidates)
    while True:
        inside = set(block_of) | merge
        upstream: dict[int, int] = {}
        for i in reversed(order):
            f = feeds[i]
            if i in inside or f == 0 or f & (f - 1) or not consumers[i] or i == router:
                continue
            if all(c in inside or c in upstream for c in consumers[i]):
                upstream[i] = f.bit_length() - 1
        known = set(block_of) | set(upstream)
        kept = set()
        for i in candidates:
            if all(producer.get(real(t)) in known for t in nodes[i].input if t and real(t) not in folded.sources):
                kept.add(i)
                known.add(i)
        if kept == merge:
            break
        merge = kept
    members = set(block_of) | set(upstream) | merge
    leaving = {real(o) for i in members for o in nodes[i].output if o and (
        readers.get(real(o), set()) - members or real(o) in outputs)}
    root = max(members)
    if len(leaving) != 1 or producer.get(next(iter(leaving))) != root:
        warnings.warn(f"the {e} experts after router '{names[router]}' do not merge into one tensor; costing "
                      "its layer as ordinary ops", stacklevel=4)
        return None
    branches = [set() for _ in masks]
    for i, j in list(block_of.items()) + list(upstream.items()):
        branches[j].add(i)
    return frozenset(members), root, tuple(frozenset(b) for b in branches)


def _disjoint(masks: list[int]) -> bool:
    seen = 0
    for m in masks:
        if seen & m:
            return False
        seen |= m
    return True
