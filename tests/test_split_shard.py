"""Splitting sharded partitions: pieces on their group's chiplets, joins where the joined tensor is read, stages per
(chiplet, step) that run in manifest order and reproduce the whole model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.app.cli import main
from partitioner.hw.toml import load_hardware
from partitioner.frontend.load import load_onnx
from partitioner.export.split_onnx import split_model, write_split
from partitioner.export.verify import random_inputs, verify_split
from partitioner.plan.staged_dp import staged_partition

DATA = Path(__file__).parent / "data"


def _chain(path, *widths):
    """x (2 x widths[0]) -> MatMul W1 -> ... -> y: one MatMul per weight, named mm1, mm2, ...; tensors h1, h2, ..."""
    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:]), 1):
        out = "y" if i == len(widths) - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"W{i}"], [out], name=f"mm{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal((n_in, n_out)).astype(np.float32), f"W{i}"))
        prev = out
    model = helper.make_model(helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, widths[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, widths[-1]])], inits),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _nodes(stage):
    return [(n.op_type, list(n.input), list(n.output)) for n in stage.model.graph.node]


def _weights(stage):
    return {t.name: list(t.dims) for t in stage.model.graph.initializer}


def test_one_matmul_split_by_columns_two_ways(tmp_path):
    """x (2x8) @ W1 (8x8) on chiplets 0..1: piece j holds W1[:, 4j:4j+4] (8x4) and writes y[:, 4j:4j+4]; the Concat
    on the last axis runs where y is read (the caller's output comes out of the last chiplet)."""
    path = _chain(tmp_path / "one.onnx", 8, 8)
    graph, model = load_onnx(path), onnx.load(path)
    split = split_model(graph, np.array([0]), model, shard=np.array([2]))
    s0, s1 = split.stages
    assert (s0.file, s1.file) == ("stage_0_0.onnx", "stage_1_1.onnx")
    assert _nodes(s0) == [("MatMul", ["x", "W1.ax1.0_4"], ["y.p0of2"])]
    assert _nodes(s1) == [("MatMul", ["x", "W1.ax1.4_8"], ["y.p1of2"]), ("Concat", ["y.p0of2", "y.p1of2"], ["y"])]
    assert s1.model.graph.node[1].attribute[0].i == 1  # axis -1 of the 2-D output
    assert _weights(s0) == {"W1.ax1.0_4": [8, 4]} and _weights(s1) == {"W1.ax1.4_8": [8, 4]}
    w = numpy_helper.to_array(model.graph.initializer[0])
    np.testing.assert_array_equal(numpy_helper.to_array(s0.model.graph.initializer[0]), w[:, :4])
    assert s0.inputs == {"x": "input"} and s0.sends == {"y.p0of2": (1,)}
    assert s1.inputs == {"x": "input", "y.p0of2": 0} and s1.sends == {"y": ("output",)}
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))
    assert v.max_abs_diff <= 1e-6 and v.stages_run == 2
    doc = split.manifest("one")
    assert doc["outputs"] == {"y": 1}
    assert doc["stages"][1]["inputs"][1] == {"name": "y.p0of2", "from": 0, "stage": "stage_0_0.onnx"}
    assert doc["sharded"] == [{"op": "mm1", "axis": "head", "chiplets": [0, 1], "pieced": ["mm1"], "whole": []}]


def test_column_then_row_parallel_is_one_all_reduce(tmp_path):
    """Megatron: W1 (32x32, 4 KiB: a column GEMM) then W2 on the same group takes row_parallel. Piece j of mm2
    reads piece j of mm1 on its own chiplet (no Slice, no transfer) and W2's rows 16j..16j+16; the partials
    join in one Sum."""
    path = _chain(tmp_path / "mlp.onnx", 32, 32, 32)
    graph, model = load_onnx(path), onnx.load(path)
    split = split_model(graph, np.array([0, 0]), model, shard=np.array([2, 2]))
    s0, s1 = split.stages
    assert _nodes(s0) == [("MatMul", ["x", "W1.ax1.0_16"], ["h1.p0of2"]),
                          ("MatMul", ["h1.p0of2", "W2.ax0.0_16"], ["y.p0of2"])]
    assert _nodes(s1)[:2] == [("MatMul", ["x", "W1.ax1.16_32"], ["h1.p1of2"]),
                              ("MatMul", ["h1.p1of2", "W2.ax0.16_32"], ["y.p1of2"])]
    assert _nodes(s1)[2] == ("Sum", ["y.p0of2", "y.p1of2"], ["y"])
    assert _weights(s0) == {"W1.ax1.0_16": [32, 16], "W2.ax0.0_16": [16, 32]}
    assert s0.sends == {"y.p0of2": (1,)} and s1.inputs == {"x": "input", "y.p0of2": 0}
    assert [op["axis"] for op in split.sharded] == ["column", "row_parallel"]
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))
    assert v.max_abs_diff <= 1e-4


