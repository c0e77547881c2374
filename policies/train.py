"""The PPO training loops (policies.ppo): pre-training over a corpus and fine-tuning on one graph.

Both are resumable: every `save_every` steps (pre-training) or after every update (fine-tuning) the model,
optimiser, RNG states and bookkeeping go to a checkpoint (policies.checkpoints) and a row to the CSV curve, so a
killed run continues from its last checkpoint with the same draws. Each update's proposals are evaluated through
an injected `map_fn` (policies.rollout): every RNG draw stays in the driver, so the backend does not change the
result.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.core.files import write_text
from partitioner.hw.hardware import Hardware
from policies.checkpoints import (Curve, atomic_torch_save, checkpoint_dict, config_dict, read_checkpoint,
                                  restore_rng)
from policies.features import graph_features, with_anchor
from policies.gnn import PolicyConfig, PolicyNet
from policies.ppo import (BaselineFn, Batch, PPOConfig, RewardFn, advantages, bc_loss, default_anchor,
                          default_baseline, gradient_step, log_gain_reward, new_optimizer, ppo_loss,
                          sample_proposals)
from policies.rollout import MapFn, reward_or_none, serial_map


# --- pre-training -----------------------------------------------------------------------------------------------------
def _resume(ckpt: dict, cfg: PPOConfig, np_rng: np.random.Generator, sampler: torch.Generator
            ) -> tuple[PolicyNet, torch.optim.Optimizer]:
    """The network, optimizer and random streams of a checkpoint, so a killed run continues where it stopped."""
    net = PolicyNet(PolicyConfig(**ckpt["policy_config"]))
    net.load_state_dict(ckpt["model"])
    opt = new_optimizer(net, cfg)
    opt.load_state_dict(ckpt["optimizer"])
    restore_rng(ckpt["rng"], np_rng, sampler)
    return net, opt


def pretrain(corpus: Sequence[tuple[TensorGraph, Hardware]], cfg: PPOConfig, out_path: str | Path, *,
             resume: bool = True, log_csv: str | Path | None = None, reward_fn: RewardFn,
             baseline_fn: BaselineFn = default_baseline, anchor_fn: BaselineFn | None = default_anchor,
             progress: bool = True, map_fn: MapFn = serial_map) -> dict:
    """Pre-train one policy over (graph, hardware) pairs; returns the final checkpoint dict.

    Writes `out_path` (checkpoint, every `save_every` steps and at the end), `log_csv` (default: out_path with
    suffix .csv) and out_path with suffix .config.json. With `resume` and an existing checkpoint, continues from
    its step with its model, optimiser, RNG states and baselines; the corpus must be the same list.
    `map_fn` (policies.rollout) runs each update's evaluations, all graphs' proposals in one call, so a pool or
    Ray evaluates them at once; the result does not depend on it.
    """
    if not corpus:
        raise UserError("the training corpus is empty", "pass a directory with .onnx files or add --synthetic N")
    out_path = Path(out_path)
    log_csv = Path(log_csv) if log_csv is not None else out_path.with_suffix(".csv")
    torch.set_num_threads(cfg.torch_threads)
    write_text(out_path.with_suffix(".config.json"), json.dumps(config_dict(cfg), indent=2) + "\n")

    # Seeding up front; a resumed run overwrites every state below from the checkpoint.
    torch.manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    sampler = torch.Generator().manual_seed(cfg.seed)
    net = PolicyNet(cfg.policy)
    opt = new_optimizer(net, cfg)
    start_step, evals, elapsed = 0, 0, 0.0
    baselines: dict[int, tuple[float, list[int]] | None] = {}
    incumbents: dict[int, tuple[float, list[int]]] = {}          # best (throughput, repaired) per corpus item
    if resume and out_path.exists():
        ckpt = read_checkpoint(out_path)
        net, opt = _resume(ckpt, cfg, np_rng, sampler)
        start_step, evals, elapsed = int(ckpt["step"]), int(ckpt["evals"]), float(ckpt["wall_s"])
        baselines = {int(k): (None if v is None else (float(v[0]), list(v[1]))) for k, v in ckpt["baselines"].items()}
        incumbents = {int(k): (float(v[0]), list(v[1])) for k, v in ckpt.get("incumbents", {}).items()}
    curve = Curve(log_csv, start_step if resume else None)
    total = cfg.bc_steps + cfg.total_steps
    t0 = time.perf_counter() - elapsed

    def rewards_of(jobs: list[tuple[int, np.ndarray]]) -> list:
        """reward_or_none of each (corpus item, proposal), through map_fn, in order."""
        nonlocal evals
        evals += len(jobs)
        return map_fn(reward_or_none, [(reward_fn, *corpus[i], p) for i, p in jobs])

    def baselines_of(picks: list[int]) -> None:
        """The baseline split of each new corpus item (None: infeasible instance, e.g. weights exceed the package;
        skipped), then the anchor split of the usable ones, which becomes the incumbent if it beats the baseline."""
        new = [i for i in dict.fromkeys(picks) if i not in baselines]
        for i, r in zip(new, rewards_of([(i, baseline_fn(*corpus[i])) for i in new])):
            ok = not isinstance(r, UserError) and r[0] > 0
            baselines[i] = (r[0], [int(v) for v in r[1]]) if ok else None
        if anchor_fn is None:
            return
        usable = [i for i in new if baselines[i] is not None]
        for i, r in zip(usable, rewards_of([(i, anchor_fn(*corpus[i])) for i in usable])):
            if not isinstance(r, UserError) and r[0] > baselines[i][0]:
                incumbents[i] = (r[0], [int(v) for v in r[1]])

    def save(step: int) -> dict:
        ckpt = checkpoint_dict(net, opt, cfg, np_rng, sampler, step=step, evals=evals,
                               wall_s=time.perf_counter() - t0,
                               baselines={str(k): (None if v is None else [v[0], v[1]])
                                          for k, v in baselines.items()},
                               incumbents={str(k): [v[0], v[1]] for k, v in incumbents.items()},
                               corpus=[g.name + "@" + h.name for g, h in corpus], best={})
        atomic_torch_save(ckpt, out_path)
        return ckpt

    ckpt = None
    step = start_step
    bar = tqdm(total=total, initial=start_step, desc="pretrain", leave=False, disable=None if progress else True)
    try:
        for step in range(start_step, total):
            if cfg.time_budget_s is not None and time.perf_counter() - t0 >= cfg.time_budget_s:
                break
            net.train()
            picks = [int(i) for i in np_rng.choice(len(corpus), size=min(cfg.graphs_per_step, len(corpus)),
                                                   replace=False)]
            baselines_of(picks)
            usable = [(i, baselines[i]) for i in picks if baselines[i] is not None]
            rewards_all, best_thr, names = [], 0.0, []
            if step < cfg.bc_steps:
                phase = "bc"
                if usable:
                    gradient_step(net, opt, lambda: sum(bc_loss(net, graph_features(*corpus[i]), np.asarray(b[1]))
                                                        for i, b in usable), cfg)
                    names = [corpus[i][0].name for i, _ in usable]
            else:
                phase = "ppo"
                # Sample every picked graph's proposals first (the picks are distinct, so graph j's anchor never
                # depends on graph i's rewards), then evaluate them all in one map: the same draws and rewards as
                # evaluating graph by graph.
                rolled = []
                for i, _ in usable:
                    data = graph_features(*corpus[i])
                    if i in incumbents and np_rng.random() < cfg.incumbent_prob:
                        data = with_anchor(data, np.asarray(incumbents[i][1]))
                    rolled.append((data, *sample_proposals(net, data, cfg.proposals_per_step, sampler)))
                results = rewards_of([(i, p.astype(np.int64)) for (i, _), (_, props, _) in zip(usable, rolled)
                                      for p in props.numpy()])
                batches = []
                for n, ((i, (base, _)), (data, props, old)) in enumerate(zip(usable, rolled)):
                    rewards = []
                    for r in results[n * cfg.proposals_per_step:(n + 1) * cfg.proposals_per_step]:
                        thr, repaired = (0.0, None) if isinstance(r, UserError) else r
                        rewards.append(log_gain_reward(thr, base, cfg.reward_clip))
                        best_thr = max(best_thr, thr)
                        if repaired is not None and thr > max(base, incumbents.get(i, (0.0,))[0]):
                            incumbents[i] = (float(thr), [int(v) for v in repaired])
                    rewards = np.asarray(rewards)
                    rewards_all.extend(rewards.tolist())
                    names.append(corpus[i][0].name)
                    batches.append(Batch(data, props, old, advantages(rewards, cfg)))
                for _ in range(cfg.update_epochs if batches else 0):
                    gradient_step(net, opt, lambda: sum(ppo_loss(net, b, cfg) for b in batches), cfg)
            wall = time.perf_counter() - t0
            mean_r = float(np.mean(rewards_all)) if rewards_all else float("nan")
            max_r = float(np.max(rewards_all)) if rewards_all else float("nan")
            curve.write(step=step, phase=phase, evals=evals, mean_reward=f"{mean_r:.6f}", max_reward=f"{max_r:.6f}",
                        best_throughput=f"{best_thr:.6g}", wall_s=f"{wall:.2f}", graph="|".join(names))
            bar.update(1)
            bar.set_postfix_str(f"r {mean_r:+.3f}", refresh=False)
            if (step + 1) % cfg.save_every == 0:
                ckpt = save(step + 1)
        else:
            step = max(total, start_step)
        if step < total or ckpt is None or int(ckpt["step"]) != step:
            ckpt = save(step)
    finally:
        bar.close()
        curve.close()
    return ckpt


# --- fine-tuning ------------------------------------------------------------------------------------------------------
def finetune(graph: TensorGraph, hw: Hardware, policy_ckpt: str | Path | None, budget_evals: int, cfg: PPOConfig,
             out_dir: str | Path | None, *, resume: bool = True, reward_fn: RewardFn,
             on_eval: Callable[[int, float], None] | None = None, progress: bool = True,
             baseline_fn: BaselineFn = default_baseline, anchor_fn: BaselineFn | None = default_anchor,
             map_fn: MapFn = serial_map) -> tuple[np.ndarray, float]:
    """Spend `budget_evals` evaluations improving the policy on one graph; return the best repaired
    (assignment, throughput) seen.

    The first evaluation is the anchor split itself (`baseline_fn`, DP); its throughput is the reward baseline.
    The second is `anchor_fn`'s split (the greedy heuristic; None skips it). So the result is never worse than
    those heuristics, and what the policy adds is measured against them. Then
    each update samples min(K, remaining) proposals and, with update_epochs > 0, takes PPO steps on them
    (update_epochs = 0 is zero-shot best-of-K sampling). `policy_ckpt` None trains from scratch (a fresh network
    seeded by cfg.seed). With `out_dir`, writes finetune.pt (checkpoint after every update), curve.csv,
    config.json and best_assignment.json, and resumes from finetune.pt when `resume`. `map_fn` evaluates each
    update's proposals (policies.rollout), as in `pretrain`.
    """
    if budget_evals < 1:
        raise UserError(f"--budget must be at least 1, got {budget_evals}", "pass a positive number of evaluations")
    torch.set_num_threads(cfg.torch_threads)
    out = Path(out_dir) if out_dir is not None else None
    ckpt_path = out / "finetune.pt" if out is not None else None

    torch.manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    sampler = torch.Generator().manual_seed(cfg.seed)
    if policy_ckpt is not None:
        start = read_checkpoint(policy_ckpt)
        net = PolicyNet(PolicyConfig(**start["policy_config"]))
        net.load_state_dict(start["model"])
    else:
        net = PolicyNet(cfg.policy)
    opt = new_optimizer(net, cfg)
    step, evals, elapsed = 0, 0, 0.0
    base, best_thr, best_a = 0.0, -1.0, None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = read_checkpoint(ckpt_path)
        made_for = ck.get("problem", {"ops": len(ck["best"]["assignment"]) or graph.n_ops})
        if made_for != {"graph": graph.name, "ops": graph.n_ops, "chiplets": hw.n_chiplets} and (
                "graph" in made_for or made_for["ops"] != graph.n_ops):
            raise UserError(f"{ckpt_path} is the fine-tuning checkpoint of another problem ({made_for}), not of "
                            f"{graph.name} ({graph.n_ops} ops) on {hw.n_chiplets} chiplets",
                            "pass a new --out directory, or the model and --chiplets that checkpoint was made for")
        net, opt = _resume(ck, cfg, np_rng, sampler)
        step, evals, elapsed = int(ck["step"]), int(ck["evals"]), float(ck["wall_s"])
        base, best_thr = float(ck["best"]["baseline"]), float(ck["best"]["throughput"])
        best_a = np.asarray(ck["best"]["assignment"], dtype=np.int64)
    if out is not None:
        write_text(out / "config.json", json.dumps(config_dict(cfg) | {
            "graph": graph.name, "hardware": hw.name, "policy_ckpt": None if policy_ckpt is None else str(policy_ckpt),
            "budget_evals": budget_evals}, indent=2) + "\n")
    curve = Curve(out / "curve.csv", step if resume else None) if out is not None else None
    data = graph_features(graph, hw)
    t0 = time.perf_counter() - elapsed

    def evaluate(proposals: list[np.ndarray]) -> list[float]:
        """Throughput of each proposal (0 for one that cannot be repaired), evaluated through map_fn and booked
        in order. If the budget ends with nothing repairable, the last failure's UserError is raised."""
        nonlocal evals, best_thr, best_a
        out = []
        for r in map_fn(reward_or_none, [(reward_fn, graph, hw, p) for p in proposals]):
            if isinstance(r, UserError):
                if best_a is None and evals + 1 >= budget_evals:
                    raise r
                r = (0.0, None)
            thr, repaired = r
            evals += 1
            if repaired is not None and thr > best_thr:
                best_thr, best_a = float(thr), np.asarray(repaired, dtype=np.int64)
            if on_eval is not None:
                on_eval(evals, max(best_thr, 0.0))
            out.append(thr)
        return out

    def save() -> None:
        if ckpt_path is None:
            return
        atomic_torch_save(checkpoint_dict(net, opt, cfg, np_rng, sampler, step=step, evals=evals,
                                          wall_s=time.perf_counter() - t0,
                                          problem={"graph": graph.name, "ops": graph.n_ops,
                                                   "chiplets": hw.n_chiplets},
                                          best={"baseline": base, "throughput": best_thr,
                                                "assignment": [] if best_a is None else best_a.tolist()}),
                          ckpt_path)
        write_text(out / "best_assignment.json", json.dumps(
            {"graph": graph.name, "hardware": hw.name, "throughput_per_s": best_thr, "evaluations": evals,
             "assignment": [] if best_a is None else best_a.tolist()}) + "\n")

    bar = tqdm(total=budget_evals, initial=evals, desc="finetune", unit="eval", leave=False,
               disable=None if progress else True)
    try:
        if evals == 0:
            starts = [baseline_fn] + ([anchor_fn] if anchor_fn is not None and budget_evals >= 2 else [])
            base = evaluate([np.asarray(fn(graph, hw), dtype=np.int64) for fn in starts])[0]
            bar.update(len(starts))
        while evals < budget_evals:
            k = min(cfg.proposals_per_step, budget_evals - evals)
            net.train()
            anchored = with_anchor(data, best_a) if cfg.reanchor and best_a is not None else data
            props, old = sample_proposals(net, anchored, k, sampler)
            rewards = np.asarray([log_gain_reward(thr, base, cfg.reward_clip)
                                  for thr in evaluate([p.astype(np.int64) for p in props.numpy()])])
            bar.update(k)
            if k >= 2:
                batch = Batch(anchored, props, old, advantages(rewards, cfg))
                for _ in range(cfg.update_epochs):
                    gradient_step(net, opt, lambda: ppo_loss(net, batch, cfg), cfg)
            step += 1
            if curve is not None:
                curve.write(step=step - 1, phase="ppo" if cfg.update_epochs else "sample", evals=evals,
                            mean_reward=f"{float(rewards.mean()):.6f}", max_reward=f"{float(rewards.max()):.6f}",
                            best_throughput=f"{best_thr:.6g}",
                            wall_s=f"{time.perf_counter() - t0:.2f}", graph=graph.name)
            save()
            bar.set_postfix_str(f"best {best_thr:,.1f}/s", refresh=False)
        save()
    finally:
        bar.close()
        if curve is not None:
            curve.close()
    if best_a is None:
        raise UserError(f"no proposal for {graph.name} could be repaired into a valid partition",
                        "use more chiplets or chiplets with more SRAM")
    return best_a, best_thr
