import numpy as np
import pytest
import torch

from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.frontend.synthetic import random_dag
from policies.features import (CHIP_DIM, EDGE_DIM, GLOBAL_DIM, N_TYPES, NODE_DIM, clear_cache, graph_features,
                               op_type_index)

torch.set_num_threads(1)


@pytest.mark.parametrize("n_ops,seed,n_chip", [(12, 0, 3), (1, 0, 2), (60, 3, 36), (30, 1, 4)])
def test_fixed_width_for_any_graph_and_package(n_ops, seed, n_chip):
    g = random_dag(n_ops, seed)
    data = graph_features(g, mesh_of(n_chip), cache=False)
    assert data.x.shape == (n_ops, NODE_DIM)
    assert data.edge_attr.shape == (2 * g.n_edges, EDGE_DIM)
    assert data.edge_index.shape == (2, 2 * g.n_edges)
    assert data.u.shape == (1, GLOBAL_DIM)
    assert data.chip_x.shape == (n_chip, CHIP_DIM)
    assert data.prior.shape == (n_ops,)
    assert int(data.n_chiplets) == n_chip
    for t in (data.x, data.edge_attr, data.u, data.chip_x, data.prior):
        assert torch.isfinite(t).all()
    assert ((data.prior > 0) & (data.prior < 1)).all()


def test_edges_in_both_directions_with_direction_flag():
    g = random_dag(12, 0)
    data = graph_features(g, mesh_of(3), cache=False)
    e = g.n_edges
    fwd, bwd = data.edge_index[:, :e], data.edge_index[:, e:]
    assert torch.equal(fwd, bwd.flip(0))
    assert torch.equal(fwd[0], torch.as_tensor(g.edge_src.copy()))
    assert (data.edge_attr[:e, 2] == 1).all() and (data.edge_attr[e:, 2] == 0).all()
    assert torch.equal(data.edge_attr[:e, :2], data.edge_attr[e:, :2])


def test_one_hot_op_types_and_fused_names():
    assert op_type_index("MatMul") == op_type_index("MatMul+Add") == op_type_index("matmul_gelu")
    assert op_type_index("SomethingNew") == N_TYPES - 1
    g = random_dag(12, 0)
    data = graph_features(g, mesh_of(3), cache=False)
    assert torch.equal(data.x[:, :N_TYPES].sum(dim=1), torch.ones(12))


def test_prior_is_monotone_stage_centre():
    g = random_dag(40, 2)
    data = graph_features(g, mesh_of(4), cache=False)
    prior = data.prior.numpy()
    assert np.all(np.diff(prior) >= 0)                  # the DP split is contiguous in topological order
    assert set(np.round(prior * 4 - 0.5).astype(int)) <= set(range(4))


def test_cache_returns_same_object_per_graph_and_hardware():
    clear_cache()
    g = random_dag(12, 0)
    a = graph_features(g, mesh_of(3))
    assert graph_features(g, mesh_of(3)) is a            # equal Hardware hits the cache
    assert graph_features(g, mesh_of(4)) is not a
    assert graph_features(random_dag(12, 0), mesh_of(3)) is not a   # a different graph object misses


def test_sram_ratio_feature_tracks_package():
    g = random_dag(20, 0)
    small = mesh_of(4, Chiplet(sram_bytes=1 << 20))
    big = mesh_of(4, Chiplet(sram_bytes=1 << 26))
    u_small = float(graph_features(g, small, cache=False).u[0, 3])
    u_big = float(graph_features(g, big, cache=False).u[0, 3])
    assert u_small == pytest.approx(64 * u_big, rel=1e-4)


def test_heterogeneous_chip_features():
    chips = (Chiplet(),) * 3 + (Chiplet(macs_per_cycle=8192),)
    hw = Hardware("het", chips, "mesh", 2, 2)
    cx = graph_features(random_dag(12, 0), hw, cache=False).chip_x
    assert cx[3, 1] > cx[0, 1] and torch.allclose(cx[:3], cx[:1].expand(3, -1))


def test_with_anchor_recentres_without_touching_the_rest():
    from policies.features import ANCHOR_DIM, with_anchor

    g = random_dag(12, 0)
    data = graph_features(g, mesh_of(3), cache=False)
    x_before = data.x.clone()
    a = np.array([0, 0, 1, 1, 1, 2, 1, 2, 2, 2, 2, 2])
    moved = with_anchor(data, a)
    assert torch.equal(data.x, x_before)                                   # the cached original is untouched
    assert moved.x.shape == data.x.shape
    assert torch.equal(moved.x[:, :-ANCHOR_DIM], data.x[:, :-ANCHOR_DIM])
    assert torch.allclose(moved.prior, torch.tensor((a + 0.5) / 3, dtype=torch.float32))
    cols = moved.x[:, -ANCHOR_DIM:]
    assert cols[:, 1].tolist() == [1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0]     # first of each run
    assert cols[:, 2].tolist() == [0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1]     # last of each run


def test_anchor_load_columns_by_hand():
    from policies.features import _anchor_columns

    # 4 ops, cycles 10, 30, 20, 40 on every one of 3 chiplets; assignment 0,0,1,2 -> loads 40, 20, 40
    cycles = np.tile(np.array([[10.0], [30.0], [20.0], [40.0]]), (1, 3))
    cols = _anchor_columns(np.array([0, 0, 1, 2]), cycles)
    own, prev, nxt, busiest, share = cols[:, 4], cols[:, 5], cols[:, 6], cols[:, 7], cols[:, 8]
    assert own.tolist() == [1.0, 1.0, 0.5, 1.0]
    assert prev.tolist() == [1.0, 1.0, 1.0, 0.5]          # nothing before chiplet 0: no room (1)
    assert nxt.tolist() == [0.5, 0.5, 1.0, 1.0]           # nothing after chiplet 2: no room (1)
    assert busiest.tolist() == [1, 1, 0, 1]
    assert share.tolist() == [0.25, 0.75, 1.0, 1.0]
