"""The files a run writes (partition.json, report.md, trace.json, partition.png, config.json), each atomically."""
from __future__ import annotations

import os
from pathlib import Path

from partitioner.app.config import Outcome
from partitioner.app.document import partition_document, simulated_run
from partitioner.app.markdown import run_markdown
from partitioner.app.memtier import memory_tier_document
from partitioner.app.plot import plot_partition
from partitioner.core.errors import UserError
from partitioner.core.files import write_json, write_text
from partitioner.model.layout import simulated_groups
from partitioner.sim.trace import write_chrome_trace


def write_outputs(out_dir: Path, outcome: Outcome, *, config: dict | None, hardware_spec: str | None
                  ) -> tuple[str, ...]:
    """Each file is written to a temp name and renamed, so a killed run leaves old or new files, never halves."""
    hw, rep, part = outcome.hw, outcome.best.report, outcome.best.partition
    graph, a = simulated_run(outcome)
    tier = memory_tier_document(outcome.graph, hw, part.assignment, part.streamed, rep, outcome.batch, part.shard)
    files = {
        "partition.json": lambda p: write_json(p, partition_document(outcome, hardware_spec, config, tier)),
        "report.md": lambda p: write_text(p, run_markdown(outcome, graph, a, tier)),
        "trace.json": lambda p: write_chrome_trace(p, rep, graph, hw),
        "partition.png": lambda p: plot_partition(
            p, graph, hw, a, rep, groups=tuple(tuple(g["chiplets"]) for g in simulated_groups(
                outcome.graph, hw, part.assignment, part.shard))),
    }
    if config is not None:
        files["config.json"] = lambda p: write_json(p, config)
    for name, write in files.items():
        write(out_dir / name)
    return tuple(str(out_dir / name) for name in files)


def prepare_out_dir(out: str) -> Path:
    path = Path(out)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output directory {out} ({exc.strerror})", "pass a writable --out directory")
    if not os.access(path, os.W_OK):
        raise UserError(f"output directory {out} is not writable", "pass a writable --out directory")
    return path
