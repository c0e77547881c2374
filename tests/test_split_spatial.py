"""Spatial splits of a Conv (sharding axis `spatial`): the axis rule, a piece's cost, and executable pieces that
read their rows plus the kernel's halo and reproduce the model in onnxruntime for strides, padding, dilation,
SAME padding and depthwise Convs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.model.cost import keep_column, sharded_op_cycles
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import mesh_of
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import memory_use
from partitioner.model.sharding import layout, piece, possible_axes, split_axis
from partitioner.export.split_onnx import split_model
from partitioner.export.verify import random_inputs, verify_split
from partitioner.export.split_pieces import spatial_plan


def _conv_model(path, h, c_in, c_out, conv_attrs, *, group=1, relu=True, size=None):
    """x (1 x c_in x h x w) -> Conv (weights 0.1 * N(0, 1), bias) [-> Relu] -> y."""
    rng = np.random.default_rng(1)
    k = conv_attrs.pop("kernel", 3)
    w = size or h
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c" if relu else "y"], name="conv", group=group,
                              **conv_attrs)]
    if relu:
        nodes.append(helper.make_node("Relu", ["c"], ["y"], name="relu"))
    inits = [numpy_helper.from_array((0.1 * rng.standard_normal((c_out, c_in // group, k, k))).astype(np.float32),
                                     "W"),
             numpy_helper.from_array(rng.standard_normal(c_out).astype(np.float32), "B")]
    model = helper.make_model(helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c_in, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_rule_s9_splits_a_conv_by_rows_where_its_channels_would_leave_the_array_idle():
    """Default chiplet: a 64 x 64 output-stationary array. ResNet's 56x56x64 3x3 layer (im2col 3,136 x 576 x 64)
    cut 4 ways: out_channel keeps 49 x 1 tiles of 64 x 16 outputs, spatial 13 x 1 full tiles (784 rows); the 7x7x512
    layer (49 x 4,608 x 512) cut 4 ways: out_channel 1 x 2 tiles, spatial 1 x 8. A Conv without a rule stays
    out_channel; every piece of a spatial split holds all the filters."""
    hw = mesh_of(4)
    early = Op("c1", "Conv", ("c1",), 2 * 3136 * 576 * 64, 2 * 3136 * 576 * 64, 73728, 10, 10,
               gemms=((1, 3136, 576, 64),))
    late = Op("c2", "Conv", ("c2",), 2 * 49 * 4608 * 512, 2 * 49 * 4608 * 512, 9437184, 10, 10,
              gemms=((1, 49, 4608, 512),))
    rule = keep_column(hw)
    assert not rule(early, 4, 0) and rule(late, 4, 0)
    assert split_axis(early) == "out_channel" and possible_axes(early) == ("out_channel", "spatial")
    g = TensorGraph.build("two", [early, late], [(0, 1, 10)])
    a, k = np.zeros(2, np.int64), np.full(2, 4)
    assert layout(g, a, k, rule)[0] == ("spatial", "out_channel")
    assert layout(g, a, k)[0] == ("out_channel", "out_channel")
    # 49 folds x (576 + 126) = 34,398 cycles for out_channel, 13 x 702 = 9,126 for spatial
    assert sharded_op_cycles(g, hw.chiplets[0], 4, ("out_channel", "out_channel"))[0] == 49 * (576 + 126)
    assert sharded_op_cycles(g, hw.chiplets[0], 4, ("spatial", "spatial"))[0] == 13 * (576 + 126)
    p = piece(early, 4, "spatial")
    assert p.weight_bytes == 73728 and p.gemms == ((1, 784, 576, 64),) and p.in_bytes == early.in_bytes
    assert piece(early, 4).weight_bytes == 73728 // 4
    # memory: a spatial piece holds all the filters, so check() counts them on every chiplet of the group
    use = memory_use(g, hw, a, shard=k)
    assert use[1] >= 73728


@pytest.mark.parametrize("name,h,attrs,group,ki", [
    ("3x3 pad 1", 12, {"pads": [1, 1, 1, 1]}, 1, 3),
    ("7x7 stride 2 pad 3", 16, {"kernel": 7, "strides": [2, 2], "pads": [3, 3, 3, 3]}, 1, 4),
    ("3x3 dilation 2 pad 2", 11, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}, 1, 2),
    ("3x3 SAME_UPPER stride 2", 9, {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, 1, 3),
    ("3x3 SAME_LOWER", 8, {"auto_pad": "SAME_LOWER"}, 1, 4),
    ("3x3 VALID", 10, {"auto_pad": "VALID"}, 1, 2),
    ("depthwise 3x3 pad 1", 12, {"pads": [1, 1, 1, 1]}, 8, 3),
    ("uneven pads 5x5", 13, {"kernel": 5, "pads": [0, 1, 3, 2]}, 1, 3),
])
def test_spatial_pieces_reproduce_the_conv(tmp_path, name, h, attrs, group, ki):
    path = _conv_model(tmp_path / "c.onnx", h, 8, 8, dict(attrs), group=group)
    graph, model = load_onnx(path), onnx.load(path)
    split = split_model(graph, np.zeros(graph.n_ops, np.int64), model, shard=np.full(graph.n_ops, ki),
                        axes=("spatial",) * graph.n_ops)
    assert split.sharded[0]["pieced"] == ["conv", "relu"] and split.sharded[0]["whole"] == []
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))
    assert v.max_abs_diff <= 1e-5, name


def test_halo_rows_and_edge_padding_by_hand():
    """A 3x3 Conv, stride 1, pads 1, 9 output rows over 3 pieces: rows 0-2 read input rows 0..3 (top pad kept),
    rows 3-5 read 2..6 (no padding), rows 6-8 read 5..8 (bottom pad kept); left/right pads stay."""
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])
    shapes = {"x": (1, 4, 9, 9), "W": (4, 4, 3, 3), "y": (1, 4, 9, 9)}
    mode, axis, _, ranges, per_piece = spatial_plan(node, shapes.__getitem__, 3)
    assert (mode, axis, ranges) == ("spatial", 2, ((0, 3), (3, 6), (6, 9)))
    assert per_piece == (((0, 4), [1, 1, 0, 1]), ((2, 7), [0, 1, 0, 1]), ((5, 9), [0, 1, 1, 1]))
    # a stride-2 7x7 stem: output rows 0-3 of 8 read input rows 0..8 with 3 rows of top padding
    stem = helper.make_node("Conv", ["x", "W"], ["y"], strides=[2, 2], pads=[3, 3, 3, 3], kernel_shape=[7, 7])
    shapes = {"x": (1, 3, 16, 16), "W": (8, 3, 7, 7), "y": (1, 8, 8, 8)}
    assert spatial_plan(stem, shapes.__getitem__, 2)[4] == (((0, 10), [3, 3, 0, 3]), ((5, 16), [0, 3, 2, 3]))
    # more pieces than output rows: refused with the reason
    assert spatial_plan(stem, shapes.__getitem__, 9) == (None, "its output axis 2 has 8 < 9 rows")


def test_a_conv_with_more_channels_than_pixels_still_cuts_its_filters(tmp_path):
    """4x4 output pixels, 32 channels cut 4 ways: out_channel (S9 keeps it: one output tile either way), each of 4
    pieces holds 8 filters (W sliced on axis 0)."""
    path = _conv_model(tmp_path / "c.onnx", 4, 8, 32, {"pads": [1, 1, 1, 1]})
    graph, model = load_onnx(path), onnx.load(path)
    assert keep_column(mesh_of(4))(graph.ops[0], 4, 0)
    split = split_model(graph, np.zeros(graph.n_ops, np.int64), model, shard=np.full(graph.n_ops, 4))
    held = {t.name: list(t.dims) for s in split.stages for t in s.model.graph.initializer if t.name.startswith("W")}
    assert held == {f"W.ax0.{8 * j}_{8 * j + 8}": [8, 8, 3, 3] for j in range(4)}
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))
    assert v.max_abs_diff <= 1e-5


def test_a_row_split_conv_feeding_one_split_more_ways(tmp_path):
    """conv1 cut 2 ways by rows on chiplets 0..1 feeds conv2 cut 3 ways on 2..4: conv2's pieces read Slices of the
    joined tensor (piece 2 has no counterpart among conv1's two; this raised IndexError in ResNet-18 x64's split)."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array((0.1 * rng.standard_normal((8, 8, 3, 3))).astype(np.float32), n)
             for n in ("W1", "W2")]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["h", "W2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    model = helper.make_model(helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "two.onnx")
    graph = load_onnx(tmp_path / "two.onnx")
    split = split_model(graph, np.array([0, 2]), model, shard=np.array([2, 3]), n_chiplets=5,
                        axes=("spatial", "spatial"))
    assert [op["axis"] for op in split.sharded] == ["spatial", "spatial"]
    v = verify_split(model, split, random_inputs(model, graph.metadata["input_shapes"]))
    assert v.max_abs_diff <= 1e-5 and v.stages_run == 5
