"""Per-precision MAC rates, cores, sustained stack bandwidth and the vendor presets: known answers by hand."""
from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

from partitioner.app.cli import main
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, MemoryStack
from partitioner.hw.presets import PRESETS, require_precision
from partitioner.hw.toml import hardware_from_toml, load_hardware
from partitioner.model.cost import bound_cycles_per_inference, gemm_cycles, op_cycles, stream_cycles

H100 = PRESETS["h100"]


def _gemm(m, k, n, precision, elem):
    """One M x K by K x N MatMul with a K x N weight, tensors at `elem` bytes, costed at `precision`."""
    op = Op("mm", "MatMul", ("mm",), 2 * m * k * n, 2 * m * k * n, weight_bytes=k * n * elem, in_bytes=m * k * elem,
            out_bytes=m * n * elem, gemms=((1, m, k, n),))
    return TensorGraph.build("g", [op], [], metadata={"precision": precision})


# --- rates per precision -------------------------------------------------------------------------------------------
def test_h100_gemm_cycles_bf16_vs_fp8_by_hand():
    # h100: 132 SMs (cores), each a 32 x 64 array (2,048 bf16 MACs), output-stationary. 128 x 768 x 768 (BERT QKV):
    # folds ceil(128/32) x ceil(768/64) = 4 x 12 = 48 <= 132 cores: one round of K + 32 + 64 - 2.
    # bf16: K = 768 -> 862 cycles. fp8 runs 540,672 MACs/cycle, twice the array: each PE does 2 MACs of K a cycle,
    # K counts as ceil(768 x 270,336 / 540,672) = 384 -> 478 cycles. SRAM traffic is smaller: bf16 (768 x 768 +
    # 2 x 128 x 768) x 2 B = 1,572,864 B / 16,896 B/cycle = 94 cycles.
    chip = H100.chiplets[0]
    assert (chip.cores, chip.array_shape, chip.macs_for("bf16"), chip.macs_for("fp8")) == (132, (32, 64), 270_336,
                                                                                           540_672)
    assert int(op_cycles(_gemm(128, 768, 768, "bf16", 2), chip)[0]) == 862
    assert int(op_cycles(_gemm(128, 768, 768, "fp8", 1), chip)[0]) == 478
    # 4096^3: 128 x 64 = 8,192 folds over 132 cores = 63 rounds; bf16 63 x 4,190 = 263,970; fp8 63 x 2,142 = 134,946
    assert int(op_cycles(_gemm(4096, 4096, 4096, "bf16", 2), chip)[0]) == 263_970
    assert int(op_cycles(_gemm(4096, 4096, 4096, "fp8", 1), chip)[0]) == 134_946


def test_cores_deal_out_folds():
    # 8 x 10 x 16 on 4 x 4 arrays: 2 x 4 = 8 folds of 10 + 4 + 4 - 2 = 16 cycles: 1 core 128, 3 cores
    # ceil(8/3) = 3 rounds = 48, 8 or more cores 16
    assert [int(gemm_cycles(1, 8, 10, 16, 4, 4, "os", c)) for c in (1, 3, 8, 100)] == [128, 48, 16, 16]


def test_default_chiplet_rates_are_unchanged_and_it_has_no_fp8():
    chip = Chiplet()
    assert chip.precisions == ("fp32", "fp16", "bf16", "int8") and chip.cores == 1
    assert all(chip.macs_for(p) == 4096 for p in chip.precisions) and chip.macs_for(None) == 4096
    with pytest.raises(UserError, match="cannot run fp8"):
        chip.macs_for("fp8")
    # an unsupported precision never reaches a silent cost
    with pytest.raises(UserError, match="cannot run fp8"):
        op_cycles(_gemm(64, 64, 64, "fp8", 1), chip)


def test_a100_fp32_runs_on_the_cuda_cores():
    # fp32: 108 SMs x 64 FMA = 6,912 MACs/cycle, 1/16 of the 110,592 fp16 array: K counts 16 times
    chip = PRESETS["a100"].chiplets[0]
    assert chip.macs_for("fp32") == 6912 and chip.macs_for("int8") == 221_184
    # 32 x 32 arrays: 128 x 64 x 64 has 4 x 2 = 8 folds, one round of 16 x 64 + 62 = 1,086 cycles
    assert int(op_cycles(_gemm(128, 64, 64, "fp32", 4), chip)[0]) == 16 * 64 + 62


