"""Export real architectures with random weights to graph-only ONNX files (weights stripped).

    python scripts/export_models.py                  # examples/{bert-base,resnet18,gpt-decoder}.onnx
    python scripts/export_models.py --corpus DIR     # a corpus of varied architectures for RL training
    python scripts/export_models.py --zoo DIR        # full-size real architectures (BERT, GPT-2, Llama-1B, ViT,
                                                     # ResNet-50, T5, ...) plus two small models with weights kept
    python scripts/export_models.py --decoders DIR   # tiny GPT-2 / Llama by both exporters (export_decoders.py)
    python scripts/export_models.py --decoders-large DIR   # GPT-2, Llama-3.2-1B, Llama-3-8B, Llama-3-70B, Llama-2-7B/-70B, both exporters

Nothing is downloaded: every model is built from a config written here (transformers configs or plain torch
modules) with random weights, exported with torch.onnx.export (TorchScript exporter, opset 17, dynamic batch
and sequence axes), then stripped: every initializer over 1 KiB is rewritten as an external reference to
`<name>.onnx.data` and that data file is deleted, so the .onnx file holds the graph and the weights' shapes and
types but not their values (a few hundred KB). `partitioner.frontend.load.load_onnx` reads such files.

Needs the optional extra `export` (transformers). The shipped examples are held out of the corpus: the corpus
never uses their exact configs.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import onnx
import torch
from onnx.external_data_helper import convert_model_to_external_data
from torch import nn

OPSET = 17


@dataclass(frozen=True)
class ExportSpec:
    """One model to export: a torch module, example inputs and the names/dynamic axes of its inputs."""

    name: str
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    dynamic_axes: dict
    constant_folding: bool = True


# --- plain torch models ---------------------------------------------------------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class Bottleneck(nn.Module):
    """torchvision-style (v1.5) bottleneck: 1x1 reduce, 3x3 (strided), 1x1 expand by 4, projection shortcut."""

    def __init__(self, cin: int, mid: int, stride: int) -> None:
        super().__init__()
        cout = 4 * mid
        self.conv1 = nn.Conv2d(cin, mid, 1, 1, 0, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, 1, 0, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    """torchvision-style ResNet; depths (2, 2, 2, 2) and width 64 with basic blocks is ResNet-18, depths
    (3, 4, 6, 3) and width 64 with bottleneck blocks is ResNet-50."""

    def __init__(self, depths=(2, 2, 2, 2), width: int = 64, classes: int = 1000, bottleneck: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin = [], width
        for i, d in enumerate(depths):
            cout = width * 2 ** i
            for j in range(d):
                stride = 2 if (j == 0 and i > 0) else 1
                if bottleneck:
                    layers.append(Bottleneck(cin, cout, stride))
                    cin = 4 * cout
                else:
                    layers.append(BasicBlock(cin, cout, stride))
                    cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class MixerBlock(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.token_mlp = nn.Sequential(nn.Linear(tokens, tokens * 2), nn.GELU(), nn.Linear(tokens * 2, tokens))
        self.channel_mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

    def forward(self, x):
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


class Mixer(nn.Module):
    """MLP-Mixer: patch embedding (strided conv), token- and channel-mixing MLP blocks, mean pool, head."""

    def __init__(self, depth: int, dim: int, patch: int = 16, image: int = 224, classes: int = 1000) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, patch)
        self.blocks = nn.Sequential(*[MixerBlock((image // patch) ** 2, dim) for _ in range(depth)])
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        return self.head(self.blocks(x).mean(dim=1))


class MLP(nn.Module):
    def __init__(self, widths: tuple[int, ...]) -> None:
        super().__init__()
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x):
        return self.net(x)


class SmallCNN(nn.Module):
    """Three Conv+BN+ReLU stages with max pooling, global average pool and a Linear head (input 1x3x32x32)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.features = nn.Sequential(*stage(3, 16), nn.MaxPool2d(2), *stage(16, 32), nn.MaxPool2d(2),
                                      *stage(32, 64))
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


