"""`partition split`: a saved partition.json -> one ONNX model per chiplet and manifest.json, optionally verified."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from partitioner.app.document import SHARD_AXES_SIMULATED, document_settings, assignment_from_document, read_partition_file
from partitioner.app.run import load_model
from partitioner.core.errors import UserError
from partitioner.model.partition import Partition
from partitioner.model.sharding import AXES, PARTIAL_AXES, possible_axes
from partitioner.export.stages import Split
from partitioner.export.split_onnx import split_model, write_split
from partitioner.export.verify import Verification, random_inputs, verify_split

_FIX = "pass the partition.json that `partition` wrote for this model (same --input-shape)"
CUT_AXES = AXES + tuple(a for a in PARTIAL_AXES if a not in AXES)
"""Every axis sharding.layout gives a split op: the base axes plus row_parallel (a GEMM reading its producer's
slices)."""


@dataclass(frozen=True)
class SplitOutcome:
    split: Split
    files: list[str]
    verification: Verification | None


def read_assignment(graph, doc: dict, path: str) -> np.ndarray | Partition:
    """The partition file's chiplet per op (a Partition with shard degrees when some ops are split), refusing
    groups outside the package or along an axis the splitter does not know, ids outside it and other models."""
    chiplets = doc["chiplets"]
    for node, chip in doc["assignment"].items():
        # A sharded op's nodes map to a group of chiplets: {"chiplets": [c, c+1, ...], "axis": ...}.
        if isinstance(chip, list):
            raise UserError(f"partition file {path} shards node '{node}' over chiplets {chip} as a bare list",
                            'write {"chiplets": [c, c+1, ...], "axis": ...} as `partition` does')
        group = chip.get("chiplets") if isinstance(chip, dict) else None
        if isinstance(group, list) and group and all(type(c) is int for c in group):
            if not 0 <= group[0] <= group[-1] < chiplets:
                raise UserError(f"partition file {path} shards node '{node}' over chiplets {group}, past the "
                                f"package's last chiplet {chiplets - 1}", f"use a group inside chiplets 0.."
                                f"{chiplets - 1} (re-run `partition`)")
            if chip.get("axis") not in CUT_AXES:
                raise UserError(f"partition file {path} shards node '{node}' over chiplets {group} along axis "
                                f"{chip.get('axis')!r}, which `partition split` cannot cut",
                                f"use one of {', '.join(CUT_AXES)} as `partition` writes them (re-run `partition`)")
        if type(chip) is int and not 0 <= chip < chiplets:
            raise UserError(f"partition file {path} puts node '{node}' on chiplet {chip}, outside 0..{chiplets - 1}",
                            f"use chiplet ids below {chiplets}, the package size the file records")
    known = graph.onnx_node_owner()
    stray = next((n for n in doc["assignment"] if n not in known), None)
    if stray is not None:
        raise UserError(f"partition file {path} places node '{stray}', which this model does not have", _FIX)
    return assignment_from_document(graph, doc, path, chiplets)


def document_axes(graph, doc: dict, path: str, shard: np.ndarray) -> tuple[str, ...] | None:
    """The axis per op that the simulated plan ran, when the file records them ("shard_axes": "simulated"; ops
    not split: "none"); None for older files, whose axes are the ops' base ones (the split re-derives the layout).
    Refuses an axis the op cannot take and an op whose nodes disagree."""
    marker = doc.get("shard_axes")
    if marker is None:
        return None
    if marker != SHARD_AXES_SIMULATED:
        raise UserError(f"partition file {path} has \"shard_axes\": {marker!r}, expected "
                        f"{SHARD_AXES_SIMULATED!r}", "pass the partition.json `partition` wrote, unedited")
    axes = []
    for i, op in enumerate(graph.ops):
        if shard[i] == 1:
            axes.append("none")
            continue
        found = {doc["assignment"][n]["axis"] for n in op.onnx_nodes if isinstance(doc["assignment"].get(n), dict)}
        if len(found) != 1 or not found <= set(possible_axes(op)):
            raise UserError(f"partition file {path} splits op {op.name} ({op.op_type}) along "
                            f"{', '.join(map(repr, sorted(found)))}, not one axis it can take "
                            f"({', '.join(possible_axes(op))})", "pass the partition.json `partition` wrote for "
                            "this model, unedited (re-run `partition`)")
        axes.append(found.pop())
    return tuple(axes)


def load_with_weights(path: str) -> onnx.ModelProto:
    """The model with its weights when they are there; graph-only (external data absent) otherwise."""
    try:
        return onnx.load(path)
    except (FileNotFoundError, OSError, onnx.checker.ValidationError):
        return onnx.load(path, load_external_data=False)


def split(model: str, partition_path: str, out: str, input_shapes: dict, verify: bool = False,
          seed: int = 0, tolerance: float = 1e-4) -> SplitOutcome:
    """Cut `model` as `partition_path` says and write the stages to `out`; with `verify`, first check in
    onnxruntime that they compute the model (max abs difference <= tolerance) and write nothing if not."""
    doc = read_partition_file(partition_path)
    _, _, saved_shapes, saved_precision = document_settings(doc, partition_path)
    graph = load_model(model, input_shapes or saved_shapes, saved_precision)
    a = read_assignment(graph, doc, partition_path)
    proto = load_with_weights(model)
    if isinstance(a, Partition):
        moe = [op.name for i, op in enumerate(graph.ops) if op.experts is not None and a.shard is not None
               and a.shard[i] > 1]
        if moe:
            raise UserError(f"partition file {partition_path} splits mixture-of-experts op {moe[0]} by expert, which "
                            "`partition split` cannot cut into ONNX stages (which rows reach an expert is decided at "
                            "run time)", "re-run `partition` with --max-shard 1 for stages this command can write")
        result = split_model(graph, a.assignment, proto, shard=a.shard, n_chiplets=doc["chiplets"],
                             axes=document_axes(graph, doc, partition_path, a.shard))
    else:
        result = split_model(graph, a, proto)
    check = None
    if verify:  # before writing: a split that does not compute the model is not written
        check = verify_split(proto, result, random_inputs(proto, graph.metadata["input_shapes"], seed))
        if not check.max_abs_diff <= tolerance:
            worst = max(check.per_output, key=check.per_output.get)
            raise UserError(f"the stages' output '{worst}' differs from the whole model's by {check.max_abs_diff:.3g}"
                            f" (> --tolerance {tolerance:g}); nothing written", "report the model and partition to "
                            "the developers, or raise --tolerance for a model with large activations")
    files = write_split(result, out, os.path.splitext(os.path.basename(model))[0])
    return SplitOutcome(result, files, check)


def format_split(outcome: SplitOutcome) -> str:
    stages = outcome.split.stages
    shown = stages if stages[0].step is None or len(stages) <= 12 else stages[:12]  # sharded: hundreds possible
    lines = [f"{len(stages)} stages: " + ", ".join(
        f"{'chiplet ' + str(s.chiplet) if s.step is None else s.file} ({len(s.model.graph.node)} nodes, "
        f"{len(s.inputs)} in, {len(s.sends)} out)" for s in shown)
        + (f", ... ({len(stages) - len(shown)} more in manifest.json)" if len(shown) < len(stages) else "")]
    ops = outcome.split.sharded
    if ops:
        whole = sum(len(op["whole"]) for op in ops)
        lines.append(f"{len(ops)} split ops: {sum(len(op['pieced']) for op in ops)} nodes cut into pieces, {whole} "
                     "run whole on their group's first chiplet (manifest.json 'sharded' says which and why)")
    if outcome.verification is not None:
        v = outcome.verification
        lines.append(f"verified in onnxruntime: max abs diff {v.max_abs_diff:.3g} over outputs "
                     f"{', '.join(v.per_output)} ({v.stages_run} stages run in manifest order)")
    lines.append("written " + ", ".join(outcome.files))
    return "\n".join(lines)
