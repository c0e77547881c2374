"""load_onnx: exact costs on hand-built graphs, bytes and precision, coarsening, external data, errors."""
from __future__ import annotations

import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.core.errors import UserError
from partitioner.frontend.load import load_onnx
from partitioner.frontend.read import parse_input_shapes

DATA = os.path.join(os.path.dirname(__file__), "data")
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples")
F = TensorProto.FLOAT


def vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def w(name, *shape, dtype=np.float32):
    return numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)


def save(tmp_path, nodes, inputs, outputs, inits=(), name="m", opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save_model(model, str(path))
    return str(path)


def single(tmp_path, node, inputs, out_shape, inits=(), **kw):
    """A one-node model; returns its only op."""
    g = load_onnx(save(tmp_path, [node], inputs, [vi(node.output[0], out_shape)], inits), **kw)
    assert g.n_ops == 1
    return g.ops[0]


# --- matrix ops -------------------------------------------------------------------------------------------------
def test_matmul_2d(tmp_path):
    op = single(tmp_path, helper.make_node("MatMul", ["a", "b"], ["y"]), [vi("a", [3, 5]), vi("b", [5, 7])], None)
    assert op.flops == op.matrix_flops == 2 * 3 * 5 * 7


def test_matmul_batched_broadcast(tmp_path):
    # (2, 1, 4, 6) x (3, 6, 5) -> (2, 3, 4, 5): 2*3 batches of 4x6x5 MACs
    op = single(tmp_path, helper.make_node("MatMul", ["a", "b"], ["y"]),
                [vi("a", [2, 1, 4, 6]), vi("b", [3, 6, 5])], None)
    assert op.matrix_flops == 2 * (2 * 3) * 4 * 6 * 5


def test_matmul_with_weight_counts_weight_bytes(tmp_path):
    op = single(tmp_path, helper.make_node("MatMul", ["x", "w"], ["y"]), [vi("x", [4, 8])], None, [w("w", 8, 16)])
    assert op.flops == 2 * 4 * 8 * 16
    assert op.weight_bytes == 8 * 16 * 4
    assert op.in_bytes == 4 * 8 * 4 and op.out_bytes == 4 * 16 * 4


def test_embedding_gather_reads_only_the_looked_up_rows(tmp_path):
    ids = vi("ids", [1, 6], TensorProto.INT64)
    op = single(tmp_path, helper.make_node("Gather", ["table", "ids"], ["y"]), [ids], None, [w("table", 1000, 8)])
    assert op.weight_bytes == 1000 * 8 * 4                  # the whole table lives in SRAM
    assert op.weights_read == 6 * 8 * 4                     # one inference reads 6 rows
    assert op.out_bytes == 6 * 8 * 4 and op.in_bytes == 6 * 8


def test_only_gather_data_inputs_are_read_partially(tmp_path):
    # the gathered table is read 6 rows per inference; the MatMul and its fused Add read their weights whole
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("MatMul", ["e", "tableT"], ["y"]),
             helper.make_node("Add", ["y", "table_sum"], ["z"])]
    g = load_onnx(save(tmp_path, nodes, [vi("ids", [1, 6], TensorProto.INT64)], [vi("z", [1, 6, 1000])],
                       [w("table", 1000, 8), w("tableT", 8, 1000), w("table_sum", 1000)]))
    assert [op.weights_read for op in g.ops] == [6 * 8 * 4, 8 * 1000 * 4 + 1000 * 4]


def test_gemm_transb_and_bias(tmp_path):
    node = helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1)
    op = single(tmp_path, node, [vi("x", [4, 8])], None, [w("w", 16, 8), w("c", 16)])
    assert op.matrix_flops == 2 * 4 * 8 * 16
    assert op.flops == 2 * 4 * 8 * 16 + 4 * 16  # bias add on the vector unit
    assert op.weight_bytes == (16 * 8 + 16) * 4


def test_gemm_transa_no_bias(tmp_path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)
    op = single(tmp_path, node, [vi("x", [8, 4])], None, [w("w", 8, 16)])
    assert op.flops == op.matrix_flops == 2 * 4 * 8 * 16


def test_conv_groups_strides_dilations_pads(tmp_path):
    # N=2, Cin=8, 17x17, Cout=12, groups=4 (Cin/g=2), kernel 3x3, stride 2, dilation 2, pads 1
    # Hout = floor((17 + 2 - 2*(3-1) - 1) / 2) + 1 = 8
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=4, strides=[2, 2], dilations=[2, 2],
                            pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    op = single(tmp_path, node, [vi("x", [2, 8, 17, 17])], None, [w("w", 12, 2, 3, 3), w("b", 12)])
    spatial = 8 * 8
    assert op.matrix_flops == 2 * 2 * 12 * spatial * 2 * 9
    assert op.flops == op.matrix_flops + 2 * 12 * spatial
    assert op.out_bytes == 2 * 12 * spatial * 4


