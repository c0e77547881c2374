"""The memory tier in a run's outputs: partition.json's `memory_tier` object, report.md's section, and reading the
streamed weights back from a saved partition.json (files without them load as all resident).
"""
from __future__ import annotations

import numpy as np

from partitioner.model.cost import stream_bytes
from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import stack_use
from partitioner.sim.report import Report


def memory_tier_document(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, streamed: np.ndarray | None,
                         report: Report, batch: int, shard: np.ndarray | None = None) -> dict:
    """{"batch", "stacks": [...], "streamed": [...]}: each stack's wiring, capacity, what it stores and reads per
    inference; each streamed op with its ONNX nodes, bytes stored off-chip and bytes read per batch (a split op:
    its group's first chiplet and the stack feeding it, the whole op's bytes)."""
    a = np.asarray(assignment, dtype=np.int64)
    stored = stack_use(graph, hw, a, streamed, shard)
    stacks = [{"name": st.name, "attached": list(st.attached), "capacity_bytes": st.capacity_bytes,
               "bytes_per_cycle": st.bytes_per_cycle, "efficiency": st.efficiency, "pj_per_byte": st.pj_per_byte,
               "latency_cycles": st.latency_cycles, "stored_bytes": int(stored[k]),
               "read_bytes_per_inference": float(report.stack_bytes_per_inference.get(st.name, 0.0)),
               "utilisation": float(report.stack_utilisation.get(st.name, 0.0))}
              for k, st in enumerate(hw.memory_stacks)]
    rows = []
    if streamed is not None:
        per_batch = stream_bytes(graph, batch)
        for i in np.flatnonzero(streamed).tolist():
            k, src = hw.stack_feed[int(a[i])]
            rows.append({"op": graph.ops[i].name, "onnx_nodes": list(graph.ops[i].onnx_nodes),
                         "chiplet": int(a[i]), "stack": hw.memory_stacks[k].name, "enters_at_chiplet": src,
                         "weight_bytes": int(graph.weight_bytes[i]), "read_bytes_per_batch": int(per_batch[i])})
    return {"batch": batch, "stacks": stacks, "streamed": rows}


def streamed_from_document(graph: TensorGraph, doc: dict, path: str) -> np.ndarray | None:
    """Streamed flags from partition.json's memory_tier.streamed (by op name); None when the file has none."""
    tier = doc.get("memory_tier")
    if tier is None:
        return None
    rows = tier.get("streamed") if isinstance(tier, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("op"), str) for r in rows):
        raise UserError(f"partition file {path}: 'memory_tier.streamed' must be a list of {{\"op\": name, ...}}",
                        "pass the partition.json a run wrote, unedited")
    out = np.zeros(graph.n_ops, dtype=bool)
    for r in rows:
        try:
            out[graph.op_index(r["op"])] = True
        except KeyError:
            raise UserError(f"partition file {path} streams the weights of op {r['op']}, which this model lacks",
                            "re-run `partition` on this model; the file belongs to another model or import "
                            "options") from None
    return out if out.any() else None


def batch_from_document(doc: dict, path: str) -> int:
    tier = doc.get("memory_tier")
    batch = tier.get("batch", 1) if isinstance(tier, dict) else 1
    if type(batch) is not int or batch < 1:
        raise UserError(f"partition file {path}: 'memory_tier.batch' must be a positive integer, got {batch!r}",
                        "pass the partition.json a run wrote, unedited")
    return batch


def memory_tier_markdown(doc: dict, graph: TensorGraph, report: Report) -> str:
    """report.md's memory-tier section, from memory_tier_document's payload."""
    stacks, rows, batch = doc["stacks"], doc["streamed"], doc["batch"]
    if not stacks:
        return "\n## Memory tier\n\nNone: this package is SRAM-only, every weight is resident.\n"
    resident = graph.total_weight_bytes - sum(r["weight_bytes"] for r in rows)
    lines = ["", "## Memory tier", "",
             f"{len(stacks)} memory stacks; {len(rows)} of {int((graph.weight_bytes > 0).sum())} weighted ops "
             f"stream their weights ({sum(r['weight_bytes'] for r in rows) / 2**20:,.1f} MiB off-chip, "
             f"{resident / 2**20:,.1f} MiB resident in SRAM). A streamed weight is read once per batch of "
             f"{batch} inference{'s' * (batch != 1)}; memory energy per inference "
             f"{report.energy_breakdown_j.get('memory', 0.0) * 1e3:.4g} mJ.", "",
             "| stack | attached chiplets | stored | read per inference | busy |", "|---|---|---|---|---|"]
    for st in stacks:
        lines.append(f"| {st['name']} | {', '.join(map(str, st['attached']))} | {st['stored_bytes'] / 2**20:,.1f} MiB "
                     f"| {st['read_bytes_per_inference'] / 2**20:,.2f} MiB | {100 * st['utilisation']:.1f}% |")
    if rows:
        lines += ["", "| streamed op | chiplet | stack (enters at) | weights | read per batch |", "|---|---|---|---|---|"]
        shown = sorted(rows, key=lambda r: -r["weight_bytes"])
        for r in shown[:20]:
            lines.append(f"| {r['op']} | {r['chiplet']} | {r['stack']} ({r['enters_at_chiplet']}) | "
                         f"{r['weight_bytes'] / 2**20:,.2f} MiB | {r['read_bytes_per_batch'] / 2**20:,.2f} MiB |")
        if len(shown) > 20:
            lines.append(f"| ... and {len(shown) - 20} more (all in partition.json) | | | | |")
    return "\n".join(lines) + "\n"
