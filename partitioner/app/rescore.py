"""Re-scoring an explore front with the default run's planner, so each front design records the throughput that
`partition MODEL --hardware DESIGN.toml --seed SEED` gives.

The study scores every design with the cheap inner planner (explore.map_design). The default run adds annealing,
the staged certificate's CP-SAT solve over split plans and the split-plan search, which can find a better plan
(benchmarks/RESULTS.md, "Exploration"). After the study, each design on the front is run through run.run() itself,
on its design file, with explore's seed and the default budget; its throughput, energy, latency and power replace the
cheap figures (kept as throughput_cheap_per_s, power_cheap_w and partitioner_cheap). Power changes with throughput
(leakage is fixed, dynamic energy per inference may differ), so a re-scored design can leave the front and a design
it dominated before can enter: the front is recomputed and its new designs re-scored, for at most MAX_ROUNDS rounds.

Each result is stored in the study (a study user attribute per design), so a killed explore, run again, does not
re-run the designs it already re-scored."""
from __future__ import annotations

import concurrent.futures as cf
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from partitioner.app.dse_space import design_from_params, hardware_of, hardware_toml
from partitioner.app.pareto import non_dominated
from partitioner.core.errors import UserError
from partitioner.hw import ppa

ATTR = "rescore:"
"""study user attribute prefix; the rest of the name is design_key()."""
MAX_ROUNDS = 4


def design_key(row: dict) -> str:
    """Designs equal up to their moot axes (Design.canonical) share one re-score."""
    return json.dumps(asdict(design_from_params(row).canonical()), sort_keys=True)


def design_file_text(row: dict, precision: str, header: str = "") -> str:
    """The design's hardware file (pareto.write_results writes the same text, with a header, to designs/)."""
    return hardware_toml(hardware_of(design_from_params(row), precision), header)


def rescore_design(model: str, input_shapes: dict, precision: str, row: dict, seed: int) -> dict:
    """Run the default `partition MODEL --hardware DESIGN.toml --seed SEED` on the design's file; its figures, or
    ok=False with why when the run finds no valid plan."""
    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    start = time.perf_counter()
    design = design_from_params(row)
    hw = hardware_of(design, precision)
    with tempfile.TemporaryDirectory(prefix="rescore-") as tmp:
        path = Path(tmp) / "design.toml"
        path.write_text(design_file_text(row, precision))
        try:
            res = run(RunConfig(model, hardware=str(path), precision=precision, seed=seed,
                                input_shapes=dict(input_shapes), out=str(Path(tmp) / "run")))
        except UserError as exc:
            return {"ok": False, "why": exc.problem, "seconds": time.perf_counter() - start}
    rep = res.best.report
    leakage = ppa.ppa(hw, design.process_nm, precision=precision, package=design.package).leakage_w
    return {"ok": True, "throughput_per_s": rep.throughput_per_s, "energy_j": rep.energy_j,
            "latency_s": rep.latency_s, "power_w": ppa.power_w(rep.energy_j, rep.throughput_per_s, leakage),
            "found_by": (res.found_by or res.method).split(",")[0], "seconds": time.perf_counter() - start}


def apply(row: dict, res: dict) -> dict:
    """The row with the run's figures; the cheap planner's kept beside them."""
    return {**row, "throughput_cheap_per_s": row["throughput_per_s"], "power_cheap_w": row["power_w"],
            "partitioner_cheap": row["partitioner"], "throughput_per_s": res["throughput_per_s"],
            "power_w": res["power_w"], "energy_j": res["energy_j"], "latency_s": res["latency_s"],
            "partitioner": f"run: {res['found_by']}", "rescored": True}


def _scored(rows: list[dict], cache: dict) -> list[dict]:
    out = []
    for r in rows:
        res = cache.get(design_key(r))
        if res is None:
            out.append({**r, "rescored": False})
        elif res["ok"]:
            out.append(apply(r, res))
        # a design the default run cannot map leaves the designs that fit
    return out


def front_of(rows: list[dict]) -> list[dict]:
    front = [rows[i] for i in non_dominated([(r["throughput_per_s"], r["power_w"], r["cost_usd"]) for r in rows])]
    return sorted(front, key=lambda r: -r["throughput_per_s"])


def rescore_front(study, cfg, rows: list[dict], backend_factory) -> tuple[list[dict], list[dict], dict]:
    """(rows with the re-scored figures, the front, stats). Re-scores the front's designs not yet in the study,
    in parallel on backend_factory() (opened only when there is something to run), until the front holds no
    design left to re-score or MAX_ROUNDS rounds ran."""
    cache = {k[len(ATTR):]: v for k, v in study.user_attrs.items() if k.startswith(ATTR)}
    backend, ran, rounds = None, 0, 0
    shapes = dict(cfg.input_shapes)
    try:
        while True:
            scored = _scored(rows, cache)
            front = front_of(scored)
            todo = {design_key(r): r for r in front if not r["rescored"]}
            if not todo or rounds == MAX_ROUNDS:
                break
            rounds += 1
            backend = backend or backend_factory()
            futures = {backend.submit(rescore_design, cfg.model, shapes, cfg.precision, r, cfg.seed): key
                       for key, r in todo.items()}
            failed = None
            for fut in cf.as_completed(futures):
                try:
                    cache[futures[fut]] = fut.result()
                except BaseException as exc:   # noqa: BLE001 - re-raised once every finished result is stored
                    failed = failed or exc
                    continue
                study.set_user_attr(ATTR + futures[fut], cache[futures[fut]])   # a resumed explore reuses it
                ran += 1
            if failed is not None:
                raise failed
    finally:
        if backend is not None:
            backend.close()
    stats = {"rescored_now": ran, "rounds": rounds, "front_rescored": all(r["rescored"] for r in front),
             "rescore_s": sum(cache[design_key(r)]["seconds"] for r in front if r["rescored"])}
    return scored, front, stats
