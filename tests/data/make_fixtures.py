"""Write the tiny ONNX fixtures in tests/data (run from anywhere: python tests/data/make_fixtures.py).

tiny_mlp.onnx                 x[batch,16] -> MatMul -> Add -> Relu -> MatMul -> Add (inline weights)
tiny_cnn.onnx                 x[1,3,8,8] -> Conv(pad 1) -> Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm
tiny_attention.onnx           one self-attention block with a Shape->Gather->Concat->Reshape subgraph,
                              residual Add and LayerNormalization; x[batch,seq,16], 2 heads
tiny_external_absent.onnx     tiny_mlp with every weight an external reference to a file that does not exist
tiny_external_present.onnx    tiny_mlp with its weights in tiny_external_present.onnx.data (present)
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = [helper.make_opsetid("", 17)]


def _w(name: str, *shape: int, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed + sum(shape))
    return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)


def _model(nodes, inputs, outputs, inits, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="make_fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_mlp() -> onnx.ModelProto:
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
             helper.make_node("Add", ["h1", "b1"], ["h2"], name="fc1_bias"),
             helper.make_node("Relu", ["h2"], ["h3"], name="relu"),
             helper.make_node("MatMul", ["h3", "w2"], ["h4"], name="fc2"),
             helper.make_node("Add", ["h4", "b2"], ["y"], name="fc2_bias")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
                  [_w("w1", 16, 32), _w("b1", 32), _w("w2", 32, 8), _w("b2", 8)], "tiny_mlp")


def tiny_cnn() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                  [_w("cw", 4, 3, 3, 3), _w("cb", 4), _w("fw", 10, 4), _w("fb", 10)], "tiny_cnn")


def tiny_attention() -> onnx.ModelProto:
    d, heads = 16, 2
    i64 = lambda name, vals: numpy_helper.from_array(np.array(vals, dtype=np.int64), name)  # noqa: E731
    nodes = [
        # shape subgraph: [batch, seq, heads, d/heads] from Shape(x)
        helper.make_node("Shape", ["x"], ["x_shape"], name="shape"),
        helper.make_node("Gather", ["x_shape", "idx0"], ["b"], name="get_batch", axis=0),
        helper.make_node("Gather", ["x_shape", "idx1"], ["s"], name="get_seq", axis=0),
        helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"], name="unsq_b"),
        helper.make_node("Unsqueeze", ["s", "ax0"], ["s1"], name="unsq_s"),
        helper.make_node("Concat", ["b1", "s1", "head_dims"], ["split_shape"], name="concat_shape", axis=0),
        helper.make_node("Concat", ["b1", "s1", "model_dim"], ["merge_shape"], name="concat_merge", axis=0),
    ]
    for p in "qkv":
        nodes += [helper.make_node("MatMul", ["x", f"w{p}"], [f"{p}0"], name=f"{p}_proj"),
                  helper.make_node("Reshape", [f"{p}0", "split_shape"], [f"{p}1"], name=f"{p}_reshape"),
                  helper.make_node("Transpose", [f"{p}1"], [f"{p}"], name=f"{p}_transpose",
                                   perm=[0, 2, 3, 1] if p == "k" else [0, 2, 1, 3])]
    nodes += [
        helper.make_node("MatMul", ["q", "k"], ["scores0"], name="qk"),
        helper.make_node("Div", ["scores0", "scale"], ["scores"], name="scale_div"),
        helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "v"], ["ctx0"], name="av"),
        helper.make_node("Transpose", ["ctx0"], ["ctx1"], name="ctx_transpose", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx1", "merge_shape"], ["ctx"], name="ctx_reshape"),
        helper.make_node("MatMul", ["ctx", "wo"], ["o"], name="o_proj"),
        helper.make_node("Add", ["o", "x"], ["res"], name="residual"),
        helper.make_node("LayerNormalization", ["res", "ln_g", "ln_b"], ["y"], name="ln", axis=-1),
    ]
    inits = [i64("idx0", 0), i64("idx1", 1), i64("ax0", [0]), i64("head_dims", [heads, d // heads]),
             i64("model_dim", [d]), numpy_helper.from_array(np.array(2.0, dtype=np.float32), "scale"),
             _w("wq", d, d, seed=1), _w("wk", d, d, seed=2), _w("wv", d, d, seed=3), _w("wo", d, d, seed=4),
             _w("ln_g", d), _w("ln_b", d, seed=5)]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", d])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", d])], inits,
                  "tiny_attention")


def save_external(model: onnx.ModelProto, path: str, keep_data: bool) -> None:
    """Save with every initializer in `<file>.data`; delete that file unless keep_data."""
    data_name = os.path.basename(path) + ".data"
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=data_name, size_threshold=0)
    onnx.save_model(model, path)
    if not keep_data:
        os.remove(os.path.join(os.path.dirname(path), data_name))


def main() -> None:
    onnx.save_model(tiny_mlp(), os.path.join(HERE, "tiny_mlp.onnx"))
    onnx.save_model(tiny_cnn(), os.path.join(HERE, "tiny_cnn.onnx"))
    onnx.save_model(tiny_attention(), os.path.join(HERE, "tiny_attention.onnx"))
    save_external(tiny_mlp(), os.path.join(HERE, "tiny_external_absent.onnx"), keep_data=False)
    save_external(tiny_mlp(), os.path.join(HERE, "tiny_external_present.onnx"), keep_data=True)


if __name__ == "__main__":
    main()
