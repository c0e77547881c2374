"""Cut an ONNX model into one executable ONNX model per chiplet, following a partition.

A pure function: (TensorGraph, assignment, ModelProto) -> Split. Every ONNX node that does compute belongs to the
op the importer fused it into, so it runs on that op's chiplet. Nodes the importer folded away (Constant, Shape,
Identity/Dropout, anything computed only from weights and shapes) have no chiplet of their own: each stage gets a
copy of every such node it needs, so a cheap constant subgraph that two stages read is duplicated in both. A stage
carries the initializers its nodes read, exactly as the model stores them (inline bytes, or the external-data
reference of a graph-only model). Tensors a stage reads from an earlier stage are its inputs; tensors a later stage
or the caller reads are its outputs. The manifest (docs/split.md) lists the stages in pipeline order and which
tensors cross from which chiplet to which.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph

MANIFEST_FORMAT = 1
_FIX_OTHER_MODEL = "pass the model and the partition.json made from it (same --input-shape and precision)"


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


def split_model(graph: TensorGraph, assignment: np.ndarray, model: onnx.ModelProto,
                shard: np.ndarray | None = None, n_chiplets: int | None = None,
                axes: tuple[str, ...] | None = None) -> Split:
    """Per-chiplet ONNX models for `model` cut as `assignment` (one chiplet id per op of `graph`, which must be
    `load_onnx` of this model). Raises UserError naming the node when the graph is of another model or a stage
    would need a tensor from a later stage. With `shard` (degree per op, partition.Partition.shard) ops split k > 1
    ways run as pieces on their group (split_pieces, split_staged; `n_chiplets` bounds the groups) along `axes`
    (one per op: the axes partition.json records; None: sharding.layout without rule S8)."""
    a = np.asarray(assignment)
    if a.shape != (graph.n_ops,) or not np.issubdtype(a.dtype, np.integer):
        raise UserError(f"the assignment has shape {a.shape} and type {a.dtype}, expected {graph.n_ops} integer "
                        "chiplet ids", _FIX_OTHER_MODEL)
    if model.functions:  # the importer costs inlined bodies; split the same nodes
        model = onnx.inliner.inline_local_functions(model)
    g = model.graph
    names = graph.metadata.get("onnx_node_names")
    if names is None:
        raise UserError(f"graph {graph.name} was not imported from an ONNX file", "load it with load_onnx")
    owner = graph.onnx_node_owner()
    if shard is not None and (np.asarray(shard) != 1).any():
        _check_nodes(g, names, owner)
        from partitioner.export.split_staged import split_sharded  # it builds on this module's stage writer

        return split_sharded(graph, a, np.asarray(shard), model, n_chiplets, axes)
    # --- a chiplet for every compute node; None for the folded ones ----------------------------------------
    node_chip: list[int | None] = []
    seen: set[str] = set()
    for node in g.node:
        name = names.get(next((o for o in node.output if o), ""))
        if name is None:
            raise UserError(f"ONNX node '{node.name or node.op_type}' is not in the imported graph",
                            _FIX_OTHER_MODEL)
        seen.add(name)
        node_chip.append(int(a[owner[name]]) if name in owner else None)
    missing = [n for n in owner if n not in seen]
    if missing:
        raise UserError(f"op node '{missing[0]}' of the partition is not in this ONNX model", _FIX_OTHER_MODEL)

    producer = {o: k for k, node in enumerate(g.node) for o in node.output if o}
    inits = {t.name: t for t in g.initializer}
    graph_inputs = [vi.name for vi in g.input if vi.name not in inits]
    graph_outputs = [vi.name for vi in g.output]
    for t in graph_outputs:
        if t not in producer:
            raise UserError(f"model output '{t}' is not computed by any node", "export the model with its outputs "
                            "computed by the graph")
    types = _value_types(model)

    # --- each stage: its compute nodes plus the folded nodes they need, found backwards ----------------------
    chips = sorted({c for c in node_chip if c is not None})
    members: dict[int, set[int]] = {}
    reads: dict[int, dict[str, int | str]] = {}
    for c in chips:
        todo = [k for k, ch in enumerate(node_chip) if ch == c]
        if c == chips[-1]:  # model outputs made by folded nodes come out of the last stage
            todo += [producer[t] for t in graph_outputs if node_chip[producer[t]] is None]
        mine: set[int] = set()
        ins: dict[str, int | str] = {}
        while todo:
            k = todo.pop()
            if k in mine:
                continue
            mine.add(k)
            for t in _node_inputs(g.node[k]):
                if t in inits:
                    continue
                if t not in producer:
                    ins.setdefault(t, "input")
                    continue
                p = producer[t]
                src = node_chip[p]
                if src is None or src == c:
                    todo.append(p)
                elif src > c:
                    maker = names[_first_out(g.node[p])]
                    raise UserError(
                        f"node '{names[_first_out(g.node[k])]}' on chiplet {c} reads tensor '{t}' made by node "
                        f"'{maker}' on later chiplet {src}",
                        f"put op '{graph.ops[owner[maker]].name}' (holding node '{maker}') on chiplet {c} or earlier "
                        "(re-run `partition`; tensors must flow forward in pipeline order)")
                else:
                    ins.setdefault(t, src)
        members[c], reads[c] = mine, ins
    # Model outputs made by compute nodes come out of their stage; folded ones out of the last stage.
    out_of = {t: node_chip[producer[t]] if node_chip[producer[t]] is not None else chips[-1] for t in graph_outputs}

    stages = []
    for c in chips:
        made = {o for k in members[c] for o in g.node[k].output if o}
        sends: dict[str, list[int | str]] = {}
        for d in chips:
            for t, src in reads[d].items():
                if src == c:
                    sends.setdefault(t, []).append(d)
        for t in graph_outputs:
            if out_of[t] == c:
                sends.setdefault(t, []).append("output")
        assert all(t in made for t in sends)
        stage_model = _stage_model(model, c, sorted(members[c]), reads[c], list(sends), inits, types,
                                   graph.metadata.get("tensor_shapes", {}))
        stages.append(Stage(c, stage_model, reads[c], {t: tuple(v) for t, v in sends.items()}))
    return Split(tuple(stages), tuple(graph_inputs), tuple(graph_outputs))


def _check_nodes(g: onnx.GraphProto, names: dict, owner: dict) -> None:
    """Every ONNX node is in the imported graph and every op node in the ONNX model (the same model)."""
    seen = set()
    for node in g.node:
        name = names.get(next((o for o in node.output if o), ""))
        if name is None:
            raise UserError(f"ONNX node '{node.name or node.op_type}' is not in the imported graph",
                            _FIX_OTHER_MODEL)
        seen.add(name)
    missing = [n for n in owner if n not in seen]
    if missing:
        raise UserError(f"op node '{missing[0]}' of the partition is not in this ONNX model", _FIX_OTHER_MODEL)


def _node_inputs(node: onnx.NodeProto) -> list[str]:
    """Tensors a node reads, including those its subgraphs (If/Loop/Scan bodies) read from outside."""
    out = [t for t in node.input if t]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
            inner = {o for n in sub.node for o in n.output} | {i.name for i in sub.input} | \
                    {t.name for t in sub.initializer}
            out += [t for n in sub.node for t in _node_inputs(n) if t not in inner]
    return out


def _first_out(node: onnx.NodeProto) -> str:
    return next((o for o in node.output if o), "")


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    """Type (element type and, where known, shape) of every tensor, from ONNX's own inference."""
    try:  # on the weightless view: a model with > 2 GiB of inline weights cannot be serialised for inference
        inferred = onnx.shape_inference.infer_shapes(_weights_as_inputs(model, all_weights=True), strict_mode=False)
    except Exception:  # noqa: BLE001 - a model ONNX cannot infer still splits; unknown types are reported below
        inferred = model
    g = inferred.graph
    return {vi.name: vi.type for vi in list(g.input) + list(g.value_info) + list(g.output)}


