"""Worked example: a Llama-3.1-8B-shaped fp16 decoder (Llama-3-8B's shapes) decoding at batch 1 on one design built
at each process node from 28 to 3 nm, tokens/s beside the HBM roofline.

    python -m benchmarks.codesign_nodes [--nodes 28 16 7 5 3] [--context 1024] [--chiplets 16] [--stacks 4]

The design is the same at every node (explore's Design: a mesh of `--chiplets` 8192-MAC chiplets with 64 MiB of
SRAM, `--stacks` HBM3 stacks of 16 GiB on a silicon interposer, the node's highest clock); its TOML goes through the
normal `partition MODEL --hardware DESIGN.toml --phase decode` (benchmarks/llm_runs.run_partition). Batch-1 decode
reads every weight per token: 16 GB of fp16, so the HBM roofline is the stacks' bandwidth over the bytes read per
token (4 stacks x 819 GB/s = 3.28 TB/s -> about 205 tokens/s; an H100's 3.35 TB/s gives 209).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.llm_runs import export, run_partition
from partitioner.app.dse_space import Design, hardware_of, hardware_toml
from partitioner.hw import ppa


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, nargs="+", default=[28, 16, 7, 5, 3])
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--chiplets", type=int, default=16)
    p.add_argument("--stacks", type=int, default=4)
    args = p.parse_args()
    model = export("llama-3-8b")
    print("| nm | GHz | tokens/s | HBM roofline tokens/s | of roofline | bottleneck | W | USD (HBM incl.) | mm2 | "
          "run s |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for nm in args.nodes:
            d = Design(nm, args.chiplets, "mesh", 8192, 64, 128, ppa.node(nm).max_clock_ghz, "interposer",
                       hbm_gib=16, hbm_stacks=args.stacks)
            hw = hardware_of(d)
            path = Path(tmp) / f"{d.name}.toml"
            path.write_text(hardware_toml(hw, f"codesign_nodes: {d.name}"))
            fig = run_partition(model, str(path), "fp16", phase="decode", context=args.context)
            cost = ppa.ppa(hw, nm, package="interposer")
            roof = 1.0 / fig.roofline_s * fig.tokens_per_inference
            watts = ppa.power_w(fig.energy_j, fig.inferences_per_s, cost.leakage_w)
            print(f"| {nm} | {d.effective_clock_ghz:g} | {fig.tokens_per_s:,.1f} | {roof:,.1f} | "
                  f"{fig.tokens_per_s / roof:.0%} | {fig.bottleneck} | {watts:,.1f} | {cost.cost_usd:,.0f} | "
                  f"{cost.area_mm2:,.0f} | {fig.wall_s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
