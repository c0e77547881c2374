"""`partition split`: a saved partition.json -> one ONNX model per chiplet and manifest.json, optionally verified."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from partitioner.app.run import _document_settings, assignment_from_document, load_model, read_partition_file
from partitioner.errors import UserError
from partitioner.split_onnx import Split, Verification, random_inputs, split_model, verify_split, write_split

_FIX = "pass the partition.json that `partition` wrote for this model (same --input-shape)"


@dataclass(frozen=True)
class SplitOutcome:
    split: Split
    files: list[str]
    verification: Verification | None


def read_assignment(graph, doc: dict, path: str) -> np.ndarray:
    """The partition file's chiplet per op, refusing sharded ops, ids outside the package and other models."""
    chiplets = doc["chiplets"]
    for node, chip in doc["assignment"].items():
        # A sharded op's nodes map to a group of chiplets: {"chiplets": [c, c+1, ...], "axis": ...} (or a list).
        group = chip.get("chiplets") if isinstance(chip, dict) else chip if isinstance(chip, list) else None
        if group is not None:
            raise UserError(f"partition file {path} shards node '{node}' over chiplets {group}; `partition split` "
                            "cannot cut sharded ops yet", "make the partition with `partition MODEL --max-shard 1` "
                            "(every op whole), then split that")
        if type(chip) is int and not 0 <= chip < chiplets:
            raise UserError(f"partition file {path} puts node '{node}' on chiplet {chip}, outside 0..{chiplets - 1}",
                            f"use chiplet ids below {chiplets}, the package size the file records")
    known = graph.onnx_node_owner()
    stray = next((n for n in doc["assignment"] if n not in known), None)
    if stray is not None:
        raise UserError(f"partition file {path} places node '{stray}', which this model does not have", _FIX)
    a = assignment_from_document(graph, doc, path)
    if not isinstance(a, np.ndarray):  # a Partition carrying shards: refused above, kept out here too
        raise UserError(f"partition file {path} shards some ops",
                        "make the partition with `partition MODEL --max-shard 1` (every op whole), then split that")
    return a


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
    _, _, saved_shapes, saved_precision = _document_settings(doc, partition_path)
    graph = load_model(model, input_shapes or saved_shapes, saved_precision)
    a = read_assignment(graph, doc, partition_path)
    proto = load_with_weights(model)
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
    lines = [f"{len(stages)} stages: " + ", ".join(f"chiplet {s.chiplet} ({len(s.model.graph.node)} nodes, "
                                                   f"{len(s.inputs)} in, {len(s.sends)} out)" for s in stages)]
    if outcome.verification is not None:
        v = outcome.verification
        lines.append(f"verified in onnxruntime: max abs diff {v.max_abs_diff:.3g} over outputs "
                     f"{', '.join(v.per_output)} ({v.stages_run} stages run in manifest order)")
    lines.append("written " + ", ".join(outcome.files))
    return "\n".join(lines)
