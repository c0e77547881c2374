"""Event-driven simulation of a stream of inferences through a partitioned package.

The exact timing model, every rule and a worked example are in docs/simulator.md. In short:

- Integer cycles. `inferences` inferences are all available at time 0 (a back-pressure free stream).
- Each chiplet runs its ops one at a time in the fixed order (inference, op id); an op starts when the chiplet
  is free and all its inputs are on the chiplet, and takes `cost.op_cycles` on that chiplet.
- An output that crosses chiplets is sent once per (producer op, destination chiplet) with the largest edge
  size to that chiplet, over the route `hw.route(a, b)` (XY on a mesh), as one unbroken train of packets.
- Links are FIFO resources (by request time; ties by inference, then request order). A tensor holds a link for
  ceil(bytes / link_bytes_per_cycle) cycles; its head reaches the next router `hop_latency_cycles` after it
  starts on a link and is forwarded from there (virtual cut-through), so an uncontended tensor takes exactly
  `cost.transfer_cycles` = hops x hop_latency + ceil(bytes / bw). Zero-byte edges order ops and cost nothing.
- A partition with `shard` (ops split across groups of chiplets) runs as the graph of its pieces
  (`sharding.expand`, docs/simulator.md "Sharding"): collectives are those pieces' messages under the rules above.
- Throughput comes from the completion times of the second half of the stream; latency is one inference
  simulated alone in an empty package.

The event loop is a heap of (time, priority, counter, ...) tuples as in SimPy, with priority = inference index,
so equal-time ties are deterministic. Only link requests go through the heap: a chiplet's run of ops that need
nothing from other chiplets is timed with prefix sums (its end times are fixed once its first op starts).
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, replace

import numpy as np

from partitioner.cost import (bound_cycles_per_inference, compute_energy_pj, link_energy_pj, op_cycles_matrix,
                             sharded_bound_cycles)
from partitioner.errors import UserError
from partitioner.graph import TensorGraph
from partitioner.hardware import Hardware
from partitioner.partition import Partition, memory_use
from partitioner.report import Report, TraceEvent
from partitioner.sharding import check_groups, expand

MIN_INFERENCES = 8
"""The stream is max(2 x pipeline stages, MIN_INFERENCES) inferences long unless `inferences` is given."""


def default_inferences(n_stages: int) -> int:
    """Stream length: twice the number of chiplets in use (fill plus a measured half), at least 8."""
    return max(2 * n_stages, MIN_INFERENCES)


@dataclass(frozen=True)
class _Plan:
    """Everything about one (graph, hardware, assignment) that does not depend on time."""

    n_chiplets: int
    cycles: np.ndarray               # cycles of each op on its chiplet
    cycles_matrix: np.ndarray        # cycles[op, chiplet]
    segments: tuple                  # per chiplet: tuple of (remote message ids, length, outs, ops)
    msg_src: tuple                   # producer op of each message
    msg_dst: tuple                   # destination chiplet of each message
    msg_bytes: tuple
    msg_route: tuple                 # link indices
    msg_ser: tuple                   # link cycles of each message: ceil(bytes / link_bytes_per_cycle)
    chiplet_busy: np.ndarray         # op cycles per inference on each chiplet
    link_busy: np.ndarray            # link cycles per inference on each link


def _as_assignment(graph: TensorGraph, hw: Hardware, part: Partition | np.ndarray) -> np.ndarray:
    a = np.asarray(part.assignment if isinstance(part, Partition) else part)
    if a.shape != (graph.n_ops,) or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise UserError(f"assignment has shape {a.shape} and dtype {a.dtype}, expected ({graph.n_ops},) integers",
                        "give one chiplet id per op")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= hw.n_chiplets):
        raise UserError(f"assignment uses chiplet ids {int(a.min())}..{int(a.max())} but the package has "
                        f"{hw.n_chiplets} chiplets", f"use ids 0..{hw.n_chiplets - 1}")
    return a


def _plan(graph: TensorGraph, hw: Hardware, a: np.ndarray) -> _Plan:
    n, n_chip = graph.n_ops, hw.n_chiplets
    cm = op_cycles_matrix(graph, hw)
    cycles = cm[np.arange(n), a]

    # Messages: one per (producer op, destination chiplet) over the edges that cross chiplets.
    src, dst, eb = graph.edge_src, graph.edge_dst, graph.edge_bytes
    cross = a[src] != a[dst]
    key = src[cross] * n_chip + a[dst[cross]]
    uniq, inv = np.unique(key, return_inverse=True)
    mbytes = np.zeros(uniq.size, dtype=np.int64)
    np.maximum.at(mbytes, inv, eb[cross])
    msrc, mdst = (uniq // n_chip).tolist(), (uniq % n_chip).tolist()
    remote_in: list[list[int]] = [[] for _ in range(n)]
    for v, m in zip(dst[cross].tolist(), inv.tolist()):
        remote_in[v].append(m)
    outs: list[list[int]] = [[] for _ in range(n)]
    for m, u in enumerate(msrc):
        outs[u].append(m)

    bw = hw.link_bytes_per_cycle
    routes = [hw.route(int(a[u]), d) for u, d in zip(msrc, mdst)]
    ser = (-(-mbytes // bw)).tolist()
    link_busy = np.zeros(len(hw.links), dtype=np.int64)
    for route, cycles_on_link in zip(routes, ser):
        for link in route:
            link_busy[link] += cycles_on_link

    # Segments: a chiplet's ops split before every op that waits for another chiplet.
    cyc_list = cycles.tolist()
    segments = []
    for c in range(n_chip):
        segs = []
        for v in np.flatnonzero(a == c).tolist():
            if remote_in[v] or not segs:
                segs.append([tuple(remote_in[v]), 0, [], []])
            seg = segs[-1]
            start = seg[1]
            seg[1] = start + cyc_list[v]
            seg[2].extend((seg[1], m) for m in outs[v])
            seg[3].append((v, start, seg[1]))
        segments.append(tuple((r, length, tuple(o), tuple(ops)) for r, length, o, ops in segs))
    chiplet_busy = np.bincount(a, weights=cycles, minlength=n_chip).astype(np.int64)
    return _Plan(n_chip, cycles, cm, tuple(segments), tuple(msrc), tuple(mdst), tuple(mbytes.tolist()),
                 tuple(routes), tuple(ser), chiplet_busy, link_busy)


def _run(plan: _Plan, hw: Hardware, n_inf: int, trace: bool) -> tuple[list[int], list[TraceEvent]]:
    """Simulate `n_inf` inferences; return each inference's completion time (and trace events)."""
    hop = hw.hop_latency_cycles
    segments, routes, msg_ser, mdst = plan.segments, plan.msg_route, plan.msg_ser, plan.msg_dst
    n_msg = len(routes)
    arrival = [-1] * (n_inf * n_msg)
    n_chip = plan.n_chiplets
    cur_k = [0 if segments[c] else n_inf for c in range(n_chip)]
    cur_s = [0] * n_chip
    free = [0] * n_chip
    finish = [0] * n_inf
    link_free = [0] * len(hw.links)
    heap: list[tuple] = []
    push, pop = heapq.heappush, heapq.heappop
    counter = 0
    events: list[TraceEvent] = []

    def advance(c: int) -> None:
        """Run chiplet c as far as its inputs allow, pushing the link requests of what it sends."""
        nonlocal counter
        k, s, t_free = cur_k[c], cur_s[c], free[c]
        segs = segments[c]
        n_seg = len(segs)
        while k < n_inf:
            remote, length, out, ops = segs[s]
            ready = t_free
            base = k * n_msg
            for m in remote:
                t = arrival[base + m]
                if t < 0:
                    cur_k[c], cur_s[c], free[c] = k, s, t_free
                    return
                if t > ready:
                    ready = t
            for rel, m in out:
                if msg_ser[m]:
                    push(heap, (ready + rel, k, counter, m, 0))
                    counter += 1
                else:           # a zero-byte edge: a pure ordering dependency, delivered at once
                    arrival[base + m] = ready + rel
                    waiting.append(mdst[m])
            if trace:
                events.extend(TraceEvent("op", c, k, v, ready + s0, ready + s1) for v, s0, s1 in ops)
            t_free = ready + length
            s += 1
            if s == n_seg:
                if t_free > finish[k]:
                    finish[k] = t_free
                s = 0
                k += 1
        cur_k[c], cur_s[c], free[c] = k, s, t_free

    waiting: list[int] = list(range(n_chip))
    while True:
        while waiting:
            advance(waiting.pop())
        if not heap:
            break
        t, k, _, m, j = pop(heap)
        route = routes[m]
        link = route[j]
        ser = msg_ser[m]
        start = t if t > link_free[link] else link_free[link]
        link_free[link] = start + ser
        if trace:
            events.append(TraceEvent("link", link, k, plan.msg_src[m], start, start + ser))
        if j + 1 < len(route):
            push(heap, (start + hop, k, counter, m, j + 1))
            counter += 1
        else:
            arrival[k * n_msg + m] = start + hop + ser
            waiting.append(mdst[m])
    if any(k < n_inf for k in cur_k):
        raise RuntimeError("simulation stalled; this is a bug in the simulator")
    return finish, events


