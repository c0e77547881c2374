"""partition.json: the document a run writes (assignment by ONNX node name, metrics, per-chiplet loads, groups,
memory tier, search history, config) and reading it back onto a graph."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from partitioner.app import limits
from partitioner.app.config import Outcome
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.frontend.decoder import ASSERTED
from partitioner.hw.order import order_name
from partitioner.hw.presets import PRESETS
from partitioner.model.layout import simulated_axes, simulated_experts, simulated_groups, simulated_pieces
from partitioner.model.partition import Partition


SHARD_AXES_SIMULATED = "simulated"
"""partition.json's "shard_axes" when each group's "axis" is the one the simulated plan ran (sharding.layout with
rule S8). Files without it record each op's base axis (sharding.split_axis); `partition split` then re-derives
the layout without S8, as it did when they were written."""


def partition_document(outcome: Outcome, hardware_spec: str | None, config: dict | None, memory_tier: dict) -> dict:
    """The partition.json payload: the assignment by original ONNX node name, metrics and per-chiplet loads;
    `memory_tier` is app.memtier.memory_tier_document of the outcome (computed once per run)."""
    graph, hw, rep = outcome.graph, outcome.hw, outcome.best.report
    a = outcome.best.assignment
    pg, pa = simulated_run(outcome)
    per_chiplet = []
    for c in range(hw.n_chiplets):
        mask = pa == c
        per_chiplet.append({
            "chiplet": c,
            "place": list(hw.positions[c]),
            "ops": int(mask.sum()),
            "flops": int(pg.flops[mask].sum()),
            "weight_bytes": int(pg.weight_bytes[mask].sum()),
            "busy_fraction": float(rep.chiplet_busy_fraction[c]),
            "memory_fraction": float(rep.chiplet_memory_fraction[c]),
        })
    shard = outcome.best.partition.shard
    if shard is None:
        assignment = {node: int(a[i]) for node, i in graph.onnx_node_owner().items()}
    else:   # a split op's nodes map to its group of chiplets and the axis the simulated plan split it along
        axes = simulated_axes(graph, hw, a, shard)     # as the simulator lays it out (rules S8, S9 included)
        assignment = {node: int(a[i]) if shard[i] == 1 else
                      {"chiplets": list(range(int(a[i]), int(a[i] + shard[i]))), "axis": axes[i]}
                      for node, i in graph.onnx_node_owner().items()}
    metrics = {
        "throughput_per_s": rep.throughput_per_s,
        "latency_s": rep.latency_s,
        "energy_j": rep.energy_j,
        "energy_breakdown_j": dict(rep.energy_breakdown_j),
        "cycles_per_inference": rep.cycles_per_inference,
        "bound_throughput_per_s": rep.bound_throughput_per_s,
        "bottleneck_chiplet": int(rep.bottleneck_chiplet),
        "bottleneck": rep.bottleneck,
    }
    metrics.update(token_metrics(graph, rep))
    if hw.package_level is not None:
        metrics["package_link_bytes_per_inference"] = rep.package_link_bytes_per_inference
    solver_bound = outcome.solver_bound_throughput_per_s
    if solver_bound is not None:
        metrics["solver_bound_throughput_per_s"] = solver_bound
        metrics["solver_bound_status"] = outcome.certificate.status
        if "bound_kind" in outcome.certificate.info:   # a run whose ops may split (partitioner/app/staged_cert.py)
            metrics["certificate_kind"] = outcome.certificate.info["bound_kind"]
            metrics["staged_solve"] = {k[len("staged_"):]: v for k, v in outcome.certificate.info.items()
                                       if k.startswith("staged_")}
        whole = whole_op_bound(outcome)
        if whole is not None:
            metrics["whole_op_bound_throughput_per_s"] = whole
            metrics["whole_op_bound_status"] = outcome.certificate.info["whole_op_status"]
    if outcome.latency_bound_s is not None:     # --objective latency (app/certify.latency_certificate)
        info = outcome.certificate.info
        metrics |= {"latency_bound_s": outcome.latency_bound_s, "certificate_kind": "latency",
                    "latency_bound": {"work_s": info["work_cycles"] / hw.clock_hz,
                                      "path_s": info["path_cycles"] / hw.clock_hz, "max_shard": info["max_shard"]}}
    doc = {
        "model": str(outcome.model),
        "hardware": _resolvable(hardware_spec),
        "hardware_name": hw.name,
        "chiplets": hw.n_chiplets,
        "pipeline_order": order_name(hw),
        "method": outcome.method,
        "objective": outcome.objective,
        "found_by": outcome.found_by or outcome.method,
        "precision": graph.metadata.get("precision", "fp32"),
        "input_shapes": {k: list(v) for k, v in graph.metadata.get("input_shapes", {}).items()},
        "granularity": graph.metadata.get("granularity", "fused"),
        "phase": graph.metadata.get("phase"),
        "context": graph.metadata.get("context"),
        "sequences": graph.metadata.get("sequences"),
        "decoder": graph.metadata.get("decoder_evidence") == ASSERTED,
        "routing": graph.metadata.get("routing"),
        "assignment": assignment,
        "metrics": metrics,
        "per_chiplet": per_chiplet,
        "groups": simulated_groups(graph, hw, a, shard),
        "experts": simulated_experts(graph, hw, a, shard),
        "search": {"evaluations": outcome.evaluations, "wall_s": outcome.wall_s,
                   "ops_moved_by_repair": outcome.best.partition.ops_moved,
                   "history": [list(h) for h in outcome.history],
                   "history_score": "1/latency_s" if outcome.objective == "latency" else "throughput_per_s"},
        "config": config or {},
        "interrupted": outcome.interrupted,
        "memory_tier": memory_tier,
    }
    if shard is not None and (np.asarray(shard) > 1).any():
        doc["shard_axes"] = SHARD_AXES_SIMULATED   # `partition split` cuts along these axes (older files: base ones)
    return doc


def simulated_run(outcome: Outcome) -> tuple[TensorGraph, np.ndarray]:
    """The graph and assignment the simulator ran: the pieces of a sharded partition, else the ops."""
    part = outcome.best.partition
    if part.shard is None:
        return outcome.graph, part.assignment
    ex = simulated_pieces(outcome.graph, outcome.hw, part.assignment, part.shard)
    return ex.graph, ex.assignment


def whole_op_bound(outcome: Outcome) -> float | None:
    """The certificate's bound on plans that split no op (inferences/s), or None."""
    cert = outcome.certificate
    cycles = cert.info.get("whole_op_bound_cycles") if cert is not None else None
    return outcome.hw.clock_hz / cycles if cycles else None