def _stage_model(model: onnx.ModelProto, chiplet: int, nodes: list[int], inputs: dict, outputs: list[str],
                 inits: dict, types: dict, resolved: dict) -> onnx.ModelProto:
    g = model.graph
    node_list = [g.node[k] for k in nodes]  # ascending file index keeps the model's topological order
    used = {t for n in node_list for t in _node_inputs(n)}

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


# --- writing -----------------------------------------------------------------------------------------------------
_LARGE_STAGE = 1 << 30  # protobuf files stop at 2 GiB: larger stages keep their weights in stage_<c>.onnx.data


def write_split(split: Split, out_dir: str | os.PathLike, model_name: str = "") -> list[str]:
    """Write stage_<c>.onnx per stage and manifest.json into `out_dir` as one set: everything is built in a
    temporary sibling directory that replaces `out_dir` by rename, so a failure leaves `out_dir` as it was.
    `out_dir` may be new, empty, or hold a previous split; anything else in it is refused, never deleted."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file", "pass a directory for the stages")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if not _ours(p.name))
        if foreign:
            raise UserError(f"--out {out} holds files a split did not write ({', '.join(foreign[:3])})",
                            "pass a new or empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for s in split.stages:
            for problem in _check(s.model):
                raise UserError(f"stage {s.file} fails onnx.checker: {problem}", "report this model to the "
                                "developers; the split of this partition is not a valid ONNX model")
            path = tmp / s.file
            if s.model.ByteSize() > _LARGE_STAGE:
                onnx.save_model(s.model, path, save_as_external_data=True, location=f"{s.file}.data")
            else:
                onnx.save_model(s.model, path)
        (tmp / "manifest.json").write_text(json.dumps(split.manifest(model_name), indent=2) + "\n",
                                           encoding="utf-8")
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "d")
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [str(out / s.file) for s in split.stages] + [str(out / "manifest.json")]


def _ours(name: str) -> bool:
    return name == "manifest.json" or (name.startswith("stage_") and (name.endswith(".onnx")
                                                                        or name.endswith(".onnx.data")))


def _check(model: onnx.ModelProto) -> list[str]:
    """onnx.checker's complaint, if any. Weights whose external data file is absent (graph-only models) are
    checked as typed graph inputs: the checker would otherwise reject the missing file, not the stage."""
    try:
        onnx.checker.check_model(_weights_as_inputs(model, all_weights=False), full_check=False)
    except onnx.checker.ValidationError as exc:
        return [str(exc).splitlines()[0]]
    return []


def _weights_as_inputs(model: onnx.ModelProto, all_weights: bool) -> onnx.ModelProto:
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


# --- verifying ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verification:
    """The stages run in manifest order against the whole model on the same random inputs."""

    max_abs_diff: float
    per_output: dict[str, float]
    stages_run: int


def random_inputs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Random feeds of the resolved shapes: floats ~ N(0, 1); integers and booleans in {0, 1}, valid as token
    ids, token types and masks alike."""
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        shape = tuple(shapes[vi.name])
        if np.issubdtype(dtype, np.floating):
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feeds


def verify_split(model: onnx.ModelProto, split: Split, feeds: dict[str, np.ndarray]) -> Verification:
    """Run the whole model and the stages (in order, each fed from the model inputs and earlier stages' outputs)
    in onnxruntime on `feeds`; the largest absolute difference over every model output."""
    import onnxruntime as ort

    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise UserError(f"the model's weight '{t.name}' is not in memory (its external data file is absent)",
                            "verify a model exported with its weights")

    def session(m: onnx.ModelProto):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # No graph rewrites: the whole model and the stages run the same kernels, so differences are the split's.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])

    whole = dict(zip(split.model_outputs, session(model).run(list(split.model_outputs), feeds)))
    env = dict(feeds)
    for s in split.stages:
        names = [o.name for o in s.model.graph.output]
        for t, v in zip(names, session(s.model).run(names, {t: env[t] for t in s.inputs})):
            env[t] = v
    diffs = {t: float(np.max(np.abs(whole[t].astype(np.float64) - env[t].astype(np.float64)), initial=0.0))
             for t in split.model_outputs}
    return Verification(max(diffs.values(), default=0.0), diffs, len(split.stages))
