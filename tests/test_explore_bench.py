"""benchmarks/explore_bench.py: the exact hypervolume on hand-computed fronts."""
import pytest

from benchmarks.explore_bench import hypervolume


def test_hypervolume_hand_computed():
    assert hypervolume([(0.0, 0.0, 0.0)], (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    # two 2-D points (0,1), (1,0) under ref (2,2): 2x1 + 1x2 - 1x1 overlap = 3
    assert hypervolume([(0.0, 1.0), (1.0, 0.0)], (2.0, 2.0)) == pytest.approx(3.0)
    # 3-D: (0,0,1) and (1,1,0) under (2,2,2): 4 + 2 - overlap (1x1x1) = 5; a dominated point adds nothing
    assert hypervolume([(0, 0, 1), (1, 1, 0), (1, 1, 1)], (2, 2, 2)) == pytest.approx(5.0)
    assert hypervolume([(3, 0, 0)], (2, 2, 2)) == 0.0


def test_hypervolume_at_the_fixed_reference_hand_computed():
    from benchmarks.explore_bench import HV_REFERENCE, hv_curve, hv_point

    assert HV_REFERENCE == (0.0, 3.0, 4.0)   # 1 inference/s, 1 kW, $10,000
    one = {"throughput_per_s": 10.0, "power_w": 10.0, "cost_usd": 100.0}
    assert hv_point(one) == pytest.approx((-1.0, 1.0, 2.0))
    # (0 - -1) x (3 - 1) x (4 - 2) = 4; a design that does not fit (None) adds nothing; one beyond $10,000 neither
    dear = {"throughput_per_s": 1e6, "power_w": 1.0, "cost_usd": 2e4}
    assert hv_curve([None, one, dear]) == pytest.approx([0.0, 4.0, 4.0])
