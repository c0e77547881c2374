"""partition train's rollouts on the shared backend (partitioner/app/backend.py): the same run in this process, on a
local process pool and on Ray; failures crossing processes; bad --workers / --ray input."""
import csv
import pickle
import sys

import numpy as np
import pytest
import torch

from partitioner.app.backend import LocalPool, RayBackend, check_ray_address, make_backend
from partitioner.app.cli import main
from partitioner.app.pipeline import PipelineReward
from partitioner.core.errors import UserError
from partitioner.hw.hardware import Chiplet, mesh_of
from partitioner.frontend.synthetic import random_dag
from policies.rollout import reward_or_none, serial_map
from policies.checkpoints import load_policy
from policies.ppo import PPOConfig
from policies.train import finetune, pretrain

CORPUS = [(random_dag(14, 0), mesh_of(3)), (random_dag(18, 1), mesh_of(4)), (random_dag(10, 2), mesh_of(2))]
CFG = PPOConfig(total_steps=3, proposals_per_step=4, graphs_per_step=2, update_epochs=1, save_every=1,
                repair_time_limit_s=0.2)
REWARD = PipelineReward(CFG.repair_time_limit_s, 0)


def _curve(path) -> list[tuple]:
    """The learning curve without its wall-clock column: what must not depend on the backend."""
    with open(path, newline="") as fh:
        return [(r["step"], r["evals"], r["mean_reward"], r["max_reward"], r["best_throughput"], r["graph"])
                for r in csv.DictReader(fh)]


def _params(path) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in load_policy(path).parameters()])


def _same_run(a, b) -> None:
    assert _curve(a.with_suffix(".csv")) == _curve(b.with_suffix(".csv"))
    assert torch.equal(_params(a), _params(b))


def test_user_error_survives_pickling():
    err = pickle.loads(pickle.dumps(UserError("weights exceed SRAM", "use more chiplets")))
    assert (err.problem, err.fix) == ("weights exceed SRAM", "use more chiplets")


def test_reward_or_none_returns_the_failure_instead_of_raising():
    graph = random_dag(12, 0)
    tiny = mesh_of(2, Chiplet(sram_bytes=1024))     # no op's weights fit 1 KiB and there is no memory tier
    bad = reward_or_none(REWARD, graph, tiny, np.zeros(graph.n_ops, dtype=np.int64))
    assert isinstance(bad, UserError)
    thr, repaired = reward_or_none(REWARD, graph, mesh_of(3), np.zeros(graph.n_ops, dtype=np.int64))
    assert thr > 0 and repaired.dtype == np.int64 and repaired.shape == (graph.n_ops,)


@pytest.fixture(scope="module")
def pool():
    """One spawned 2-process pool for the module (starting one costs seconds on a busy machine)."""
    backend = make_backend(2, None)
    assert isinstance(backend, LocalPool) and backend.pool is not None
    yield backend
    backend.close()


def test_local_pool_map_keeps_order_and_failures(pool):
    graph, hw = CORPUS[0]
    tiny = mesh_of(2, Chiplet(sram_bytes=1024))
    rng = np.random.default_rng(0)
    items = [(REWARD, graph, tiny if k == 2 else hw, rng.integers(0, 3, graph.n_ops)) for k in range(5)]
    got = pool.map(reward_or_none, items)
    want = serial_map(reward_or_none, items)
    assert isinstance(got[2], UserError) and got[2].problem == want[2].problem
    for g, w in zip(got[:2] + got[3:], want[:2] + want[3:]):
        assert g[0] == w[0] and np.array_equal(g[1], w[1])


def test_pretrain_on_a_process_pool_is_the_serial_run(tmp_path, pool):
    """Same seed, same evaluations, same rewards in the same order, same weights; and a run resumed on the pool
    from the serial run's checkpoint ends where the straight serial run does."""
    pretrain(CORPUS, CFG, tmp_path / "serial.pt", reward_fn=REWARD, progress=False)
    short = PPOConfig(**{**CFG.__dict__, "total_steps": 2})
    pretrain(CORPUS, short, tmp_path / "resumed.pt", reward_fn=REWARD, progress=False)
    pretrain(CORPUS, CFG, tmp_path / "pool.pt", reward_fn=REWARD, progress=False, map_fn=pool.map)
    ck = pretrain(CORPUS, CFG, tmp_path / "resumed.pt", reward_fn=REWARD, progress=False, map_fn=pool.map)
    assert ck["step"] == 3 and ck["evals"] == 3 * 2 * 4 + 2 * 3   # rollouts + (DP, greedy) once per corpus item
    _same_run(tmp_path / "serial.pt", tmp_path / "pool.pt")
    _same_run(tmp_path / "serial.pt", tmp_path / "resumed.pt")


