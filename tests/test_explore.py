"""partition explore: the space file, design -> hardware -> TOML, the Pareto filter, a small study, resume, errors."""
import json
from pathlib import Path

import pytest

from partitioner.app import explore
from partitioner.app.cli import main
from partitioner.app.dse_space import Design, Space, hardware_of, hardware_toml, load_space
from partitioner.app.explore import ExploreConfig, evaluate_design, map_design, run_explore
from partitioner.app.pareto import dominates, non_dominated
from partitioner.app.run import load_model
from partitioner.core.errors import UserError
from partitioner.hw.toml import hardware_from_toml
from partitioner.sim.simulator import simulate

MODEL = str(Path(__file__).resolve().parents[1] / "examples" / "resnet18.onnx")
SMALL = """process_nm = [16, 7]
chiplets = [4, 8]
topology = ["mesh"]
macs_per_cycle = [1024, 4096]
sram_mib = [64]
link_bytes_per_cycle = [64]
clock_ghz = [1.0]
package = ["organic", "interposer"]
hbm_gib = [0]
hbm_stacks = [2]
hbm_place = ["sides"]
packages = [1]
vector_ratio = [8]
b_macs_per_cycle = [0]
b_sram_mib = [8]
b_vector_ratio = [8]
b_share = [0.25]
b_place = ["head"]
"""   # 16 designs


def _space(tmp_path: Path, text: str) -> str:
    path = tmp_path / "space.toml"
    path.write_text(text)
    return str(path)


def test_space_file_narrows_axes_and_keeps_defaults(tmp_path):
    space = load_space(_space(tmp_path, "process_nm = [7, 5]\nchiplets = 16\n"))
    assert space.process_nm == (7, 5) and space.chiplets == (16,)
    assert space.sram_mib == Space().sram_mib
    assert load_space(_space(tmp_path, SMALL)).size() == 16