class MHABlock(nn.Module):
    """Pre-norm transformer block built on torch.nn.MultiheadAttention (sequence-first layout)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x):  # x: (seq, batch, dim)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class MHATransformer(nn.Module):
    """A small transformer encoder of MHABlocks; input (batch, seq, dim) float, output (batch, seq, dim)."""

    def __init__(self, layers: int = 2, dim: int = 64, heads: int = 4, seq: int = 16) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(seq, 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[MHABlock(dim, heads) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, dim)

    def forward(self, x):
        # batch_first=False keeps nn.MultiheadAttention off its fused fast path, which the exporter cannot trace
        h = self.blocks(x.transpose(0, 1) + self.pos)
        return self.head(self.norm(h)).transpose(0, 1)


class _HFWrapper(nn.Module):
    """Calls a transformers model with keyword inputs and returns plain tensors (the exporter needs both)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *args):
        out = self.model(**dict(zip(self.names, args)), return_dict=False)
        return tuple(out) if isinstance(out, (tuple, list)) else out


# --- model specs ----------------------------------------------------------------------------------------------------
_TOKENS = {0: "batch", 1: "sequence"}
_IMAGES = {0: "batch"}


def _eager(cfg):
    cfg._attn_implementation = "eager"  # plain MatMul/Softmax attention, no SDPA or mask-creation tricks
    cfg.use_cache = False
    return cfg


def bert_spec(name: str, layers: int = 12, hidden: int = 768, heads: int = 12, seq: int = 128,
              vocab: int = 30522) -> ExportSpec:
    from transformers import BertConfig, BertModel
    cfg = _eager(BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                            intermediate_size=4 * hidden, vocab_size=vocab))
    names = ("input_ids", "attention_mask")
    ids = torch.zeros(1, seq, dtype=torch.long)
    return ExportSpec(name, _HFWrapper(BertModel(cfg), names), (ids, torch.ones_like(ids)), names,
                      ("last_hidden_state", "pooler_output"), {n: _TOKENS for n in names})


def gpt2_spec(name: str, layers: int = 12, hidden: int = 768, heads: int = 12, seq: int = 128,
              vocab: int = 32000) -> ExportSpec:
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = _eager(GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=seq, vocab_size=vocab,
                            bos_token_id=0, eos_token_id=0))
    names = ("input_ids", "attention_mask")  # an explicit mask keeps transformers off aten::diff
    ids = torch.zeros(1, seq, dtype=torch.long)
    return ExportSpec(name, _HFWrapper(GPT2LMHeadModel(cfg), names), (ids, torch.ones_like(ids)), names,
                      ("logits",), {n: _TOKENS for n in names})


def vit_spec(name: str, layers: int, hidden: int, heads: int, image: int = 224, patch: int = 16) -> ExportSpec:
    from transformers import ViTConfig, ViTModel
    cfg = _eager(ViTConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                           intermediate_size=4 * hidden, image_size=image, patch_size=patch))
    names = ("pixel_values",)
    return ExportSpec(name, _HFWrapper(ViTModel(cfg, add_pooling_layer=False), names),
                      (torch.zeros(1, 3, image, image),), names, ("last_hidden_state",), {"pixel_values": _IMAGES})


def torch_spec(name: str, module: nn.Module, shape: tuple[int, ...]) -> ExportSpec:
    return ExportSpec(name, module, (torch.zeros(*shape),), ("x",), ("y",), {"x": {0: "batch"}})


