"""scripts/repeat_layers.py: a decoder export grown by repeating its last layer is the same model with more layers.

The full check (Llama-2-7B exported at 2 layers and repeated to 32 against the 32-layer export: the same 839 fused
ops, FLOPs, weight and KV-cache bytes and decode figures) takes minutes of exporting; docs/fidelity.md, section 4
records it. Here the tiny Llama export (2 layers) grows to 3 and 4: every layer adds the same ops, FLOPs and bytes,
and the layer view gains one unit per layer.
"""
import sys
from pathlib import Path

import onnx
import pytest

from partitioner.frontend.load import load_onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from repeat_layers import repeat_last_layer  # noqa: E402

LLAMA = Path(__file__).parent / "data" / "llama_tiny_legacy.onnx"


def _grown(tmp_path: Path, layers: int) -> Path:
    m = repeat_last_layer(onnx.load(str(LLAMA), load_external_data=False), layers)
    known = {t.name for t in m.graph.initializer} | {v.name for v in m.graph.input} | {""}
    for node in m.graph.node:   # topological, every name defined once (graph-only: the checker wants the data)
        assert set(node.input) <= known, node.name
        assert not set(node.output) & known, node.name
        known |= set(node.output)
    path = tmp_path / f"llama_{layers}.onnx"
    onnx.save(m, str(path))
    return path


def _figures(path: Path, granularity: str = "fused") -> tuple:
    g = load_onnx(str(path), precision="fp16", phase="decode", context=64, granularity=granularity)
    return (g.n_ops, g.total_flops, float(g.matrix_flops.sum()), float(g.weight_bytes.sum()),
            float(g.kv_cache_bytes.sum()))


@pytest.mark.filterwarnings("ignore")
def test_each_repeated_layer_adds_one_layers_worth(tmp_path):
    two, three, four = _figures(LLAMA), _figures(_grown(tmp_path, 3)), _figures(_grown(tmp_path, 4))
    step = [b - a for a, b in zip(two, three)]
    assert all(s > 0 for s in step)
    assert [b - a for a, b in zip(three, four)] == pytest.approx(step)
    assert _figures(tmp_path / "llama_4.onnx", "layer")[0] == _figures(LLAMA, "layer")[0] + 2


def test_fewer_layers_than_exported_leaves_the_model_alone():
    m = onnx.load(str(LLAMA), load_external_data=False)
    before = len(m.graph.node)
    assert len(repeat_last_layer(m, 2).graph.node) == before
