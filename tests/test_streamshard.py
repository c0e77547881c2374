"""Split ops that stream their weights, and tensors shared by several ops, against hand-computed answers
(docs/simulator.md "Streamed split ops" and "Shared weights")."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from partitioner.model.cost import sharded_bound_cycles
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, MemoryStack, mesh_of
from partitioner.frontend.load import load_onnx
from partitioner.model.partition import Partition, check, memory_use, stack_use
from partitioner.model.sharding import check_groups
from partitioner.sim.simulator import simulate
from partitioner.plan.staged_dp import staged_partition, staged_plans
from partitioner.frontend.synthetic import random_dag
from solver.optimize import stack_lower_bound
from solver.residency import choose_streamed

MIB = 1 << 20
STACK = MemoryStack("h", capacity_bytes=1 << 30, bytes_per_cycle=100, pj_per_byte=10.0, latency_cycles=50,
                    attached=(0,))


def chain3(**kw) -> Hardware:
    """Three default chiplets in a chain (64 B/cycle links, 20 cycles a hop, 1.17 pJ/bit), one stack on chiplet
    0: 100 B/cycle, 50 cycles latency, 10 pJ/B."""
    return Hardware("chain-3", (Chiplet(),) * 3, "chain", 1, 3, link_pj_per_bit=1.17, memory_stacks=(STACK,), **kw)


def matmul(name: str, cycles: int, weight_bytes: int, work: int = 0) -> Op:
    """A weight MatMul of `cycles` MAC-array cycles on a default chiplet (4096 MACs/cycle)."""
    return Op(name, "MatMul", (name,), 2 * 4096 * cycles, 2 * 4096 * cycles, weight_bytes, work, 0)


# --- S9: a split op streams each piece's share from the stack feeding its chiplet ----------------------------------
def test_a_two_way_split_streamed_op_exact_cycles_and_energy():
    """docs/simulator.md worked example: a 12,800 B, 200-cycle MatMul split 2 ways on chiplets 1..2 of chain3.
    Piece 0 (chiplet 1) reads 6,400 B: stack 0..64, link 0->1 from t=50 for 100 cycles (0..150 would be 50..150),
    arrives 150 + 20 = 170 and runs 170..270. Piece 1 (chiplet 2) queues behind it: stack 64..128, link 0->1 free
    at 150: 150..250, link 1->2 170..270, arrives 290 and runs 290..390."""
    g = TensorGraph.build("g", [matmul("a", 200, 12800)], [])
    part = Partition(np.array([1]), shard=np.array([2]), streamed=np.array([True]))
    assert check(g, chain3(), part) == []
    r = simulate(g, chain3(), part, inferences=1, trace=True)
    stack = [(e.start, e.end) for e in r.trace_events if e.kind == "stack"]
    links = sorted((e.resource, e.start, e.end) for e in r.trace_events if e.kind == "link")
    ops = [(e.resource, e.start, e.end) for e in r.trace_events if e.kind == "op"]
    assert stack == [(0, 64), (64, 128)]
    assert links == [(0, 50, 150), (0, 150, 250), (2, 170, 270)]    # link ids: 0 = 0->1, 2 = 1->2
    assert ops == [(1, 170, 270), (2, 290, 390)]
    assert r.latency_cycles == 390
    # 2 x 6,400 B at 10 pJ/B plus 6,400 B x 8 bits x (1 + 2 hops) x 1.17 pJ/bit
    assert r.energy_breakdown_j["memory"] == pytest.approx((128_000 + 179_712) * 1e-12)
    assert r.stack_bytes_per_inference == {"h": 12800.0}


def test_a_streamed_split_op_holds_no_sram_and_each_piece_share_sits_in_its_stack_once():
    # 3 MiB weight MatMul split 3 ways: 1 MiB per piece; a LayerNorm with 4 KiB of weights split 3 ways keeps
    # a full copy per piece (row axis).
    ln = Op("ln", "LayerNormalization", ("ln",), 3000, 0, 4096, 3072, 3072)
    g = TensorGraph.build("g", [matmul("a", 30, 3 * MIB, work=3000), ln], [(0, 1, 0)])
    a, k = np.array([0, 0]), np.array([3, 3])
    # per chiplet: 1 MiB MatMul piece + 4,096 B LayerNorm copy + the largest working set (the LayerNorm piece's
    # full 3,072 B input and 1,024 B output slice beat the MatMul piece's 3,000 B input)
    resident = memory_use(g, chain3(), a, None, k)
    assert resident.tolist() == [MIB + 4096 + 4096] * 3
    streamed = memory_use(g, chain3(), a, np.array([True, False]), k)
    assert (resident - streamed).tolist() == [MIB] * 3             # only the MatMul's pieces left SRAM
    assert stack_use(g, chain3(), a, np.array([True, False]), k).tolist() == [3 * MIB]
    assert stack_use(g, chain3(), a, np.array([True, True]), k).tolist() == [3 * MIB + 3 * 4096]
    assert check(g, chain3(), Partition(a, shard=k, streamed=np.array([True, True]))) == []
    small = Hardware("c", (Chiplet(),) * 3, "chain", 1, 3,
                     memory_stacks=(replace(STACK, capacity_bytes=3 * MIB),))
    problems = check(g, small, Partition(a, shard=k, streamed=np.array([True, True])))
    assert problems == [f"memory stack h holds {3 * MIB + 3 * 4096} bytes of streamed weights but has {3 * MIB}"]


def test_residency_streams_split_ops_by_the_whole_op_rule():
    # Two 12 MiB MatMuls split 2 ways on 10 MiB chiplets: 6 + 6 MiB per chiplet overflows by 2 MiB; both read
    # whole (ratio 1), equal weights, so the lower op id streams, on both chiplets of the group at once.
    hw = mesh_of(2, Chiplet(sram_bytes=10 * MIB), memory_tier=True)
    g = TensorGraph.build("g", [matmul("a", 10, 12 * MIB), matmul("b", 10, 12 * MIB)], [(0, 1, 0)])
    a, k = np.array([0, 0]), np.array([2, 2])
    streamed = choose_streamed(g, hw, a, shard=k)
    assert streamed.tolist() == [True, False]
    assert check(g, hw, Partition(a, shard=k, streamed=streamed)) == []
    assert choose_streamed(g, hw, a, shard=np.array([1, 1])).tolist() == [True, True]   # whole: 24 MiB on one


def test_staged_plans_of_a_model_too_big_for_sram_split_and_stream():
    from partitioner.app.candidates import best_staged

    # 8 x 24 MiB MatMuls (192 MiB) on 4 x 64 MiB: fits only split; the tail MatMul of 200 MiB must stream.
    ops = [Op(f"m{i}", "MatMul", (f"m{i}",), 2 * 4096 * 1000, 2 * 4096 * 1000, 24 * MIB, 4096, 4096)
           for i in range(8)]
    ops.append(Op("head", "MatMul", ("head",), 2 * 4096 * 4000, 2 * 4096 * 4000, 200 * MIB, 4096, 4096))
    g = TensorGraph.build("llm", ops, [(i, i + 1, 4096) for i in range(8)])
    hw = mesh_of(4, memory_tier=True)
    a, k = staged_partition(g, hw, 2)
    assert k.max() == 2
    ev = best_staged(g, hw, 2)
    assert ev is not None and ev.partition.sharded and ev.partition.streamed is not None
    assert ev.partition.streamed[8] and check(g, hw, ev.partition) == []
    assert ev.report.cycles_per_inference >= sharded_bound_cycles(g, hw, 2)


def test_the_dp_charges_a_piece_that_must_stream_at_its_place():
    # Two chiplets in a chain, the stack on chiplet 0 (100 B/cycle). w (1,000 cycles) holds 200 KiB, more than the
    # 64 KiB SRAM, so it streams. Split a | w, the stages' compute is 1,000 each but w's read crosses link 0->1:
    # 204,800 / 64 = 3,200 cycles. Both on chiplet 0: 2,000 cycles of compute, the read holds only the stack:
    # 204,800 / 100 = 2,048. The DP takes the second; the simulator agrees.
    chip = Chiplet(sram_bytes=64 * 1024)
    hw = Hardware("c2", (chip,) * 2, "chain", 1, 2, memory_stacks=(STACK,))
    g = TensorGraph.build("g", [matmul("a", 1000, 1024), matmul("w", 1000, 200 * 1024)], [(0, 1, 64)])
    a, k = staged_partition(g, hw, 1)
    assert a.tolist() == [0, 0] and k.tolist() == [1, 1]
    streamed = np.array([False, True])
    together = simulate(g, hw, a, streamed=streamed).cycles_per_inference
    apart = simulate(g, hw, np.array([0, 1]), streamed=streamed).cycles_per_inference
    assert apart >= 3200 > together >= 2048


# --- shared (tied) weights -------------------------------------------------------------------------------------------
def tied_model(path) -> str:
    """An embedding [64, 32] read by a Gather and, transposed, by the LM head MatMul: 4,096 B in fp16."""
    table = helper.make_tensor("E", TensorProto.FLOAT, [64, 32], np.zeros(64 * 32, dtype=np.float32))
    nodes = [helper.make_node("Gather", ["E", "ids"], ["h"], name="embed"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("Transpose", ["E"], ["Et"], name="tie", perm=[1, 0]),
             helper.make_node("MatMul", ["r", "Et"], ["logits"], name="head")]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, 64])], [table])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_a_tied_tensor_is_held_once_where_its_readers_share_a_chiplet_or_stack(tmp_path):
    g = load_onnx(tied_model(tmp_path / "tied.onnx"), precision="fp16")
    embed, head = g.op_index("embed"), g.op_index("head")
    assert g.weight_bytes[embed] == g.weight_bytes[head] == 4096
    assert g.ops[embed].shared_weights == g.ops[head].shared_weights == (("E", 4096),)
    assert (g.total_weight_bytes, g.unique_weight_bytes) == (8192, 4096)
    hw = mesh_of(2, memory_tier=True)
    # two ops (the Relu fuses into the Gather); working sets: embed 64 + 512 B, head 512 + 1,024 B = 1,536 B
    assert g.n_ops == 2
    work = 1536
    assert int(g.work_bytes.max()) == work
    one = np.zeros(g.n_ops, dtype=np.int64)
    assert memory_use(g, hw, one).tolist() == [4096 + work, 0]            # together: once
    two = (np.arange(g.n_ops) >= head).astype(np.int64)
    assert memory_use(g, hw, two).tolist() == [4096 + 576, 4096 + work]   # apart: each its copy
    both = np.zeros(g.n_ops, dtype=bool)
    both[[embed, head]] = True
    assert [st.attached for st in hw.memory_stacks] == [(0,), (1,)]
    assert stack_use(g, hw, one, both).tolist() == [4096, 0]              # one stack feeds both: once
    assert stack_use(g, hw, two, both).tolist() == [4096, 4096]           # two stacks: each its copy
    assert memory_use(g, hw, one, both).tolist() == [work, 0]
    only_head = np.zeros(g.n_ops, dtype=bool)
    only_head[head] = True                                                # one in SRAM, one off-chip: once each
    assert memory_use(g, hw, one, only_head).tolist() == [4096 + work, 0]
    assert stack_use(g, hw, one, only_head).tolist() == [4096, 0]
    # a split op's slice never counts as the tied tensor: 2-way vocab/column pieces hold 2,048 B each
    k = np.ones(g.n_ops, dtype=np.int64)
    k[head] = 2
    a = np.zeros(g.n_ops, dtype=np.int64)
    assert memory_use(g, hw, a, None, k).tolist() == [4096 + 2048 + 1024, 2048 + 1024]


def test_the_stack_bound_counts_a_tied_tensor_once():
    # 2 ops reading one 40 MiB tensor plus a 30 MiB matrix on one 64 MiB chiplet: 70 MiB real, 6 MiB must stream.
    shared = (("T", 40 * MIB),)
    ops = [Op("e", "MatMul", ("e",), 8192, 8192, 40 * MIB, shared_weights=shared),
           Op("h", "MatMul", ("h",), 8192, 8192, 40 * MIB, shared_weights=shared),
           Op("m", "MatMul", ("m",), 8192, 8192, 30 * MIB)]
    g = TensorGraph.build("g", ops, [(0, 1, 0), (1, 2, 0)])
    hw = mesh_of(1, memory_tier=True)
    assert g.unique_weight_bytes == 70 * MIB
    # 6 MiB at ratio 1 over the package's one 819 B/cycle stack: floor(6,291,456 / 819) - 3 ops = 7,681 - 3
    assert len(hw.memory_stacks) == 1
    assert stack_lower_bound(g, hw) == 7678
    streamed = choose_streamed(g, hw, np.zeros(3, dtype=np.int64))
    assert streamed.tolist() == [True, True, False]                      # the tensor frees SRAM once both go
    assert check(g, hw, np.zeros(3, dtype=np.int64), streamed=streamed) == []


# --- the certificate holds for plans that split and stream ------------------------------------------------------------
@st.composite
def split_streamed_plans(draw):
    n_ops = draw(st.integers(2, 24))
    g = random_dag(n_ops, draw(st.integers(0, 9999)))
    n_chip = draw(st.sampled_from([4, 6, 9]))
    hw = mesh_of(n_chip, memory_tier=True, link_bytes_per_cycle=draw(st.sampled_from([8, 64])))
    cuts = sorted(set(draw(st.lists(st.integers(1, n_ops - 1), max_size=4))))
    a, k = np.zeros(n_ops, dtype=np.int64), np.ones(n_ops, dtype=np.int64)
    chip = 0
    for lo, hi in zip([0] + cuts, cuts + [n_ops]):     # stages in pipeline order, each on a group of 1-3
        size = draw(st.integers(1, 3))
        if chip + size > n_chip:
            chip, size = n_chip - 1, 1
        a[lo:hi], k[lo:hi] = chip, size
        chip = min(chip + size, n_chip - 1)
    weighted = np.flatnonzero(g.weight_bytes > 0)
    streamed = np.zeros(n_ops, dtype=bool)
    if weighted.size:
        streamed[weighted] = draw(st.lists(st.booleans(), min_size=weighted.size, max_size=weighted.size))
    return g, hw, Partition(a, shard=k, streamed=streamed), draw(st.sampled_from([1, 2, 4]))


@settings(max_examples=40, deadline=None)
@given(split_streamed_plans())
def test_simulated_split_streamed_plans_never_beat_the_certificate(plan):
    from partitioner.app.certify import sharded_certificate

    g, hw, part, batch = plan
    r = simulate(g, hw, part, batch=batch)
    cert = sharded_certificate(g, hw, int(part.shard.max()) if part.shard is not None else 1)
    assert r.cycles_per_inference >= cert.lower_bound_cycles - 1e-9
    assert r.throughput_per_s <= r.bound_throughput_per_s * (1 + 1e-12)
    assert r.cycles_per_inference >= max(r.chiplet_busy_cycles)
    assert max(r.stack_utilisation.values(), default=0.0) <= 1.0 + 1e-12
    assert check_groups(g, hw.n_chiplets, part.assignment, part.shard) == []


def test_the_relaxed_dp_charges_what_each_stage_streams_beyond_its_sram():
    # 3 x 48 KiB MatMuls on two 64 KiB chiplets (stack on chiplet 0): no split fits, so the DP runs relaxed.
    # a|bc: 1,000 | 1,900 cycles, and chiplet 1 streams its 32 KiB excess over link 0->1: 32,768 / 64 = 512.
    # ab|c: 2,000 + 1 (shipping b's 64 B), and chiplet 0 streams 32 KiB from its own stack: ceil(32,768 / 100) =
    # 328. Overlapped (max): a|bc 1,900 < ab|c 2,001. Serial (sum): ab|c 2,329 < a|bc 2,412. The simulator hides
    # bc's one read behind the 1,900-cycle segment before it (the previous inference's), so a|bc wins there.
    chip = Chiplet(sram_bytes=64 * 1024)
    hw = Hardware("c2", (chip,) * 2, "chain", 1, 2, memory_stacks=(STACK,))
    ops = [matmul("a", 1000, 48 * 1024), matmul("b", 1000, 48 * 1024), matmul("c", 900, 48 * 1024)]
    g = TensorGraph.build("g", ops, [(0, 1, 64), (1, 2, 64)])
    assert staged_partition(g, hw, 1)[0].tolist() == [0, 1, 1]
    assert staged_partition(g, hw, 1, serial_streams=True)[0].tolist() == [0, 0, 1]
    assert [p[0].tolist() for p in staged_plans(g, hw, 1)] == [[0, 1, 1], [0, 0, 1]]
    cycles = {}
    for plan in ([0, 0, 1], [0, 1, 1]):
        plan = np.array(plan)
        streamed = choose_streamed(g, hw, plan)
        assert check(g, hw, plan, streamed=streamed) == []
        cycles[tuple(plan)] = simulate(g, hw, plan, streamed=streamed).cycles_per_inference
    assert cycles == {(0, 0, 1): 2000, (0, 1, 1): 1900}


def test_the_serial_stream_estimate_hides_a_one_op_stages_read_behind_its_compute():
    # 3 x 48 KiB MatMuls (1,000 cycles each) and a 200 KiB head (4,000) on two 64 KiB chiplets, stack on chiplet 0:
    # nothing fits, so the DP runs relaxed. o0 o1 o2 | h: chiplet 0 streams its 80 KiB excess from its own stack,
    # ceil(81,920 / 100) = 820 after 3,001 (3,000 + shipping 64 B): 3,821; h streams its 136 KiB excess over link
    # 0->1, 139,264 / 64 = 2,176. Summed, h's stage would cost 6,176 and the DP would split everything 2 ways
    # (>= 3,500 of pieces + 2,212 of streams = 5,712, simulated 4,670). But h's read is prefetched during the
    # segment before it, its own of the previous inference (M4): max(4,000, 2,176) = 4,000, and the simulator
    # agrees (the head's 4,000 cycles are the period).
    chip = Chiplet(sram_bytes=64 * 1024)
    hw = Hardware("c2", (chip,) * 2, "chain", 1, 2, memory_stacks=(STACK,))
    ops = [matmul(f"o{i}", 1000, 48 * 1024) for i in range(3)] + [matmul("h", 4000, 200 * 1024)]
    g = TensorGraph.build("g", ops, [(i, i + 1, 64) for i in range(3)])
    a, k = staged_partition(g, hw, 2, serial_streams=True)
    assert a.tolist() == [0, 0, 0, 1] and k.tolist() == [1, 1, 1, 1]
    cycles = []
    for plan, shard in ((a, k), (np.zeros(4, dtype=np.int64), np.full(4, 2, dtype=np.int64))):
        part = Partition(plan, None, 0, "dp", shard=shard, streamed=choose_streamed(g, hw, plan, 1, shard))
        assert check(g, hw, part) == []
        cycles.append(simulate(g, hw, part).cycles_per_inference)
    assert cycles == [4000, 4670]
