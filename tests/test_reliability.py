"""Issue 15: options checked at the edge, bounded and interruptible runs, outputs as a set, reproducible exact mode,
hostile inputs answered with one line."""
import io
import json
import os
import signal
from dataclasses import replace

import numpy as np
import pytest

from benchmarks.hostile_inputs import write_mlp
from partitioner.app import limits
from partitioner.app.budget import Recorder, RunBudget, Stopped
from partitioner.app.cli import _progress, main
from partitioner.app.outset import MARKER, check_replaceable, output_set
from partitioner.app.config import RunConfig
from partitioner.app.methods import bounded_search
from partitioner.app.run import run
from partitioner.core.errors import UserError
from partitioner.hw.hardware import mesh_of
from partitioner.hw.toml import hardware_from_toml
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import check
from partitioner.frontend.synthetic import random_dag
from solver.infeasibility import explain_infeasible
from solver.optimize import optimize


def _mlp(path, layers=6, width=64, x_dims=("batch", 64), w_dims=None):
    write_mlp(path, x_dims, w_dims or (width, width), layers)
    return str(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _mlp(tmp_path_factory.mktemp("m") / "mlp.onnx")


def _run_cli(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    return code, err


# --- validation at the edge ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags, fragment", [
    (["--seed", "-1"], "--seed must be an integer in 0..2147483647"),
    (["--seed", "4294967296"], "--seed must be an integer in 0..2147483647"),
    (["--seed", str(2**70)], "--seed must be an integer"),
    (["--budget", "0"], "--budget must be at least 1"),
    (["--budget", "1000000000"], "--budget 1000000000 is above the supported"),
    (["--chiplets", "10000"], "above the supported 4096 chiplets"),
    (["--max-time", "0"], "--max-time must be positive"),
    (["--time-limit", "nan"], "--time-limit must be positive"),
])
def test_bad_options_fail_before_any_work_and_create_no_out(model, tmp_path, capsys, flags, fragment):
    out = tmp_path / "o"
    code, err = _run_cli([model, "--method", "greedy", "--out", str(out), *flags], capsys)
    assert code == 2 and fragment in err and err.count("\n") == 0 and "Traceback" not in err
    assert not out.exists()


def test_seed_range_ends_are_accepted():
    assert limits.check_seed(0) == 0 and limits.check_seed(2**31 - 1) == 2**31 - 1


