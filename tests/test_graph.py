import numpy as np
import pytest

from partitioner.core.graph import Op, TensorGraph
from partitioner.frontend.synthetic import random_dag


def _op(i, flops=10, mflops=0, w=0, inb=0, outb=4):
    return Op(f"op{i}", "MatMul" if mflops else "Add", (f"n{i}",), flops, mflops, w, inb, outb)


def diamond():
    # 0 -> 1 -> 3, 0 -> 2 -> 3
    ops = [_op(0, 100, 100, 64, 8, 16), _op(1, 10), _op(2, 20), _op(3, 30, 0, 0, 8, 4)]
    return TensorGraph.build("diamond", ops, [(0, 1, 16), (0, 2, 16), (1, 3, 4), (2, 3, 4)])


def test_arrays_follow_ops():
    g = diamond()
    assert g.flops.tolist() == [100, 10, 20, 30]
    assert g.matrix_flops.tolist() == [100, 0, 0, 0]
    assert g.vector_flops.tolist() == [0, 10, 20, 30]
    assert g.work_bytes.tolist() == [24, 4, 4, 12]
    assert g.total_flops == 160 and g.total_weight_bytes == 64


def test_depth_is_longest_path():
    g = TensorGraph.build("g", [_op(i) for i in range(4)], [(0, 1, 1), (1, 2, 1), (0, 3, 1), (2, 3, 1)])
    assert g.depth.tolist() == [0, 1, 2, 3]


def test_networkx_view_and_owner():
    g = diamond()
    assert sorted(g.nx.edges(data="bytes")) == [(0, 1, 16), (0, 2, 16), (1, 3, 4), (2, 3, 4)]
    assert g.onnx_node_owner() == {"n0": 0, "n1": 1, "n2": 2, "n3": 3}
    assert g.op_index("op2") == 2


@pytest.mark.parametrize("edges, message", [
    ([(1, 0, 4)], "forward"),
    ([(0, 1, 4), (0, 1, 4)], "duplicate"),
    ([(0, 5, 4)], "range"),
    ([(0, 1, -1)], ">= 0"),
])
def test_bad_edges_rejected(edges, message):
    with pytest.raises(ValueError, match=message):
        TensorGraph.build("bad", [_op(0), _op(1)], edges)


def test_arrays_are_read_only():
    g = diamond()
    with pytest.raises(ValueError):
        g.flops[0] = 1
    with pytest.raises(ValueError):
        g.edge_src[0] = 1


def test_op_validation():
    with pytest.raises(ValueError, match="matrix_flops"):
        Op("x", "MatMul", ("x",), 10, 20)
    with pytest.raises(ValueError, match="flops"):
        Op("x", "Add", ("x",), -1)


def test_random_dag_is_connected_and_deterministic():
    a, b = random_dag(60, 7), random_dag(60, 7)
    assert a.n_ops == 60
    assert np.array_equal(a.edge_src, b.edge_src) and np.array_equal(a.edge_bytes, b.edge_bytes)
    import networkx as nx
    assert nx.is_weakly_connected(a.nx)
    assert random_dag(60, 8).edge_src.tolist() != a.edge_src.tolist()
