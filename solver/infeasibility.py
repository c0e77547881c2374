"""Why no valid partition exists, said with the numbers, as a UserError.

The cheap checks run before any model is built (`check_feasible`), and `stage_domains` turns pins and unsupported
op types into the range of chiplets each op can still take, which the CP-SAT models use to drop variables. When
CP-SAT proves a model infeasible and none of the cheap checks fired, `explain_infeasible` says so with the memory
totals (memory and pipeline order together are what is left).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from partitioner.core.errors import DoesNotFit, UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware

_MORE_MEMORY = "use more chiplets (--chiplets), chiplets with more SRAM, or a lower --precision"


@dataclass(frozen=True)
class StageDomains:
    """Where each op can still go once pins, unsupported op types and pipeline order are taken into account.

    allowed: bool [n_ops, n_chiplets], chiplets that can run the op and lie in [lo, hi].
    lo, hi: int [n_ops], the first and last chiplet the op can take (both allowed).
    """

    allowed: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def _mib(nbytes: float) -> str:
    return f"{nbytes / (1 << 20):.1f} MiB"


def normalize_pins(graph: TensorGraph, hw: Hardware, pinned: Mapping | None) -> dict[int, int]:
    """Pins as {op id: chiplet id}; keys may be op ids or op names. Bad ids are UserErrors."""
    out: dict[int, int] = {}
    for key, chiplet in (pinned or {}).items():
        if isinstance(key, str):
            try:
                op = graph.op_index(key)
            except KeyError:
                raise UserError(f"pinned op {key!r} is not in graph {graph.name}",
                                "pin ops by the names shown in the partition report") from None
        else:
            op = int(key)
            if not 0 <= op < graph.n_ops:
                raise UserError(f"pinned op id {op} is outside 0..{graph.n_ops - 1}", "pin existing ops")
        chiplet = int(chiplet)
        if not 0 <= chiplet < hw.n_chiplets:
            raise UserError(f"op {graph.ops[op].name} is pinned to chiplet {chiplet}, outside "
                            f"0..{hw.n_chiplets - 1}", "pin to an existing chiplet")
        out[op] = chiplet
    return out


def _runnable(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """bool [n_ops, n_chiplets]: chiplet c can run op i's type."""
    types = sorted({op.op_type for op in graph.ops})
    can = {t: np.array([t not in chip.unsupported_ops for chip in hw.chiplets]) for t in types}
    return np.stack([can[op.op_type] for op in graph.ops]) if graph.n_ops else np.zeros((0, hw.n_chiplets), bool)


def stage_domains(graph: TensorGraph, hw: Hardware, pinned: Mapping[int, int] | None = None) -> StageDomains:
    """Bounds-consistent chiplet ranges: s_u <= s_v on every edge, pins fixed, unsupported chiplets removed.

    Raises UserError naming the op (and the pins that box it in) when some op has nowhere left to go.
    """
    pins = normalize_pins(graph, hw, pinned)
    n, n_chip = graph.n_ops, hw.n_chiplets
    allowed = _runnable(graph, hw)
    for op, chiplet in pins.items():
        if not allowed[op, chiplet]:
            raise UserError(f"op {graph.ops[op].name} ({graph.ops[op].op_type}) is pinned to chiplet {chiplet}, "
                            f"which cannot run {graph.ops[op].op_type}", "pin it to a chiplet that supports it")
        allowed[op] = False
        allowed[op, chiplet] = True
    for i in np.flatnonzero(~allowed.any(axis=1)).tolist():
        op = graph.ops[i]
        raise UserError(f"op {op.name} has type {op.op_type}, which no chiplet can run",
                        f"use hardware with a chiplet that supports {op.op_type} (drop it from unsupported_ops)")
    # Bounds s_u <= s_v propagated forward (lo) and backward (hi) in topological order, each bumped to the nearest
    # runnable chiplet; lo_from / hi_from remember the op (a pin, or the op itself) that set the bound.
    lo = allowed.argmax(axis=1).astype(np.int64)
    hi = (n_chip - 1 - allowed[:, ::-1].argmax(axis=1)).astype(np.int64)
    lo_from, hi_from = np.arange(n), np.arange(n)
    preds: list[list[int]] = [[] for _ in range(n)]
    succs: list[list[int]] = [[] for _ in range(n)]
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        preds[v].append(u)
        succs[u].append(v)
    for v in range(n):
        for u in preds[v]:
            if lo[u] > lo[v]:
                lo[v], lo_from[v] = lo[u], lo_from[u]
        if lo[v] < n_chip and not allowed[v, lo[v]]:
            nxt = np.flatnonzero(allowed[v, lo[v]:])
            lo[v] = lo[v] + nxt[0] if nxt.size else n_chip
    for u in range(n - 1, -1, -1):
        for v in succs[u]:
            if hi[v] < hi[u]:
                hi[u], hi_from[u] = hi[v], hi_from[v]
        if hi[u] >= 0 and not allowed[u, hi[u]]:
            prev = np.flatnonzero(allowed[u, :hi[u] + 1])
            hi[u] = prev[-1] if prev.size else -1
    _explain_crossed_bounds(graph, hw, pins, lo, hi, lo_from, hi_from)
    mask = np.zeros_like(allowed)
    for i in range(n):
        mask[i, lo[i]:hi[i] + 1] = allowed[i, lo[i]:hi[i] + 1]
    return StageDomains(mask, lo, hi)


