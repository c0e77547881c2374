"""Multi-level hardware (partitioner/hw/levels.py): numbering, gateways, hierarchical routes, per-link timing and
energy, the [[level]] TOML format and its errors, and the certificate and check() on random two-level packages."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitioner.app.cli import main
from partitioner.model.cost import route_transfer_cycles, transfer_cycles
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of, packages_of
from partitioner.hw.presets import PRESETS
from partitioner.hw.toml import hardware_from_toml
from partitioner.hw.levels import PackageLevel
from partitioner.model.partition import Partition, check
from partitioner.sim.traced_loop import run_traced
from partitioner.sim.simulator import _plan, _run, default_inferences, simulate
from partitioner.plan.staged_dp import staged_partition
from partitioner.frontend.synthetic import random_dag
from solver.optimize import optimize
from solver.repair import repair

ROOT = Path(__file__).resolve().parents[1]
VEC = Chiplet().vector_ops_per_cycle


def two_level(count: int, m: int, die: str = "chain", board: str = "chain", rows: int = 1, cols: int | None = None,
              board_rows: int = 1, board_cols: int | None = None, **link) -> Hardware:
    """count packages of m default chiplets (die topology rows x cols), board links 16 B/cycle, 50 cycles, 5.5 pJ/bit
    unless given; on-package links are the flat defaults (64 B/cycle, 20 cycles, 0.5 pJ/bit)."""
    level = PackageLevel(count, board, board_rows, board_cols if board_cols is not None else count, **link)
    return Hardware("two-level", (Chiplet(),) * (count * m), die, rows, cols if cols is not None else m,
                    package_level=level)


def path_of(hw: Hardware, a: int, b: int) -> list[int]:
    out = [a]
    for k in hw.route(a, b):
        la, lb = hw.links[k]
        assert la == out[-1], "route links must chain"
        out.append(lb)
    return out


# --- numbering, gateways, routes ---------------------------------------------------------------------------------
def test_packages_group_ids_and_the_package_link_joins_last_to_first():
    hw = two_level(2, 4, die="mesh", rows=2, cols=2)          # two 2x2 meshes: 0 1 / 3 2 and 4 5 / 7 6
    assert (hw.n_packages, hw.chiplets_per_package) == (2, 4)
    assert [hw.package_of(c) for c in range(8)] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len(hw.links) == 2 * 8 + 2
    board = [hw.links[k] for k, cls in enumerate(hw.link_class) if cls]
    assert board == [(3, 4), (4, 3)]
    assert [hw.link_bw[hw.link_index[l]] for l in ((3, 4), (0, 1))] == [16, 64]
    assert [hw.link_latency[hw.link_index[l]] for l in ((3, 4), (0, 1))] == [50, 20]
    # 1 -> 6: inside package 0 to its gateway 3 (XY: 1 -> 0 -> 3), across to 4, then XY inside package 1.
    assert path_of(hw, 1, 6) == [1, 0, 3, 4, 5, 6]
    assert path_of(hw, 6, 1) == [6, 7, 4, 3, 2, 1]
    assert path_of(hw, 0, 2) == [0, 1, 2]                      # inside a package: its own route
    assert hw.positions[4] == (0, 5)                           # package 1 drawn right of package 0, 3 apart


def test_three_packages_in_a_chain_route_through_the_middle_one():
    hw = two_level(3, 4)                                       # chains of 4: 0-3 | 4-7 | 8-11
    assert [hw.links[k] for k, cls in enumerate(hw.link_class) if cls] == [(3, 4), (4, 3), (7, 8), (8, 7)]
    assert path_of(hw, 0, 8) == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert path_of(hw, 9, 2) == [9, 8, 7, 6, 5, 4, 3, 2]


def test_a_board_mesh_of_packages_uses_one_gateway_per_direction():
    hw = two_level(4, 2, board="mesh", board_rows=2, board_cols=2)   # packages snake 0 1 / 3 2; chiplets 2p, 2p+1
    board = sorted(hw.links[k] for k, cls in enumerate(hw.link_class) if cls)
    # package p's last chiplet (2p+1) links to the first chiplet of each higher neighbour and back.
    assert board == [(1, 2), (1, 6), (2, 1), (3, 4), (4, 3), (5, 6), (6, 1), (6, 5)]
    assert path_of(hw, 0, 4) == [0, 1, 2, 3, 4]              # board XY: package 0 -> 1 -> 2
    assert path_of(hw, 0, 7) == [0, 1, 6, 7]                 # package 0 -> 3 directly


def test_the_flat_package_is_the_one_level_case():
    hw = PRESETS["default-16"]
    assert hw.package_level is None and hw.n_packages == 1 and hw.chiplets_per_package == 16
    assert set(hw.link_class) == {0} and set(hw.link_bw) == {64} and set(hw.link_latency) == {20}
    assert hw.fastest_link_bytes_per_cycle == 64
    assert route_transfer_cycles(1000, hw.route(0, 10), hw) == transfer_cycles(1000, 4, hw)


# --- the simulator on mixed links ----------------------------------------------------------------------------------
def _pair(nbytes: int) -> TensorGraph:
    ops = [Op(f"op{i}", "Add", (f"op{i}",), VEC * 10, 0, 0, 0, 0) for i in range(2)]
    return TensorGraph.build("pair", ops, [(0, 1, nbytes)])


def test_a_message_over_the_package_link_takes_the_documented_cycles():
    # Two packages of two chiplets in a chain: 0-1 | 2-3. On-package links 64 B/cycle, 20 cycles, 0.5 pJ/bit;
    # the package link 1->2 16 B/cycle, 50 cycles, 5.5 pJ/bit. 3,200 B: 50 cycles on a die link, 200 on the board's.
    hw = two_level(2, 2)
    g = _pair(3200)
    assert simulate(g, hw, np.array([0, 1])).latency_cycles == 10 + 20 + 50 + 10             # 90
    assert simulate(g, hw, np.array([1, 2])).latency_cycles == 10 + 50 + 200 + 10            # 270
    r = simulate(g, hw, np.array([0, 3]), trace=True)
    # 0->1 holds [10, 60]; 1->2 starts at 30, held until max(30 + 200, 60 + 20) = 230; 2->3 starts at 80, held
    # until max(80 + 50, 230 + 50) = 280; arrival 280 + 20 = 300; op1 runs [300, 310].
    assert route_transfer_cycles(3200, hw.route(0, 3), hw) == 20 + 50 + 20 + 200
    assert r.latency_cycles == 310
    first = sorted((e.resource, e.start, e.end) for e in r.trace_events if e.kind == "link" and e.inference == 0)
    idx = hw.link_index
    assert first == sorted([(idx[(0, 1)], 10, 60), (idx[(1, 2)], 30, 230), (idx[(2, 3)], 80, 280)])
    # Steady state: the package link is busy 200 cycles per inference, the busiest resource.
    assert r.cycles_per_inference == 200 and r.bottleneck == "link 1->2"
    assert r.energy_breakdown_j["link"] == pytest.approx(3200 * 8 * (0.5 + 5.5 + 0.5) * 1e-12)
    assert r.package_link_bytes_per_inference == 3200
    assert simulate(g, hw, np.array([0, 1])).package_link_bytes_per_inference == 0


@settings(max_examples=25, deadline=None)
@given(n=st.integers(2, 40), count=st.integers(2, 3), m=st.integers(1, 4), seed=st.integers(0, 10_000),
       stream=st.booleans(), board=st.sampled_from(["chain", "ring", "all-to-all"]))
def test_compiled_loop_matches_the_python_loop_on_two_levels(n, count, m, seed, stream, board):
    rng = np.random.default_rng(seed)
    graph = random_dag(n, seed)
    bw = int(rng.choice([4, 16, 128]))
    # with stream reads: packages of a mesh with the default HBM tier, each package its own stacks
    hw = (packages_of(mesh_of(m, memory_tier=True), count, board, link_bytes_per_cycle=bw) if stream
          else two_level(count, m, board=board, link_bytes_per_cycle=bw))
    a = rng.integers(0, count * m, n)
    streamed = (rng.random(n) < 0.5) & (graph.weight_bytes > 0) if stream else None
    plan = _plan(graph, hw, a, streamed if streamed is not None and streamed.any() else None, 1)
    n_inf = default_inferences(int(np.unique(a).size))
    assert _run(plan, hw, n_inf, False)[0] == run_traced(plan, hw, n_inf, False)[0]


# --- certificate and check() on random two-level packages ------------------------------------------------------------
FAST = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(n=st.integers(3, 14), count=st.integers(2, 3), m=st.integers(1, 3), seed=st.integers(0, 10_000),
       board_bw=st.sampled_from([1, 8, 64, 256]), die=st.sampled_from(["chain", "ring", "all-to-all"]))
def test_solver_outputs_are_valid_and_the_certificate_bounds_the_simulation(n, count, m, seed, board_bw, die):
    graph = random_dag(n, seed, scale=2.0)
    hw = two_level(count, m, die=die, link_bytes_per_cycle=board_bw)
    part = optimize(graph, hw, time_limit_s=1.0, workers=1)
    assert check(graph, hw, part.assignment) == []
    rep = simulate(graph, hw, part)
    assert part.lower_bound_cycles <= rep.cycles_per_inference
    assert rep.throughput_per_s <= rep.bound_throughput_per_s * (1 + 1e-9)
    proposal = np.random.default_rng(seed).integers(0, hw.n_chiplets, n)
    fixed = repair(graph, hw, proposal, time_limit_s=1.0)
    assert check(graph, hw, fixed.assignment) == []
    assert simulate(graph, hw, fixed).throughput_per_s <= rep.bound_throughput_per_s * (1 + 1e-9)
    # split ops: groups cross a package boundary only where the board links are as fast as the die's (64 B/cycle),
    # and the sharded certificate bounds the simulation
    a, shard = staged_partition(graph, hw, 2)
    assert check(graph, hw, a, shard=shard) == []
    assert all(hw.package_of(int(c)) == hw.package_of(int(c + k - 1)) or board_bw >= 64 for c, k in zip(a, shard))
    staged = simulate(graph, hw, Partition(a, shard=shard))
    assert staged.throughput_per_s <= staged.bound_throughput_per_s * (1 + 1e-9)


def test_the_exact_solver_charges_the_package_link():
    # Two packages of one chiplet each; two 100-cycle MatMuls with 6,400 B between them. Apart, the tensor holds the
    # 16 B/cycle package link 400 cycles per inference (P_k, solver/optimize.py), more than both ops together (200):
    # the solver keeps them on one chiplet. With a 64 B/cycle package link, apart costs max(100, 100) = 100.
    from solver.optimize import bottleneck_cycles, package_cut_cycles
    ops = [Op(f"op{i}", "MatMul", (f"n{i}",), 8192 * 100, 8192 * 100, 0, 0, 6400) for i in range(2)]
    graph = TensorGraph.build("two", ops, [(0, 1, 6400)])
    slow = two_level(2, 1)
    assert package_cut_cycles(graph, slow, np.array([0, 1])).tolist() == [400]
    assert package_cut_cycles(graph, slow, np.array([1, 1])).tolist() == [0]
    part = optimize(graph, slow, time_limit_s=2.0, workers=1)
    assert part.objective_cycles == 200 and part.lower_bound_cycles == 200 and len(set(part.assignment)) == 1
    assert simulate(graph, slow, np.array([0, 1])).cycles_per_inference == 400 >= bottleneck_cycles(
        graph, slow, np.array([0, 1]))
    fast = two_level(2, 1, link_bytes_per_cycle=64)
    assert optimize(graph, fast, time_limit_s=2.0, workers=1).objective_cycles == 100


# --- TOML ----------------------------------------------------------------------------------------------------------
def test_the_example_file_is_the_preset():
    assert hardware_from_toml(ROOT / "examples" / "hardware" / "two-package-2x16.toml") == PRESETS["two-package-2x16"]


def test_one_level_is_the_flat_file(tmp_path):
    f = tmp_path / "one.toml"
    f.write_text("[[level]]\ncount = 6\nrows = 2\ncols = 3\nlink_bytes_per_cycle = 32\n")
    hw = hardware_from_toml(f)
    assert hw.package_level is None and (hw.n_chiplets, hw.rows, hw.cols, hw.link_bytes_per_cycle) == (6, 2, 3, 32)


def test_two_levels_with_defaults(tmp_path):
    f = tmp_path / "two.toml"
    f.write_text("[[level]]\ncount = 3\n[[level]]\ncount = 4\ntopology = \"ring\"\n")
    hw = hardware_from_toml(f)
    assert (hw.n_chiplets, hw.topology, hw.cols, hw.n_packages) == (12, "ring", 4, 3)
    assert hw.package_level == PackageLevel(3, "chain", 1, 3, 16, 50, 5.5)


@pytest.mark.parametrize("text,needle", [
    ("[[level]]\ncount = 0\n[[level]]\ncount = 4\n", "key 'count' in [[level]] 1 must be positive, got 0"),
    ("chiplets = 8\n[[level]]\ncount = 2\n[[level]]\ncount = 4\n", "key 'chiplets' is given at the top level"),
    ("link_bytes_per_cycle = 8\n[[level]]\ncount = 2\n[[level]]\ncount = 4\n", "key 'link_bytes_per_cycle' is given"),
    ("[[level]]\ncount = 2\ngateway = 3\n[[level]]\ncount = 4\n", "key 'gateway' is unknown in [[level]] 1"),
    ("[[level]]\ncount = 4\ntopology = \"mesh\"\nrows = 3\ncols = 2\n[[level]]\ncount = 4\n", "does not match its count"),
    ("[[level]]\ntopology = \"chain\"\n[[level]]\ncount = 4\n", "[[level]] 1 has no 'count'"),
    ("[[level]]\ncount = 2\ntopology = \"star\"\n[[level]]\ncount = 4\n", "key 'topology' in [[level]] 1"),
    ("[[level]]\ncount = 2\n[[level]]\ncount = 4\nrows = 3\ncols = 3\ntopology = \"mesh\"\n", "does not match"),
    ("level = 3\n", "key 'level' must be an array of tables"),
])
def test_bad_levels_are_one_line_errors(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UserError) as err:
        hardware_from_toml(f)
    assert needle in err.value.problem and "\n" not in str(err.value)


def test_a_bad_level_exits_2_from_the_cli(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("[[level]]\ncount = 0\n[[level]]\ncount = 4\n")
    code = main([str(ROOT / "tests" / "data" / "tiny_mlp.onnx"), "--hardware", str(f), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "key 'count' in [[level]] 1 must be positive" in err and "count = 1 or more" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_preset_runs_end_to_end_and_reports_the_package_link(tmp_path):
    out = tmp_path / "run"
    code = main([str(ROOT / "tests" / "data" / "tiny_mlp.onnx"), "--hardware", "two-package-2x16", "--method", "dp",
                 "--out", str(out), "--time-limit", "2", "--no-certificate"])
    assert code == 0
    md = (out / "report.md").read_text()
    assert "package-to-package traffic" in md and "2 packages of 16 chiplets" in md
    assert (out / "partition.png").stat().st_size > 0


def test_whole_op_runs_get_the_cp_sat_certificate_and_are_not_marked_interrupted(tmp_path):
    out = tmp_path / "run"
    assert main([str(ROOT / "tests" / "data" / "tiny_mlp.onnx"), "--hardware", "two-package-2x16", "--method", "dp",
                 "--max-shard", "1", "--out", str(out), "--time-limit", "2"]) == 0
    doc = json.loads((out / "partition.json").read_text())
    assert not doc["interrupted"] and doc["metrics"]["solver_bound_status"] in ("optimal", "feasible")
    assert doc["metrics"]["throughput_per_s"] <= doc["metrics"]["solver_bound_throughput_per_s"] * (1 + 1e-9)


def test_ppa_sums_the_packages():
    from partitioner.hw import ppa
    two, one = ppa.ppa(PRESETS["two-package-2x16"], 7), ppa.ppa(PRESETS["default-16"], 7)
    assert two.cost_usd == pytest.approx(2 * one.cost_usd)
    assert two.area_mm2 == pytest.approx(2 * one.area_mm2)
    # the package link carries no UCIe PHY area: chiplet 15's dies are the same as in one package
    assert two.die_area_mm2[15] == pytest.approx(one.die_area_mm2[15])