def test_a_chiplet_runs_a_second_stage_after_a_join_it_needs(tmp_path):
    """mm1 (column) -> mm2 (row_parallel) -> Sum -> mm3 (column), all on chiplets 0..1. Chiplet 0 joins the partial
    sums after chiplet 1's first pieces ran; chiplet 1's mm3 piece needs that join too, so chiplet 1 runs two stages:
    [1 step 0: mm1, mm2 pieces] -> [0 step 1: its pieces, Sum, mm3 piece] -> [1 step 2: Sum, mm3 piece, Concat]."""
    path = _chain(tmp_path / "three.onnx", 32, 32, 32, 32)
    graph, model = load_onnx(path), onnx.load(path)
    split = split_model(graph, np.array([0, 0, 0]), model, shard=np.array([2, 2, 2]))
    assert [s.file for s in split.stages] == ["stage_1_0.onnx", "stage_0_1.onnx", "stage_1_2.onnx"]
    first, zero, second = split.stages
    assert first.sends == {"h2.p1of2": (0, 1)}
    assert second.inputs == {"h2.p0of2": 0, "h2.p1of2": 1, "y.p0of2": 0}
    assert split.manifest()["stages"][2]["inputs"][1]["stage"] == "stage_1_0.onnx"
    assert [n.op_type for n in second.model.graph.node] == ["Sum", "MatMul", "Concat"]
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))
    assert v.max_abs_diff <= 1e-4 and v.stages_run == 3


# --- real exports with weights: nn.MultiheadAttention (legacy exporter) and CNNs, 4 chiplets ---------------------
def _exported(make, tmp_path):
    from test_split_onnx import _export

    module, args = make()
    return _export(module, args, tmp_path / "m.onnx")


def _models():
    from test_split_onnx import _cnn, _transformer

    return [_transformer, _cnn]


def _check_split(graph, model, a, k, out, weights_cut=True, axes=None):
    """Split, write (every stage through onnx.checker), verify; the sliced weights put back together are the
    model's weights (with `weights_cut` True, at least one is cut; False, none; None, either). Returns the split."""
    split = split_model(graph, a, model, shard=k, n_chiplets=4, axes=axes)
    files = write_split(split, out)
    for f in files[:-1]:
        onnx.checker.check_model(f)
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"], seed=1))
    assert v.max_abs_diff <= 1e-4 and v.stages_run == len(split.stages) >= 2
    whole = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    parts: dict[tuple[str, int], dict[int, np.ndarray]] = {}
    for s in split.stages:
        for t in s.model.graph.initializer:
            base, _, rest = t.name.rpartition(".ax")
            if base in whole and rest.split(".")[0].isdigit():
                lo = int(rest.split(".")[1].split("_")[0])
                parts.setdefault((base, int(rest.split(".")[0])), {})[lo] = numpy_helper.to_array(t)
    assert weights_cut is None or bool(parts) == weights_cut
    for (name, axis), by_lo in parts.items():
        np.testing.assert_array_equal(np.concatenate([by_lo[lo] for lo in sorted(by_lo)], axis=axis), whole[name])
    return split


