"""repair(): every answer passes check(), is optimal against brute force on tiny cases, and is reproducible."""
import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.model.partition import check
from partitioner.frontend.synthetic import random_dag
from solver.infeasibility import check_feasible, stage_domains
from solver.repair import move_weights, repair

TYPES = ("MatMul", "Conv", "Add", "Softmax", "LayerNormalization")
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def instances(draw, max_ops=40, max_chiplets=8):
    n = draw(st.integers(1, max_ops))
    graph = random_dag(n, draw(st.integers(0, 10_000)), scale=draw(st.sampled_from([0.25, 1.0, 4.0])),
                       skip_prob=draw(st.sampled_from([0.0, 0.2, 0.5])))
    n_chip = draw(st.integers(1, max_chiplets))
    need = int((graph.weight_bytes + graph.work_bytes).sum())
    biggest = int((graph.weight_bytes + graph.work_bytes).max())
    tight = draw(st.sampled_from([0.8, 1.2, 2.0, 4.0]))   # total SRAM / total need: memory binds sometimes
    chips = []
    for _ in range(n_chip):
        share = draw(st.floats(0.5, 1.5))
        sram = max(int(need * tight * share / n_chip), int(biggest * draw(st.floats(0.95, 1.5))))
        unsupported = draw(st.sampled_from([()] * 5 + [("Softmax",), ("Conv", "Add")]))
        chips.append(Chiplet(sram_bytes=max(1, sram), unsupported_ops=unsupported))
    hw = Hardware("random", tuple(chips), "chain", 1, n_chip)
    proposal = np.array(draw(st.lists(st.integers(0, n_chip - 1), min_size=n, max_size=n)), dtype=np.int64)
    pins = {}
    for _ in range(draw(st.integers(0, 2))):
        pins[draw(st.integers(0, n - 1))] = draw(st.integers(0, n_chip - 1))
    return graph, hw, proposal, pins


def brute_force(graph, hw, proposal, pins):
    """Best kept weight over all valid assignments, or None when there is none."""
    weights = move_weights(graph, hw)
    best = None
    for a in itertools.product(range(hw.n_chiplets), repeat=graph.n_ops):
        a = np.array(a)
        if np.any(a[graph.edge_src] > a[graph.edge_dst]) or check(graph, hw, a, pins):
            continue
        kept = int(weights[a == proposal].sum())
        best = kept if best is None else max(best, kept)
    return best


@FAST
@given(instances())
def test_repair_output_is_valid_or_infeasible_is_explained(inst):
    graph, hw, proposal, pins = inst
    try:
        part = repair(graph, hw, proposal, pinned=pins, time_limit_s=2.0)
    except UserError as err:
        assert err.problem and err.fix
        return
    assert check(graph, hw, part.assignment, pins) == []
    assert part.ops_moved == int(np.count_nonzero(part.assignment != proposal))
    assert part.status in ("unchanged", "optimal", "feasible")
    for op, chiplet in pins.items():
        assert part.assignment[op] == chiplet


@FAST
@given(instances(max_ops=6, max_chiplets=3))
def test_repair_matches_brute_force_on_tiny_cases(inst):
    graph, hw, proposal, pins = inst
    best = brute_force(graph, hw, proposal, pins)
    try:
        part = repair(graph, hw, proposal, pinned=pins, time_limit_s=5.0)
    except UserError:
        assert best is None
        return
    assert best is not None
    weights = move_weights(graph, hw)
    assert part.status in ("unchanged", "optimal")
    assert int(weights[part.assignment == proposal].sum()) == best


@FAST
@given(instances(max_ops=30))
def test_valid_proposal_comes_back_unchanged(inst):
    graph, hw, _, _ = inst
    proposal = np.zeros(graph.n_ops, dtype=np.int64)   # one chiplet: valid when it fits and runs every op
    if check(graph, hw, proposal):
        return
    part = repair(graph, hw, proposal)
    assert part.status == "unchanged" and part.ops_moved == 0
    assert np.array_equal(part.assignment, proposal)


def test_repair_is_deterministic_for_a_seed():
    graph = random_dag(120, 3, scale=40.0)
    hw = mesh_of(8, Chiplet(sram_bytes=int(graph.total_weight_bytes / 5)))
    proposal = np.random.default_rng(0).integers(0, 8, graph.n_ops)
    first = repair(graph, hw, proposal, seed=7, time_limit_s=2.0)
    second = repair(graph, hw, proposal, seed=7, time_limit_s=2.0)
    assert np.array_equal(first.assignment, second.assignment)
    assert first.status == second.status
    assert check(graph, hw, first.assignment) == []


