"""Resolve tensor shapes and fold away the nodes that compute nothing at run time.

Every tensor shape is resolved with onnxruntime's symbolic shape inference at the model inputs' fixed shapes.
Initializers, Constant nodes, shape queries and anything computed only from them are folded (they cost
nothing); every node left must then have fully resolved shapes, and what inference missed, the fallbacks of
shape_resolve.py try.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import onnx

from partitioner.core.errors import UserError
from partitioner.frontend.read import DEFAULT_DIM, ModelInputs, fmt_shape
from partitioner.frontend.shape_resolve import carries_weights, data_dependent, input_ancestors, resolve_missing

# Nodes whose outputs alias their first input: removed, consumers read the input directly.
_ALIAS = {"Identity", "Dropout"}
# Nodes whose outputs are constant whatever their inputs (shape queries) or that have no inputs at all.
_SHAPE_QUERIES = {"Shape", "Size"}


@dataclass
class Tensors:
    """Shape (None for an unknown rank, None dims where unknown) and ONNX element type of every tensor, and the
    constants, name -> (element type, dims): the initializers, then the Constant-node outputs folding finds."""
    shapes: dict[str, tuple | None]
    dtypes: dict[str, int]
    consts: dict[str, tuple[int, tuple[int, ...]]]


@dataclass
class Folded:
    """What folding leaves: the compute nodes kept (indices into the ordered nodes), the aliases removed nodes
    leave, and for each constant tensor the initializers (weights) it derives from."""
    kept: list[int]
    alias: dict[str, str]
    sources: dict[str, frozenset[str]]

    def real(self, t: str) -> str:
        """The tensor a consumer of `t` actually reads, past Identity/Dropout aliases."""
        while t in self.alias:
            t = self.alias[t]
        return t


def infer_shapes(model: onnx.ModelProto, resolved: dict) -> onnx.ModelProto:
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


def collect_shapes(m: onnx.ModelProto, original: onnx.ModelProto, inits: dict) -> Tensors:
    """Every tensor's shape and element type; inferred shapes win, but shapes the file itself declares fill in
    what inference left unknown (e.g. outputs of custom ops). `inits` becomes Tensors.consts, not a copy."""
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
    return Tensors(shapes, dtypes, inits)


def fold_constants(nodes: list, tensors: Tensors, path: str | os.PathLike) -> Folded:
    """Fold initializers, Constant nodes, shape queries and anything computed only from them; drop aliases.
    Constant-node outputs join tensors.consts (and get their shapes); a model with nothing left is an error."""
    folded = Folded(kept=[], alias={}, sources={name: frozenset([name]) for name in tensors.consts})
    real, sources = folded.real, folded.sources
    for i, node in enumerate(nodes):
        ins = [real(t) for t in node.input if t]
        if node.op_type in _ALIAS and node.domain in ("", "ai.onnx") and ins:
            for out in node.output[:1]:
                folded.alias[out] = ins[0]
            continue
        if node.op_type == "Constant" or node.op_type in _SHAPE_QUERIES or all(t in sources for t in ins):
            if node.op_type == "Constant" and node.output:
                _constant_shape(node, tensors.shapes, tensors.dtypes)
                out = node.output[0]
                sources[out] = frozenset([out])
                tensors.consts.setdefault(out, (tensors.dtypes[out], tensors.shapes[out]))
                continue
            derived = frozenset().union(*(sources[t] for t in ins)) if node.op_type not in _SHAPE_QUERIES \
                else frozenset()
            for out in node.output:
                if out:
                    sources[out] = derived
            continue
        folded.kept.append(i)
    if not folded.kept:
        raise UserError(f"{os.fspath(path)} has no compute nodes (all {len(nodes)} nodes are constants or shape "
                        "computations)", "export the model with its compute graph, e.g. torch.onnx.export of the "
                        "whole module")
    return folded


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


def resolve_remaining_shapes(tensors: Tensors, nodes: list, names: list[str], folded: Folded, *,
                             model: onnx.ModelProto, inferred: onnx.ModelProto, path: str | os.PathLike,
                             inputs: ModelInputs) -> None:
    """Give every tensor a kept node reads or writes a full shape: the fallbacks fill in what inference missed
    (into tensors), and a tensor still unknown is a UserError naming the input shape that would fix it."""
    missing = _unresolved(tensors, nodes, folded)
    if missing:
        for t, (shape, dtype) in resolve_missing(inferred, path, {t for t, _ in missing}, inputs.shapes).items():
            tensors.shapes[t] = shape
            tensors.dtypes.setdefault(t, dtype)
        missing = _unresolved(tensors, nodes, folded)
    if missing:
        t, i = missing[0]
        raise UserError(f"cannot resolve the shape of tensor '{t}' (read or written by node '{names[i]}', "
                        f"shape {fmt_shape(tensors.shapes.get(t))}) from input shapes {_fmt_inputs(inputs.shapes)}, "
                        "constant folding or a run of the model", _unresolved_fix(model, path, t, inputs.guessed))


def _unresolved(tensors: Tensors, nodes: list, folded: Folded) -> list[tuple[str, int]]:
    """(tensor, node index) for each tensor of a kept node whose shape is not fully known."""
    out = []
    for i in folded.kept:
        node = nodes[i]
        for t in [folded.real(x) for x in node.input if x] + [o for o in node.output if o]:
            shape = tensors.shapes.get(t)
            if t in tensors.consts or (t in folded.sources and (shape is None or None in shape)):
                continue  # a folded constant of unknown size: costs nothing, moves no activation bytes
            if shape is None or any(d is None for d in shape):
                out.append((t, i))
    return out


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


def _fmt_inputs(resolved: dict) -> str:
    return ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in resolved.items()) or "(none)"