def _explain_crossed_bounds(graph, hw, pins, lo, hi, lo_from, hi_from) -> None:
    n_chip = hw.n_chiplets
    for i in np.flatnonzero(lo > hi).tolist():
        a, b = int(lo_from[i]), int(hi_from[i])
        name = graph.ops[i].name
        if a in pins and b in pins and pins[a] > pins[b]:
            raise UserError(f"op {graph.ops[a].name} is pinned to chiplet {pins[a]} but op {graph.ops[b].name}, "
                            f"which depends on it, is pinned to chiplet {pins[b]}; pipeline order needs "
                            f"chiplet({graph.ops[a].name}) <= chiplet({graph.ops[b].name})",
                            "change one of the two pins")
        low = min(int(lo[i]), n_chip - 1)
        why = []
        if a in pins:
            why.append(f"after op {graph.ops[a].name} pinned to chiplet {pins[a]}")
        if b in pins:
            why.append(f"before op {graph.ops[b].name} pinned to chiplet {pins[b]}")
        raise UserError(f"op {name} ({graph.ops[i].op_type}) has no chiplet left: pipeline order puts it "
                        f"{' and '.join(why) or 'between its neighbours'}, and none of chiplets "
                        f"{low}..{max(int(hi[i]), low)} that are left can run {graph.ops[i].op_type}",
                        "change the pins or the chiplets' unsupported_ops")


def check_feasible(graph: TensorGraph, hw: Hardware, pinned: Mapping[int, int] | None = None) -> StageDomains:
    """The cheap necessary conditions; raises UserError with the numbers, else returns the stage domains."""
    dom = stage_domains(graph, hw, pinned)
    sram = np.array([c.sram_bytes for c in hw.chiplets], dtype=np.int64)
    tier = bool(hw.memory_stacks)   # with a memory tier any weight may stream: only activations must fit SRAM
    need = graph.work_bytes + (0 if tier else graph.weight_bytes)
    # One op larger than every chiplet it may go to.
    best = np.where(dom.allowed, sram[None, :], 0).max(axis=1) if graph.n_ops else np.zeros(0, np.int64)
    for i in np.flatnonzero(need > best).tolist():
        op = graph.ops[i]
        if tier:
            raise DoesNotFit(f"op {op.name} needs {need[i]} bytes ({_mib(need[i])}) of activations (inputs + "
                             f"outputs) but the largest chiplet it can use has {best[i]} bytes ({_mib(best[i])}) "
                             f"of SRAM, short by {need[i] - best[i]} bytes; streaming weights cannot help",
                             "use chiplets with more SRAM, a lower --precision or a shorter sequence")
        raise DoesNotFit(f"op {op.name} needs {need[i]} bytes ({_mib(need[i])}: {graph.weight_bytes[i]} of weights "
                         f"+ {graph.work_bytes[i]} of activations) but the largest chiplet it can use has "
                         f"{best[i]} bytes ({_mib(best[i])}) of SRAM",
                         "use chiplets with more SRAM or a lower --precision")
    _check_runnable_capacity(graph, hw, dom, sram)
    # Everything together: all weights plus at least the largest working set.
    total_w = int(graph.weight_bytes.sum())
    min_act = int(graph.work_bytes.max()) if graph.n_ops else 0
    total_sram = int(sram.sum())
    if tier:
        stacks = sum(st.capacity_bytes for st in hw.memory_stacks)
        if total_w + min_act > total_sram + stacks:
            short = total_w + min_act - total_sram - stacks
            raise DoesNotFit(f"the model does not fit even with the memory tier: it needs at least {total_w + min_act} "
                             f"bytes ({_mib(total_w + min_act)}: {total_w} of weights + {min_act} of activations) but "
                             f"the package has {total_sram} bytes of SRAM and {stacks} bytes in "
                             f"{len(hw.memory_stacks)} memory stacks, short by {short} bytes ({_mib(short)})",
                             "use more or larger memory stacks (capacity_gib), more chiplets or a lower --precision")
    elif total_w + min_act > total_sram:
        raise DoesNotFit(f"the model needs at least {total_w + min_act} bytes ({_mib(total_w + min_act)}: "
                         f"{total_w} of weights + {min_act} of activations) but the {hw.n_chiplets} chiplets "
                         f"have {total_sram} bytes ({_mib(total_sram)}) of SRAM in all", _MORE_MEMORY)
    # Ops with a single possible chiplet (pinned, or boxed in by pins) overflowing it.
    fixed = dom.lo == dom.hi
    for c in range(hw.n_chiplets):
        on = fixed & (dom.lo == c)
        if not on.any():
            continue
        used = int((0 if tier else graph.weight_bytes[on].sum()) + graph.work_bytes[on].max())
        if used > sram[c]:
            names = ", ".join(graph.ops[i].name for i in np.flatnonzero(on)[:5].tolist())
            more = "" if on.sum() <= 5 else f" and {int(on.sum()) - 5} more"
            raise UserError(f"the ops that must sit on chiplet {c} ({names}{more}; pinned or boxed in by pins) "
                            f"need {used} bytes ({_mib(used)}) but it has {sram[c]} ({_mib(sram[c])})",
                            "pin fewer ops to that chiplet or give it more SRAM")
    return dom


