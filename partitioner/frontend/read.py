"""Read an ONNX file and fix its model inputs' shapes.

Only the graph is read, never weight values: initializer sizes come from their TensorProto dims and data type,
so graph-only files whose external weight file is absent work, and files with external data present are
loaded without reading it. Model-local functions are inlined so that the nodes inside them are costed.
Symbolic input dims default to 1 for the first dim and 128 for the others unless `input_shapes` names them.
"""
from __future__ import annotations

import heapq
import os
from collections import defaultdict
from dataclasses import dataclass

import onnx
import onnx.inliner
from google.protobuf.message import DecodeError

from partitioner.core.errors import UserError
from partitioner.frontend.causal import is_cache_name

DEFAULT_BATCH = 1
DEFAULT_DIM = 128
_INPUT_SHAPE_FIX = "pass --input-shape NAME=1x128 (one per model input with a symbolic size)"


@dataclass(frozen=True)
class ModelInputs:
    """The graph inputs that are not weights, the concrete shape each is loaded at, and the names of those whose
    shape was guessed (a symbolic or unknown dim the caller did not set): error messages name only these."""
    value_infos: list
    shapes: dict[str, tuple[int, ...]]
    guessed: set[str]


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """The model's graph without its weight values, local functions inlined; UserError for anything unreadable."""
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


def read_initializers(graph: onnx.GraphProto) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Weight name -> (ONNX element type, dims), from the TensorProto headers only."""
    inits = {t.name: (t.data_type, tuple(int(d) for d in t.dims)) for t in graph.initializer}
    _reject_empty_weights(inits)
    return inits


def _reject_empty_weights(inits: dict) -> None:
    """A weight with a dimension of 0 or less has no elements: every op reading it would cost nothing and the
    throughput would be meaningless (1e9/s), so it is an error rather than a silent zero."""
    for name, (_, dims) in inits.items():
        bad = [d for d in dims if d <= 0]
        if bad:
            raise UserError(f"weight '{name}' has shape {list(dims)}, with a dimension of {bad[0]}",
                            "re-export the model; every weight dimension must be at least 1")


def read_inputs(graph: onnx.GraphProto, inits: dict, input_shapes: dict[str, tuple[int, ...]] | None, *,
                decode: bool, batch: int = DEFAULT_BATCH) -> ModelInputs:
    """Concrete shapes of the model inputs: `input_shapes` where given, else the declared dims with symbolic ones
    defaulted. decode: one new token per sequence, so symbolic sequence dims default to 1, symbolic batch dims to
    `batch` (the sequences decoded together) and the symbolic length of a past KV cache taken as input to 0 (the
    cache of --context tokens is added to the attention products instead, partitioner/frontend/one_token.py)."""
    model_inputs = [vi for vi in graph.input if vi.name not in inits]
    resolved = _resolve_input_shapes(model_inputs, dict(input_shapes or {}),
                                     default_dim=1 if decode else DEFAULT_DIM, batch=batch,
                                     past_dim=0 if decode else None)
    guessed = {vi.name for vi in model_inputs if vi.name not in (input_shapes or {}) and (
        not vi.type.tensor_type.HasField("shape")
        or any(not (d.HasField("dim_value") and d.dim_value > 0) for d in vi.type.tensor_type.shape.dim))}
    return ModelInputs(model_inputs, resolved, guessed)


def _declared_size_bad(vi, j: int, d) -> None:
    """A model input that declares a dimension of 0 or less (not symbolic, not unknown) is refused, not defaulted."""
    if d.HasField("dim_value") and d.dim_value <= 0:
        raise UserError(f"model input '{vi.name}' declares dim {j} as {d.dim_value}",
                        f"pass --input-shape {vi.name}=... with sizes >= 1, or re-export the model")


def _resolve_input_shapes(model_inputs, overrides: dict, default_dim: int = DEFAULT_DIM, batch: int = DEFAULT_BATCH,
                          past_dim: int | None = None) -> dict[str, tuple[int, ...]]:
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
                                f"{len(dims)} ({fmt_shape(_dims(dims))})", "give one size per dim, e.g. 1x128")
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
            other = past_dim if past_dim is not None and is_cache_name(vi.name) else default_dim
            resolved[vi.name] = tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
                named.get(d.dim_param, batch if j == 0 else other) for j, d in enumerate(dims))
    return resolved


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


def ordered_nodes(graph: onnx.GraphProto) -> tuple[list, list[str]]:
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


def _dims(dims) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims)


def fmt_shape(shape) -> str:
    """A shape for error messages: [1, ?, 768], or "unknown" for an unknown rank."""
    if shape is None:
        return "unknown"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