def _resolvable(spec: str | None) -> str | None:
    """A preset name as is, a hardware file as an absolute path, None for the default mesh of `chiplets`."""
    if spec is None or spec in PRESETS:
        return spec
    return str(Path(spec).resolve())


def token_metrics(graph: TensorGraph, rep) -> dict:
    """Tokens/s and time per token for a decoder phase (empty otherwise). Tokens per inference: the prompt's
    tokens in prefill, one per sequence in decode. Time per token: in decode, one step's latency (a sequence's
    next token needs the previous one, so its tokens cannot overlap); in prefill, 1 / tokens/s."""
    tokens = graph.metadata.get("tokens_per_inference")
    if not tokens:
        return {}
    per_s = rep.throughput_per_s * tokens
    per_token = rep.latency_s if graph.metadata.get("phase") == "decode" else 1.0 / per_s
    return {"tokens_per_inference": tokens, "tokens_per_s": per_s, "time_per_token_s": per_token,
            "weight_read_bytes": int(graph.weight_read_bytes.sum() - graph.kv_cache_bytes.sum()),
            "kv_cache_read_bytes": int(graph.kv_cache_bytes.sum())}


def read_partition_file(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise UserError(f"partition file {path} does not exist", "pass the partition.json a run wrote")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"partition file {path} is unreadable ({exc.__class__.__name__}: {exc})",
                        "pass the partition.json a run wrote")
    if not isinstance(doc, dict) or not isinstance(doc.get("assignment"), dict):
        raise UserError(f"partition file {path} has no 'assignment' object", "pass the partition.json a run wrote")
    return doc


