"""Read an ONNX model into a TensorGraph: resolved shapes, exact per-op costs, coarsened ops.

Only the graph is read, never weight values: initializer sizes come from their TensorProto dims and data type,
so graph-only files whose external weight file is absent work, and files with external data present are
loaded without reading it. Every tensor shape is resolved with onnxruntime's symbolic shape inference after
the model inputs' symbolic dims are fixed (first dim 1, other symbolic dims 128, or `input_shapes`).

Pipeline: load -> fix input shapes -> infer shapes -> fold constant/shape subgraphs -> cost every remaining
node -> fuse cheap elementwise and data-movement nodes into their producer -> TensorGraph.
What is counted, per op type, is documented in docs/onnx_import.md.
"""
from __future__ import annotations

import math
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import replace

import onnx
import onnx.inliner
from google.protobuf.message import DecodeError

from partitioner.core.errors import UserError
from partitioner.frontend.decoder import check_phase, decode_product, token_count
from partitioner.frontend.granularity import GRANULARITIES, layer_key, layer_runs
from partitioner.core.graph import Op, TensorGraph
from partitioner.frontend.shape_resolve import carries_weights, data_dependent, input_ancestors, resolve_missing

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "int8": 1}
DEFAULT_BATCH = 1
DEFAULT_DIM = 128
_INPUT_SHAPE_FIX = "pass --input-shape NAME=1x128 (one per model input with a symbolic size)"

# Bits per element of each ONNX TensorProto data type, and which of them are floating point.
_DTYPE_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 8: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
               14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2}
_FLOAT_DTYPES = {1, 10, 11, 16, 17, 18, 19, 20, 23, 24}

# --- op classes ------------------------------------------------------------------------------------------------
# Nodes whose outputs alias their first input: removed, consumers read the input directly.
_ALIAS = {"Identity", "Dropout"}
# Nodes whose outputs are constant whatever their inputs (shape queries) or that have no inputs at all.
_SHAPE_QUERIES = {"Shape", "Size"}
# Cheap elementwise ops fused into their producer; flops = multiplier x output elements.
_ELEMENTWISE = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Neg": 1, "Abs": 1, "Mod": 1, "Pow": 1, "Sqrt": 1, "Reciprocal": 1,
    "Exp": 1, "Log": 1, "Erf": 1, "Sin": 1, "Cos": 1, "Floor": 1, "Ceil": 1, "Round": 1, "Sign": 1,
    "Relu": 1, "LeakyRelu": 1, "PRelu": 1, "Elu": 1, "Selu": 1, "Celu": 1, "Gelu": 1, "FastGelu": 1,
    "BiasGelu": 1, "QuickGelu": 1, "Sigmoid": 1, "HardSigmoid": 1, "HardSwish": 1, "Tanh": 1, "Softplus": 1,
    "Softsign": 1, "Mish": 1, "Clip": 1, "Max": 1, "Min": 1, "Where": 1, "Equal": 1, "Less": 1, "Greater": 1,
    "LessOrEqual": 1, "GreaterOrEqual": 1, "Not": 1, "And": 1, "Or": 1, "Xor": 1, "IsNaN": 1, "IsInf": 1,
    "Cast": 0, "CastLike": 0,
}
# Pure data movement fused into their producer: 0 flops.
_FUSED_MOVEMENT = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}
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


