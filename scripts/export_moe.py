"""Mixture-of-experts decoders as people bring them: a Mixtral-shaped model written as plain torch (router Linear,
softmax, top-k, per-expert SwiGLU FFNs) with sparse dispatch (nonzero / index_select / index_add) or dense masking,
exported by the legacy and the dynamo exporter, and the same model with its MoE layers as the com.microsoft MoE
contrib op (as onnxruntime-genai's builder writes them), built with onnx.helper.

    python scripts/export_moe.py --tiny tests/data     # 2 layers, hidden 64, 8 experts, top-2 (kB each)
    python scripts/export_moe.py --large /tmp/moe      # Mixtral-8x7B shapes, graph only (no weights)
    python scripts/export_moe.py --large /tmp/moe --large-legacy   # also by the legacy exporter (over an hour)

transformers' own Mixtral does not export here (legacy: aten::diff; dynamo: aten.histc on int32), so the torch
models are transformers' Llama (attention, RMSNorm, rotary) with each layer's MLP replaced by `MoEBlock`, the
loop over all E experts that Mixtral's reference code runs. Every file is graph-only: weights are external-data
TensorProtos of their shape whose data file does not exist. Large: the torch exports are built on the meta device
(export_decoders.py's stand-in weights for the legacy exporter, weight inputs for dynamo), so no weight is
allocated. The contrib model has no rotary embedding (elementwise work, under 0.1% of a layer's flops).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass

import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_decoders as dec  # noqa: E402  (this script's directory)

TINY_SEQ = 16


@dataclass(frozen=True)
class Config:
    """A Mixtral-shaped decoder."""
    hidden: int
    inter: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    experts: int = 8
    top_k: int = 2


TINY = Config(hidden=64, inter=128, layers=2, heads=4, kv_heads=2, vocab=256)
MIXTRAL_8X7B = Config(hidden=4096, inter=14336, layers=32, heads=32, kv_heads=8, vocab=32000)


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, inter: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(hidden, inter, bias=False)
        self.w3 = nn.Linear(hidden, inter, bias=False)
        self.w2 = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoEBlock(nn.Module):
    """Mixtral's sparse MoE block: softmax router, top-k, renormalised weights, every expert in turn. sparse: each
    expert runs its routed rows (torch.where on the one-hot mask, index_select, index_add); dense: every expert runs
    every token and its output is masked by the token's gate (0 where not routed)."""

    def __init__(self, cfg: Config, sparse: bool) -> None:
        super().__init__()
        self.gate = nn.Linear(cfg.hidden, cfg.experts, bias=False)
        self.experts = nn.ModuleList(SwiGLU(cfg.hidden, cfg.inter) for _ in range(cfg.experts))
        self.top_k, self.sparse = cfg.top_k, sparse

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        probs = F.softmax(self.gate(x2), dim=-1, dtype=torch.float)
        weights, chosen = torch.topk(probs, self.top_k, dim=-1)
        weights = (weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype)
        if self.sparse:
            out = torch.zeros_like(x2)
            mask = F.one_hot(chosen, len(self.experts)).permute(2, 1, 0)
            for e, expert in enumerate(self.experts):
                slot, token = torch.where(mask[e])
                y = expert(x2.index_select(0, token)) * weights[token, slot, None]
                out = out.index_add(0, token, y)
        else:
            gates = torch.zeros_like(probs).scatter(1, chosen, weights.float()).to(x.dtype)
            out = 0
            for e, expert in enumerate(self.experts):
                out = out + expert(x2) * gates[:, e:e + 1]
        return out.reshape(shape)


def _llama_config(cfg: Config):
    from transformers import LlamaConfig
    c = LlamaConfig(hidden_size=cfg.hidden, intermediate_size=cfg.inter, num_hidden_layers=cfg.layers,
                    num_attention_heads=cfg.heads, num_key_value_heads=cfg.kv_heads, vocab_size=cfg.vocab,
                    max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=False)
    c._attn_implementation = "eager"   # MatMul/Softmax attention, as the legacy exporter needs
    return c


def _graph_only(m: onnx.ModelProto, name: str, dest: str) -> None:
    """Initializers over 1 KiB become external data whose file is then deleted (as export_decoders.py does); the
    dynamo exporter's per-node stack traces (metadata_props, 90% of a tiny file) are dropped."""
    from onnx.external_data_helper import convert_model_to_external_data
    for n in m.graph.node:
        del n.metadata_props[:]
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location=f"{name}.onnx.data", size_threshold=1024)
    onnx.save_model(m, dest)
    data = os.path.join(os.path.dirname(dest), f"{name}.onnx.data")
    if os.path.exists(data):
        os.remove(data)


