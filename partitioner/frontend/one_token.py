"""A decode step from any export: one new token for each of `sequences` sequences, each reading a KV cache of
`context` tokens, costed from the graph as imported.

The import holds T positions per sequence and B0 sequences, and its attention spans K0 keys. An export with a
symbolic sequence is imported at T = 1 with an empty past (K0 = 1) and the batch at `sequences`, where every
size rule below is the identity. An export fixed at a length (the dynamo exporter, or the legacy one without
dynamic axes, at sequence 128: Reshape targets and folded masks pin 128, so its sequence dim cannot be
re-resolved) has T = 128; one that takes its past KV cache as inputs at a fixed length P has K0 = P + T.

Each tensor a kept node reads or writes is one of
- constant: reached from no model input (weights, folded tables): as imported;
- score: what an A V product's probabilities are computed from, back to its Q K^T (scale, mask, softmax), and
  the mask built for them: the last dim drops to 1 where it is K0 (keys) and the one before where it is T
  (queries), as in a one-token import, where the new token's scores span its own key;
- cache: reached from a past-KV input before an attention product (past and new keys concatenated, their views,
  the present outputs): one of its K0 positions; a past input itself holds 0 bytes (the cache is state inside
  the products, below);
- token: anything else reached from a model input: one of its T positions;
and then every non-constant size scales from B0 sequences to `sequences`. A node's flops scale with its output.
Model inputs keep one position of their dim 1 ([batch, sequence, ...]).

Attention products (MatMul of two activations) are re-derived: Q K^T (b, m, k, n) -> (b', m / T, k, L + 1) and
A V (b, m, k, n) -> (b', m / T, L + 1, n), b' = b x sequences / B0; A V is the one whose left operand comes from
another product. Each reads a KV cache of L tokens of its right operand as stored (the smallest view up its
chain of reshapes and broadcasts: grouped-query attention stores the KV heads before repeating them).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import onnx

from partitioner.frontend.causal import is_cache_name
from partitioner.frontend.fold import Folded
from partitioner.frontend.op_cost import NodeCosts
from partitioner.frontend.read import ModelInputs

_INT_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
_GEMMS = {"MatMul", "Gemm", "MatMulInteger", "QLinearMatMul", "FusedMatMul"}
# Views a KV cache is reshaped, transposed or broadcast through before its attention product.
_VIEWS = {"Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Flatten", "Tile"}
_SCALINGS = {"Mul", "Div", "Cast"}


@dataclass(frozen=True)
class Step:
    """The import's positions per sequence (T), keys per attention (K0), sequences (B0), and the step's sequences."""
    positions: int
    keys: int
    imported: int
    sequences: int


def decode_step(costs: NodeCosts, nodes: list, folded: Folded, shapes: dict, inputs: ModelInputs,
                nbytes: Callable[[str], int], context: int, sequences: int) -> tuple[NodeCosts, Callable, Step]:
    """The decode step's node costs (KV caches included) and tensor bytes, and the sizes they came from."""
    real, sources = folded.real, folded.sources
    producer = {real(o): i for i in folded.kept for o in nodes[i].output if o}
    node_of = {o: n for n in nodes for o in n.output if o}
    products = {i for i in folded.kept if nodes[i].op_type == "MatMul" and i in costs.gemms
                and all(real(t) not in sources for t in nodes[i].input[:2])}
    av, score = set(), set()
    for i in sorted(products):
        hit, seen = _upstream(real(nodes[i].input[0]), products, producer, nodes, folded)
        if hit:
            av.add(i)
            score |= seen
    positions, imported = _token_sizes(inputs)
    qk = [costs.gemms[i][3] for i in sorted(products - av)]
    step = Step(positions, qk[0] if qk else positions, imported, sequences)
    kind = _classify(nodes, folded, inputs, products, av, score)

    def numel(t: str) -> int:
        shape = shapes.get(t)
        return math.prod(shape) if shape is not None and None not in shape else 0

    def decoded(t: str) -> int:
        """Elements of tensor `t` in the decode step."""
        k, n = kind.get(t, "constant"), numel(t)
        if k == "constant" or n == 0:
            return n
        if k == "past":
            return 0
        if k == "input":
            shape = shapes[t]
            per = n // shape[1] if len(shape) > 1 and shape[1] else n
        elif k == "score":
            shape = list(shapes[t])
            if shape and shape[-1] == step.keys:
                shape[-1] = 1
            if len(shape) > 1 and shape[-2] == step.positions:
                shape[-2] = 1
            per = math.prod(shape)
        else:
            per = -(-n // (step.keys if k == "cache" else step.positions))
        return -(-per * sequences // imported)

    out = NodeCosts(kv={})
    for i in folded.kept:
        first = real(nodes[i].output[0]) if nodes[i].output else ""
        if i in products:
            out.gemms[i], keys = _product(costs.gemms[i], i in av, step, context)
            out.flops[i] = (2 * math.prod(out.gemms[i]),) * 2
            stored = stored_bytes(real(nodes[i].input[1]), node_of, real, nbytes, sources)
            out.kv[i] = -(-stored * context * sequences // (keys * imported))
            continue
        n, d = numel(first), decoded(first)
        out.flops[i] = tuple(f * d // n if n else f for f in costs.flops[i])
        if i in costs.gemms:
            out.gemms[i] = _scaled_gemm(costs.gemms[i], d, n)

    def decoded_bytes(t: str) -> int:
        n = numel(t)
        return nbytes(t) * decoded(t) // n if n else nbytes(t)
    return out, decoded_bytes, step


def _token_sizes(inputs: ModelInputs) -> tuple[int, int]:
    """(positions T, sequences B0) of the import, from its token ids [batch, sequence] (the first integer model
    input that is not a KV cache), else its first other input [batch, sequence, ...]; (1, 1) without either."""
    live = [vi for vi in inputs.value_infos if not is_cache_name(vi.name) and inputs.shapes.get(vi.name)]
    ids = [vi for vi in live if vi.type.tensor_type.elem_type in _INT_TYPES] + live
    if not ids:
        return 1, 1
    shape = inputs.shapes[ids[0].name]
    return (int(shape[1]), int(shape[0])) if len(shape) > 1 else (int(shape[0]), 1)


def _upstream(tensor: str, products: set[int], producer: dict, nodes: list, folded: Folded) -> tuple[bool, set[int]]:
    """Walk up from `tensor` through kept nodes that are not GEMMs: whether it reaches an attention product, and
    the nodes passed (a score path: scale, mask, softmax). A CastLike's second input only lends a type."""
    stack, seen, hit = [tensor], set(), False
    while stack:
        i = producer.get(folded.real(stack.pop()))
        if i is None or i in seen:
            continue
        if i in products:
            hit = True
            continue
        node = nodes[i]
        if node.op_type in _GEMMS:
            continue
        seen.add(i)
        ins = node.input[:1] if node.op_type == "CastLike" else node.input
        stack.extend(t for t in ins if t and folded.real(t) not in folded.sources)
    return hit, seen


def _classify(nodes: list, folded: Folded, inputs: ModelInputs, products: set[int], av: set[int],
              score: set[int]) -> dict[str, str]:
    """Each non-constant tensor's kind (module docstring), forward from the model inputs in topological order."""
    real = folded.real
    kind = {vi.name: "past" if is_cache_name(vi.name) else "input" for vi in inputs.value_infos}
    for i in folded.kept:
        node = nodes[i]
        got = {kind.get(real(t)) for t in node.input if t} - {None}
        if not got:
            continue
        if i in products:
            k = "token" if i in av else "score"
        elif i in score:
            k = "score"
        elif got & {"past", "cache"}:
            k = "cache"
        else:
            k = "token"
        for o in node.output:
            if o:
                kind[real(o)] = k
    return kind


def _product(shape: tuple[int, int, int, int], is_av: bool, step: Step, context: int
             ) -> tuple[tuple[int, int, int, int], int]:
    """The decode GEMM of an attention product over context + 1 keys, and the keys the import had."""
    b, m, k, n = shape
    b = max(1, b * step.sequences // step.imported)
    m = max(1, m // step.positions) if m % step.positions == 0 else m
    if is_av:
        return (b, m, context + 1, n), k
    return (b, m, k, context + 1), n


def _scaled_gemm(shape: tuple[int, int, int, int], decoded: int, imported: int) -> tuple[int, int, int, int]:
    """A weight GEMM of the decode step: its rows (M, else the batch) scale with its output's elements."""
    b, m, k, n = shape
    if not imported or decoded == imported:
        return shape
    if (m * decoded) % imported == 0 and m * decoded >= imported:
        return b, m * decoded // imported, k, n
    return max(1, b * decoded // imported), m, k, n


def stored_bytes(tensor: str, producer: dict, real, nbytes, constants=frozenset()) -> int:
    """Bytes of the smallest view of a tensor up its chain of reshapes, transposes, broadcasts and scalings by a
    constant: what a KV cache stores. Grouped-query attention repeats 8 KV heads to 32 (Unsqueeze -> Expand ->
    Reshape) before the product, some exports scale K after that; the cache holds the 8 heads."""
    best, t = nbytes(tensor), tensor
    while t in producer:
        node = producer[t]
        live = [real(x) for x in node.input if x and real(x) not in constants]
        if not (node.op_type in _VIEWS and node.input) and not (node.op_type in _SCALINGS and len(live) == 1):
            break
        t = real(node.input[0]) if node.op_type in _VIEWS else live[0]
        if nbytes(t):
            best = min(best, nbytes(t))
    return best
