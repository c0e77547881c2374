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
- Streamed weights (Partition.streamed, docs/simulator.md "Streamed weights"): a streamed op waits for its
  weights like a remote input. They are read once per batch of `batch` inferences (for the batch's first
  inference) from the stack `hw.stack_feed` names for its chiplet, as a message whose route is the stack (a FIFO
  resource of `sustained_bytes_per_cycle`, head latency `latency_cycles`) and then the NoC links from the stack's
  attached chiplet. The read is requested when the chiplet starts the segment before the op's (one segment of prefetch,
  double-buffered tiles), at time 0 for a chiplet's very first segment. On a route whose resources differ in
  speed the tail moves at the slowest one's pace: a resource is held until max(start + its serialisation, the
  tail's arrival from the previous one), and the tail arrives its latency later.
- A partition with `shard` (ops split across groups of chiplets) runs as the graph of its pieces
  (`sharding.expand`, docs/simulator.md "Sharding"): collectives are those pieces' messages under the rules above.
- Throughput comes from the completion times of the second half of the stream; latency is one inference
  simulated alone in an empty package.

The event loop is a heap of (time, priority, counter, ...) tuples as in SimPy, with priority = inference index,
so equal-time ties are deterministic. Only link requests go through the heap: a chiplet's run of ops that need
nothing from other chiplets is timed with prefix sums (its end times are fixed once its first op starts).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.cost import (
    bound_cycles_per_inference, compute_energy_pj, op_cycles, route_energy_pj, sharded_bound_cycles,
    stream_energy_pj)
from partitioner.model.layout import simulated_pieces
from partitioner.model.partition import Partition, memory_use
from partitioner.model.sharding import check_groups
from partitioner.sim.report import Report, TraceEvent
from partitioner.sim.sim_loop import flatten, run_compiled
from partitioner.sim.traced_loop import SimPlan, run_traced
from partitioner.sim.traffic import traffic

MIN_INFERENCES = 8
TRACE_EVENT_LIMIT = 500_000
"""A traced stream records at most about this many events (inferences x trace events per inference: each op run
and each resource a message crosses). Beyond it (a 1B-parameter model split 16 ways on 144 chiplets sends ~10^5
messages per inference over a ~300-inference stream; a 70B Llama split 16 ways on 512 chiplets makes ~3.5 x 10^5
events per inference) the Python trace loop and trace.json would need tens of GB, so the report's figures come from
the compiled loop over the whole stream and the trace records a shorter stream of its own (`trace_inferences`)."""
"""The stream is max(2 x pipeline stages, MIN_INFERENCES) inferences long unless `inferences` is given."""


def trace_events_per_inference(plan) -> int:
    """The events one traced inference records: an op event per op run, a link or stack event per resource on
    each message's route."""
    return int(sum(len(segs[3]) for lane in plan.segments for segs in lane)) + sum(len(r) for r in plan.msg_route)


