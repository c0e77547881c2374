"""The simulator held against external references; prints the tables of docs/fidelity.md.

    python -m benchmarks.fidelity [--resnet50 examples/resnet50.onnx] [--bert examples/bert-base.onnx]

1. Per-GEMM cycles on one 64x64 MAC array vs SCALE-Sim 3.0 (output-stationary 64x64) for BERT-base shapes.
   Our figures come from the importer and cost.py (compute_cycles and the roofline op_cycles), never from a
   formula copied here, so the table shows whatever cost model is in the tree.
2. The simba-36 preset running ResNet-50 (224x224, batch 1, int8) vs Simba's published result (MICRO 2019): the
   app's own run under both objectives (about 3 minutes on two loaded cores); `--simba-dram 1 4 100` adds the
   latency plans' sensitivity to the DRAM stand-in's bandwidth (about a minute per factor).
3. FLOPs (MACs) of BERT-base and ResNet-50 as our importer counts them vs onnx-tool, an independent ONNX
   profiler (pip install onnx-tool; used here only, not a runtime dependency).

Section 4 of the page (LLM decode and MLPerf-style serving against silicon, and beside GenZ) is
benchmarks/fidelity_llm.py.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from partitioner.app.candidates import best_latency
from partitioner.app.config import Outcome, RunConfig
from partitioner.app.run import run
from partitioner.model.cost import compute_cycles, op_cycles
from partitioner.hw.hardware import Chiplet
from partitioner.hw.presets import SIMBA
from partitioner.frontend.load import load_onnx
from benchmarks.results_md import update_section

ROOT = Path(__file__).resolve().parent.parent

# SCALE-Sim 3.0, output stationary, 64x64 array, compute cycles (M x K x N: activations M x K times weights K x N).
SCALESIM = [
    ("BERT QKV/out projection", 128, 768, 768, 21_455),
    ("BERT FFN up", 128, 768, 3072, 85_823),
    ("BERT FFN down", 128, 3072, 768, 76_751),
    ("decode GEMV (1.5% util.)", 1, 4096, 4096, 270_207),
]
# Simba (Shao et al., MICRO 2019): ResNet-50 at batch 1 on the 36-chiplet package, 1,988 images/s, 0.50 ms.
SIMBA_IMAGES_PER_S = 1988
SIMBA_LATENCY_MS = 0.50


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


def _simba_run(resnet50: str, objective: str, out: str) -> Outcome:
    """`partition RESNET50 --hardware simba-36 --precision int8 --objective OBJECTIVE --no-certificate`, through the
    app's own run (the certificate is left out to keep the run short; the latency bound is printed apart)."""
    return run(RunConfig(resnet50, hardware="simba-36", precision="int8", objective=objective, out=out,
                         certificate=False))


