"""Learned move selection: the move set and its features, the search loop's accounting, PPO, checkpoints."""
import numpy as np
import pytest
import torch

from partitioner.app.pipeline import evaluate
from partitioner.model.cost import op_cycles
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import mesh_of
from partitioner.model.partition import check
from partitioner.frontend.synthetic import random_dag
from policies.move_policy import (Learner, MoveNet, learned_search, load_move_policy, read_move_checkpoint,
                                  save_move_policy)
from policies.move_train import pretrain
from policies.moves import KIND_SLOTS, MOVE_DIM, context, move_set


def _chain():
    ops = [Op("A", "MatMul", ("a",), 4_000_000, 4_000_000, 1024, 1000, 1000),
           Op("B", "MatMul", ("b",), 2_000_000, 2_000_000, 1024, 1000, 3000),
           Op("C", "Add", ("c",), 50_000, 0, 0, 3000, 1000)]
    return TensorGraph.build("chain", ops, [(0, 1, 1000), (1, 2, 3000)], input_bytes=1000)


def test_move_set_lists_exactly_the_valid_neighbour_moves_with_hand_computed_features():
    g, hw = _chain(), mesh_of(3)
    a = np.array([0, 0, 1])
    ev = evaluate(g, hw, a)
    moves = move_set(context(g, hw), ev)
    got = sorted(zip(moves.ops.tolist(), moves.targets.tolist()))
    # A cannot go up (its consumer B sits on 0) nor below 0; B may go up to C's chiplet; C may go up or down.
    assert got == [(1, 1), (2, 0), (2, 2)]
    assert moves.features.shape == (3, MOVE_DIM)
    cyc = op_cycles(g, hw.chiplets[0]).astype(float)
    load = np.array([cyc[0] + cyc[1], cyc[2], 0.0])
    top = load.max()
    col = {name: KIND_SLOTS + i for i, name in enumerate(
        ["dir", "src", "dst", "busy_src", "busy_dst", "src_bott", "dst_bott", "op", "new_max", "new_dst", "cut",
         "mem", "first", "last", "chips"])}
    for k, (op, t) in enumerate(zip(moves.ops.tolist(), moves.targets.tolist())):
        f = moves.features[k]
        assert f[0] == 1.0 and f[1:KIND_SLOTS].sum() == 0          # kind "op"
        assert f[col["dir"]] == (1.0 if t > a[op] else -1.0)
        new = load.copy()
        new[a[op]] -= cyc[op]
        new[t] += cyc[op]
        assert f[col["new_max"]] == pytest.approx(new.max() / top - 1.0, rel=1e-5)
        assert f[col["new_dst"]] == pytest.approx(new[t] / top, rel=1e-5)
        assert f[col["op"]] == pytest.approx(cyc[op] / top, rel=1e-5)
    # Bytes cut: B -> 1 cuts A-B (1000) and joins B-C (3000); C -> 0 joins B-C; C -> 2 changes nothing.
    cut = {(o, t): moves.features[k, col["cut"]] * top * hw.link_bytes_per_cycle
           for k, (o, t) in enumerate(zip(moves.ops.tolist(), moves.targets.tolist()))}
    assert cut[(1, 1)] == pytest.approx(-2000, rel=1e-4)
    assert cut[(2, 0)] == pytest.approx(-3000, rel=1e-4)
    assert cut[(2, 2)] == pytest.approx(0, abs=1e-6)
    assert moves.features[:, col["src_bott"]].tolist() == [float(a[o] == ev.report.bottleneck_chiplet)
                                                           for o in moves.ops.tolist()]


def test_untrained_network_is_uniform_over_valid_moves():
    g, hw = random_dag(30, 1), mesh_of(4)
    net = MoveNet()
    moves = move_set(context(g, hw), evaluate(g, hw, np.repeat(np.arange(4), [8, 8, 7, 7])))
    with torch.no_grad():
        z = net.logits(net.embed(g, hw), moves.ops, moves.features)
    assert len(moves) > 3 and torch.all(z == z[0])


def test_learned_search_spends_exactly_its_budget_on_valid_partitions_and_is_reproducible():
    g, hw = random_dag(40, 3), mesh_of(6)
    seen = []

    def evaluate_fn(p):
        seen.append(np.asarray(p).copy())
        return evaluate(g, hw, p)

    res = learned_search(g, hw, budget=30, seed=5, evaluate_fn=evaluate_fn, net=MoveNet(), finetune=True)
    assert res.evaluations == 30 == len(seen) and res.method == "learned"
    assert all(check(g, hw, p) == [] for p in seen[2:])               # every move keeps the partition valid
    best = [b for _, b in res.history]
    assert best == sorted(best) and best[-1] == res.best.throughput
    again = learned_search(g, hw, budget=30, seed=5, evaluate_fn=lambda p: evaluate(g, hw, p), net=MoveNet(),
                           finetune=True)
    assert again.history == res.history


def test_ppo_update_raises_the_probability_of_rewarded_moves():
    torch.manual_seed(0)
    g, hw = random_dag(30, 2), mesh_of(4)
    net = MoveNet()
    moves = move_set(context(g, hw), evaluate(g, hw, np.repeat(np.arange(4), [8, 8, 7, 7])))
    good = np.flatnonzero(moves.features[:, KIND_SLOTS] > 0)          # every upward move earns +1, downward -1
    learner = Learner(net)
    n = len(moves)
    for i in range(net.cfg.update_every):
        k = i % n
        learner.record(moves.ops, moves.features, k, float(np.log(1 / n)), 1.0 if k in good else -1.0)
    with torch.no_grad():
        before = torch.softmax(net.logits(net.embed(g, hw), moves.ops, moves.features), 0)[good].sum()
    learner.update(g, hw)
    with torch.no_grad():
        after = torch.softmax(net.logits(net.embed(g, hw), moves.ops, moves.features), 0)[good].sum()
    assert 0 < len(good) < n and after > before


def test_checkpoint_round_trip_and_wrong_files_are_user_errors(tmp_path):
    net = MoveNet()
    with torch.no_grad():
        net.score[-1].bias.fill_(0.5)
    save_move_policy(tmp_path / "m.pt", net)
    assert torch.equal(load_move_policy(tmp_path / "m.pt").score[-1].bias, net.score[-1].bias)
    torch.save({"kind": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a move policy checkpoint"):
        read_move_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="does not exist"):
        read_move_checkpoint(tmp_path / "missing.pt")


def test_pretraining_resumes_from_its_checkpoint_and_respects_the_episode_count(tmp_path):
    corpus = [(f"g{i}", random_dag(25, i), mesh_of(4)) for i in range(2)]

    def factory(graph, hw):
        return lambda p: evaluate(graph, hw, p, time_limit_s=1.0)

    out = tmp_path / "mp.pt"
    first = pretrain(corpus, factory, out, episodes=2, episode_evals=10)
    assert first["episode"] == 2 and first["evals"] == 20
    (tmp_path / "mp.csv").write_text((tmp_path / "mp.csv").read_text() + "3,stale,30,1.0,1.0\n")
    second = pretrain(corpus, factory, out, episodes=3, episode_evals=10)
    assert second["episode"] == 3 and second["evals"] == 30
    rows = (tmp_path / "mp.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows] == ["episode", "1", "2", "3"] and "stale" not in rows[-1]
    assert read_move_checkpoint(out)["episode"] == 3
