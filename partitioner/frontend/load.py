"""Read an ONNX model into a TensorGraph: resolved shapes, exact per-op costs, coarsened ops.

Pipeline, one module per step: read the file and fix the input shapes (read.py) -> infer shapes and fold
constant/shape subgraphs (fold.py) -> cost every remaining node (op_cost.py) -> fuse cheap elementwise and
data-movement nodes into their producer and wire the edges (coarsen.py) -> TensorGraph.
What is counted, per op type, is documented in docs/onnx_import.md.
"""
from __future__ import annotations

import math
import os

import onnx

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.frontend.coarsen import build_ops, group_nodes
from partitioner.frontend.decoder import check_phase
from partitioner.frontend.fold import Folded, Tensors, collect_shapes, fold_constants, infer_shapes, \
    resolve_remaining_shapes
from partitioner.frontend.granularity import GRANULARITIES
from partitioner.frontend.moe import bound_routed_counts, find_blocks
from partitioner.frontend.moe_cost import apply_routing, attach_experts, read_routing
from partitioner.frontend.one_token import decode_step
from partitioner.frontend.op_cost import PRECISION_BYTES, cost_nodes, tensor_bytes
from partitioner.frontend.read import ModelInputs, ordered_nodes, read_initializers, read_inputs, read_model


def load_onnx(path: str | os.PathLike, input_shapes: dict[str, tuple[int, ...]] | None = None,
              precision: str = "fp32", *, granularity: str = "fused", phase: str | None = None,
              context: int | None = None, decoder: bool = False, sequences: int = 1,
              routing: str | os.PathLike | None = None) -> TensorGraph:
    """Read the ONNX model at `path` into a coarsened TensorGraph with exact per-op costs.

    input_shapes: concrete shape per model input name; overrides the defaults for symbolic dims
        (first dim -> 1, other symbolic dims -> 128).
    precision: fp32|fp16|bf16|fp8|int8, the bytes per element (4/2/2/1/1) of every floating-point tensor, weights
        and activations; integer tensors keep the size of their own type.
    granularity: fused (cheap nodes fused into their producer), node (one op per ONNX compute node) or layer
        (repeated blocks found from the exporter's name scopes, partitioner/frontend/granularity.py).
    phase, context: for decoders, prefill (the whole sequence) or decode (one new token per sequence, each
        attention product reading a KV cache of `context` tokens, whatever sequence the file was exported at:
        partitioner/frontend/one_token.py). None: the plain whole-sequence pass.
    decoder: treat the model as a decoder even where no causal mask or KV cache is found (`--decoder`).
    sequences: decode only, the sequences one step decodes together (`--batch`): symbolic batch dims default to
        it, a fixed batch is scaled to it.
    routing: a JSON file of measured expert loads for mixture-of-experts layers (`--routing`); None: uniform
        top-k routing (partitioner/frontend/moe_cost.py).
    """
    _check_options(precision, granularity)
    loads = read_routing(routing) if routing is not None else None
    model = read_model(path)
    evidence = check_phase(model.graph, phase, context, os.fspath(path), decoder=decoder, sequences=sequences)
    decode_context = (context or 0) if phase == "decode" else None
    inits = read_initializers(model.graph)
    inputs = read_inputs(model.graph, inits, input_shapes, decode=decode_context is not None,
                         batch=sequences if decode_context is not None else 1)
    inferred = infer_shapes(model, inputs.shapes)
    bound_routed_counts(inferred)
    tensors = collect_shapes(inferred, model, inits)
    nodes, names = ordered_nodes(model.graph)
    folded = fold_constants(nodes, tensors, path)
    resolve_remaining_shapes(tensors, nodes, names, folded, model=model, inferred=inferred, path=path,
                             inputs=inputs)
    nbytes = tensor_bytes(tensors.shapes, tensors.dtypes, precision)
    costs = cost_nodes(nodes, names, folded, tensors.shapes)
    tokens, step = (_prompt_tokens(inputs) if phase is not None else None), None
    if decode_context is not None:
        costs, nbytes, step = decode_step(costs, nodes, folded, tensors.shapes, inputs, nbytes, decode_context,
                                          sequences)
        tokens = sequences
    blocks = find_blocks(nodes, names, folded, tensors.shapes, costs, {o.name for o in model.graph.output})
    if loads is not None and not blocks:
        raise UserError(f"--routing gives expert loads but {os.fspath(path)} has no mixture-of-experts layer",
                        "drop --routing for this model")
    costs, experts = apply_routing(blocks, nodes, folded, tensors.shapes, costs, nbytes, precision, loads)
    forced = {i: b.root for b in blocks if b.root in experts for i in b.nodes}
    groups = group_nodes(nodes, names, folded, granularity, forced)
    ops, edges = build_ops(model.graph, nodes, names, folded, groups, costs, nbytes)
    ops = attach_experts(ops, blocks, experts, nodes, names)
    metadata = _metadata(path, model.graph, inputs, nodes, names, folded, tensors, precision=precision,
                         granularity=granularity, phase=phase, context=decode_context) | {
        "tokens_per_inference": tokens, "decoder_evidence": evidence,
        "sequences": sequences if step else None,
        "routing": None if loads is None else os.fspath(routing),
        # what a decode step was scaled from: positions and keys per sequence, and sequences, as imported
        "decode_import": step and {"positions": step.positions, "keys": step.keys, "sequences": step.imported}}
    name = os.path.splitext(os.path.basename(os.fspath(path)))[0]
    return TensorGraph.build(name, ops, edges, sum(nbytes(vi.name) for vi in inputs.value_infos), metadata)


def _check_options(precision: str, granularity: str) -> None:
    if precision not in PRECISION_BYTES:
        raise UserError(f"unknown precision '{precision}'", f"use one of {', '.join(PRECISION_BYTES)}")
    if granularity not in GRANULARITIES:
        raise UserError(f"unknown granularity '{granularity}'", f"use one of {', '.join(GRANULARITIES)}")


def _prompt_tokens(inputs: ModelInputs) -> int:
    """Tokens one prefill inference processes: the elements of the first integer input (the token ids), else 1."""
    for vi in inputs.value_infos:
        if vi.type.tensor_type.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            return math.prod(inputs.shapes[vi.name])
    return 1


def _metadata(path, graph, inputs: ModelInputs, nodes: list, names: list[str], folded: Folded, tensors: Tensors,
              *, precision: str, granularity: str, phase: str | None, context: int | None) -> dict:
    """What the graph was loaded from and at, plus the ONNX-level detail later stages map ops back with."""
    return {
        "model_path": os.fspath(path), "precision": precision, "input_shapes": inputs.shapes,
        "onnx_nodes_total": len(graph.node), "ops_before_coarsening": len(folded.kept),
        "granularity": granularity, "phase": phase, "context": context,
        # The name each ONNX node got here, keyed by its first output (unique in a valid model): split_onnx
        # finds the nodes of each op by it without repeating the naming rule.
        "onnx_node_names": {next((o for o in n.output if o), ""): nm for n, nm in zip(nodes, names)},
        # Every tensor shape resolved at these input shapes: split_onnx types the tensors crossing between
        # stages with them where ONNX's own inference cannot.
        "tensor_shapes": {t: tuple(s) for t, s in tensors.shapes.items() if s is not None and None not in s},
    }
