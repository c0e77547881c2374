"""split_onnx: per-chiplet ONNX models that run in onnxruntime and reproduce the whole model."""
from __future__ import annotations

import json
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.app.cli import main
from partitioner.core.errors import UserError
from partitioner.hw.toml import load_hardware
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import check
from partitioner.export.split_onnx import split_model, write_split
from partitioner.export.verify import random_inputs, verify_split
from partitioner.plan.splits import dp_partition


def _save(path, nodes, inputs, outputs, inits):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _weights(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture
def two_layer(tmp_path):
    """x(2x8) -> MatMul W1 -> Reshape(c) -> MatMul W2 -> Reshape(c) -> y; both Reshapes read one Constant c."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Constant", [], ["c"], name="c", value=numpy_helper.from_array(np.array([2, 8], np.int64))),
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
        helper.make_node("Reshape", ["h1", "c"], ["r1"], name="rs1"),
        helper.make_node("MatMul", ["r1", "W2"], ["h2"], name="mm2"),
        helper.make_node("Reshape", ["h2", "c"], ["y"], name="rs2"),
    ]
    path = _save(tmp_path / "two.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                 [numpy_helper.from_array(_weights(rng, 8, 8), "W1"), numpy_helper.from_array(_weights(rng, 8, 8), "W2")])
    return path


def test_a_shared_constant_is_copied_into_both_stages(two_layer, tmp_path):
    graph = load_onnx(two_layer)
    assert [op.onnx_nodes for op in graph.ops] == [("mm1", "rs1"), ("mm2", "rs2")]
    model = onnx.load(two_layer)
    split = split_model(graph, np.array([0, 1]), model)
    s0, s1 = split.stages
    assert [n.name for n in s0.model.graph.node] == ["c", "mm1", "rs1"]
    assert [n.name for n in s1.model.graph.node] == ["c", "mm2", "rs2"]
    assert [t.name for t in s0.model.graph.initializer] == ["W1"]
    assert [t.name for t in s1.model.graph.initializer] == ["W2"]
    assert s0.inputs == {"x": "input"} and s0.sends == {"r1": (1,)}
    assert s1.inputs == {"r1": 0} and s1.sends == {"y": ("output",)}
    feeds = random_inputs(model, graph.metadata["input_shapes"])
    v = verify_split(model, split, feeds)
    assert v.max_abs_diff == 0.0 and v.stages_run == 2
    # verify sees a wrong stage: stage 1 computing with W2 doubled gives y doubled, off by |y|
    w2 = s1.model.graph.initializer[0]
    w2.CopyFrom(numpy_helper.from_array(2 * numpy_helper.to_array(w2), "W2"))
    y = feeds["x"] @ numpy_helper.to_array(model.graph.initializer[0]) @ numpy_helper.to_array(model.graph.initializer[1])
    assert verify_split(model, split, feeds).max_abs_diff == pytest.approx(np.abs(y).max(), rel=1e-5)
    w2.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w2) / 2, "W2"))

    files = write_split(split, tmp_path / "out", "two")
    assert [f.rsplit("/", 1)[1] for f in files] == ["stage_0.onnx", "stage_1.onnx", "manifest.json"]
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert doc["outputs"] == {"y": 1}
    assert [(s["file"], s["chiplet"], s["step"]) for s in doc["stages"]] == [("stage_0.onnx", 0, 0),
                                                                             ("stage_1.onnx", 1, 1)]
    assert doc["stages"][0]["outputs"] == [{"name": "r1", "to": [1]}]
    assert doc["stages"][1]["inputs"] == [{"name": "r1", "from": 0}]
    for f in files[:2]:
        onnx.checker.check_model(f)


def test_one_chiplet_is_one_stage_equal_to_the_model(two_layer):
    graph = load_onnx(two_layer)
    split = split_model(graph, np.array([3, 3]), onnx.load(two_layer))
    assert [s.chiplet for s in split.stages] == [3]
    assert len(split.stages[0].model.graph.node) == 5


def test_a_stage_that_needs_a_later_tensor_names_the_node(tmp_path):
    """Reshape(h1, Shape(h2)) fuses into mm1's op (shape queries are constants to the importer), so the graph's
    edges all go forward, but stage 0 would need h2 from chiplet 1."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h1"], name="mm1"),
        helper.make_node("MatMul", ["x", "W2"], ["h2"], name="mm2"),
        helper.make_node("Shape", ["h2"], ["s2"], name="shape2"),
        helper.make_node("Reshape", ["h1", "s2"], ["r1"], name="rs1"),
        helper.make_node("Add", ["r1", "h2"], ["y"], name="add"),
    ]
    path = _save(tmp_path / "back.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                 [numpy_helper.from_array(_weights(rng, 8, 8), "W1"), numpy_helper.from_array(_weights(rng, 8, 8), "W2")])
    graph = load_onnx(path)
    assert [op.name for op in graph.ops] == ["mm1", "mm2", "add"]
    with pytest.raises(UserError, match=r"node 'shape2' on chiplet 0 reads tensor 'h2' made by node 'mm2' on later "
                                        r"chiplet 1.*put op 'mm2' \(holding node 'mm2'\) on chiplet 0"):
        split_model(graph, np.array([0, 1, 1]), onnx.load(path))
    split = split_model(graph, np.array([0, 0, 1]), onnx.load(path))
    assert [n.name for n in split.stages[0].model.graph.node] == ["mm1", "mm2", "shape2", "rs1"]


def test_a_graph_of_another_model_is_refused(two_layer, tmp_path):
    other = load_onnx(two_layer)
    rng = np.random.default_rng(2)
    path = _save(tmp_path / "one.onnx", [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])],
                 [numpy_helper.from_array(_weights(rng, 8, 8), "W")])
    with pytest.raises(UserError, match="not in the imported graph|not in this ONNX model"):
        split_model(other, np.array([0, 1]), onnx.load(path))
    with pytest.raises(UserError, match="expected 2 integer chiplet ids"):
        split_model(other, np.array([0]), onnx.load(two_layer))