@pytest.mark.parametrize("text, match", [
    ("process_nm = []\n", "axis 'process_nm' is empty"),
    ("process_nm = [10]\n", "unknown process node 10 nm"),
    ("cores = [4]\n", "axis 'cores' is unknown"),
    ("sram_mib = ['big']\n", "wrong type"),
    ("chiplets = [0]\n", "values must be positive"),
    ("topology = ['torus']\nchiplets = [2, 3]\n", "a torus needs at least 4 chiplets"),
    ("package = ['ceramic']\n", "unknown package"),
    ("process_nm = [28, 16]\nclock_ghz = [2.0]\n", "above the fastest chosen node's ceiling of 1.8 GHz"),
    ("chiplets = [4\n", "not readable TOML"),
])
def test_bad_space_files_are_one_line_errors(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        load_space(_space(tmp_path, text))


def test_design_hardware_caps_clock_at_the_node_and_round_trips_through_toml(tmp_path):
    d = Design(28, 6, "mesh", 2048, 16, 32, 2.0, "interposer")
    hw = hardware_of(d)
    assert hw.clock_hz == 1.0e9                       # 28 nm tops out at 1.0 GHz in ppa.NODES
    assert (hw.rows, hw.cols) == (2, 3)
    assert hw.chiplets[0].vector_ops_per_cycle == 256 and hw.chiplets[0].sram_bytes == 16 << 20
    assert hw.chiplets[0].mac_pj == pytest.approx(0.22 * 5 * 2.5) and hw.link_pj_per_bit == 0.25
    path = tmp_path / "d.toml"
    path.write_text(hardware_toml(hw, "a comment\nanother"))
    assert hardware_from_toml(path) == hw
    ring = hardware_of(Design(7, 5, "ring", 1024, 8, 16, 1.0, "organic"))
    (tmp_path / "r.toml").write_text(hardware_toml(ring))
    assert hardware_from_toml(tmp_path / "r.toml") == ring


def test_hbm_axis_builds_the_memory_tier_prices_it_and_round_trips(tmp_path):
    from partitioner.hw import ppa

    d = Design(5, 36, "mesh", 4096, 64, 64, 1.4, "interposer", 16)
    hw = hardware_of(d)
    assert d.name.endswith("-interposer-h16")
    # 6x6 mesh: one stack per two rows on the west and east edges = 6 stacks of 16 GiB; HBM3's 819 B per 1 GHz cycle
    # and 100 ns at 1.4 GHz: round(819 / 1.4) = 585 B/cycle and 140 cycles
    assert len(hw.memory_stacks) == 6
    assert {(st.capacity_bytes, st.bytes_per_cycle, st.latency_cycles) for st in hw.memory_stacks} == {(16 << 30, 585,
                                                                                                          140)}
    assert hw.memory_stacks[0].attached == (0, 11)   # snake order: rows 0 and 1 of the west column
    (tmp_path / "h.toml").write_text(hardware_toml(hw))
    assert hardware_from_toml(tmp_path / "h.toml") == hw
    cost = ppa.ppa(hw, 5, package="interposer")
    assert cost.memory_usd == 6 * 16 * 15.0           # 96 GiB at $15/GiB = $1,440
    no_hbm = ppa.ppa(hardware_of(Design(5, 36, "mesh", 4096, 64, 64, 1.4, "interposer")), 5, package="interposer")
    assert cost.cost_usd == pytest.approx(no_hbm.cost_usd + 1440.0) and cost.area_mm2 == no_hbm.area_mm2
    assert not hardware_of(Design(5, 36, "mesh", 4096, 64, 64, 1.4, "interposer", 0)).memory_stacks


def test_a_model_too_big_for_sram_fits_a_design_with_hbm():
    """ResNet-18's ~22 MiB of weights on 2 chiplets of 8 MiB: no fit SRAM-only; with HBM the overflow streams."""
    params = dict(process_nm=7, chiplets=2, topology="mesh", macs_per_cycle=1024, sram_mib=8,
                  link_bytes_per_cycle=64, clock_ghz=1.0, package="interposer")
    assert not evaluate_design(MODEL, (), "fp16", {**params, "hbm_gib": 0}).fits
    organic = evaluate_design(MODEL, (), "fp16", {**params, "package": "organic", "hbm_gib": 8})
    assert not organic.fits and "interposer" in organic.why
    res = evaluate_design(MODEL, (), "fp16", {**params, "hbm_gib": 8})
    assert res.fits and res.throughput_per_s > 0
    graph = load_model(MODEL, {}, "fp16")
    hw = hardware_of(Design(**params, hbm_gib=8))
    part, how = map_design(graph, hw)
    assert part.streamed is not None and part.streamed.any() and how == res.partitioner
    assert simulate(graph, hw, part).throughput_per_s == pytest.approx(res.throughput_per_s, rel=1e-12)


def test_pareto_filter_hand_made_points():
    # (throughput up, power down, cost down)
    pts = [(10, 5, 5), (10, 5, 5), (8, 4, 6), (9, 6, 6), (12, 9, 9), (7, 5, 7)]
    assert dominates((10, 5, 5), (9, 6, 6)) and not dominates((10, 5, 5), (10, 5, 5))
    assert non_dominated(pts) == [0, 2, 4]            # (9,6,6) and (7,5,7) dominated; the duplicate kept once


def test_explore_writes_a_front_whose_tomls_reproduce_throughput(tmp_path):
    out = tmp_path / "out"
    cfg = ExploreConfig(MODEL, budget=8, workers=1, seed=1, out=str(out), space=_space(tmp_path, SMALL))
    summary = run_explore(cfg)
    assert summary["evaluated"] == 8
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["pareto"] and (out / "pareto.png").stat().st_size > 1000
    assert (out / "pareto.csv").read_text().splitlines()[0].startswith("throughput_per_s,power_w,area_mm2,cost_usd")
    graph = load_model(MODEL, {}, "fp16")
    pts = [(d["throughput_per_s"], d["power_w"], d["cost_usd"]) for d in doc["designs"]]
    assert doc["rescore"]["front_rescored"] and doc["rescore"]["rescored_now"] >= len(doc["pareto"])
    assert sorted(p.name for p in (out / "designs").glob("*.toml")) == sorted(
        Path(d["hardware_file"]).name for d in doc["pareto"])
    for d in doc["pareto"]:
        assert d["rescored"] and d["partitioner"].startswith("run: ")
        assert not any(dominates(p, (d["throughput_per_s"], d["power_w"], d["cost_usd"])) for p in pts)
        hw = hardware_from_toml(d["hardware_file"])
        # the cheap figure is explore's inner planner on the design, in the order its run keeps
        ordered, staged = explore.in_run_order(graph, hw)
        a, how = map_design(graph, ordered, staged)
        assert how == d["partitioner_cheap"]
        assert simulate(graph, ordered, a).throughput_per_s == pytest.approx(
            d["throughput_cheap_per_s"], rel=1e-9)
        assert d["throughput_per_s"] >= d["throughput_cheap_per_s"] * (1 - 1e-9)
        # the recorded figure is what the CLI's default run gives on the written file, exactly
        run_out = tmp_path / f"run-{d['trial']}"
        assert main([MODEL, "--hardware", d["hardware_file"], "--precision", "fp16", "--seed", "1",
                     "--out", str(run_out)]) == 0
        ran = json.loads((run_out / "partition.json").read_text())
        assert ran["metrics"]["throughput_per_s"] == d["throughput_per_s"]


def test_killed_explore_resumes_without_redoing_finished_designs(tmp_path, monkeypatch):
    space = _space(tmp_path, SMALL)
    cfg = ExploreConfig(MODEL, budget=6, workers=1, seed=3, out=str(tmp_path / "out"), space=space)
    calls: list[dict] = []

    def killed_on_third(model, shapes, precision, params, budgets):
        if len(calls) == 2:
            raise KeyboardInterrupt   # the process dies mid-evaluation: the trial stays RUNNING in the journal
        calls.append(params)
        return evaluate_design(model, shapes, precision, params, budgets)

    monkeypatch.setattr(explore, "evaluate_design", killed_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_explore(cfg)
    first = list(calls)
    calls.clear()
    counted = []
    monkeypatch.setattr(explore, "evaluate_design",
                        lambda *a: counted.append(a[3]) or evaluate_design(*a))
    summary = run_explore(cfg)
    assert summary["evaluated"] == 6
    done_before = {tuple(sorted(p.items())) for p in first}
    assert not done_before & {tuple(sorted(p.items())) for p in counted}   # nothing finished is evaluated again
    assert len(counted) <= 4                                                # 6 minus the 2 finished (less if reused)


def test_explore_cli_bad_input_is_exit_2_one_line(tmp_path, capsys):
    assert main(["explore", MODEL, "--space", _space(tmp_path, "process_nm = [10]\n"),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: design space") or err.startswith("error: space file")
    assert "\n" not in err and "Fix:" in err
    # nothing fits: 2 chiplets x 8 MiB hold less than ResNet-18's ~22 MiB of fp16 weights
    assert main(["explore", MODEL, "--space", _space(tmp_path, "chiplets = [2]\nsram_mib = [8]\nhbm_gib = [0]\n"
                                                                 "packages = [1]\nb_macs_per_cycle = [0]\n"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "exceed the largest board in the space" in capsys.readouterr().err
    assert main(["explore", MODEL, "--budget", "0", "--out", str(tmp_path / "o")]) == 2
    assert main(["explore", MODEL, "--max-area-mm2", "-5", "--out", str(tmp_path / "o")]) == 2
    assert "--max-area-mm2 must be a positive number" in capsys.readouterr().err


@pytest.mark.slow
def test_explore_on_a_local_ray_instance(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed (pip install 'chiplet-partitioner[ray]')")
    cfg = ExploreConfig(MODEL, budget=3, workers=2, seed=0, out=str(tmp_path / "out"),
                        space=_space(tmp_path, SMALL), ray="local")
    summary = run_explore(cfg)
    assert summary["evaluated"] == 3 and summary["pareto"]


def test_sram_sizes_below_the_largest_op_are_pruned(tmp_path):
    from dataclasses import replace

    from partitioner.app.explore import prune_space

    graph = load_model(MODEL, {}, "fp16")
    largest = int((graph.weight_bytes + graph.work_bytes).max())   # a 3x3x512x512 conv: 4.5 MiB of fp16 weights + activations
    assert 4 * 2**20 < largest < 8 * 2**20
    sram_only = replace(Space(), hbm_gib=(0,))
    assert prune_space(graph, replace(sram_only, sram_mib=(0.5, 4, 8, 64))).sram_mib == (8, 64)
    with pytest.raises(UserError, match="largest op needs 4.6 MiB"):
        prune_space(graph, replace(sram_only, sram_mib=(0.5, 4)))
    # with HBM in the space the weights may stream: only the largest activations (under 4 MiB) must fit SRAM
    assert 0.5 * 2**20 < int(graph.work_bytes.max()) <= 4 * 2**20
    assert prune_space(graph, replace(Space(), sram_mib=(0.5, 4, 8, 64), hbm_gib=(0, 8))).sram_mib == (4, 8, 64)


@pytest.mark.slow
def test_explore_killed_while_rescoring_resumes_without_redoing_rescored_designs(tmp_path, monkeypatch):
    from partitioner.app import rescore

    cfg = ExploreConfig(MODEL, budget=4, workers=1, seed=2, out=str(tmp_path / "out"), space=_space(tmp_path, SMALL))
    calls: list[str] = []

    def killed_on_second(model, shapes, precision, row, seed):
        if len(calls) == 1:
            raise KeyboardInterrupt   # killed during the second design's run
        calls.append(rescore.design_key(row))
        return real(model, shapes, precision, row, seed)

    real = rescore.rescore_design
    monkeypatch.setattr(rescore, "rescore_design", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_explore(cfg)
    assert len(calls) == 1 and not (tmp_path / "out" / "pareto.json").exists()
    again: list[str] = []
    monkeypatch.setattr(rescore, "rescore_design", lambda *a: again.append(rescore.design_key(a[3])) or real(*a))
    summary = run_explore(cfg)
    front = {rescore.design_key(d) for d in summary["pareto"]}
    assert calls[0] not in again and len(set(again)) == len(again)   # a finished re-score is kept, none redone
    assert front <= set(again) | {calls[0]} and all(d["rescored"] for d in summary["pareto"])
    assert summary["rescore"]["rescored_now"] == len(again) and summary["rescore"]["front_rescored"]
    again.clear()
    assert run_explore(cfg)["pareto"] == summary["pareto"] and again == []   # a third run re-scores nothing


def test_sigkilled_explore_process_resumes(tmp_path):
    """A real kill -9 of `partition explore` mid-study; the re-run keeps every finished trial and only adds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "partitioner.app.cli", "explore", MODEL, "--workers", "1", "--seed", "5",
           "--out", str(out)]
    proc = subprocess.Popen(cmd + ["--budget", "200"], cwd=Path(__file__).resolve().parents[1],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "study.journal"
    deadline = time.time() + 240
    while time.time() < deadline and not (journal.exists() and journal.read_text().count('"result"') >= 3):
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    def finished():
        study = optuna.load_study(study_name="explore", storage=JournalStorage(JournalFileBackend(str(journal))))
        return {t.number: t.user_attrs["result"] for t in study.trials if "result" in t.user_attrs}

    before = finished()
    assert 3 <= len(before) < 200
    budget = len(before) + 2
    subprocess.run(cmd + ["--budget", str(budget)], cwd=Path(__file__).resolve().parents[1], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = finished()
    assert len(after) == budget
    assert all(after[n] == r for n, r in before.items())          # finished designs kept, not redone
    assert json.loads((out / "pareto.json").read_text())["evaluated"] == budget


@pytest.mark.slow
def test_ray_auto_without_a_cluster_is_a_one_line_error():
    pytest.importorskip("ray", reason="ray is not installed (pip install 'chiplet-partitioner[ray]')")
    import ray

    if ray.is_initialized():
        ray.shutdown()
    with pytest.raises(UserError, match="cannot connect to Ray at 'auto'"):
        explore.RayBackend("auto")


def test_resuming_into_a_study_of_another_space_or_model_is_refused(tmp_path):
    out = str(tmp_path / "out")
    run_explore(ExploreConfig(MODEL, budget=1, workers=1, out=out, space=_space(tmp_path, SMALL)))
    other = tmp_path / "other.toml"
    other.write_text(SMALL.replace("chiplets = [4, 8]", "chiplets = [4]"))
    with pytest.raises(UserError, match="another design space"):
        run_explore(ExploreConfig(MODEL, budget=2, workers=1, out=out, space=str(other)))
    with pytest.raises(UserError, match="holds a study for precision 'fp16', not 'int8'"):
        run_explore(ExploreConfig(MODEL, budget=2, workers=1, out=out, space=_space(tmp_path, SMALL),
                                  precision="int8"))
    assert run_explore(ExploreConfig(MODEL, budget=2, workers=1, out=out, space=_space(tmp_path, SMALL),
                                     seed=9))["evaluated"] == 2


def test_wider_space_heterogeneous_packages_and_stack_placement_round_trip(tmp_path):
    """The new axes: a second chiplet kind at the head / tail / every other id, packages on a board, stacks per
    package on one or both sides; each design's TOML reads back to the same Hardware."""
    base = dict(process_nm=7, chiplets=4, topology="mesh", macs_per_cycle=4096, sram_mib=16,
                link_bytes_per_cycle=64, clock_ghz=1.0, package="interposer")
    d = Design(**base, packages=2, b_macs_per_cycle=1024, b_sram_mib=128, b_vector_ratio=2, b_share=0.25,
               b_place="head", hbm_gib=8, hbm_stacks=3, hbm_place="sides")
    assert d.b_ids() == (0, 1)                         # 25% of 2 x 4 chiplets: the first two ids
    assert Design(**base, packages=2, b_macs_per_cycle=1024, b_place="tail").b_ids() == (6, 7)
    assert Design(**base, packages=2, b_macs_per_cycle=1024, b_share=0.5, b_place="interleave").b_ids() == (0, 2, 4, 6)
    assert Design(**base, b_sram_mib=8).b_ids() == () and Design(**base, b_sram_mib=8).name == Design(**base).name
    hw = hardware_of(d)
    assert hw.n_chiplets == 8 and hw.n_packages == 2 and not hw.homogeneous
    b = hw.chiplets[0]
    assert (b.macs_per_cycle, b.vector_ops_per_cycle, b.sram_bytes) == (1024, 512, 128 << 20)
    assert hw.chiplets[2] == hw.chiplets[7] and hw.chiplets[2].macs_per_cycle == 4096
    # 3 stacks on a 2x2 package, both sides: 2 on the west edge (one row each), 1 on the east; per package
    assert len(hw.memory_stacks) == 6 and [len(st.attached) for st in hw.memory_stacks[:3]] == [1, 1, 2]
    west = hardware_of(Design(**base, hbm_gib=8, hbm_stacks=2, hbm_place="west"))
    # a 2x2 package snakes 0 1 / 3 2: its west column is chiplets 0 and 3, one stack each
    assert [st.attached for st in west.memory_stacks] == [(0,), (3,)]
    path = tmp_path / "d.toml"
    path.write_text(hardware_toml(hw, "hetero"))
    assert hardware_from_toml(path) == hw
    res = evaluate_design(MODEL, (), "fp16", {**base, "packages": 2, "b_macs_per_cycle": 1024, "b_sram_mib": 128})
    graph = load_model(MODEL, {}, "fp16")
    again = hardware_from_toml(_toml(tmp_path, Design(**base, packages=2, b_macs_per_cycle=1024, b_sram_mib=128)))
    part, how = map_design(graph, again)
    assert res.fits and how == res.partitioner
    assert simulate(graph, again, part).throughput_per_s == pytest.approx(res.throughput_per_s, rel=1e-12)


def test_area_and_power_budgets_reject_designs(tmp_path):
    params = dict(process_nm=7, chiplets=4, topology="mesh", macs_per_cycle=4096, sram_mib=32,
                  link_bytes_per_cycle=64, clock_ghz=1.0, package="organic")
    free = evaluate_design(MODEL, (), "fp16", params)
    assert free.fits
    over_area = evaluate_design(MODEL, (), "fp16", params, (free.area_mm2 / 2, None))
    assert not over_area.fits and "mm2 budget" in over_area.why and over_area.violation_mib == pytest.approx(100.0)
    over_power = evaluate_design(MODEL, (), "fp16", params, (None, free.power_w / 4))
    assert not over_power.fits and "W budget" in over_power.why and over_power.violation_mib == pytest.approx(300.0)
    assert evaluate_design(MODEL, (), "fp16", params, (free.area_mm2 * 1.01, free.power_w * 1.01)).fits


def _toml(tmp_path: Path, design: Design) -> Path:
    path = tmp_path / f"{design.name}.toml"
    path.write_text(hardware_toml(hardware_of(design)))
    return path
