"""The simulator against hand-computed timings (docs/simulator.md), and its properties."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.model.cost import op_cycles_matrix, transfer_cycles
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.model.partition import Partition
from partitioner.sim.simulator import default_inferences, simulate
from partitioner.frontend.synthetic import random_dag

VEC = Chiplet().vector_ops_per_cycle   # a vector op of VEC * c flops takes c cycles on a default chiplet


def vop(name: str, cycles: int, in_bytes: int = 0, out_bytes: int = 0) -> Op:
    return Op(name, "Add", (name,), VEC * cycles, 0, 0, in_bytes, out_bytes)


def graph_of(cycles: list[int], edges: list[tuple[int, int, int]]) -> TensorGraph:
    return TensorGraph.build("hand", [vop(f"op{i}", c) for i, c in enumerate(cycles)], edges)


def chain_hw(n: int, **kw) -> Hardware:
    return Hardware(f"chain-{n}", (Chiplet(),) * n, "chain", 1, n, **kw)


# --- known answers ---------------------------------------------------------------------------------------------
def test_chain_on_one_chiplet_takes_the_sum():
    g = graph_of([10, 20, 30], [(0, 1, 100), (1, 2, 100)])
    r = simulate(g, mesh_of(1), np.zeros(3, dtype=int))
    assert r.latency_cycles == 60
    assert r.cycles_per_inference == 60
    assert r.throughput_per_s == pytest.approx(1e9 / 60)
    assert r.chiplet_busy_fraction == (1.0,)
    assert r.bottleneck == "chiplet 0" and r.bottleneck_chiplet == 0
    assert r.energy_breakdown_j["link"] == 0


def test_two_stage_pipeline_runs_at_the_slower_stage():
    # op0: 100 cycles on chiplet 0, op1: 300 cycles on chiplet 1, 64 B between them (1 link cycle, 1 hop).
    g = graph_of([100, 300], [(0, 1, 64)])
    r = simulate(g, mesh_of(2), np.array([0, 1]))
    assert r.latency_cycles == 100 + 20 + 1 + 300
    assert r.cycles_per_inference == 300
    assert r.measured_cycles_per_inference == 300
    assert r.throughput_per_s == pytest.approx(1e9 / 300)
    assert r.chiplet_busy_fraction == pytest.approx((100 / 300, 1.0))
    assert r.link_utilisation == pytest.approx({"0->1": 1 / 300, "1->0": 0.0})
    assert r.bottleneck == "chiplet 1"


def test_transfer_over_hops_takes_the_documented_cycles():
    # chain of 4: chiplet 0 -> chiplet 3 is 3 hops; 1000 B at 64 B/cycle is 16 cycles.
    hw = chain_hw(4)
    g = graph_of([10, 10], [(0, 1, 1000)])
    r = simulate(g, hw, np.array([0, 3]))
    assert transfer_cycles(1000, 3, hw) == 3 * 20 + 16
    assert r.latency_cycles == 10 + 3 * 20 + 16 + 10


@pytest.mark.parametrize("hops", [1, 2, 5])
@pytest.mark.parametrize("nbytes", [1, 64, 65, 100_000])
def test_uncontended_transfer_equals_cost_model(hops, nbytes):
    hw = chain_hw(6, hop_latency_cycles=7, link_bytes_per_cycle=32)
    g = graph_of([5, 5], [(0, 1, nbytes)])
    r = simulate(g, hw, np.array([0, hops]))
    assert r.latency_cycles == 5 + transfer_cycles(nbytes, hops, hw) + 5


def test_two_transfers_sharing_a_link_serialise():
    # Chiplet 0 runs op0 [0,10] and op1 [10,20]; both feed op2 on chiplet 1 over link 0->1.
    # op0's 6400 B hold the link [10,110] and arrive at 10+20+100 = 130; op1's 640 B ask at 20, wait for the
    # link until 110, hold it [110,120] and arrive at 110+20+10 = 140 (uncontended they would arrive at 50).
    g = graph_of([10, 10, 5], [(0, 2, 6400), (1, 2, 640)])
    r = simulate(g, mesh_of(2), np.array([0, 0, 1]), trace=True, inferences=1)
    assert r.latency_cycles == 140 + 5
    links = [(e.item, e.start, e.end) for e in r.trace_events if e.kind == "link"]
    assert links == [(0, 10, 110), (1, 110, 120)]
    ops = sorted((e.item, e.start, e.end) for e in r.trace_events if e.kind == "op")
    assert ops == [(0, 0, 10), (1, 10, 20), (2, 140, 145)]


def test_cut_through_waits_at_a_busy_downstream_link():
    # chain 0-1-2. op0 on chiplet 1 sends 6400 B (100 cycles) to chiplet 2 at t=10: link 1->2 busy [10,110].
    # op1 on chiplet 0 (5 cycles) sends 64 B to chiplet 2: link 0->1 [5,6], head at chiplet 1 at 25, waits
    # for link 1->2 until 110, holds it [110,111], arrives 110+20+1 = 131.
    g = graph_of([10, 5, 1], [(0, 2, 6400), (1, 2, 64)])
    r = simulate(g, chain_hw(3), np.array([1, 0, 2]), trace=True, inferences=1)
    links = sorted((e.resource, e.item, e.start, e.end) for e in r.trace_events if e.kind == "link")
    hw = chain_hw(3)
    l01, l12 = hw.link_index[(0, 1)], hw.link_index[(1, 2)]
    assert sorted(links) == sorted([(l12, 0, 10, 110), (l01, 1, 5, 6), (l12, 1, 110, 111)])
    assert r.latency_cycles == 131 + 1


def test_one_message_per_producer_and_destination_chiplet():
    # op0 feeds op1 (1280 B) and op2 (640 B), both on chiplet 1: one 1280 B tensor crosses (20 link cycles).
    g = graph_of([10, 10, 10], [(0, 1, 1280), (0, 2, 640)])
    r = simulate(g, mesh_of(2), np.array([0, 1, 1]), trace=True, inferences=1)
    assert [(e.start, e.end) for e in r.trace_events if e.kind == "link"] == [(10, 30)]
    assert r.latency_cycles == 10 + 20 + 20 + 10 + 10
    assert r.energy_breakdown_j["link"] == pytest.approx(5120e-12)  # 1280 B x 8 bit x 1 hop x 0.5 pJ/bit


def test_zero_byte_edge_orders_ops_at_no_cost():
    g = graph_of([10, 10], [(0, 1, 0)])
    r = simulate(g, mesh_of(2), np.array([0, 1]), inferences=1)
    assert r.latency_cycles == 20


def test_worked_example_from_docs():
    """docs/simulator.md, "Worked example": A, B on chiplet 0, C on chiplet 1."""
    ops = [vop("A", 100, 0, 3200), vop("B", 50, 1000, 640), vop("C", 120, 3840, 0)]
    g = TensorGraph.build("worked", ops, [(0, 1, 1000), (0, 2, 3200), (1, 2, 640)])
    hw = mesh_of(2)
    r = simulate(g, hw, np.array([0, 0, 1]), trace=True)
    assert r.inferences_simulated == 8
    assert r.latency_cycles == 300
    assert r.cycles_per_inference == 150
    assert r.throughput_per_s == pytest.approx(1e9 / 150)
    assert r.bound_cycles_per_inference == 135
    assert r.bound_throughput_per_s == pytest.approx(1e9 / 135)
    assert r.chiplet_busy_fraction == pytest.approx((1.0, 0.8))
    assert r.link_utilisation["0->1"] == pytest.approx(60 / 150)
    assert r.bottleneck == "chiplet 0"
    assert r.energy_breakdown_j["compute"] == pytest.approx(270 * VEC * 0.2e-12)
    assert r.energy_breakdown_j["sram"] == pytest.approx((3200 + 1640 + 3840) * 1.0e-12)
    assert r.energy_breakdown_j["link"] == pytest.approx(15_360e-12)  # (3200 + 640) B x 8 x 1 hop x 0.5 pJ
    c_ops = [(e.inference, e.start, e.end) for e in r.trace_events if e.kind == "op" and e.item == 2]
    assert c_ops[:3] == [(0, 180, 300), (1, 330, 450), (2, 480, 600)]
    assert r.chiplet_memory_fraction[0] == pytest.approx(3200 / (64 << 20))   # largest working set: A


def test_partition_and_plain_assignment_agree():
    g = random_dag(30, 1)
    a = np.sort(np.random.default_rng(0).integers(0, 4, g.n_ops))
    assert simulate(g, mesh_of(4), a) == simulate(g, mesh_of(4), Partition(a))


def test_bad_assignment_is_a_user_error():
    g = graph_of([1, 1], [(0, 1, 1)])
    with pytest.raises(UserError):
        simulate(g, mesh_of(2), np.array([0, 2]))
    with pytest.raises(UserError):
        simulate(g, mesh_of(2), np.array([0]))
    with pytest.raises(UserError):
        simulate(g, mesh_of(2), np.array([0, 1]), inferences=0)


def test_default_stream_length():
    assert default_inferences(1) == 8 and default_inferences(16) == 32
    g = random_dag(40, 0)
    a = np.sort(np.random.default_rng(0).integers(0, 6, g.n_ops))
    assert simulate(g, mesh_of(6), a).inferences_simulated == default_inferences(len(set(a.tolist())))


def test_trace_is_complete_and_does_not_change_the_numbers():
    g = random_dag(25, 3)
    a = np.sort(np.random.default_rng(3).integers(0, 4, g.n_ops))
    plain, traced = simulate(g, mesh_of(4), a), simulate(g, mesh_of(4), a, trace=True)
    assert plain.trace_events == ()
    assert plain.throughput_per_s == traced.throughput_per_s and plain.latency_s == traced.latency_s
    op_events = [e for e in traced.trace_events if e.kind == "op"]
    assert len(op_events) == g.n_ops * traced.inferences_simulated
    cycles = op_cycles_matrix(g, mesh_of(4))[np.arange(g.n_ops), a]
    for e in op_events:
        assert e.end - e.start == cycles[e.item] and e.resource == a[e.item]
    # a chiplet never runs two ops at once, a link never carries two tensors at once
    for kind in ("op", "link"):
        by_res: dict[int, list] = {}
        for e in traced.trace_events:
            if e.kind == kind:
                by_res.setdefault(e.resource, []).append((e.start, e.end))
        for spans in by_res.values():
            spans.sort()
            assert all(s1 >= e0 for (_, e0), (s1, _) in zip(spans, spans[1:]))


# --- properties ------------------------------------------------------------------------------------------------
@st.composite
def cases(draw, pipeline: bool = True):
    n_ops = draw(st.integers(1, 30))
    seed = draw(st.integers(0, 10_000))
    n_chip = draw(st.integers(1, 9))
    g = random_dag(n_ops, seed)
    ids = draw(st.lists(st.integers(0, n_chip - 1), min_size=n_ops, max_size=n_ops))
    a = np.array(sorted(ids) if pipeline else ids, dtype=np.int64)
    topology = draw(st.sampled_from(["mesh", "ring", "chain", "torus", "all-to-all"]))
    if topology in ("mesh", "torus"):
        hw = mesh_of(n_chip, hop_latency_cycles=draw(st.integers(0, 50)),
                     link_bytes_per_cycle=draw(st.integers(1, 128)))
        if topology == "torus":
            hw = Hardware("t", hw.chiplets, "torus", hw.rows, hw.cols, link_bytes_per_cycle=hw.link_bytes_per_cycle,
                          hop_latency_cycles=hw.hop_latency_cycles)
    else:
        hw = Hardware("h", (Chiplet(),) * n_chip, topology, 1, n_chip,
                      hop_latency_cycles=draw(st.integers(0, 50)), link_bytes_per_cycle=draw(st.integers(1, 128)))
    return g, hw, a


@settings(max_examples=60, deadline=None)
@given(cases())
def test_throughput_never_exceeds_the_bound(case):
    g, hw, a = case
    r = simulate(g, hw, a)
    assert r.throughput_per_s <= r.bound_throughput_per_s * (1 + 1e-12)
    assert r.cycles_per_inference >= max(r.chiplet_busy_cycles)
    assert r.cycles_per_inference >= r.measured_cycles_per_inference
    assert max(r.chiplet_busy_fraction) <= 1.0 + 1e-12
    assert max(r.link_utilisation.values(), default=0.0) <= 1.0 + 1e-12
    assert r.latency_cycles >= max(r.chiplet_busy_cycles)


@settings(max_examples=30, deadline=None)
@given(cases(pipeline=False))
def test_any_assignment_simulates_within_the_bound(case):
    g, hw, a = case
    r = simulate(g, hw, a)
    assert r.throughput_per_s <= r.bound_throughput_per_s * (1 + 1e-12)
    assert r.cycles_per_inference >= max(r.chiplet_busy_cycles)


@settings(max_examples=60, deadline=None)
@given(cases(), st.integers(2, 8))
def test_more_link_bandwidth_never_lowers_throughput(case, factor):
    g, hw, a = case
    slow = simulate(g, hw, a)
    fast = simulate(g, hw.with_link_bandwidth(hw.link_bytes_per_cycle * factor), a)
    assert fast.throughput_per_s >= slow.throughput_per_s * (1 - 1e-12)


@settings(max_examples=20, deadline=None)
@given(cases())
def test_identical_inputs_give_identical_reports(case):
    g, hw, a = case
    assert simulate(g, hw, a, trace=True) == simulate(g, hw, a.copy(), trace=True)


def test_heterogeneous_ops_take_their_chiplets_time_and_the_bound_balances_the_kinds():
    fast = Chiplet(kind="vector", vector_ops_per_cycle=4 * VEC)
    hw = Hardware("het", (Chiplet(), fast), "chain", 1, 2)
    g = graph_of([400, 400], [(0, 1, 64)])         # 400 cycles on a default chiplet, 100 on the fast one
    r = simulate(g, hw, np.array([0, 1]))
    assert r.chiplet_busy_cycles == (400, 100)
    assert r.latency_cycles == 400 + 20 + 1 + 100
    assert r.cycles_per_inference == 400
    # Kinds balanced (model/kind_bound.py): a share s of the 800 cycles of work on the default chiplet (at 400 per
    # op) and the rest at 100 per op on the fast one: 400 s = 100 (2 - s) gives s = 0.4 and 160 cycles. Spreading
    # the fastest time over both chiplets gave (100 + 100) / 2 = 100, as if both were the fast kind.
    assert r.bound_cycles_per_inference == pytest.approx(160, rel=1e-6)
    assert r.bound_cycles_per_inference <= r.cycles_per_inference


def test_link_bottleneck_is_named():
    # 64,000 B per inference over one link at 64 B/cycle: the link is busy 1000 cycles, each chiplet 10.
    g = graph_of([10, 10], [(0, 1, 64_000)])
    r = simulate(g, mesh_of(2), np.array([0, 1]))
    assert r.bottleneck == "link 0->1" and r.bottleneck_chiplet == 0
    assert r.cycles_per_inference == 1000
    assert r.link_utilisation["0->1"] == 1.0


def test_a_trace_past_the_message_limit_records_a_shorter_stream_and_keeps_the_numbers(monkeypatch):
    import partitioner.sim.simulator as sim

    g = random_dag(25, 3)
    a = np.sort(np.random.default_rng(3).integers(0, 4, g.n_ops))
    full = simulate(g, mesh_of(4), a, trace=True)
    assert full.trace_inferences == full.inferences_simulated == 8
    plan = sim._plan(g, mesh_of(4), a, None, 1, None, None)
    n_ev = sim.trace_events_per_inference(plan)
    # an op event per op, a link event per hop of each message
    assert n_ev == g.n_ops + sum(len(r) for r in plan.msg_route) and len(plan.msg_route) > 0
    assert sum(e.inference == 0 for e in full.trace_events) == n_ev
    # room for 8 inferences' events out of a 16-inference stream
    monkeypatch.setattr(sim, "TRACE_EVENT_LIMIT", n_ev * 8)
    assert sim.trace_inferences(16, n_ev) == 8 and sim.trace_inferences(16, n_ev, batch=3) == 9
    # one inference past the limit: the trace keeps one batch
    assert sim.trace_inferences(16, n_ev * 9) == 1 and sim.trace_inferences(16, n_ev * 9, batch=4) == 4
    long_plain = simulate(g, mesh_of(4), a, inferences=16)
    long_traced = simulate(g, mesh_of(4), a, inferences=16, trace=True)
    assert long_traced.throughput_per_s == long_plain.throughput_per_s
    assert long_traced.latency_s == long_plain.latency_s
    assert long_traced.inferences_simulated == 16 and long_traced.trace_inferences == 8
    ops = [e for e in long_traced.trace_events if e.kind == "op"]
    assert len(ops) == g.n_ops * 8 and max(e.inference for e in ops) == 7
