"""The MAC-array model (cost.gemm_cycles): tile quantisation and fill/drain, by hand and against SCALE-Sim 3.0."""
from __future__ import annotations


import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from partitioner.model.cost import compute_cycles, gemm_cycles, op_cycles
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet
from partitioner.hw.toml import hardware_from_toml
from partitioner.core.errors import UserError
from partitioner.frontend.load import load_onnx

F = TensorProto.FLOAT


# SCALE-Sim 3.0, 64x64 output-stationary array, compute cycles without stalls (issue 16).
@pytest.mark.parametrize("m,k,n,scalesim", [
    (128, 768, 768, 21_455), (128, 768, 3072, 85_823), (128, 3072, 768, 76_751), (1, 4096, 4096, 270_207)])
def test_os_matches_scalesim_within_one_cycle(m, k, n, scalesim):
    # folds = ceil(M/64) x ceil(N/64); each takes K + 64 + 64 - 2 cycles; SCALE-Sim counts one cycle fewer
    ours = int(gemm_cycles(1, m, k, n, 64, 64, "os"))
    assert ours == -(-m // 64) * -(-n // 64) * (k + 126)
    assert abs(ours - scalesim) <= 1


def test_gemv_utilisation_is_one_and_a_half_percent():
    cycles = int(gemm_cycles(1, 1, 4096, 4096, 64, 64))
    assert cycles == 64 * 4222 == 270_208
    assert 4096 * 4096 / (cycles * 4096) == pytest.approx(0.01516, abs=1e-5)


def test_tile_quantisation_by_hand():
    # 65 x 10 x 1 on a 4x4 OS array: ceil(65/4)=17 row folds x 1 col fold, each 10 + 4 + 4 - 2 = 16 cycles
    assert int(gemm_cycles(1, 65, 10, 1, 4, 4, "os")) == 17 * 16
    # batch multiplies folds: 3 x (1 x 1 fold x (10 + 6))
    assert int(gemm_cycles(3, 4, 10, 4, 4, 4, "os")) == 3 * 16


def test_weight_and_input_stationary_by_hand():
    # M=8, K=4, N=4 on 4x4. ws: K x N = 1 fold, T = M = 8: 8 + 6 + 4 (preload) = 18
    assert int(gemm_cycles(1, 8, 4, 4, 4, 4, "ws")) == 18
    # is: K x M = 1 x 2 folds, T = N = 4: 2 x (4 + 6 + 4) = 28
    assert int(gemm_cycles(1, 8, 4, 4, 4, 4, "is")) == 28


def test_compute_cycles_tiles_gemms_and_roofs_the_rest():
    chip = Chiplet(macs_per_cycle=16, vector_ops_per_cycle=10, sram_bytes_per_cycle=1000)
    assert chip.array_shape == (4, 4)
    # one 8x4x4 GEMM (256 flops) tiled: 2 folds x (4 + 6) = 20 cycles; 64 more matrix flops untiled: 64/32 = 2;
    # 30 vector flops: 3 cycles
    ops = [Op("a", "MatMul", ("a",), flops=256 + 64 + 30, matrix_flops=256 + 64, gemms=((1, 8, 4, 4),)),
           Op("b", "MatMul", ("b",), flops=256, matrix_flops=256)]   # no shape: plain roofline 256 / 32 = 8
    g = TensorGraph.build("g", ops, [(0, 1, 4)])
    assert compute_cycles(g, chip).tolist() == [20 + 2 + 3, 8]
    assert op_cycles(g, chip).tolist() == [25, 8]


def test_op_rejects_gemms_beyond_its_matrix_flops():
    with pytest.raises(ValueError, match="gemms exceed"):
        Op("a", "MatMul", ("a",), flops=10, matrix_flops=10, gemms=((1, 2, 2, 2),))


def test_chiplet_array_shape_is_checked():
    assert Chiplet().array_shape == (64, 64)
    assert Chiplet(macs_per_cycle=1024, array_rows=16).array_shape == (16, 64)
    with pytest.raises(ValueError, match="multiply to macs_per_cycle"):
        Chiplet(array_rows=60, array_cols=60)
    with pytest.raises(ValueError, match="dataflow"):
        Chiplet(dataflow="rs")


def test_hardware_file_array_keys(tmp_path):
    good = tmp_path / "a.toml"
    good.write_text('chiplets = 2\n[chiplet]\nmacs_per_cycle = 2048\narray_rows = 32\ndataflow = "ws"\n')
    chip = hardware_from_toml(good).chiplets[0]
    assert (chip.array_shape, chip.dataflow) == ((32, 64), "ws")
    bad = tmp_path / "b.toml"
    bad.write_text('chiplets = 2\n[chiplet]\narray_rows = 30\narray_cols = 30\n')
    with pytest.raises(UserError, match="array_rows x array_cols"):
        hardware_from_toml(bad)


def _save(tmp_path, nodes, inputs, outputs, inits):
    model = helper.make_model(helper.make_graph(nodes, "m", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "m.onnx")
    onnx.save_model(model, path)
    return path


def _w(name, *shape):
    return numpy_helper.from_array(np.zeros(shape, np.float32), name)


def test_importer_gemm_shapes(tmp_path):
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),            # (1,128,64) x (64,32)
             helper.make_node("Reshape", ["h", "s"], ["hr"], name="split_heads"),  # (1,4,128,8)
             helper.make_node("Transpose", ["hr"], ["ht"], name="t", perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["hr", "ht"], ["a"], name="scores"),       # (1,4,128,8)x(1,4,8,128)
             helper.make_node("Conv", ["img", "cw"], ["c"], name="dw", group=4, kernel_shape=[3, 3])]
    inits = [_w("w", 64, 32), numpy_helper.from_array(np.array([1, 4, 128, 8], np.int64), "s"), _w("cw", 8, 1, 3, 3)]
    path = _save(tmp_path, nodes, [vi("x", F, [1, 128, 64]), vi("img", F, [2, 4, 10, 10])],
                 [vi("a", F, [1, 4, 128, 128]), vi("c", F, [2, 8, 8, 8])], inits)
    g = load_onnx(path)
    by_name = {op.name: op.gemms for op in g.ops}
    assert by_name["proj"] == ((1, 128, 64, 32),)          # leading dims fold into M for a 2-D weight
    assert by_name["scores"] == ((4, 128, 8, 128),)        # batched: 4 heads
    assert by_name["dw"] == ((4, 2 * 8 * 8, 9, 2),)        # 4 groups; M = 2 images x 8x8 pixels; K = 1 x 3x3
    for op in g.ops:
        assert sum(2 * b * m * k * n for b, m, k, n in op.gemms) == op.matrix_flops
