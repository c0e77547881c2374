"""The simulator's event loop compiled with numba: the same events in the same order as traced_loop.run_traced.

simulator._run hands a plan here when no trace is asked for (every search evaluation); the traced run (one per
written report) stays in plain Python, where it builds TraceEvent objects. Both follow docs/simulator.md rule for
rule, and tests/test_sim_loop.py holds them to identical completion times on random plans, memory-tier stream
reads, batches and zero-byte edges included. The plan's nested tuples are flattened into CSR int64 arrays.
"""
from __future__ import annotations

import heapq

import numpy as np
from numba import njit


def flatten(segments: tuple, routes: tuple, msg_ser: tuple, msg_lat: tuple, msg_dst: tuple,
            seg_lag: tuple = ()) -> tuple:
    """The plan as flat int64 arrays: segments per lane (CSR) with their remote inputs, stream reads and
    outputs (each CSR per segment), each message's route with its per-resource hold and latency (CSR), and each
    segment's round lag (docs R4b; zeros when `seg_lag` is empty)."""
    seg_ptr, length = [0], []
    rem_ptr, out_ptr, st_ptr = [0], [0], [0]
    rem_idx, outr, outm, st_idx = [], [], [], []
    lag_flat = [x for lags in seg_lag for x in lags] if seg_lag else [0] * sum(len(segs) for segs in segments)
    for segs in segments:
        for remote, seg_len, outs, _ops, streams in segs:
            length.append(seg_len)
            rem_idx.extend(remote)
            rem_ptr.append(len(rem_idx))
            for rel, m in outs:
                outr.append(rel)
                outm.append(m)
            out_ptr.append(len(outm))
            st_idx.extend(streams)
            st_ptr.append(len(st_idx))
        seg_ptr.append(len(length))
    route_ptr, route_res, ser_flat, lat_flat = [0], [], [], []
    for route, ser, lat in zip(routes, msg_ser, msg_lat):
        route_res.extend(route)
        ser_flat.extend(ser)
        lat_flat.extend(lat)
        route_ptr.append(len(route_res))
    as_arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return tuple(as_arr(x) for x in (seg_ptr, length, rem_ptr, rem_idx, out_ptr, outr, outm, st_ptr, st_idx,
                                     route_ptr, route_res, ser_flat, lat_flat, msg_dst, lag_flat))


@njit(cache=True)
def _following(c, r, s, seg_ptr, lag, n_inf, end):
    """Lane c's next (round, segment) after (r, s) whose inference r - lag exists (docs R4b); (end, 0) if none."""
    n_seg = seg_ptr[c + 1] - seg_ptr[c]
    while True:
        s += 1
        if s == n_seg:
            s = 0
            r += 1
        if r >= end:
            return end, np.int64(0)
        k = r - lag[seg_ptr[c] + s]
        if k >= 0 and k < n_inf:
            return r, s


@njit(cache=True)
def _prefetch(heap, c, k, s, t, n_inf, batch, seg_ptr, st_ptr, st_idx, counter):
    """Push the stream reads of chiplet c's segment s of inference k at time t (first of a batch only)."""
    if k < n_inf and k % batch == 0:
        g = seg_ptr[c] + s
        for q in range(st_ptr[g], st_ptr[g + 1]):
            heapq.heappush(heap, (t, np.int64(k), counter, st_idx[q], np.int64(0), np.int64(0)))
            counter += 1
    return counter


@njit(cache=True)
def _latest(arrival, base, idx, lo, hi, ready):
    """The latest arrival among messages idx[lo:hi] of the inference at `base`, or `ready` if later; -1 while one
    has not arrived."""
    for q in range(lo, hi):
        t = arrival[base + idx[q]]
        if t < 0:
            return np.int64(-1)
        if t > ready:
            ready = t
    return ready