# --- the CLI: bad partition files, atomic output ---------------------------------------------------------------
def _partition_file(path, assignment: dict, chiplets=4):
    path.write_text(json.dumps({"chiplets": chiplets, "assignment": assignment}))
    return str(path)


@pytest.mark.parametrize("assignment,fragment", [
    ({"mm1": 0, "rs1": 0, "mm2": [1, 2], "rs2": [1, 2]}, "shards node 'mm2' over chiplets [1, 2]"),
    ({"mm1": 0, "rs1": 0, "mm2": {"chiplets": [1, 2], "axis": "col"}, "rs2": {"chiplets": [1, 2], "axis": "col"}},
     "shards node 'mm2' over chiplets [1, 2] along axis 'col', which `partition split` cannot cut"),
    ({"mm1": 0, "rs1": 0, "mm2": 4, "rs2": 4}, "puts node 'mm2' on chiplet 4, outside 0..3"),
    ({"mm1": 1, "rs1": 1, "mm2": 0, "rs2": 0}, "node 'mm2' on chiplet 0 reads tensor 'r1' made by node 'rs1' on later chiplet 1. Fix: put "
                                            "op 'mm1' (holding node 'rs1') on chiplet 0 or earlier"),
    ({"mm1": 0, "rs1": 0, "mm2": 1, "rs2": 1, "conv7": 2}, "places node 'conv7', which this model does not have"),
    ({"mm1": 0, "rs1": 0}, "does not place op mm2"),
])
def test_bad_partition_files_are_one_line_errors_and_leave_out_untouched(two_layer, tmp_path, capsys, assignment,
                                                                          fragment):
    out = tmp_path / "out"
    assert main(["split", str(two_layer), "--partition", _partition_file(tmp_path / "p.json", {"mm1": 0, "rs1": 0,
                 "mm2": 1, "rs2": 1}), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    code = main(["split", str(two_layer), "--partition", _partition_file(tmp_path / "bad.json", assignment),
                 "--out", str(out), "--verify"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_split_replaces_a_previous_split_but_never_foreign_files(two_layer, tmp_path, capsys):
    out = tmp_path / "out"
    p = _partition_file(tmp_path / "p.json", {"mm1": 0, "rs1": 0, "mm2": 1, "rs2": 1})
    assert main(["split", str(two_layer), "--partition", p, "--out", str(out), "--verify"]) == 0
    assert "max abs diff 0 " in capsys.readouterr().out
    p = _partition_file(tmp_path / "p.json", {"mm1": 2, "rs1": 2, "mm2": 2, "rs2": 2})
    assert main(["split", str(two_layer), "--partition", p, "--out", str(out)]) == 0
    assert sorted(x.name for x in out.iterdir()) == ["manifest.json", "stage_2.onnx"]
    (out / "notes.txt").write_text("mine")
    assert main(["split", str(two_layer), "--partition", p, "--out", str(out)]) == 2
    assert "holds files a split did not write (notes.txt)" in capsys.readouterr().err


def test_graph_only_models_give_graph_only_stages_and_cannot_be_verified(tmp_path, capsys):
    from pathlib import Path

    src = Path(__file__).parent / "data" / "tiny_external_absent.onnx"
    graph = load_onnx(src)
    model = onnx.load(src, load_external_data=False)
    a = (np.arange(graph.n_ops) * 2) // graph.n_ops
    split = split_model(graph, a, model)
    files = write_split(split, tmp_path / "out")
    inits = [t for s in split.stages for t in s.model.graph.initializer]
    assert inits and all(t.data_location == TensorProto.EXTERNAL for t in inits)
    assert len(files) == len(split.stages) + 1
    with pytest.raises(UserError, match="external data file is absent"):
        verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))


# --- real exports: nn.MultiheadAttention (legacy exporter) and a small CNN, 4 chiplets ----------------------------
def _export(module, args, path):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), dynamo=False, input_names=["x"], output_names=["y"])
    return path


