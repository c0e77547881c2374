"""A plan's messages and the load they put on links and memory stacks (docs R3, R6): one message per (producer
op, destination lane) over the edges that cross lanes, routed by `hw.route` and held per link by the cost model's
`route_holds`; one stream read per streamed op with bytes to read, from the stack `hw.stack_feed` names. The
simulator builds its plan from these, and `throughput_ceiling` bounds a plan by the same busy cycles."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.cost import route_holds, stream_bytes


@dataclass(frozen=True)
class Traffic:
    msrc: list[int]
    """Per message: its producer op (a stream read: its streamed op)."""
    mdst: list[int]
    """Per message: its destination lane (a stream read: its chiplet)."""
    mbytes: np.ndarray
    """Per op-to-op message: its bytes (stream reads' bytes are in s_bytes)."""
    routes: list[tuple[int, ...]]
    """Per message: its resources (link ids; a stream read starts with n_links + its stack)."""
    ser: list[tuple[int, ...]]
    """Per message and resource: the cycles it holds it."""
    lat: list[tuple[int, ...]]
    """Per message and resource: the head latency it adds."""
    remote_in: list[list[int]]
    """Per op: the messages it waits for."""
    outs: list[list[int]]
    """Per op: the messages it sends."""
    stream_in: list[tuple[int, ...]]
    """Per op: its stream read, if any."""
    link_busy: np.ndarray
    """Per link: cycles held per inference."""
    stack_busy: np.ndarray
    """Per memory stack: cycles held per inference."""
    first_stream: int
    s_hops: list[int]
    s_stack: list[int]
    s_bytes: list[int]


def traffic(graph: TensorGraph, hw: Hardware, a: np.ndarray, lane: np.ndarray, n_lane: int,
            streamed: np.ndarray | None, batch: int) -> Traffic:
    """The messages of ops placed by `a` on lanes `lane` (simulator._lanes), streamed ops' reads amortised over
    `batch` inferences, and the cycles per inference they hold each link and stack."""
    n_chip = hw.n_chiplets
    # Messages: one per (producer op, destination lane) over the edges that cross lanes.
    src, dst, eb = graph.edge_src, graph.edge_dst, graph.edge_bytes
    cross = lane[src] != lane[dst]
    key = src[cross] * n_lane + lane[dst[cross]]
    uniq, inv = np.unique(key, return_inverse=True)
    mbytes = np.zeros(uniq.size, dtype=np.int64)
    np.maximum.at(mbytes, inv, eb[cross])
    msrc, mdst = (uniq // n_lane).tolist(), (uniq % n_lane).tolist()
    remote_in: list[list[int]] = [[] for _ in range(graph.n_ops)]
    for v, m in zip(dst[cross].tolist(), inv.tolist()):
        remote_in[v].append(m)
    outs: list[list[int]] = [[] for _ in range(graph.n_ops)]
    for m, u in enumerate(msrc):
        outs[u].append(m)

    bw, hop = hw.link_bytes_per_cycle, hw.hop_latency_cycles
    routes = [hw.route(int(a[u]), d % n_chip) if int(a[u]) != d % n_chip else () for u, d in zip(msrc, mdst)]
    if hw.package_level is None:
        ser = [(k,) * len(r) for k, r in zip((-(-mbytes // bw)).tolist(), routes)]
        lat = [(hop,) * len(r) for r in routes]
    else:   # levels: each link holds a message at its own bandwidth and adds its own latency (R6, "Levels")
        ser = [route_holds(b, r, hw) for b, r in zip(mbytes.tolist(), routes)]
        lat = [tuple(hw.link_latency[k] for k in r) for r in routes]
    link_busy = np.zeros(len(hw.links), dtype=np.float64)
    for route, cycles_on_link in zip(routes, ser):
        for link, k in zip(route, cycles_on_link):
            link_busy[link] += k

    # Stream reads: one message per streamed op with bytes to read; resource n_links + s is stack s.
    n_links, first_stream = len(hw.links), len(msrc)
    stack_busy = np.zeros(len(hw.memory_stacks), dtype=np.float64)
    stream_in: list[tuple[int, ...]] = [()] * graph.n_ops
    s_hops, s_stack, s_bytes = [], [], []
    if streamed is not None and np.any(streamed):
        sb = stream_bytes(graph, batch)
        for v in np.flatnonzero(np.asarray(streamed, dtype=bool) & (sb > 0)).tolist():
            c = int(a[v])
            k, src = hw.stack_feed[c]
            stack = hw.memory_stacks[k]
            noc = hw.route(src, c)
            b = int(sb[v])
            m = len(msrc)
            stream_in[v] = (m,)
            msrc.append(v)
            mdst.append(c)
            s_bytes.append(b)
            routes.append((n_links + k,) + noc)
            ser.append((-(-b // stack.sustained_bytes_per_cycle),) + route_holds(b, noc, hw))
            lat.append((stack.latency_cycles,) + tuple(hw.link_latency[k] for k in noc))
            stack_busy[k] += ser[-1][0] / batch
            for link, hold in zip(noc, ser[-1][1:]):
                link_busy[link] += hold / batch
            s_hops.append(len(noc))
            s_stack.append(k)
    return Traffic(msrc, mdst, mbytes, routes, ser, lat, remote_in, outs, stream_in, link_busy, stack_busy,
                   first_stream, s_hops, s_stack, s_bytes)