def _group_value(value: object, op_name: str, path: str, n_chiplets: int | None) -> object:
    """A split op's {"chiplets": [c, c+1, ...], "axis": ...} as (c, k); any other value unchanged."""
    if not isinstance(value, dict):
        return value
    chips = value.get("chiplets")
    fix = "give a split op's nodes {\"chiplets\": [c, c+1, ...], \"axis\": ...} with consecutive chiplet ids"
    if not isinstance(chips, list) or not chips or any(type(c) is not int or c < 0 for c in chips):
        raise UserError(f"partition file {path} gives op {op_name} a group that is not a list of chiplet ids "
                        f"({chips!r})", fix)
    if chips != list(range(chips[0], chips[0] + len(chips))):
        raise UserError(f"partition file {path} splits op {op_name} over chiplets {chips}, which are not "
                        f"consecutive in pipeline order", fix)
    if n_chiplets is not None and chips[-1] >= n_chiplets:
        raise UserError(f"partition file {path} splits op {op_name} {len(chips)} ways over chiplets "
                        f"{chips[0]}..{chips[-1]}, {chips[-1] - n_chiplets + 1} past the package's {n_chiplets} "
                        f"chiplets", f"use a group inside chiplets 0..{n_chiplets - 1}, or more --chiplets")
    return (chips[0], len(chips))


def assignment_from_document(graph: TensorGraph, doc: dict, path: str, n_chiplets: int | None = None
                             ) -> np.ndarray | Partition:
    """Map ONNX node name -> chiplet (or -> group of chiplets with a shard axis) back onto the graph's ops (every
    op needs at least one named node). Returns the assignment, or a Partition with `shard` when any op is split."""
    by_node = doc["assignment"]
    known = graph.onnx_node_owner()
    unknown = [n for n in by_node if n not in known]
    if unknown:
        raise UserError(f"partition file {path} places {len(unknown)} node(s) this model does not have "
                        f"(first: {unknown[0]!r})", "pass the model the partition was made for, with the same "
                        "import options")
    a = np.full(graph.n_ops, -1, dtype=np.int64)
    k = np.ones(graph.n_ops, dtype=np.int64)
    for i, op in enumerate(graph.ops):
        values = [_group_value(by_node[n], op.name, path, n_chiplets) for n in op.onnx_nodes if n in by_node]
        if any(isinstance(c, tuple) for c in values) and len(set(values)) == 1:
            a[i], k[i] = values[0]
            continue
        if any(type(c) is not int for c in values):
            raise UserError(f"partition file {path} gives op {op.name} a chiplet that is not an integer "
                            f"({values!r})", "use integer chiplet ids")
        if any(not 0 <= c <= limits.MAX_CHIPLETS for c in values):
            raise UserError(f"partition file {path} gives op {op.name} chiplet {max(values, key=abs)}, outside "
                            f"0..{limits.MAX_CHIPLETS}", "use chiplet ids of the hardware, 0..chiplets-1")
        chips = set(values)
        if not chips:
            raise UserError(f"partition file {path} does not place op {op.name} (ONNX nodes {list(op.onnx_nodes)})",
                            "re-run `partition` on this model; the file belongs to another model or import options")
        if len(chips) > 1:
            raise UserError(f"partition file {path} puts the nodes of op {op.name} on chiplets {sorted(chips)}",
                            "give every node of a fused op the same integer chiplet")
        a[i] = chips.pop()
    return a if (k == 1).all() else Partition(a, a, 0, "loaded", shard=k)


def document_settings(doc: dict, path: str) -> tuple[str | None, int, dict, str]:
    """(hardware spec, chiplets, input shapes, precision) a partition file was made with, type-checked."""
    spec, chiplets = doc.get("hardware"), doc.get("chiplets")
    shapes, precision = doc.get("input_shapes", {}), doc.get("precision", "fp32")
    fix = "pass the partition.json a run wrote, unedited"
    if spec is not None and not isinstance(spec, str):
        raise UserError(f"partition file {path}: 'hardware' must be a preset name or a file path", fix)
    if type(chiplets) is not int or chiplets < 1:
        raise UserError(f"partition file {path}: 'chiplets' must be a positive integer, got {chiplets!r}", fix)
    if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and v and all(type(d) is int and d > 0 for d in v) for v in shapes.values()):
        raise UserError(f"partition file {path}: 'input_shapes' must map input names to lists of positive ints", fix)
    if not isinstance(precision, str):
        raise UserError(f"partition file {path}: 'precision' must be a string", fix)
    return spec, chiplets, {k: tuple(v) for k, v in shapes.items()}, precision