def test_bound_uses_the_precision_rate():
    g16, g8 = _gemm(4096, 4096, 4096, "bf16", 2), _gemm(4096, 4096, 4096, "fp8", 1)
    assert bound_cycles_per_inference(g16, H100) == 263_970 and bound_cycles_per_inference(g8, H100) == 134_946


# --- precision errors ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, fix", [("a100", "pass --precision bf16, or a preset with fp8 such as h100"),
                                       ("default-16", "pass --precision bf16, or a preset with fp8 such as h100")])
def test_fp8_where_the_hardware_has_none_is_one_line(name, fix):
    with pytest.raises(UserError) as exc:
        require_precision(PRESETS[name], "fp8")
    assert f"hardware {name} cannot run fp8" in str(exc.value) and exc.value.fix == fix
    require_precision(H100, "fp8")
    require_precision(PRESETS["mi300x"], "fp8")


@pytest.mark.parametrize("argv, fragment", [
    (["--hardware", "a100", "--precision", "fp8"], "hardware a100 cannot run fp8"),
    (["--chiplets", "16", "--precision", "fp8"], "hardware default-16 cannot run fp8"),
    (["--hardware", "simba-36", "--precision", "bf16"], "hardware simba-36 cannot run bf16"),
])
def test_cli_precision_errors_exit_2(tmp_path, capsys, argv, fragment):
    # raised in run._load right after the hardware loads: before the model is read and any search starts
    model = tmp_path / "mm.onnx"
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 8], [0.0] * 64)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g", [x], [y], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    code = main([str(model), *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and fragment in err and len(err.splitlines()) == 1 and "Traceback" not in err


# --- sustained stack bandwidth -----------------------------------------------------------------------------------
def test_stream_read_runs_at_the_sustained_rate():
    # 1,000 B/cycle peak at 0.75 sustains 750: 75,000 B take latency 10 + ceil(75,000 / 750) = 110 cycles
    st = MemoryStack("m", 1 << 30, 1000, 1.0, 10, (0,), efficiency=0.75)
    hw = Hardware("one", (Chiplet(),), memory_stacks=(st,))
    assert st.sustained_bytes_per_cycle == 750 and stream_cycles(75_000, st, 0, hw) == 110
    assert MemoryStack("m", 1, 819, 1.0, 0, (0,)).sustained_bytes_per_cycle == 819   # default 1.0: unchanged
    with pytest.raises(ValueError, match="efficiency"):
        MemoryStack("m", 1, 819, 1.0, 0, (0,), efficiency=1.5)


# --- presets -------------------------------------------------------------------------------------------------------
def test_vendor_presets_by_hand():
    a, m, s = PRESETS["a100"], PRESETS["mi300x"], PRESETS["simba-36"]
    # peak dense rates x 2 flops x clock: A100 311.9 TFLOPS bf16; H100 989.4 bf16, 1,978.9 fp8; MI300X 1,307.4
    assert 2 * a.chiplets[0].macs_for("bf16") * a.clock_hz / 1e12 == pytest.approx(311.87, abs=0.01)
    assert 2 * H100.chiplets[0].macs_for("bf16") * H100.clock_hz / 1e12 == pytest.approx(989.4, abs=0.1)
    assert 2 * H100.chiplets[0].macs_for("fp8") * H100.clock_hz / 1e12 == pytest.approx(1978.9, abs=0.1)
    assert 2 * 8 * m.chiplets[0].macs_for("bf16") * m.clock_hz / 1e12 == pytest.approx(1307.4, abs=0.1)
    assert 2 * 8 * m.chiplets[0].macs_for("fp8") * m.clock_hz / 1e12 == pytest.approx(2614.9, abs=0.1)
    # HBM: A100 2,039 GB/s / 1.41 GHz = 1,446 B/cycle, sustaining 86.8% = 1,255; MI300X 5.3 TB/s over 4 IODs
    assert [(st.bytes_per_cycle, st.sustained_bytes_per_cycle) for st in a.memory_stacks] == [(1446, 1255)]
    assert [st.attached for st in m.memory_stacks] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert sum(st.capacity_bytes for st in m.memory_stacks) == 192 << 30
    # MI300X: 4 IODs on a ring, two XCDs each; die-to-die 1 KiB/cycle, IOD-to-IOD 2.4 TB/s / 2.1 GHz = 1,143
    assert (m.n_packages, m.chiplets_per_package, m.package_level.topology) == (4, 2, "ring")
    assert [c.bytes_per_cycle for c in m.link_classes] == [1024, 1143]
    # Simba: 16 PEs of 8 x 8 int8 MACs, 752 KiB SRAM, 25 GB/s links, int8 only, weights streamed from DRAM
    chip = s.chiplets[0]
    assert (chip.cores, chip.array_shape, chip.precisions, chip.sram_bytes) == (16, (8, 8), ("int8",), 752 << 10)
    assert (s.link_bytes_per_cycle, s.hop_latency_cycles) == (14, 35) and len(s.memory_stacks) == 1


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_loads(name):
    hw = load_hardware(name)
    assert hw is PRESETS[name] and hw.n_chiplets >= 1
    assert all(c.macs_for(p) > 0 for c in hw.chiplets for p in c.precisions)


