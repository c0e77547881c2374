"""The off-chip memory tier: stacks, stream costs, residency, check(), the simulator's stream reads, the solver's
bound and the CLI's outputs, each against a hand-computed answer (docs/simulator.md "Streamed weights")."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from partitioner.app.cli import main
from partitioner.model.cost import stream_bytes, stream_cycles, stream_energy_pj
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import HBM3_STACK, Chiplet, Hardware, MemoryStack, mesh_of
from partitioner.hw.presets import PRESETS
from partitioner.hw.toml import hardware_from_toml, load_hardware
from partitioner.model.partition import Partition, check, memory_use
from partitioner.sim.simulator import default_inferences, simulate
from solver.infeasibility import check_feasible
from solver.optimize import optimize, stack_cycles
from solver.repair import repair
from solver.residency import choose_streamed

MIB = 1 << 20
STACK = MemoryStack("h", capacity_bytes=1 << 30, bytes_per_cycle=100, pj_per_byte=10.0, latency_cycles=50,
                    attached=(0,))


def chain3(**kw) -> Hardware:
    """Three default chiplets in a chain (1.17 pJ/bit links), one stack on chiplet 0: 100 B/cycle, 50 cycles,
    10 pJ/B."""
    return Hardware("chain-3", (Chiplet(),) * 3, "chain", 1, 3, link_pj_per_bit=1.17, memory_stacks=(STACK,), **kw)


def matmul(name: str, cycles: int, weight_bytes: int, read: int | None = None) -> Op:
    """A MatMul of `cycles` MAC-array cycles on a default chiplet (4096 MACs/cycle) holding weight_bytes."""
    return Op(name, "MatMul", (name,), 2 * 4096 * cycles, 2 * 4096 * cycles, weight_bytes,
              weight_read_bytes=read)


# --- hardware ----------------------------------------------------------------------------------------------------
def test_default_package_has_hbm3_edge_stacks_and_sram_only_16_has_none():
    hw = load_hardware(None, 16)
    assert [s.attached for s in hw.memory_stacks] == [(0, 7), (8, 15), (3, 4), (11, 12)]
    assert all(s.bytes_per_cycle == 819 and s.capacity_bytes == 16 << 30 and s.pj_per_byte == 31.2
               and s.latency_cycles == 100 for s in hw.memory_stacks)
    assert len(load_hardware(None, 64).memory_stacks) == 8
    assert PRESETS["default-16"].memory_stacks == hw.memory_stacks
    assert PRESETS["sram-only-16"].memory_stacks == ()
    assert [s.name for s in PRESETS["simba-36"].memory_stacks] == ["dram"]   # Simba streams its weights
    assert load_hardware(None, 16, memory_tier=False).memory_stacks == ()
    # Chiplet 5 (row 1, col 2) is 1 hop from 4 (hbm-e0) and from 2 -> 3; nearest attached chiplet wins.
    assert hw.stack_feed[5] == (2, 4) and hw.stack_feed[0] == (0, 0) and hw.stack_feed[9] == (1, 8)


@pytest.mark.parametrize("kw, fragment", [
    (dict(attached=()), "attached to no chiplet"),
    (dict(bytes_per_cycle=0), "must be > 0"),
    (dict(capacity_bytes=-1), "must be > 0"),
])
def test_bad_stacks_are_rejected(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        MemoryStack("s", **{**HBM3_STACK, "attached": (0,), **kw})


def test_stack_on_a_missing_chiplet_is_rejected():
    with pytest.raises(ValueError, match="attached to chiplet 9, outside 0..3"):
        mesh_of(4, memory_stacks=(MemoryStack("s", **HBM3_STACK, attached=(9,)),))


@pytest.mark.parametrize("body, fragment", [
    ("attached = []", "attached to no chiplet"),
    ("attached = [4]", "attached to chiplet 4, outside 0..3"),
    ("attached = [0]\nbytes_per_cycle = 0", "bytes_per_cycle = 0"),
    ("attached = [0]\ncapacity_gib = -2", "capacity_gib = -2"),
    ("attached = [0]\nspeed = 3", "key 'speed' is unknown"),
])
def test_bad_stack_tables_are_user_errors(tmp_path, body, fragment):
    path = tmp_path / "hw.toml"
    path.write_text(f"chiplets = 4\n[[memory_stacks]]\n{body}\n")
    with pytest.raises(UserError, match=fragment):
        hardware_from_toml(path)


def test_stack_table_defaults_to_hbm3(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text("chiplets = 4\n[[memory_stacks]]\nname = 'ddr'\nattached = [1, 2]\ncapacity_gib = 0.5\n")
    (st,) = hardware_from_toml(path).memory_stacks
    assert st == MemoryStack("ddr", 1 << 29, 819, 31.2, 100, (1, 2))


# --- cost rules --------------------------------------------------------------------------------------------------
def test_stream_bytes_read_a_matrix_once_and_an_embedding_by_rows():
    g = TensorGraph.build("g", [matmul("w", 1, 1000), matmul("emb", 1, 1000, read=30)], [])
    assert stream_bytes(g, 1).tolist() == [1000, 30]
    assert stream_bytes(g, 8).tolist() == [1000, 240]
    assert stream_bytes(g, 40).tolist() == [1000, 1000]


def test_stream_cycles_and_energy_by_hand():
    hw = chain3()
    # On the attached chiplet: 50 latency + ceil(6400 / 100) = 114.
    assert stream_cycles(6400, STACK, 0, hw) == 114
    # Two hops on: 50 + 2 x 20 + max(64, ceil(6400 / 64) = 100) = 190.
    assert stream_cycles(6400, STACK, 2, hw) == 190
    # 6400 B x 10 pJ + 6400 x 8 bit x 2 hops x 1.17 pJ = 64,000 + 119,808.
    assert stream_energy_pj(6400, STACK, 2, hw) == pytest.approx(183_808.0)


# --- check and residency -----------------------------------------------------------------------------------------
def test_streaming_frees_sram_and_check_verifies_the_tier():
    hw = mesh_of(2, Chiplet(sram_bytes=10 * MIB), memory_tier=True)
    g = TensorGraph.build("g", [matmul("a", 1, 8 * MIB), matmul("b", 1, 6 * MIB)], [(0, 1, 0)])
    a = np.array([0, 0])
    assert memory_use(g, hw, a).tolist() == [14 * MIB, 0]
    assert check(g, hw, a) and not check(g, hw, a, streamed=np.array([True, False]))
    assert memory_use(g, hw, a, np.array([True, False])).tolist() == [6 * MIB, 0]
    # The larger weight streams first (same cost per byte freed), and that is enough.
    assert choose_streamed(g, hw, a).tolist() == [True, False]
    sram_only = mesh_of(2, Chiplet(sram_bytes=10 * MIB))
    assert "has no memory tier" in check(g, sram_only, a, streamed=np.array([True, False]))[0]
    small = Hardware("small", hw.chiplets, "mesh", 1, 2, memory_stacks=(
        MemoryStack("s0", 4 * MIB, 819, 31.2, 100, (0,)), MemoryStack("s1", 4 * MIB, 819, 31.2, 100, (1,))))
    assert "memory stack s0 holds 8388608 bytes of streamed weights but has 4194304" in \
        check(g, small, a, streamed=np.array([True, False]))[0]


def test_residency_streams_the_embedding_before_a_matrix():
    hw = mesh_of(1, Chiplet(sram_bytes=10 * MIB), memory_tier=True)
    g = TensorGraph.build("g", [matmul("emb", 1, 6 * MIB, read=1000), matmul("w", 1, 8 * MIB)], [(0, 1, 0)])
    assert choose_streamed(g, hw, np.array([0, 0])).tolist() == [True, False]


# --- simulator ----------------------------------------------------------------------------------------------------
def test_one_streamed_weight_exact_cycles_and_energy():
    g = TensorGraph.build("g", [matmul("a", 100, 6400)], [])
    hw = chain3()
    r0 = simulate(g, hw, np.array([0]), streamed=np.array([True]), inferences=1, trace=True)
    assert [(e.kind, e.start, e.end) for e in r0.trace_events] == [("stack", 0, 64), ("op", 114, 214)]
    assert r0.latency_cycles == 114 + 100
    r2 = simulate(g, hw, np.array([2]), streamed=np.array([True]), inferences=1, trace=True)
    assert r2.latency_cycles == 190 + 100
    assert r2.energy_breakdown_j["memory"] == pytest.approx(183_808e-12)
    assert r2.stack_bytes_per_inference == {"h": 6400.0}
    # Resident, the op starts at once.
    assert simulate(g, hw, np.array([2]), inferences=1).latency_cycles == 100


def test_next_segments_weights_are_prefetched_while_the_current_runs():
    # a then b on chiplet 0, both streamed: a's read 0..64 (arrives 114); b's read is requested when a starts
    # (114), holds the stack 114..178 and arrives at 228, after a ends (214): b runs 228..328.
    g = TensorGraph.build("g", [matmul("a", 100, 6400), matmul("b", 100, 6400)], [(0, 1, 0)])
    r = simulate(g, chain3(), np.array([0, 0]), streamed=np.array([True, True]), inferences=1, trace=True)
    stack = [(e.item, e.start, e.end) for e in r.trace_events if e.kind == "stack"]
    assert stack == [(0, 0, 64), (1, 114, 178)]
    assert r.latency_cycles == 328


def test_batch_reads_each_weight_once_per_batch():
    g = TensorGraph.build("g", [matmul("a", 100, 6400)], [])
    part = Partition(np.array([0]), streamed=np.array([True]))
    r = simulate(g, chain3(), part, batch=4, inferences=8, trace=True)
    assert [e.inference for e in r.trace_events if e.kind == "stack"] == [0, 4]
    assert r.stack_utilisation["h"] == pytest.approx(64 / 4 / r.cycles_per_inference)
    assert r.energy_breakdown_j["memory"] == pytest.approx(6400 * 10 / 4 * 1e-12)
    assert default_inferences(3, batch=4) == 8 and default_inferences(3, batch=5) == 10
    with pytest.raises(UserError, match="--batch must be a positive integer"):
        simulate(g, chain3(), part, batch=0)


def test_a_stack_bound_stream_runs_at_the_stacks_pace():
    # 12,800 B per inference at 100 B/cycle is 128 stack cycles per inference; the op takes 13 cycles (its
    # 12,800 weight bytes over the 1,024 B/cycle SRAM port beat 10 of compute). The chiplet has one segment, so
    # the next inference's read is requested when this one's op starts: one read in flight, 50 latency + 128 =
    # 178 cycles per inference. At batch 2 the read is requested when the batch's second op starts, 13 cycles
    # after the first: (178 + 13) / 2 = 95.5 per inference.
    g = TensorGraph.build("g", [matmul("a", 10, 12800)], [])
    r = simulate(g, chain3(), np.array([0]), streamed=np.array([True]), inferences=16)
    assert r.cycles_per_inference == pytest.approx(178)
    assert r.bottleneck == "memory stack h"
    r2 = simulate(g, chain3(), np.array([0]), streamed=np.array([True]), inferences=16, batch=2)
    assert r2.cycles_per_inference == pytest.approx(95.5)


# --- solver -------------------------------------------------------------------------------------------------------
def llm_like(layers: int = 12, mib: int = 40) -> TensorGraph:
    ops = [Op(f"m{i}", "MatMul", (f"m{i}",), 2 * 4096 * 2000, 2 * 4096 * 2000, mib * MIB, 4096, 4096)
           for i in range(layers)]
    return TensorGraph.build("llm", ops, [(i, i + 1, 4096) for i in range(layers - 1)])


def test_repair_streams_what_does_not_fit_sram():
    g, hw = llm_like(), mesh_of(4, memory_tier=True)   # 480 MiB of weights, 256 MiB of SRAM
    with pytest.raises(UserError):
        check_feasible(g, mesh_of(4))
    part = repair(g, hw, np.zeros(g.n_ops, dtype=np.int64))
    assert part.streamed is not None
    assert check(g, hw, part.assignment, streamed=part.streamed) == []


def test_optimize_bound_covers_streaming_and_batches():
    g, hw = llm_like(), mesh_of(4, memory_tier=True)
    for batch in (1, 8):
        part = optimize(g, hw, time_limit_s=5, batch=batch, workers=1)
        assert check(g, hw, part.assignment, streamed=part.streamed) == []
        r = simulate(g, hw, part, batch=batch)
        assert r.cycles_per_inference >= part.lower_bound_cycles
    # Stack term by hand: a 40 MiB read at 819 B/cycle is ceil(41,943,040 / 819) = 51,213 cycles per batch.
    a, s = np.array([0] * 12), np.array([True] + [False] * 11)
    assert stack_cycles(g, hw, a, s, 1).tolist() == [51_213, 0]
    assert stack_cycles(g, hw, a, s, 8).tolist() == [51_213 // 8, 0]


def test_a_model_too_big_even_for_the_tier_says_by_how_much():
    hw = mesh_of(2, Chiplet(sram_bytes=MIB), memory_tier=True,
                 memory_stacks=(MemoryStack("s", 8 * MIB, 819, 31.2, 100, (0,)),))
    g = TensorGraph.build("g", [matmul("a", 1, 12 * MIB)], [])
    with pytest.raises(UserError, match=r"does not fit even with the memory tier.*short by 2097152 bytes"):
        check_feasible(g, hw)


# --- command line -------------------------------------------------------------------------------------------------
def _mlp(path, layers=4, width=2048):
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = TensorProto(name=f"w{i}", data_type=TensorProto.FLOAT, dims=[width, width])   # shape only, no data
        inits.append(w)
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"], name=f"matmul{i}"))
        prev = f"m{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, width])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [8, width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def test_cli_streams_lists_weights_and_rescoring_reads_them_back(tmp_path, capsys):
    # Four 8 MiB fp16 matrices on two chiplets of 12 MiB SRAM: two must stream.
    model = _mlp(tmp_path / "mlp.onnx")
    hw = tmp_path / "hw.toml"
    hw.write_text("chiplets = 2\n[chiplet]\nsram_mib = 12\n[[memory_stacks]]\nattached = [0]\n")
    out = tmp_path / "out"
    assert main([model, "--hardware", str(hw), "--method", "greedy", "--batch", "4", "--out", str(out),
                 "--no-certificate"]) == 0
    doc = json.loads((out / "partition.json").read_text())
    tier = doc["memory_tier"]
    assert tier["batch"] == 4 and len(tier["streamed"]) == 2
    assert all(r["weight_bytes"] == 8 * MIB and r["read_bytes_per_batch"] == 8 * MIB for r in tier["streamed"])
    assert tier["stacks"][0]["stored_bytes"] == 16 * MIB
    assert tier["stacks"][0]["read_bytes_per_inference"] == pytest.approx(16 * MIB / 4)
    assert "## Memory tier" in (out / "report.md").read_text()
    trace = json.loads((out / "trace.json").read_text())
    assert any(e.get("cat") == "stream read" for e in trace["traceEvents"])
    thr = doc["metrics"]["throughput_per_s"]
    capsys.readouterr()
    assert main(["simulate", model, "--partition", str(out / "partition.json")]) == 0
    assert f"{thr:,.1f} inferences/s" in capsys.readouterr().out
    # An old file (no memory_tier key) loads all resident; here that no longer fits, said in one line.
    del doc["memory_tier"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(doc))
    assert main(["simulate", model, "--partition", str(old)]) == 2
    assert "needs" in capsys.readouterr().err
    # Without the tier the model does not fit at all: exit 2, and the earlier outputs are untouched.
    before = (out / "partition.json").read_text()
    assert main([model, "--hardware", str(hw), "--no-memory-tier", "--method", "greedy", "--out", str(out)]) == 2
    assert (out / "partition.json").read_text() == before


def test_splits_balance_compute_when_weights_can_stream():
    from partitioner.plan.splits import contiguous_split, dp_partition, greedy_partition, sram_weights

    g, hw = llm_like(), mesh_of(4, memory_tier=True)   # 12 x 40 MiB: no split fits 4 x 64 MiB all resident
    even = [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    assert dp_partition(g, hw).tolist() == even
    assert greedy_partition(g, hw).tolist() == even
    assert contiguous_split(g, hw).tolist() == even
    # A weight larger than any SRAM streams anyway, so it never counts; the others do until relaxed.
    big = TensorGraph.build("g", [matmul("emb", 1, 80 * MIB, read=10), matmul("w", 1, 8 * MIB)], [(0, 1, 0)])
    assert sram_weights(big, hw).tolist() == [0, 8 * MIB]
    assert sram_weights(big, hw, relaxed=True).tolist() == [0, 0]
    assert sram_weights(big, mesh_of(4)).tolist() == [80 * MIB, 8 * MIB]


def test_stack_lower_bound_by_hand():
    from solver.optimize import stack_lower_bound

    # 12 x 40 MiB on 4 x 64 MiB of SRAM: at least 480 - 256 = 224 MiB stream, read whole (ratio 1), over two
    # stacks of 819 B/cycle: floor(234,881,024 / 1,638) - 12 weighted ops = 143,395 - 12 = 143,383 cycles.
    g, hw = llm_like(), mesh_of(4, memory_tier=True)
    assert stack_lower_bound(g, hw) == 143_383
    assert stack_lower_bound(g, hw, batch=8) == 234_881_024 // (8 * 1638) - 12
    # An embedding that reads 314,572 of its 300 MiB streams first: the 500 - 256 = 244 MiB deficit all comes from
    # it, costing 314,572 x 244 / 300 = 255,852.2 read bytes: floor(255,852.2 / 1,638) - 6 ops = 156 - 6 = 150.
    emb = TensorGraph.build("g", [matmul("emb", 1, 300 * MIB, read=300 * MIB // 1000)] + list(g.ops[:5]), [])
    assert stack_lower_bound(emb, hw) == 150
    assert stack_lower_bound(g, mesh_of(4)) == 0 and stack_lower_bound(llm_like(4), hw) == 0
    part = optimize(g, hw, time_limit_s=5, workers=1)
    assert part.lower_bound_cycles >= 143_383


GPT2 = "examples/gpt2.onnx"


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.exists(GPT2), reason="exported GPT-2 not present")
def test_gpt2_runs_on_the_default_package_by_streaming_its_embedding(tmp_path):
    from partitioner.app.document import assignment_from_document
    from partitioner.app.run import load_model
    from partitioner.app.memtier import streamed_from_document

    out = tmp_path / "gpt2"
    # whole ops (--max-shard 1): with splits allowed the embedding fits SRAM in two halves and nothing streams
    assert main([GPT2, "--chiplets", "16", "--method", "dp", "--max-shard", "1", "--out", str(out)]) == 0
    doc = json.loads((out / "partition.json").read_text())
    graph = load_model(GPT2, precision="fp16")
    a = assignment_from_document(graph, doc, "partition.json")
    streamed = streamed_from_document(graph, doc, "partition.json")
    assert "/model/transformer/wte/Gather" in {r["op"] for r in doc["memory_tier"]["streamed"]}
    assert check(graph, load_hardware(None, 16), a, streamed=streamed) == []
    assert doc["metrics"]["throughput_per_s"] <= doc["metrics"]["solver_bound_throughput_per_s"] * (1 + 1e-9)


def test_tier_opens_only_when_all_resident_is_impossible_and_reads_load_in_links():
    from solver.optimize import bottleneck_cycles, stream_receive_cycles
    from solver.residency import streaming_needed

    assert streaming_needed(llm_like(), mesh_of(4, memory_tier=True))
    assert not streaming_needed(llm_like(4), mesh_of(4, memory_tier=True))   # 160 MiB fits 256 MiB
    assert not streaming_needed(llm_like(), mesh_of(4))                       # no tier to open
    # A 6,400 B read for chiplet 2 of the chain enters over its single in-link: ceil(6400 / 64) = 100 cycles.
    g = TensorGraph.build("g", [matmul("a", 10, 6400)], [])
    assert stream_receive_cycles(g, chain3(), np.array([2]), np.array([True])).tolist() == [0, 0, 100]
    assert stream_receive_cycles(g, chain3(), np.array([0]), np.array([True])).tolist() == [0, 0, 0]
    assert bottleneck_cycles(g, chain3(), np.array([2]), np.array([True])) == 100
