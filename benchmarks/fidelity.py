"""The simulator held against external references; prints the tables of docs/fidelity.md.

    python -m benchmarks.fidelity [--resnet50 examples/resnet50.onnx] [--bert examples/bert-base.onnx]

1. Per-GEMM cycles on one 64x64 MAC array vs SCALE-Sim 3.0 (output-stationary 64x64) for BERT-base shapes.
   Our figures come from the importer and cost.py (compute_cycles and the roofline op_cycles), never from a
   formula copied here, so the table shows whatever cost model is in the tree.
2. The simba-36 preset running ResNet-50 (224x224, batch 1, int8) vs Simba's published result (MICRO 2019).
3. FLOPs (MACs) of BERT-base and ResNet-50 as our importer counts them vs onnx-tool, an independent ONNX
   profiler (pip install onnx-tool; used here only, not a runtime dependency).

Section 4 of the page (LLM decode and MLPerf-style serving against silicon, and beside GenZ) is
benchmarks/fidelity_llm.py.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from partitioner.model.cost import compute_cycles, op_cycles
from partitioner.hw.hardware import Chiplet
from partitioner.hw.presets import PRESETS
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import check
from partitioner.sim.simulator import simulate
from partitioner.plan.splits import dp_partition
from solver.residency import choose_streamed

ROOT = Path(__file__).resolve().parent.parent

# SCALE-Sim 3.0, output stationary, 64x64 array, compute cycles (M x K x N: activations M x K times weights K x N).
SCALESIM = [
    ("BERT QKV/out projection", 128, 768, 768, 21_455),
    ("BERT FFN up", 128, 768, 3072, 85_823),
    ("BERT FFN down", 128, 3072, 768, 76_751),
    ("decode GEMV (1.5% util.)", 1, 4096, 4096, 270_207),
]
# Simba (Shao et al., MICRO 2019): ResNet-50 at batch 1 on the 36-chiplet package.
SIMBA_IMAGES_PER_S = (2000, 2600)
SIMBA_LATENCY_MS = 0.5


def _gemm_model(m: int, k: int, n: int, directory: str) -> str:
    """A one-MatMul ONNX file; the K x N weight is graph-only (its data file absent): only its shape is read."""
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[k, n], data_location=TensorProto.EXTERNAL)
    w.external_data.add(key="location", value="absent.data")
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "W"], ["Y"], name="gemm")], "gemm",
                              [helper.make_tensor_value_info("A", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [m, n])], [w])
    path = os.path.join(directory, f"gemm_{m}x{k}x{n}.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def gemm_table() -> list[str]:
    chip = Chiplet()  # the default chiplet: a 64x64 MAC array
    assert chip.macs_per_cycle == 64 * 64
    rows = ["| GEMM | M x K x N | SCALE-Sim cycles | ours: compute | ratio | ours: roofline (fp16) | ratio |",
            "|---|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, m, k, n, ref in SCALESIM:
            graph = load_onnx(_gemm_model(m, k, n, tmp), precision="fp16")
            comp, roof = int(compute_cycles(graph, chip).sum()), int(op_cycles(graph, chip).sum())
            rows.append(f"| {label} | {m} x {k} x {n} | {ref:,} | {comp:,} | {comp / ref:.3f} | {roof:,} | "
                        f"{roof / ref:.3f} |")
    return rows


def simba_table(resnet50: str) -> list[str]:
    hw = PRESETS["simba-36"]
    graph = load_onnx(resnet50, input_shapes=None, precision="int8")
    sram = max(c.sram_bytes for c in hw.chiplets)
    over = [i for i in range(graph.n_ops) if graph.work_bytes[i] > sram]
    if over:   # the model holds an op's whole inputs and outputs in one chiplet's SRAM (no activation tiling)
        big = max(over, key=lambda i: graph.work_bytes[i])
        return [f"not placeable: {len(over)} of {graph.n_ops} ops need more activation bytes (inputs + outputs) than "
                f"a chiplet's {sram:,} B of SRAM; the largest, {graph.ops[big].name}, needs "
                f"{int(graph.work_bytes[big]):,} B"]
    a = dp_partition(graph, hw)
    streamed = choose_streamed(graph, hw, a)   # Simba streams weights from DRAM: what overflows SRAM streams
    problems = check(graph, hw, a, streamed=streamed)
    rep = simulate(graph, hw, a, streamed=streamed)
    used = len(set(a.tolist()))
    n_streamed = 0 if streamed is None else int(streamed.sum())
    peak_macs_per_s = sum(c.macs_per_cycle for c in hw.chiplets) * hw.clock_hz
    util = rep.throughput_per_s * float(graph.matrix_flops.sum()) / 2 / peak_macs_per_s
    lo, hi = SIMBA_IMAGES_PER_S
    return [
        "| | Simba (MICRO'19) | simba-36 preset, DP pipeline split |",
        "|---|---:|---:|",
        f"| ResNet-50 MACs | 4.1 G | {graph.matrix_flops.sum() / 2e9:.2f} G |",
        f"| images/s at batch 1, streamed (pipeline full) | {lo:,}-{hi:,} | {rep.throughput_per_s:,.0f} |",
        f"| images/s, one image at a time (1 / latency) | {1 / (SIMBA_LATENCY_MS * 1e-3):,.0f} | "
        f"{1 / rep.latency_s:,.0f} |",
        f"| latency | about {SIMBA_LATENCY_MS} ms | {rep.latency_s * 1e3:.3f} ms |",
        f"| MAC utilisation at that rate (4.1 GMAC per image) | | {util:.1%} |",
        f"| chiplets busy | 36 (each layer spread over the package) | {used} of 36 (pipeline stages) |",
        f"| energy per image | | {rep.energy_j * 1e3:.3f} mJ |",
        f"| ops whose weights stream from DRAM | all weights (weight-stationary per layer) | {n_streamed} of "
        f"{graph.n_ops} |",
        f"| partition valid | | {'yes' if not problems else problems[0]} |",
        f"| bottleneck | | {rep.bottleneck} |",
    ]


_MATRIX_TYPES = ("Conv", "MatMul", "Gemm")


def _onnx_tool_macs(path: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, float]:
    """onnx-tool's MAC count per op type; graph-only weights are filled with zeros first (it reads them all)."""
    import onnx_tool
    from onnx import numpy_helper

    model = onnx.load(path, load_external_data=False)
    for i, t in enumerate(model.graph.initializer):
        if t.data_location == TensorProto.EXTERNAL:
            dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.zeros(tuple(t.dims), dtype), t.name))
    g = onnx_tool.Model(model).graph
    feeds = {}
    for vi in model.graph.input:
        if vi.name in shapes:
            feeds[vi.name] = np.zeros(shapes[vi.name], helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type))
    g.shape_infer(feeds)
    g.profile()
    by_type: dict[str, float] = {}
    for node in g.nodemap.values():
        by_type[node.op_type] = by_type.get(node.op_type, 0.0) + float(node.macs[0])
    return by_type