# --- TOML ----------------------------------------------------------------------------------------------------------
TOML = """
name = "fp8-pkg"
chiplets = 2
[chiplet]
macs_per_cycle = 8192
cores = 2
macs_by_precision = { fp8 = 16384, bf16 = 8192 }
[[memory_stacks]]
attached = [0]
bytes_per_cycle = 1000
efficiency = 0.9
"""


def test_toml_round_trip_of_per_precision_rates(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text(TOML)
    hw = hardware_from_toml(path)
    chip = hw.chiplets[0]
    # canonical order (fp32, fp16, bf16, fp8, int8), so equal tables give equal chiplets
    assert chip.macs_by_precision == (("bf16", 8192), ("fp8", 16384))
    assert (chip.cores, chip.array_shape, chip.precisions) == (2, (64, 64), ("bf16", "fp8"))
    assert hw.memory_stacks[0].efficiency == 0.9 and hw.memory_stacks[0].sustained_bytes_per_cycle == 900
    assert chip == Chiplet(macs_per_cycle=8192, cores=2, macs_by_precision=(("bf16", 8192), ("fp8", 16384)))
    require_precision(hw, "fp8")
    with pytest.raises(UserError, match="cannot run fp16"):
        require_precision(hw, "fp16")


@pytest.mark.parametrize("line, fragment", [
    ("macs_by_precision = { fp4 = 1 }", "unknown precision 'fp4'"),
    ("macs_by_precision = { fp8 = 0 }", "MACs per cycle must be a positive integer"),
    ("macs_by_precision = { fp8 = 1.5 }", "MACs per cycle must be a positive integer"),
    ("macs_by_precision = 4", "must be a table"),
    ("cores = 3", "must split evenly"),
])
def test_toml_rate_errors_are_one_line(tmp_path, line, fragment):
    path = tmp_path / "hw.toml"
    path.write_text(f"chiplets = 2\n[chiplet]\n{line}\n")
    with pytest.raises(UserError, match=fragment):
        hardware_from_toml(path)


def test_toml_efficiency_out_of_range(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text("chiplets = 1\n[[memory_stacks]]\nattached = [0]\nefficiency = 1.2\n")
    with pytest.raises(UserError, match="efficiency"):
        hardware_from_toml(path)


# --- end to end ----------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, precision", [("a100", "bf16"), ("h100", "bf16"), ("h100", "fp8"),
                                             ("mi300x", "bf16"), ("simba-36", "int8"), ("default-16", "bf16"),
                                             ("sram-only-16", "bf16"), ("two-package-2x16", "bf16")])
def test_bert_base_runs_on_each_preset(name, precision, tmp_path, capsys):
    # simba-36 runs int8 only (bf16 is the one-line error tested above)
    code = main(["examples/bert-base.onnx", "--hardware", name, "--precision", precision, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "inferences/s" in out
