"""The `partition` command end to end on a tiny model: every method, outputs, re-simulation, bad arguments."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from partitioner.app.cli import main
from partitioner.hw.toml import load_hardware
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import check
from partitioner.app.document import assignment_from_document


def _mlp(path, layers=6, width=64):
    nodes, inits = [], []
    prev = "x"
    for i in range(layers):
        w = helper.make_tensor(f"w{i}", TensorProto.FLOAT, [width, width], np.zeros(width * width, np.float32))
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"], name=f"relu{i}"))
        prev = f"r{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["batch", width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _mlp(tmp_path_factory.mktemp("m") / "mlp.onnx")


@pytest.mark.parametrize("method", ["random", "greedy", "dp", "anneal", "exact"])
def test_every_method_writes_a_valid_partition(model, tmp_path, method, capsys):
    out = tmp_path / method
    code = main([model, "--chiplets", "3", "--method", method, "--budget", "4", "--out", str(out),
                 "--time-limit", "5", "--no-certificate"])
    assert code == 0
    doc = json.loads((out / "partition.json").read_text())
    assert doc["method"] == method and doc["chiplets"] == 3
    assert set(doc["metrics"]) >= {"throughput_per_s", "latency_s", "energy_j", "bound_throughput_per_s",
                                   "bottleneck_chiplet"}
    assert doc["metrics"]["throughput_per_s"] <= doc["metrics"]["bound_throughput_per_s"] * (1 + 1e-9)
    graph = load_onnx(model)
    assert set(doc["assignment"]) == {n for op in graph.ops for n in op.onnx_nodes}
    a = assignment_from_document(graph, doc, "partition.json")
    assert check(graph, load_hardware(None, 3), a) == []
    assert sum(c["ops"] for c in doc["per_chiplet"]) == graph.n_ops
    for name in ("report.md", "trace.json", "partition.png", "config.json"):
        assert (out / name).stat().st_size > 0
    trace = json.loads((out / "trace.json").read_text())
    assert trace["traceEvents"]
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*tmp*"))
    assert "throughput" in capsys.readouterr().out


def test_certificate_bounds_the_result(model, tmp_path):
    out = tmp_path / "cert"
    assert main([model, "--chiplets", "2", "--method", "dp", "--out", str(out)]) == 0
    metrics = json.loads((out / "partition.json").read_text())["metrics"]
    assert metrics["throughput_per_s"] <= metrics["solver_bound_throughput_per_s"] * (1 + 1e-9)
    assert "Optimality certificate" in (out / "report.md").read_text()


def test_simulate_rescoring_matches_the_run(model, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([model, "--chiplets", "3", "--method", "dp", "--out", str(out), "--no-certificate"]) == 0
    first = json.loads((out / "partition.json").read_text())["metrics"]["throughput_per_s"]
    capsys.readouterr()
    assert main(["simulate", model, "--partition", str(out / "partition.json")]) == 0
    text = capsys.readouterr().out
    assert f"{first:,.1f} inferences/s" in text


def test_inspect_json(model, capsys):
    assert main(["inspect", model, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # 6 MatMuls of (1x64)x(64x64) = 2*64*64 each, plus 6 ReLUs of 64 elements.
    assert doc["flops"] == 6 * 2 * 64 * 64 + 6 * 64
    assert doc["param_bytes"] == 6 * 64 * 64 * 4


def _exit_code(argv):
    """main's return value, or argparse's exit code when it rejects the arguments itself."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("argv, fragment", [
    (["{model}", "--chiplets", "0"], "--chiplets must be at least 1"),
    (["{model}", "--method", "magic"], "invalid choice"),
    (["{model}", "--budget", "0", "--method", "random"], "--budget must be at least 1"),
    (["{model}", "--time-limit", "-5", "--method", "dp"], "--time-limit must be positive"),
    (["missing.onnx"], "missing.onnx"),
    (["{model}", "--hardware", "nope"], "unknown hardware"),
    (["{model}", "--input-shape", "x=abc"], "--input-shape"),
    (["simulate", "{model}", "--partition", "{bad}"], "partition file"),
    (["simulate", "{model}", "--partition", "nowhere.json"], "does not exist"),
])
def test_bad_arguments_are_one_line_exit_2(model, tmp_path, capsys, argv, fragment):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    argv = [a.format(model=model, bad=bad) for a in argv]
    if argv[0] != "simulate":
        argv += ["--out", str(tmp_path / "o")]
    code = _exit_code(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert fragment in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_simulate_uses_the_saved_precision_and_hardware_file(model, tmp_path, capsys):
    hw_file = tmp_path / "ring.hw"   # any existing path is a hardware file, whatever its suffix
    hw_file.write_text('topology = "ring"\nchiplets = 3\nhop_latency_cycles = 7\n[chiplet]\nsram_mib = 8\n')
    out = tmp_path / "run"
    assert main([model, "--hardware", str(hw_file), "--method", "dp", "--precision", "fp32", "--out", str(out),
                 "--no-certificate"]) == 0
    doc = json.loads((out / "partition.json").read_text())
    assert doc["precision"] == "fp32" and doc["hardware"] == str(hw_file.resolve())
    capsys.readouterr()
    assert main(["simulate", model, "--partition", str(out / "partition.json")]) == 0
    text = capsys.readouterr().out
    assert f"{doc['metrics']['throughput_per_s']:,.1f} inferences/s" in text
    assert "ring" in text
    hw_file.unlink()
    assert main(["simulate", model, "--partition", str(out / "partition.json")]) == 2
    assert "which is gone" in capsys.readouterr().err


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d["assignment"].update({k: [1] for k in d["assignment"]}), "not an integer"),
    (lambda d: d["assignment"].update({k: True for k in d["assignment"]}), "not an integer"),
    (lambda d: d.update(hardware=5), "'hardware'"),
    (lambda d: d.update(chiplets="x"), "'chiplets'"),
    (lambda d: d.update(input_shapes={"x": "abc"}), "'input_shapes'"),
    (lambda d: d.update(input_shapes=[1, 2]), "'input_shapes'"),
    (lambda d: d["assignment"].update({k: 99 for k in d["assignment"]}), "outside"),
])
def test_malformed_partition_files_are_one_line_errors(model, tmp_path, capsys, edit, fragment):
    out = tmp_path / "run"
    assert main([model, "--chiplets", "3", "--method", "dp", "--out", str(out), "--no-certificate"]) == 0
    doc = json.loads((out / "partition.json").read_text())
    edit(doc)
    bad = tmp_path / "edited.json"
    bad.write_text(json.dumps(doc))
    capsys.readouterr()
    assert _exit_code(["simulate", model, "--partition", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("toml, fragment", [
    ("chiplets = 4\nclock_ghz = nan\n", "clock_ghz"),
    ("chiplets = 4\nlink_pj_per_bit = inf\n", "link_pj_per_bit"),
    ("chiplets = 4\n[chiplet]\nsram_mib = 0.0000001\n", "sram_mib"),
    ("chiplets = 4\n[chiplet]\nmacs_per_cycle = 4611686018427387904\n", "macs_per_cycle"),
    (None, "cannot be read"),
])
def test_bad_hardware_files_are_one_line_errors(model, tmp_path, capsys, toml, fragment):
    path = tmp_path / "hw.toml"
    if toml is None:
        path.mkdir()
    else:
        path.write_text(toml)
    assert _exit_code([model, "--hardware", str(path), "--method", "dp", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_outputs_are_readable_like_any_new_file(model, tmp_path):
    import os
    out = tmp_path / "modes"
    assert main([model, "--chiplets", "2", "--method", "greedy", "--out", str(out), "--no-certificate"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    for f in out.iterdir():
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


def test_failed_run_leaves_no_output_directory(tmp_path):
    out = tmp_path / "never"
    assert _exit_code([str(tmp_path / "missing.onnx"), "--out", str(out)]) == 2
    assert not out.exists()


def test_train_stops_at_its_time_budget_and_resumes_without_more_work(tmp_path, capsys):
    import shutil
    from pathlib import Path
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "tiny_mlp.onnx", corpus)
    ckpt = tmp_path / "p.pt"
    argv = ["train", "--corpus", str(corpus), "--out", str(ckpt), "--steps", "100000", "--chiplets", "2",
            "--time-budget", "0.5"]
    assert main(argv) == 0
    updates = capsys.readouterr().out.split(" updates")[0]
    assert ckpt.exists() and updates.startswith("trained ")
    assert main(argv) == 0                       # the budget counts resumed time: nothing more to do
    assert capsys.readouterr().out.split(" updates")[0] == updates
    assert _exit_code(argv[:-1] + ["-1"]) == 2