def test_conv3d_depthwise_no_bias(tmp_path):
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=4, kernel_shape=[1, 3, 3])
    op = single(tmp_path, node, [vi("x", [1, 4, 2, 5, 5])], None, [w("w", 4, 1, 1, 3, 3)])
    assert op.flops == op.matrix_flops == 2 * 4 * (2 * 3 * 3) * 1 * 9


def test_conv_transpose(tmp_path):
    # in (1, 4, 5, 5), weight (Cin=4, Cout/g=3, 3, 3), stride 2 -> out (1, 3, 11, 11)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2])
    op = single(tmp_path, node, [vi("x", [1, 4, 5, 5])], None, [w("w", 4, 3, 3, 3), w("b", 3)])
    assert op.matrix_flops == 2 * (4 * 25) * 3 * 9
    assert op.flops == op.matrix_flops + 3 * 11 * 11


def test_einsum_contraction(tmp_path):
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="bij,bjk->bik")
    op = single(tmp_path, node, [vi("a", [2, 3, 4]), vi("b", [2, 4, 5])], None)
    assert op.flops == op.matrix_flops == 2 * 2 * 3 * 4 * 5


def test_einsum_ellipsis_and_spaces(tmp_path):
    node = helper.make_node("Einsum", ["a", "b"], ["y"], equation="...ij, jk -> ...ik")
    op = single(tmp_path, node, [vi("a", [2, 3, 4, 6]), vi("b", [6, 5])], None)
    assert op.matrix_flops == 2 * 2 * 3 * 4 * 6 * 5


def test_einsum_single_operand_reduction(tmp_path):
    node = helper.make_node("Einsum", ["a"], ["y"], equation="ij->i")
    op = single(tmp_path, node, [vi("a", [3, 4])], None)
    assert op.flops == 12 and op.matrix_flops == 0


def test_ms_attention(tmp_path):
    b, s, d, heads = 1, 8, 16, 2
    node = helper.make_node("Attention", ["x", "w", "bias"], ["y"], domain="com.microsoft", num_heads=heads)
    path = save(tmp_path, [node], [vi("x", [b, s, d])], [vi("y", [b, s, d])], [w("w", d, 3 * d), w("bias", 3 * d)],
                extra_opsets=[helper.make_opsetid("com.microsoft", 1)])
    op = load_onnx(path).ops[0]
    mm = 2 * b * s * d * 3 * d + 2 * b * s * s * d * 2
    assert op.matrix_flops == mm
    assert op.flops == mm + b * s * 3 * d + 5 * b * heads * s * s


# --- vector ops ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op_type,per_element", [("Add", 1), ("Mul", 1), ("Relu", 1), ("Erf", 1), ("Cast", 0)])
def test_elementwise(tmp_path, op_type, per_element):
    attrs = {"to": TensorProto.FLOAT} if op_type == "Cast" else {}
    ins = ["a", "b"] if op_type in ("Add", "Mul") else ["a"]
    node = helper.make_node(op_type, ins, ["y"], **attrs)
    op = single(tmp_path, node, [vi(n, [2, 3, 4]) for n in ins], None)
    assert op.flops == per_element * 24 and op.matrix_flops == 0


def test_broadcast_elementwise_counts_output_elements(tmp_path):
    op = single(tmp_path, helper.make_node("Add", ["a", "b"], ["y"]), [vi("a", [4, 1]), vi("b", [1, 5])], None)
    assert op.flops == 20


def test_softmax_layernorm_batchnorm(tmp_path):
    op = single(tmp_path, helper.make_node("Softmax", ["x"], ["y"]), [vi("x", [2, 10])], None)
    assert op.flops == 5 * 20
    op = single(tmp_path, helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1),
                [vi("x", [2, 10])], None, [w("g", 10), w("b", 10)])
    assert op.flops == 8 * 20 and op.weight_bytes == 80
    op = single(tmp_path, helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"]),
                [vi("x", [1, 3, 4, 4])], None, [w(n, 3) for n in "sbmv"])
    assert op.flops == 2 * 48


def test_reduction_counts_input_elements(tmp_path):
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)
    op = single(tmp_path, node, [vi("x", [3, 7])], None, )
    assert op.flops == 21


