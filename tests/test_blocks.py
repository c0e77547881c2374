"""Repeated blocks (partitioner/frontend/blocks.py): found on synthetic stacks and a tiny Llama export with known
answers, their cuts, and the bytes crossing each cut against the staged DP's own send table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from partitioner.core.graph import Op, TensorGraph
from partitioner.frontend.blocks import Blocks, block_cuts, cut_bytes, find_blocks, periodic_edges
from partitioner.frontend.load import load_onnx
from partitioner.frontend.synthetic import random_dag, repeated_dag
from partitioner.plan.splits import _send_bytes

DATA = Path(__file__).parent / "data"


@settings(max_examples=25, deadline=None)
@given(block=st.integers(2, 9), count=st.integers(3, 12), seed=st.integers(0, 1000),
       prefix=st.integers(2, 4), suffix=st.integers(1, 3))
def test_a_synthetic_stack_is_found_with_its_period_and_count(block, count, seed, prefix, suffix):
    g = repeated_dag(block, count, seed, prefix_ops=prefix, suffix_ops=suffix)
    found = find_blocks(g)
    assert found is not None
    # the block may be found at another phase, or with ops of the prefix or suffix that happen to match: it
    # covers at least the stack, and a rotation of it repeats with the same period
    assert found.period == block or (found.period < block and block % found.period == 0)
    assert found.period * found.count >= block * count
    assert periodic_edges(g, found)


def test_the_tiny_llama_export_is_two_layers_of_28_ops():
    g = load_onnx(DATA / "llama_tiny_legacy.onnx", precision="fp16")
    found = find_blocks(g)
    assert found == Blocks(start=4, period=28, count=2)
    for b in range(found.count):       # each block is one decoder layer, by the exporter's names
        names = {g.ops[i].name.split("/")[3] for i in range(found.start + b * 28, found.start + (b + 1) * 28)}
        assert names == {f"layers.{b}"}
    assert all(found.block_of(i) is None for i in (*range(found.start), *range(found.end, g.n_ops)))
    cuts = block_cuts(g, found, 0.01)
    assert cuts[0] == 0 and set(cuts) <= set(range(28))
    heavy = [r for r in range(28) if g.ops[found.start + 28 + r].op_type == "MatMul"
             and g.ops[found.start + 28 + r].weight_bytes > 4096]
    assert heavy and all(r in cuts and (r + 1) % 28 in cuts for r in heavy)   # around every projection


def test_no_blocks_in_a_random_graph_and_a_broken_stack():
    assert find_blocks(random_dag(40, seed=3)) is None
    g = repeated_dag(5, 6, seed=0)
    assert find_blocks(g) is not None
    # one middle block reads the prefix's first op with another size: not periodic any more
    src, dst, nbytes = (np.array(a) for a in (g.edge_src, g.edge_dst, g.edge_bytes))
    k = int(np.flatnonzero((src == 0) & (dst > 3 + 5 * 2) & (dst < 3 + 5 * 3))[0])
    nbytes[k] += 1
    broken = TensorGraph(g.name, g.ops, src, dst, nbytes)
    assert not periodic_edges(broken, Blocks(3, 5, 6))


@pytest.mark.parametrize("seed", range(4))
def test_cut_bytes_is_the_column_sums_of_the_send_table(seed):
    g = random_dag(30, seed=seed)
    assert np.array_equal(cut_bytes(g), _send_bytes(g).sum(axis=0))


def test_cut_bytes_counts_a_producer_once_at_its_largest_edge_across():
    ops = [Op(f"o{i}", "Add", (f"n{i}",), 1) for i in range(4)]
    g = TensorGraph.build("g", ops, [(0, 1, 10), (0, 3, 4), (1, 2, 5), (2, 3, 7)])
    # cut before 1: op 0 (max(10, 4)); before 2: op 0's edge to 3 and op 1's; before 3: op 0 and op 2
    assert cut_bytes(g).tolist() == [0, 10, 9, 11, 0]
