"""A run returns the best partition it evaluated: the search's best or the certificate solve's, by the simulator."""
import json

from partitioner.app.certify import keep_best
from partitioner.app.config import RunConfig
from partitioner.app.run import run
from partitioner.hw.hardware import mesh_of
from partitioner.model.partition import Partition, check
from partitioner.sim.report import Evaluation
from partitioner.sim.simulator import simulate
from partitioner.plan.splits import greedy_partition
from partitioner.frontend.synthetic import random_dag
from solver.optimize import optimize


def _evaluation(graph, hw, a):
    return Evaluation(Partition(a), simulate(graph, hw, a))


def test_keep_best_takes_the_certificate_solve_only_when_it_simulates_faster():
    graph, hw = random_dag(60, 4), mesh_of(6)
    greedy = _evaluation(graph, hw, greedy_partition(graph, hw))
    cert = optimize(graph, hw, time_limit_s=10, seed=0, hint=greedy.assignment)
    solved = simulate(graph, hw, cert).throughput_per_s
    best, found_by = keep_best(graph, hw, greedy, cert)
    assert best.throughput == max(greedy.throughput, solved)
    assert (found_by is not None) == (solved > greedy.throughput)
    assert not check(graph, hw, best.assignment)
    # the other way round: a search result that already beats the solve is kept as it is
    again, found_again = keep_best(graph, hw, best, cert)
    assert again is best and found_again is None


def test_a_greedy_run_returns_the_certificate_solve_when_it_is_better(tmp_path):
    """greedy on BERT-base x 16 is below the optimum CP-SAT proves, so the run returns the solve's partition and
    partition.json / report.md say which step found it."""
    out = tmp_path / "o"
    outcome = run(RunConfig(model="examples/bert-base.onnx", chiplets=16, method="greedy", out=str(out), max_shard=1))
    doc = json.loads((out / "partition.json").read_text())
    cert_thr = simulate(outcome.graph, outcome.hw, outcome.certificate).throughput_per_s
    greedy_thr = simulate(outcome.graph, outcome.hw, greedy_partition(outcome.graph, outcome.hw)).throughput_per_s
    assert cert_thr > greedy_thr                     # the case this test is about
    assert outcome.best.throughput == cert_thr and outcome.found_by is not None
    assert doc["metrics"]["throughput_per_s"] == outcome.best.throughput
    assert doc["found_by"].startswith("the certificate's CP-SAT solve")
    assert "## Found by" in (out / "report.md").read_text()


def test_a_package_only_split_plans_fit_gets_a_split_plan(tmp_path):
    """ResNet-18's largest Conv holds 4.5 MiB of fp16 weights: no whole-op plan fits 4 MiB chiplets without a
    memory tier (the repair proves it), but the staged DP's split plans do; the run returns one, and with
    --max-shard 1 the repair's one-line error stands."""
    from pathlib import Path

    import pytest

    from partitioner.core.errors import UserError
    from partitioner.hw.toml import load_hardware
    from partitioner.model.partition import check

    hw_file = tmp_path / "hw.toml"
    hw_file.write_text('name = "small-sram-8"\nchiplets = 8\nrows = 2\ncols = 4\n[chiplet]\nsram_mib = 4\n')
    model = str(Path(__file__).resolve().parents[1] / "examples" / "resnet18.onnx")
    cfg = RunConfig(model, hardware=str(hw_file), method="greedy", memory_tier=False, certificate=False,
                    out=str(tmp_path / "out"))
    outcome = run(cfg)
    part = outcome.best.partition
    assert outcome.evaluations == 0 and "no plan with every op whole fits" in outcome.found_by
    assert part.shard is not None and (part.shard > 1).any()
    assert not check(outcome.graph, load_hardware(str(hw_file), memory_tier=False), part)
    with pytest.raises(UserError, match="needs .* bytes .* but the largest chiplet it can use has"):
        run(RunConfig(model, hardware=str(hw_file), method="greedy", memory_tier=False, certificate=False,
                      max_shard=1, out=str(tmp_path / "out1")))
