"""Cost a mixture-of-experts layer by the rows the routing sends each expert, not every token through every expert.

With T tokens, top-k routing and expert e taking the share p_e of the (token, expert) pairs (uniform 1/E unless
`--routing FILE` gives measured loads), expert e runs n_e = T k p_e rows (an expected count: fractional where T k
< E, as in decode). Every node of an expert's branch was imported at R rows (all T tokens in the dense-masking
form; the mask's element count, NonZero's bound, in the sparse form; moe.bound_routed_counts), so its flops scale
by n_e / R and its GEMMs take M = floor(n_e) rows (below one row, its expected flops run at the array's full rate:
no GEMM). The merge (an Add chain over all E outputs, or scatter-adds) is replaced by the combine, one add per
routed row element: T k H flops. The experts' weights are read only when routed to: expert e with probability
1 - (1 - n_e / T)^T per inference (Experts.hit). The com.microsoft MoE op is costed directly the same way.
docs/onnx_import.md ("Mixture of experts") has the rules and the worked example.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import replace

from partitioner.core.errors import UserError
from partitioner.core.graph import Experts, Op
from partitioner.frontend.moe import Block
from partitioner.frontend.moe_contrib import contrib_dims, contrib_row
from partitioner.frontend.op_cost import PRECISION_BYTES, NodeCosts

_ROUTING_FIX = "pass a JSON file holding one list of E expert loads (fractions of the routed tokens), e.g. " \
               "[0.125, 0.125, ...]"


def read_routing(path: str | os.PathLike) -> tuple[float, ...]:
    """The expert loads in a `--routing` file, normalised to sum to 1; a one-line UserError for a bad file."""
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise UserError(f"routing file {p} does not exist", _ROUTING_FIX)
    try:
        with open(p, encoding="utf-8") as f:
            loads = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"routing file {p} is not JSON ({type(exc).__name__}: {exc})", _ROUTING_FIX) from exc
    if not isinstance(loads, list) or len(loads) < 2 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in loads):
        raise UserError(f"routing file {p} holds {type(loads).__name__} {str(loads)[:60]}, not a list of at least 2 "
                        "numbers", _ROUTING_FIX)
    if min(loads) < 0 or sum(loads) <= 0:
        raise UserError(f"routing file {p} has a negative load or sums to {sum(loads):g}",
                        "give every expert a load >= 0, summing to 1")
    if abs(sum(loads) - 1.0) > 0.01:
        raise UserError(f"routing file {p}'s loads sum to {sum(loads):g}, not 1",
                        "give each expert its fraction of the routed (token, expert) pairs, summing to 1")
    total = float(sum(loads))
    return tuple(float(x) / total for x in loads)


def apply_routing(blocks: list[Block], nodes: list, folded, shapes: dict, costs: NodeCosts, nbytes, precision: str,
                  routing: tuple[float, ...] | None) -> tuple[NodeCosts, dict[int, Experts]]:
    """The node costs with every block's experts at their routed rows, and each block's Experts by its root."""
    out = NodeCosts(dict(costs.flops), dict(costs.gemms), dict(costs.kv), dict(costs.windows))
    experts: dict[int, Experts] = {}
    elt = PRECISION_BYTES[precision]
    for b in blocks:
        if routing is not None and len(routing) != b.experts:
            raise UserError(f"the routing file gives {len(routing)} expert loads but the model's MoE layer has "
                            f"{b.experts} experts", f"give {b.experts} loads, one per expert")
        loads = routing or (1.0 / b.experts,) * b.experts
        if max(loads) * b.top_k > 1.0 + 1e-9:
            raise UserError(f"the routing file gives an expert {max(loads):g} of the routed pairs, more than "
                            f"1/k = {1 / b.top_k:g} (each token picks an expert at most once among its top {b.top_k})",
                            "give each expert a load of at most 1/k")
        made = _contrib(b, nodes, folded, shapes, nbytes, elt) if b.contrib else _torch(b, nodes, folded, out,
                                                                                         nbytes, elt)
        if made is None:
            continue
        tokens, gemms, vector, weight, tb = made
        experts[b.root] = Experts(tuple(tokens * b.top_k * p for p in loads), b.top_k, tokens, gemms, vector,
                                  weight, tb)
        if not b.contrib:
            _rescale(b, experts[b.root], out, tb // elt)
    return out, experts


def _contrib(b: Block, nodes, folded, shapes, nbytes, elt):
    node = nodes[b.root]
    d = contrib_dims(node, [shapes.get(folded.real(t)) if t else None for t in node.input])
    gemms, vector = contrib_row(d)
    tokens = max(1, nbytes(folded.real(node.input[0])) // (d["H"] * elt))
    weights = sum(nbytes(folded.real(node.input[j])) for j in range(2, len(node.input)) if node.input[j])
    return tokens, gemms, vector, -(-weights // d["E"]), d["H"] * elt


def _torch(b: Block, nodes, folded, costs: NodeCosts, nbytes, elt):
    """(tokens, GEMMs per row, vector flops per row, weight bytes, token bytes) of one expert of a torch-form block."""
    router = costs.gemms[b.router]
    tokens, h = router[0] * router[1], router[2]
    rows, vectors, weights, sigs = [], [], [], set()
    for branch in b.branches:
        gemms = [i for i in sorted(branch) if i in costs.gemms and nodes[i].op_type in ("MatMul", "Gemm")]
        r = {costs.gemms[i][0] * costs.gemms[i][1] for i in gemms}
        if len(r) != 1:
            return None
        rows.append(r.pop())
        sigs.add(tuple(costs.gemms[i][2:] for i in gemms))
        vectors.append(sum(costs.flops[i][0] - costs.flops[i][1] for i in branch) / rows[-1])
        inits = set().union(*(folded.sources.get(folded.real(t), frozenset()) for i in branch
                              for t in nodes[i].input if t))
        weights.append(sum(nbytes(w) for w in inits))
    if len(sigs) != 1:
        return None
    # the smallest: the first expert's branch may hold the merge's first add and its zeros
    return tokens, sigs.pop(), round(min(vectors)), min(weights), h * elt


def _rescale(b: Block, ex: Experts, costs: NodeCosts, hidden: int) -> None:
    """Every branch node at its expert's rows (n_e / R of its imported flops; GEMM M = floor(n_e)), the merge
    replaced by the combine's T k H adds on the root (module docstring). In place."""
    for e, branch in enumerate(b.branches):
        gemm_rows = [costs.gemms[i][0] * costs.gemms[i][1] for i in branch if i in costs.gemms]
        imported = gemm_rows[0] if gemm_rows else 1
        scale = ex.rows[e] / imported
        for i in branch:
            f, m = costs.flops[i]
            costs.flops[i] = (round(f * scale), round(m * scale))
            if i in costs.gemms:
                bb, mm, k, n = costs.gemms[i]
                if math.floor(ex.rows[e]) >= 1:
                    costs.gemms[i] = (1, math.floor(ex.rows[e]), k, n)
                else:
                    del costs.gemms[i]
    for i in b.nodes - set().union(*b.branches):
        costs.flops[i] = (ex.tokens * ex.top_k * hidden, 0) if i == b.root else (0, 0)
        costs.gemms.pop(i, None)


