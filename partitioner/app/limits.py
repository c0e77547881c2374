"""Validation at the edge: every option of a run is checked here, before the model is read or --out is touched.

One place for the ranges, so `partition`, `partition simulate`, `train` and `finetune` agree and a bad option is
one line naming the problem and the fix, never a traceback after minutes of search.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

from partitioner.core.errors import UserError

MAX_SEED = 2**31 - 1
"""CP-SAT's random_seed is an int32, so seeds are 0..2**31-1; larger ones are refused rather than folded."""
MAX_BUDGET = 10_000_000
"""More evaluations than any run can spend (about 10 ms each at best): a typo, refused before any work."""
MAX_CHIPLETS = 4096
"""The CP-SAT repair and certificate models hold one stage variable per op and chiplet, and the simulator a link
table per chiplet pair on demand; above this the per-evaluation cost is unbounded in practice (docs/reliability.md)."""
MAX_SECONDS = 7 * 24 * 3600.0
MAX_BATCH = 1024
"""--batch: inferences per read of a streamed weight (decode: sequences per step, as serving engines batch at most
a few hundred). The simulated stream holds at least two batches, so time and memory grow with it: gpt-decoder on
16 chiplets (greedy, no certificate) takes 19 s and 0.9 GB at batch 1, 131 s and 4.4 GB at 1024, 304 s and
16 GB at 4096; 10**9 ends in a MemoryError. Above the limit is refused."""


def check_seed(seed: object, flag: str = "--seed") -> int:
    if type(seed) is not int or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{flag} must be an integer in 0..{MAX_SEED} (CP-SAT seeds are 32-bit), got {seed}",
                        f"pass a seed such as {flag} 0")
    return seed


def check_budget(budget: object, flag: str = "--budget") -> int | None:
    if budget is None:
        return None
    if type(budget) is not int or budget < 1:
        raise UserError(f"{flag} must be at least 1, got {budget}", f"pass a number of evaluated partitions, e.g. "
                        f"{flag} 64")
    if budget > MAX_BUDGET:
        raise UserError(f"{flag} {budget} is above the supported {MAX_BUDGET:,} evaluations",
                        f"pass at most {MAX_BUDGET:,}, and bound the run's wall time with --max-time")
    return budget


def check_batch(batch: object, flag: str = "--batch") -> int:
    if type(batch) is not int or batch < 1:
        raise UserError(f"{flag} must be a positive integer, got {batch!r}", f"pass {flag} 1 or more")
    if batch > MAX_BATCH:
        raise UserError(f"{flag} {batch} is above the supported {MAX_BATCH} (inferences per weight read; in decode, "
                        f"sequences per step)", f"pass at most {flag} {MAX_BATCH}")
    return batch


def check_chiplets(chiplets: object, flag: str = "--chiplets") -> int | None:
    if chiplets is None:
        return None
    if type(chiplets) is not int or chiplets < 1:
        raise UserError(f"{flag} must be at least 1, got {chiplets}", "pass a positive chiplet count such as 16")
    if chiplets > MAX_CHIPLETS:
        raise UserError(f"{flag} {chiplets} is above the supported {MAX_CHIPLETS} chiplets (the solver's model "
                        f"grows with ops x chiplets, so larger packages do not plan in bounded time)",
                        f"pass at most {MAX_CHIPLETS}, or describe the package as fewer, larger chiplets")
    return chiplets


def check_seconds(value: object, flag: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, (int, float)) or math.isnan(value) or not value > 0:
        raise UserError(f"{flag} must be positive, got {value}", f"pass seconds, e.g. {flag} 60")
    if value > MAX_SECONDS:
        raise UserError(f"{flag} {value} is above the supported {MAX_SECONDS:,.0f} s (a week)",
                        f"pass fewer seconds, e.g. {flag} 3600")
    return float(value)


def check_model_path(path: str) -> None:
    """The model exists and is a readable file (a directory is named as one, not as missing)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"model {path} is a directory, not an ONNX file", "pass the .onnx file inside it")
    if not p.exists():
        raise UserError(f"model file {path} does not exist", "check the path (an .onnx file exported from your "
                        "framework)")
    if not os.access(p, os.R_OK):
        raise UserError(f"model file {path} is not readable", "fix its permissions or pass a readable copy")


def check_out_target(out: str) -> Path:
    """--out can be created or replaced: not a file, and its parent exists or can be made. Creates nothing."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out} is a file, not a directory", "pass a directory for the outputs")
    parent = path.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot create output directory {out} ({parent} is not writable)",
                        "pass a --out inside a writable directory")
    return path
