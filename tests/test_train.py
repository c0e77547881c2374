import csv
import os

import numpy as np
import pytest
import torch

from partitioner.core.errors import UserError
from partitioner.hw.hardware import mesh_of
from partitioner.frontend.synthetic import random_dag
from policies import checkpoints
from policies.features import graph_features
from policies.gnn import PolicyNet, sample
from policies.checkpoints import atomic_torch_save, load_policy, read_checkpoint
from policies.ppo import PPOConfig, bottleneck_reward
from policies.train import finetune, pretrain

torch.set_num_threads(1)
GRAPH = random_dag(12, 0)
HW = mesh_of(3)
FAST = PPOConfig(lr=3e-3, total_steps=8, proposals_per_step=8, update_epochs=2, save_every=2)


def _mean_reward(net: PolicyNet, k: int = 128) -> float:
    with torch.no_grad():
        props = sample(net(graph_features(GRAPH, HW)), k, torch.Generator().manual_seed(123))
    return float(np.mean([bottleneck_reward(GRAPH, HW, p.numpy())[0] for p in props]))


def _params(net: PolicyNet) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in net.parameters()])


def _steps(path) -> list[int]:
    with open(path, newline="") as fh:
        return [int(r["step"]) for r in csv.DictReader(fh)]


def test_short_training_raises_mean_reward(tmp_path):
    cfg = PPOConfig(lr=3e-3, total_steps=25, proposals_per_step=16, update_epochs=4)
    torch.manual_seed(cfg.seed)
    before = _mean_reward(PolicyNet(cfg.policy))
    pretrain([(GRAPH, HW)], cfg, tmp_path / "p.pt", reward_fn=bottleneck_reward, progress=False)
    after = _mean_reward(load_policy(tmp_path / "p.pt"))
    assert after > before * 1.03


def test_resume_continues_from_checkpoint_and_matches_straight_run(tmp_path):
    corpus = [(GRAPH, HW), (random_dag(20, 1), mesh_of(4))]
    pretrain(corpus, FAST, tmp_path / "straight.pt", reward_fn=bottleneck_reward, progress=False)

    short = PPOConfig(**{**FAST.__dict__, "total_steps": 4})
    ck = pretrain(corpus, short, tmp_path / "resumed.pt", reward_fn=bottleneck_reward, progress=False)
    assert ck["step"] == 4
    ck = pretrain(corpus, FAST, tmp_path / "resumed.pt", reward_fn=bottleneck_reward, progress=False)
    assert ck["step"] == 8
    assert torch.equal(_params(load_policy(tmp_path / "straight.pt")), _params(load_policy(tmp_path / "resumed.pt")))
    assert _steps(tmp_path / "resumed.csv") == list(range(8))


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    calls = {"n": 0}

    def dying_reward(graph, hw, a):
        calls["n"] += 1
        if calls["n"] == 45:                     # mid step 5 (1 baseline eval + 8 per step)
            raise KeyboardInterrupt
        return bottleneck_reward(graph, hw, a)

    with pytest.raises(KeyboardInterrupt):
        pretrain([(GRAPH, HW)], FAST, tmp_path / "k.pt", reward_fn=dying_reward, progress=False)
    assert read_checkpoint(tmp_path / "k.pt")["step"] == 4          # save_every=2: last save after step 4
    ck = pretrain([(GRAPH, HW)], FAST, tmp_path / "k.pt", reward_fn=bottleneck_reward, progress=False)
    assert ck["step"] == 8 and _steps(tmp_path / "k.csv") == list(range(8))
    pretrain([(GRAPH, HW)], FAST, tmp_path / "s.pt", reward_fn=bottleneck_reward, progress=False)
    assert torch.equal(_params(load_policy(tmp_path / "k.pt")), _params(load_policy(tmp_path / "s.pt")))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    atomic_torch_save({"v": 1}, path)
    before = path.read_bytes()

    def broken_save(obj, fh):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_torch_save({"v": 2}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.pt"]


def test_finetune_tracks_best_and_resumes(tmp_path):
    pretrain([(GRAPH, HW)], FAST, tmp_path / "p.pt", reward_fn=bottleneck_reward, progress=False)
    seen = []
    cfg = PPOConfig(lr=3e-3, proposals_per_step=8, update_epochs=2)
    a, thr = finetune(GRAPH, HW, tmp_path / "p.pt", 17, cfg, tmp_path / "ft", reward_fn=bottleneck_reward,
                      on_eval=lambda n, best: seen.append((n, best)), progress=False)
    assert [n for n, _ in seen] == list(range(1, 18))
    assert thr == pytest.approx(max(b for _, b in seen))
    assert thr == pytest.approx(bottleneck_reward(GRAPH, HW, a)[0])
    assert a.shape == (12,) and a.min() >= 0 and a.max() < 3
    assert read_checkpoint(tmp_path / "ft" / "finetune.pt")["evals"] == 17
    # more budget on the same out_dir continues from 17 evaluations
    seen.clear()
    a2, thr2 = finetune(GRAPH, HW, tmp_path / "p.pt", 25, cfg, tmp_path / "ft", reward_fn=bottleneck_reward,
                        on_eval=lambda n, best: seen.append((n, best)), progress=False)
    assert [n for n, _ in seen] == list(range(18, 26)) and thr2 >= thr
    assert (tmp_path / "ft" / "curve.csv").exists() and (tmp_path / "ft" / "best_assignment.json").exists()


def test_zero_shot_and_from_scratch(tmp_path):
    cfg = PPOConfig(proposals_per_step=4, update_epochs=0)
    a, thr = finetune(GRAPH, HW, None, 9, cfg, None, reward_fn=bottleneck_reward, progress=False)
    assert thr > 0 and a.shape == (12,)


def test_bad_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        load_policy(tmp_path / "missing.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(UserError):
        load_policy(tmp_path / "other.pt")


def test_rl_search_spends_the_budget_through_evaluate_fn(tmp_path):
    from partitioner.model.partition import check
    from partitioner.app.pipeline import evaluate
    from policies.rl_search import rl_search

    pretrain([(GRAPH, HW)], FAST, tmp_path / "p.pt", reward_fn=bottleneck_reward, progress=False)
    calls = []

    def evaluate_fn(p):
        calls.append(p)
        return evaluate(GRAPH, HW, p, time_limit_s=1.0, seed=0)

    res = rl_search(GRAPH, HW, budget=12, seed=0, evaluate_fn=evaluate_fn, policy_path=tmp_path / "p.pt")
    assert res.method == "rl" and res.evaluations == 12 == len(calls)
    assert res.best.throughput == pytest.approx(max(b for _, b in res.history))
    assert not check(GRAPH, HW, res.best.assignment)
