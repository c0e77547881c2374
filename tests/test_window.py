"""What a piece of a split op holds of its inputs (docs/simulator.md S11, partitioner/core/window.py): a spatial Conv
piece its rows plus the kernel's halo, an element-wise piece 1/k; the importer records the rows geometry, the
memory check and the executable split use the same rule, and a Conv whose out_channel piece would not fit SRAM
takes the spatial one."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.core.graph import Op, TensorGraph
from partitioner.core.window import Window, bounds, sliced_in_bytes
from partitioner.export.split_pieces import spatial_plan
from partitioner.frontend.load import load_onnx
from partitioner.hw.presets import SIMBA
from partitioner.model.cost import keep_column
from partitioner.model.partition import check, memory_use
from partitioner.model.sharding import expand, layout, piece

STEM = Window(in_rows=224, out_rows=112, extent=7, stride=2, pad=3)
"""ResNet-50's stem Conv: 7 x 7, stride 2, pad 3, 224 -> 112 rows."""


def _stem(k_in=150_528, k_out=802_816) -> Op:
    mf = 2 * 112 * 112 * 147 * 64
    return Op("stem", "Conv", ("stem",), mf, mf, 9_408, k_in, k_out, gemms=((1, 112 * 112, 147, 64),), window=STEM)


def test_a_stride_2_piece_reads_its_rows_plus_the_kernel_halo():
    """Output rows [h0, h1) read input rows [2 h0 - 3, 2 (h1 - 1) - 3 + 7): rows 10..13 read 17..30 (13 rows,
    4 x 2 + 7 - 2); the first piece's top padding and the last piece's bottom padding are not held."""
    assert STEM.reads(10, 14) == (17, 30)
    assert STEM.held(10, 14) == 13
    assert STEM.reads(0, 3) == (-3, 8) and STEM.held(0, 3) == 8
    assert STEM.reads(109, 112) == (215, 226) and STEM.held(109, 112) == 9
    assert STEM.held(5, 5) == 0


def test_the_largest_of_36_stem_pieces_holds_13_of_224_rows():
    """bounds(112, 36): pieces of 3 or 4 rows; a 4-row piece in the middle holds (4 - 1) x 2 + 7 = 13 input rows,
    ceil(150,528 x 13 / 224) = 8,736 B at int8; with 1/36 of the 802,816 B output (22,301 B) its working set is
    31,037 B, where holding its whole input and output took 953,344 B."""
    assert {h1 - h0 for h0, h1 in bounds(112, 36)} == {3, 4}
    assert STEM.piece_rows(36) == 13
    p = piece(_stem(), 36, "spatial")
    assert (p.in_bytes, p.out_bytes, p.work_bytes) == (8_736, 22_301, 31_037)
    assert p.weight_bytes == 9_408                       # every spatial piece holds all the filters
    assert piece(_stem(), 36, "out_channel").in_bytes == 150_528


def test_a_stride_1_3x3_piece_holds_its_rows_plus_kernel_minus_1():
    """56 rows, 3 x 3, stride 1, pad 1, cut 4 ways: 14 rows each; a middle piece holds 14 + 2 = 16 rows, the
    first 15 (its top halo is padding): 16/56 of 200,704 B = 57,344 B."""
    w = Window(56, 56, 3, 1, 1)
    assert [w.held(h0, h1) for h0, h1 in bounds(56, 4)] == [15, 16, 16, 15]
    assert w.piece_in_bytes(200_704, 4) == 57_344


def test_an_elementwise_piece_holds_1_over_k_and_other_row_pieces_all():
    """ResNet-50's residual Add (two 56 x 56 x 256 int8 inputs, 1,605,632 B) split 36 ways holds
    ceil(1,605,632 / 36) = 44,601 B of them; a Softmax row piece still holds its whole input."""
    add = Op("add", "Add", ("add",), 802_816, 0, 0, 1_605_632, 802_816)
    p = piece(add, 36)
    assert (p.in_bytes, p.out_bytes) == (44_601, 22_301)
    soft = Op("sm", "Softmax", ("sm",), 5_000, 0, 0, 1_000, 1_000)
    assert piece(soft, 4).in_bytes == 1_000
    assert sliced_in_bytes("Softmax", None, 1_000, 4) is None
    assert sliced_in_bytes("Add", None, 1_000, 1) == 1_000