def simulate(graph: TensorGraph, hw: Hardware, partition_or_assignment: Partition | np.ndarray, *,
             trace: bool = False, inferences: int | None = None) -> Report:
    """Simulate a stream of inferences under an assignment (any assignment; pipeline order is not required).

    inferences: stream length (default `default_inferences(chiplets in use)`). trace: also return op and link
    events of the stream in `Report.trace_events`. Pure: no side effects, same inputs give the same Report.
    """
    a = _as_assignment(graph, hw, partition_or_assignment)
    shard = getattr(partition_or_assignment, "shard", None)
    if shard is not None:
        # A sharded partition runs as its pieces (sharding.expand): collectives are the pieces' real messages.
        problems = check_groups(graph, hw.n_chiplets, a, shard)
        if problems:
            raise UserError(f"invalid sharding: {problems[0]}", "give each split op a group inside the package, "
                            "in pipeline order")
        ex = expand(graph, a, shard)
        rep = simulate(ex.graph, hw, ex.assignment, trace=trace, inferences=inferences)
        bound = sharded_bound_cycles(graph, hw, int(np.max(shard)))
        return replace(rep, graph_name=graph.name, bound_cycles_per_inference=bound,
                       bound_throughput_per_s=hw.clock_hz / bound)
    n_stages = int(np.unique(a).size)
    n_inf = default_inferences(n_stages) if inferences is None else int(inferences)
    if n_inf < 1:
        raise UserError(f"inferences must be at least 1, got {n_inf}", "simulate one or more inferences")
    plan = _plan(graph, hw, a)
    finish, events = _run(plan, hw, n_inf, trace)
    latency = _run(plan, hw, 1, False)[0][0] if n_inf > 1 else finish[0]

    # Steady state: mean completion interval over the second half of the stream, never below the busiest
    # resource's cycles per inference (a finite window can catch a transient).
    max_busy = max(int(plan.chiplet_busy.max(initial=0)), int(plan.link_busy.max(initial=0)), 1)
    if n_inf >= 2:
        first = n_inf // 2
        measured = (finish[-1] - finish[first - 1]) / (n_inf - first)
    else:
        measured = float(finish[0])
    period = max(measured, float(max_busy))

    bound = bound_cycles_per_inference(graph, hw)

    compute_pj, sram_pj = compute_energy_pj(graph, hw, a)
    link_pj = sum(link_energy_pj(b, len(r), hw) for b, r in zip(plan.msg_bytes, plan.msg_route))

    busy_chip = int(np.argmax(plan.chiplet_busy))
    bottleneck = f"chiplet {busy_chip}"
    if plan.link_busy.size and plan.link_busy.max() > plan.chiplet_busy[busy_chip]:
        la, lb = hw.links[int(np.argmax(plan.link_busy))]
        bottleneck = f"link {la}->{lb}"

    mem = memory_use(graph, hw, a)
    clock = hw.clock_hz
    return Report(
        graph_name=graph.name,
        hardware_name=hw.name,
        clock_hz=clock,
        throughput_per_s=clock / period,
        latency_s=latency / clock,
        cycles_per_inference=period,
        latency_cycles=int(latency),
        energy_j=(compute_pj + sram_pj + link_pj) * 1e-12,
        energy_breakdown_j={"compute": compute_pj * 1e-12, "sram": sram_pj * 1e-12, "link": link_pj * 1e-12},
        chiplet_busy_cycles=tuple(int(x) for x in plan.chiplet_busy),
        chiplet_busy_fraction=tuple(float(x) / period for x in plan.chiplet_busy),
        chiplet_memory_fraction=tuple(float(mem[c]) / hw.chiplets[c].sram_bytes for c in range(hw.n_chiplets)),
        link_utilisation={f"{la}->{lb}": float(plan.link_busy[k]) / period for k, (la, lb) in enumerate(hw.links)},
        bottleneck=bottleneck,
        bottleneck_chiplet=busy_chip,
        bound_throughput_per_s=clock / bound,
        bound_cycles_per_inference=bound,
        inferences_simulated=n_inf,
        measured_cycles_per_inference=float(measured),
        trace_events=tuple(events),
    )
