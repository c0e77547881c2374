"""run.best_staged at the old caps (powers of two below max shard, and max shard) against every cap 1..max shard:
the best simulated throughput, the distinct candidate plans, how many were simulated before the throughput ceiling
stopped the loop, and wall time. max shard is staged_dp.auto_max_shard(chiplets), as the `partition` command
chooses it; the default package, fp16.

    PYTHONPATH=. python -m benchmarks.staged_degrees --models vit-base bert-base --chiplets 64 144

Prints a markdown table (pow2 = the old caps, all = every cap; ratio = all / pow2); --json PATH also writes the rows.
"""
from __future__ import annotations

import argparse
import json
import time

from benchmarks.move_bench import _case
from partitioner.app.candidates import best_staged
from partitioner.plan.staged_dp import auto_max_shard


def pow2_caps(max_shard: int) -> list[int]:
    """The caps the `partition` command ran before every cap did: 2, 4, 8, ... below max_shard, and max_shard."""
    return [d for d in (2 ** e for e in range(1, 8)) if d < max_shard] + ([max_shard] if max_shard >= 2 else [])


def run_one(model: str, chiplets: int, caps: str) -> dict:
    graph, hw = _case(model, chiplets)
    max_shard = auto_max_shard(chiplets)
    stats: dict = {}
    start = time.perf_counter()
    ev = best_staged(graph, hw, max_shard, caps=pow2_caps(max_shard) if caps == "pow2" else None, stats=stats)
    return {"model": model, "chiplets": chiplets, "max_shard": max_shard, "caps": caps,
            "throughput": None if ev is None else ev.throughput, "wall_s": time.perf_counter() - start, **stats}


def table(rows: list[dict]) -> str:
    by = {(r["model"], r["chiplets"], r["caps"]): r for r in rows}
    lines = ["| model | chiplets | max shard | pow2: inf/s | plans | simulated | wall s | all: inf/s | plans | "
             "simulated | wall s | all / pow2 |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, n in dict.fromkeys((r["model"], r["chiplets"]) for r in rows):
        cells = [model, str(n), str(auto_max_shard(n))]
        for caps in ("pow2", "all"):
            r = by.get((model, n, caps))
            cells += ["-"] * 4 if r is None else [f"{r['throughput']:,.0f}", str(r["candidates"]),
                                                  str(r["simulated"]), f"{r['wall_s']:.1f}"]
        old, new = by.get((model, n, "pow2")), by.get((model, n, "all"))
        cells.append(f"{new['throughput'] / old['throughput']:.3f}" if old and new else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["vit-base", "bert-base"])
    ap.add_argument("--chiplets", nargs="+", type=int, default=[64, 144])
    ap.add_argument("--caps", choices=("both", "pow2", "all"), default="both")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    rows = []
    for model in args.models:
        for n in args.chiplets:
            for caps in ("pow2", "all") if args.caps == "both" else (args.caps,):
                rows.append(run_one(model, n, caps))
                print(json.dumps(rows[-1]), flush=True)
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
