"""Pre-training the move policy (policies.move_policy) across a corpus: resumable and time-bounded.

Each episode draws a (graph, package) from the corpus with the run's RNG and runs `learned_search` on it for
`episode_evals` evaluations with one shared network and Adam optimiser (PPO updates every `update_every` moves,
a leftover partial batch of >= 4 moves is used at the episode's end). After each episode the checkpoint (network,
optimiser, RNG state, episode, evaluations, wall time) is written atomically (temp file + rename), and one row is
appended to the CSV curve: episode, case, evaluations, best throughput / the DP split's, wall seconds. A killed
run resumes from its last checkpoint; `time_budget_s` counts wall time across resumes.

The evaluator is injected (`evaluate_factory(graph, hw) -> evaluate_fn`); the application passes CP-SAT repair +
simulation (partitioner.app.train_moves), tests pass a cheap one.
"""
from __future__ import annotations

import csv
import pickle
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.core.files import atomic_write
from policies.anneal import EvaluateFn
from policies.move_policy import Learner, MoveConfig, MoveNet, learned_search, read_move_checkpoint, save_move_policy

Case = tuple[str, TensorGraph, Hardware]
EvaluateFactory = Callable[[TensorGraph, Hardware], EvaluateFn]
CURVE_FIELDS = ("episode", "case", "evals", "best_over_dp", "wall_s")


def pretrain(corpus: Sequence[Case], evaluate_factory: EvaluateFactory, out: str | Path, *, episodes: int = 1000,
             episode_evals: int = 48, time_budget_s: float | None = None, seed: int = 0,
             cfg: MoveConfig = MoveConfig(), log: Callable[[str], None] | None = None,
             space: str = "op") -> dict:
    """Train until `episodes` episodes or `time_budget_s` wall seconds in total; resumes from `out` if it exists.
    Returns the final checkpoint's bookkeeping (episode, evals, wall_s).

    space: "op" trains the whole-op moves (learned_search, evaluate_fn repairs an assignment, the curve's base is
    the DP split); "split" the split-plan moves (policies.split_search, evaluate_fn simulates a Partition, the
    base is the best staged DP plan; cases with no valid staged plan are skipped)."""
    out = Path(out)
    torch.set_num_threads(1)
    net = MoveNet(cfg)
    learner = Learner(net)
    state = {"episode": 0, "evals": 0, "wall_s": 0.0}
    rng = np.random.default_rng(seed)
    if out.exists():
        ckpt = read_move_checkpoint(out)
        net = MoveNet(MoveConfig(**ckpt["config"]))
        net.load_state_dict(ckpt["model"])
        learner = Learner(net)
        learner.opt.load_state_dict(ckpt["optim"])
        state = {k: ckpt[k] for k in state}
        rng = pickle.loads(bytes(ckpt["rng"].tolist()))
    curve = out.with_suffix(".csv")
    _trim_curve(curve, state["episode"])
    base: dict[str, float] = {}
    skipped: set[str] = set()
    while state["episode"] < episodes and (time_budget_s is None or state["wall_s"] < time_budget_s):
        start = time.perf_counter()
        name, graph, hw = corpus[int(rng.integers(len(corpus)))]
        evaluate_fn = evaluate_factory(graph, hw)
        if space == "split":
            from policies.split_search import context_for, split_search

            res = split_search(graph, hw, "learned", budget=episode_evals, seed=int(rng.integers(2**31)),
                               evaluate_fn=evaluate_fn, net=net, learner=learner)
            if res is None:             # no valid staged plan on this package: not a case of this space
                skipped.add(name)
                if len(skipped) == len({c[0] for c in corpus}):
                    raise UserError("no corpus case has a valid staged plan to search from",
                                    "add graphs whose weights fit the package's SRAM when split")
                state["wall_s"] += time.perf_counter() - start
                continue
            base.setdefault(name, max(evaluate_fn(p).throughput for p in context_for(graph, hw)[1]))
        else:
            if name not in base:
                from partitioner.plan.splits import dp_partition

                base[name] = evaluate_fn(dp_partition(graph, hw)).throughput
            res = learned_search(graph, hw, budget=episode_evals, seed=int(rng.integers(2**31)),
                                 evaluate_fn=evaluate_fn, net=net, learner=learner)
        if len(learner.batch) >= 4:
            learner.update(graph, hw)
        learner.batch.clear()
        state["episode"] += 1
        state["evals"] += res.evaluations
        state["wall_s"] += time.perf_counter() - start
        ratio = res.best.throughput / base[name]
        save_move_policy(out, net, {**state, "optim": learner.opt.state_dict(),
                                    "rng": torch.tensor(list(pickle.dumps(rng)), dtype=torch.uint8)})
        _append_curve(curve, (state["episode"], name, state["evals"], f"{ratio:.5f}", f"{state['wall_s']:.1f}"))
        if log:
            log(f"episode {state['episode']} {name}: best/dp {ratio:.4f}, {state['wall_s']:.0f} s")
    return state


def _append_curve(path: Path, row: tuple) -> None:
    new = not path.exists()
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(CURVE_FIELDS)
        w.writerow(row)
        fh.flush()


def _trim_curve(path: Path, episode: int) -> None:
    """On resume, drop rows past the checkpoint's episode (written after it by a killed run)."""
    if not path.exists():
        return
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= episode] if rows else []

    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows(keep)

    atomic_write(path, write)