def _fold_shapes(path):
    """onnxruntime's basic (constant-folding) rewrites: today's importer cannot resolve the Reshape that the
    legacy exporter builds from Shape/Slice/Concat around nn.MultiheadAttention's packed projection."""
    import onnxruntime as ort

    folded = path.with_name(path.stem + "_folded.onnx")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    opts.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return folded


def _transformer():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, d=32, heads=4):
            super().__init__()
            self.inp = nn.Linear(16, d)
            self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))
            self.head = nn.Linear(d, 10)

        def forward(self, x):
            x = self.inp(x)
            a, _ = self.mha(x, x, x, need_weights=False)
            x = self.ln1(x + a)
            return self.head(self.ln2(x + self.ff(x)))

    torch.manual_seed(0)
    return Block(), (torch.randn(1, 8, 16),)


def _cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    return net, (torch.randn(1, 3, 16, 16),)


@pytest.mark.parametrize("make,fold", [(_transformer, True), (_transformer, False), (_cnn, False)],
                         ids=["mha-legacy-folded", "mha-legacy-raw", "cnn"])
def test_stages_of_a_4_chiplet_partition_reproduce_the_model(make, fold, tmp_path, capsys):
    module, args = make()
    path = _export(module, args, tmp_path / "m.onnx")
    if fold:
        path = _fold_shapes(path)
    try:
        graph = load_onnx(path)
    except UserError as exc:  # the raw legacy MHA export, until the importer resolves its Reshape
        pytest.xfail(f"the importer cannot read the raw legacy export yet: {exc.problem}")
    hw = load_hardware(None, 4)
    # dp balances compute over the 4 chiplets; on these tiny models it leaves some idle, which is fine.
    for a in (dp_partition(graph, hw), (np.arange(graph.n_ops) * 4) // graph.n_ops):
        assert check(graph, hw, a) == []
        doc = {"chiplets": 4, "assignment": {n: int(a[i]) for i, op in enumerate(graph.ops) for n in op.onnx_nodes}}
        out = tmp_path / "split"
        code = main(["split", str(path), "--partition", _partition_file(tmp_path / "p.json", doc["assignment"]),
                     "--out", str(out), "--verify"])
        printed = capsys.readouterr()
        assert code == 0, printed.err
        manifest = json.loads((out / "manifest.json").read_text())
        assert len(manifest["stages"]) == len(set(a.tolist())) >= 2
        model = onnx.load(path)
        split = split_model(graph, a, model)
        v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"], seed=3))
        assert v.max_abs_diff <= 1e-4 and v.stages_run == len(manifest["stages"])
        for s in manifest["stages"]:
            onnx.checker.check_model(str(out / s["file"]))
        # every weight the model carries is in some stage, with its bytes
        stage_weights = {t.name: t.raw_data for s in split.stages for t in s.model.graph.initializer}
        assert {t.name: t.raw_data for t in model.graph.initializer} == stage_weights


def test_shape_subgraphs_of_a_dynamic_export_are_copied_into_every_stage_that_reshapes(tmp_path):
    """x.view(b, t, 4, 8) with dynamic b, t: the legacy exporter builds each Reshape's target from Shape(x) ->
    Gather -> Unsqueeze -> Concat. The importer folds those; every stage that reshapes gets its own copy."""
    import torch
    from torch import nn

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.o = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)

        def forward(self, x):
            b, t, _ = x.shape
            q = self.q(x).view(b, t, 4, 8).transpose(1, 2)
            k = self.k(x).view(b, t, 4, 8).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2), -1) @ k
            return self.o(a.transpose(1, 2).reshape(b, t, 32))

    torch.manual_seed(0)
    path = tmp_path / "heads.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Heads().eval(), (torch.randn(1, 6, 32),), str(path), dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "b", 1: "t"}})
    graph = load_onnx(path, input_shapes={"x": (2, 6, 32)})
    assert [op.op_type for op in graph.ops] == ["MatMul", "MatMul", "MatMul", "Softmax", "MatMul", "MatMul"]
    model = onnx.load(path)
    split = split_model(graph, np.array([0, 1, 2, 3, 3, 3]), model)
    shapes_in = [sum(n.op_type == "Shape" for n in s.model.graph.node) for s in split.stages]
    assert sum(shapes_in) > sum(n.op_type == "Shape" for n in model.graph.node)
    assert split.stages[1].inputs == {"x": "input"}  # q and k both read x; k's Reshape needs Shape(x) too
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))
    assert v.max_abs_diff <= 1e-5 and v.stages_run == 4