def test_a_directory_as_model_is_named_as_a_directory(tmp_path, capsys):
    code, err = _run_cli([str(tmp_path), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "is a directory" in err


def test_a_folder_no_run_wrote_is_not_replaced(model, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    code, err = _run_cli([model, "--method", "greedy", "--out", str(tmp_path)], capsys)
    assert code == 2 and "holds files no run wrote (mine.txt)" in err
    assert (tmp_path / "mine.txt").read_text() == "keep"


# --- outputs as a set -----------------------------------------------------------------------------------------------
def test_output_set_replaces_the_whole_previous_set(tmp_path):
    out = tmp_path / "out"
    with output_set(out, "test") as d:
        (d / "a.json").write_text("old")
        (d / "trace.json").write_text("old")
    with output_set(out, "test") as d:
        (d / "a.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "a.json"]   # no old trace.json beside the new set
    assert (out / "a.json").read_text() == "new"
    assert json.loads((out / MARKER).read_text())["files"] == ["a.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]                # no staging or old folder left


def test_a_failure_while_writing_leaves_the_old_set_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with output_set(out, "test") as d:
            (d / "a.json").write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []                                 # no empty --out, no staging folder
    with output_set(out, "test") as d:
        (d / "a.json").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with output_set(out, "test") as d:
            (d / "a.json").write_text("new")
            raise KeyboardInterrupt
    assert (out / "a.json").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_only_empty_or_run_written_folders_are_replaceable(tmp_path):
    check_replaceable(tmp_path / "absent")
    check_replaceable(tmp_path)                                           # empty
    (tmp_path / "x").write_text("")
    with pytest.raises(UserError, match="holds files no run wrote"):
        check_replaceable(tmp_path)
    (tmp_path / MARKER).write_text("{}")
    check_replaceable(tmp_path)
    legacy = tmp_path / "legacy"                                          # an older run's set, no marker
    legacy.mkdir()
    (legacy / "partition.json").write_text("{}")
    (legacy / "report.md").write_text("")
    check_replaceable(legacy)


# --- whole-run budget and Ctrl-C ------------------------------------------------------------------------------------
class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_recorder_stops_after_the_deadline_but_always_runs_the_first_evaluation():
    clock = _Clock()
    budget = RunBudget(max_time_s=10.0, clock=clock)
    calls = []

    def evaluate(p):
        calls.append(p)
        clock.t += 5.0                       # each evaluation takes 5 s
        return type("E", (), {"throughput": float(len(calls))})()

    rec = Recorder(evaluate, budget)
    rec(0)                                   # 5 s: 3 s of search time left (2 s kept back for writing)
    rec(1)                                   # starts at 5 s, ends at 10 s
    with pytest.raises(Stopped, match="--max-time"):
        rec(2)
    assert len(calls) == 2 and rec.best.throughput == 2.0 and rec.history == [(1, 1.0), (2, 2.0)]
    late = RunBudget(max_time_s=1.0, clock=clock)
    clock.t += 100
    first = Recorder(evaluate, late)
    first(0)                                 # the first evaluation runs even past the deadline
    assert first.best is not None


def test_bounded_search_returns_the_best_of_the_evaluations_it_finished():
    graph, hw = random_dag(40, 1), mesh_of(4)
    clock = _Clock()
    budget = RunBudget(max_time_s=100.0, clock=clock)
    seen = []

    def on_eval(n, best):
        seen.append(best)
        clock.t += 20.0                      # 20 s per evaluation: the 5th starts past 98 s of search time
    result, stopped = bounded_search(graph, hw, "anneal", budget=50, seed=0, time_limit_s=2, on_eval=on_eval,
                                     run_budget=budget)
    assert stopped == "the --max-time budget ran out"
    assert result.evaluations == 5 and len(seen) == 5
    assert result.best.throughput == max(seen) and not check(graph, hw, result.best.assignment)


def test_ctrl_c_writes_the_best_partition_so_far_marked_interrupted(model, tmp_path):
    out = tmp_path / "o"

    def on_eval(n, best):
        if n == 3:
            os.kill(os.getpid(), signal.SIGINT)   # the real signal: the handler sets the flag, the search stops
    outcome = run(RunConfig(model=model, chiplets=3, method="random", budget=40, out=str(out), time_limit_s=2),
                  on_eval=on_eval)
    assert outcome.interrupted == "interrupted by Ctrl-C" and outcome.evaluations == 3
    doc = json.loads((out / "partition.json").read_text())
    assert doc["interrupted"] == "interrupted by Ctrl-C" and doc["search"]["evaluations"] == 3
    assert "**Interrupted**" in (out / "report.md").read_text()
    assert doc["metrics"]["throughput_per_s"] >= max(t for _, t in doc["search"]["history"]) * (1 - 1e-9)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored


def test_max_time_bounds_a_run_with_a_huge_budget(model, tmp_path, capsys):
    code, err = _run_cli([model, "--chiplets", "3", "--method", "random", "--budget", "1000000", "--max-time", "4",
                          "--time-limit", "1", "--out", str(tmp_path / "o")], capsys)
    doc = json.loads((tmp_path / "o" / "partition.json").read_text())
    assert code == 0 and "run stopped early" in err
    assert doc["interrupted"] and 1 <= doc["search"]["evaluations"] < 1000000


def test_progress_prints_plain_lines_when_stderr_is_a_file():
    stream = io.StringIO()
    with _progress("evaluating", None, stream=stream, every_s=0.0) as on_eval:
        on_eval(1, 10.0)
        on_eval(2, 12.5)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("evaluating: 2 evaluations in") and lines[-1].endswith("best 12.5 inferences/s")


# --- reproducible exact mode ----------------------------------------------------------------------------------------
def test_deterministic_optimize_gives_the_same_assignment_for_a_seed():
    graph, hw = random_dag(80, 3), mesh_of(6)
    a = optimize(graph, hw, time_limit_s=0.2, seed=3, deterministic=True)
    b = optimize(graph, hw, time_limit_s=0.2, seed=3, deterministic=True)
    assert a.info["workers"] == 1 and not a.info["wall_capped"] and not b.info["wall_capped"]
    assert np.array_equal(a.assignment, b.assignment) and a.lower_bound_cycles == b.lower_bound_cycles


def test_two_exact_runs_with_one_seed_write_the_same_assignment(model, tmp_path, capsys):
    docs = []
    for k in range(2):
        out = tmp_path / f"o{k}"
        assert main([model, "--chiplets", "3", "--method", "exact", "--seed", "3", "--time-limit", "2",
                     "--out", str(out)]) == 0
        docs.append(json.loads((out / "partition.json").read_text()))
    assert docs[0]["assignment"] == docs[1]["assignment"]
    assert docs[0]["metrics"]["energy_j"] == docs[1]["metrics"]["energy_j"]


# --- silent acceptance turned into errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("kw, fragment", [
    (dict(x_dims=(0, 64)), "model input 'x' declares dim 0 as 0"),
    (dict(x_dims=(-3, 64)), "model input 'x' declares dim 0 as -3"),
    (dict(w_dims=[64, 0]), "weight 'w0' has shape [64, 0]"),
])
def test_empty_or_negative_dims_are_errors(tmp_path, kw, fragment):
    with pytest.raises(UserError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_onnx(_mlp(tmp_path / "m.onnx", **kw))


def test_simulate_rejects_unknown_nodes_and_huge_chiplet_ids(model, tmp_path, capsys):
    out = tmp_path / "o"
    assert main([model, "--chiplets", "3", "--method", "greedy", "--out", str(out), "--no-certificate"]) == 0
    doc = json.loads((out / "partition.json").read_text())
    for edit, fragment in [(lambda d: d["assignment"].update(ghost=0), "node(s) this model does not have"),
                           (lambda d: d["assignment"].update(matmul0=2**70), "outside 0..4096")]:
        bad = json.loads(json.dumps(doc))
        edit(bad)
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        code, err = _run_cli(["simulate", model, "--partition", str(path)], capsys)
        assert code == 2 and fragment in err, err


def test_hop_latency_may_be_zero_but_not_negative(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text("chiplets = 4\nhop_latency_cycles = 0\n")
    assert hardware_from_toml(path).hop_latency_cycles == 0
    path.write_text("chiplets = 4\nhop_latency_cycles = -5\n")
    with pytest.raises(UserError, match="must be 0 or more, got -5"):
        hardware_from_toml(path)


def test_unsupported_op_types_are_named_when_they_make_the_model_not_fit(model, tmp_path, capsys):
    """6 MatMul(+Relu) ops with fp32 weights of 16 KiB must fit chiplets 0 and 3 (40 KiB each) when 1 and 2 cannot run MatMul."""
    hw = tmp_path / "hw.toml"
    hw.write_text("chiplets = 4\ntopology = 'chain'\n[chiplet]\nsram_mib = 0.0390625\n"
                  "[[overrides]]\nids = [1, 2]\nunsupported_ops = ['MatMul']\n")
    code, err = _run_cli([model, "--hardware", str(hw), "--method", "greedy", "--precision", "fp32",
                          "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "can only run on chiplets 0, 3" in err and "chiplets 1-2 cannot run MatMul" in err, err


def test_the_fallback_diagnosis_names_unsupported_op_types(model):
    graph = load_onnx(model)
    base = mesh_of(4)
    chips = list(base.chiplets)
    chips[1] = chips[2] = replace(chips[1], unsupported_ops=("MatMul", "Relu"))
    hw = replace(base, chiplets=tuple(chips))
    err = explain_infeasible(graph, hw)
    assert "chiplets 1-2 cannot run MatMul (6 of the model's 6 ops)" in err.problem


def test_routes_are_computed_per_pair_on_demand():
    hw = mesh_of(4096)                                       # 64 x 64: a full route table would be 16.7M routes
    assert hw.hops(0, 4095) == 63                             # 4095 sits at (63, 0) in snake order
    assert len(hw._route_cache) == 1
