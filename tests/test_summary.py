"""summarize / format_summary on a loaded fixture and on a hand-built graph."""
from __future__ import annotations

import os

from partitioner.core.graph import Op, TensorGraph
from partitioner.frontend.load import load_onnx
from partitioner.app.summary import format_summary, summarize

DATA = os.path.join(os.path.dirname(__file__), "data")


def test_summary_of_hand_built_graph():
    ops = [Op("a", "MatMul", ("a", "a_bias"), 100, 90, 40, 8, 8), Op("b", "Softmax", ("b",), 20, 0, 0, 8, 8),
           Op("c", "MatMul", ("c",), 80, 80, 24, 8, 8)]
    g = TensorGraph.build("toy", ops, [(0, 1, 8), (1, 2, 8)], metadata={"ops_before_coarsening": 4,
                                                                        "onnx_nodes_total": 9})
    s = summarize(g)
    assert s["ops"] == 3 and s["ops_before_coarsening"] == 4
    assert s["onnx_nodes"] == 4 and s["onnx_nodes_total"] == 9
    assert s["flops"] == 200 and s["matrix_flops"] == 170 and s["param_bytes"] == 64
    assert s["top_op_types"][0] == {"op_type": "MatMul", "count": 2, "flops": 180, "share": 0.9}
    assert s["top_op_types"][1]["op_type"] == "Softmax"
    text = format_summary(s)
    assert "toy" in text and "MatMul" in text and "90.0%" in text


def test_summary_of_onnx_fixture():
    s = summarize(load_onnx(os.path.join(DATA, "tiny_mlp.onnx"), precision="fp16"))
    assert s["ops"] == 2 and s["ops_before_coarsening"] == 5 and s["onnx_nodes"] == 5
    assert s["precision"] == "fp16" and s["param_bytes"] == (16 * 32 + 32 + 32 * 8 + 8) * 2
    assert s["input_shapes"] == {"x": [1, 16]}
    assert sum(row["share"] for row in s["top_op_types"]) == 1.0
    assert "fp16" in format_summary(s)
