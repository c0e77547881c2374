"""Decoders as transformers exports them, by hand: tiny GPT-2 and Llama (2 layers, d = 64, 4 heads, Llama with 2 KV
heads, vocabulary 256) from the legacy exporter (dynamic axes, and fixed at sequence 16), the dynamo exporter
(fixed at 16) and with a past KV cache as inputs (legacy: symbolic length; dynamo: 8 tokens). Made by
`python scripts/export_models.py --decoders tests/data`."""
from __future__ import annotations

import json
import os

import pytest

from partitioner.app.cli import main
from partitioner.frontend.load import load_onnx

DATA = os.path.join(os.path.dirname(__file__), "data")
VARIANTS = ("legacy", "legacy_fixed", "dynamo", "kv_legacy", "kv_dynamo")
L, D, LAYERS, VOCAB = 32, 64, 2, 256
# Weight matrices per layer (elements) and the KV heads x head dim each layer caches.
PER_LAYER = {"gpt2": D * 3 * D + D * D + D * 4 * D + 4 * D * D,                    # c_attn, c_proj, c_fc, mlp c_proj
             "llama": D * D + 2 * D * (2 * 16) + D * D + 3 * D * 128}              # q, k + v (2 KV heads), o, MLP
KV_WIDTH = {"gpt2": D, "llama": 2 * 16}


def path(arch: str, variant: str) -> str:
    return os.path.join(DATA, f"{arch}_tiny_{variant}.onnx")


def matrix_flops(arch: str, context: int) -> int:
    """2 x (every weight matrix + the LM head; the embedding lookups are gathers) + Q K^T and A V over the context
    and the new token: 2 x 2 x layers x (context + 1) x d."""
    return 2 * (LAYERS * PER_LAYER[arch] + D * VOCAB) + 2 * 2 * LAYERS * (context + 1) * D


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_decode_flops_and_kv_cache_by_hand(arch, variant):
    g = load_onnx(path(arch, variant), phase="decode", context=L)
    assert int(g.matrix_flops.sum()) == matrix_flops(arch, L)   # gpt2 246,272; llama 197,120
    assert int(g.kv_cache_bytes.sum()) == LAYERS * 2 * KV_WIDTH[arch] * L * 4   # K and V, fp32
    assert g.metadata["tokens_per_inference"] == 1
    assert g.metadata["decoder_evidence"]
    assert g.total_flops < 1.04 * matrix_flops(arch, L)   # norms, softmax, activations: a few percent


def test_fixed_length_exports_cost_one_token_not_sixteen():
    fixed = load_onnx(path("llama", "dynamo"), phase="decode", context=L)
    assert fixed.metadata["input_shapes"]["input_ids"] == (1, 16)
    assert fixed.metadata["decode_import"] == {"positions": 16, "keys": 16, "sequences": 1}
    # the 16 positions cost 16 tokens in a plain pass; decode costs one
    assert int(load_onnx(path("llama", "dynamo")).matrix_flops.sum()) > 10 * int(fixed.matrix_flops.sum())


def test_a_past_cache_input_is_state_not_traffic():
    sym = load_onnx(path("gpt2", "kv_legacy"), phase="decode", context=L)
    assert sym.metadata["input_shapes"]["past_key_values.0.key"] == (1, 4, 0, 16)   # the cache: --context instead
    fixed = load_onnx(path("gpt2", "kv_dynamo"), phase="decode", context=L)
    assert fixed.metadata["decode_import"]["keys"] == 9                             # 8 past + 1 new
    assert sym.input_bytes == fixed.input_bytes == 2 * 8                             # input_ids and mask, 1 each


@pytest.mark.parametrize("variant", ["legacy", "dynamo"])
def test_batch_of_sequences_scales_the_step(variant):
    one = load_onnx(path("llama", variant), phase="decode", context=L)
    four = load_onnx(path("llama", variant), phase="decode", context=L, sequences=4)
    assert int(four.matrix_flops.sum()) == 4 * int(one.matrix_flops.sum())
    assert int(four.kv_cache_bytes.sum()) == 4 * int(one.kv_cache_bytes.sum())    # a cache per sequence
    assert four.total_weight_bytes - int(four.kv_cache_bytes.sum()) == \
        one.total_weight_bytes - int(one.kv_cache_bytes.sum())                     # weights once
    assert four.metadata["tokens_per_inference"] == 4


@pytest.mark.parametrize("variant", ["legacy_fixed", "dynamo"])
def test_prefill_is_the_whole_fixed_sequence(variant):
    g = load_onnx(path("gpt2", variant), phase="prefill")
    assert g.metadata["tokens_per_inference"] == 16 and g.metadata["decode_import"] is None


def test_decoder_flag_forces_decode_where_detection_misses(capsys):
    model = os.path.join(DATA, "tiny_attention.onnx")   # one attention block, d = 16, no causal mask
    assert main(["inspect", model, "--phase", "decode", "--context", "8"]) == 2
    assert "--decoder" in capsys.readouterr().err
    assert main(["inspect", model, "--phase", "decode", "--context", "8", "--decoder", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["matrix_flops"] == 2 * 4 * 16 * 16 + 2 * 2 * 9 * 16    # q, k, v, o + Q K^T, A V over 9 keys
    assert s["kv_cache_bytes"] == 2 * 16 * 8 * 4 and s["decoder_evidence"] == "asserted by --decoder"
    assert main(["inspect", model, "--decoder"]) == 2
    assert "--decoder says the model is a decoder" in capsys.readouterr().err


def test_batch_above_the_limit_is_one_line(tmp_path, capsys):
    assert main([path("gpt2", "legacy"), "--chiplets", "2", "--batch", "1000000000", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1024" in err and "Fix: pass at most --batch 1024" in err


def test_decode_run_with_a_batch_and_simulate_reload(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([path("llama", "dynamo"), "--chiplets", "2", "--method", "greedy", "--no-certificate",
                 "--max-shard", "1", "--phase", "decode", "--context", "8", "--batch", "4", "--out", str(out)]) == 0
    doc = json.loads((out / "partition.json").read_text())
    m = doc["metrics"]
    assert doc["sequences"] == 4 and m["tokens_per_inference"] == 4
    assert m["tokens_per_s"] == pytest.approx(4 * m["throughput_per_s"])   # tokens/s = 4 x steps/s
    assert doc["memory_tier"]["batch"] == 1                                # one weight read per step
    capsys.readouterr()
    assert main(["simulate", path("llama", "dynamo"), "--partition", str(out / "partition.json")]) == 0
    assert "4 per inference" in capsys.readouterr().out
