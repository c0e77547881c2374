"""Simulator evaluations per second with the compiled event loop against the plain-Python loop, in one process.

    python benchmarks/sim_loop_speed.py [--seconds 10] [--write]

Each case simulates the DP split (partitioner.plan.splits.dp_partition) of a shipped model on the default package, fp16,
repeatedly for about --seconds per loop, after one warm-up call (the compiled loop's first call loads or compiles
it). Both loops must give the same report; the ratio is the speed-up. Target: >= 50 evaluations/s on
BERT-large at 64 chiplets. Writes the "Simulator speed" section of RESULTS.md.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from partitioner.sim import simulator  # noqa: E402
from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.frontend.load import load_onnx  # noqa: E402
from partitioner.plan.splits import dp_partition  # noqa: E402

CASES = (("bert-base", 16), ("bert-large", 64), ("gpt2", 16), ("llama-1b", 16))


def rate(graph, hw, a, seconds: float) -> tuple[float, float]:
    """(evaluations/s, throughput) of `simulate` over about `seconds` after one warm-up call."""
    rep = simulator.simulate(graph, hw, a)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        simulator.simulate(graph, hw, a)
        n += 1
    return n / (time.perf_counter() - start), rep.throughput_per_s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    rows = ["| model | chiplets | ops | compiled evaluations/s | Python loop evaluations/s | speed-up | same throughput |",
            "|---|---|---|---:|---:|---:|---|"]
    for name, n in CASES:
        graph = load_onnx(str(ROOT / "examples" / f"{name}.onnx"), precision="fp16")
        hw = load_hardware(None, n)
        a = dp_partition(graph, hw)
        fast, thr_fast = rate(graph, hw, a, args.seconds)
        python_loop = lambda plan, hw_, n_inf, trace, batch=1: simulator._run_traced(plan, hw_, n_inf, trace, batch)  # noqa: E731
        with mock.patch.object(simulator, "_run", python_loop):
            slow, thr_slow = rate(graph, hw, a, args.seconds)
        rows.append(f"| {name} | {n} | {graph.n_ops} | {fast:,.1f} | {slow:,.1f} | {fast / slow:.1f}x | "
                    f"{'yes' if thr_fast == thr_slow else 'NO'} |")
        print(rows[-1], flush=True)
    body = "\n".join([f"Command: `python benchmarks/sim_loop_speed.py --seconds {args.seconds:g} --write` (one process, "
                      "2-core machine shared with other work, 2026-11-25; DP split, default package, fp16).", "",
                      *rows, "",
                      "Target: >= 50 evaluations/s on BERT-large at 64 chiplets. The compiled loop "
                      "(partitioner/sim/sim_loop.py, numba) runs the same events as the Python loop "
                      "(tests/test_sim_loop.py checks identical completion times on random plans); traced runs "
                      "(one per written report) keep the Python loop."])
    if args.write:
        update_section("Simulator speed", body)


if __name__ == "__main__":
    main()
