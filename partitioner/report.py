"""What a simulation says about a partition, and the files a run writes (JSON, markdown, Chrome trace, PNG).

Every writer is atomic: it writes a temporary file in the target's directory and renames it over the target, so
a crash never leaves a half-written file behind.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Callable, NamedTuple

import numpy as np

from partitioner.errors import UserError
from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware
from partitioner.partition import Partition


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
    whole one would exceed simulator.TRACE_MESSAGE_LIMIT message deliveries; 0 without a trace."""

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


# --- atomic writers ----------------------------------------------------------------------------------------------
def _file_mode() -> int:
    """The mode open() would give a new file: mkstemp makes 0600 files, which os.replace would keep."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call write(tmp) on a temp file beside `path`, then rename it over `path`: readers see old or new, never half."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=directory)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        # Flush the data to disk before the rename, so a crash never leaves the new name on empty blocks.
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj: object) -> object:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} as JSON")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8) atomically."""
    def w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    atomic_write(path, w)


def write_json(path: str | os.PathLike, obj: object) -> None:
    """Write obj as indented JSON atomically; Reports, dataclasses and numpy values are converted."""
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


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


# --- figure --------------------------------------------------------------------------------------------------------
def _stages(hw: Hardware, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Op count per chiplet and pipeline stage per chiplet (rank among used chiplets; -1 when unused)."""
    counts = np.bincount(assignment, minlength=hw.n_chiplets)
    stage = np.full(hw.n_chiplets, -1)
    used = np.flatnonzero(counts)
    stage[used] = np.arange(used.size)
    return counts, stage


def plot_partition(path: str | os.PathLike, graph: TensorGraph, hw: Hardware,
                   assignment: np.ndarray | Partition, report: Report,
                   groups: tuple[tuple[int, ...], ...] = ()) -> None:
    """PNG: per-chiplet busy fraction bars (left) and the package layout coloured by pipeline stage (right);
    `groups` (chiplet ids of each group a split op runs on) are drawn as red paths through their chiplets."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(assignment.assignment if isinstance(assignment, Partition) else assignment, dtype=np.int64)
    counts, stage = _stages(hw, a)
    n_stage = max(int(stage.max()) + 1, 1)
    cmap = plt.get_cmap("viridis")

    def colour(c: int):
        return "#dddddd" if stage[c] < 0 else cmap(stage[c] / max(n_stage - 1, 1))

    fig, (ax_bar, ax_pkg) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1.2, 1]})
    ids = np.arange(hw.n_chiplets)
    busy = np.asarray(report.chiplet_busy_fraction)
    ax_bar.bar(ids, 100 * busy, color=[colour(c) for c in ids], edgecolor="black", linewidth=0.5)
    ax_bar.axhline(100 * report.chiplet_busy_fraction[report.bottleneck_chiplet], color="red", lw=0.8, ls="--")
    ax_bar.set_xlabel("chiplet (pipeline order)")
    ax_bar.set_ylabel("busy in steady state (%)")
    ax_bar.set_ylim(0, 105)
    ax_bar.set_xticks(ids if hw.n_chiplets <= 36 else ids[::max(hw.n_chiplets // 16, 1)])
    ax_bar.set_title(f"{report.throughput_per_s:,.0f} inf/s (bound {report.bound_throughput_per_s:,.0f}); "
                     f"bottleneck {report.bottleneck}", fontsize=9)

    pos = np.asarray(hw.positions, dtype=float)
    xy = np.stack([pos[:, 1], -pos[:, 0]], axis=1)   # column right, row down
    board = hw.link_class
    for (la, lb), cls in zip(hw.links, board):
        if la < lb:
            ax_pkg.plot(*zip(xy[la], xy[lb]), color="navy" if cls else "grey", lw=2 if cls else 1,
                        ls="--" if cls else "-", zorder=1)
    m = hw.chiplets_per_package
    for p in range(hw.n_packages if hw.package_level is not None else 0):   # package boundaries
        box = xy[p * m:(p + 1) * m]
        (x0, y0), (x1, y1) = box.min(axis=0) - 0.5, box.max(axis=0) + 0.5
        ax_pkg.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="navy", lw=1.5,
                                       ls="--", zorder=1))
        ax_pkg.text(x0, y1 + 0.05, f"package {p}", fontsize=7, color="navy", va="bottom")
    for c in range(hw.n_chiplets):
        x, y = xy[c]
        ax_pkg.add_patch(plt.Rectangle((x - 0.4, y - 0.4), 0.8, 0.8, facecolor=colour(c), edgecolor="black",
                                       zorder=2))
        dark = stage[c] >= 0 and stage[c] / max(n_stage - 1, 1) < 0.6
        ax_pkg.text(x, y, f"{c}\n{counts[c]} ops", ha="center", va="center", fontsize=8, zorder=3,
                    color="white" if dark else "black")
    for members in groups:
        ax_pkg.plot(xy[list(members), 0], xy[list(members), 1], color="red", lw=3, alpha=0.7, zorder=4)
    # Memory stacks: a box outside the mesh edge beside their attached chiplets, wired to each of them.
    for st in hw.memory_stacks:
        pts = xy[list(st.attached)]
        p0 = hw.package_of(st.attached[0]) * m
        own = xy[p0:p0 + m]            # the edge of the stack's own package (the whole package when flat)
        cx = pts[:, 0].mean()
        side = -1.0 if cx <= own[:, 0].mean() else 1.0
        if hw.topology in ("mesh", "torus"):
            sx, sy = (own[:, 0].min() - 1.0 if side < 0 else own[:, 0].max() + 1.0), pts[:, 1].mean()
        else:
            sx, sy = cx, own[:, 1].min() - 1.0
        for px, py in pts:
            ax_pkg.plot([sx, px], [sy, py], color="darkred", lw=1.5, zorder=1)
        ax_pkg.add_patch(plt.Rectangle((sx - 0.3, sy - 0.3), 0.6, 0.6, facecolor="#f4cccc", edgecolor="darkred",
                                       zorder=2))
        util = report.stack_utilisation.get(st.name, 0.0)
        ax_pkg.text(sx, sy, f"{st.name}\n{100 * util:.0f}%", ha="center", va="center", fontsize=6, zorder=3)
    ext = np.concatenate([xy, [[xy[:, 0].min() - 1.0, xy[:, 1].min() - 1.0], [xy[:, 0].max() + 1.0, xy[:, 1].max()]]]) \
        if hw.memory_stacks else xy
    ax_pkg.set_xlim(ext[:, 0].min() - 0.6, ext[:, 0].max() + 0.6)
    ax_pkg.set_ylim(ext[:, 1].min() - 0.6, ext[:, 1].max() + 0.6)
    ax_pkg.set_aspect("equal")
    ax_pkg.axis("off")
    ax_pkg.set_title(f"{hw.name}: {hw.topology}, colour = pipeline stage"
                     + (f"; red = {len(groups)} groups of split ops" if groups else ""), fontsize=9)
    fig.suptitle(f"{graph.name} on {hw.name}", fontsize=11)
    fig.tight_layout()

    save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> None:
    """Write a matplotlib figure as PNG atomically, and close it whatever happens."""
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


# --- markdown ------------------------------------------------------------------------------------------------------
def _si(x: float, unit: str) -> str:
    for scale, prefix in ((1, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p")):
        if abs(x) >= scale or scale == 1e-12:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def report_markdown(report: Report, graph: TensorGraph, hw: Hardware, assignment: np.ndarray | Partition,
                    method: str) -> str:
    """A human-readable report: summary, per-chiplet table and the busiest links."""
    a = np.asarray(assignment.assignment if isinstance(assignment, Partition) else assignment, dtype=np.int64)
    counts, stage = _stages(hw, a)
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
        f"| latency | {_si(r.latency_s, 's')} ({r.latency_cycles:,} cycles) |",
        f"| energy per inference | {_si(r.energy_j, 'J')} (compute {_si(r.energy_breakdown_j['compute'], 'J')}, "
        f"SRAM {_si(r.energy_breakdown_j['sram'], 'J')}, links {_si(r.energy_breakdown_j['link'], 'J')}) |",
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
