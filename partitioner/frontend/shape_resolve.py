"""Shapes the standard inference leaves unknown: constant-fold shape subgraphs, then run the model once.

ONNX's and onnxruntime's symbolic inference give up on a Reshape whose target is computed by a
Shape -> Gather -> Concat subgraph (the legacy torch exporter writes these for nn.MultiheadAttention). Two
fallbacks, cheapest first, each only asked about the tensors still unknown:

1. onnxslim constant-folds the shape subgraphs and re-infers. It works on graph-only models whose weights are
   absent: the subgraphs read only activation shapes, never weight values.
2. Where the model carries its weights, one onnxruntime run on dummy inputs of the resolved shapes, with the
   unknown tensors added as graph outputs, reads their shapes off the results.

Only shapes are taken from either; the graph that is costed stays the original one, so every op maps back to the
file's own node names.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
from onnx import helper

Shapes = dict[str, tuple[tuple[int, ...], int]]  # tensor -> (shape, ONNX element type)


def resolve_missing(inferred: onnx.ModelProto, path: str | os.PathLike, missing: set[str],
                    input_shapes: dict[str, tuple[int, ...]]) -> Shapes:
    """Shapes and element types of as many `missing` tensors as the two fallbacks find.

    inferred: the model after standard inference, its inputs already fixed to `input_shapes` (external weights
        turned into typed inputs). path: the file, reloaded with its weights for the onnxruntime run.
    """
    found = _fold_with_onnxslim(inferred, missing)
    left = missing - found.keys()
    if left:
        found.update(_run_onnxruntime(path, left, input_shapes))
    return found


def _known(vi) -> tuple[tuple[int, ...], int] | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = vi.type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") or d.dim_value < 0 for d in dims):
        return None
    return tuple(int(d.dim_value) for d in dims), vi.type.tensor_type.elem_type


def _fold_with_onnxslim(inferred: onnx.ModelProto, missing: set[str]) -> Shapes:
    """Constant folding and shape inference only: fusions and eliminations would rename the tensors we ask about."""
    try:
        import onnxslim
    except ImportError:  # pragma: no cover - a declared dependency; the onnxruntime fallback still runs
        return {}
    m = onnx.ModelProto()
    m.CopyFrom(inferred)
    del m.graph.value_info[:]  # re-infer from scratch on the folded graph
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slim = onnxslim.slim(m, skip_optimizations=["graph_fusion", "subexpression_elimination",
                                                        "weight_tying"])
    except Exception:  # noqa: BLE001 - a failed fold is a missed fallback, not an error of the model
        return {}
    if slim is None:
        return {}
    out: Shapes = {}
    for vi in list(slim.graph.value_info) + list(slim.graph.output) + list(slim.graph.input):
        if vi.name in missing and (got := _known(vi)) is not None:
            out[vi.name] = got
    return out


def carries_weights(model: onnx.ModelProto, path: str | os.PathLike) -> bool:
    """Every initializer's values are in the file or in an external data file that exists next to it."""
    base = os.path.dirname(os.fspath(path))
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            where = {e.key: e.value for e in t.external_data}.get("location")
            if not where or not os.path.isfile(os.path.join(base, where)):
                return False
        elif not (t.raw_data or t.float_data or t.int32_data or t.int64_data or t.double_data
                  or t.uint64_data or t.string_data) and int(np.prod(t.dims, dtype=np.int64)) > 0:
            return False
    return True


def _run_onnxruntime(path: str | os.PathLike, missing: set[str], input_shapes: dict) -> Shapes:
    """One inference on dummy inputs (zeros; integer inputs ones, a valid token id and mask value)."""
    try:
        import onnxruntime as ort
        model = onnx.load(os.fspath(path), load_external_data=False)
        if not carries_weights(model, path):
            return {}
        onnx.load_external_data_for_model(model, os.path.dirname(os.fspath(path)) or ".")
    except Exception:  # noqa: BLE001
        return {}
    produced = {o for n in model.graph.node for o in n.output}
    names = sorted(missing & produced - data_dependent(model.graph))
    if not names:
        return {}
    declared = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names if n not in declared)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        if vi.name not in input_shapes:
            return {}
        dtype = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type or onnx.TensorProto.FLOAT)
        fill = 1 if np.issubdtype(dtype, np.integer) else 0
        feeds[vi.name] = np.full(input_shapes[vi.name], fill, dtype=dtype)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor name
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        values = sess.run(names, feeds)
    except Exception:  # noqa: BLE001 - the model does not run here: the caller reports the tensor
        return {}
    out: Shapes = {}
    for name, value in zip(names, values):
        if isinstance(value, np.ndarray):
            out[name] = tuple(int(d) for d in value.shape), int(helper.np_dtype_to_tensor_dtype(value.dtype))
    return out


# Ops whose output size depends on the values they read: a run on dummy inputs says nothing about real ones.
_VALUE_SIZED = {"NonZero", "Unique", "NonMaxSuppression", "Compress", "StringSplit"}


def data_dependent(graph: onnx.GraphProto) -> set[str]:
    """Tensors computed from the output of a value-sized op (nodes are in topological order in valid files)."""
    tainted: set[str] = set()
    for n in graph.node:
        if n.op_type in _VALUE_SIZED or any(t in tainted for t in n.input):
            tainted.update(o for o in n.output if o)
    return tainted


def input_ancestors(graph: onnx.GraphProto, tensor: str) -> set[str]:
    """The model inputs (not initializers) a tensor is computed from."""
    producer = {o: n for n in graph.node for o in n.output if o}
    inputs = {vi.name for vi in graph.input} - {t.name for t in graph.initializer}
    seen, stack, found = set(), [tensor], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in inputs:
            found.add(t)
        elif t in producer:
            stack.extend(x for x in producer[t].input if x)
    return found
