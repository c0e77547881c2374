"""Decoder LLMs exported as people ship them: GPT-2 and Llama from transformers configs, by the legacy (TorchScript)
and the dynamo exporter, with an attention_mask input, and variants that take a KV cache (past_key_values.*) and
return it (present.*).

    python scripts/export_models.py --decoders tests/data        # the tiny test exports (kB each)
    python scripts/export_models.py --decoders-large /tmp/DIR    # GPT-2 124M, Llama-3.2-1B, Llama-3-8B, Llama-3-70B, Llama-2-7B and -70B (graph only)

Tiny: 2 layers, hidden 64, 4 heads (Llama: 2 KV heads), vocabulary 256, random weights; each architecture as
- legacy: torch.onnx.export(dynamo=False), dynamic batch and sequence axes;
- legacy-fixed: the same without dynamic axes (sequence 16): the exporter folds the causal mask's aranges;
- dynamo: torch.onnx.export(dynamo=True) at sequence 16 (fixed; the mask folds to a constant);
- kv-legacy / kv-dynamo: one new token, a past cache of 8 tokens in, the cache of 9 out.
Stripped to graph-only (initializers over 1 KiB external, their data file deleted), as export_models.py does.

Large: built on the meta device, so no weight is ever allocated. Dynamo: exported at sequence 128 (fixed), the
weights turned into graph inputs and the exporter's optimiser run then (its constant folding would read the meta
weights; this way it folds the causal mask into a constant as it does for a real export). Legacy: the meta
modules get stride-0 stand-in weights (one scalar each, expanded to its shape), exported with
export_params=False at dynamic axes, so weights are graph inputs. Either way every weight input then becomes an
external-data TensorProto of its shape whose data file does not exist (as include_initializers=False leaves it).
Beside each NAME.onnx, NAME.json holds the counts a FLOP reference needs (benchmarks/decode_flops.py).

Needs the optional extra `export` (transformers, onnxscript).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass

import onnx
import torch
from onnx.external_data_helper import convert_model_to_external_data
from torch import nn

OPSET = 17
TINY_SEQ, TINY_PAST = 16, 8
LARGE_SEQ = 128


@dataclass(frozen=True)
class Arch:
    """A transformers causal LM: its config builder and the names of its input embedding tables (gathers)."""
    name: str
    build: object
    embeddings: tuple[str, ...]
    export_layers: int | None = None
    """Legacy exporter: export this many layers and repeat the last to the configured count (repeat_layers.py); it
    takes over an hour on 80 layers, minutes on 2. None: export them all."""


def _gpt2(**kw):
    from transformers import GPT2Config, GPT2LMHeadModel
    return GPT2LMHeadModel, GPT2Config(bos_token_id=0, eos_token_id=0, **kw)


def _llama(**kw):
    from transformers import LlamaConfig, LlamaForCausalLM
    return LlamaForCausalLM, LlamaConfig(**kw)


GPT2_EMB = ("transformer.wte.weight", "transformer.wpe.weight")
LLAMA_EMB = ("model.embed_tokens.weight",)
TINY = [
    Arch("gpt2_tiny", lambda: _gpt2(n_layer=2, n_embd=64, n_head=4, n_positions=128, vocab_size=256), GPT2_EMB),
    Arch("llama_tiny", lambda: _llama(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                      max_position_embeddings=128), LLAMA_EMB),
]
LARGE = [
    Arch("gpt2-124m", lambda: _gpt2(), GPT2_EMB),   # GPT-2 small as published: 12 x 768, 50257 tokens, tied head
    Arch("llama-3.2-1b", lambda: _llama(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                        tie_word_embeddings=True, rope_theta=500000.0,
                                        max_position_embeddings=131072), LLAMA_EMB),
    Arch("llama-3-8b", lambda: _llama(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                      tie_word_embeddings=False, rope_theta=500000.0,
                                      max_position_embeddings=8192), LLAMA_EMB),
    Arch("llama-3-70b", lambda: _llama(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                       num_attention_heads=64, num_key_value_heads=8, vocab_size=128256,
                                       tie_word_embeddings=False, rope_theta=500000.0,
                                       max_position_embeddings=8192), LLAMA_EMB),
    # Llama 2 (Touvron et al. 2023, the released config.json of meta-llama/Llama-2-7b-hf and -70b-hf): multi-head
    # attention at 7B, 8 KV heads at 70B; 32,000 tokens, untied head. The fidelity rows of docs/fidelity.md.
    Arch("llama-2-7b", lambda: _llama(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                      num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                      tie_word_embeddings=False, max_position_embeddings=4096), LLAMA_EMB),
    Arch("llama-2-70b", lambda: _llama(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                                       num_attention_heads=64, num_key_value_heads=8, vocab_size=32000,
                                       tie_word_embeddings=False, max_position_embeddings=4096), LLAMA_EMB,
         export_layers=2),
]


class _Logits(nn.Module):
    """input_ids, attention_mask -> logits (no cache)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, return_dict=False)[0]


