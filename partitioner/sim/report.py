"""What a simulation says about a partition: the Report, its trace events, and the Evaluation searches keep."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

from partitioner.model.partition import Partition


class TraceEvent(NamedTuple):
    """One interval of the simulated stream.

    kind: "op" (resource = chiplet id, item = op id), "link" (resource = link index into hw.links, item = the
    producer op of the tensor whose packet crosses it, or the streamed op whose weights cross it) or "stack"
    (resource = memory stack index, item = the streamed op whose weights it reads). start/end in cycles; `inference` is the stream index.
    """

    kind: str
    resource: int
    inference: int
    item: int
    start: int
    end: int


@dataclass(frozen=True)
class Report:
    """The simulated performance of one partition (see docs/simulator.md for how each number is defined).

    throughput_per_s: clock_hz / cycles_per_inference (steady state of the stream).
    latency_s / latency_cycles: completion time of one inference simulated alone in an empty package.
    cycles_per_inference: steady-state cycles between completions (measured, never below the busiest resource).
    measured_cycles_per_inference: the mean completion interval over the second half of the stream, as measured.
    energy_j: joules per inference, = sum of energy_breakdown_j ("compute", "sram", "link").
    chiplet_busy_cycles / chiplet_busy_fraction: op cycles per inference on each chiplet, and that over
        cycles_per_inference (compute utilisation in steady state).
    chiplet_memory_fraction: memory_use / SRAM per chiplet (> 1 means the partition does not fit).
    link_utilisation: "a->b" -> link cycles per inference over cycles_per_inference, for every link.
    bottleneck: the resource busiest per inference, "chiplet 3" or "link 2->3"; bottleneck_chiplet: the busiest
        chiplet.
    bound_cycles_per_inference / bound_throughput_per_s: the analytical bound max(sum of each op's fastest
        cycles / n_chiplets, largest op's fastest cycles); throughput never exceeds it.
    inferences_simulated: length of the stream. trace_events: op and link intervals when simulated with trace.
    stack_utilisation: memory stack name -> its busy cycles per inference (stream reads, amortised over the
        batch) over cycles_per_inference. stack_bytes_per_inference: name -> bytes read per inference (amortised).
    batch: inferences per read of a streamed weight.
    package_link_bytes_per_inference: with packages (hw.package_level), bytes per inference on the board's links.
    """

    graph_name: str
    hardware_name: str
    clock_hz: float
    throughput_per_s: float
    latency_s: float
    cycles_per_inference: float
    latency_cycles: int
    energy_j: float
    energy_breakdown_j: dict[str, float]
    chiplet_busy_cycles: tuple[int, ...]
    chiplet_busy_fraction: tuple[float, ...]
    chiplet_memory_fraction: tuple[float, ...]
    link_utilisation: dict[str, float]
    bottleneck: str
    bottleneck_chiplet: int
    bound_throughput_per_s: float
    bound_cycles_per_inference: float
    inferences_simulated: int
    measured_cycles_per_inference: float = 0.0
    trace_events: tuple[TraceEvent, ...] = field(default=(), repr=False)
    stack_utilisation: dict[str, float] = field(default_factory=dict)
    stack_bytes_per_inference: dict[str, float] = field(default_factory=dict)
    batch: int = 1
    package_link_bytes_per_inference: float = 0.0
    """Bytes per inference carried by package-to-package links (each such link a tensor crosses counts; stream
    reads amortised over the batch); 0 on a flat package."""
    trace_inferences: int = 0
    """Length of the stream `trace_events` records: inferences_simulated, or a shorter stream of its own when the
    whole one would exceed simulator.TRACE_EVENT_LIMIT events; 0 without a trace."""

    def to_dict(self, *, with_trace: bool = False) -> dict:
        """JSON-ready dict; the trace is left out unless asked for (write_chrome_trace is its proper home)."""
        d = asdict(self)
        d["trace_events"] = [list(e) for e in self.trace_events] if with_trace else len(self.trace_events)
        return d


@dataclass(frozen=True)
class Evaluation:
    """A proposal after repair, and its simulated report: what every search method keeps and compares."""

    partition: Partition
    report: Report

    @property
    def assignment(self) -> np.ndarray:
        return self.partition.assignment

    @property
    def throughput(self) -> float:
        return self.report.throughput_per_s
