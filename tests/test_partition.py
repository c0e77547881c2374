"""check() and memory_use() on tiny hand-built graphs: every violation message, and valid cases."""
import numpy as np
import pytest

from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware
from partitioner.model.partition import Partition, check, memory_use

KIB = 1024


def chain(n=3, weight=10 * KIB, work_in=1 * KIB, work_out=1 * KIB, types=None):
    ops = [Op(f"op{i}", (types or ["MatMul"] * n)[i], (f"n{i}",), 100, 0, weight, work_in, work_out)
           for i in range(n)]
    return TensorGraph.build("chain", ops, [(i, i + 1, work_out) for i in range(n - 1)])


def package(n=2, sram=64 * KIB, unsupported=()):
    chips = tuple(Chiplet(sram_bytes=sram, unsupported_ops=tuple(unsupported[i]) if i < len(unsupported) else ())
                  for i in range(n))
    return Hardware("t", chips, "chain", 1, n)


def test_valid_partitions_have_no_problems():
    g, hw = chain(), package()
    for a in ([0, 0, 0], [0, 0, 1], [0, 1, 1], [1, 1, 1]):
        assert check(g, hw, np.array(a)) == []


def test_memory_is_weights_plus_largest_working_set():
    ops = [Op("a", "MatMul", ("a",), 1, 0, 100, 5, 7), Op("b", "Add", ("b",), 1, 0, 0, 30, 1),
           Op("c", "MatMul", ("c",), 1, 0, 50, 2, 2)]
    g = TensorGraph.build("g", ops, [(0, 1, 7), (1, 2, 1)])
    hw = package(2, sram=1000)
    assert memory_use(g, hw, np.array([0, 0, 0])).tolist() == [150 + 31, 0]
    assert memory_use(g, hw, np.array([0, 0, 1])).tolist() == [100 + 31, 50 + 4]


def test_memory_violation_names_chiplet_and_bytes():
    g = chain(3, weight=32 * KIB)
    hw = package(2, sram=64 * KIB)
    problems = check(g, hw, np.array([0, 0, 1]))
    assert problems == [f"chiplet 0 needs {64 * KIB + 2 * KIB} bytes (weights + peak activations) but has {64 * KIB}"]


def test_memory_exactly_full_is_valid():
    g = chain(2, weight=31 * KIB)
    hw = package(1, sram=62 * KIB + 2 * KIB)
    assert check(g, hw, np.array([0, 0])) == []


def test_backward_edge_names_both_ops_and_chiplets():
    g, hw = chain(), package()
    assert check(g, hw, np.array([1, 0, 1])) == ["edge op0 -> op1 goes backwards (chiplet 1 -> 0)"]


def test_pinned_op_elsewhere():
    g, hw = chain(), package()
    assert check(g, hw, np.array([0, 0, 0]), {2: 1}) == ["op op2 is pinned to chiplet 1 but sits on 0"]
    assert check(g, hw, np.array([0, 0, 1]), {2: 1}) == []


def test_unsupported_op_type():
    g = chain(types=["MatMul", "Softmax", "MatMul"])
    hw = package(2, unsupported=[("Softmax",), ()])
    assert check(g, hw, np.array([0, 0, 1])) == ["op op1 (Softmax) is on chiplet 0, which cannot run it"]
    assert check(g, hw, np.array([0, 1, 1])) == []


def test_wrong_shape_and_out_of_range():
    g, hw = chain(), package()
    assert check(g, hw, np.array([0, 0])) == ["assignment has shape (2,), expected (3,)"]
    assert check(g, hw, np.array([0, 2, 1])) == ["op op1 is on chiplet 2, outside 0..1"]
    assert check(g, hw, np.array([0, -1, 1])) == ["op op1 is on chiplet -1, outside 0..1"]


def test_several_violations_are_all_reported():
    g = chain(3, weight=40 * KIB, types=["MatMul", "Softmax", "MatMul"])
    hw = package(2, sram=64 * KIB, unsupported=[(), ("Softmax",)])
    problems = check(g, hw, np.array([1, 0, 0]), {0: 0})
    assert len(problems) == 3   # chiplet 0 memory, backward edge, pin (the Softmax on 0 is fine)
    assert problems[0].startswith("chiplet 0 needs")
    assert "goes backwards" in problems[1]
    assert "pinned" in problems[2]


def test_partition_freezes_its_assignment():
    p = Partition(np.array([0, 1, 1]))
    assert p.assignment.dtype == np.int64
    with pytest.raises(ValueError):
        p.assignment[0] = 1


@pytest.mark.parametrize("bad", [np.array([0.5, 0.5, 1.2, 1.9]), np.array([False, False, True, True])])
def test_check_rejects_non_integer_assignments(bad):
    from partitioner.hw.hardware import mesh_of
    from partitioner.frontend.synthetic import random_dag
    assert "dtype" in check(random_dag(4, 0), mesh_of(2), bad)[0]