def flops_table(models: dict[str, str]) -> list[str]:
    rows = ["| model | inputs | ours: matrix MACs | onnx-tool: Conv/MatMul/Gemm MACs | ratio | ours: all FLOPs / 2 | "
            "onnx-tool: all MACs | ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for label, path in models.items():
        graph = load_onnx(path)
        shapes = graph.metadata["input_shapes"]
        theirs = _onnx_tool_macs(path, shapes)
        t_mm, t_all = sum(theirs.get(t, 0.0) for t in _MATRIX_TYPES), sum(theirs.values())
        mm, every = float(graph.matrix_flops.sum()) / 2, graph.total_flops / 2
        inputs = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in shapes.items())
        rows.append(f"| {label} | {inputs} | {mm / 1e9:.4f} G | {t_mm / 1e9:.4f} G | {mm / t_mm:.4f} | "
                    f"{every / 1e9:.4f} G | {t_all / 1e9:.4f} G | {every / t_all:.4f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resnet50", default="examples/resnet50.onnx", help="ResNet-50 ONNX at 224x224")
    ap.add_argument("--bert", default=str(ROOT / "examples" / "bert-base.onnx"), help="BERT-base ONNX")
    args = ap.parse_args()
    print("## GEMM cycles vs SCALE-Sim 3.0 (64x64, output stationary)\n")
    print("\n".join(gemm_table()))
    print("\n## simba-36 vs Simba, ResNet-50 224x224, batch 1, int8\n")
    print("\n".join(simba_table(args.resnet50)))
    print("\n## MACs vs onnx-tool\n")
    print("\n".join(flops_table({"BERT-base": args.bert, "ResNet-50": args.resnet50})))


if __name__ == "__main__":
    main()
