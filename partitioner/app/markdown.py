"""report.md: the summary table, per-chiplet table and busiest links of a simulated partition, then the run's own
sections (interruption, tokens, provenance, groups and collectives, the optimality certificate)."""
from __future__ import annotations

import numpy as np

from partitioner.app.config import Outcome
from partitioner.app.document import token_metrics, whole_op_bound
from partitioner.app.memtier import memory_tier_markdown
from partitioner.app.plot import chiplet_stages
from partitioner.app.staged_cert import is_staged, staged_certificate_markdown, staged_solve_line
from partitioner.core.graph import TensorGraph
from partitioner.core.units import si
from partitioner.hw.hardware import Hardware
from partitioner.model.layout import simulated_experts, simulated_groups
from partitioner.model.partition import Partition
from partitioner.sim.report import Report


def report_markdown(report: Report, graph: TensorGraph, hw: Hardware, assignment: np.ndarray | Partition,
                    method: str, objective: str = "throughput") -> str:
    """A human-readable report: summary, per-chiplet table and the busiest links. Under --objective latency it
    says so and leads with the latency."""
    a = np.asarray(assignment.assignment if isinstance(assignment, Partition) else assignment, dtype=np.int64)
    counts, stage = chiplet_stages(hw, a)
    r = report
    throughput = [
        f"| throughput | {r.throughput_per_s:,.1f} inferences/s ({r.cycles_per_inference:,.0f} cycles/inference) |",
        f"| analytical bound | {r.bound_throughput_per_s:,.1f} inferences/s "
        f"({r.bound_cycles_per_inference:,.0f} cycles/inference); "
        f"{100 * r.throughput_per_s / r.bound_throughput_per_s:.1f}% of it |"]
    latency = [f"| latency | {si(r.latency_s, 's')} ({r.latency_cycles:,} cycles) |"]
    headline = throughput + latency
    if objective == "latency":
        latency[0] = latency[0][:-2] + f"; {1.0 / r.latency_s:,.1f} inferences/s one at a time |"
        headline = latency + throughput
    lines = [
        f"# Partition of {graph.name} on {hw.name}",
        "",
        f"Method: {method}. {graph.n_ops} ops on {int((counts > 0).sum())} of {hw.n_chiplets} chiplets "
        f"({hw.layout}, {hw.clock_hz / 1e9:g} GHz).",
        *(["", "Objective: latency, the time of one inference simulated alone in an empty package (docs/simulator.md, "
           "R9 and \"The latency objective\"); the throughput is that of the same plan with the pipeline full."]
          if objective == "latency" else []),
        "",
        "| metric | value |",
        "|---|---|",
        *headline,
        f"| energy per inference | {si(r.energy_j, 'J')} (compute {si(r.energy_breakdown_j['compute'], 'J')}, "
        f"SRAM {si(r.energy_breakdown_j['sram'], 'J')}, links {si(r.energy_breakdown_j['link'], 'J')}) |",
        f"| bottleneck | {r.bottleneck} |",
        *([f"| package-to-package traffic | {r.package_link_bytes_per_inference:,.0f} bytes/inference over "
           f"{hw.n_packages} packages of {hw.chiplets_per_package} chiplets |"] if hw.package_level else []),
        f"| mean chiplet utilisation | {100 * float(np.mean(r.chiplet_busy_fraction)):.1f}% |",
        f"| inferences simulated | {r.inferences_simulated} |",
        "",
        "## Chiplets",
        "",
        "| chiplet | stage | ops | busy cycles/inference | busy | memory |",
        "|---|---|---|---|---|---|",
    ]
    for c in range(hw.n_chiplets):
        st = str(int(stage[c])) if stage[c] >= 0 else "-"
        lines.append(f"| {c} | {st} | {int(counts[c])} | {r.chiplet_busy_cycles[c]:,} | "
                     f"{100 * r.chiplet_busy_fraction[c]:.1f}% | {100 * r.chiplet_memory_fraction[c]:.1f}% |")
    used = sorted(((u, name) for name, u in r.link_utilisation.items() if u > 0), reverse=True)
    lines += ["", "## Links", ""]
    if used:
        lines += ["| link | utilisation |", "|---|---|"]
        lines += [f"| {name} | {100 * u:.1f}% |" for u, name in used[:20]]
        if len(used) > 20:
            lines.append(f"| ({len(used) - 20} more) | |")
    else:
        lines.append("No tensor crosses a link.")
    return "\n".join(lines) + "\n"


