"""The Pareto front of an explore study and its files: pareto.json, pareto.csv, designs/*.toml, pareto.png."""
from __future__ import annotations

import csv
import math
from dataclasses import asdict
import io
from pathlib import Path

from partitioner.app.dse_space import design_from_params, hardware_of, hardware_toml
from partitioner.core.files import save_figure, write_json, write_text

COLUMNS = ("throughput_per_s", "power_w", "area_mm2", "cost_usd", "process_nm", "hardware_file", "chiplets",
           "topology", "macs_per_cycle", "sram_mib", "link_bytes_per_cycle", "clock_ghz", "package", "energy_j",
           "latency_s", "partitioner", "trial", "hbm_gib", "hbm_stacks", "hbm_place", "packages", "vector_ratio",
           "b_macs_per_cycle", "b_sram_mib", "b_vector_ratio", "b_share", "b_place", "heterogeneous",
           "throughput_cheap_per_s", "power_cheap_w", "partitioner_cheap", "rescored")
"""throughput_per_s, power_w, energy_j, latency_s and partitioner: the default run's figures for a re-scored design
(app/rescore.py); the *_cheap columns: what explore's inner planner scored (explore.map_design)."""


# The hypervolume's fixed reference point, in the minimisation coordinates of hv_point: 1 inference/s, 1 kW and
# $10,000. A design slower, hungrier or dearer than that adds nothing; every figure in benchmarks/RESULTS.md since the
# co-design benchmark uses it, so hypervolumes of one model compare across runs, methods and seeds.
HV_REFERENCE = (0.0, 3.0, 4.0)


def hv_point(row: dict) -> tuple[float, float, float]:
    """A fitting design's objectives as a point to minimise: (-log10 throughput, log10 W, log10 USD)."""
    return (-math.log10(row["throughput_per_s"]), math.log10(row["power_w"]), math.log10(row["cost_usd"]))


def hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Exact hypervolume dominated by minimisation points up to ref (any dimension, by slicing the first axis)."""
    pts = [tuple(p) for p in points if all(a < r for a, r in zip(p, ref))]
    # only the non-dominated points matter; dropping the rest keeps the slicing cheap
    pts = [p for p in pts if not any(q != p and all(a <= b for a, b in zip(q, p)) for q in pts)]
    pts = list(dict.fromkeys(pts))
    if not pts:
        return 0.0
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    pts.sort(key=lambda p: p[0])   # slice i spans [p_i, p_i+1) on axis 0, covered by the points up to i
    total = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][0] if i + 1 < len(pts) else ref[0]
        if upper > p[0]:
            total += (upper - p[0]) * hypervolume([q[1:] for q in pts[:i + 1]], ref[1:])
    return total


def dominates(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """a = (throughput, power, cost) is at least as good as b everywhere (throughput up, the rest down) and better
    somewhere."""
    ge = a[0] >= b[0] and a[1] <= b[1] and a[2] <= b[2]
    return ge and (a[0] > b[0] or a[1] < b[1] or a[2] < b[2])


def non_dominated(points: list[tuple[float, float, float]]) -> list[int]:
    """Indices of the points no other point dominates (duplicates keep the first)."""
    keep = []
    for i, p in enumerate(points):
        if any(dominates(q, p) for q in points) or any(points[j] == p for j in keep):
            continue
        keep.append(i)
    return keep


def fitting_designs(study) -> list[dict]:
    """One row per distinct design that fits the model, in trial order."""
    from optuna.trial import TrialState

    rows, seen = [], set()
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        key = tuple(sorted(t.params.items()))
        if key in seen:
            continue
        seen.add(key)
        r = t.user_attrs["result"]
        if not r["fits"]:
            continue
        design = design_from_params(t.params).canonical()
        rows.append({**asdict(design), "heterogeneous": bool(design.b_ids()), **{k: r[k] for k in ("throughput_per_s", "power_w", "cost_usd", "area_mm2",
                                                       "energy_j", "latency_s", "partitioner")},
                     "trial": t.number})
    return rows


def write_results(study, cfg, out: Path, wall_s: float, rows: list[dict], front: list[dict],
                  rescore: dict | None = None) -> dict:
    """rows: every fitting design, front: its non-dominated ones, both as app/rescore.rescore_front scored them.
    Each file is written atomically; design files of an earlier front that this one dropped are removed."""
    from optuna.trial import TrialState

    designs_dir = out / "designs"
    designs_dir.mkdir(exist_ok=True)
    written = set()
    for r in front:
        design = design_from_params(r)
        hw = hardware_of(design, cfg.precision)
        r["clock_ghz"] = design.effective_clock_ghz
        path = designs_dir / f"{design.name}.toml"
        how = (f"the default run's plan ({r['partitioner'][5:]}); explore's inner planner scored "
               f"{r['throughput_cheap_per_s']:,.1f}/s" if r.get("rescored") else f"the {r['partitioner']} plan")
        header = (f"partition explore design (trial {r['trial']}) for {cfg.model}, precision {cfg.precision}\n"
                  f"process {design.process_nm} nm, {design.package} package: {r['area_mm2']:.1f} mm2 silicon, "
                  f"${r['cost_usd']:,.0f}, {r['power_w']:.2f} W\n"
                  f"throughput {r['throughput_per_s']:,.1f}/s with {how}:\n"
                  f"partition {cfg.model} --hardware {path} --precision {cfg.precision} --seed {cfg.seed}")
        write_text(path, hardware_toml(hw, header))
        r["hardware_file"] = str(path)
        written.add(path.name)
    for stale in designs_dir.glob("*.toml"):
        if stale.name not in written:
            stale.unlink()
    trials = study.get_trials(deepcopy=False)
    summary = {
        "model": cfg.model,
        "objectives": {"throughput_per_s": "maximize", "power_w": "minimize", "cost_usd": "minimize"},
        "evaluated": sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)
                         and "result" in t.user_attrs),   # a trial failed because its run was killed is not one
        "fitting": len(rows),
        "wall_s": wall_s,
        "backend_start_s": study.user_attrs.get("backend_start_s", 0.0),   # pool or Ray start-up, inside wall_s
        "nodes": sorted({r["process_nm"] for r in front}),
        "hypervolume": hypervolume([hv_point(r) for r in rows], HV_REFERENCE),
        "rescore": rescore or {},
        "pareto": [{k: r.get(k) for k in COLUMNS} for r in front],
        "designs": rows,
    }
    files = [out / "pareto.json", out / "pareto.csv", out / "pareto.png"]
    summary["files"] = [str(f) for f in files] + [str(designs_dir) + "/"]
    write_json(files[0], summary)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary["pareto"])
    write_text(files[1], buf.getvalue())
    plot_pareto(files[2], rows, front, title=f"{Path(cfg.model).name}: {summary['evaluated']} designs")
    return summary


def plot_pareto(path: Path, rows: list[dict], front: list[dict], title: str = "") -> None:
    """Throughput vs power and vs cost; every fitting design in grey, the front coloured by process node."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    nodes = sorted({r["process_nm"] for r in rows})
    cmap = plt.get_cmap("viridis", max(len(nodes), 2))
    for ax, key, label in ((axes[0], "power_w", "power (W)"), (axes[1], "cost_usd", "cost (USD)")):
        ax.scatter([r[key] for r in rows], [r["throughput_per_s"] for r in rows], c="lightgrey", s=14,
                   label="evaluated")
        for k, nm in enumerate(nodes):
            pts = [r for r in front if r["process_nm"] == nm]
            if pts:
                ax.scatter([r[key] for r in pts], [r["throughput_per_s"] for r in pts], color=cmap(k), s=40,
                           edgecolor="black", label=f"{nm} nm (Pareto)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("throughput (inferences/s)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7)
    fig.suptitle(title)

    save_figure(fig, path)