def test_pooling(tmp_path):
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    op = single(tmp_path, node, [vi("x", [1, 2, 8, 8])], None)
    assert op.flops == 2 * 4 * 4 * 9


def test_data_movement_costs_bytes_only(tmp_path):
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0])
    op = single(tmp_path, node, [vi("x", [3, 5])], None)
    assert op.flops == 0 and op.in_bytes == op.out_bytes == 60


def test_unknown_op_warns_once_and_counts_output_elements(tmp_path):
    nodes = [helper.make_node("Frobnicate", ["x"], ["h"], domain="acme"),
             helper.make_node("Frobnicate", ["h"], ["y"], domain="acme")]
    path = save(tmp_path, nodes, [vi("x", [2, 3])], [vi("y", [2, 3])],
                extra_opsets=[helper.make_opsetid("acme", 1)])
    m = onnx.load(path)
    m.graph.value_info.append(vi("h", [2, 3]))
    onnx.save_model(m, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load_onnx(path)
    assert [str(c.message) for c in caught if "Frobnicate" in str(c.message)].__len__() == 1
    assert g.total_flops == 12


# --- bytes and precision ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision,nbytes", [("fp32", 4), ("fp16", 2), ("bf16", 2), ("int8", 1)])
def test_precision_rescales_float_tensors(tmp_path, precision, nbytes):
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["y"])]
    path = save(tmp_path, nodes, [vi("ids", [1, 4], TensorProto.INT64)], [vi("y", [1, 4, 8])], [w("emb", 10, 8)])
    g = load_onnx(path, precision=precision)
    op = g.ops[0]
    assert op.weight_bytes == 80 * nbytes
    assert op.in_bytes == 4 * 8  # int64 indices keep their size
    assert op.out_bytes == 32 * nbytes
    assert g.input_bytes == 32
    assert g.metadata["precision"] == precision


