"""What a loaded model looks like: op counts before and after coarsening, flops, parameters, top op types."""
from __future__ import annotations

from collections import defaultdict

from partitioner.core.graph import TensorGraph
from partitioner.core.units import si


def summarize(graph: TensorGraph, top: int = 8) -> dict:
    """Headline numbers of a TensorGraph (from load_onnx or synthetic) as a JSON-friendly dict.

    param_bytes is the sum of every op's weight bytes (a weight read by two ops counts twice: both chiplets
    would hold it). top_op_types lists the `top` op types by flops with their share of the total.
    """
    meta = graph.metadata
    flops = graph.total_flops
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for op in graph.ops:
        by_type[op.op_type][0] += 1
        by_type[op.op_type][1] += op.flops
    ranked = sorted(by_type.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))[:top]
    return {
        "name": graph.name,
        "ops": graph.n_ops,
        "edges": graph.n_edges,
        "ops_before_coarsening": int(meta.get("ops_before_coarsening", graph.n_ops)),
        "onnx_nodes": sum(len(op.onnx_nodes) for op in graph.ops),
        "onnx_nodes_total": int(meta.get("onnx_nodes_total", sum(len(op.onnx_nodes) for op in graph.ops))),
        "flops": flops,
        "matrix_flops": int(graph.matrix_flops.sum()),
        "param_bytes": graph.total_weight_bytes,
        "input_bytes": graph.input_bytes,
        "max_activation_bytes": int(graph.out_bytes.max()) if graph.n_ops else 0,
        "precision": meta.get("precision", "fp32"),
        "input_shapes": {k: list(v) for k, v in meta.get("input_shapes", {}).items()},
        "top_op_types": [{"op_type": t, "count": c, "flops": f, "share": (f / flops if flops else 0.0)}
                         for t, (c, f) in ranked],
        "granularity": meta.get("granularity", "fused"),
        "phase": meta.get("phase"),
        "context": meta.get("context"),
        "kv_cache_bytes": int(graph.kv_cache_bytes.sum()),
    }


def format_summary(summary: dict) -> str:
    """A short human-readable table of `summarize`'s output (the CLI prints it)."""
    s = summary
    shapes = ", ".join(f"{k}={'x'.join(map(str, v))}" for k, v in s.get("input_shapes", {}).items())
    matrix_share = s["matrix_flops"] / s["flops"] if s["flops"] else 0.0
    lines = [
        f"model          {s['name']}" + (f"  ({shapes})" if shapes else ""),
        f"ops            {s['ops']} after coarsening, {s['ops_before_coarsening']} before "
        f"({s['onnx_nodes']} of {s['onnx_nodes_total']} ONNX nodes do compute)",
        f"flops          {si(s['flops'], 'FLOP', 4)} ({matrix_share:.1%} matrix: {si(s['matrix_flops'], 'FLOP', 4)})",
        f"parameters     {si(s['param_bytes'], 'B', 4)} at {s['precision']}"
        + (f" (of which KV cache {si(s['kv_cache_bytes'], 'B', 4)})" if s.get("kv_cache_bytes") else ""),
        *([f"phase          {s['phase']}" + (f", context {s['context']} tokens" if s.get("context") is not None else "")]
          if s.get("phase") else []),
        *([f"granularity    {s['granularity']}"] if s.get("granularity", "fused") != "fused" else []),
        "",
        f"{'op type':<22}{'count':>7}{'flops':>14}{'share':>8}",
    ]
    for row in s["top_op_types"]:
        lines.append(f"{row['op_type']:<22}{row['count']:>7}{si(row['flops'], 'FLOP', 4):>14}{row['share']:>8.1%}")
    return "\n".join(lines)