def test_finetune_through_a_map_matches_serial(tmp_path):
    graph, hw = CORPUS[1]
    cfg = PPOConfig(proposals_per_step=4, update_epochs=1)
    calls = []

    def counting_map(fn, items):
        calls.append(len(items))
        return serial_map(fn, items)

    a, thr = finetune(graph, hw, None, 10, cfg, tmp_path / "a", reward_fn=REWARD, progress=False)
    b, thr_b = finetune(graph, hw, None, 10, cfg, tmp_path / "b", reward_fn=REWARD, progress=False,
                        map_fn=counting_map)
    assert calls == [2, 4, 4] and thr == thr_b and np.array_equal(a, b)


def test_finetune_raises_the_workers_failure_when_nothing_repairs(tmp_path):
    graph = random_dag(12, 0)
    tiny = mesh_of(2, Chiplet(sram_bytes=1024))
    with pytest.raises(UserError) as exc:
        finetune(graph, tiny, None, 2, PPOConfig(), None, reward_fn=REWARD, progress=False)
    assert exc.value.problem   # the repair's own one-line reason, not a generic one


def test_train_cli_rejects_bad_workers_and_ray_values(tmp_path, capsys):
    base = ["train", "--corpus", str(tmp_path), "--synthetic", "1", "--out", str(tmp_path / "p.pt")]
    assert main(base + ["--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    assert main(base + ["--ray", "not-an-address"]) == 2
    assert "is not local, auto or HOST:PORT" in capsys.readouterr().err
    assert main(base + ["--ray", "127.0.0.1:1"]) == 2      # nothing listens on port 1: one line, no 3-minute hang
    err = capsys.readouterr().err
    assert "cannot reach Ray at '127.0.0.1:1'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.pt").exists()


def test_finetune_cli_checks_workers_and_ray_before_loading(tmp_path, capsys, monkeypatch):
    base = ["finetune", str(tmp_path / "absent.onnx"), "--chiplets", "4", "--budget", "4", "--out", str(tmp_path / "o")]
    assert main(base + ["--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(base + ["--ray", "local"]) == 2
    assert "pip install 'chiplet-partitioner[ray]'" in capsys.readouterr().err


def test_train_cli_without_ray_installed_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)      # `import ray` raises ImportError
    assert main(["train", "--corpus", str(tmp_path), "--synthetic", "1", "--out", str(tmp_path / "p.pt"),
                 "--ray", "local"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'chiplet-partitioner[ray]'" in err
    with pytest.raises(UserError, match="ray package, which is not installed"):
        RayBackend("local")


def test_empty_ray_address_is_refused():
    with pytest.raises(UserError, match="--ray is empty"):
        check_ray_address(" ")


@pytest.mark.slow
def test_pretrain_on_a_local_ray_instance_is_the_serial_run(tmp_path):
    """The Ray backend gives the serial run's evaluations, rewards and weights; a run resumed on Ray from a
    checkpoint ends where the straight run does."""
    pytest.importorskip("ray", reason="ray is not installed (pip install 'chiplet-partitioner[ray]')")
    pretrain(CORPUS, CFG, tmp_path / "serial.pt", reward_fn=REWARD, progress=False)
    short = PPOConfig(**{**CFG.__dict__, "total_steps": 2})
    backend = RayBackend("local", num_cpus=2)
    try:
        pretrain(CORPUS, CFG, tmp_path / "ray.pt", reward_fn=REWARD, progress=False, map_fn=backend.map)
        pretrain(CORPUS, short, tmp_path / "resumed.pt", reward_fn=REWARD, progress=False, map_fn=backend.map)
        ck = pretrain(CORPUS, CFG, tmp_path / "resumed.pt", reward_fn=REWARD, progress=False, map_fn=backend.map)
    finally:
        backend.close()
    assert ck["step"] == 3
    _same_run(tmp_path / "serial.pt", tmp_path / "ray.pt")
    _same_run(tmp_path / "serial.pt", tmp_path / "resumed.pt")


@pytest.mark.slow
def test_finetune_cli_on_two_workers_writes_the_serial_partition(tmp_path):
    """`partition finetune --workers 2` end to end: the same best partition and checkpoint as in-process."""
    import json
    from pathlib import Path

    model = str(Path(__file__).parent / "data" / "tiny_mlp.onnx")
    docs = []
    for workers in ("1", "2"):
        out = tmp_path / f"w{workers}"
        assert main(["finetune", model, "--chiplets", "4", "--budget", "10", "--seed", "3", "--time-limit", "0.5",
                     "--workers", workers, "--out", str(out)]) == 0
        docs.append(json.loads((out / "best_assignment.json").read_text()))
    assert docs[0] == docs[1] and docs[0]["evaluations"] == 10


@pytest.mark.slow
def test_sigkilled_train_on_ray_resumes_from_its_checkpoint(tmp_path):
    """A real kill -9 of `partition train --ray local` after its first checkpoint; the same command resumes on a
    fresh Ray instance; the killed instance's processes all end by themselves (its dashboard and runtime-env agents
    notice the raylet's death only after a minute or two)."""
    import os
    import signal
    import subprocess
    import time
    from pathlib import Path

    pytest.importorskip("ray", reason="ray is not installed (pip install 'chiplet-partitioner[ray]')")
    (tmp_path / "corpus").mkdir()
    ckpt = tmp_path / "p.pt"
    cmd = [sys.executable, "-m", "partitioner.app.cli", "train", "--corpus", str(tmp_path / "corpus"), "--synthetic",
           "4", "--chiplets", "4", "--seed", "0", "--ray", "local", "--workers", "2", "--out", str(ckpt)]
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(cmd + ["--steps", "200"], cwd=root, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not ckpt.exists():     # the first checkpoint: after 10 updates
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    step = int(torch.load(ckpt, weights_only=True)["step"])
    assert 10 <= step < 200

    done = subprocess.run(cmd + ["--steps", str(step + 2)], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"trained {step + 2} updates" in done.stdout
    assert [int(r[0]) for r in _curve(ckpt.with_suffix(".csv"))] == list(range(step + 2))

    def session() -> list[int]:      # processes still in the killed run's session
        out = subprocess.run(["ps", "-e", "-o", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
        return [int(p) for p, s in (line.split() for line in out if line.strip()) if int(s) == proc.pid]

    deadline = time.time() + 240
    while session() and time.time() < deadline:
        time.sleep(2)
    left = session()
    for pid in left:                 # end what this test started, one by one, before failing
        os.kill(pid, signal.SIGKILL)
    assert not left, f"{len(left)} processes of the killed Ray instance were still alive after 4 minutes"


def test_finetune_is_never_below_the_default_run(tmp_path):
    """`partition finetune` keeps the best of its policy's plan, the staged DP's split plans and the certificate's
    solves (run.keep_the_best), so it returns at least what `partition MODEL` returns on the same package and seed."""
    import json
    from pathlib import Path

    from partitioner.app.config import RunConfig
    from partitioner.app.run import run

    model = str(Path(__file__).parent / "data" / "tiny_attention.onnx")
    assert main(["finetune", model, "--chiplets", "8", "--budget", "6", "--seed", "2", "--time-limit", "0.5",
                 "--out", str(tmp_path / "ft")]) == 0
    tuned = json.loads((tmp_path / "ft" / "partition.json").read_text())["metrics"]["throughput_per_s"]
    default = run(RunConfig(model, chiplets=8, seed=2, out=str(tmp_path / "run"))).best.throughput
    assert tuned >= 0.999 * default


def test_finetune_refuses_to_resume_another_models_checkpoint(tmp_path):
    cfg = PPOConfig(proposals_per_step=4, update_epochs=1)
    (g0, hw0), (g1, hw1) = CORPUS[0], CORPUS[1]
    finetune(g0, hw0, None, 4, cfg, tmp_path / "ft", reward_fn=REWARD, progress=False)
    with pytest.raises(UserError, match="fine-tuning checkpoint of another problem"):
        finetune(g1, hw1, None, 4, cfg, tmp_path / "ft", reward_fn=REWARD, progress=False)
