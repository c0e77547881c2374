"""What the policy trains on: (graph, package) corpora from ONNX files or random DAGs, and the held-out models
no corpus may contain, so benchmarks on them measure generalisation."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware

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