def trace_inferences(n_inf: int, n_events: int, batch: int = 1) -> int:
    """Length of the stream the trace records, `n_events` a traced inference's events
    (`trace_events_per_inference`): the whole stream when it stays under TRACE_EVENT_LIMIT events, else as many
    whole batches as fit (at least one batch), at most n_inf."""
    if n_inf * max(n_events, 1) <= TRACE_EVENT_LIMIT:
        return n_inf
    k = max(TRACE_EVENT_LIMIT // max(n_events, 1), 1)
    k = -(-k // batch) * batch
    return min(n_inf, k)


def default_inferences(n_stages: int, batch: int = 1) -> int:
    """Stream length: twice the number of chiplets in use (fill plus a measured half), at least 8; with a batch
    B > 1, rounded up to an even number (at least 2) of whole batches, so the measured half is whole batches."""
    n = max(2 * n_stages, MIN_INFERENCES)
    if batch <= 1:
        return n
    batches = max(2, -(-n // batch))
    return (batches + batches % 2) * batch


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


def _lanes(graph: TensorGraph, hw: Hardware, a: np.ndarray, engine: np.ndarray | None
           ) -> tuple[np.ndarray, np.ndarray, int]:
    """(each op's cycles where it runs (cost.op_cycles of its chiplet's kind: no ops x chiplets matrix), its lane,
    the lane count). Lanes (docs R4b, R4c): lane c is chiplet c's compute; lane n_chip + c its collective engine
    (ring relays)."""
    n_chip = hw.n_chiplets
    cycles = np.zeros(graph.n_ops, dtype=np.int64)
    kinds = list(dict.fromkeys(hw.chiplets))
    kind_of = np.array([kinds.index(c) for c in hw.chiplets], dtype=np.int64)[a]
    for k, chiplet in enumerate(kinds):
        on = kind_of == k
        if on.any():
            cycles[on] = op_cycles(graph, chiplet)[on]
    lane = a if engine is None or not np.any(engine) else a + n_chip * np.asarray(engine, dtype=np.int64)
    return cycles, lane, n_chip if lane is a else 2 * n_chip


def throughput_ceiling(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray,
                       streamed: np.ndarray | None = None, batch: int = 1) -> float:
    """An upper bound on the simulated throughput of a plan, without simulating it: clock / its busiest
    resource's cycles per inference (a chiplet's compute, its collective engine's relays, a link or a memory
    stack), the plan run as its pieces as `simulate` runs it, its messages routed and held as `_plan` holds them
    (sim/traffic.py). The simulated period is never below a resource's busy cycles (max_busy). streamed: the ops whose
    weights stream (None: none; streaming only adds link and stack load, so the bound holds for any streaming)."""
    ex = simulated_pieces(graph, hw, assignment, shard)
    cycles, lane, n_lane = _lanes(ex.graph, hw, ex.assignment, ex.engine)
    s = None if streamed is None else np.asarray(streamed, dtype=bool)[ex.owner]
    t = traffic(ex.graph, hw, ex.assignment, lane, n_lane, s, batch)
    busy = max(float(np.bincount(lane, weights=cycles).max(initial=0)), float(t.link_busy.max(initial=0)),
               float(t.stack_busy.max(initial=0)), 1.0)
    return hw.clock_hz / busy


def _plan(graph: TensorGraph, hw: Hardware, a: np.ndarray, streamed: np.ndarray | None = None,
          batch: int = 1, engine: np.ndarray | None = None, group: np.ndarray | None = None) -> SimPlan:
    n_chip = hw.n_chiplets
    cycles, lane, n_lane = _lanes(graph, hw, a, engine)

    t = traffic(graph, hw, a, lane, n_lane, streamed, batch)
    msrc, mdst, remote_in, outs, stream_in = t.msrc, t.mdst, t.remote_in, t.outs, t.stream_in
    mbytes, routes, ser, lat, link_busy, stack_busy = t.mbytes, t.routes, t.ser, t.lat, t.link_busy, t.stack_busy
    first_stream, s_hops, s_stack, s_bytes = t.first_stream, t.s_hops, t.s_stack, t.s_bytes

    # Segments: a lane's ops split before every op that waits for another lane or for its weights.
    lag = _lags(graph, lane, n_lane, engine, group)
    cyc_list = cycles.tolist()
    segments = []
    seg_lag = []
    for c in range(n_lane):
        segs = []
        lags = []
        for v in np.flatnonzero(lane == c).tolist():
            if remote_in[v] or stream_in[v] or not segs or lag[v] != lags[-1]:
                segs.append([tuple(remote_in[v]), 0, [], [], stream_in[v]])
                lags.append(lag[v])
            seg = segs[-1]
            start = seg[1]
            seg[1] = start + cyc_list[v]
            seg[2].extend((seg[1], m) for m in outs[v])
            seg[3].append((v, start, seg[1]))
        segments.append(tuple((r, length, tuple(o), tuple(ops), st) for r, length, o, ops, st in segs))
        low = min(lags, default=0)     # once per lane: inside the generator it made _plan quadratic in segments
        seg_lag.append(tuple(x - low for x in lags) if lags else ())
    compute = lane < n_chip
    chiplet_busy = np.bincount(a[compute], weights=cycles[compute], minlength=n_chip).astype(np.int64)
    engine_busy = np.bincount(a[~compute], weights=cycles[~compute], minlength=n_chip).astype(np.int64)
    has_lag = any(any(x) for x in seg_lag)
    return SimPlan(n_lane, cycles, tuple(segments), tuple(msrc), tuple(mdst),
                 tuple(mbytes.tolist()) + tuple(s_bytes), tuple(routes), tuple(ser), tuple(lat), chiplet_busy,
                 link_busy, first_stream, stack_busy, tuple(s_hops), tuple(s_stack),
                 tuple(seg_lag) if has_lag else (), n_chip, engine_busy)


def _lags(graph: TensorGraph, lane: np.ndarray, n_lane: int, engine: np.ndarray | None,
          group: np.ndarray | None) -> list[int]:
    """Round lag per op (docs R4b): the largest of its lane's previous op's lag and, over its inputs, the input's
    lag, plus 1 when it waits on its own group's collective (an input from another lane of the same group, into an
    op that is not a ring relay). Non-decreasing along every edge and along each lane, so (inference + lag, op) is
    a topological order of all (inference, op) pairs and the lanes cannot deadlock. All zero without groups."""
    n = graph.n_ops
    lag = [0] * n
    if group is None or not np.any(np.asarray(group) >= 0):
        return lag
    grp = np.asarray(group).tolist()
    relay = [False] * n if engine is None else np.asarray(engine, dtype=bool).tolist()
    ln = lane.tolist()
    last = [0] * n_lane
    ins: list[list[int]] = [[] for _ in range(n)]
    for u, v in zip(graph.edge_src.tolist(), graph.edge_dst.tolist()):
        ins[v].append(u)
    for v in range(n):
        x = last[ln[v]]
        for u in ins[v]:
            bump = grp[u] >= 0 and grp[u] == grp[v] and ln[u] != ln[v] and not relay[v]
            x = max(x, lag[u] + bump)
        lag[v] = last[ln[v]] = x
    return lag


def _run(plan: SimPlan, hw: Hardware, n_inf: int, trace: bool, batch: int = 1
         ) -> tuple[list[int], list[TraceEvent]]:
    """Simulate `n_inf` inferences; return each inference's completion time (and trace events). Without a trace
    the compiled loop (partitioner/sim/sim_loop.py) runs the same events; with one, traced_loop.run_traced records them."""
    if trace:
        return run_traced(plan, hw, n_inf, trace, batch)
    flat = flatten(plan.segments, plan.msg_route, plan.msg_ser, plan.msg_lat, plan.msg_dst, plan.seg_lag)
    finish, done = run_compiled(n_inf, batch, plan.n_chiplets, len(hw.links) + len(hw.memory_stacks), *flat)
    if not done:
        raise RuntimeError("simulation stalled; this is a bug in the simulator")
    return finish.tolist(), []


def _as_streamed(graph: TensorGraph, hw: Hardware, part: Partition | np.ndarray,
                 streamed: np.ndarray | None) -> np.ndarray | None:
    if streamed is None and isinstance(part, Partition):
        streamed = part.streamed
    if streamed is None:
        return None
    s = np.asarray(streamed)
    if s.shape != (graph.n_ops,):
        raise UserError(f"streamed has shape {s.shape}, expected ({graph.n_ops},)", "give one flag per op")
    s = s.astype(bool)
    if s.any() and not hw.memory_stacks:
        raise UserError(f"{int(s.sum())} ops stream their weights but hardware {hw.name} has no memory tier",
                        "use hardware with memory stacks, or keep every weight resident")
    return s if s.any() else None


def simulate(graph: TensorGraph, hw: Hardware, partition_or_assignment: Partition | np.ndarray, *,
             trace: bool = False, inferences: int | None = None, streamed: np.ndarray | None = None,
             batch: int = 1, engine: np.ndarray | None = None, group: np.ndarray | None = None,
             overlap: bool = True) -> Report:
    """Simulate a stream of inferences under an assignment (any assignment; pipeline order is not required).

    inferences: stream length (default `default_inferences(chiplets in use, batch)`). trace: also return op,
    link and stack events of the stream in `Report.trace_events`. streamed: which ops stream their weights from
    the memory tier (default: the Partition's `streamed`, else none). batch: inferences per read of a streamed
    weight. engine, group: per op, a ring relay flag and a group id (set when a sharded partition runs as its
    pieces, docs R4b-R4c); overlap: False keeps every lane in plain (inference, op) order (no round lags).
    Pure: no side effects, same inputs give the same Report.
    """
    a = _as_assignment(graph, hw, partition_or_assignment)
    streamed = _as_streamed(graph, hw, partition_or_assignment, streamed)
    if type(batch) is not int or batch < 1:
        raise UserError(f"--batch must be a positive integer, got {batch!r}", "pass --batch 1 or more")
    shard = getattr(partition_or_assignment, "shard", None)
    if shard is not None:
        # A sharded partition runs as its pieces (model/layout.py): collectives are the pieces' real messages.
        problems = check_groups(graph, hw.n_chiplets, a, shard)
        if problems:
            raise UserError(f"invalid sharding: {problems[0]}", "give each split op a group inside the package, "
                            "in pipeline order")
        ex = simulated_pieces(graph, hw, a, shard)
        rep = simulate(ex.graph, hw, ex.assignment, trace=trace, inferences=inferences,
                       streamed=None if streamed is None else streamed[ex.owner], batch=batch, engine=ex.engine,
                       group=ex.group if overlap else None)
        bound = sharded_bound_cycles(graph, hw, int(np.max(shard)))
        return replace(rep, graph_name=graph.name, bound_cycles_per_inference=bound,
                       bound_throughput_per_s=hw.clock_hz / bound)
    n_stages = int(np.unique(a).size)
    n_inf = default_inferences(n_stages, batch) if inferences is None else int(inferences)
    if n_inf < 1:
        raise UserError(f"inferences must be at least 1, got {n_inf}", "simulate one or more inferences")
    plan = _plan(graph, hw, a, streamed, batch, engine, group)
    # Round lags (R4b) deepen the pipeline: the stream grows by 2 x the largest lag, and the last `lag` inferences
    # (whose lanes no longer run later inferences beside them: the drain) stay out of the measured window.
    lag = max((max(lg, default=0) for lg in plan.seg_lag), default=0)
    if inferences is None:
        n_inf += 2 * lag
    n_trace = trace_inferences(n_inf, trace_events_per_inference(plan), batch) if trace else n_inf
    if n_trace < n_inf:     # figures from the whole stream (compiled), events from a shorter traced stream
        finish = _run(plan, hw, n_inf, False, batch)[0]
        events = _run(plan, hw, n_trace, True, batch)[1]
    else:
        finish, events = _run(plan, hw, n_inf, trace, batch)
    latency = _run(plan, hw, 1, False, batch)[0][0] if n_inf > 1 else finish[0]

    # Steady state: mean completion interval over the second half of the stream, never below the busiest
    # resource's cycles per inference (a finite window can catch a transient).
    max_busy = max(float(plan.chiplet_busy.max(initial=0)), float(plan.link_busy.max(initial=0)),
                   float(plan.stack_busy.max(initial=0)),
                   float(plan.engine_busy.max(initial=0)) if plan.engine_busy is not None else 0.0, 1.0)
    if n_inf - lag >= 2:
        last = n_inf - 1 - lag
        first = (last + 1) // 2
        measured = (finish[last] - finish[first - 1]) / (last + 1 - first)
    else:
        measured = float(finish[0])
    period = max(measured, float(max_busy))

    bound = bound_cycles_per_inference(graph, hw)

    compute_pj, sram_pj = compute_energy_pj(graph, hw, a)
    fs = plan.first_stream
    link_pj = sum(route_energy_pj(b, r, hw) for b, r in zip(plan.msg_bytes[:fs], plan.msg_route[:fs]))
    stack_names = [st.name for st in hw.memory_stacks]
    stack_bytes = dict.fromkeys(stack_names, 0.0)
    memory_pj = 0.0
    for b, k, r in zip(plan.msg_bytes[fs:], plan.stream_stack, plan.msg_route[fs:]):
        memory_pj += stream_energy_pj(b, hw.memory_stacks[k], len(r) - 1, hw, r[1:]) / batch
        stack_bytes[stack_names[k]] += b / batch

    busy_chip = int(np.argmax(plan.chiplet_busy))
    bottleneck = f"chiplet {busy_chip}"
    if plan.link_busy.size and plan.link_busy.max() > plan.chiplet_busy[busy_chip]:
        la, lb = hw.links[int(np.argmax(plan.link_busy))]
        bottleneck = f"link {la}->{lb}"
    if plan.stack_busy.size and plan.stack_busy.max() > max(plan.chiplet_busy[busy_chip],
                                                            plan.link_busy.max(initial=0)):
        bottleneck = f"memory stack {stack_names[int(np.argmax(plan.stack_busy))]}"

    cross_pkg = 0.0
    if hw.package_level is not None:
        per_inf = [1.0] * fs + [1.0 / batch] * (len(plan.msg_route) - fs)
        board = hw.link_class
        cross_pkg = sum(b * w * sum(1 for k in r if k < len(board) and board[k])
                        for b, w, r in zip(plan.msg_bytes, per_inf, plan.msg_route))
    mem = memory_use(graph, hw, a, streamed)
    clock = hw.clock_hz
    return Report(
        graph_name=graph.name,
        hardware_name=hw.name,
        clock_hz=clock,
        throughput_per_s=clock / period,
        latency_s=latency / clock,
        cycles_per_inference=period,
        latency_cycles=int(latency),
        energy_j=(compute_pj + sram_pj + link_pj + memory_pj) * 1e-12,
        energy_breakdown_j={"compute": compute_pj * 1e-12, "sram": sram_pj * 1e-12, "link": link_pj * 1e-12,
                            "memory": memory_pj * 1e-12},
        chiplet_busy_cycles=tuple(int(x) for x in plan.chiplet_busy),
        chiplet_busy_fraction=tuple(float(x) / period for x in plan.chiplet_busy),
        chiplet_memory_fraction=tuple(float(mem[c]) / hw.chiplets[c].sram_bytes for c in range(hw.n_chiplets)),
        link_utilisation={f"{la}->{lb}": float(plan.link_busy[k]) / period for k, (la, lb) in enumerate(hw.links)},
        bottleneck=bottleneck,
        bottleneck_chiplet=busy_chip,
        bound_throughput_per_s=clock / bound,
        bound_cycles_per_inference=bound,
        inferences_simulated=n_inf,
        trace_inferences=n_trace if trace else 0,
        measured_cycles_per_inference=float(measured),
        trace_events=tuple(events),
        stack_utilisation={name: float(plan.stack_busy[k]) / period for k, name in enumerate(stack_names)},
        stack_bytes_per_inference=stack_bytes,
        batch=batch,
        package_link_bytes_per_inference=cross_pkg,
    )
