"""Is this ONNX graph a decoder? Evidence of causal attention, as each exporter writes it.

- KV-cache inputs or outputs (past_key_values.*, present.*): an export built for decoding.
- A Trilu, or an `is_causal` / `unidirectional` attribute set.
- The causal mask `arange(k) <= arange(q)[:, None]` as a comparison of positions: two Range-derived tensors
  (exports with symbolic sequence dims), or two arange constants laid along different axes (the legacy exporter
  at a fixed sequence folds the Ranges into constants).
- The mask itself folded to a constant (the dynamo exporter at a fixed sequence): a boolean (or 0 / -inf)
  [..., S, S] constant whose values are lower-triangular; where the values were not kept (graph-only files,
  exports built on the meta device) a boolean [..., S, S] constant feeding a mask (And, Or, Where) counts.

A padding mask from an `attention_mask` input is not evidence: encoders have one too.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_COMPARE = {"Less", "LessOrEqual", "Greater", "GreaterOrEqual"}
_CACHE_WORDS = ("past", "cache", "present")
# Ops an arange constant passes through on its way to the comparison (a cast, a broadcast view, an offset).
_THROUGH = {"Cast", "Unsqueeze", "Reshape", "Expand", "Squeeze", "Add", "Sub", "Identity"}
_MASK_USERS = {"And", "Or", "Where", "Not"}
_INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def is_cache_name(name: str) -> bool:
    """A tensor named for a KV cache (past_key_values.0.key, present.3.value, cache_k ...)."""
    return any(w in name.lower() for w in _CACHE_WORDS)


def causal_evidence(graph: onnx.GraphProto) -> str | None:
    """Why the graph looks like a decoder, or None (the module docstring lists what counts)."""
    for vi in list(graph.input) + list(graph.output):
        if is_cache_name(vi.name):
            return f"KV-cache tensor '{vi.name}'"
    producer = {o: n for n in graph.node for o in n.output if o}
    consts = _constants(graph)
    users: dict[str, set[str]] = {}
    for n in graph.node:
        for t in n.input:
            users.setdefault(t, set()).add(n.op_type)
    for n in graph.node:
        if n.op_type == "Trilu":
            return f"Trilu node '{n.name}'"
        for a in n.attribute:
            if a.name in ("is_causal", "unidirectional") and a.i == 1:
                return f"{a.name}=1 on node '{n.name}'"
        if n.op_type in _COMPARE and len(n.input) == 2:
            if all(_from_range(t, producer) for t in n.input):
                return f"causal mask comparison '{n.name}'"
            axes = [_arange_axis(t, producer, consts) for t in n.input]
            if None not in axes and axes[0] != axes[1]:
                return f"causal mask comparison of position constants '{n.name}'"
    for name, t in consts.items():
        if _folded_mask(t, users.get(name, set())):
            return f"folded causal mask constant '{name}' {list(t.dims)}"
    return None


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Initializers and Constant-node values by tensor name (values may be external, hence absent)."""
    consts = {t.name: t for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = a.t
    return consts


def _values(t: onnx.TensorProto) -> np.ndarray | None:
    """The constant's values, or None where the file does not hold them (external data, stripped weights)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return None
    try:
        return numpy_helper.to_array(t)
    except Exception:  # noqa: BLE001 - an unreadable payload is no evidence either way
        return None


def _from_range(t: str, producer: dict) -> bool:
    stack, seen = [t], set()
    while stack:
        x = stack.pop()
        if x in seen or x not in producer:
            continue
        seen.add(x)
        n = producer[x]
        if n.op_type == "Range":
            return True
        stack.extend(i for i in n.input if i)
    return False


def _arange_axis(t: str, producer: dict, consts: dict) -> tuple[int, int] | None:
    """(rank, axis) of an integer position constant behind `t`: exactly one dim over 1, holding consecutive
    integers where the values are in the file. None for anything else."""
    for _ in range(8):
        if t in consts:
            break
        n = producer.get(t)
        if n is None or n.op_type not in _THROUGH or not n.input:
            return None
        t = n.input[0]
    else:
        return None
    c = consts[t]
    dims = list(c.dims)
    big = [i for i, d in enumerate(dims) if d > 1]
    if c.data_type not in _INT_TYPES or len(big) != 1:
        return None
    v = _values(c)
    if v is not None and not np.array_equal(np.diff(v.ravel()), np.ones(v.size - 1, v.dtype)):
        return None
    return len(dims), big[0]


def _folded_mask(t: onnx.TensorProto, used_by: set[str]) -> bool:
    """A constant [..., S, S] causal mask: lower-triangular booleans (True on and below the diagonal) or an additive
    mask (0 on and below, very negative above); without values, a boolean square constant used as a mask."""
    dims = list(t.dims)
    if len(dims) < 2 or dims[-1] != dims[-2] or dims[-1] < 2 or any(d != 1 for d in dims[:-2]):
        return False
    v = _values(t)
    if v is None:
        return t.data_type == onnx.TensorProto.BOOL and bool(used_by & _MASK_USERS)
    v = v.reshape(dims[-2], dims[-1])
    lower = np.tril(np.ones_like(v, dtype=bool))
    if v.dtype == bool:
        return bool(np.array_equal(v, lower))
    if np.issubdtype(v.dtype, np.floating):
        return bool((v[lower] == 0).all() and (v[~lower] < -1e4).all())
    return False
