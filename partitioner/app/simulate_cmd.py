"""`partition simulate MODEL.onnx --partition partition.json`: re-score a saved partition, on the settings it was
made with or the ones given, and write the same files as a run."""
from __future__ import annotations

import time
from pathlib import Path

from partitioner.app import limits
from partitioner.app.certify import latency_certificate
from partitioner.app.config import Outcome
from partitioner.app.document import assignment_from_document, document_settings, read_partition_file
from partitioner.app.memtier import batch_from_document, streamed_from_document
from partitioner.app.outputs import write_outputs
from partitioner.app.outset import output_set
from partitioner.app.run import load_model
from partitioner.core.errors import UserError
from partitioner.hw.hardware import Hardware
from partitioner.hw.order import cell_ids, reordered
from partitioner.hw.presets import PRESETS, require_precision
from partitioner.hw.toml import load_hardware
from partitioner.model.partition import Partition, check
from partitioner.sim.objective import DEFAULT_OBJECTIVE, check_objective
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate


def saved_order(hw: Hardware, doc: dict, partition_path: str) -> Hardware:
    """hw with its ids in the pipeline order the partition file was made on: the cells its per-chiplet entries give
    ("place", hw/order.py); hw as loaded for a file written before they were recorded."""
    cells = [c.get("place") for c in doc.get("per_chiplet", []) if isinstance(c, dict)]
    if not cells or any(p is None for p in cells):
        return hw
    if not (len(cells) == hw.n_chiplets and all(isinstance(p, list) and len(p) == 2 for p in cells)
            and sorted(map(tuple, cells)) == sorted(hw.positions)):
        raise UserError(f"partition file {partition_path}: its chiplets' places do not match {hw.name} ({hw.layout})",
                        "pass the partition.json a run wrote on this hardware, unedited")
    return hw if [tuple(p) for p in cells] == list(hw.positions) else reordered(hw, cell_ids(hw, cells))


def resimulate(model: str, partition_path: str, input_shapes: dict, precision: str | None, hardware: str | None,
               chiplets: int | None, out: str | None, *, granularity: str | None = None, phase: str | None = None,
               context: int | None = None, memory_tier: bool = True, objective: str | None = None,
               decoder: bool = False, routing: str | None = None) -> Outcome:
    """Re-score a saved partition on the settings it was made with (or the ones given explicitly).
    memory_tier=False drops the memory stacks; a file written without a memory tier is scored without one.
    objective: what the outcome leads with (default: the file's, throughput for files without one); under latency it
    carries the latency certificate (app/certify.latency_certificate). A decode partition is reloaded at its saved
    sequences per step, and as a decoder if its run said so."""
    limits.check_chiplets(chiplets)
    if objective is not None:
        check_objective(objective)
    limits.check_model_path(model)
    if out:
        limits.check_out_target(out)
        from partitioner.app.outset import check_replaceable

        check_replaceable(out)
    doc = read_partition_file(partition_path)
    if objective is None:
        objective = check_objective(doc.get("objective", DEFAULT_OBJECTIVE), f"partition file {partition_path}")
    spec, saved_chiplets, saved_shapes, saved_precision = document_settings(doc, partition_path)
    if hardware is None:
        limits.check_chiplets(saved_chiplets, f"partition file {partition_path}: 'chiplets'")
    granularity = granularity or doc.get("granularity") or "fused"
    phase = phase or doc.get("phase")
    context = context if context is not None else doc.get("context")
    sequences = (doc.get("sequences") or 1) if phase == "decode" else 1
    decoder = decoder or (phase is not None and doc.get("decoder") is True)
    routing = routing or doc.get("routing")
    if granularity not in ("fused", "node", "layer") or phase not in (None, "prefill", "decode") or not (
            context is None or (type(context) is int and context >= 0)) or type(sequences) is not int:
        raise UserError(f"partition file {partition_path}: bad 'granularity', 'phase', 'context' or 'sequences'",
                        "pass the partition.json a run wrote, unedited")
    graph = load_model(model, input_shapes or saved_shapes, precision or saved_precision, granularity=granularity,
                       phase=phase, context=context if phase == "decode" else None, decoder=decoder,
                       sequences=limits.check_batch(sequences, f"partition file {partition_path}: 'sequences'"),
                       routing=routing if isinstance(routing, str) else None)
    if hardware is None and spec is not None and spec not in PRESETS and not Path(spec).exists():
        raise UserError(f"partition file {partition_path} was made on hardware file {spec}, which is gone",
                        "pass --hardware with the package description to score it on")
    tier = doc.get("memory_tier")
    saved_tier = not (isinstance(tier, dict) and tier.get("stacks") == [])   # [] = made without a memory tier
    hw = load_hardware(hardware or spec, chiplets if chiplets is not None else saved_chiplets,
                       memory_tier=memory_tier and (saved_tier or hardware is not None))
    hw = saved_order(hw, doc, partition_path)
    require_precision(hw, graph.metadata.get("precision"))
    a = assignment_from_document(graph, doc, partition_path, hw.n_chiplets)
    streamed = streamed_from_document(graph, doc, partition_path)
    batch = batch_from_document(doc, partition_path)
    problems = check(graph, hw, a, streamed=streamed)
    if problems:
        raise UserError(f"partition in {partition_path} is invalid on {hw.name}: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                        "re-run `partition` for this hardware")
    start = time.perf_counter()
    if isinstance(a, Partition):
        part = Partition(a.assignment, a.assignment, 0, "loaded", streamed=streamed, shard=a.shard)
    else:
        part = Partition(a, a, 0, "loaded", streamed=streamed)
    best = Evaluation(part, simulate(graph, hw, part, trace=True, batch=batch))
    cert = None
    if objective == "latency":
        cert = latency_certificate(graph, hw, _max_shard(doc, part, hw.n_chiplets))
    outcome = Outcome(model, graph, hw, str(doc.get("method", "loaded")), best, 1, time.perf_counter() - start,
                      certificate=cert, batch=batch, objective=objective)
    if out:
        config = {"command": "simulate", "model": model, "partition": partition_path, "hardware": hardware or spec,
                  "chiplets": hw.n_chiplets, "precision": graph.metadata.get("precision"),
                  "input_shapes": {k: list(v) for k, v in graph.metadata.get("input_shapes", {}).items()},
                  "granularity": granularity, "phase": phase, "context": graph.metadata.get("context"),
                  "objective": objective, "routing": graph.metadata.get("routing")}
        with output_set(out, "simulate") as staging:
            names = write_outputs(staging, outcome, config=config, hardware_spec=hardware or spec)
        outcome = Outcome(**{**outcome.__dict__, "files": tuple(str(Path(out) / Path(n).name) for n in names)})
    return outcome


def _max_shard(doc: dict, part: Partition, n_chiplets: int) -> int:
    """The largest group the latency certificate covers: the run's --max-shard as its config.json recorded it (every
    chiplet when absent), and never below the plan's own widest group."""
    saved = (doc.get("config") or {}).get("max_shard") if isinstance(doc.get("config"), dict) else None
    widest = 1 if part.shard is None else int(part.shard.max())
    cap = saved if type(saved) is int and 1 <= saved <= n_chiplets else n_chiplets
    return max(cap, widest)