def test_memory_bound_case_uses_cp_sat_and_stays_valid():
    graph = random_dag(60, 5, scale=40.0)
    hw = mesh_of(4, Chiplet(sram_bytes=int(graph.total_weight_bytes / 3)))
    proposal = np.random.default_rng(1).integers(0, 4, graph.n_ops)
    part = repair(graph, hw, proposal, time_limit_s=5.0, balance_time_s=0.2)
    assert check(graph, hw, part.assignment) == []
    assert part.info["kept_weight"] <= part.info["kept_weight_bound"]


def test_sorted_proposal_with_one_backward_edge_moves_one_op():
    graph = random_dag(30, 1, skip_prob=0.0)
    hw = mesh_of(4)
    proposal = np.minimum(np.arange(30) // 8, 3)
    proposal[20] = 0   # an op dropped back to chiplet 0 in the middle of chiplet 2's run
    part = repair(graph, hw, proposal)
    assert part.ops_moved == 1 and part.status == "optimal"
    assert check(graph, hw, part.assignment) == []


# --- infeasibility messages ----------------------------------------------------------------------------------------
def tiny(weights, works=None, types=None):
    n = len(weights)
    ops = [Op(f"op{i}", (types or ["MatMul"] * n)[i], (f"n{i}",), 10, 0, weights[i], 0, (works or [0] * n)[i])
           for i in range(n)]
    return TensorGraph.build("tiny", ops, [(i, i + 1, 1) for i in range(n - 1)])


def chain_hw(n, sram, unsupported=()):
    return Hardware("t", tuple(Chiplet(sram_bytes=sram, unsupported_ops=unsupported) for _ in range(n)),
                    "chain", 1, n)


def test_total_weights_exceed_total_sram():
    graph = tiny([600, 600, 600])
    with pytest.raises(UserError, match=r"needs at least 1800 bytes .* 2 chiplets have 1600 bytes"):
        repair(graph, chain_hw(2, 800), np.array([1, 0, 0]))


def test_op_too_big_for_any_chiplet_is_named():
    graph = tiny([100, 5000, 100], works=[0, 10, 0])
    with pytest.raises(UserError, match=r"op op1 needs 5010 bytes .* largest chiplet it can use has 4096"):
        repair(graph, chain_hw(4, 4096), np.array([1, 0, 0]))


def test_contradictory_pins_name_both_ops_and_chiplets():
    graph = tiny([1, 1, 1, 1])
    with pytest.raises(UserError, match=r"op op0 is pinned to chiplet 2 but op op3, .* pinned to chiplet 1"):
        repair(graph, chain_hw(3, 100), np.array([0, 0, 0, 0]), pinned={0: 2, 3: 1})


def test_op_type_no_chiplet_can_run():
    graph = tiny([1, 1], types=["MatMul", "Softmax"])
    with pytest.raises(UserError, match="op op1 has type Softmax, which no chiplet can run"):
        check_feasible(graph, chain_hw(2, 100, ("Softmax",)))


def test_pin_to_chiplet_that_cannot_run_the_op():
    graph = tiny([1, 1], types=["MatMul", "Softmax"])
    hw = Hardware("t", (Chiplet(sram_bytes=100), Chiplet(sram_bytes=100, unsupported_ops=("Softmax",))),
                  "chain", 1, 2)
    with pytest.raises(UserError, match="pinned to chiplet 1, which cannot run Softmax"):
        repair(graph, hw, np.array([1, 0]), pinned={1: 1})


def test_memory_and_order_together_infeasible_after_solving():
    # Each op fits a chiplet and the total fits, but order forces op0 and op2 (the big ones) apart with op1's
    # working set: chiplet 0 can take op0 only, chiplet 1 then needs op1 + op2 = too much.
    graph = tiny([60, 30, 60], works=[0, 11, 0])
    hw = chain_hw(2, 100)
    with pytest.raises(UserError, match="no partition fits memory and pipeline order together"):
        repair(graph, hw, np.array([1, 0, 0]))


def test_stage_domains_follow_pins_and_order():
    graph = tiny([1] * 5)
    dom = stage_domains(graph, chain_hw(4, 100), {1: 1, 3: 2})
    assert dom.lo.tolist() == [0, 1, 1, 2, 2]
    assert dom.hi.tolist() == [1, 1, 2, 2, 3]


def test_pins_by_name_and_bad_pins():
    graph = tiny([1, 1, 1])
    part = repair(graph, chain_hw(3, 100), np.array([2, 0, 0]), pinned={"op2": 1})
    assert part.assignment[2] == 1 and check(graph, chain_hw(3, 100), part.assignment, {2: 1}) == []
    with pytest.raises(UserError, match="outside 0..2"):
        repair(graph, chain_hw(3, 100), np.array([2, 0, 0]), pinned={0: 5})
    with pytest.raises(UserError, match="not in graph"):
        repair(graph, chain_hw(3, 100), np.array([2, 0, 0]), pinned={"nope": 0})
