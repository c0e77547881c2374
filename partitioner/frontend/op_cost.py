"""Exact per-op costs: FLOPs (and the matrix share of them), GEMM shapes for the array model, tensor bytes.

FLOPs come from each node's resolved input and output shapes; what is counted, per op type, is documented in
docs/onnx_import.md. Bytes are elements x element size, with every floating-point tensor at the chosen precision
and integer tensors at the size of their own type.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import onnx

from partitioner.core.window import WINDOWED, Window, same_pads
from partitioner.frontend.fold import Folded
from partitioner.frontend.moe_contrib import contrib_cost

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1}

# Bits per element of each ONNX TensorProto data type, and which of them are floating point.
_DTYPE_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
               14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2}
_FLOAT_DTYPES = {1, 10, 11, 16, 17, 18, 19, 20, 23, 24}

# --- op classes ------------------------------------------------------------------------------------------------
# Cheap elementwise ops fused into their producer; flops = multiplier x output elements.
ELEMENTWISE = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Neg": 1, "Abs": 1, "Mod": 1, "Pow": 1, "Sqrt": 1, "Reciprocal": 1,
    "Exp": 1, "Log": 1, "Erf": 1, "Sin": 1, "Cos": 1, "Floor": 1, "Ceil": 1, "Round": 1, "Sign": 1,
    "Relu": 1, "LeakyRelu": 1, "PRelu": 1, "Elu": 1, "Selu": 1, "Celu": 1, "Gelu": 1, "FastGelu": 1,
    "BiasGelu": 1, "QuickGelu": 1, "Sigmoid": 1, "HardSigmoid": 1, "HardSwish": 1, "Tanh": 1, "Softplus": 1,
    "Softsign": 1, "Mish": 1, "Clip": 1, "Max": 1, "Min": 1, "Where": 1, "Equal": 1, "Less": 1, "Greater": 1,
    "LessOrEqual": 1, "GreaterOrEqual": 1, "Not": 1, "And": 1, "Or": 1, "Xor": 1, "IsNaN": 1, "IsInf": 1,
    "Cast": 0, "CastLike": 0,
}
# Pure data movement fused into their producer: 0 flops.
FUSED_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}
# Data movement kept as ops of their own: 0 flops, bytes only.
_MOVEMENT = {"Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND", "Concat",
             "Slice", "Split", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Trilu", "Compress",
             "ReverseSequence", "OneHot", "Range", "ConstantOfShape", "EyeLike", "NonZero"}
# Gathers read only the rows they look up from their data input.
_GATHERS = {"Gather", "GatherElements", "GatherND"}
# Normalisation and softmax: multiplier x input elements.
_PER_INPUT_ELEMENT = {
    "Softmax": 5, "LogSoftmax": 5, "LayerNormalization": 8, "InstanceNormalization": 8, "GroupNormalization": 8,
    "MeanVarianceNormalization": 8, "SkipLayerNormalization": 9, "SimplifiedLayerNormalization": 4,
    "SkipSimplifiedLayerNormalization": 5, "RMSNormalization": 4, "LpNormalization": 3,
    "BatchNormalization": 2,
    "ReduceSum": 1, "ReduceMean": 1, "ReduceMax": 1, "ReduceMin": 1, "ReduceProd": 1, "ReduceL1": 1,
    "ReduceL2": 1, "ReduceSumSquare": 1, "ReduceLogSum": 1, "ReduceLogSumExp": 1, "ArgMax": 1, "ArgMin": 1,
    "CumSum": 1, "TopK": 1, "GlobalAveragePool": 1, "GlobalMaxPool": 1, "GlobalLpPool": 1,
}
# Per output element.
_PER_OUTPUT_ELEMENT = {"Resize": 1, "Upsample": 1}
_POOL = {"MaxPool", "AveragePool", "LpPool"}


def tensor_bytes(shapes: dict, dtypes: dict, precision: str) -> Callable[[str], int]:
    """Bytes of a tensor by name at `precision`; 0 for one of unknown size (a folded constant)."""
    float_bytes = PRECISION_BYTES[precision]

    def nbytes(tensor: str) -> int:
        shape, dtype = shapes.get(tensor), dtypes.get(tensor, 1)
        if shape is None or any(d is None for d in shape):
            return 0
        bits = 8 * float_bytes if dtype in _FLOAT_DTYPES else _DTYPE_BITS.get(dtype, 32)
        return (math.prod(shape) * bits + 7) // 8
    return nbytes


@dataclass
class NodeCosts:
    """Per kept node index: (flops, matrix flops), the (batch, M, K, N) of its matrix product where it has one,
    the KV-cache bytes it reads in decode (one_token.py), and the rows geometry of a sliding-window node."""
    flops: dict[int, tuple[int, int]] = field(default_factory=dict)
    gemms: dict[int, tuple[int, int, int, int]] = field(default_factory=dict)
    kv: dict[int, int] = field(default_factory=dict)
    windows: dict[int, Window] = field(default_factory=dict)


def cost_nodes(nodes: list, names: list[str], folded: Folded, shapes: dict) -> NodeCosts:
    """Cost every kept node; one whose attributes or operands defeat its formula counts 1 flop per output
    element, with a warning."""
    warned: set[str] = set()
    costs = NodeCosts()
    for i in folded.kept:
        node = nodes[i]
        ins = [folded.real(t) if t else "" for t in node.input]
        in_shapes = [shapes.get(t) if t else None for t in ins]
        out_shapes = [shapes.get(o) for o in node.output]
        try:
            costs.flops[i] = _node_cost(node, in_shapes, out_shapes, warned)
            shape = _node_gemm(node, in_shapes, out_shapes)
            if shape is not None and 2 * math.prod(shape) <= costs.flops[i][1]:
                costs.gemms[i] = shape
            window = node_window(node, in_shapes[0] if in_shapes else None, out_shapes[0] if out_shapes else None,
                                 in_shapes[1] if len(in_shapes) > 1 else None)
            if window is not None:
                costs.windows[i] = window
        except (TypeError, IndexError, ValueError, ZeroDivisionError, AttributeError):
            # Malformed attributes or an operand of unknown size: fall back to the element-count estimate.
            warnings.warn(f"could not cost node '{names[i]}' ({node.op_type}); counting 1 flop per output "
                          "element", stacklevel=3)  # load_onnx's caller
            costs.flops[i] = sum(_numel(s) for s in out_shapes if s is not None and None not in s), 0
    return costs


def weights_read(group: list[int], nodes: list, folded: Folded, nbytes) -> dict[str, int]:
    """Bytes read per inference of the weights a fused op uses, where that is less than the whole tensor: a
    weight used only as the data input of Gather-family nodes (an embedding table) is read one output's worth
    per lookup, at most its own size. Weights absent from the result are read whole."""
    real, sources = folded.real, folded.sources
    partial: dict[str, int] = {}
    whole: set[str] = set()
    for i in group:
        node = nodes[i]
        for j, t in enumerate(node.input):
            if not t or real(t) not in sources:
                continue
            if node.op_type in _GATHERS and j == 0:
                for w in sources[real(t)]:
                    partial[w] = partial.get(w, 0) + sum(nbytes(o) for o in node.output if o)
            else:
                whole.update(sources[real(t)])
    return {w: min(b, nbytes(w)) for w, b in partial.items() if w not in whole}


def node_window(node, x, out, w) -> Window | None:
    """The rows geometry (core/window.py) of a Conv or pooling node with input shape x, output shape out and (a
    Conv's) weight shape w, along the first spatial axis; None for other nodes or unknown shapes."""
    if node.op_type not in WINDOWED or x is None or out is None or len(x) < 3 or len(out) != len(x) \
            or None in x or None in out:
        return None
    nsp = len(x) - 2
    kernel = _attr(node, "kernel_shape") or (list(w[2:]) if node.op_type == "Conv" and w and None not in w else None)
    if not kernel:
        return None
    stride = (_attr(node, "strides") or [1] * nsp)[0]
    dil = (_attr(node, "dilations") or [1] * nsp)[0]
    pad = (_attr(node, "pads") or [0] * (2 * nsp))[0]
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pad = same_pads(x[2], out[2], kernel[0], stride, dil, auto == "SAME_UPPER")[0]
    elif auto == "VALID":
        pad = 0
    return Window(int(x[2]), int(out[2]), (int(kernel[0]) - 1) * int(dil) + 1, int(stride), int(pad))


# --- per-node formulas ------------------------------------------------------------------------------------------
def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _numel(shape) -> int:
    return math.prod(shape) if shape is not None else 0


def _node_cost(node, in_shapes: list, out_shapes: list, warned: set[str]) -> tuple[int, int]:
    """(flops, matrix_flops) of one ONNX node from its resolved input and output shapes."""
    t = node.op_type
    out0 = out_shapes[0] if out_shapes else None
    in0 = in_shapes[0] if in_shapes else None
    if t in ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"):
        a = in_shapes[0]
        k = a[-1] if len(a) >= 1 else 1
        if t == "FusedMatMul" and _attr(node, "transA", 0) and len(a) >= 2:
            k = a[-2]
        f = 2 * _numel(out0) * k
        return f, f
    if t == "Gemm":
        a = in_shapes[0]
        k = a[0] if _attr(node, "transA", 0) else a[1]
        mm = 2 * _numel(out0) * k
        bias = _numel(out0) if len(in_shapes) > 2 and in_shapes[2] is not None else 0
        return mm + bias, mm
    if t in ("Conv", "ConvInteger", "QLinearConv"):
        w = in_shapes[3] if t == "QLinearConv" else in_shapes[1]
        # w: (Cout, Cin/groups, k...) ; out: (N, Cout, spatial...)
        mm = 2 * _numel(out0) * w[1] * math.prod(w[2:])
        has_bias = (len(in_shapes) > 2 and in_shapes[2] is not None and t == "Conv") or \
                   (t == "QLinearConv" and len(in_shapes) > 8 and in_shapes[8] is not None)
        return mm + (_numel(out0) if has_bias else 0), mm
    if t == "ConvTranspose":
        w = in_shapes[1]  # (Cin, Cout/groups, k...)
        mm = 2 * _numel(in0) * w[1] * math.prod(w[2:])
        bias = _numel(out0) if len(in_shapes) > 2 and in_shapes[2] is not None else 0
        return mm + bias, mm
    if t == "Einsum":
        return _einsum_cost(_attr(node, "equation").decode() if isinstance(_attr(node, "equation"), bytes)
                            else _attr(node, "equation"), [s for s in in_shapes if s is not None])
    if t == "Attention" and node.domain == "com.microsoft":
        return _ms_attention_cost(node, in_shapes)
    if t == "MoE" and node.domain == "com.microsoft":
        return contrib_cost(node, in_shapes)
    if t in ("Attention", "MultiHeadAttention"):
        return _attention_cost(node, in_shapes)
    if t in ELEMENTWISE:
        return ELEMENTWISE[t] * _numel(out0), 0
    if t in FUSED_MOVEMENT or t in _MOVEMENT:
        return 0, 0
    if t in _PER_INPUT_ELEMENT:
        return _PER_INPUT_ELEMENT[t] * _numel(in0), 0
    if t in _PER_OUTPUT_ELEMENT:
        return _PER_OUTPUT_ELEMENT[t] * _numel(out0), 0
    if t in _POOL:
        return _numel(out0) * math.prod(_attr(node, "kernel_shape", [1])), 0
    if t not in warned:
        warned.add(t)
        warnings.warn(f"ONNX op type '{t}' has no cost model; counting 1 flop per output element",
                      stacklevel=4)  # load_onnx's caller
    return sum(_numel(s) for s in out_shapes if s is not None), 0


def _node_gemm(node, in_shapes: list, out_shapes: list) -> tuple[int, int, int, int] | None:
    """(batch, M, K, N) of a MatMul/Gemm/Conv for the array model; None for other ops (roofline only).

    MatMul: N is the output's last dim, K the contracted dim; a 2-D right operand (a weight) folds every leading
    dim of the left one into M, a batched one makes the leading output dims the batch. Conv (im2col view): M =
    batch x output pixels, K = input channels per group x kernel size, N = output channels per group, one
    product per group."""
    t = node.op_type
    out = out_shapes[0] if out_shapes else None
    if out is None or None in out or not out:
        return None
    if t in ("MatMul", "MatMulInteger", "QLinearMatMul", "FusedMatMul"):
        a, b = in_shapes[0], in_shapes[3 if t == "QLinearMatMul" else 1]
        if a is None or b is None or None in a or None in b:
            return None
        k = a[-2] if t == "FusedMatMul" and _attr(node, "transA", 0) and len(a) >= 2 else a[-1]
        n = 1 if len(b) == 1 else out[-1]
        batch = math.prod(out[:-2]) if len(b) > 2 and len(out) > 2 else 1
        m = _numel(out) // max(batch * n, 1)
    elif t == "Gemm":
        a = in_shapes[0]
        k = a[0] if _attr(node, "transA", 0) else a[1]
        batch, m, n = 1, out[0], out[1]
    elif t in ("Conv", "ConvInteger"):
        w = in_shapes[1]  # (Cout, Cin/groups, k...)
        groups = int(_attr(node, "group", 1))
        batch, k, n = groups, w[1] * math.prod(w[2:]), w[0] // groups
        m = out[0] * math.prod(out[2:])
    else:
        return None
    shape = (int(batch), int(m), int(k), int(n))
    return shape if min(shape) >= 1 else None


def _einsum_cost(equation: str, shapes: list) -> tuple[int, int]:
    """2 x product of every distinct index size for a contraction of >= 2 operands (n-1 products)."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        tokens = []
        if "..." in term:
            head, tail = term.split("...")
            n_ell = len(shape) - len(head) - len(tail)
            tokens = list(head) + [f"...{n_ell - j}" for j in range(n_ell)] + list(tail)
        else:
            tokens = list(term)
        for tok, d in zip(tokens, shape):
            sizes[tok] = max(sizes.get(tok, 1), int(d))
    total = math.prod(sizes.values())
    if len(terms) >= 2:
        f = 2 * (len(terms) - 1) * total
        return f, f
    out_letters = set(rhs.replace("...", "")) if "->" in eq else None
    reduces = out_letters is not None and set(terms[0].replace("...", "")) - out_letters
    return (total if reduces else 0), 0


def _ms_attention_cost(node, in_shapes: list) -> tuple[int, int]:
    """com.microsoft Attention: QKV projection, Q K^T, softmax, A V (the output projection is a separate op)."""
    x, w = in_shapes[0], in_shapes[1]  # x: (B, S, D_in) ; w: (D_in, Dq + Dk + Dv)
    b, s, d_in = x
    hidden = _attr(node, "qkv_hidden_sizes", None)
    dq, dk, dv = (hidden if hidden else [w[1] // 3] * 3)
    heads = int(_attr(node, "num_heads", 1))
    past = in_shapes[4] if len(in_shapes) > 4 and in_shapes[4] is not None else None
    total = s + (past[3] if past is not None and len(past) == 5 else 0)
    proj = 2 * b * s * d_in * (dq + dk + dv)
    qk = 2 * b * s * total * dk
    av = 2 * b * s * total * dv
    bias = b * s * (dq + dk + dv) if len(in_shapes) > 2 and in_shapes[2] is not None else 0
    softmax = 5 * b * heads * s * total
    mm = proj + qk + av
    return mm + bias + softmax, mm


def _attention_cost(node, in_shapes: list) -> tuple[int, int]:
    """ONNX Attention (opset 23) or com.microsoft MultiHeadAttention: Q K^T, softmax, A V on given Q/K/V."""
    q = in_shapes[0]
    k = in_shapes[1] if len(in_shapes) > 1 and in_shapes[1] is not None else None
    v = in_shapes[2] if len(in_shapes) > 2 and in_shapes[2] is not None else None
    heads = int(_attr(node, "num_heads", _attr(node, "q_num_heads", 1)) or 1)
    if len(q) == 4:  # (B, H, S, D)
        b, h, s, d = q
        length = k[2] if k is not None and len(k) == 4 else s
        dv = v[3] if v is not None and len(v) == 4 else d
        qk, av, soft = 2 * b * h * s * length * d, 2 * b * h * s * length * dv, 5 * b * h * s * length
    else:  # (B, S, hidden)
        b, s, d = q[0], q[1], q[-1]
        length = k[1] if k is not None and len(k) >= 3 else s
        dv = v[-1] if v is not None and len(v) == 3 else d
        qk, av, soft = 2 * b * s * length * d, 2 * b * s * length * dv, 5 * b * heads * s * length
    return qk + av + soft, qk + av