def _scope_name(op: Op, taken: set[str]) -> str:
    """`<scope>/experts` when the op's nodes share an exporter name scope of two levels or more
    (/model/layers.0/mlp/experts), else its own name."""
    prefix = os.path.commonprefix(list(op.onnx_nodes))
    scope = prefix[:prefix.rfind("/") + 1]
    name = scope + "experts"
    return name if scope.count("/") >= 2 and name not in taken else op.name


def expert_gemms(ex: Experts) -> tuple[tuple[int, int, int, int], ...]:
    """The (batch, M, K, N) products of every expert at its routed rows (none below one row)."""
    return tuple((1, math.floor(r), k, n) for r in ex.rows if r >= 1 for k, n in ex.gemms)


def attach_experts(ops: list[Op], blocks: list[Block], experts: dict[int, Experts], nodes: list,
                   names: list[str]) -> list[Op]:
    """The ops that are exactly one block (fused or node granularity; a layer unit keeps its summed costs) as
    MoE ops carrying their Experts: GEMMs at the routed rows, each expert's weights read with the chance it is
    routed to at all, and the op whose output the tokens are (Experts.source: its edge is the dispatch)."""
    owner = {name: j for j, op in enumerate(ops) for name in op.onnx_nodes}
    made_by = {o: names[i] for i, n in enumerate(nodes) for o in n.output if o}
    out = list(ops)
    for b in blocks:
        ex = experts.get(b.root)
        j = owner.get(names[b.root])
        if ex is None or j is None or out[j].op_type == "Layer":
            continue
        op = out[j]
        src = owner.get(made_by.get(b.x, ""))
        ex = replace(ex, source=ops[src].name if src is not None and src != j else None)
        whole = min(op.weight_bytes - op.kv_cache_bytes, ex.count * ex.weight_bytes)
        read = round(sum(ex.hit(e) for e in range(ex.count)) * ex.weight_bytes)
        out[j] = replace(op, name=_scope_name(op, {o.name for o in out}), op_type="MoE", experts=ex,
                         gemms=expert_gemms(ex) or None,
                         weight_read_bytes=max(0, min(op.weight_bytes, op.weights_read - whole + read)))
    return out