def _conv_net(path):
    """x (1 x 8 x 20 x 20) -> Conv 3 x 3 stride 2 pad 1 (16 filters) -> MaxPool 3 x 3 stride 2 pad 1 -> Add -> y."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], name="conv", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], name="pool", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["p", "p"], ["y"], name="add")]
    inits = [numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "W")]
    model = helper.make_model(helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 20, 20])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits),
        opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_the_importer_records_each_window_and_the_split_reads_the_same_rows(tmp_path):
    """The Conv: 20 -> 10 rows, extent 3, stride 2, pad 1; the MaxPool 10 -> 5 rows. spatial_plan
    (partition split) cuts each piece's input rows exactly where Window.reads says."""
    g = load_onnx(_conv_net(tmp_path / "net.onnx"))
    by_type = {op.op_type: op for op in g.ops}
    assert by_type["Conv"].window == Window(20, 10, 3, 2, 1)
    assert by_type["MaxPool"].window == Window(10, 5, 3, 2, 1)
    assert [op.op_type for op in g.ops] == ["Conv", "MaxPool"]     # the Add fuses into the pool's op
    model = onnx.shape_inference.infer_shapes(onnx.load(tmp_path / "net.onnx"))
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output)}
    shapes["W"] = (16, 8, 3, 3)
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    plan = spatial_plan(conv, shapes.__getitem__, 3)
    w = by_type["Conv"].window
    for (h0, h1), (rows, _) in zip(plan[3], plan[4]):
        lo, hi = w.reads(h0, h1)
        assert rows == (max(lo, 0), min(hi, 20))
        assert rows[1] - rows[0] == w.held(h0, h1)
    # 10 rows cut 3 ways: 3, 3, 4 rows; the 4-row piece [6, 10) reads rows 11..19 (9 rows): 9/20 of the input
    assert w.piece_rows(3) == 9
    assert piece(by_type["Conv"], 3, "spatial").in_bytes == -(-by_type["Conv"].in_bytes * 9 // 20)


def test_a_conv_whose_channel_piece_overflows_sram_takes_rows_and_the_plan_fits():
    """On a Simba chiplet (770,048 B of SRAM) a 1 x 1 Conv reading 56 x 56 x 256 int8 (802,816 B) cannot run as an
    out_channel piece, which holds its whole input, whatever its speed; its spatial piece (2 of the 56 rows:
    28,672 B, plus 1/36 of the output) fits, so rule S9 takes it and the 36-way plan passes check()."""
    mf = 2 * 3136 * 256 * 128
    op = Op("down", "Conv", ("down",), mf, mf, 32_768, 802_816, 401_408, gemms=((1, 3136, 256, 128),),
            window=Window(56, 56, 1, 1, 0))
    chip = SIMBA.chiplets[0]
    assert piece(op, 36, "out_channel").work_bytes > chip.sram_bytes
    assert piece(op, 36, "spatial").work_bytes == 28_672 + 11_151      # 2 of 56 rows (bounds: 1 or 2 each)
    assert not keep_column(SIMBA, "int8")(op, 36, 0)
    g = TensorGraph.build("one", [op], [], metadata={"precision": "int8"})
    a, k = np.zeros(1, np.int64), np.full(1, 36)
    assert check(g, SIMBA, a, shard=k) == []
    assert int(memory_use(g, SIMBA, a, shard=k).max()) == 32_768 + 28_672 + 11_151


@pytest.mark.parametrize("bad", [dict(in_rows=0, out_rows=1, extent=1), dict(in_rows=4, out_rows=4, extent=3, pad=-1)])
def test_a_window_rejects_impossible_geometry(bad):
    with pytest.raises(ValueError):
        Window(**bad)


def test_halo_messages_are_the_rows_each_piece_reads_from_its_neighbour():
    """8 rows of 100 B, a 3 x 3 stride-1 pad-1 window cut 2 ways: piece 0 writes rows 0..3 and reads rows 0..4
    (4 of its own producer piece's rows, 1 from piece 1), piece 1 reads rows 3..7."""
    w = Window(8, 8, 3, 1, 1)
    assert w.halo(800, 2) == ((0, 0, 400), (1, 0, 100), (0, 1, 100), (1, 1, 400))
    assert Window(8, 8, 1, 1, 0).halo(800, 2) == ((0, 0, 400), (1, 1, 400))


def _rows_chain():
    """1 x 1 Conv -> Add -> 3 x 3 Conv on 8 rows of 100 B, every op split 2 ways on chiplets 0..1."""
    mf = 2 * 64 * 16 * 16
    c1 = Op("c1", "Conv", ("c1",), mf, mf, 256, 800, 800, gemms=((1, 64, 16, 16),), window=Window(8, 8, 1, 1, 0))
    add = Op("add", "Add", ("add",), 64, 0, 0, 800, 800)
    c2 = Op("c2", "Conv", ("c2",), mf * 9, mf * 9, 2304, 800, 800, gemms=((1, 64, 144, 16),),
            window=Window(8, 8, 3, 1, 1))
    g = TensorGraph.build("rows", [c1, add, c2], [(0, 1, 800), (1, 2, 800)])
    return g, np.zeros(3, np.int64), np.full(3, 2)


def test_rule_s12_rows_flow_piece_to_piece_and_only_the_halo_crosses_chiplets():
    """Spatial c1's pieces feed the Add's pieces on their own chiplets (400 B each); the 3 x 3 Conv's pieces take
    their own rows locally and one 100 B row from the other chiplet: 200 B cross, where all-gathers sent each
    piece's 400 B slice to the other piece twice (1,600 B)."""
    g, a, k = _rows_chain()
    spatial = lambda *_: False     # noqa: E731 (rule S9 says spatial for every Conv)
    axes, aligned = layout(g, a, k, spatial)
    assert axes == ("spatial", "row", "spatial") and aligned.tolist() == [True, True]
    ex = expand(g, a, k, keep_column=spatial)
    edges = sorted(zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist(), ex.graph.edge_bytes.tolist()))
    assert edges == [(0, 2, 400), (1, 3, 400), (2, 4, 400), (2, 5, 100), (3, 4, 100), (3, 5, 400)]
    chip = ex.assignment
    assert sum(b for u, v, b in edges if chip[u] != chip[v]) == 200
    # without the rule's Conv axis (out_channel) the Add works on channel slices and c2 all-gathers them
    axes, aligned = layout(g, a, k)
    assert axes == ("out_channel", "head", "out_channel") and aligned.tolist() == [True, False]
