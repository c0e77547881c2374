"""Policy checkpoints and learning curves, written so that a killed run loses nothing it had saved.

Checkpoints hold the model, optimiser, every RNG state, the step, evaluations, best-so-far, per-graph
baselines and both configs; they are written to a temp file in the same directory and renamed, so a killed
run leaves the previous checkpoint intact and resumes from it. Learning curves are CSV files appended one
flushed row per step; on resume, rows past the checkpoint's step are dropped first (atomic rewrite).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from partitioner.core.errors import UserError
from partitioner.core.files import atomic_write, write_text
from policies.features import FEATURES_VERSION
from policies.gnn import PolicyConfig, PolicyNet
from policies.ppo import PPOConfig

CURVE_FIELDS = ("step", "phase", "evals", "mean_reward", "max_reward", "best_throughput", "wall_s", "graph")
CHECKPOINT_KIND = "chiplet-partitioner-policy"


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save through partitioner.core.files.atomic_write (temp file, fsync, rename): never a half-written
    checkpoint."""
    def save(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)

    atomic_write(path, save)


def load_tagged(path: str | Path, kind: str, what: str, fix: str, weights_only: bool = True) -> dict:
    """The dict torch saved at `path`, whose "kind" is `kind`: a missing, unreadable or foreign file is a one-line
    UserError naming `what` it should be and `fix`."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist", fix)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not our file"
        raise UserError(f"{path} is not a readable {what} ({exc.__class__.__name__})", fix)
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        raise UserError(f"{path} is not a {what}", fix)
    return obj


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict (weights-only unpickling: checkpoints hold tensors and plain Python values only)."""
    ckpt = load_tagged(path, CHECKPOINT_KIND, "policy checkpoint",
                       "pass a checkpoint written by `partition train` or `partition finetune`")
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


class Curve:
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


def restore_rng(state: dict, np_rng: np.random.Generator, sampler: torch.Generator) -> None:
    np_rng.bit_generator.state = state["numpy"]
    sampler.set_state(state["sampler"])
    torch.set_rng_state(state["torch"])


def checkpoint_dict(net: PolicyNet, opt: torch.optim.Optimizer, cfg: PPOConfig, np_rng: np.random.Generator,
                    sampler: torch.Generator, **extra: object) -> dict:
    """Everything a resumed run needs to continue with the same draws: network, optimiser, configs, RNG states,
    plus the loop's own bookkeeping (`extra`)."""
    return {"kind": CHECKPOINT_KIND, "features_version": FEATURES_VERSION, "model": net.state_dict(),
            "policy_config": asdict(net.cfg), "optimizer": opt.state_dict(), "ppo_config": config_dict(cfg),
            "rng": _rng_state(np_rng, sampler), **extra}


def config_dict(cfg: PPOConfig) -> dict:
    """The config as plain JSON values (checkpoints are unpickled weights-only)."""
    return json.loads(json.dumps(asdict(cfg)))