def test_fp16_model_at_fp32_counts_four_bytes(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    path = save(tmp_path, nodes, [vi("x", [10], TensorProto.FLOAT16)], [vi("y", [10], TensorProto.FLOAT16)])
    assert load_onnx(path).ops[0].out_bytes == 40


def test_bad_precision(tmp_path):
    with pytest.raises(UserError, match="precision"):
        load_onnx(os.path.join(DATA, "tiny_mlp.onnx"), precision="fp4")


# --- coarsening -----------------------------------------------------------------------------------------------------
def test_mlp_fuses_bias_and_activation():
    g = load_onnx(os.path.join(DATA, "tiny_mlp.onnx"))
    assert [op.onnx_nodes for op in g.ops] == [("fc1", "fc1_bias", "relu"), ("fc2", "fc2_bias")]
    assert g.metadata["ops_before_coarsening"] == 5 and g.metadata["onnx_nodes_total"] == 5
    b = 1  # default for the symbolic batch dim
    assert g.ops[0].flops == 2 * b * 16 * 32 + 32 + 32
    assert g.ops[0].matrix_flops == 2 * b * 16 * 32
    assert g.total_weight_bytes == (16 * 32 + 32 + 32 * 8 + 8) * 4
    assert g.edge_src.tolist() == [0] and g.edge_dst.tolist() == [1] and g.edge_bytes.tolist() == [32 * 4]


def test_attention_block_folds_shape_subgraph_and_fuses():
    g = load_onnx(os.path.join(DATA, "tiny_attention.onnx"))
    names = [n for op in g.ops for n in op.onnx_nodes]
    for folded in ("shape", "get_batch", "unsq_b", "concat_shape"):
        assert folded not in names
    assert g.metadata["onnx_nodes_total"] == 25 and g.metadata["ops_before_coarsening"] == 18
    owner = g.onnx_node_owner()
    assert owner["q_reshape"] == owner["q_transpose"] == owner["q_proj"]
    assert owner["scale_div"] == owner["qk"]
    assert owner["residual"] != owner["o_proj"]  # two activation inputs from different ops
    assert g.metadata["input_shapes"] == {"x": (1, 128, 16)}
    s, d, h = 128, 16, 2
    expected_matrix = 4 * 2 * s * d * d + 2 * 2 * h * s * s * (d // h)
    assert int(g.matrix_flops.sum()) == expected_matrix
    # topological order, dense ids, edges forward, one per pair
    assert all(0 <= a < b < g.n_ops for a, b in zip(g.edge_src, g.edge_dst))


def test_input_shape_override():
    g = load_onnx(os.path.join(DATA, "tiny_attention.onnx"), input_shapes={"x": (2, 4, 16)})
    assert g.metadata["input_shapes"] == {"x": (2, 4, 16)}
    assert g.op_index("qk") >= 0
    assert g.ops[g.op_index("softmax")].flops == 5 * 2 * 2 * 4 * 4


def test_unnamed_nodes_get_stable_names(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Softmax", ["h"], ["y"])]
    path = save(tmp_path, nodes, [vi("x", [2, 4])], [vi("y", [2, 4])], [w("w", 4, 4)])
    assert [op.name for op in load_onnx(path).ops] == ["MatMul_0", "Softmax_1"]


def test_identity_and_constant_are_folded(tmp_path):
    nodes = [helper.make_node("Constant", [], ["c"], value=w("cv", 4, 4)),
             helper.make_node("Identity", ["c"], ["c2"]),
             helper.make_node("MatMul", ["x", "c2"], ["y"], name="mm")]
    path = save(tmp_path, nodes, [vi("x", [2, 4])], [vi("y", [2, 4])])
    g = load_onnx(path)
    assert g.n_ops == 1 and g.ops[0].onnx_nodes == ("mm",) and g.ops[0].weight_bytes == 64


# --- external data --------------------------------------------------------------------------------------------------
def test_absent_external_data_loads():
    assert not os.path.exists(os.path.join(DATA, "tiny_external_absent.onnx.data"))
    g = load_onnx(os.path.join(DATA, "tiny_external_absent.onnx"))
    ref = load_onnx(os.path.join(DATA, "tiny_mlp.onnx"))
    assert g.ops == ref.ops


def test_present_external_data_is_not_read(monkeypatch):
    import onnx.external_data_helper as edh

    def boom(*args, **kwargs):
        raise AssertionError("external data was loaded")

    monkeypatch.setattr(edh, "load_external_data_for_model", boom)
    monkeypatch.setattr(edh, "load_external_data_for_tensor", boom)
    g = load_onnx(os.path.join(DATA, "tiny_external_present.onnx"))
    assert g.total_weight_bytes == (16 * 32 + 32 + 32 * 8 + 8) * 4


# --- errors ---------------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_onnx(tmp_path / "nope.onnx")


def test_not_onnx(tmp_path):
    p = tmp_path / "notes.onnx"
    p.write_text("this is not a model\n" * 10)
    with pytest.raises(UserError, match="not an ONNX model|could not be read"):
        load_onnx(p)


def test_truncated(tmp_path):
    data = open(os.path.join(DATA, "tiny_attention.onnx"), "rb").read()
    p = tmp_path / "cut.onnx"
    p.write_bytes(data[: len(data) // 2 + 3])
    with pytest.raises(UserError, match="truncated or corrupt"):
        load_onnx(p)


def test_empty_graph(tmp_path):
    with pytest.raises(UserError, match="empty graph"):
        load_onnx(save(tmp_path, [], [vi("x", [1])], [vi("x", [1])]))


def test_only_constants_is_no_compute(tmp_path):
    nodes = [helper.make_node("Constant", [], ["c"], value=w("cv", 2)),
             helper.make_node("Shape", ["x"], ["y"])]
    with pytest.raises(UserError, match="no compute nodes"):
        load_onnx(save(tmp_path, nodes, [vi("x", [1, 2])], [vi("y", [2], TensorProto.INT64)]))


def test_unresolvable_dim(tmp_path):
    # NonZero's output length depends on the data: no input shape can resolve it.
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nz"),
             helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Softmax", ["f"], ["y"], name="sm")]
    path = save(tmp_path, nodes, [vi("x", [4])], [vi("y", None)])
    with pytest.raises(UserError) as info:
        load_onnx(path)
    assert "cannot resolve the shape" in info.value.problem and "no input shape would" in info.value.fix
    assert "--input-shape" not in info.value.fix   # x is static: naming an input shape would mislead


def test_bad_input_shape_name():
    with pytest.raises(UserError, match="not a model input"):
        load_onnx(os.path.join(DATA, "tiny_mlp.onnx"), input_shapes={"input_ids": (1, 128)})


def test_bad_input_shape_rank():
    with pytest.raises(UserError, match="dims"):
        load_onnx(os.path.join(DATA, "tiny_mlp.onnx"), input_shapes={"x": (1, 16, 3)})


def test_input_shape_conflicts_with_static_dim():
    with pytest.raises(UserError, match="fixes it"):
        load_onnx(os.path.join(DATA, "tiny_mlp.onnx"), input_shapes={"x": (1, 15)})


# --- shipped examples (acceptance) ----------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists(os.path.join(EXAMPLES, "bert-base.onnx")), reason="examples not exported")
def test_bert_base_matches_public_figures():
    g = load_onnx(os.path.join(EXAMPLES, "bert-base.onnx"))
    assert abs(int(g.matrix_flops.sum()) / 22.35e9 - 1) < 0.01
    assert abs(g.total_flops / 22.35e9 - 1) < 0.01
    # 109,482,240 parameters x 4 bytes, plus the int64 position/token-type id buffers
    assert abs(g.total_weight_bytes / (109_482_240 * 4) - 1) < 0.002
    assert g.metadata["input_shapes"] == {"input_ids": (1, 128), "attention_mask": (1, 128)}


def test_parse_input_shapes():
    assert parse_input_shapes(["input_ids=1x128", "mask=2X64"]) == {"input_ids": (1, 128), "mask": (2, 64)}
    for bad in ("input_ids", "=1x2", "x=1x0", "x=1xa", "x="):
        with pytest.raises(UserError, match="bad --input-shape"):
            parse_input_shapes([bad])


# --- invariants on every fixture and example -------------------------------------------------------------------------
_MODELS = sorted(os.path.join(DATA, f) for f in os.listdir(DATA) if f.endswith(".onnx")) + \
    sorted(os.path.join(EXAMPLES, f) for f in os.listdir(EXAMPLES) if f.endswith(".onnx")) \
    if os.path.isdir(EXAMPLES) else []


@pytest.mark.parametrize("path", _MODELS, ids=os.path.basename)
def test_coarsening_invariants(path):
    g = load_onnx(path)
    covered = [n for op in g.ops for n in op.onnx_nodes]
    assert len(covered) == len(set(covered)) == g.metadata["ops_before_coarsening"]
    assert g.metadata["ops_before_coarsening"] <= g.metadata["onnx_nodes_total"]
    assert all(a < b for a, b in zip(g.edge_src.tolist(), g.edge_dst.tolist()))
    assert all(b > 0 for b in g.edge_bytes.tolist())
    # every edge's bytes are bytes its source writes and its destination reads
    for s, d, b in zip(g.edge_src.tolist(), g.edge_dst.tolist(), g.edge_bytes.tolist()):
        assert b <= g.ops[s].out_bytes and b <= g.ops[d].in_bytes
    assert g.input_bytes > 0 and g.total_flops > 0


@pytest.mark.skipif(not os.path.exists(os.path.join(EXAMPLES, "resnet18.onnx")), reason="examples not exported")
def test_resnet18_and_gpt_decoder():
    r = load_onnx(os.path.join(EXAMPLES, "resnet18.onnx"))
    assert int(r.matrix_flops.sum()) == 3_628_146_688  # 1.814 GMACs
    assert r.total_weight_bytes == 11_684_712 * 4  # ResNet-18 with BatchNorm folded into conv biases
    g = load_onnx(os.path.join(EXAMPLES, "gpt-decoder.onnx"), precision="fp16")
    biggest = max(op.weight_bytes for op in g.ops)  # token + position embeddings: fits one 64 MiB chiplet
    assert 32000 * 768 * 2 + 128 * 768 * 2 <= biggest < 64 * 2**20


def test_local_functions_are_inlined(tmp_path):
    fn = helper.make_function("local", "Block", ["a", "b"], ["c"],
                              [helper.make_node("MatMul", ["a", "b"], ["t"], name="inner_mm"),
                               helper.make_node("Relu", ["t"], ["c"], name="inner_relu")],
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Block", ["x", "w"], ["y"], domain="local", name="blk")], "f",
                              [vi("x", [2, 4])], [vi("y", [2, 3])], [w("w", 4, 3)])
    model = helper.make_model(graph, functions=[fn],
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    model.ir_version = 8
    onnx.save_model(model, str(tmp_path / "f.onnx"))
    g = load_onnx(tmp_path / "f.onnx")
    assert g.n_ops == 1 and g.total_flops == 2 * 2 * 4 * 3 + 6 and g.total_weight_bytes == 48


def test_override_propagates_to_inputs_sharing_a_symbolic_dim(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    path = save(tmp_path, nodes, [vi("a", ["batch", "seq"]), vi("b", ["batch", "seq"])], [vi("y", None)])
    g = load_onnx(path, input_shapes={"a": (2, 384)})
    assert g.metadata["input_shapes"] == {"a": (2, 384), "b": (2, 384)}
    assert g.ops[0].flops == 2 * 384
