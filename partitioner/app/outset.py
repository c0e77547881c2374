"""Outputs as a set: a run writes into a fresh sibling folder and swaps it in, so --out holds the old set or the new
one, never a mix, and a failed run leaves no empty --out behind.

The swap is two renames (old -> .NAME.old-ID, staged -> NAME) and then the old folder is removed; a kill between
the renames leaves --out missing but both complete sets on disk under their dot-names (the next run of the same
--out cleans them up). A folder is replaced only if it is empty or a run wrote it (it holds MARKER, or only the files an older run
wrote); any other
folder is refused before any work, so `--out .` or `--out ~` can never be swapped away.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from partitioner.core.errors import UserError

MARKER = ".partition-run.json"
"""Written last into every output set: the run id, the command and the files of the set."""


LEGACY_OUTPUTS = frozenset({"partition.json", "report.md", "trace.json", "partition.png", "config.json"})
"""A folder holding only these was written by a run from before output sets (no MARKER): still replaceable."""


def check_replaceable(out: str | os.PathLike) -> None:
    """--out may be replaced: absent, empty, or written by a run (holds MARKER). Creates nothing."""
    path = Path(out)
    if not path.exists():
        return
    if not path.is_dir():
        raise UserError(f"--out {out} is a file, not a directory", "pass a directory for the outputs")
    if (path / MARKER).is_file():
        return
    others = sorted(p.name for p in path.iterdir() if p.name not in LEGACY_OUTPUTS)
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UserError(f"--out {out} holds files no run wrote ({shown}); a run replaces its --out folder as a "
                        "whole", "pass a new or empty directory, or one an earlier run wrote")


def _leftovers(path: Path) -> list[Path]:
    """Old sets of earlier runs on this --out that a kill between the two renames left behind (staging folders
    are left alone: one may belong to a run still writing)."""
    return [p for p in path.parent.glob(f".{path.name}.old-*") if p.is_dir()]


@contextmanager
def output_set(out: str | os.PathLike, command: str) -> Iterator[Path]:
    """Yield a fresh staging folder beside `out`; on success mark it and swap it in for `out`, on any failure
    (exception, Ctrl-C) remove it and leave `out` as it was."""
    path = Path(out).absolute()
    check_replaceable(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.staging-", dir=path.parent))
    except OSError as exc:
        raise UserError(f"cannot create output directory {out} ({exc.strerror})", "pass a writable --out directory")
    try:
        yield staging
        files = sorted(p.name for p in staging.iterdir())
        (staging / MARKER).write_text(json.dumps({"run_id": staging.name.rsplit("-", 1)[-1], "command": command,
                                                  "finished_unix": time.time(), "files": files}, indent=2))
        os.chmod(staging, 0o777 & ~_umask())
        _swap(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for stale in _leftovers(path):
        shutil.rmtree(stale, ignore_errors=True)


def _swap(staging: Path, path: Path) -> None:
    if path.exists():
        old = path.parent / f".{path.name}.old-{staging.name.rsplit('-', 1)[-1]}"
        os.rename(path, old)
        os.rename(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