def load_onnx(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None,
              precision: str = "fp32", *, granularity: str = "fused", phase: str | None = None,
              context: int | None = None) -> TensorGraph:
    """Read the ONNX model at `path` into a coarsened TensorGraph with exact per-op costs.

    input_shapes: concrete shape per model input name; overrides the defaults for symbolic dims
        (first dim -> 1, other symbolic dims -> 128).
    precision: fp32|fp16|bf16|int8, the bytes per element (4/2/2/1) of every floating-point tensor, weights
        and activations; integer tensors keep the size of their own type.
    granularity: fused (cheap nodes fused into their producer), node (one op per ONNX compute node) or layer
        (repeated blocks found from the exporter's name scopes, partitioner/frontend/granularity.py).
    phase, context: for decoders, prefill (the whole sequence) or decode (one token per inference: symbolic
        sequence dims default to 1, and each attention product reads a KV cache of `context` tokens,
        partitioner/frontend/decoder.py). None: the plain whole-sequence pass.
    """
    if precision not in PRECISION_BYTES:
        raise UserError(f"unknown precision '{precision}'", f"use one of {', '.join(PRECISION_BYTES)}")
    if granularity not in GRANULARITIES:
        raise UserError(f"unknown granularity '{granularity}'", f"use one of {', '.join(GRANULARITIES)}")
    model = _read_model(path)
    graph = model.graph
    check_phase(graph, phase, context, os.fspath(path))
    decode_context = (context or 0) if phase == "decode" else None
    inits = {t.name: (t.data_type, tuple(int(d) for d in t.dims)) for t in graph.initializer}
    _reject_empty_weights(inits)
    model_inputs = [vi for vi in graph.input if vi.name not in inits]
    resolved = _resolve_input_shapes(model_inputs, dict(input_shapes or {}),
                                     default_dim=1 if decode_context is not None else DEFAULT_DIM)
    guessed = {vi.name for vi in model_inputs if vi.name not in (input_shapes or {}) and (
        not vi.type.tensor_type.HasField("shape")
        or any(not (d.HasField("dim_value") and d.dim_value > 0) for d in vi.type.tensor_type.shape.dim))}
    inferred = _infer_shapes(model, inits, resolved)
    shapes, dtypes = _collect_shapes(inferred, model, inits)
    nodes, names = _ordered_nodes(graph)
    float_bytes = PRECISION_BYTES[precision]

    def nbytes(tensor: str) -> int:
        shape, dtype = shapes.get(tensor), dtypes.get(tensor, 1)
        if shape is None or any(d is None for d in shape):
            return 0
        bits = 8 * float_bytes if dtype in _FLOAT_DTYPES else _DTYPE_BITS.get(dtype, 32)
        return (math.prod(shape) * bits + 7) // 8

    # --- fold constants: initializers, Constant nodes, shape queries and anything computed only from them ----
    alias: dict[str, str] = {}

    def real(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    sources: dict[str, frozenset[str]] = {name: frozenset([name]) for name in inits}  # const tensor -> inits
    kept: list[int] = []
    for i, node in enumerate(nodes):
        ins = [real(t) for t in node.input if t]
        if node.op_type in _ALIAS and node.domain in ("", "ai.onnx") and ins:
            for out in node.output[:1]:
                alias[out] = ins[0]
            continue
        if node.op_type == "Constant" or node.op_type in _SHAPE_QUERIES or all(t in sources for t in ins):
            if node.op_type == "Constant" and node.output:
                _constant_shape(node, shapes, dtypes)
                sources[node.output[0]] = frozenset([node.output[0]])
                inits.setdefault(node.output[0], (dtypes[node.output[0]], shapes[node.output[0]]))
                continue
            derived = frozenset().union(*(sources[t] for t in ins)) if node.op_type not in _SHAPE_QUERIES \
                else frozenset()
            for out in node.output:
                if out:
                    sources[out] = derived
            continue
        kept.append(i)
    if not kept:
        raise UserError(f"{os.fspath(path)} has no compute nodes (all {len(nodes)} nodes are constants or shape "
                        "computations)", "export the model with its compute graph, e.g. torch.onnx.export of the "
                        "whole module")

    # --- every kept node needs fully resolved shapes; what inference missed, the fallbacks try ----------------
    def unresolved() -> list[tuple[str, int]]:
        out = []
        for i in kept:
            node = nodes[i]
            for t in [real(x) for x in node.input if x] + [o for o in node.output if o]:
                shape = shapes.get(t)
                if t in inits or (t in sources and (shape is None or None in shape)):
                    continue  # a folded constant of unknown size: costs nothing, moves no activation bytes
                if shape is None or any(d is None for d in shape):
                    out.append((t, i))
        return out

    missing = unresolved()
    if missing:
        for t, (shape, dtype) in resolve_missing(inferred, path, {t for t, _ in missing}, resolved).items():
            shapes[t] = shape
            dtypes.setdefault(t, dtype)
        missing = unresolved()
    if missing:
        t, i = missing[0]
        raise UserError(f"cannot resolve the shape of tensor '{t}' (read or written by node '{names[i]}', "
                        f"shape {_fmt_shape(shapes.get(t))}) from input shapes {_fmt_inputs(resolved)}, "
                        "constant folding or a run of the model", _unresolved_fix(model, path, t, guessed))

    # --- cost every kept node ---------------------------------------------------------------------------------
    warned: set[str] = set()
    cost: dict[int, tuple[int, int]] = {}
    gemm: dict[int, tuple[int, int, int, int]] = {}
    for i in kept:
        node = nodes[i]
        ins = [real(t) if t else "" for t in node.input]
        in_shapes = [shapes.get(t) if t else None for t in ins]
        out_shapes = [shapes.get(o) for o in node.output]
        try:
            cost[i] = _node_cost(node, in_shapes, out_shapes, warned)
            shape = _node_gemm(node, in_shapes, out_shapes)
            if shape is not None and 2 * math.prod(shape) <= cost[i][1]:
                gemm[i] = shape
        except (TypeError, IndexError, ValueError, ZeroDivisionError, AttributeError):
            # Malformed attributes or an operand of unknown size: fall back to the element-count estimate.
            warnings.warn(f"could not cost node '{names[i]}' ({node.op_type}); counting 1 flop per output "
                          "element", stacklevel=2)
            cost[i] = sum(_numel(s) for s in out_shapes if s is not None and None not in s), 0
    kv: dict[int, int] = {}
    node_producer = {o: n for n in nodes for o in n.output if o}
    if decode_context is not None:  # attention products (two activations) span the cache plus the new token
        for i in kept:
            node = nodes[i]
            if node.op_type == "MatMul" and all(real(t) not in sources for t in node.input[:2]) and i in gemm:
                gemm[i] = decode_product(gemm[i], decode_context)
                cost[i] = tuple(c * (decode_context + 1) for c in cost[i])
                kv[i] = _stored_bytes(real(node.input[1]), node_producer, real, nbytes) * decode_context

    # --- fuse cheap elementwise and data-movement nodes into the group of their producer ----------------------
    producer: dict[str, int] = {}
    for i in kept:
        for out in nodes[i].output:
            if out:
                producer[out] = i
    group_of: dict[int, int] = {}
    for i in kept:
        node = nodes[i]
        group_of[i] = i
        if granularity == "node" or (node.op_type not in _ELEMENTWISE and node.op_type not in _FUSED_MOVEMENT):
            continue
        act = [real(t) for t in node.input if t and real(t) not in sources]
        groups = {group_of[producer[t]] if t in producer else None for t in act}
        if len(groups) == 1 and None not in groups:
            group_of[i] = groups.pop()
    unit_name: dict[int, str] = {}
    if granularity == "layer":  # merge fused groups into runs of the same layer
        fused_roots = sorted({group_of[i] for i in kept})
        keys = [layer_key(names[r]) for r in fused_roots]
        runs = layer_runs(keys)
        first: dict[int, int] = {}
        for r, u in zip(fused_roots, runs):
            first.setdefault(u, r)
        run_of_root = {r: first[u] for r, u in zip(fused_roots, runs)}
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
    members: dict[int, list[int]] = defaultdict(list)
    for i in kept:
        members[group_of[i]].append(i)
    roots = sorted(members)  # roots in topological order are a topological order of the groups
    op_id = {r: k for k, r in enumerate(roots)}

    consumers: dict[str, set[int]] = defaultdict(set)
    for i in kept:
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
        read_bytes = _weights_read(group, nodes, real, sources, nbytes)
        in_tensors = {t for t in read if t not in sources and t not in produced}
        out_tensors = {t for t in produced
                       if t in graph_outputs or any(c != k for c in consumers.get(t, ()))}
        for t in in_tensors:
            if t in producer:
                edges[(op_id[group_of[producer[t]]], k)] += nbytes(t)
        cache = sum(kv.get(i, 0) for i in group)
        ops.append(Op(
            name=unit_name.get(root, names[root]), op_type="Layer" if root in unit_name else nodes[root].op_type,
            onnx_nodes=tuple(names[i] for i in group),
            flops=sum(cost[i][0] for i in group), matrix_flops=sum(cost[i][1] for i in group),
            weight_bytes=sum(nbytes(w) for w in weights) + cache,
            weight_read_bytes=sum(read_bytes.get(w, nbytes(w)) for w in weights) + cache,
            in_bytes=sum(nbytes(t) for t in in_tensors), out_bytes=sum(nbytes(t) for t in out_tensors),
            gemms=tuple(gemm[i] for i in group if i in gemm) or None, kv_cache_bytes=cache))

    ops = _mark_shared_weights(ops, op_weights, nbytes)
    input_bytes = sum(nbytes(vi.name) for vi in model_inputs)
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    metadata = {
        "model_path": os.fspath(path), "precision": precision, "input_shapes": resolved,
        "onnx_nodes_total": len(graph.node), "ops_before_coarsening": len(kept),
        "granularity": granularity, "phase": phase, "context": decode_context,
        "tokens_per_inference": token_count(resolved, {vi.name: vi.type.tensor_type.elem_type for vi in model_inputs})
        if phase is not None else None,
        # The name each ONNX node got here, keyed by its first output (unique in a valid model): split_onnx
        # finds the nodes of each op by it without repeating the naming rule.
        "onnx_node_names": {next((o for o in n.output if o), ""): nm for n, nm in zip(nodes, names)},
        # Every tensor shape resolved at these input shapes: split_onnx types the tensors crossing between
        # stages with them where ONNX's own inference cannot.
        "tensor_shapes": {t: tuple(s) for t, s in shapes.items() if s is not None and None not in s},
    }
    return TensorGraph.build(name, ops, [(s, d, b) for (s, d), b in sorted(edges.items())], input_bytes,
                             metadata)


def _mark_shared_weights(ops: list[Op], op_weights: list[frozenset[str]], nbytes) -> list[Op]:
    """Each op's initializers that another op reads too (a tied embedding and LM head), as Op.shared_weights."""
    readers = Counter(w for ws in op_weights for w in ws)
    out = []
    for op, ws in zip(ops, op_weights):
        shared = tuple(sorted((w, nbytes(w)) for w in ws if readers[w] > 1 and nbytes(w) > 0))
        out.append(replace(op, shared_weights=shared) if shared else op)
    return out


_VIEWS = {"Reshape", "Transpose", "Expand", "Unsqueeze", "Squeeze", "Flatten", "Tile"}


def _stored_bytes(tensor: str, producer: dict, real, nbytes) -> int:
    """Bytes of the smallest view of a tensor up its chain of reshapes, transposes and broadcasts: what a KV
    cache stores. Grouped-query attention repeats 8 KV heads to 32 (Unsqueeze -> Expand -> Reshape) before the
    product; the cache holds the 8."""
    best, t = nbytes(tensor), tensor
    while t in producer and producer[t].op_type in _VIEWS and producer[t].input:
        t = real(producer[t].input[0])
        if nbytes(t):
            best = min(best, nbytes(t))
    return best


def _weights_read(group: list[int], nodes: list, real, sources: dict[str, frozenset[str]], nbytes) -> dict[str, int]:
    """Bytes read per inference of the weights a fused op uses, where that is less than the whole tensor: a
    weight used only as the data input of Gather-family nodes (an embedding table) is read one output's worth
    per lookup, at most its own size. Weights absent from the result are read whole."""
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


def parse_input_shapes(specs: list[str] | tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    """Parse CLI `--input-shape` values like "input_ids=1x128" into {"input_ids": (1, 128)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = spec.partition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise UserError(f"bad --input-shape '{spec}'", "write NAME=DIMS with sizes >= 1 joined by x, "
                            "e.g. --input-shape input_ids=1x128")
        shapes[name.strip()] = shape
    return shapes


# --- reading and shape resolution ---------------------------------------------------------------------------------
def _read_model(path: str | os.PathLike) -> onnx.ModelProto:
    p = os.fspath(path)
    if os.path.isdir(p):
        raise UserError(f"model {p} is a directory, not an ONNX file", "pass the .onnx file inside it")
    if not os.path.isfile(p):
        raise UserError(f"model file {p} does not exist", "check the path (an .onnx file exported from your "
                        "framework)")
    size = os.path.getsize(p)
    try:
        model = onnx.load(p, load_external_data=False)
    except DecodeError as exc:
        if "truncat" in str(exc).lower() or _looks_like_onnx(p):
            raise UserError(f"{p} is truncated or corrupt ({size} bytes, protobuf error: {exc})",
                            "re-export or re-download the model") from exc
        raise UserError(f"{p} is not an ONNX model (not a protobuf file)", "pass an .onnx file") from exc
    except Exception as exc:  # onnx raises various errors on garbage
        raise UserError(f"{p} could not be read as ONNX ({type(exc).__name__}: {exc})",
                        "pass a valid .onnx file; re-export it if it is damaged") from exc
    if not model.HasField("graph") or (model.ir_version == 0 and not model.opset_import):
        raise UserError(f"{p} is not an ONNX model (no graph or IR version in it)", "pass an .onnx file")
    if len(model.graph.node) == 0:
        raise UserError(f"{p} has an empty graph (0 nodes)", "export the model with its compute graph")
    if model.functions:  # model-local functions (dynamo exports): cost the nodes inside them
        model = onnx.inliner.inline_local_functions(model)
    return model


def _looks_like_onnx(path: str) -> bool:
    """An ONNX file starts with field 1 (ir_version, varint): byte 0x08."""
    with open(path, "rb") as f:
        head = f.read(1)
    return head == b"\x08"


def _reject_empty_weights(inits: dict) -> None:
    """A weight with a dimension of 0 or less has no elements: every op reading it would cost nothing and the
    throughput would be meaningless (1e9/s), so it is an error rather than a silent zero."""
    for name, (_, dims) in inits.items():
        bad = [d for d in dims if d <= 0]
        if bad:
            raise UserError(f"weight '{name}' has shape {list(dims)}, with a dimension of {bad[0]}",
                            "re-export the model; every weight dimension must be at least 1")


def _declared_size_bad(vi, j: int, d) -> None:
    """A model input that declares a dimension of 0 or less (not symbolic, not unknown) is refused, not defaulted."""
    if d.HasField("dim_value") and d.dim_value <= 0:
        raise UserError(f"model input '{vi.name}' declares dim {j} as {d.dim_value}",
                        f"pass --input-shape {vi.name}=... with sizes >= 1, or re-export the model")


def _resolve_input_shapes(model_inputs, overrides: dict, default_dim: int = DEFAULT_DIM) -> dict[str, tuple[int, ...]]:
    names = [vi.name for vi in model_inputs]
    for name in overrides:
        if name not in names:
            raise UserError(f"--input-shape names '{name}', which is not a model input (inputs: "
                            f"{', '.join(names) or 'none'})", "use one of the model's input names")
    resolved: dict[str, tuple[int, ...]] = {}
    named: dict[str, int] = {}  # symbolic dim name -> size given for it by an override ("sequence" -> 384)
    for vi in model_inputs:
        if vi.name in overrides and vi.type.tensor_type.HasField("shape"):
            for d, w in zip(vi.type.tensor_type.shape.dim, overrides[vi.name]):
                if d.dim_param and not (d.HasField("dim_value") and d.dim_value > 0):
                    named.setdefault(d.dim_param, int(w))
    for vi in model_inputs:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            if vi.name not in overrides:
                raise UserError(f"model input '{vi.name}' has no shape (unknown rank)", _INPUT_SHAPE_FIX)
            resolved[vi.name] = tuple(int(d) for d in overrides[vi.name])
            continue
        dims = list(tt.shape.dim)
        if vi.name in overrides:
            want = tuple(int(d) for d in overrides[vi.name])
            if len(want) != len(dims):
                raise UserError(f"--input-shape {vi.name} has {len(want)} dims but the model input has "
                                f"{len(dims)} ({_fmt_shape(_dims(dims))})", "give one size per dim, e.g. 1x128")
            for j, (d, w) in enumerate(zip(dims, want)):
                if w <= 0:
                    raise UserError(f"--input-shape {vi.name} has size {w} in dim {j}", "sizes must be >= 1")
                if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != w:
                    raise UserError(f"--input-shape {vi.name} sets dim {j} to {w} but the model fixes it to "
                                    f"{d.dim_value}", f"use {d.dim_value} in dim {j}")
            resolved[vi.name] = want
        else:
            for j, d in enumerate(dims):
                _declared_size_bad(vi, j, d)
            resolved[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
                named.get(d.dim_param, DEFAULT_BATCH if j == 0 else default_dim) for j, d in enumerate(dims))
    return resolved


def _infer_shapes(model: onnx.ModelProto, inits: dict, resolved: dict) -> onnx.ModelProto:
    """Symbolic shape inference on a copy whose inputs are concrete and whose external weights are inputs."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    # Initializers stored outside the file become typed inputs: inference needs only their shapes.
    external = [t for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        keep = [t for t in g.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
        declared = {vi.name for vi in g.input}
        for t in external:
            if t.name not in declared:
                g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        del g.initializer[:]
        g.initializer.extend(keep)
    for vi in g.input:
        if vi.name in resolved:
            shape = vi.type.tensor_type.shape
            shape.Clear()
            for d in resolved[vi.name]:
                shape.dim.add().dim_value = int(d)
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sym = SymbolicShapeInference(2**31 - 1, True, False, 0)
            sym._preprocess(m)
            while sym.run_:
                sym._infer_impl()
            sym._update_output_from_vi()
            return sym.out_mp_
    except Exception:  # noqa: BLE001 - fall back to ONNX's own inference; unknown dims are reported below
        try:
            return onnx.shape_inference.infer_shapes(m, data_prop=True)
        except Exception:  # noqa: BLE001
            return m


def _collect_shapes(m: onnx.ModelProto, original: onnx.ModelProto, inits: dict):
    """Tensor name -> shape (None for unknown dims or rank) and element type; inferred shapes win, but shapes
    the file itself declares fill in what inference left unknown (e.g. outputs of custom ops)."""
    shapes: dict[str, tuple | None] = {}
    dtypes: dict[str, int] = {}
    for g, inferred in ((original.graph, False), (m.graph, True)):
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            if not vi.type.HasField("tensor_type"):
                continue
            tt = vi.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None
                          for d in tt.shape.dim) if tt.HasField("shape") else None
            known = shape is not None and None not in shape
            old = shapes.get(vi.name)
            if not inferred or known or old is None:
                shapes[vi.name] = shape
            if tt.elem_type:
                dtypes[vi.name] = tt.elem_type
    for name, (dtype, dims) in inits.items():
        dtypes[name], shapes[name] = dtype, dims
    return shapes, dtypes


def _constant_shape(node, shapes: dict, dtypes: dict) -> None:
    out = node.output[0]
    for a in node.attribute:
        if a.name == "value":
            shapes[out], dtypes[out] = tuple(int(d) for d in a.t.dims), a.t.data_type
            return
        if a.name in ("value_float", "value_int"):
            shapes[out], dtypes[out] = (), 1 if a.name == "value_float" else 7
            return
        if a.name in ("value_floats", "value_ints"):
            n = len(a.floats) if a.name == "value_floats" else len(a.ints)
            shapes[out], dtypes[out] = (n,), 1 if a.name == "value_floats" else 7
            return
    shapes.setdefault(out, ())
    dtypes.setdefault(out, 1)


def _ordered_nodes(graph) -> tuple[list, list[str]]:
    """Nodes in a topological order (stable: ONNX file order where it is already valid) and unique names."""
    nodes = list(graph.node)
    available = {vi.name for vi in graph.input} | {t.name for t in graph.initializer} | {""}
    produced_by = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    indeg, succ = [0] * len(nodes), defaultdict(list)
    for i, n in enumerate(nodes):
        deps = {produced_by[t] for t in n.input if t not in available and t in produced_by}
        indeg[i] = len(deps)
        for d in deps:
            succ[d].append(i)
    import heapq
    ready = [i for i in range(len(nodes)) if indeg[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        raise UserError("the ONNX graph has a cycle", "re-export the model; ONNX graphs must be acyclic")
    seen: set[str] = set()
    names = []
    for i in order:
        n = nodes[i]
        name = n.name if n.name and n.name not in seen else f"{n.op_type}_{i}"
        while name in seen:
            name += "_"
        seen.add(name)
        names.append(name)
    return [nodes[i] for i in order], names


# --- costs ------------------------------------------------------------------------------------------------------
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
    if t in ("Attention", "MultiHeadAttention"):
        return _attention_cost(node, in_shapes)
    if t in _ELEMENTWISE:
        return _ELEMENTWISE[t] * _numel(out0), 0
    if t in _FUSED_MOVEMENT or t in _MOVEMENT:
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
                      stacklevel=3)
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


def _unresolved_fix(model: onnx.ModelProto, path, tensor: str, guessed: set[str]) -> str:
    """Name the input shape that would resolve the tensor, only when it derives from an input whose size was
    guessed; otherwise say what would (the weights, for the onnxruntime run, or a static-shape export)."""
    named = sorted(input_ancestors(model.graph, tensor) & guessed)
    if tensor in data_dependent(model.graph):
        return ("no input shape would: its size depends on the values of a NonZero/Unique-like op; re-export the "
                "model without it or with a static bound")
    if named:
        return (f"pass --input-shape for {', '.join(named)} (its size was guessed: symbolic dims default to "
                f"batch 1, sequence {DEFAULT_DIM}), e.g. --input-shape {named[0]}=1x{DEFAULT_DIM}")
    if not carries_weights(model, path):
        return ("no input shape would: the size depends on values; load the model with its weights (onnxruntime "
                "then reads the shape) or re-export it with static shapes")
    return "no input shape would: re-export the model with static shapes (e.g. torch.onnx.export without dynamic_axes)"


# --- messages --------------------------------------------------------------------------------------------------
def _dims(dims) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def _fmt_shape(shape) -> str:
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _fmt_inputs(resolved: dict) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in resolved.items()) or "(none)"
