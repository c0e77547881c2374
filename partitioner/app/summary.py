"""The terminal summaries: what a loaded model looks like (`partition inspect`: op counts before and after
coarsening, flops, parameters, top op types) and what a run found (the lines `partition MODEL.onnx` prints)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from partitioner.app.config import Outcome
from partitioner.app.document import token_metrics, whole_op_bound
from partitioner.app.staged_cert import is_staged
from partitioner.core.graph import TensorGraph
from partitioner.model.layout import simulated_experts, simulated_groups
from partitioner.core.units import si
from partitioner.hw.order import order_name


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
        "decoder_evidence": meta.get("decoder_evidence"),
        "tokens_per_inference": meta.get("tokens_per_inference"),
        "decode_import": meta.get("decode_import"),
        "moe": _moe_summary(graph),
    }


def _moe_summary(graph: TensorGraph) -> dict | None:
    """Mixture-of-experts layers: how many, experts, top-k, tokens and the rows each expert runs per inference."""
    moe = [op.experts for op in graph.ops if op.experts is not None]
    if not moe:
        return None
    return {"layers": len(moe), "experts": moe[0].count, "top_k": moe[0].top_k, "tokens": moe[0].tokens,
            "rows_per_expert": [round(r, 4) for r in moe[0].rows],
            "routing": graph.metadata.get("routing") or "uniform"}


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
        *([f"phase          {s['phase']}" + (f", context {s['context']} tokens" if s.get("context") is not None else "")
           + _step_text(s), f"decoder        {s['decoder_evidence']}"] if s.get("phase") else []),
        *([f"granularity    {s['granularity']}"] if s.get("granularity", "fused") != "fused" else []),
        *([_moe_line(s["moe"])] if s.get("moe") else []),
        "",
        f"{'op type':<22}{'count':>7}{'flops':>14}{'share':>8}",
    ]
    for row in s["top_op_types"]:
        lines.append(f"{row['op_type']:<22}{row['count']:>7}{si(row['flops'], 'FLOP', 4):>14}{row['share']:>8.1%}")
    return "\n".join(lines)


def _moe_line(m: dict) -> str:
    rows = sorted(set(m["rows_per_expert"]))
    spread = f"{rows[0]:g}" if len(rows) == 1 else f"{rows[0]:g}-{rows[-1]:g}"
    return (f"experts        {m['layers']} MoE layers of {m['experts']} experts, top-{m['top_k']}: {m['tokens']} "
            f"tokens run {spread} rows per expert ({m['routing']} routing); flops count {m['top_k']} of "
            f"{m['experts']} experts per token")


def _step_text(s: dict) -> str:
    """What a decode step holds and what it was scaled from (an export fixed at a sequence length, a past cache)."""
    imp = s.get("decode_import")
    if not imp:
        return ""
    n = s.get("tokens_per_inference") or 1
    text = f", {n} sequence{'s' * (n != 1)} x 1 new token"
    if imp["positions"] != 1 or imp["keys"] != 1:
        text += f" (scaled from the export's {imp['positions']} positions, {imp['keys']} keys)"
    return text


# --- a run's outcome ------------------------------------------------------------------------------------------
def _token_rows(graph: TensorGraph, rep) -> list[tuple[str, str]]:
    m = token_metrics(graph, rep)
    if not m:
        return []
    return [("tokens", f"{m['tokens_per_s']:,.1f} tokens/s ({graph.metadata.get('phase')}, "
                       f"{m['tokens_per_inference']} per inference), {si(m['time_per_token_s'], 's')} per token"),
            ("traffic", f"{m['weight_read_bytes'] / 1e6:,.1f} MB weights + {m['kv_cache_read_bytes'] / 1e6:,.1f} MB "
                        "KV cache read per inference")]


def _groups_line(outcome: Outcome) -> str:
    part = outcome.best.partition
    if part.shard is None:
        return "none (every op whole)"
    found = simulated_groups(outcome.graph, outcome.hw, part.assignment, part.shard)
    sizes = sorted({g["shard"] for g in found})
    return (f"{len(found)} group{'s' * (len(found) != 1)} of {'/'.join(map(str, sizes))} chiplets, {int((part.shard > 1).sum())} ops split "
            f"(report.md, 'Groups and collectives')")


def _experts_rows(outcome: Outcome) -> list[tuple[str, str]]:
    """Mixture-of-experts models: how the experts were placed and what their all-to-alls carry."""
    part = outcome.best.partition
    found = simulated_experts(outcome.graph, outcome.hw, part.assignment, part.shard)
    if not found:
        return []
    first = found[0]
    spread = sorted({len(f["chiplets"]) for f in found})
    per = sorted({len(e) for f in found for e in f["experts_per_chiplet"]})
    moved = sum(f["dispatch_bytes"] + f["combine_bytes"] for f in found)
    where = ("each whole on one chiplet" if spread == [1] else
             f"each on {'/'.join(map(str, spread))} chiplets, {'/'.join(map(str, per))} experts per chiplet")
    return [("experts", f"{len(found)} MoE layer{'s' * (len(found) != 1)} of {first['experts']} experts "
                        f"(top-{first['top_k']}), {where}; all-to-all {moved:,} B per inference "
                        "(report.md, 'Experts')")]


def _headline(outcome: Outcome) -> list[tuple[str, str]]:
    """Throughput then latency; under --objective latency, latency (and 1 / latency) first."""
    rep = outcome.best.report
    if outcome.objective != "latency":
        return [("throughput", f"{rep.throughput_per_s:,.1f} inferences/s"), *_token_rows(outcome.graph, rep),
                ("latency", si(rep.latency_s, "s"))]
    return [("objective", "latency: one inference at a time (--objective latency)"),
            ("latency", f"{si(rep.latency_s, 's')} per inference ({1.0 / rep.latency_s:,.1f} inferences/s one at a "
                        f"time)"),
            ("throughput", f"{rep.throughput_per_s:,.1f} inferences/s streamed (pipeline full)"),
            *_token_rows(outcome.graph, rep)]


def _latency_certificate_row(outcome: Outcome) -> tuple[str, str] | None:
    bound = outcome.latency_bound_s
    if bound is None:
        return None
    info, clock, lat = outcome.certificate.info, outcome.hw.clock_hz, outcome.best.report.latency_s
    return ("certificate", f">= {si(bound, 's')} per inference analytical (max of the work at the package's rate, "
                           f"{si(info['work_cycles'] / clock, 's')}, and the critical path at the fastest pieces, "
                           f"{si(info['path_cycles'] / clock, 's')}; ops split up to {info['max_shard']} ways); "
                           f"the bound is {100 * bound / lat:.1f}% of this latency (gap at most "
                           f"{100 * (1 - bound / lat):.1f}%)")


def format_outcome(outcome: Outcome) -> str:
    rep, hw = outcome.best.report, outcome.hw
    rows = [
        ("model", f"{outcome.model} ({outcome.graph.n_ops} ops, {outcome.graph.total_flops / 1e9:.2f} GFLOP)"),
        ("hardware", f"{hw.name}: {hw.n_chiplets} chiplets, {hw.layout}"
                     + ("" if hw.places is None else f", pipeline order {order_name(hw)} (docs/hardware.md)")),
        ("method", f"{outcome.method}: {outcome.evaluations} evaluation{'s' * (outcome.evaluations != 1)} in {outcome.wall_s:.1f} s, "
                   + (f"repair moved {outcome.best.partition.ops_moved} ops" if outcome.found_by is None
                      else f"best found by {outcome.found_by.split(',')[0]}")),
        *_headline(outcome),
        ("energy", f"{si(rep.energy_j, 'J')} per inference"),
        ("utilisation", f"mean {100 * float(np.mean(rep.chiplet_busy_fraction)):.1f}%, "
                        f"max {100 * float(np.max(rep.chiplet_busy_fraction)):.1f}%"),
        ("bottleneck", rep.bottleneck),
        ("groups", _groups_line(outcome)),
        *_experts_rows(outcome),
        ("bound" if outcome.objective != "latency" else "throughput bound",
         f"{rep.bound_throughput_per_s:,.1f}/s analytical (perfect balance)"),
    ]
    latency_row = _latency_certificate_row(outcome)
    if latency_row is not None:
        rows.append(latency_row)
    solver_bound = outcome.solver_bound_throughput_per_s
    if solver_bound is not None:
        cert = outcome.certificate
        prover = "CP-SAT" if cert.info.get("staged_bound_source") == "cp-sat" else "pipeline order (window bound)"
        how = ("analytical (ops may split; not proven tight by CP-SAT)" if cert.status == "analytical"
               else f"proven over split plans by {prover} ({cert.status}, gap {100 * (cert.gap or 0.0):.1f}%)"
               if is_staged(cert) else f"proven by CP-SAT ({cert.status})")
        if cert.status == "analytical" and cert.info.get("staged_status") in ("optimal", "feasible"):
            how += (f"; CP-SAT over split plans ({cert.info['staged_status']}) proves no more, gap "
                    f"{100 * (cert.info['staged_gap'] or 0.0):.1f}%")
        whole = whole_op_bound(outcome)
        if whole is not None:
            how += f"; without splits <= {whole:,.1f}/s ({outcome.certificate.info['whole_op_status']})"
        rows.append(("certificate", f"{solver_bound:,.1f}/s {how}; "
                                    f"this is {100 * rep.throughput_per_s / solver_bound:.1f}% of it"))
    if outcome.files:
        rows.append(("written", ", ".join(outcome.files)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