def simba_table(resnet50: str) -> list[str]:
    """Both objectives' plans of ResNet-50 on simba-36 against Simba's published batch-1 figures; Simba's 1,988
    images/s is one image at a time (1 / 0.50 ms), so it compares with 1 / latency."""
    rows = ["| | Simba (MICRO'19) | ours: --objective latency | ratio | ours: --objective throughput | ratio |",
            "|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        runs = [_simba_run(resnet50, obj, os.path.join(tmp, obj)) for obj in ("latency", "throughput")]
    reps = [o.best.report for o in runs]
    graph, hw = runs[0].graph, runs[0].hw
    peak_macs_per_s = sum(c.macs_per_cycle for c in hw.chiplets) * hw.clock_hz
    macs = float(graph.matrix_flops.sum()) / 2

    def cells(values, ref=None, fmt="{:,.0f}"):
        out = []
        for v in values:
            out += [fmt.format(v), "" if ref is None else f"{v / ref:.2f}"]
        return " | ".join(out)

    rows.append(f"| latency, ms | {SIMBA_LATENCY_MS:.2f} | "
                f"{cells([r.latency_s * 1e3 for r in reps], SIMBA_LATENCY_MS, '{:.3f}')} |")
    rows.append(f"| images/s, one at a time (1 / latency) | {SIMBA_IMAGES_PER_S:,} | "
                f"{cells([1 / r.latency_s for r in reps], SIMBA_IMAGES_PER_S)} |")
    rows.append(f"| images/s streamed (pipeline full) | not reported | {cells([r.throughput_per_s for r in reps])} |")
    rows.append(f"| MAC utilisation at 1 / latency ({macs / 1e9:.2f} GMAC per image) | "
                f"{SIMBA_IMAGES_PER_S * macs / peak_macs_per_s:.1%} | "
                f"{cells([macs / r.latency_s / peak_macs_per_s for r in reps], fmt='{:.1%}')} |")
    for label, fn in (("weights streamed from DRAM, MiB", _streamed_mib), ("groups (chiplets)", _groups),
                      ("bottleneck", lambda o: o.best.report.bottleneck)):
        rows.append(f"| {label} | | {fn(runs[0])} | | {fn(runs[1])} | |")
    return rows


def simba_dram_sensitivity(resnet50: str, factors: list[float]) -> list[str]:
    """Why-they-differ, not a calibration: the latency plans (app.candidates.best_latency, as `--objective latency`
    picks them) on simba-36 with its DRAM channel's bandwidth multiplied by each factor and attached to every
    chiplet, so the weights reach a chiplet without crossing chiplet 0's links. The preset keeps factor 1 on
    chiplet 0."""
    graph = load_onnx(resnet50, input_shapes=None, precision="int8")
    st = SIMBA.memory_stacks[0]
    rows = ["| DRAM bandwidth (x stand-in), attached to | latency, ms | / Simba's 0.50 ms | bottleneck |",
            "|---|---:|---:|---|"]
    for f in factors:
        hw = replace(SIMBA, memory_stacks=(replace(st, bytes_per_cycle=round(st.bytes_per_cycle * f),
                                                   attached=tuple(range(SIMBA.n_chiplets))),))
        rep = best_latency(graph, hw, SIMBA.n_chiplets, full_report=False).report
        gbs = round(st.bytes_per_cycle * f) * SIMBA.clock_hz / 1e9
        rows.append(f"| {gbs:,.0f} GB/s (x{f:g}), every chiplet | {rep.latency_s * 1e3:.3f} | "
                    f"{rep.latency_s * 1e3 / SIMBA_LATENCY_MS:.2f} | {rep.bottleneck} |")
    return rows


SIMBA_SECTION = "Simba: ResNet-50 on the simba-36 preset"


def write_simba(resnet50: str, factors: list[float]) -> None:
    """The simba tables (and the DRAM sensitivity for `factors`) into RESULTS.md with the command and commit."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
                            ).stdout.strip() or "unknown"
    sweep = (" --simba-dram " + " ".join(f"{f:g}" for f in factors)) if factors else ""
    cmd = f"python -m benchmarks.fidelity --only simba{sweep} --write"
    lines = [f"`{cmd}` on {commit} (the app's own run, `--no-certificate`, under each objective; "
             "docs/fidelity.md section 2 says why the figures differ). Simba: Shao et al., MICRO 2019, 1,988 "
             "images/s and 0.50 ms at batch 1, one image at a time.", "", *simba_table(resnet50)]
    if factors:
        lines += ["", "The latency plans with the DRAM stand-in's bandwidth multiplied and attached to every "
                  "chiplet (sensitivity, not the preset):", "", *simba_dram_sensitivity(resnet50, factors)]
    update_section(SIMBA_SECTION, "\n".join(lines) + "\n")


def _streamed_mib(o: Outcome) -> str:
    s = o.best.partition.streamed
    return "0" if s is None else f"{float(o.graph.weight_bytes[np.asarray(s, bool)].sum()) / 2 ** 20:.1f}"


def _groups(o: Outcome) -> str:
    p = o.best.partition
    if p.shard is None:
        return f"whole ops on {len(set(p.assignment.tolist()))}"
    spans = sorted({(int(c), int(k)) for c, k in zip(p.assignment, p.shard) if k > 1})
    return ", ".join(f"{c}..{c + k - 1}" for c, k in spans) or "whole ops"


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
    ap.add_argument("--only", choices=("gemm", "simba", "flops"), help="print one section")
    ap.add_argument("--simba-dram", type=float, nargs="*", default=[], metavar="FACTOR",
                    help="also print the simba-36 latency with the DRAM bandwidth multiplied by each FACTOR")
    ap.add_argument("--write", action="store_true",
                    help="with --only simba: write the tables to RESULTS.md, section " + repr(SIMBA_SECTION))
    args = ap.parse_args()
    if args.write:
        if args.only != "simba":
            raise SystemExit("--write goes with --only simba")
        write_simba(args.resnet50, args.simba_dram)
        return
    if args.only in (None, "gemm"):
        print("## GEMM cycles vs SCALE-Sim 3.0 (64x64, output stationary)\n")
        print("\n".join(gemm_table()))
    if args.only in (None, "simba"):
        print("\n## simba-36 vs Simba, ResNet-50 224x224, batch 1, int8\n")
        print("\n".join(simba_table(args.resnet50)))
    if args.simba_dram:
        print("\n## simba-36 latency vs DRAM bandwidth (sensitivity, not the preset)\n")
        print("\n".join(simba_dram_sensitivity(args.resnet50, args.simba_dram)))
    if args.only in (None, "flops"):
        print("\n## MACs vs onnx-tool\n")
        print("\n".join(flops_table({"BERT-base": args.bert, "ResNet-50": args.resnet50})))


if __name__ == "__main__":
    main()
