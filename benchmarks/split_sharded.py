"""Split sharded partitions of the weight-carrying models and verify the stages in onnxruntime.

    python benchmarks/split_sharded.py [MODEL.onnx ...]   (default: /work/models/mha-legacy.onnx, small-cnn.onnx)

Plans per model on the default package: the staged DP (partitioner.plan.staged_dp.staged_partition, ops split up to 4
ways; the plan `partition MODEL --chiplets N` picks when it simulates best) at 4 and 16 chiplets, and two explicit
4-chiplet plans: every op split 4 ways on chiplets 0..3, and the first half of the ops split 2 ways on 0..1, the rest
on 2..3. Prints one markdown row per plan: split ops, nodes cut into pieces, nodes run whole on their group's first
chiplet, stages, and the largest absolute difference between the stages run in manifest order and the whole model
(random inputs, seed 0).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402

from partitioner.hw.toml import load_hardware  # noqa: E402
from partitioner.frontend.load import load_onnx  # noqa: E402
from partitioner.export.split_onnx import split_model
from partitioner.export.verify import random_inputs, verify_split  # noqa: E402
from partitioner.plan.staged_dp import staged_partition  # noqa: E402

DEFAULT = ("/work/models/mha-legacy.onnx", "/work/models/small-cnn.onnx")


def plans(graph):
    n = graph.n_ops
    for chiplets in (4, 16):
        yield f"staged DP, {chiplets} chiplets", chiplets, *staged_partition(graph, load_hardware(None, chiplets), 4)
    yield "all ops 4-way on 0..3", 4, np.zeros(n, np.int64), np.full(n, 4)
    yield "halves 2-way on 0..1, 2..3", 4, np.where(np.arange(n) < n // 2, 0, 2), np.full(n, 2)


def main(paths: list[str]) -> None:
    print("| model | plan | split ops | nodes cut | nodes whole | stages | max abs diff | split+verify s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for path in paths:
        graph, model = load_onnx(path), onnx.load(path)
        feeds = random_inputs(model, graph.metadata["input_shapes"])
        for name, chiplets, a, k in plans(graph):
            t = time.perf_counter()
            split = split_model(graph, a, model, shard=k, n_chiplets=chiplets)
            v = verify_split(model, split, feeds)
            cut = sum(len(op["pieced"]) for op in split.sharded)
            whole = sum(len(op["whole"]) for op in split.sharded)
            print(f"| {Path(path).stem} | {name} | {len(split.sharded)} | {cut} | {whole} | {len(split.stages)} | "
                  f"{v.max_abs_diff:.2g} | {time.perf_counter() - t:.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:] or list(DEFAULT))