def export_tiny_torch(form: str, exporter: str, out_dir: str) -> str:
    """out_dir/mixtral_tiny_<form>_<exporter>.onnx: legacy with dynamic batch and sequence, dynamo at sequence 16."""
    torch.manual_seed(0)
    model = dec._Logits(torch_model(TINY, sparse=form == "sparse"))
    ids = torch.randint(0, TINY.vocab, (1, TINY_SEQ))
    name = f"mixtral_tiny_{form}_{exporter}"
    dest = os.path.join(out_dir, f"{name}.onnx")
    tokens = {0: "batch", 1: "sequence"}
    axes = {"input_ids": tokens, "attention_mask": tokens, "logits": tokens} if exporter == "legacy" else None
    os.makedirs(out_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        full = os.path.join(tmp, "full.onnx")
        dec._export(model, (ids, torch.ones_like(ids)), full, ["input_ids", "attention_mask"], ["logits"],
                    dynamo=exporter == "dynamo", axes=axes)
        m = onnx.load(full)
    _graph_only(m, name, dest)
    return dest


def export_large_torch(cfg: Config, form: str, exporter: str, out_dir: str) -> str:
    """Graph-only <out_dir>/mixtral-8x7b-<form>-<exporter>.onnx from the meta device: export_decoders.export_large's
    recipe with MoE layers. The legacy exporter keeps its weights as inputs (keep_initializers_as_inputs): its
    initializer de-duplication compares every pair of same-shaped weights by value, which for 768 expert matrices
    of stride-0 stand-ins is hours of work."""
    name = f"mixtral-8x7b-{form}"
    if exporter == "dynamo":
        def build():
            return (lambda c: _moe_llama(c, cfg, form == "sparse")), _llama_config(cfg)
        path = dec.export_large(dec.Arch(name, build, ("model.embed_tokens.weight",)), True, out_dir)
        m = onnx.load(path, load_external_data=False)
        for n in m.graph.node:      # the exporter's per-node stack traces: most of the file
            del n.metadata_props[:]
        onnx.save_model(m, path)
        return path
    os.makedirs(out_dir, exist_ok=True)
    dest, location = os.path.join(out_dir, f"{name}-legacy.onnx"), f"{name}-legacy.onnx.data"
    with torch.device("meta"):
        model = _moe_llama(_llama_config(cfg), cfg, form == "sparse")
    dec._stand_in_weights(model)
    names, tokens = ["input_ids", "attention_mask"], {0: "batch", 1: "sequence"}
    ids = torch.zeros(1, 8, dtype=torch.long)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(dec._Logits(model), (ids, torch.ones_like(ids)), os.path.join(tmp, "g.onnx"),
                          input_names=names, output_names=["logits"], opset_version=dec.OPSET, dynamo=False,
                          export_params=False, keep_initializers_as_inputs=True, do_constant_folding=False,
                          dynamic_axes={n: tokens for n in [*names, "logits"]})
        m = onnx.load(os.path.join(tmp, "g.onnx"), load_external_data=False)
    weights = [(vi.name, vi.type.tensor_type.elem_type, [d.dim_value for d in vi.type.tensor_type.shape.dim])
               for vi in m.graph.input if vi.name not in names]
    keep = [vi for vi in m.graph.input if vi.name in names]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(dec._external(n, t, d, location) for n, t, d in weights)
    onnx.save_model(m, dest)
    return dest


def _moe_llama(llama_cfg, cfg: Config, sparse: bool) -> nn.Module:
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM(llama_cfg)
    for layer in model.model.layers:
        layer.mlp = MoEBlock(cfg, sparse)
    return model.eval()


def torch_model(cfg: Config, sparse: bool) -> nn.Module:
    return _moe_llama(_llama_config(cfg), cfg, sparse)


# --- the contrib-op model, with onnx.helper ---------------------------------------------------------------------------
def contrib_model(cfg: Config, location: str) -> onnx.ModelProto:
    """A decoder whose MoE layers are com.microsoft MoE nodes: token ids -> embedding -> layers of (RMSNorm, causal
    grouped-query attention, residual, RMSNorm, router MatMul, MoE, residual) -> RMSNorm -> LM head. Symbolic batch
    and sequence; the causal mask is a Trilu. Weights: external-data TensorProtos without data (graph only)."""
    h, hd, g = cfg.hidden, cfg.hidden // cfg.heads, cfg.heads // cfg.kv_heads
    nodes, inits = [], []

    def weight(name, dims):
        inits.append(dec._external(name, TensorProto.FLOAT, list(dims), location))
        return name

    def const(name, values, dtype=TensorProto.INT64):
        inits.append(helper.make_tensor(name, dtype, [len(values)], values))
        return name

    def node(op, ins, out, domain="", **attrs):
        nodes.append(helper.make_node(op, ins, [out], name=out, domain=domain, **attrs))
        return out

    const("heads_shape", [0, 0, cfg.heads, hd])
    const("kv_shape", [0, 0, cfg.kv_heads, hd])
    const("rep", [1, 1, g, 1, 1])
    const("merge_heads", [0, cfg.heads, -1, hd])
    const("hidden_shape", [0, 0, h])
    const("route_shape", [-1, cfg.experts])
    const("two", [2])
    inits.append(helper.make_tensor("scale", TensorProto.FLOAT, [], [hd ** -0.5]))
    inits.append(helper.make_tensor("neg_inf", TensorProto.FLOAT, [], [-1e9]))
    inits.append(helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]))
    inits.append(helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
    x = node("Gather", [weight("embed", (cfg.vocab, h)), "input_ids"], "embedded")
    seq = node("Slice", [node("Shape", ["input_ids"], "ids_shape"), const("s1", [1]), const("s2", [2])], "seq")
    square = node("Concat", [seq, seq], "square", axis=0)
    ones = node("Expand", ["one", square], "ones")
    causal = node("Cast", [node("Trilu", [ones], "lower", upper=0)], "causal", to=TensorProto.BOOL)
    mask = node("Where", [causal, "zero", "neg_inf"], "mask")
    for i in range(cfg.layers):
        p = f"layers.{i}."
        n1 = node("SimplifiedLayerNormalization", [x, weight(p + "ln1", (h,))], p + "norm1", axis=-1, epsilon=1e-5)
        q = node("Transpose", [node("Reshape", [node("MatMul", [n1, weight(p + "wq", (h, h))], p + "q"),
                                                "heads_shape"], p + "q4")], p + "qt", perm=[0, 2, 1, 3])
        kv = []
        for name in ("k", "v"):
            t = node("MatMul", [n1, weight(p + "w" + name, (h, cfg.kv_heads * hd))], p + name)
            t = node("Transpose", [node("Reshape", [t, "kv_shape"], p + name + "4")], p + name + "t",
                     perm=[0, 2, 1, 3])
            t = node("Expand", [node("Unsqueeze", [t, "two"], p + name + "u"), "rep"], p + name + "x")
            kv.append(node("Reshape", [t, "merge_heads"], p + name + "h"))
        kt = node("Transpose", [kv[0]], p + "kT", perm=[0, 1, 3, 2])
        s = node("Add", [node("Mul", [node("MatMul", [q, kt], p + "qk"), "scale"], p + "scaled"), mask], p + "masked")
        a = node("MatMul", [node("Softmax", [s], p + "probs", axis=-1), kv[1]], p + "av")
        a = node("Reshape", [node("Transpose", [a], p + "at", perm=[0, 2, 1, 3]), "hidden_shape"], p + "attn")
        x = node("Add", [x, node("MatMul", [a, weight(p + "wo", (h, h))], p + "o")], p + "res1")
        n2 = node("SimplifiedLayerNormalization", [x, weight(p + "ln2", (h,))], p + "norm2", axis=-1, epsilon=1e-5)
        logits = node("Reshape", [node("MatMul", [n2, weight(p + "router", (h, cfg.experts))], p + "route"),
                                  "route_shape"], p + "router_probs")
        e = cfg.experts
        moe = node("MoE", [n2, logits, weight(p + "fc1", (e, cfg.inter, h)), "", weight(p + "fc2", (e, h, cfg.inter)),
                           "", weight(p + "fc3", (e, cfg.inter, h))], p + "moe", domain="com.microsoft",
                   k=cfg.top_k, activation_type="silu", normalize_routing_weights=1)
        x = node("Add", [x, moe], p + "res2")
    out = node("SimplifiedLayerNormalization", [x, weight("ln_f", (h,))], "norm_f", axis=-1, epsilon=1e-5)
    node("MatMul", [out, weight("lm_head", (h, cfg.vocab))], "logits")
    graph = helper.make_graph(
        nodes, "mixtral_contrib", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", cfg.vocab])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def export_contrib(cfg: Config, name: str, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    dest = os.path.join(out_dir, f"{name}.onnx")
    onnx.save_model(contrib_model(cfg, f"{name}.onnx.data"), dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", metavar="DIR", help="write the tiny test models to DIR")
    parser.add_argument("--large", metavar="DIR", help="write the Mixtral-8x7B-shaped graphs to DIR (not the repo): "
                        "the contrib-op model and the sparse torch model by the dynamo exporter (a few minutes)")
    parser.add_argument("--large-legacy", action="store_true",
                        help="with --large, also the sparse torch model by the legacy exporter (over an hour on 2 "
                             "cores: it runs the model on stand-in weights and its passes copy them)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    made = []
    if args.tiny:
        for form, exporter in (("sparse", "legacy"), ("sparse", "dynamo"), ("dense", "legacy"), ("dense", "dynamo")):
            made.append(export_tiny_torch(form, exporter, args.tiny))
        made.append(export_contrib(TINY, "mixtral_tiny_contrib", args.tiny))
    if args.large:
        made.append(export_contrib(MIXTRAL_8X7B, "mixtral-8x7b-contrib", args.large))
        for exporter in ("dynamo", "legacy") if args.large_legacy else ("dynamo",):
            made.append(export_large_torch(MIXTRAL_8X7B, "sparse", exporter, args.large))
    for path in made:
        print(f"{path}: {os.path.getsize(path):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
