"""Grow a graph-only decoder export to more layers by repeating its last layer.

The legacy (TorchScript) exporter's time grows faster than the model: its per-node shape inference serialises every
weight a node reads, so an 80-layer Llama-2-70B takes over an hour on two cores where 2 layers take minutes. The
layers of a decoder are identical in structure, so export_decoders.py exports a few and this module copies the last
one until the graph has the configured count: its nodes (renamed into the new layer's scope), the tensors they
produce, and the weights they read (new external tensors of the same shape), with its residual input taken from the
copy before it. Everything else the layer reads (rotary tables, the causal mask, shared constants) stays shared,
as in a full export, and the graph's consumers of the last layer's output read the last copy instead.
"""
from __future__ import annotations

import copy

import onnx


def _scope(layer: int) -> str:
    return f"/layers.{layer}/"


def repeat_last_layer(model: onnx.ModelProto, layers: int) -> onnx.ModelProto:
    """`model` (whose last layer's nodes are named .../layers.{n-1}/...) grown to `layers` layers, in place."""
    g = model.graph
    n = 1 + max(int(node.name.split("/layers.")[1].split("/")[0]) for node in g.node if "/layers." in node.name)
    if layers <= n:
        return model
    last = _scope(n - 1)
    block = [node for node in g.node if last in node.name]
    produced = {o for node in block for o in node.output}
    inside = {node.name for node in block}
    consumers = [node for node in g.node if node.name not in inside]
    out = [o for o in produced if any(o in node.input for node in consumers) or o in {v.name for v in g.output}]
    if len(out) != 1 or last not in out[0]:
        raise ValueError(f"layer {n - 1} must have one output read outside it, found {out}")
    hidden_in = out[0].replace(last, _scope(n - 2))   # the residual stream the layer reads: the previous output
    inits = {t.name: t for t in g.initializer}
    weights = {i for node in block for i in node.input if i in inits}
    shapes = {v.name: v for v in g.value_info}
    at = max(k for k, node in enumerate(g.node) if node.name in inside) + 1
    previous = out[0]
    new_nodes = []
    for layer in range(n, layers):
        scope = _scope(layer)

        def rename(name: str, layer=layer, scope=scope) -> str:
            return name.replace(last, scope) if last in name else f"{name}__layer{layer}"

        names = {t: rename(t) for t in produced} | {w: rename(w).replace(f".{n - 1}.", f".{layer}.") for w in weights}
        names[hidden_in] = previous
        for node in block:
            c = copy.deepcopy(node)
            c.name = node.name.replace(last, scope)
            c.input[:] = [names.get(i, i) for i in node.input]
            c.output[:] = [names.get(o, o) for o in node.output]
            new_nodes.append(c)
        for w in weights:
            t = copy.deepcopy(inits[w])
            t.name = names[w]
            g.initializer.append(t)
        g.value_info.extend(_renamed(shapes[t], names[t]) for t in produced if t in shapes)
        previous = names[out[0]]
    for node in g.node[at:]:
        node.input[:] = [previous if i == out[0] else i for i in node.input]
    for o in g.output:
        if o.name == out[0]:
            o.name = previous
    for k, node in enumerate(new_nodes):
        g.node.insert(at + k, node)
    return model


def _renamed(value: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    v = copy.deepcopy(value)
    v.name = name
    return v
