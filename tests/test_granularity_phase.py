"""Granularity levels (fused, node, layer) and decoder phases (prefill, decode with a KV cache), by hand."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.app.cli import main
from partitioner.core.errors import UserError
from partitioner.frontend.granularity import layer_key, layer_runs
from partitioner.frontend.load import load_onnx

D, VOCAB = 8, 16


def tiny_decoder(path, layers=2):
    """Token ids -> embedding -> `layers` single-head causal attention blocks named /layers.i/... (d = 8)."""
    w = lambda name, *shape: numpy_helper.from_array(np.ones(shape, np.float32), name)  # noqa: E731
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["h0"], name="/embed/Gather")]
    inits = [w("emb", VOCAB, D)]
    for i in range(layers):
        p, h = f"/layers.{i}", f"h{i}"
        nodes += [helper.make_node("MatMul", [h, f"wq{i}"], [f"q{i}"], name=f"{p}/q/MatMul"),
                  helper.make_node("MatMul", [h, f"wk{i}"], [f"k{i}"], name=f"{p}/k/MatMul"),
                  helper.make_node("MatMul", [h, f"wv{i}"], [f"v{i}"], name=f"{p}/v/MatMul"),
                  helper.make_node("Transpose", [f"k{i}"], [f"kt{i}"], name=f"{p}/Transpose", perm=[0, 2, 1]),
                  helper.make_node("MatMul", [f"q{i}", f"kt{i}"], [f"s{i}"], name=f"{p}/qk/MatMul"),
                  helper.make_node("Shape", [f"s{i}"], [f"ss{i}"], name=f"{p}/Shape"),
                  helper.make_node("ConstantOfShape", [f"ss{i}"], [f"ones{i}"], name=f"{p}/ConstantOfShape",
                                   value=numpy_helper.from_array(np.array([1.0], np.float32))),
                  helper.make_node("Trilu", [f"ones{i}"], [f"mask{i}"], name=f"{p}/Trilu", upper=0),
                  helper.make_node("Add", [f"s{i}", f"mask{i}"], [f"sm{i}"], name=f"{p}/mask/Add"),
                  helper.make_node("Softmax", [f"sm{i}"], [f"a{i}"], name=f"{p}/Softmax", axis=-1),
                  helper.make_node("MatMul", [f"a{i}", f"v{i}"], [f"c{i}"], name=f"{p}/av/MatMul"),
                  helper.make_node("MatMul", [f"c{i}", f"wo{i}"], [f"o{i}"], name=f"{p}/o/MatMul"),
                  helper.make_node("Add", [f"o{i}", h], [f"h{i + 1}"], name=f"{p}/Add")]
        inits += [w(f"w{x}{i}", D, D) for x in "qkvo"]
    g = helper.make_graph(nodes, "dec", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
                          [helper.make_tensor_value_info(f"h{layers}", TensorProto.FLOAT, ["batch", "seq", D])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return str(path)


@pytest.fixture
def decoder(tmp_path):
    return tiny_decoder(tmp_path / "dec.onnx")


def test_layer_key_reads_exporter_scopes():
    assert layer_key("/model/layers.3/self_attn/q_proj/MatMul") == "/model/layers.3"
    assert layer_key("/transformer/h.0/attn/MatMul") == "/transformer/h.0"
    assert layer_key("/bert/encoder/layer.11/output/dense/MatMul") == "/bert/encoder/layer.11"
    assert layer_key("/layer2/layer2.1/conv1/Conv") == "/layer2/layer2.1"
    assert layer_key("/h/0/mlp/Gemm") == "/h/0"
    assert layer_key("/embeddings/Add_1") is None and layer_key("MatMul_3") is None


def test_layer_runs_are_contiguous_and_absorb_unscoped_nodes_inside_a_layer():
    # an unscoped group between two of layer a joins it; unscoped groups before/after stay units of their own
    assert layer_runs([None, "a", None, "a", "b", None]) == [0, 1, 1, 1, 2, 3]
    assert layer_runs(["a", "b", "a"]) == [0, 1, 2]   # a layer split by another stays two units: still a DAG


def test_three_granularities_cover_the_same_nodes(decoder):
    graphs = {gr: load_onnx(decoder, granularity=gr) for gr in ("fused", "node", "layer")}
    # node: per layer q, k, v, Transpose, qk, mask Add, Softmax, av, o, residual Add = 10; + the Gather
    assert graphs["node"].n_ops == 1 + 2 * 10
    # fused: Transpose into k, mask Add into qk; the residual Add reads two groups so stays: 8 per layer
    assert graphs["fused"].n_ops == 1 + 2 * 8
    assert [op.name for op in graphs["layer"].ops] == ["/embed/Gather", "/layers.0", "/layers.1"]
    assert graphs["layer"].ops[1].op_type == "Layer" and len(graphs["layer"].ops[1].gemms) == 6
    nodes = {gr: sorted(n for op in g.ops for n in op.onnx_nodes) for gr, g in graphs.items()}
    assert nodes["fused"] == nodes["node"] == nodes["layer"]
    assert len({g.total_flops for g in graphs.values()}) == 1
    assert len({g.total_weight_bytes for g in graphs.values()}) == 1


def test_unknown_granularity(decoder):
    with pytest.raises(UserError, match="unknown granularity"):
        load_onnx(decoder, granularity="block")


def test_decode_step_bytes_by_hand(tmp_path):
    g = load_onnx(tiny_decoder(tmp_path / "one.onnx", layers=1), precision="fp16", phase="decode", context=4)
    assert g.metadata["input_shapes"] == {"ids": (1, 1)} and g.metadata["tokens_per_inference"] == 1
    # KV cache: K^T (1 x 8 x 1 token) and V (1 x 1 x 8) of the new token, 16 B each in fp16, x 4 cached tokens
    assert int(g.kv_cache_bytes.sum()) == 2 * 16 * 4 == 128
    # read per token: one embedding row (8 x 2 B) + Wq, Wk, Wv, Wo (4 x 64 x 2 B) + the KV cache
    assert int(g.weight_read_bytes.sum()) == 16 + 512 + 128 == 656
    # stored: the whole 16 x 8 table (256 B) + 512 + 128
    assert int(g.weight_bytes.sum()) == 256 + 512 + 128
    by = {op.name: op for op in g.ops}
    assert by["/layers.0/qk/MatMul"].gemms == ((1, 1, 8, 5),)   # 1 query against 4 cached + 1 new key
    assert by["/layers.0/av/MatMul"].gemms == ((1, 1, 5, 8),)
    assert by["/layers.0/qk/MatMul"].kv_cache_bytes == 64 and by["/layers.0/qk/MatMul"].matrix_flops == 2 * 8 * 5


def test_prefill_tokens_are_the_sequence(decoder):
    g = load_onnx(decoder, input_shapes={"ids": (2, 6)}, phase="prefill")
    assert g.metadata["tokens_per_inference"] == 12 and int(g.kv_cache_bytes.sum()) == 0


@pytest.mark.parametrize("argv,needle", [
    (["--phase", "decoding"], "unknown phase 'decoding'"),
    (["--phase", "prefill", "--context", "8"], "--context is for --phase decode"),
    (["--phase", "decode", "--context", "-1"], "--context must be >= 0"),
])
def test_bad_phase_arguments_exit_2(decoder, argv, needle, capsys):
    assert main(["inspect", decoder, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "Fix:" in err and "\n" not in err


def test_context_on_encoder_only_model_exit_2(capsys):
    import os
    path = os.path.join(os.path.dirname(__file__), "data", "tiny_attention.onnx")
    assert main(["inspect", path, "--phase", "decode", "--context", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "looks encoder-only" in err and "drop --phase and --context" in err and "\n" not in err


def test_decode_run_reports_tokens_and_simulate_reloads_the_same_units(decoder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([decoder, "--chiplets", "2", "--method", "greedy", "--no-certificate", "--granularity", "layer",
                 "--phase", "decode", "--context", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokens/s (decode, 1 per inference)" in printed and "KV cache read" in printed
    doc = json.loads((out / "partition.json").read_text())
    assert (doc["granularity"], doc["phase"], doc["context"]) == ("layer", "decode", 4)
    assert doc["metrics"]["kv_cache_read_bytes"] == 2 * 2 * 16 * 4 * 2 // 2   # 2 layers x 128 B (fp16)
    assert doc["metrics"]["tokens_per_s"] == pytest.approx(doc["metrics"]["throughput_per_s"])
    assert "## Tokens (decode" in (out / "report.md").read_text()
    assert main(["simulate", decoder, "--partition", str(out / "partition.json")]) == 0
    assert f"{doc['metrics']['throughput_per_s']:,.1f} inferences/s" in capsys.readouterr().out


def test_kv_cache_counts_the_stored_heads_not_the_repeated_ones():
    # grouped-query attention: k (2 heads x 4 B) -> Unsqueeze -> Expand to 4 heads -> Reshape -> the product
    from partitioner.frontend.one_token import stored_bytes as _stored_bytes
    mk = lambda op, i, o: helper.make_node(op, [i], [o])  # noqa: E731
    producer = {"k1": mk("Unsqueeze", "k", "k1"), "k2": mk("Expand", "k1", "k2"), "k3": mk("Reshape", "k2", "k3"),
                "k": mk("Add", "rope", "k")}
    size = {"k": 8, "k1": 8, "k2": 16, "k3": 16, "rope": 4}
    assert _stored_bytes("k3", producer, lambda t: t, size.get) == 8   # stops at the Add: RoPE output is stored
