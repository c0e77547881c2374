"""The design agent behind `partition explore --method learned`: its features, proposals, budgets, file and search."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from partitioner.app.design_agent import DesignAgent, design_row, graph_stats, load_agent, pretrain_agent, save_agent
from partitioner.app.dse_space import Design, Space, design_from_params, hardware_of
from partitioner.app.design_agent_train import random_params
from partitioner.app.explore import ExploreConfig, run_explore
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw import ppa

MODEL = str(Path(__file__).resolve().parents[1] / "examples" / "resnet18.onnx")
MIB = 1 << 20


def _graph() -> TensorGraph:
    """Two GEMMs of 2 GFLOP with 8 MiB of weights each: 4 GFLOP, 16 MiB."""
    ops = [Op(f"g{i}", "MatMul", (f"g{i}",), flops=2_000_000_000, matrix_flops=2_000_000_000, weight_bytes=8 * MIB,
              in_bytes=1024, out_bytes=1024) for i in range(2)]
    return TensorGraph.build("two", ops, [(0, 1, 1024)])


def test_design_row_cross_terms_hand_computed():
    g = graph_stats(_graph())
    d = Design(7, 4, "mesh", 4096, 16, 64, 1.0, "organic")
    x, cost, area, leak = design_row(d, g, "fp16")
    hw = hardware_of(d)
    exact = ppa.ppa(hw, 7, package="organic")
    assert (cost, area, leak) == (exact.cost_usd, exact.area_mm2, exact.leakage_w)   # never predicted
    # columns 30-32: peak MAC/s x 2 over matrix flops, vector ops/s over vector flops, SRAM over weights
    assert x[30] == pytest.approx(math.log10(2 * 4 * 4096 * 1e9 / (4e9 + 1)), rel=1e-5)
    assert x[31] == pytest.approx(math.log10(4 * 512 * 1e9 / 1), rel=1e-5)
    assert x[32] == pytest.approx(math.log10(64 * MIB / (16 * MIB + 1)), abs=1e-5)
    hetero = design_row(Design(7, 4, "mesh", 4096, 16, 64, 1.0, "organic", b_macs_per_cycle=1024, b_sram_mib=128),
                        g, "fp16")[0]
    assert hetero[22] == 1.0 and hetero[23] == 0.25 and x[22] == 0.0   # the hetero flag and the second kind's share


def _fake_agent(seed: int = 0) -> tuple[dict, TensorGraph, Space]:
    """An agent trained (briefly) on made-up results: what is tested is the machinery, not the accuracy."""
    graph = _graph()
    space = Space(process_nm=(16, 7), chiplets=(2, 4), macs_per_cycle=(1024, 4096), sram_mib=(16, 64),
                  packages=(1, 2), hbm_gib=(0,))
    rows = []
    for p in random_params(space.axes(), 24, np.random.default_rng(seed)):
        d = design_from_params(p)
        rows.append({"model": "two", "params": p, "result": {
            "fits": d.sram_mib * d.n_chiplets >= 32, "throughput_per_s": d.macs_per_cycle * d.n_chiplets / 10.0,
            "energy_j": 1e-3 / d.process_nm}})
    agent, fit = pretrain_agent(rows, {"two": graph}, "fp16", epochs=30)
    assert set(fit) == {"fit_accuracy", "throughput_rmse_decades", "energy_rmse_decades"}
    return agent, graph, space


def test_agent_never_repeats_a_design_and_keeps_to_the_area_budget(tmp_path):
    agent, graph, space = _fake_agent()
    small = ppa.ppa(hardware_of(Design(16, 2, "mesh", 1024, 16, 16, 1.0, "organic")), 16).area_mm2
    budget = small * 2.5
    a = DesignAgent(graph, space, "fp16", 0, budgets=(budget, None), agent=agent)
    keys = []
    for i in range(4):
        p = a.propose()
        d = design_from_params(p)
        assert set(p) == set(space.axes()) and all(p[k] in space.axes()[k] for k in p)
        assert ppa.ppa(hardware_of(d), d.process_nm, package=d.package).area_mm2 <= budget
        keys.append(DesignAgent.key(d))
        a.observe(p, {"fits": i % 2 == 0, "throughput_per_s": 100.0 * (i + 1), "energy_j": 1e-3,
                      "power_w": 1.0, "cost_usd": 10.0})
    assert len(set(keys)) == 4
    pending = DesignAgent.key(design_from_params(a.propose()))
    assert pending not in keys and DesignAgent.key(design_from_params(a.propose({pending}))) != pending


def test_agent_file_is_saved_and_checked(tmp_path):
    agent, _, _ = _fake_agent()
    path = tmp_path / "agent.pt"
    save_agent(agent, path)
    assert not list(tmp_path.glob("*.tmp*"))
    loaded = load_agent(path)
    assert np.array_equal(loaded["corpus_x"], agent["corpus_x"])
    with pytest.raises(UserError, match="does not exist"):
        load_agent(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("x")
    with pytest.raises(UserError, match="not a readable design agent"):
        load_agent(tmp_path / "bad.pt")


def test_explore_method_learned_evaluates_distinct_designs_and_resumes(tmp_path):
    agent, _, _ = _fake_agent()
    save_agent(agent, tmp_path / "agent.pt")
    space = tmp_path / "space.toml"
    space.write_text("process_nm = [16, 7]\nchiplets = [2, 4]\nmacs_per_cycle = [1024, 4096]\nsram_mib = [16, 64]\n"
                     "packages = [1, 2]\nhbm_gib = [0]\n")
    cfg = ExploreConfig(MODEL, budget=3, workers=1, seed=0, out=str(tmp_path / "o"), space=str(space),
                        sampler="learned", agent=str(tmp_path / "agent.pt"))
    summary = run_explore(cfg)
    assert summary["evaluated"] == 3
    more = run_explore(ExploreConfig(**{**cfg.__dict__, "budget": 4}))
    assert more["evaluated"] == 4
    doc = json.loads((tmp_path / "o" / "pareto.json").read_text())
    names = [Design(**{k: r[k] for k in Space().axes()}).name for r in doc["designs"]]
    assert len(names) == len(set(names)) and doc["fitting"] >= 1