class _WithCache(nn.Module):
    """input_ids, attention_mask, past key/value per layer -> logits, present key/value per layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, *past):
        from transformers import DynamicCache
        pairs = [(past[i], past[i + 1]) for i in range(0, len(past), 2)]
        cache = DynamicCache(ddp_cache_data=pairs, config=self.model.config)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True,
                         return_dict=True)
        return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])


def _model(arch: Arch) -> nn.Module:
    cls, cfg = arch.build()
    cfg._attn_implementation = "eager"   # MatMul/Softmax attention, as the legacy exporter needs
    return cls(cfg).eval()


def _cache_io(cfg, past: int) -> tuple[list[torch.Tensor], list[str], list[str]]:
    layers = cfg.num_hidden_layers
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    tensors = [torch.zeros(1, heads, past, head_dim) for _ in range(2 * layers)]
    names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return tensors, names, [n.replace("past_key_values", "present") for n in names]


def _export(module: nn.Module, args: tuple, path: str, inputs: list[str], outputs: list[str], *, dynamo: bool,
            axes: dict | None) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs, dynamo=True,
                              external_data=False, verbose=False)
        else:
            torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                              opset_version=OPSET, dynamo=False)


def export_tiny(arch: Arch, variant: str, out_dir: str) -> str:
    """out_dir/<arch>_<variant>.onnx, graph-only (module docstring)."""
    model = _model(arch)
    tokens = {0: "batch", 1: "sequence"}
    if variant.startswith("kv-"):
        past, pin, pout = _cache_io(model.config, TINY_PAST)
        ids = torch.zeros(1, 1, dtype=torch.long)
        args = (ids, torch.ones(1, TINY_PAST + 1, dtype=torch.long), *past)
        names = ["input_ids", "attention_mask", *pin]
        outs = ["logits", *pout]
        axes = {"input_ids": tokens, "attention_mask": {0: "batch", 1: "total_sequence"}, "logits": tokens,
                **{n: {0: "batch", 2: "past_sequence"} for n in pin}, **{n: {0: "batch", 2: "total_sequence"}
                                                                        for n in pout}}
        module: nn.Module = _WithCache(model)
    else:
        ids = torch.zeros(1, TINY_SEQ, dtype=torch.long)
        args, names, outs = (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["logits"]
        axes = {"input_ids": tokens, "attention_mask": tokens, "logits": tokens} if variant == "legacy" else None
        module = _Logits(model)
    name = f"{arch.name}_{variant.replace('-', '_')}"
    os.makedirs(out_dir, exist_ok=True)
    dest = os.path.join(out_dir, f"{name}.onnx")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        full = os.path.join(tmp, "full.onnx")
        _export(module, args, full, names, outs, dynamo=variant.endswith("dynamo"), axes=axes)
        m = onnx.load(full)
    convert_model_to_external_data(m, all_tensors_to_one_file=True, location=f"{name}.onnx.data",
                                   size_threshold=1024)
    onnx.save_model(m, dest)
    data = os.path.join(out_dir, f"{name}.onnx.data")
    if os.path.exists(data):
        os.remove(data)   # graph-only: the references stay, the values go
    return dest


TINY_VARIANTS = ("legacy", "legacy-fixed", "dynamo", "kv-legacy", "kv-dynamo")


# --- large, graph-only, from the meta device ------------------------------------------------------------------------
def _stand_in_weights(model: nn.Module) -> None:
    """Replace meta parameters and buffers with stride-0 CPU tensors: one scalar each, expanded to the shape, a
    different value per tensor so the legacy exporter does not merge equal-valued weights."""
    k = 0
    for mod in model.modules():
        for table in (mod._parameters, mod._buffers):
            for name, t in list(table.items()):
                if t is not None and t.device.type == "meta":
                    k += 1
                    value = torch.full((), 1.0 + k * 1e-3, dtype=t.dtype).expand(t.shape)
                    table[name] = nn.Parameter(value, requires_grad=False) if table is mod._parameters else value


def _external(name: str, dtype: int, dims: list[int], location: str) -> onnx.TensorProto:
    t = onnx.TensorProto(name=name, data_type=dtype, dims=dims, data_location=onnx.TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=location)
    return t


def export_large(arch: Arch, dynamo: bool, out_dir: str) -> str:
    """out_dir/<arch>-<legacy|dynamo>.onnx and its .json of reference counts (module docstring)."""
    os.makedirs(out_dir, exist_ok=True)
    name = f"{arch.name}-{'dynamo' if dynamo else 'legacy'}"
    dest, location = os.path.join(out_dir, f"{name}.onnx"), f"{name}.onnx.data"
    cls, cfg = arch.build()
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        model = cls(cfg).eval()
    _write_counts(model, cfg, arch, os.path.join(out_dir, f"{name}.json"))
    layers = cfg.num_hidden_layers
    if arch.export_layers and not dynamo:   # dynamo exports need not carry layer scopes in their node names
        cfg.num_hidden_layers = arch.export_layers
        with torch.device("meta"):
            model = cls(cfg).eval()
    names = ["input_ids", "attention_mask"]
    if dynamo:
        ids = torch.zeros(1, LARGE_SEQ, dtype=torch.long, device="meta")
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(_Logits(model), (ids, torch.ones_like(ids)), input_names=names,
                                        output_names=["logits"], dynamo=True, optimize=False, verbose=False)
            # The optimiser folds constants, and would read the meta weights: it sees them as graph inputs.
            graph = program.model.graph
            for name in list(graph.initializers):
                value = graph.initializers.pop(name)
                value.const_value = None
                graph.inputs.append(value)
            program.optimize()
        import onnx_ir
        m = onnx_ir.serde.serialize_model(program.model)
    else:
        _stand_in_weights(model)
        ids = torch.zeros(1, 8, dtype=torch.long)
        tokens = {0: "batch", 1: "sequence"}
        with tempfile.TemporaryDirectory(dir=out_dir) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Logits(model), (ids, torch.ones_like(ids)), os.path.join(tmp, "g.onnx"),
                              input_names=names, output_names=["logits"], opset_version=OPSET, dynamo=False,
                              export_params=False, dynamic_axes={n: tokens for n in [*names, "logits"]})
            m = onnx.load(os.path.join(tmp, "g.onnx"), load_external_data=False)
    # weights are graph inputs now: make each an external initializer of its shape, with no data file
    weights = [(vi.name, vi.type.tensor_type.elem_type, [d.dim_value for d in vi.type.tensor_type.shape.dim])
               for vi in m.graph.input if vi.name not in names]
    keep = [vi for vi in m.graph.input if vi.name in names]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    m.graph.initializer.extend(_external(n, t, d, location) for n, t, d in weights)
    if arch.export_layers and not dynamo:
        from repeat_layers import repeat_last_layer   # this script's directory is on sys.path
        repeat_last_layer(m, layers)
    onnx.save_model(m, dest)
    return dest


def _write_counts(model: nn.Module, cfg, arch: Arch, path: str) -> None:
    """Parameters (tied ones once), the input embedding tables among them, the LM head, layers and width."""
    params = dict(model.named_parameters())   # a tied LM head shares the embedding's entry
    head = model.get_output_embeddings().weight
    counts = {"parameters": sum(p.numel() for p in params.values()),
              "input_embeddings": sum(params[n].numel() for n in arch.embeddings),
              "lm_head": head.numel(), "lm_head_tied": bool(getattr(cfg, "tie_word_embeddings", False)),
              "layers": cfg.num_hidden_layers, "d_model": cfg.hidden_size}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(counts, f, indent=1)
