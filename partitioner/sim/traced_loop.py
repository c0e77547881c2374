"""The simulator's event loop in plain Python, for traced runs: the same events as the compiled loop (sim_loop.py),
recording each op, link and stack interval; and SimPlan, the time-independent plan both loops run."""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from partitioner.hw.hardware import Hardware
from partitioner.sim.report import TraceEvent


@dataclass(frozen=True)
class SimPlan:
    """Everything about one (graph, hardware, assignment) that does not depend on time."""

    n_chiplets: int
    cycles: np.ndarray               # cycles of each op on its chiplet
    segments: tuple                  # per chiplet: tuple of (remote message ids, length, outs, ops)
    msg_src: tuple                   # producer op of each message
    msg_dst: tuple                   # destination chiplet of each message
    msg_bytes: tuple
    msg_route: tuple                 # link indices
    msg_ser: tuple                   # per message, cycles it holds each resource of its route
    msg_lat: tuple                   # per message, head latency of each resource of its route
    chiplet_busy: np.ndarray         # op cycles per inference on each chiplet
    link_busy: np.ndarray            # link cycles per inference on each link (stream reads amortised over a batch)
    first_stream: int = 0            # messages from here on are stream reads
    stack_busy: np.ndarray | None = None   # cycles per inference each memory stack is busy (amortised)
    stream_hops: tuple = ()          # NoC hops of each stream read
    stream_stack: tuple = ()         # stack index of each stream read
    seg_lag: tuple = ()              # per lane, each segment's round lag (docs R4b); () when no lane lags
    n_phys: int = 0                  # physical chiplets; n_chiplets counts lanes (collective engines after them)
    engine_busy: np.ndarray | None = None   # relay cycles per inference on each chiplet's collective engine


def run_traced(plan: SimPlan, hw: Hardware, n_inf: int, trace: bool, batch: int = 1
                ) -> tuple[list[int], list[TraceEvent]]:
    """The event loop in plain Python, recording op, link and stack events when `trace` is set."""
    segments, routes, msg_ser, msg_lat, mdst = plan.segments, plan.msg_route, plan.msg_ser, plan.msg_lat, plan.msg_dst
    n_links = len(hw.links)
    n_msg = len(routes)
    arrival = [-1] * (n_inf * n_msg)
    n_chip = plan.n_chiplets
    lags = plan.seg_lag or tuple((0,) * len(segs) for segs in segments)
    ends = [n_inf + max(lg, default=0) for lg in lags]
    cur_r = [0] * n_chip
    cur_s = [0] * n_chip
    free = [0] * n_chip
    finish = [0] * n_inf
    link_free = [0] * (n_links + len(hw.memory_stacks))
    heap: list[tuple] = []
    push, pop = heapq.heappush, heapq.heappop
    counter = 0
    events: list[TraceEvent] = []
    phys = plan.n_phys or n_chip

    def following(c: int, r: int, s: int) -> tuple[int, int]:
        """Lane c's next (round, segment) after (r, s) whose inference r - lag exists (docs R4b); (end, 0) if none."""
        n_seg, end, lag = len(segments[c]), ends[c], lags[c]
        while True:
            s += 1
            if s == n_seg:
                s, r = 0, r + 1
            if r >= end:
                return end, 0
            if 0 <= r - lag[s] < n_inf:
                return r, s

    def prefetch(c: int, k: int, s: int, t: int) -> None:
        """Request the stream reads of chiplet c's segment s of inference k at time t (first of a batch only)."""
        nonlocal counter
        if k < n_inf and k % batch == 0:
            for m in segments[c][s][4]:
                push(heap, (t, k, counter, m, 0, 0))
                counter += 1

    def advance(c: int) -> None:
        """Run lane c as far as its inputs allow, pushing the link requests of what it sends."""
        nonlocal counter
        r, s, t_free = cur_r[c], cur_s[c], free[c]
        segs, lag, end = segments[c], lags[c], ends[c]
        n_seg = len(segs)
        while r < end:
            k = r - lag[s]
            remote, length, out, ops, streams = segs[s]
            ready = t_free
            base = k * n_msg
            for m in (remote + streams if streams and k % batch == 0 else remote):
                t = arrival[base + m]
                if t < 0:
                    cur_r[c], cur_s[c], free[c] = r, s, t_free
                    return
                if t > ready:
                    ready = t
            r2, s2 = following(c, r, s)
            if r2 < end:
                prefetch(c, r2 - lag[s2], s2, ready)
            for rel, m in out:
                if msg_ser[m] and msg_ser[m][0]:
                    push(heap, (ready + rel, k, counter, m, 0, 0))
                    counter += 1
                else:           # a zero-byte edge, or between two lanes of one chiplet: delivered at once
                    arrival[base + m] = ready + rel
                    waiting.append(mdst[m])
            if trace:
                events.extend(TraceEvent("op", c % phys, k, v, ready + s0, ready + s1) for v, s0, s1 in ops)
            t_free = ready + length
            if s == n_seg - 1 and t_free > finish[k]:
                finish[k] = t_free
            r, s = r2, s2
        cur_r[c], cur_s[c], free[c] = r, s, t_free

    waiting: list[int] = list(range(n_chip))
    for c in range(n_chip):
        cur_r[c], cur_s[c] = following(c, 0, -1) if segments[c] else (ends[c], 0)
        if cur_r[c] < ends[c]:
            prefetch(c, cur_r[c] - lags[c][cur_s[c]], cur_s[c], 0)
    while True:
        while waiting:
            advance(waiting.pop())
        if not heap:
            break
        t, k, _, m, j, tail_in = pop(heap)
        route = routes[m]
        res = route[j]
        ser, lat = msg_ser[m][j], msg_lat[m][j]
        start = t if t > link_free[res] else link_free[res]
        release = start + ser if start + ser > tail_in else tail_in
        link_free[res] = release
        if trace:
            if res >= n_links:
                events.append(TraceEvent("stack", res - n_links, k, plan.msg_src[m], start, release))
            else:
                events.append(TraceEvent("link", res, k, plan.msg_src[m], start, release))
        if j + 1 < len(route):
            push(heap, (start + lat, k, counter, m, j + 1, release + lat))
            counter += 1
        else:
            arrival[k * n_msg + m] = release + lat
            waiting.append(mdst[m])
    if any(r < end for r, end in zip(cur_r, ends)):
        raise RuntimeError("simulation stalled; this is a bug in the simulator")
    return finish, events
