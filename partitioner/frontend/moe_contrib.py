"""The com.microsoft MoE contrib op (onnxruntime-genai's builder): its sizes and what one expert costs per row.

Inputs: input [T, H] or [B, S, H], router_probs [T, E], fc1_experts_weights, fc1_experts_bias?, fc2_experts_weights,
fc2_experts_bias?, fc3_experts_weights?, fc3_experts_bias?; attributes k and activation_type. The op runs the
router's softmax and top-k, each token through k experts, and the weighted combine (moe_cost.py rescales nothing
here: the formula already counts k experts per token).
"""
from __future__ import annotations

import math

import onnx

_ACT_FLOPS = {"relu": 1, "gelu": 1, "silu": 2, "swiglu": 2, "identity": 0, "relu2": 2, "geglu": 1}
"""Vector flops per inter element of each activation_type (silu: a sigmoid and a multiply)."""


def contrib_dims(node, in_shapes: list) -> dict:
    """The com.microsoft MoE node's sizes: hidden H, experts E, FC1 width F1 (2I when fused SwiGLU), inter I, FC3,
    biases, k and activation; fc1/fc3 are (E, F1, H) in current onnxruntime, (E, H, F1) in older releases."""
    def shape(j):
        return in_shapes[j] if len(in_shapes) > j else None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    h = int(shape(0)[-1])
    fc1, fc2, fc3 = shape(2), shape(4), shape(6)
    f1 = int(fc1[1] if fc1[2] == h else fc1[2])
    inter = int(fc2[2] if fc2[1] == h else fc2[1])
    act = attrs.get("activation_type", b"relu")
    return {"H": h, "E": int(fc1[0]), "F1": f1, "I": inter, "fc3": fc3 is not None, "k": int(attrs.get("k", 1)),
            "act": act.decode() if isinstance(act, bytes) else str(act),
            "bias": [j for j in (3, 5, 7) if shape(j) is not None]}


def contrib_row(d: dict) -> tuple[tuple[tuple[int, int], ...], int]:
    """One expert's GEMMs per row and its vector flops per row (activation, gate, biases, the routing weight)."""
    h, inter = d["H"], d["I"]
    gemms = ((h, d["F1"]),) + (((h, inter),) if d["fc3"] else ()) + ((inter, h),)
    gated = d["fc3"] or d["F1"] == 2 * inter
    vector = _ACT_FLOPS.get(d["act"], 1) * inter + (inter if gated else 0) + h
    bias = {3: d["F1"], 5: h, 7: inter}
    return gemms, vector + sum(bias[j] for j in d["bias"])


def contrib_cost(node, in_shapes: list) -> tuple[int, int]:
    """(flops, matrix flops) of a com.microsoft MoE node over its T tokens: T k rows of one expert, the router's
    softmax (5 E) and top-k (E) per token, and the combine (k H per token)."""
    d = contrib_dims(node, in_shapes)
    tokens = math.prod(in_shapes[0]) // d["H"]
    gemms, vector = contrib_row(d)
    matrix = tokens * d["k"] * sum(2 * k * n for k, n in gemms)
    return matrix + tokens * (d["k"] * vector + 6 * d["E"] + d["k"] * d["H"]), matrix
