"""The kinds-balanced bound (partitioner/model/kind_bound.py): hand-computed LPs, and never above a simulation."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partitioner.frontend.synthetic import random_dag
from partitioner.hw.hardware import Chiplet, Hardware
from partitioner.model.cost import bound_cycles_per_inference, sharded_bound_cycles
from partitioner.model.kind_bound import balanced_cycles
from partitioner.plan.splits import dp_partition
from partitioner.plan.staged_dp import staged_candidates
from partitioner.sim.simulator import simulate


def test_one_kind_is_total_work_over_chiplets():
    assert balanced_cycles(np.array([[10.0], [30.0], [20.0]]), np.array([4])) == 15.0


def test_a_fast_kind_takes_the_share_that_balances_both():
    # 4 ops of 10 cycles on the one fast chiplet or 100 on each of 3 slow ones: the fast chiplet does a share x of
    # the 4 ops, 40 x = 400 (1 - x) / 3, so x = 10 / 13 and T = 400 / 13 = 30.77 cycles (spreading the fast time
    # over all 4 chiplets would claim 40 / 4 = 10).
    work = np.array([[10.0, 100.0]] * 4)
    assert balanced_cycles(work, np.array([1, 3])) == pytest.approx(400 / 13, rel=1e-6)


def test_an_op_a_kind_cannot_run_goes_to_the_others():
    work = np.array([[10.0, np.inf], [10.0, 10.0]])
    # op 0 only on kind 0; op 1 split: 10 + 10 a = 10 (1 - a) has no a >= 0 below it, so a = 0 and T = 10
    assert balanced_cycles(work, np.array([1, 1])) == pytest.approx(10, rel=1e-6)


def _hetero(n_fast: int, n_slow: int) -> Hardware:
    fast = Chiplet(kind="big", macs_per_cycle=8192, vector_ops_per_cycle=1024)
    slow = Chiplet(kind="small", macs_per_cycle=1024, vector_ops_per_cycle=256, sram_bytes=64 << 20)
    chips = tuple(fast if i % (n_slow // n_fast + 1) == 0 else slow for i in range(n_fast + n_slow))
    return Hardware("het", chips, "mesh", 2, (n_fast + n_slow) // 2)


@settings(max_examples=12, deadline=None)
@given(n_ops=st.integers(8, 40), seed=st.integers(0, 10_000))
def test_the_bound_is_never_above_a_simulated_plan(n_ops, seed):
    g = random_dag(n_ops, seed)
    hw = _hetero(2, 6)
    whole = simulate(g, hw, dp_partition(g, hw))
    assert bound_cycles_per_inference(g, hw) <= whole.cycles_per_inference
    bound = sharded_bound_cycles(g, hw, 4)
    assert bound <= bound_cycles_per_inference(g, hw) + 1e-6
    for a, shard in staged_candidates(g, hw, 4)[:3]:
        from partitioner.model.partition import Partition

        rep = simulate(g, hw, Partition(a, None, 0, "staged", shard=shard))
        assert bound <= rep.cycles_per_inference


def test_on_a_heterogeneous_package_the_bound_stays_under_the_mac_ceiling():
    """A matrix-only graph: no plan beats all MACs busy, so neither may the bound (it did when every op's fastest
    time was spread over every chiplet)."""
    from partitioner.core.graph import Op, TensorGraph

    ops = [Op(f"mm{i}", "MatMul", (f"mm{i}",), flops=2 * 512 ** 3, matrix_flops=2 * 512 ** 3,
              weight_bytes=512 * 512 * 2, in_bytes=512 * 512 * 2, out_bytes=512 * 512 * 2,
              gemms=((1, 512, 512, 512),)) for i in range(8)]
    g = TensorGraph.build("mm", ops, [(i, i + 1, 512 * 512 * 2) for i in range(7)])
    hw = _hetero(2, 6)
    macs = sum(c.macs_per_cycle for c in hw.chiplets)
    ceiling_cycles = 8 * 512 ** 3 / macs
    assert sharded_bound_cycles(g, hw, 4) >= ceiling_cycles * (1 - 1e-6)