# --- the zoo: full-size real architectures, each built only when exported ---------------------------------------
@contextmanager
def _default_dtype(dtype: torch.dtype):
    """Build modules directly in `dtype` (a 1B-parameter model never exists in fp32)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _token_spec(name: str, model: nn.Module, seq: int, outputs: tuple[str, ...], **kw) -> ExportSpec:
    names = ("input_ids", "attention_mask")
    ids = torch.zeros(1, seq, dtype=torch.long)
    return ExportSpec(name, _HFWrapper(model, names), (ids, torch.ones_like(ids)), names, outputs,
                      {n: _TOKENS for n in names}, **kw)


def zoo_bert_base() -> ExportSpec:
    return bert_spec("bert-base", 12, 768, 12, seq=128)


def zoo_bert_large() -> ExportSpec:
    return bert_spec("bert-large", 24, 1024, 16, seq=128)


def zoo_distilbert() -> ExportSpec:
    from transformers import DistilBertConfig, DistilBertModel
    return _token_spec("distilbert", DistilBertModel(_eager(DistilBertConfig())), 128, ("last_hidden_state",))


def zoo_gpt2() -> ExportSpec:
    """GPT-2 small as published: 50257-token vocabulary, 1024 positions, 12 layers, 768 wide, tied LM head.
    Exported without constant folding so the tied LM head stays a Transpose of the embedding table rather than a
    second 77 MB (fp16) initializer."""
    from transformers import GPT2Config, GPT2LMHeadModel
    return _token_spec("gpt2", GPT2LMHeadModel(_eager(GPT2Config())), 128, ("logits",), constant_folding=False)


def zoo_llama_1b() -> ExportSpec:
    """A Llama-3.2-1B-shaped decoder: 16 layers, 2048 wide, 8192 MLP, 32 heads / 8 KV heads (GQA), 128256-token
    vocabulary, tied embeddings; about 1.24B parameters, built directly in fp16."""
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = _eager(LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                             num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                             tie_word_embeddings=True, max_position_embeddings=2048))
    with _default_dtype(torch.float16):
        model = LlamaForCausalLM(cfg)
    return _token_spec("llama-1b", model, 128, ("logits",), constant_folding=False)


def zoo_vit_base() -> ExportSpec:
    return vit_spec("vit-base", 12, 768, 12, image=224, patch=16)


def zoo_resnet50() -> ExportSpec:
    return torch_spec("resnet50", ResNet((3, 4, 6, 3), 64, bottleneck=True), (1, 3, 224, 224))


def zoo_t5_small_encoder() -> ExportSpec:
    from transformers import T5Config, T5EncoderModel
    return _token_spec("t5-small-encoder", T5EncoderModel(_eager(T5Config())), 128, ("last_hidden_state",))


def zoo_mha_legacy() -> ExportSpec:
    """2 layers, d_model 64, 4 heads of torch.nn.MultiheadAttention; static input (1, 16, 64)."""
    return ExportSpec("mha-legacy", MHATransformer(2, 64, 4, 16), (torch.randn(1, 16, 64),), ("x",), ("y",), {})


def zoo_small_cnn() -> ExportSpec:
    return ExportSpec("small-cnn", SmallCNN(10), (torch.randn(1, 3, 32, 32),), ("x",), ("y",), {})


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: its builder (called only when it is exported) and whether its weights stay in the file."""

    name: str
    build: Callable[[], ExportSpec] = field(repr=False)
    keep_weights: bool = False


# Small first, Llama-1B last, so a partial run still leaves the cheap ones.
ZOO = [
    ZooEntry("small-cnn", zoo_small_cnn, keep_weights=True),
    ZooEntry("mha-legacy", zoo_mha_legacy, keep_weights=True),
    ZooEntry("resnet50", zoo_resnet50),
    ZooEntry("distilbert", zoo_distilbert),
    ZooEntry("t5-small-encoder", zoo_t5_small_encoder),
    ZooEntry("vit-base", zoo_vit_base),
    ZooEntry("bert-base", zoo_bert_base),
    ZooEntry("gpt2", zoo_gpt2),
    ZooEntry("bert-large", zoo_bert_large),
    ZooEntry("llama-1b", zoo_llama_1b),
]


def example_specs() -> list[ExportSpec]:
    """The shipped examples. GPT decoder: GPT-2 small with a 32000-token vocabulary and 128 positions, so its
    largest weight (the 32000 x 768 embedding, 49 MB at fp16) fits one 64 MiB chiplet; GPT-2's own 50257-token
    embedding (77 MB at fp16) would not."""
    return [bert_spec("bert-base"),
            torch_spec("resnet18", ResNet((2, 2, 2, 2), 64), (1, 3, 224, 224)),
            gpt2_spec("gpt-decoder")]


