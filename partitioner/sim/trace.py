"""A simulated stream as a Chrome / Perfetto trace (trace.json: open in ui.perfetto.dev or chrome://tracing)."""
from __future__ import annotations

import json
import os

from partitioner.core.errors import UserError
from partitioner.core.files import write_text
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.sim.report import Report


def chrome_trace(report: Report, graph: TensorGraph, hw: Hardware) -> dict:
    """The trace as Chrome/Perfetto trace-event JSON: one process per chiplet (pid = chiplet id), per link
    (pid = n_chiplets + link index) and per memory stack (pid = n_chiplets + n_links + stack index), one thread
    per inference, "X" events with microsecond times."""
    us = 1e6 / hw.clock_hz
    out: list[dict] = []
    for c in range(hw.n_chiplets):
        out.append({"name": "process_name", "ph": "M", "pid": c, "tid": 0, "args": {"name": f"chiplet {c}"}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": c, "tid": 0, "args": {"sort_index": c}})
    for k, (a, b) in enumerate(hw.links):
        pid = hw.n_chiplets + k
        out.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": f"link {a}->{b}"}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    for k, st in enumerate(hw.memory_stacks):
        pid = hw.n_chiplets + len(hw.links) + k
        out.append({"name": "process_name", "ph": "M", "pid": pid, "tid": 0,
                    "args": {"name": f"memory stack {st.name}"}})
        out.append({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
    for e in report.trace_events:
        if e.kind == "op":
            op = graph.ops[e.item]
            name, pid, cat = op.name, e.resource, op.op_type
        elif e.kind == "stack":
            name, pid, cat = (f"{graph.ops[e.item].name} (weights)", hw.n_chiplets + len(hw.links) + e.resource,
                              "stream read")
        else:
            name, pid = f"{graph.ops[e.item].name} (tensor)", hw.n_chiplets + e.resource
            # A piece of a split op (sharding.expand names it "op#i") sends its share of a collective.
            cat = "collective" if "#" in graph.ops[e.item].name else "transfer"
        out.append({"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": e.inference,
                    "ts": e.start * us, "dur": (e.end - e.start) * us,
                    "args": {"inference": e.inference, "start_cycle": e.start, "end_cycle": e.end}})
    return {"traceEvents": out, "displayTimeUnit": "ns",
            "otherData": {"graph": report.graph_name, "hardware": report.hardware_name,
                          "clock_hz": hw.clock_hz, "inferences": report.inferences_simulated,
                          "traced_inferences": report.trace_inferences or report.inferences_simulated}}


def write_chrome_trace(path: str | os.PathLike, report: Report, graph: TensorGraph, hw: Hardware) -> None:
    """Write the report's trace as Chrome/Perfetto JSON (open in ui.perfetto.dev or chrome://tracing)."""
    if not report.trace_events:
        raise UserError("the report has no trace events", "simulate with trace=True before writing a trace")
    data = chrome_trace(report, graph, hw)
    write_text(path, json.dumps(data, separators=(",", ":")) + "\n")
