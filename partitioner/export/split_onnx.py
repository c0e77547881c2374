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
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.export.split_staged import split_sharded
from partitioner.export.stages import (FIX_OTHER_MODEL, Split, Stage, check_nodes, first_out, node_inputs,
                                       stage_model, value_types, weights_as_inputs)


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
                        "chiplet ids", FIX_OTHER_MODEL)
    if model.functions:  # the importer costs inlined bodies; split the same nodes
        model = onnx.inliner.inline_local_functions(model)
    g = model.graph
    names = graph.metadata.get("onnx_node_names")
    if names is None:
        raise UserError(f"graph {graph.name} was not imported from an ONNX file", "load it with load_onnx")
    owner = graph.onnx_node_owner()
    check_nodes(g, names, owner)
    if shard is not None and (np.asarray(shard) != 1).any():
        return split_sharded(graph, a, np.asarray(shard), model, n_chiplets, axes)
    # --- a chiplet for every compute node; None for the folded ones ----------------------------------------
    node_chip = [int(a[owner[names[first_out(node)]]]) if names[first_out(node)] in owner else None
                 for node in g.node]

    producer = {o: k for k, node in enumerate(g.node) for o in node.output if o}
    inits = {t.name: t for t in g.initializer}
    graph_inputs = [vi.name for vi in g.input if vi.name not in inits]
    graph_outputs = [vi.name for vi in g.output]
    for t in graph_outputs:
        if t not in producer:
            raise UserError(f"model output '{t}' is not computed by any node", "export the model with its outputs "
                            "computed by the graph")
    types = value_types(model)

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
            for t in node_inputs(g.node[k]):
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
                    maker = names[first_out(g.node[p])]
                    raise UserError(
                        f"node '{names[first_out(g.node[k])]}' on chiplet {c} reads tensor '{t}' made by node "
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
        program = stage_model(model, c, sorted(members[c]), reads[c], list(sends), inits, types,
                              graph.metadata.get("tensor_shapes", {}))
        stages.append(Stage(c, program, reads[c], {t: tuple(v) for t, v in sends.items()}))
    return Split(tuple(stages), tuple(graph_inputs), tuple(graph_outputs))


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
        onnx.checker.check_model(weights_as_inputs(model, all_weights=False), full_check=False)
    except onnx.checker.ValidationError as exc:
        return [str(exc).splitlines()[0]]
    return []