def _unsupported_summary(graph: TensorGraph, hw: Hardware) -> str:
    """'chiplets 4-11 cannot run MatMul, Softmax (120 of the model's 175 ops)', or '' when op types restrict
    nothing in this graph."""
    types = {op.op_type for op in graph.ops}
    limited = [c for c, chip in enumerate(hw.chiplets) if types & set(chip.unsupported_ops)]
    if not limited:
        return ""
    missing = sorted(types & set().union(*(hw.chiplets[c].unsupported_ops for c in limited)))
    n_ops = sum(op.op_type in missing for op in graph.ops)
    shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
    return (f"chiplets {_ranges(limited)} cannot run {shown} ({n_ops} of the model's {graph.n_ops} ops), "
            f"so those ops must fit in the other chiplets")


def _ranges(ids: list[int]) -> str:
    out, start = [], ids[0]
    for prev, cur in zip(ids, ids[1:] + [None]):
        if cur != prev + 1:
            out.append(str(start) if start == prev else f"{start}-{prev}")
            start = cur
    return ", ".join(out)


def _check_runnable_capacity(graph: TensorGraph, hw: Hardware, dom: StageDomains, sram: np.ndarray) -> None:
    """Ops that can only go to a set of chiplets (op types the others cannot run, pins) must fit that set's SRAM
    together: for every distinct set of allowed chiplets P, the weights of the ops allowed only within P plus the
    largest working set among them <= SRAM of P. Names the op types when unsupported_ops are the reason."""
    patterns = {row.tobytes(): row for row in dom.allowed} if graph.n_ops else {}
    for row in patterns.values():
        if row.all():
            continue
        inside = ~(dom.allowed & ~row[None, :]).any(axis=1)
        need = int(graph.weight_bytes[inside].sum() + graph.work_bytes[inside].max())
        cap = int(sram[row].sum())
        if need > cap:
            types = sorted({graph.ops[i].op_type for i in np.flatnonzero(inside).tolist()})
            chips = np.flatnonzero(row).tolist()
            why = _unsupported_summary(graph, hw)
            raise UserError(f"{int(inside.sum())} ops ({', '.join(types[:6])}{' ...' if len(types) > 6 else ''}) "
                            f"can only run on chiplets {_ranges(chips)}, which have {cap} bytes ({_mib(cap)}) of "
                            f"SRAM, but they need {need} bytes ({_mib(need)})" + (f": {why}" if why else ""),
                            "drop those op types from the chiplets' unsupported_ops, or give the chiplets that "
                            "run them more SRAM")


def explain_infeasible(graph: TensorGraph, hw: Hardware, pinned: Mapping[int, int] | None = None) -> UserError:
    """The error to raise when CP-SAT proved the model infeasible: a cheap check's, or the memory totals."""
    try:
        check_feasible(graph, hw, pinned)
    except UserError as err:
        return err
    total_w = int(graph.weight_bytes.sum())
    total_sram = sum(c.sram_bytes for c in hw.chiplets)
    biggest = int(np.argmax(graph.weight_bytes + graph.work_bytes))
    why = _unsupported_summary(graph, hw)
    if why:
        return DoesNotFit(f"no partition fits memory, pipeline order and op types together: {why}, in pipeline "
                          f"order ({total_w} bytes ({_mib(total_w)}) of weights on {hw.n_chiplets} chiplets with "
                          f"{total_sram} bytes ({_mib(total_sram)}) of SRAM in all)",
                          "drop op types from the chiplets' unsupported_ops (docs/hardware.md) or use chiplets "
                          "with more SRAM")
    return DoesNotFit(f"no partition fits memory and pipeline order together: {total_w} bytes ({_mib(total_w)}) "
                      f"of weights plus each chiplet's peak activations must fit {total_sram} bytes "
                      f"({_mib(total_sram)}) of SRAM on {hw.n_chiplets} chiplets in pipeline order (largest op: "
                      f"{graph.ops[biggest].name}, {graph.weight_bytes[biggest] + graph.work_bytes[biggest]} bytes)"
                      + (f", with {len(normalize_pins(graph, hw, pinned))} pinned ops" if pinned else ""),
                      _MORE_MEMORY + (", or fewer pins" if pinned else ""))
