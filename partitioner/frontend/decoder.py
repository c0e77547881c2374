"""Decoder phases: prefill (the whole prompt in one pass) and decode (one new token reading a KV cache).

A decode step is the model imported with a sequence of 1 token, plus, for each attention product (a MatMul of
two activations: Q K^T and A V), a KV cache of `context` tokens. The cache is state the op keeps and reads whole
every token, like a weight: its bytes join the op's weight_bytes and weight_read_bytes and are recorded in
Op.kv_cache_bytes, and the product spans context + 1 keys (the cache and the new token). docs/onnx_import.md
has the rule and a worked example.
"""
from __future__ import annotations

import onnx

from partitioner.core.errors import UserError

PHASES = ("prefill", "decode")
_COMPARE = {"Less", "LessOrEqual", "Greater", "GreaterOrEqual"}
_CACHE_WORDS = ("past", "cache", "present")


def causal_evidence(graph: onnx.GraphProto) -> str | None:
    """Why the model looks like a decoder (causal attention), or None: a Trilu (lower-triangular mask), a
    causal/unidirectional attention attribute, a position-vs-position comparison (two Range-derived operands:
    the arange(q) >= arange(k) causal mask), or inputs/outputs named for a KV cache."""
    for vi in list(graph.input) + list(graph.output):
        if any(w in vi.name.lower() for w in _CACHE_WORDS):
            return f"KV-cache tensor '{vi.name}'"
    producer = {o: n for n in graph.node for o in n.output if o}
    from_range: dict[str, bool] = {}

    def derives_from_range(t: str) -> bool:
        stack, seen = [t], set()
        while stack:
            x = stack.pop()
            if x in from_range:
                if from_range[x]:
                    return True
                continue
            if x in seen or x not in producer:
                continue
            seen.add(x)
            n = producer[x]
            if n.op_type == "Range":
                return True
            stack.extend(i for i in n.input if i)
        return False

    for n in graph.node:
        if n.op_type == "Trilu":
            return f"Trilu node '{n.name}'"
        for a in n.attribute:
            if a.name in ("is_causal", "unidirectional") and a.i == 1:
                return f"{a.name}=1 on node '{n.name}'"
        if n.op_type in _COMPARE and len(n.input) == 2 and all(derives_from_range(t) for t in n.input):
            return f"causal mask comparison '{n.name}'"
    return None


def check_phase(graph: onnx.GraphProto, phase: str | None, context: int | None, path: str) -> None:
    """Bad phase settings are one-line UserErrors with the fix."""
    if phase is not None and phase not in PHASES:
        raise UserError(f"unknown phase '{phase}'", f"use --phase {' or --phase '.join(PHASES)}")
    if context is not None and context < 0:
        raise UserError(f"--context must be >= 0 tokens, got {context}", "pass the KV-cache length, e.g. --context 1024")
    if phase == "prefill" and context:
        raise UserError("--context is for --phase decode (prefill has no cache yet)",
                        "drop --context, or pass --phase decode --context L")
    if (phase is not None or context is not None) and causal_evidence(graph) is None:
        raise UserError(f"{path} looks encoder-only (no causal mask, KV cache or causal attention found), so it has "
                        "no prefill/decode phases", "drop --phase and --context for this model")


def decode_product(shape: tuple[int, int, int, int], context: int) -> tuple[int, int, int, int]:
    """The attention product of a decode step over context + 1 keys: the key length is the dim the one-token
    import left at 1 (N of Q K^T, K of A V)."""
    b, m, k, n = shape
    if n == 1:
        return b, m, k, context + 1
    return b, m, context + 1, n


def token_count(input_shapes: dict[str, tuple[int, ...]], dtypes: dict[str, int]) -> int:
    """Tokens one inference processes: the elements of the first integer input (the token ids), else 1."""
    for name, shape in input_shapes.items():
        if dtypes.get(name) in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            total = 1
            for d in shape:
                total *= int(d)
            return total
    return 1
