"""PPO for the partitioning policy: pre-training over a corpus and fine-tuning on one graph.

One episode proposes a whole assignment (a one-step contextual bandit): the policy samples K proposals for a
graph, each is repaired and simulated, and its reward is r = log(throughput / baseline throughput), where the
baseline is the repaired DP contiguous split of the same graph (so r > 0 means "better than DP"). The advantage
is r minus the mean over the K proposals of the same graph, divided by their standard deviation (a risk-seeking
variant that only credits the top quantile is available: PPOConfig.risk_quantile). The loss is
PPO's clipped surrogate with one ratio per op (the policy factorises over ops; a ratio of the summed log-prob
over hundreds of ops would almost always be clipped), minus an entropy bonus, for `update_epochs` passes.

Optionally the first `bc_steps` updates are behavioural cloning: cross-entropy towards the repaired DP
assignment, which teaches the decoder where DP puts stage boundaries before PPO explores around them.

The reward comes from an injected `reward_fn(graph, hw, assignment) -> (throughput, repaired_assignment)`;
the application passes `PipelineReward` (partitioner.app.pipeline: CP-SAT repair + simulation). Tests pass the
cheap `bottleneck_reward`.

Checkpoints hold the model, optimiser, every RNG state, the step, evaluations, best-so-far, per-graph
baselines and both configs; they are written to a temp file in the same directory and renamed, so a killed
run leaves the previous checkpoint intact and resumes from it. Learning curves are CSV files appended one
flushed row per step; on resume, rows past the checkpoint's step are dropped first (atomic rewrite).
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.core.files import atomic_write, write_text
from partitioner.plan.splits import dp_partition, greedy_partition
from policies.features import FEATURES_VERSION, graph_features, with_anchor
from policies.gnn import PolicyConfig, PolicyNet, greedy, sample
from policies.rollout import MapFn, reward_or_none, serial_map

RewardFn = Callable[[TensorGraph, Hardware, np.ndarray], "tuple[float, np.ndarray]"]
BaselineFn = Callable[[TensorGraph, Hardware], np.ndarray]
CURVE_FIELDS = ("step", "phase", "evals", "mean_reward", "max_reward", "best_throughput", "wall_s", "graph")
CHECKPOINT_KIND = "chiplet-partitioner-policy"


@dataclass(frozen=True)
class PPOConfig:
    """Every hyper-parameter of pre-training and fine-tuning (written next to each run's outputs)."""

    seed: int = 0
    """Seeds network initialisation, corpus sampling and proposal sampling."""
    lr: float = 5e-4
    """Adam learning rate."""
    total_steps: int = 200
    """PPO updates (after the behavioural-cloning steps). Fine-tuning ignores it: its budget sets the steps."""
    bc_steps: int = 0
    """Behavioural-cloning updates towards the repaired DP assignment before PPO (pre-training only)."""
    proposals_per_step: int = 16
    """Assignments sampled per graph per update (K); advantages are normalised within these K."""
    graphs_per_step: int = 1
    """Corpus graphs per pre-training update; their losses are summed."""
    update_epochs: int = 4
    """Gradient passes over each batch of proposals (0: no learning, i.e. zero-shot sampling)."""
    risk_quantile: float | None = None
    """Risk-seeking policy gradient (Petersen et al., ICLR 2021): only proposals whose reward is above this
    quantile of their batch get an advantage, (r - quantile) / std(r); the rest get 0. None (default): the classic
    advantage (r - mean) / std. In our runs the risk-seeking variant let the decoder's shifts drift and lowered
    both the mean and the best-of-K reward, so it is off."""
    reanchor: bool = True
    """Fine-tuning: centre each batch of proposals on the best repaired partition found so far (a learned local
    search) instead of the DP split."""
    incumbent_prob: float = 0.5
    """Pre-training: probability that a graph's proposals are centred on the best partition found for it so far
    rather than on its DP split (teaches the policy to improve on partitions other than DP)."""
    clip_coef: float = 0.2
    """PPO ratio clip (per op)."""
    ent_coef: float = 0.003
    """Weight of the mean per-op entropy bonus."""
    max_grad_norm: float = 0.5
    """Gradient norm clip."""
    reward_clip: float = 3.0
    """|log(throughput / baseline)| is clipped to this; a failed evaluation scores -reward_clip."""
    repair_time_limit_s: float = 2.0
    """CP-SAT seconds per repair for the pipeline reward (partitioner.app.pipeline.PipelineReward)."""
    save_every: int = 5
    """Checkpoint every this many updates (and always at the end)."""
    time_budget_s: float | None = None
    """Stop pre-training (with a checkpoint) once this much wall time has been spent in total; None: no limit."""
    torch_threads: int = 1
    """torch.set_num_threads for the run (the evaluator dominates; the network is small)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """Architecture for a fresh network; a resumed or fine-tuned network keeps its checkpoint's."""


FINETUNE_CONFIG = PPOConfig(lr=1e-3, proposals_per_step=8, update_epochs=4)
"""Defaults for fine-tuning on one graph (`partition finetune`, `--method rl`)."""


# --- rewards ----------------------------------------------------------------------------------------------------------
def bottleneck_reward(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> tuple[float, np.ndarray]:
    """A cheap analytic stand-in for tests: repair by moving each op up to its latest producer's chiplet (pipeline
    order), then throughput = clock / slowest chiplet, whose time is its op cycles plus the link serialisation of
    every tensor it sends or receives. Ignores memory and contention."""
    from partitioner.model.cost import op_cycles_matrix

    a = np.asarray(assignment, dtype=np.int64).copy()
    order = np.argsort(graph.edge_dst, kind="stable")
    for s, d in zip(graph.edge_src[order].tolist(), graph.edge_dst[order].tolist()):
        if a[s] > a[d]:
            a[d] = a[s]
    cyc = op_cycles_matrix(graph, hw)[np.arange(graph.n_ops), a].astype(float)
    load = np.bincount(a, weights=cyc, minlength=hw.n_chiplets)
    cut = a[graph.edge_src] != a[graph.edge_dst]
    ser = graph.edge_bytes[cut] / hw.link_bytes_per_cycle
    load += np.bincount(a[graph.edge_src][cut], weights=ser, minlength=hw.n_chiplets)
    load += np.bincount(a[graph.edge_dst][cut], weights=ser, minlength=hw.n_chiplets)
    return hw.clock_hz / float(load.max()), a


def default_baseline(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """partitioner.plan.splits.dp_partition: the optimal contiguous split of the topological order."""
    return dp_partition(graph, hw)


def default_anchor(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """partitioner.plan.splits.greedy_partition: a second heuristic split the policy may start from."""
    return greedy_partition(graph, hw)


def _reward(thr: float, base: float, clip: float) -> float:
    if not (thr > 0 and base > 0) or not math.isfinite(thr):
        return -clip
    return float(np.clip(math.log(thr / base), -clip, clip))


# --- proposals --------------------------------------------------------------------------------------------------------
@torch.no_grad()
def propose(policy: PolicyNet, data, n_chiplets: int, *, sample: bool,
            generator: torch.Generator | None = None) -> np.ndarray:
    """One assignment (int64 [n_ops]) for the graph behind `data` (from policies.features.graph_features):
    sampled from the policy when `sample`, else each op's most likely chiplet. Pure given `generator`."""
    if int(data.n_chiplets) != n_chiplets:
        raise ValueError(f"features were built for {int(data.n_chiplets)} chiplets, not {n_chiplets}")
    policy.eval()
    logp = policy(data)
    out = _sample(logp, 1, generator)[0] if sample else greedy(logp)
    return out.numpy().astype(np.int64)


_sample = sample


# --- checkpoints and curves -------------------------------------------------------------------------------------------
def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save through report.atomic_write (temp file, fsync, rename): never a half-written checkpoint."""
    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    atomic_write(path, save)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict (weights-only unpickling: checkpoints hold tensors and plain Python values only)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"policy checkpoint {path} does not exist", "pass a checkpoint written by `partition train`")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our checkpoint"
        raise UserError(f"{path} is not a readable policy checkpoint ({exc.__class__.__name__})",
                        "pass a checkpoint written by `partition train` or `partition finetune`")
    if not isinstance(ckpt, dict) or ckpt.get("kind") != CHECKPOINT_KIND:
        raise UserError(f"{path} is not a policy checkpoint", "pass a checkpoint written by `partition train`")
    if ckpt.get("features_version") != FEATURES_VERSION:
        raise UserError(f"policy checkpoint {path} was built for features version {ckpt.get('features_version')}, "
                        f"this code computes version {FEATURES_VERSION}", "retrain with `partition train`")
    return ckpt


def load_policy(path: str | Path) -> PolicyNet:
    """The network stored in a checkpoint, in eval mode."""
    ckpt = read_checkpoint(path)
    net = PolicyNet(PolicyConfig(**ckpt["policy_config"]))
    net.load_state_dict(ckpt["model"])
    net.eval()
    return net


class _Curve:
    """CSV learning curve: one flushed row per step; on resume, rows beyond the resumed step are dropped."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) < resume_step]
        lines = [",".join(CURVE_FIELDS)] + [",".join(str(r.get(k, "")) for k in CURVE_FIELDS) for r in rows]
        write_text(path, "\n".join(lines) + "\n")
        self.fh = open(path, "a", newline="", encoding="utf-8")
        self.writer = csv.DictWriter(self.fh, fieldnames=CURVE_FIELDS)

    def write(self, **row: object) -> None:
        self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _rng_state(np_rng: np.random.Generator, sampler: torch.Generator) -> dict:
    return {"numpy": np_rng.bit_generator.state, "sampler": sampler.get_state(), "torch": torch.get_rng_state()}


def _restore_rng(state: dict, np_rng: np.random.Generator, sampler: torch.Generator) -> None:
    np_rng.bit_generator.state = state["numpy"]
    sampler.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])


def _checkpoint(net: PolicyNet, opt: torch.optim.Optimizer, cfg: PPOConfig, np_rng: np.random.Generator,
                sampler: torch.Generator, **extra: object) -> dict:
    return {"kind": CHECKPOINT_KIND, "features_version": FEATURES_VERSION, "model": net.state_dict(),
            "policy_config": asdict(net.cfg), "optimizer": opt.state_dict(), "ppo_config": _config_dict(cfg),
            "rng": _rng_state(np_rng, sampler), **extra}


def _config_dict(cfg: PPOConfig) -> dict:
    return json.loads(json.dumps(asdict(cfg)))


# --- the update -------------------------------------------------------------------------------------------------------
@dataclass
class _Batch:
    """K proposals for one graph: features, proposals [K, N], their per-op log-probs when sampled, advantages."""

    data: object
    proposals: torch.Tensor
    old_logp: torch.Tensor
    adv: torch.Tensor


def _ppo_loss(net: PolicyNet, batch: _Batch, cfg: PPOConfig) -> torch.Tensor:
    logp = net(batch.data)                                                          # [N, C]
    n = logp.size(0)
    new = logp[torch.arange(n)[None, :], batch.proposals]                          # [K, N]
    ratio = torch.exp(new - batch.old_logp)
    adv = batch.adv[:, None]
    pg = -torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef) * adv).mean()
    ent = -(logp.exp() * logp).sum(dim=1).mean()
    return pg - cfg.ent_coef * ent