@pytest.mark.parametrize("which", [0, 1], ids=["mha-legacy", "cnn"])
def test_sharded_partitions_of_real_exports_reproduce_the_model(which, tmp_path):
    path = _exported(_models()[which], tmp_path)
    graph, model = load_onnx(path), onnx.load(path)
    n = graph.n_ops
    # every op split 4 ways on one group; two groups of 2 (first half, second half); for the transformer the
    # staged DP's plan (it splits the attention 2 ways; whether it also cuts the output projection's weights is
    # the DP's choice, so the weights are not checked either way)
    plans = [(np.zeros(n, np.int64), np.full(n, 4)), (np.where(np.arange(n) < n // 2, 0, 2), np.full(n, 2))]
    if which == 0:
        plans.append(staged_partition(graph, load_hardware(None, 4), 2))
    for j, (a, k) in enumerate(plans):
        split = _check_split(graph, model, a, k, tmp_path / f"out{j}", weights_cut=True if j < 2 else None)
        assert (k > 1).any() and all(op["pieced"] for op in split.sharded)


def test_small_cnn_default_partition_is_sharded_and_splits(tmp_path, capsys):
    """tests/data/small_cnn_weights.onnx (/work/models/small-cnn.onnx): the staged DP, which `partition --chiplets 4`
    picks by default, splits the first Conv. Cut as the simulator lays it out (rule S9: its 32x32 output pixels fill
    the 64 x 64 array's rows where its 16 channels cut k ways fill a sliver of its columns) it splits by output rows,
    every piece holding all the filters; cut without recorded axes it splits by output channels. Both run."""
    from partitioner.model.cost import keep_column
    from partitioner.model.sharding import layout

    path = DATA / "small_cnn_weights.onnx"
    graph, model = load_onnx(path), onnx.load(path)
    hw = load_hardware(None, 4)
    a, k = staged_partition(graph, hw, 4)
    assert k.max() > 1
    axes, _ = layout(graph, a, k, keep_column(hw))
    assert axes[0] == "spatial"
    split = _check_split(graph, model, a, k, tmp_path / "spatial", weights_cut=None, axes=axes)
    conv = next(op for op in split.sharded if op["axis"] == "spatial")
    assert conv["whole"] == [] and len(conv["chiplets"]) == k.max()
    split = _check_split(graph, model, a, k, tmp_path / "out")
    conv = next(op for op in split.sharded if op["axis"] == "out_channel")
    assert conv["whole"] == [] and len(conv["chiplets"]) == k.max()


# --- the CLI ------------------------------------------------------------------------------------------------------
def _doc(path, assignment, chiplets=4):
    path.write_text(json.dumps({"chiplets": chiplets, "assignment": assignment}))
    return str(path)


def _group(*chips, axis="column"):
    return {"chiplets": list(chips), "axis": axis}


def test_cli_splits_a_sharded_partition_file(tmp_path, capsys):
    path = _chain(tmp_path / "mlp.onnx", 32, 32, 32)
    p = _doc(tmp_path / "p.json", {"mm1": _group(0, 1), "mm2": _group(0, 1)})
    assert main(["split", str(path), "--partition", p, "--out", str(tmp_path / "out"), "--verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 stages: stage_0_0.onnx (2 nodes, 1 in, 1 out), stage_1_1.onnx (3 nodes, 2 in, 1 out)")
    assert "2 split ops: 2 nodes cut into pieces, 0 run whole" in out
    doc = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [s["file"] for s in doc["stages"]] == ["stage_0_0.onnx", "stage_1_1.onnx"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["manifest.json", "stage_0_0.onnx",
                                                                   "stage_1_1.onnx"]


@pytest.mark.parametrize("assignment,fragment", [
    ({"mm1": 0, "mm2": _group(3, 4)}, "shards node 'mm2' over chiplets [3, 4], past the package's last chiplet 3. "
                                      "Fix: use a group inside chiplets 0..3"),
    ({"mm1": 0, "mm2": _group(1, 2, axis="diagonal")}, "shards node 'mm2' over chiplets [1, 2] along axis "
                                                         "'diagonal', which `partition split` cannot cut"),
    ({"mm1": _group(1, 2), "mm2": 1}, "cannot split: edge mm1 -> mm2 goes backwards between groups (chiplets 1..2 "
                                      "-> 1)"),
])
def test_bad_sharded_files_are_one_line_errors_and_write_nothing(tmp_path, capsys, assignment, fragment):
    path = _chain(tmp_path / "mlp.onnx", 32, 32, 32)
    out = tmp_path / "out"
    assert main(["split", str(path), "--partition", _doc(tmp_path / "ok.json", {"mm1": 0, "mm2": 1}),
                 "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    code = main(["split", str(path), "--partition", _doc(tmp_path / "bad.json", assignment), "--out", str(out),
                 "--verify"])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.slow
@pytest.mark.parametrize("which", ["mha-legacy", "small-cnn"])
def test_partition_then_split_verify_end_to_end(which, tmp_path, capsys):
    """The real default path: `partition MODEL --chiplets 4` (ops may split up to 4 ways), then `partition split
    --verify` on its partition.json. The small CNN's default plan splits its first Conv; the tiny transformer's is
    whole-op at 4 chiplets (its sharded plans are covered above)."""
    from test_split_onnx import _transformer

    path = _exported(_transformer, tmp_path) if which == "mha-legacy" else DATA / "small_cnn_weights.onnx"
    assert main([str(path), "--chiplets", "4", "--out", str(tmp_path / "run")]) == 0
    part = json.loads((tmp_path / "run" / "partition.json").read_text())
    sharded = any(isinstance(v, dict) for v in part["assignment"].values())
    assert sharded == (which == "small-cnn")
    capsys.readouterr()
    assert main(["split", str(path), "--partition", str(tmp_path / "run" / "partition.json"),
                 "--out", str(tmp_path / "stages"), "--verify"]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("max abs diff ")[1].split()[0])
    manifest = json.loads((tmp_path / "stages" / "manifest.json").read_text())
    assert diff <= 1e-4 and len(manifest["stages"]) >= 2
    assert ("sharded" in manifest) == sharded
    for s in manifest["stages"]:
        onnx.checker.check_model(str(tmp_path / "stages" / s["file"]))


def test_embedding_heads_and_a_tied_head_split_exactly_three_ways(tmp_path):
    """Token embedding (vocab: the table's 32 columns cut 10/11/11), Q/K/V viewed as 4-D heads (attention MatMuls
    and Softmax: head), the LM head reading the embedding through a Transpose (column, through a Slice of the
    folded transpose). Uneven 3-way pieces on chiplets 0..2 still reproduce the model."""
    import warnings

    import torch
    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, v=64, d=32, h=4):
            super().__init__()
            self.emb, self.h = nn.Embedding(v, d), h
            self.qkv, self.o, self.ln = nn.Linear(d, 3 * d), nn.Linear(d, d), nn.LayerNorm(d)

        def forward(self, ids):
            x = self.emb(ids)
            b, t, d = x.shape
            q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in self.qkv(x).split(d, -1))
            a = torch.softmax(q @ k.transpose(-1, -2) / 8 ** 0.5, -1) @ v
            return self.ln(x + self.o(a.transpose(1, 2).reshape(b, t, d))) @ self.emb.weight.t()

    torch.manual_seed(0)
    path = tmp_path / "tiny_gpt.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Tiny().eval(), (torch.randint(0, 64, (1, 8)),), str(path), dynamo=False,
                          input_names=["ids"], output_names=["y"], do_constant_folding=False)
    graph, model = load_onnx(path), onnx.load(path)
    split = split_model(graph, np.zeros(graph.n_ops, np.int64), model, shard=np.full(graph.n_ops, 3), n_chiplets=4)
    axes = {op["op"]: op["axis"] for op in split.sharded if op["pieced"]}
    assert axes["/emb/Gather"] == "vocab" and axes["/Softmax"] == "head" and axes["/MatMul_2"] == "column"
    tables = sorted(list(t.dims) for s in split.stages for t in s.model.graph.initializer
                    if t.name.startswith("emb.weight.ax1."))
    assert tables == [[64, 10], [64, 11], [64, 11]]
    feeds = {"ids": np.random.default_rng(0).integers(0, 64, size=(1, 8)).astype(np.int64)}
    v = verify_split(model, split, feeds)
    assert v.max_abs_diff <= 1e-4 and v.stages_run == len(split.stages) >= 2
    write_split(split, tmp_path / "out")  # every stage passes onnx.checker