def run_markdown(outcome: Outcome, graph: TensorGraph, a: np.ndarray, tier: dict) -> str:
    """report.md: the simulated partition (`graph`, `a`: as the simulator ran it), then the run's own sections;
    `tier` is app.memtier.memory_tier_document of the outcome."""
    rep = outcome.best.report
    return (_interrupted_markdown(outcome)
            + report_markdown(rep, graph, outcome.hw, a, outcome.method, outcome.objective)
            + _phase_markdown(graph, rep) + _provenance_markdown(outcome)
            + memory_tier_markdown(tier, outcome.graph, rep) + _groups_markdown(outcome) + _experts_markdown(outcome)
            + _certificate_markdown(outcome))


def _interrupted_markdown(outcome: Outcome) -> str:
    if outcome.interrupted is None:
        return ""
    return (f"> **Interrupted**: {outcome.interrupted}. This is the best valid partition of the "
            f"{outcome.evaluations} evaluations finished when the run stopped.\n\n")


def _phase_markdown(graph: TensorGraph, rep) -> str:
    m = token_metrics(graph, rep)
    if not m:
        return ""
    meta = graph.metadata
    what = (f"decode, one token per sequence reading a KV cache of {meta.get('context')} tokens"
            if meta.get("phase") == "decode" else f"prefill of {m['tokens_per_inference']} tokens")
    return (f"\n## Tokens ({what})\n\n| metric | value |\n|---|---|\n"
            f"| inferences/s | {rep.throughput_per_s:,.1f} |\n| tokens/s | {m['tokens_per_s']:,.1f} |\n"
            f"| time per token | {si(m['time_per_token_s'], 's')} |\n"
            f"| weight bytes read per inference | {m['weight_read_bytes']:,} |\n"
            f"| KV-cache bytes read per inference | {m['kv_cache_read_bytes']:,} |\n")


def _provenance_markdown(outcome: Outcome) -> str:
    if outcome.found_by is None:
        return f"\n## Found by\n\n{outcome.method}: its own search found this partition.\n"
    if outcome.evaluations == 0:
        return (f"\n## Found by\n\n{outcome.found_by}: the {outcome.method} search over whole-op plans found none "
                "that fits, so the run returns this split plan.\n")
    return (f"\n## Found by\n\n{outcome.found_by}: it scored above the best of the {outcome.method} search's "
            f"{outcome.evaluations} evaluations, so the run returns it.\n")


def _groups_markdown(outcome: Outcome) -> str:
    part = outcome.best.partition
    found = simulated_groups(outcome.graph, outcome.hw, part.assignment, part.shard)
    if not found:
        return ""
    lines = ["", "## Groups and collectives", "",
             "Ops split k ways run as k pieces on the group's chiplets (docs/simulator.md, S1-S7); the collective "
             "bytes are what the pieces and ring relays send per inference (all-gather of slices, all-reduce of "
             "partials, direct or as rings; all-to-all of routed tokens for expert ops).", "",
             "| chiplets | shard | ops | axes | collectives | rings | collective bytes |",
             "|---|---|---|---|---|---|---|"]
    for g in found:
        axes = ", ".join(f"{k} {v}" for k, v in g["axes"].items())
        colls = ", ".join(f"{k} {v}" for k, v in g["collectives"].items())
        lines.append(f"| {g['chiplets'][0]}..{g['chiplets'][-1]} | {g['shard']} | {g['ops']} | {axes} | {colls} | "
                     f"{g.get('rings', 0)} | {g['collective_bytes']:,} |")
    return "\n".join(lines) + "\n"


def _experts_markdown(outcome: Outcome) -> str:
    part = outcome.best.partition
    found = simulated_experts(outcome.graph, outcome.hw, part.assignment, part.shard)
    if not found:
        return ""
    lines = ["", "## Experts", "",
             "Mixture-of-experts ops split by expert (expert parallelism, docs/simulator.md): each chiplet of the "
             "group runs its experts' routed rows; tokens reach them and return by all-to-all messages sized by "
             "the routing. Bytes are what those messages put on the links per inference (a message that also "
             "serves another consumer on its chiplet counts once, at its size).", "",
             "| op | chiplets | experts per chiplet | rows per chiplet | dispatch bytes | combine bytes |",
             "|---|---|---|---|---|---|"]
    for f in found:
        experts = " / ".join(",".join(map(str, e)) for e in f["experts_per_chiplet"])
        rows = " / ".join(f"{r:g}" for r in f["rows_per_chiplet"])
        lines.append(f"| {f['op']} | {f['chiplets'][0]}..{f['chiplets'][-1]} | {experts} | {rows} | "
                     f"{f['dispatch_bytes']:,} | {f['combine_bytes']:,} |")
    return "\n".join(lines) + "\n"


