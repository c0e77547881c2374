"""--objective latency: the one score, the latency plans, the latency certificate and the bad inputs, against
hand-computed answers (docs/simulator.md, "The latency objective")."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.app import run as run_module
from partitioner.app.budget import Recorder, RunBudget
from partitioner.app.candidates import best_latency
from partitioner.app.cli import main
from partitioner.app.config import RunConfig
from partitioner.app.methods import search
from partitioner.app.summary import format_outcome
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.frontend.synthetic import random_dag
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.model.latency_bound import latency_bound
from partitioner.model.partition import Partition
from partitioner.plan.latency_dp import (latency_auto_max_shard, latency_candidates, latency_floor_cycles,
                                          uniform_sizes)
from partitioner.sim.objective import LatencyRanked, beats, plain, ranked, score
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate

CHIP = Chiplet()            # 8192 flops and 512 vector ops a cycle; links 64 B/cycle, 20 cycles a hop


def gemm(name: str) -> Op:
    return Op(name, "MatMul", (name,), 8192 * 1000, 8192 * 1000, 65536, 1024, 1024)     # 1,000 cycles; 500 split 2


def norm(name: str) -> Op:
    return Op(name, "LayerNormalization", (name,), 5120, 0, 0, 1024, 1024)              # 10 cycles; 5 split 2


def chain() -> TensorGraph:
    """a -> l -> b -> m: two GEMMs, each followed by a LayerNorm; 128 KiB after each GEMM, 4 KiB between."""
    return TensorGraph.build("chain", [gemm("a"), norm("l"), gemm("b"), norm("m")],
                             [(0, 1, 131072), (1, 2, 4096), (2, 3, 131072)])


def chain_hw(n: int) -> Hardware:
    return Hardware(f"chain-{n}", (CHIP,) * n, "chain", 1, n)


def test_the_tiny_chain_under_each_plan_takes_the_hand_computed_cycles():
    g, hw = chain(), chain_hw(2)
    # pipeline a,l | b,m: 1,000 + 10, the 4 KiB over one hop (64 + 20), 1,000 + 10: latency 2,104; period 1,010
    pipe = simulate(g, hw, np.array([0, 0, 1, 1]))
    assert (pipe.latency_cycles, pipe.cycles_per_inference) == (2104, 1010)
    # everything on chiplet 0: 2,020 both ways
    alone = simulate(g, hw, np.zeros(4, dtype=np.int64))
    assert (alone.latency_cycles, alone.cycles_per_inference) == (2020, 2020)
    # everything split 2 ways: 500, a 64 KiB slice each way (1,024 + 20), 5, 2 KiB (32 + 20), 500, 1,044, 5
    split = simulate(g, hw, Partition(np.zeros(4, dtype=np.int64), shard=np.full(4, 2)))
    assert split.latency_cycles == 500 + 1044 + 5 + 52 + 500 + 1044 + 5 == 3150
    assert split.cycles_per_inference == 2080          # link 0->1 carries 1,024 + 32 + 1,024 a inference


def _run(monkeypatch, tmp_path, objective: str, graph: TensorGraph, hw: Hardware, **kw):
    """run() on a graph built here (the model path only has to exist)."""
    monkeypatch.setattr(run_module, "_load", lambda cfg: (hw, graph))
    cfg = RunConfig(model="examples/resnet18.onnx", out=str(tmp_path / objective), objective=objective, budget=4,
                    **kw)
    return run_module.run(cfg)


def test_each_objective_returns_its_own_plan_of_the_tiny_chain(monkeypatch, tmp_path):
    g, hw = chain(), chain_hw(2)
    thr = _run(monkeypatch, tmp_path, "throughput", g, hw, certificate=False)
    assert thr.best.report.cycles_per_inference == 1010 and thr.best.report.latency_cycles == 2104
    lat = _run(monkeypatch, tmp_path, "latency", g, hw)
    assert lat.best.report.latency_cycles == 2020 < thr.best.report.latency_cycles
    assert np.unique(lat.best.assignment).size == 1 and lat.best.partition.shard is None
    # the certificate: work (1,000 + 10 + 1,000 + 10) / 2 = 1,010; path 500 + 5 + 500 + 5 = 1,010
    assert lat.certificate.lower_bound_cycles == 1010 and lat.latency_bound_s == 1010 / hw.clock_hz
    assert lat.solver_bound_throughput_per_s is None
    doc = json.loads((tmp_path / "latency" / "partition.json").read_text())
    assert doc["objective"] == "latency" and doc["metrics"]["latency_bound_s"] == lat.latency_bound_s
    assert doc["metrics"]["certificate_kind"] == "latency" and doc["search"]["history_score"] == "1/latency_s"
    assert json.loads((tmp_path / "throughput" / "partition.json").read_text())["objective"] == "throughput"
    md = (tmp_path / "latency" / "report.md").read_text()
    assert "Objective: latency" in md and "## Latency certificate" in md and "50.0% of it" in md
    lines = format_outcome(lat).splitlines()
    first = [ln.split()[0] for ln in lines]
    assert first.index("latency") < first.index("throughput")
    assert any(ln.startswith("certificate") and "the bound is 50.0% of this latency" in ln for ln in lines)
    assert [ln.split()[0] for ln in format_outcome(thr).splitlines()][3:5] == ["throughput", "latency"]


def test_the_latency_bound_hand_example_on_four_chiplets():
    g, hw = chain(), chain_hw(4)
    # 4-way pieces: a GEMM 250, a LayerNorm ceil(1,280 / 512) = 3; least chiplet-cycles 1,000 and 10 (k = 1 or 2)
    b = latency_bound(g, hw, 4)
    assert (b.work_cycles, b.path_cycles, b.cycles) == (2020 / 4, 250 + 3 + 250 + 3, 506)
    assert latency_bound(g, hw, 2).cycles == 1010           # pieces no smaller than 2-way: the path is 1,010
    assert latency_bound(g, hw, 1).cycles == 2020           # whole ops: the path is the whole chain


def test_the_latency_plans_of_the_tiny_chain_and_their_floors():
    g, hw = chain(), chain_hw(4)
    assert uniform_sizes(4) == [1, 2, 4] and uniform_sizes(36) == [1, 2, 4, 8, 16, 32, 36]
    assert [latency_auto_max_shard(n) for n in (1, 16, 36, 144)] == [1, 16, 36, 36]
    plans = latency_candidates(g, hw, 4)
    assert [int(k[0]) for _, k in plans[:3]] == [1, 2, 4]
    for a, k in plans:
        assert latency_floor_cycles(g, hw, a, k) <= simulate(g, hw, Partition(a, shard=k)).latency_cycles
    # uniform 2: chiplet 0 runs 500 + 5 + 500 + 5
    assert latency_floor_cycles(g, hw, *plans[1]) == 1010
    stats: dict = {}
    best = best_latency(g, hw, 4, stats=stats)
    assert best.report.latency_cycles == 2020 and stats["simulated"] < stats["candidates"]


def test_the_latency_plan_is_never_slower_than_the_throughput_plan(monkeypatch, tmp_path):
    for seed in (1, 2):
        g, hw = random_dag(14, seed), mesh_of(4)
        thr = _run(monkeypatch, tmp_path / f"t{seed}", "throughput", g, hw, certificate=False)
        lat = _run(monkeypatch, tmp_path / f"l{seed}", "latency", g, hw, certificate=False)
        assert lat.best.report.latency_s <= thr.best.report.latency_s


def test_one_score_ranks_by_the_objective():
    g, hw = chain(), chain_hw(2)
    pipe = Evaluation(Partition(np.array([0, 0, 1, 1])), simulate(g, hw, np.array([0, 0, 1, 1])))
    alone = Evaluation(Partition(np.zeros(4, dtype=np.int64)), simulate(g, hw, np.zeros(4, dtype=np.int64)))
    assert beats(pipe, alone, "throughput") and beats(alone, pipe, "latency")
    assert score(alone, "latency") == hw.clock_hz / 2020 and score(pipe, "throughput") == pipe.throughput
    r = ranked(alone, "latency")
    assert isinstance(r, LatencyRanked) and r.throughput == score(alone, "latency")     # what the searches see
    assert type(plain(r)) is Evaluation and plain(r).throughput == alone.report.throughput_per_s
    assert ranked(alone, "throughput") is alone
    for objective, winner in (("throughput", pipe), ("latency", alone)):      # the run's record of the best
        evaluations = iter([pipe, alone])
        rec = Recorder(lambda _: next(evaluations), RunBudget(), objective)
        rec(0), rec(1)
        assert rec.best is winner and rec.history[-1] == (2, score(winner, objective))


def test_a_search_under_latency_returns_its_least_latency_evaluation_as_a_plain_one():
    g, hw = chain(), chain_hw(2)
    seen: list[float] = []
    found = search(g, hw, "random", budget=6, seed=0, time_limit_s=5, objective="latency",
                   on_eval=lambda n, best: seen.append(best))
    assert type(found.best) is Evaluation
    assert score(found.best, "latency") == max(seen) == found.history[-1][1]
    with pytest.raises(UserError, match="exact optimises throughput only"):
        search(g, hw, "exact", budget=1, seed=0, time_limit_s=5, objective="latency")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 20), seed=st.integers(0, 9999), chips=st.sampled_from([1, 2, 3, 4, 6]),
       link=st.sampled_from([8, 64]), kind=st.sampled_from(["whole", "uniform", "staged"]), draw=st.data())
def test_the_latency_bound_is_never_above_a_simulated_latency(n, seed, chips, link, kind, draw):
    g, hw = random_dag(n, seed), mesh_of(chips, link_bytes_per_cycle=link)
    rng = np.random.default_rng(seed)
    if kind == "whole":      # any assignment simulates, pipeline order or not
        part = Partition(rng.integers(0, chips, size=n))
    elif kind == "uniform":
        part = Partition(np.zeros(n, dtype=np.int64), shard=np.full(n, draw.draw(st.integers(1, chips))))
    else:                    # stages in pipeline order on groups of 1..chips
        a, k, chip, lo = np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64), 0, 0
        while lo < n:
            hi = lo + draw.draw(st.integers(1, n - lo))
            size = draw.draw(st.integers(1, chips - chip))
            a[lo:hi], k[lo:hi] = chip, size
            chip, lo = min(chip + size - draw.draw(st.integers(0, 1)), chips - 1), hi
        part = Partition(a, shard=k)
    r = simulate(g, hw, part, inferences=1)
    widest = 1 if part.shard is None else int(part.shard.max())
    for cap in range(widest, chips + 1):       # the bound over any cap at least the plan's widest group
        assert latency_bound(g, hw, cap).cycles <= r.latency_cycles
    assert latency_floor_cycles(g, hw, part.assignment, part.shard) <= r.latency_cycles


@pytest.mark.parametrize("argv, fragment", [
    (["--objective", "fastest"], "unknown objective 'fastest'"),
    (["--objective", "latency", "--method", "exact"], "--method exact optimises throughput only"),
])
def test_bad_objectives_are_one_line_errors(tmp_path, capsys, argv, fragment):
    code = main(["examples/resnet18.onnx", "--chiplets", "2", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2 and fragment in err and "Fix:" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_simulate_rescores_with_the_saved_objective_or_the_one_given(monkeypatch, tmp_path, capsys):
    from partitioner.app.simulate_cmd import resimulate

    model = "tests/data/tiny_mlp.onnx"
    assert main([model, "--chiplets", "3", "--objective", "latency", "--budget", "2", "--out",
                 str(tmp_path / "run")]) == 0
    saved = tmp_path / "run" / "partition.json"
    doc = json.loads(saved.read_text())
    capsys.readouterr()
    assert main(["simulate", model, "--partition", str(saved)]) == 0
    text = capsys.readouterr().out
    assert text.index("latency ") < text.index("throughput ") and "certificate" in text
    again = resimulate(model, str(saved), {}, None, None, None, None)
    assert again.objective == "latency" and again.best.report.latency_s == doc["metrics"]["latency_s"]
    assert again.latency_bound_s == doc["metrics"]["latency_bound_s"]
    assert resimulate(model, str(saved), {}, None, None, None, None, objective="throughput").certificate is None
    doc["objective"] = "speed"
    saved.write_text(json.dumps(doc))
    with pytest.raises(UserError, match="unknown objective 'speed'"):
        resimulate(model, str(saved), {}, None, None, None, None)