@njit(cache=True)
def run_compiled(n_inf, batch, n_chip, n_res, seg_ptr, length, rem_ptr, rem_idx, out_ptr, out_rel, out_m, st_ptr,
                 st_idx, route_ptr, route_res, ser_flat, lat_flat, msg_dst, lag):
    """Completion time of each of `n_inf` inferences; traced_loop.run_traced without the trace."""
    n_msg = route_ptr.size - 1
    arrival = np.full(n_inf * n_msg, -1, dtype=np.int64)
    cur_r = np.zeros(n_chip, dtype=np.int64)
    cur_s = np.zeros(n_chip, dtype=np.int64)
    end = np.full(n_chip, n_inf, dtype=np.int64)
    free = np.zeros(n_chip, dtype=np.int64)
    finish = np.zeros(n_inf, dtype=np.int64)
    link_free = np.zeros(n_res, dtype=np.int64)
    zero = np.int64(0)
    heap = [(zero, zero, zero, zero, zero, zero)]
    heap.pop()
    counter = np.int64(0)
    waiting = [np.int64(c) for c in range(n_chip)]
    for c in range(n_chip):
        for g in range(seg_ptr[c], seg_ptr[c + 1]):
            if n_inf + lag[g] > end[c]:
                end[c] = n_inf + lag[g]
        if seg_ptr[c + 1] == seg_ptr[c]:
            cur_r[c] = end[c]
        else:
            cur_r[c], cur_s[c] = _following(c, zero, np.int64(-1), seg_ptr, lag, n_inf, end[c])
            if cur_r[c] < end[c]:
                counter = _prefetch(heap, c, cur_r[c] - lag[seg_ptr[c] + cur_s[c]], cur_s[c], zero, n_inf, batch,
                                    seg_ptr, st_ptr, st_idx, counter)
    while True:
        while len(waiting) > 0:
            c = waiting.pop()
            r, s, t_free = cur_r[c], cur_s[c], free[c]
            n_seg = seg_ptr[c + 1] - seg_ptr[c]
            while r < end[c]:
                g = seg_ptr[c] + s
                k = r - lag[g]
                ready = t_free
                base = k * n_msg
                ready = _latest(arrival, base, rem_idx, rem_ptr[g], rem_ptr[g + 1], ready)
                if ready >= 0 and k % batch == 0:
                    ready = _latest(arrival, base, st_idx, st_ptr[g], st_ptr[g + 1], ready)
                if ready < 0:
                    break
                r2, s2 = _following(c, r, s, seg_ptr, lag, n_inf, end[c])
                if r2 < end[c]:
                    counter = _prefetch(heap, c, r2 - lag[seg_ptr[c] + s2], s2, ready, n_inf, batch, seg_ptr,
                                        st_ptr, st_idx, counter)
                for q in range(out_ptr[g], out_ptr[g + 1]):
                    m = out_m[q]
                    p = route_ptr[m]
                    if route_ptr[m + 1] > p and ser_flat[p] != 0:
                        heapq.heappush(heap, (ready + out_rel[q], k, counter, m, zero, zero))
                        counter += 1
                    else:       # a zero-byte edge, or between two lanes of one chiplet: delivered at once
                        arrival[base + m] = ready + out_rel[q]
                        waiting.append(msg_dst[m])
                t_free = ready + length[g]
                if s == n_seg - 1 and t_free > finish[k]:
                    finish[k] = t_free
                r, s = r2, s2
            cur_r[c], cur_s[c], free[c] = r, s, t_free
        if len(heap) == 0:
            break
        t, k, _, m, j, tail_in = heapq.heappop(heap)
        p = route_ptr[m] + j
        res = route_res[p]
        start = t if t > link_free[res] else link_free[res]
        release = start + ser_flat[p]
        if tail_in > release:
            release = tail_in
        link_free[res] = release
        if route_ptr[m] + j + 1 < route_ptr[m + 1]:
            heapq.heappush(heap, (start + lat_flat[p], k, counter, m, j + 1, release + lat_flat[p]))
            counter += 1
        else:
            arrival[k * n_msg + m] = release + lat_flat[p]
            waiting.append(msg_dst[m])
    for c in range(n_chip):
        if cur_r[c] < end[c]:
            return finish, False
    return finish, True
