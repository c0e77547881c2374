"""partition.png: per-chiplet load and the package layout coloured by pipeline stage."""
from __future__ import annotations

import os

import numpy as np

from partitioner.core.files import save_figure
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.partition import Partition
from partitioner.sim.report import Report


def chiplet_stages(hw: Hardware, assignment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    counts, stage = chiplet_stages(hw, a)
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
