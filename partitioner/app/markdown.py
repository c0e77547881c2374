"""report.md's body: the summary table, per-chiplet table and busiest links of a simulated partition."""
from __future__ import annotations

import numpy as np

from partitioner.app.plot import chiplet_stages
from partitioner.core.graph import TensorGraph
from partitioner.core.units import si
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition
from partitioner.sim.report import Report


def report_markdown(report: Report, graph: TensorGraph, hw: Hardware, assignment: np.ndarray | Partition,
                    method: str) -> str:
    """A human-readable report: summary, per-chiplet table and the busiest links."""
    a = np.asarray(assignment.assignment if isinstance(assignment, Partition) else assignment, dtype=np.int64)
    counts, stage = chiplet_stages(hw, a)
    r = report
    lines = [
        f"# Partition of {graph.name} on {hw.name}",
        "",
        f"Method: {method}. {graph.n_ops} ops on {int((counts > 0).sum())} of {hw.n_chiplets} chiplets "
        f"({hw.layout}, {hw.clock_hz / 1e9:g} GHz).",
        "",
        "| metric | value |",
        "|---|---|",
        f"| throughput | {r.throughput_per_s:,.1f} inferences/s ({r.cycles_per_inference:,.0f} cycles/inference) |",
        f"| analytical bound | {r.bound_throughput_per_s:,.1f} inferences/s "
        f"({r.bound_cycles_per_inference:,.0f} cycles/inference); "
        f"{100 * r.throughput_per_s / r.bound_throughput_per_s:.1f}% of it |",
        f"| latency | {si(r.latency_s, 's')} ({r.latency_cycles:,} cycles) |",
        f"| energy per inference | {si(r.energy_j, 'J')} (compute {si(r.energy_breakdown_j['compute'], 'J')}, "
        f"SRAM {si(r.energy_breakdown_j['sram'], 'J')}, links {si(r.energy_breakdown_j['link'], 'J')}) |",
        f"| bottleneck | {r.bottleneck} |",
        *([f"| package-to-package traffic | {r.package_link_bytes_per_inference:,.0f} bytes/inference over "
           f"{hw.n_packages} packages of {hw.chiplets_per_package} chiplets |"] if hw.package_level else []),
        f"| mean chiplet utilisation | {100 * float(np.mean(r.chiplet_busy_fraction)):.1f}% |",
        f"| inferences simulated | {r.inferences_simulated} |",
        "",
        "## Chiplets",
        "",
        "| chiplet | stage | ops | busy cycles/inference | busy | memory |",
        "|---|---|---|---|---|---|",
    ]
    for c in range(hw.n_chiplets):
        st = str(int(stage[c])) if stage[c] >= 0 else "-"
        lines.append(f"| {c} | {st} | {int(counts[c])} | {r.chiplet_busy_cycles[c]:,} | "
                     f"{100 * r.chiplet_busy_fraction[c]:.1f}% | {100 * r.chiplet_memory_fraction[c]:.1f}% |")
    used = sorted(((u, name) for name, u in r.link_utilisation.items() if u > 0), reverse=True)
    lines += ["", "## Links", ""]
    if used:
        lines += ["| link | utilisation |", "|---|---|"]
        lines += [f"| {name} | {100 * u:.1f}% |" for u, name in used[:20]]
        if len(used) > 20:
            lines.append(f"| ({len(used) - 20} more) | |")
    else:
        lines.append("No tensor crosses a link.")
    return "\n".join(lines) + "\n"
