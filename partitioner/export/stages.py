"""What a split is made of: Stage (one chiplet's ONNX program) and Split (stages plus the manifest), and the ONNX
helpers both cutters share (split_onnx for whole ops, split_staged for split ops): the tensors a node reads, every
tensor's type, building a stage's model, and checking that a graph was imported from the model being cut."""
from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from partitioner.core.errors import UserError


MANIFEST_FORMAT = 1
FIX_OTHER_MODEL = "pass the model and the partition.json made from it (same --input-shape and precision)"


@dataclass(frozen=True)
class Stage:
    """One chiplet's program.

    inputs: tensors it reads that it does not make, each with where it comes from: a chiplet id, or "input"
        for a model input fed to it directly.
    sends: tensors it makes that others read, each with the chiplets that read it ("output" for the caller).
    step, sources, targets: only for splits of sharded partitions, where a chiplet may run several stages: the
        stage's depth in the stage graph, and the stage file each input comes from / each output goes to.
    """

    chiplet: int
    model: onnx.ModelProto
    inputs: dict[str, int | str]
    sends: dict[str, tuple[int | str, ...]]
    step: int | None = None
    sources: dict[str, str] | None = None
    targets: dict[str, tuple[str, ...]] | None = None

    @property
    def file(self) -> str:
        return f"stage_{self.chiplet}.onnx" if self.step is None else f"stage_{self.chiplet}_{self.step}.onnx"

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.sends)


@dataclass(frozen=True)
class Split:
    """Stages in pipeline order (ascending chiplet id; for sharded partitions (step, chiplet)) and the JSON
    manifest that describes them. `sharded`: per split op, which of its nodes run as pieces and which whole where
    (split_pieces.rewrite); empty for whole-op partitions."""

    stages: tuple[Stage, ...]
    model_inputs: tuple[str, ...]
    model_outputs: tuple[str, ...]
    sharded: tuple[dict, ...] = ()

    def manifest(self, model_name: str = "") -> dict:
        doc = {
            "format": MANIFEST_FORMAT,
            "model": model_name,
            "inputs": list(self.model_inputs),
            "outputs": {t: _producer(self.stages, t) for t in self.model_outputs},
            "stages": [{
                "step": k if s.step is None else s.step,
                "file": s.file,
                "chiplets": [s.chiplet],
                "chiplet": s.chiplet,
                "nodes": len(s.model.graph.node),
                "inputs": [{"name": t, "from": src} | ({} if s.sources is None else {"stage": s.sources[t]})
                           for t, src in s.inputs.items()],
                "outputs": [{"name": t, "to": list(dst)} | ({} if s.targets is None else
                                                            {"stages": list(s.targets[t])})
                            for t, dst in s.sends.items()],
            } for k, s in enumerate(self.stages)],
        }
        if self.sharded:
            doc["sharded"] = [dict(op) for op in self.sharded]
        return doc


def _producer(stages: tuple[Stage, ...], tensor: str) -> int | str:
    for s in stages:
        if "output" in s.sends.get(tensor, ()):
            return s.chiplet
    return "input"


def check_nodes(g: onnx.GraphProto, names: dict, owner: dict) -> None:
    """Every ONNX node is in the imported graph and every op node in the ONNX model (the same model)."""
    seen = set()
    for node in g.node:
        name = names.get(next((o for o in node.output if o), ""))
        if name is None:
            raise UserError(f"ONNX node '{node.name or node.op_type}' is not in the imported graph",
                            FIX_OTHER_MODEL)
        seen.add(name)
    missing = [n for n in owner if n not in seen]
    if missing:
        raise UserError(f"op node '{missing[0]}' of the partition is not in this ONNX model", FIX_OTHER_MODEL)


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads, including those its subgraphs (If/Loop/Scan bodies) read from outside."""
    out = [t for t in node.input if t]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            inner = {o for n in sub.node for o in n.output} | {i.name for i in sub.input} | \
                    {t.name for t in sub.initializer}
            out += [t for n in sub.node for t in node_inputs(n) if t not in inner]
    return out


def first_out(node: onnx.NodeProto) -> str:
    return next((o for o in node.output if o), "")


def value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Type (element type and, where known, shape) of every tensor, from ONNX's own inference."""
    try:  # on the weightless view: a model with > 2 GiB of inline weights cannot be serialised for inference
        inferred = onnx.shape_inference.infer_shapes(weights_as_inputs(model, all_weights=True), strict_mode=False)
    except Exception:  # noqa: BLE001 - a model ONNX cannot infer still splits; unknown types are reported below
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type for vi in list(g.input) + list(g.value_info) + list(g.output)}


def stage_model(model: onnx.ModelProto, chiplet: int, nodes: list[int], inputs: dict, outputs: list[str],
                 inits: dict, types: dict, resolved: dict) -> onnx.ModelProto:
    g = model.graph
    node_list = [g.node[k] for k in nodes]  # ascending file index keeps the model's topological order
    used = {t for n in node_list for t in node_inputs(n)}

    def value_info(name: str) -> onnx.ValueInfoProto:
        if name not in types or not types[name].HasField("tensor_type") or not types[name].tensor_type.elem_type:
            raise UserError(f"cannot tell the element type of tensor '{name}' crossing into or out of chiplet "
                            f"{chiplet}", "re-export the model so ONNX shape inference can type every tensor")
        vi = onnx.ValueInfoProto()
        vi.name = name
        vi.type.CopyFrom(types[name])
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):  # ONNX inference lost the rank: use the shape the importer resolved
            if name not in resolved:
                raise UserError(f"cannot tell the shape of tensor '{name}' crossing into or out of chiplet "
                                f"{chiplet}", "pass --input-shape for every model input")
            tt.shape.SetInParent()
            for d in resolved[name]:
                tt.shape.dim.add().dim_value = int(d)
        return vi

    sg = onnx.helper.make_graph(
        node_list, f"{g.name or 'model'}_chiplet{chiplet}",
        [value_info(t) for t in inputs], [value_info(t) for t in outputs],
        initializer=[inits[t] for t in sorted(used) if t in inits])
    m = onnx.helper.make_model(sg, opset_imports=list(model.opset_import), producer_name="chiplet-partitioner")
    m.ir_version = model.ir_version
    return m


def weights_as_inputs(model: onnx.ModelProto, all_weights: bool) -> onnx.ModelProto:
    """`model` with its external-data weights (or, with `all_weights`, every one over 1,024 elements) turned into
    typed graph inputs: what shape inference and the checker need, without the bytes (absent for graph-only
    models, over 2 GiB for large ones). Small ones stay: shape inference reads the values of shape vectors."""
    g = model.graph
    moved = [t for t in g.initializer if t.data_location == onnx.TensorProto.EXTERNAL
             or (all_weights and math.prod(t.dims) > 1024)]
    if not moved:
        return model
    names, declared = {t.name for t in moved}, {vi.name for vi in g.input}
    inputs = list(g.input) + [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                              for t in moved if t.name not in declared]
    graph = onnx.helper.make_graph(list(g.node), g.name, inputs, list(g.output),
                                   initializer=[t for t in g.initializer if t.name not in names],
                                   value_info=list(g.value_info))
    m = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), functions=list(model.functions))
    m.ir_version = model.ir_version
    return m