def _bc_loss(net: PolicyNet, data, target: np.ndarray) -> torch.Tensor:
    logp = net(data)
    return -logp[torch.arange(logp.size(0)), torch.from_numpy(target)].mean()


def _step(net: PolicyNet, opt: torch.optim.Optimizer, losses: Callable[[], torch.Tensor], cfg: PPOConfig) -> None:
    opt.zero_grad()
    loss = losses()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)
    opt.step()


def _rollout(net: PolicyNet, data, k: int, sampler: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """k sampled proposals [k, N] and their per-op log-probs [k, N] under the current policy."""
    with torch.no_grad():
        logp = net(data)
        props = _sample(logp, k, sampler)
        old = logp[torch.arange(logp.size(0))[None, :], props]
    return props, old


def _advantages(rewards: np.ndarray, cfg: PPOConfig) -> torch.Tensor:
    std = rewards.std()
    if cfg.risk_quantile is None:
        adv = rewards - rewards.mean()
    else:
        adv = np.maximum(rewards - np.quantile(rewards, cfg.risk_quantile), 0.0)
    return torch.as_tensor(adv / std if std > 1e-8 else adv, dtype=torch.float32)


def _new_optimizer(net: PolicyNet, cfg: PPOConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(net.parameters(), lr=cfg.lr, eps=1e-5)


# --- pre-training -----------------------------------------------------------------------------------------------------
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
    write_text(out_path.with_suffix(".config.json"), json.dumps(_config_dict(cfg), indent=2) + "\n")

    # Seeding up front; a resumed run overwrites every state below from the checkpoint.
    torch.manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    sampler = torch.Generator().manual_seed(cfg.seed)
    net = PolicyNet(cfg.policy)
    opt = _new_optimizer(net, cfg)
    start_step, evals, elapsed = 0, 0, 0.0
    baselines: dict[int, tuple[float, list[int]] | None] = {}
    incumbents: dict[int, tuple[float, list[int]]] = {}          # best (throughput, repaired) per corpus item
    if resume and out_path.exists():
        ckpt = read_checkpoint(out_path)
        net = PolicyNet(PolicyConfig(**ckpt["policy_config"]))
        net.load_state_dict(ckpt["model"])
        opt = _new_optimizer(net, cfg)
        opt.load_state_dict(ckpt["optimizer"])
        _restore_rng(ckpt["rng"], np_rng, sampler)
        start_step, evals, elapsed = int(ckpt["step"]), int(ckpt["evals"]), float(ckpt["wall_s"])
        baselines = {int(k): (None if v is None else (float(v[0]), list(v[1]))) for k, v in ckpt["baselines"].items()}
        incumbents = {int(k): (float(v[0]), list(v[1])) for k, v in ckpt.get("incumbents", {}).items()}
    curve = _Curve(log_csv, start_step if resume else None)
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
        ckpt = _checkpoint(net, opt, cfg, np_rng, sampler, step=step, evals=evals,
                           wall_s=time.perf_counter() - t0,
                           baselines={str(k): (None if v is None else [v[0], v[1]]) for k, v in baselines.items()},
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
                    _step(net, opt, lambda: sum(_bc_loss(net, graph_features(*corpus[i]), np.asarray(b[1]))
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
                    rolled.append((data, *_rollout(net, data, cfg.proposals_per_step, sampler)))
                results = rewards_of([(i, p.astype(np.int64)) for (i, _), (_, props, _) in zip(usable, rolled)
                                      for p in props.numpy()])
                batches = []
                for n, ((i, (base, _)), (data, props, old)) in enumerate(zip(usable, rolled)):
                    rewards = []
                    for r in results[n * cfg.proposals_per_step:(n + 1) * cfg.proposals_per_step]:
                        thr, repaired = (0.0, None) if isinstance(r, UserError) else r
                        rewards.append(_reward(thr, base, cfg.reward_clip))
                        best_thr = max(best_thr, thr)
                        if repaired is not None and thr > max(base, incumbents.get(i, (0.0,))[0]):
                            incumbents[i] = (float(thr), [int(v) for v in repaired])
                    rewards = np.asarray(rewards)
                    rewards_all.extend(rewards.tolist())
                    names.append(corpus[i][0].name)
                    batches.append(_Batch(data, props, old, _advantages(rewards, cfg)))
                for _ in range(cfg.update_epochs if batches else 0):
                    _step(net, opt, lambda: sum(_ppo_loss(net, b, cfg) for b in batches), cfg)
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
    opt = _new_optimizer(net, cfg)
    step, evals, elapsed = 0, 0, 0.0
    base, best_thr, best_a = 0.0, -1.0, None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = read_checkpoint(ckpt_path)
        net = PolicyNet(PolicyConfig(**ck["policy_config"]))
        net.load_state_dict(ck["model"])
        opt = _new_optimizer(net, cfg)
        opt.load_state_dict(ck["optimizer"])
        _restore_rng(ck["rng"], np_rng, sampler)
        step, evals, elapsed = int(ck["step"]), int(ck["evals"]), float(ck["wall_s"])
        base, best_thr = float(ck["best"]["baseline"]), float(ck["best"]["throughput"])
        best_a = np.asarray(ck["best"]["assignment"], dtype=np.int64)
    if out is not None:
        write_text(out / "config.json", json.dumps(_config_dict(cfg) | {
            "graph": graph.name, "hardware": hw.name, "policy_ckpt": None if policy_ckpt is None else str(policy_ckpt),
            "budget_evals": budget_evals}, indent=2) + "\n")
    curve = _Curve(out / "curve.csv", step if resume else None) if out is not None else None
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
        atomic_torch_save(_checkpoint(net, opt, cfg, np_rng, sampler, step=step, evals=evals,
                                      wall_s=time.perf_counter() - t0,
                                      best={"baseline": base, "throughput": best_thr,
                                            "assignment": [] if best_a is None else best_a.tolist()}), ckpt_path)
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
            props, old = _rollout(net, anchored, k, sampler)
            rewards = np.asarray([_reward(thr, base, cfg.reward_clip)
                                  for thr in evaluate([p.astype(np.int64) for p in props.numpy()])])
            bar.update(k)
            if k >= 2:
                batch = _Batch(anchored, props, old, _advantages(rewards, cfg))
                for _ in range(cfg.update_epochs):
                    _step(net, opt, lambda: _ppo_loss(net, batch, cfg), cfg)
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


# --- corpora ----------------------------------------------------------------------------------------------------------
HELD_OUT = ("bert-base", "resnet18", "gpt-decoder", "bert-large", "distilbert", "gpt2", "llama-1b", "vit-base",
            "resnet50", "t5-small-encoder")
"""The shipped examples (examples/*.onnx): never trained on, so benchmarks on them measure generalisation."""
DEFAULT_CHIPLETS = (2, 4, 8, 16, 36)


def onnx_corpus(directory: str | Path, chiplets: Sequence[int] = DEFAULT_CHIPLETS, precision: str = "fp16",
                extra_hardware: Sequence[Hardware] = ()) -> list[tuple[TensorGraph, Hardware]]:
    """Every .onnx file in `directory` (sorted, except HELD_OUT names) on a default mesh of each chiplet count
    and on each of `extra_hardware`."""
    from partitioner.hw.hardware import mesh_of
    from partitioner.frontend.load import load_onnx

    if not Path(directory).is_dir():
        raise UserError(f"corpus directory {directory} does not exist",
                        "export one with `python scripts/export_models.py --corpus DIR`")
    paths = sorted(p for p in Path(directory).glob("*.onnx") if p.stem not in HELD_OUT)
    packages = [mesh_of(n) for n in chiplets] + list(extra_hardware)
    out = []
    for path in paths:
        graph = load_onnx(path, precision=precision)
        out.extend((graph, hw) for hw in packages)
    return out


def synthetic_corpus(n_graphs: int, seed: int, chiplets: Sequence[int] = DEFAULT_CHIPLETS
                     ) -> list[tuple[TensorGraph, Hardware]]:
    """Random DAGs (partitioner.frontend.synthetic.random_dag, 30-250 ops, size scale 0.5-20) each on one package drawn
    at random: a mesh of a chiplet count from `chiplets`, link bandwidth 16-128 B/cycle, and per-chiplet SRAM
    sized so the weights fill 10-70% of the package."""
    from partitioner.hw.hardware import Chiplet, mesh_of
    from partitioner.frontend.synthetic import random_dag

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n_graphs):
        graph = random_dag(int(rng.integers(30, 251)), int(rng.integers(1 << 31)),
                           scale=float(np.exp(rng.uniform(np.log(0.5), np.log(20.0)))), name=f"synthetic-{seed}-{k}")
        n = int(rng.choice(chiplets))
        fill = float(rng.uniform(0.1, 0.7))
        sram = max(int(graph.total_weight_bytes / (fill * n)), int(2 * (graph.weight_bytes + graph.work_bytes).max()))
        hw = mesh_of(n, Chiplet(sram_bytes=sram), name=f"synthetic-{n}",
                     link_bytes_per_cycle=int(rng.choice([16, 32, 64, 128])))
        out.append((graph, hw))
    return out


def zero_shot_config(cfg: PPOConfig) -> PPOConfig:
    """Best-of-budget sampling from a fixed policy: fine-tuning without updates."""
    return replace(cfg, update_epochs=0)