def _whole_op_line(outcome: Outcome) -> str:
    whole = whole_op_bound(outcome)
    if whole is None:
        return ""
    return (f"\nPlans that split no op: CP-SAT ({outcome.certificate.info['whole_op_status']}) proves none exceeds "
            f"{whole:,.1f} inferences/s (its relaxation of R5-R8 with every op whole).\n")


def _latency_certificate_markdown(outcome: Outcome) -> str:
    bound = outcome.latency_bound_s
    if bound is None:
        return ""
    info, clock = outcome.certificate.info, outcome.hw.clock_hz
    lat = outcome.best.report.latency_s
    return (f"\n## Latency certificate\n\nWhat it bounds: the simulated latency of one inference (alone in an empty "
            f"package) under every plan this tool can output with ops split up to {info['max_shard']} ways (any "
            f"groups, whole ops, streamed weights). Every op keeps its chiplets busy for at least its least "
            f"chiplet-cycles (its k-way piece x k, at the best k and axis), and {outcome.hw.n_chiplets} chiplets "
            f"need at least {info['work_cycles']:,.0f} cycles for all of it ({si(info['work_cycles'] / clock, 's')}); "
            f"and each op's pieces start after a piece of each of its producers ends, so the heaviest path with "
            f"every op at its fastest piece, {info['path_cycles']:,.0f} cycles "
            f"({si(info['path_cycles'] / clock, 's')}), is a floor too (links, collectives and stream reads not charged). So no plan finishes an inference in "
            f"less than {outcome.certificate.lower_bound_cycles:,.0f} cycles, **{si(bound, 's')}** "
            f"(analytical, not proven tight; docs/simulator.md, \"The latency objective\"). This plan takes "
            f"{si(lat, 's')}: the bound is {100 * bound / lat:.1f}% of it, a gap of at most "
            f"{100 * (1 - bound / lat):.1f}%.\n")


def _certificate_markdown(outcome: Outcome) -> str:
    if outcome.objective == "latency":
        return _latency_certificate_markdown(outcome)
    bound = outcome.solver_bound_throughput_per_s
    if bound is None:
        return ""
    thr = outcome.best.report.throughput_per_s
    cert = outcome.certificate
    if is_staged(cert):
        return staged_certificate_markdown(cert, bound, thr) + _whole_op_line(outcome)
    if cert.status == "analytical":
        return (f"\n## Optimality certificate\n\nOps may split across groups, so CP-SAT's whole-op bound does not "
                f"apply and this certificate is analytical, not proven tight by CP-SAT: no partition the tool can "
                f"output (any stages, groups and shard degrees up to {cert.info['max_shard']}) has its busiest "
                f"chiplet below {cert.lower_bound_cycles:,.0f} cycles per "
                f"inference (perfect balance of the least chiplet-cycles of every op, free links, no op faster than "
                f"its smallest piece), so none exceeds {bound:,.1f} inferences/s in the simulator. This partition "
                f"reaches {thr:,.1f}/s: at least {100 * thr / bound:.1f}% of the best possible; the gap is at most "
                f"{100 * (1 - thr / bound):.1f}%." + (" " + staged_solve_line(cert) if staged_solve_line(cert) else "")
                + "\n" + _whole_op_line(outcome))
    tier = ""
    if outcome.hw.memory_stacks:
        tier = (f", a memory stack's reads (streamed weights, amortised over batch {outcome.batch}); any choice of "
                "which weights stream is covered")
    proven = ("CP-SAT proved this bound tight (optimal)." if cert.status == "optimal" else
              f"CP-SAT did not prove optimality within its time limit: its best partition in the cost model is "
              f"{cert.objective_cycles:,.0f} cycles, a gap of {100 * (cert.gap or 0.0):.1f}% to the bound.")
    return (f"\n## Optimality certificate\n\nWhat it bounds: the simulated steady-state throughput of every "
            f"partition this tool can output on {outcome.hw.name} (pipeline order, memory and pins valid). The "
            f"simulator's cycles per inference are never below the busiest resource's busy cycles per inference "
            f"(a chiplet's op cycles, the average over a chiplet's out-links of what it sends{tier}); CP-SAT "
            f"({cert.status}, {cert.solve_time_s:.1f} s) proves that in every valid partition that busiest "
            f"resource has at least {cert.lower_bound_cycles:,.0f} cycles per inference, so none exceeds "
            f"{bound:,.1f} inferences/s. {proven} This partition reaches {thr:,.1f}/s: at least "
            f"{100 * thr / bound:.1f}% of the best possible.\n")
