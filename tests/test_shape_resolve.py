"""Shapes the standard inference misses: onnxslim folding, the onnxruntime run, and the error that remains."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import partitioner.frontend.shape_resolve as sr
from partitioner.app.cli import main
from partitioner.core.errors import UserError
from partitioner.frontend.load import load_onnx

torch = pytest.importorskip("torch")
RESHAPE = "/layers.0/att/Reshape_2_output_0"


def _export(module, example, path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    return str(path)


@pytest.fixture(scope="module")
def mha_model(tmp_path_factory):
    """Two post-norm blocks around nn.MultiheadAttention, legacy exporter: Reshapes fed by Shape->Gather->Concat."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, d=32, heads=4):
            super().__init__()
            self.att, self.ln, self.ff = nn.MultiheadAttention(d, heads, batch_first=True), nn.LayerNorm(d), nn.Linear(d, d)

        def forward(self, x):
            a, _ = self.att(x, x, x, need_weights=False)
            x = self.ln(x + a)
            return x + self.ff(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    torch.manual_seed(0)
    return _export(Net(), torch.randn(1, 16, 32), tmp_path_factory.mktemp("mha") / "mha.onnx")


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory):
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return _export(net, torch.randn(1, 3, 16, 16), tmp_path_factory.mktemp("cnn") / "cnn.onnx")


def test_standard_inference_alone_misses_the_mha_reshape(mha_model, monkeypatch):
    monkeypatch.setattr("partitioner.frontend.fold.resolve_missing", lambda *a: {})
    with pytest.raises(UserError, match="Reshape_2_output_0"):
        load_onnx(mha_model)


def test_onnxslim_folding_alone_resolves(mha_model, monkeypatch):
    monkeypatch.setattr(sr, "_run_onnxruntime", lambda *a: {})
    g = load_onnx(mha_model)
    # the attention's 4 GEMMs per block are costed: in-proj (16x32 -> 96), Q K^T and A V per head, out-proj
    assert any(op.gemms == ((4, 16, 8, 16),) for op in g.ops)   # Q K^T: 4 heads of 16x8 by 8x16


def test_onnxruntime_run_alone_resolves(mha_model, monkeypatch):
    monkeypatch.setattr(sr, "_fold_with_onnxslim", lambda *a: {})
    found = sr.resolve_missing(onnx.load(mha_model), mha_model, {RESHAPE}, {"x": (1, 16, 32)})
    assert found[RESHAPE] == ((16, 1, 3, 32), TensorProto.FLOAT)  # packed QKV unflattened: (seq, batch, 3, d)
    assert any(op.gemms == ((4, 16, 8, 16),) for op in load_onnx(mha_model).ops)


@pytest.mark.parametrize("which", ["mha_model", "cnn_model"])
def test_legacy_exports_partition_at_4_chiplets(which, request, tmp_path):
    path = request.getfixturevalue(which)
    out = tmp_path / "out"
    assert main([path, "--chiplets", "4", "--method", "dp", "--no-certificate", "--out", str(out)]) == 0
    doc = json.loads((out / "partition.json").read_text())
    nodes = {n.name for n in onnx.load(path).graph.node}
    assert set(doc["assignment"]) <= nodes and len(doc["assignment"]) > 5


def _graph_only_reshape(tmp_path, x_shape):
    """x -> Reshape(x, target) where the target is an external weight whose file is absent: no fold, no run."""
    target = numpy_helper.from_array(np.array([-1, 4], np.int64), "target")
    target.ClearField("raw_data")
    target.data_location = TensorProto.EXTERNAL
    target.external_data.add(key="location", value="absent.bin")
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"], name="reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [target])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path))
    return str(path)


def test_truly_unresolvable_names_tensor_and_no_input_shape(tmp_path):
    with pytest.raises(UserError) as err:
        load_onnx(_graph_only_reshape(tmp_path, [2, 8]))
    msg = err.value.one_line()
    assert "tensor 'r'" in msg and "no input shape would" in msg and "--input-shape" not in msg


def test_unresolved_from_a_guessed_input_names_that_input(tmp_path):
    with pytest.raises(UserError) as err:
        load_onnx(_graph_only_reshape(tmp_path, ["batch", "n"]))
    assert "--input-shape for x" in err.value.one_line()


def test_cli_exit_2_on_unresolvable(tmp_path, capsys):
    assert main(["inspect", _graph_only_reshape(tmp_path, [2, 8])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot resolve the shape of tensor 'r'" in err


def test_value_sized_tensor_from_a_guessed_input_suggests_no_input_shape(tmp_path):
    # NonZero's output length depends on x's values: even though x's size was guessed, no input shape resolves it
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
             helper.make_node("Cast", ["nz"], ["f"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Softmax", ["f"], ["y"], name="sm")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(tmp_path / "nz.onnx"))
    with pytest.raises(UserError) as err:
        load_onnx(str(tmp_path / "nz.onnx"))
    assert "no input shape would" in err.value.fix and "NonZero" in err.value.fix