def corpus_specs(seed: int) -> list[ExportSpec]:
    """Varied architectures for training; none repeats a shipped example's config."""
    rng = random.Random(seed)
    specs: list[ExportSpec] = []
    for i, (layers, hidden) in enumerate([(2, 256), (4, 256), (4, 512), (6, 384), (8, 512), (6, 768)]):
        specs.append(bert_spec(f"encoder-{i}-l{layers}-h{hidden}", layers, hidden, hidden // 64,
                               seq=rng.choice([64, 128, 256]), vocab=8000))
    for i, (layers, hidden) in enumerate([(2, 256), (4, 384), (6, 512), (8, 512), (4, 768)]):
        specs.append(gpt2_spec(f"decoder-{i}-l{layers}-h{hidden}", layers, hidden, hidden // 64,
                               seq=rng.choice([64, 128, 256]), vocab=8000))
    for i, (depths, width) in enumerate([((1, 1, 1, 1), 32), ((2, 2, 2, 2), 32), ((1, 2, 3, 1), 64),
                                         ((3, 4, 6, 3), 48)]):
        size = rng.choice([128, 160, 224])
        specs.append(torch_spec(f"cnn-{i}-w{width}-{size}", ResNet(depths, width), (1, 3, size, size)))
    for i, (layers, hidden) in enumerate([(4, 256), (6, 384), (8, 384)]):
        specs.append(vit_spec(f"vit-{i}-l{layers}-h{hidden}", layers, hidden, hidden // 64))
    for i, (depth, dim) in enumerate([(4, 256), (8, 384)]):
        specs.append(torch_spec(f"mixer-{i}-d{depth}-c{dim}", Mixer(depth, dim), (1, 3, 224, 224)))
    for i, widths in enumerate([(784, 1024, 1024, 10), (512, 2048, 2048, 2048, 512)]):
        specs.append(torch_spec(f"mlp-{i}", MLP(widths), (1, widths[0])))
    return specs


# --- export and strip -----------------------------------------------------------------------------------------------
def _export(spec: ExportSpec, path: str) -> None:
    spec.module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(spec.module, spec.inputs, path, input_names=list(spec.input_names),
                          output_names=list(spec.output_names), dynamic_axes=spec.dynamic_axes,
                          opset_version=OPSET, do_constant_folding=spec.constant_folding, dynamo=False)


def export_with_weights(spec: ExportSpec, out_dir: str) -> str:
    """Export `spec` to out_dir/<name>.onnx with its weights embedded (small models only); returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    dest = os.path.join(out_dir, f"{spec.name}.onnx")
    _export(spec, dest)
    onnx.checker.check_model(dest)
    return dest


def export_graph_only(spec: ExportSpec, out_dir: str) -> str:
    """Export `spec` to out_dir/<name>.onnx with its weights stripped; returns the path."""
    os.makedirs(out_dir, exist_ok=True)
    dest = os.path.join(out_dir, f"{spec.name}.onnx")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        full = os.path.join(tmp, "full.onnx")
        _export(spec, full)
        # Over 2 GB the exporter already wrote the weights as external files: leave them unread.
        model = onnx.load(full, load_external_data=False)
    data_name = f"{spec.name}.onnx.data"
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
    for tensor in model.graph.initializer:  # tensors the exporter had already made external: point them there too
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = data_name
    onnx.save_model(model, dest)
    data_path = os.path.join(out_dir, data_name)
    if os.path.exists(data_path):
        os.remove(data_path)  # graph-only: the references stay, the values go
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="examples", help="directory for the shipped examples")
    parser.add_argument("--corpus", metavar="DIR", help="export the training corpus to DIR instead")
    parser.add_argument("--zoo", metavar="DIR", help="export the zoo of full-size real architectures to DIR")
    parser.add_argument("--decoders", metavar="DIR", help="export the tiny decoder test models to DIR")
    parser.add_argument("--decoders-large", metavar="DIR", help="export full-size decoders, graph only, to DIR")
    parser.add_argument("--only", nargs="*", help="export only these names")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.decoders or args.decoders_large:
        return _export_decoders(args)
    if args.zoo:
        for entry in ZOO:
            if args.only and entry.name not in args.only:
                continue
            spec = entry.build()  # one model in memory at a time
            path = export_with_weights(spec, args.zoo) if entry.keep_weights else export_graph_only(spec, args.zoo)
            del spec
            print(f"{path}: {os.path.getsize(path) / 1e3:.0f} kB", file=sys.stderr)
        return 0
    specs = corpus_specs(args.seed) if args.corpus else example_specs()
    out_dir = args.corpus or args.out
    for spec in specs:
        if args.only and spec.name not in args.only:
            continue
        path = export_graph_only(spec, out_dir)
        print(f"{path}: {os.path.getsize(path) / 1e3:.0f} kB", file=sys.stderr)
    return 0


def _export_decoders(args: argparse.Namespace) -> int:
    import export_decoders as dec   # this script's directory is on sys.path
    jobs = [(f"{a.name}_{v}", lambda a=a, v=v: dec.export_tiny(a, v, args.decoders))
            for a in dec.TINY for v in dec.TINY_VARIANTS] if args.decoders else [
            (f"{a.name}-{e}", lambda a=a, e=e: dec.export_large(a, e == "dynamo", args.decoders_large))
            for a in dec.LARGE for e in ("legacy", "dynamo")]
    for name, job in jobs:
        if not args.only or name in args.only:
            path = job()
            print(f"{path}: {os.path.getsize(path) / 1e3:.0f} kB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
