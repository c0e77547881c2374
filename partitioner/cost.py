"""The cost model shared by the simulator and the solver: op cycles (roofline), transfer cycles, energy.

All times are integer cycles of the package clock. See docs/simulator.md for the rules and a worked example.
"""
from __future__ import annotations

import numpy as np

from partitioner.graph import TensorGraph
from partitioner.hardware import Chiplet, Hardware


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-np.asarray(a, dtype=np.int64) // int(b))


def gemm_cycles(batch, m, k, n, rows: int, cols: int, dataflow: str = "os") -> np.ndarray:
    """Cycles of `batch` M x K by K x N products on a rows x cols systolic array (docs/simulator.md, R2a).

    The dataflow maps two GEMM dims onto the array (spatial) and streams the third through it (temporal T):
    os: M x N outputs stay, T = K; ws: K x N weights stay, T = M; is: K x M inputs stay, T = N. The spatial
    dims are cut into ceil(Sr/rows) x ceil(Sc/cols) folds (tile quantisation: a partial fold costs a full one),
    and each fold takes T + rows + cols - 2 cycles (fill and drain of the skewed wavefront), plus `rows` cycles
    to preload the stationary operand under ws and is. Under os this is SCALE-Sim 3.0's compute-cycle count.
    """
    b, m, k, n = (np.asarray(x, dtype=np.int64) for x in (batch, m, k, n))
    sr, sc, t = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]
    folds = b * _ceil_div(sr, rows) * _ceil_div(sc, cols)
    return folds * (t + rows + cols - 2 + (0 if dataflow == "os" else rows))


def compute_cycles(graph: TensorGraph, chiplet: Chiplet) -> np.ndarray:
    """Matrix work on the MAC array plus vector work on the vector unit, per op. An op's known GEMMs are tiled
    on the array (gemm_cycles); matrix flops outside them run at the full array rate (2 flops per MAC)."""
    op_id, b, m, k, n = graph.gemm_table
    tiled = np.zeros(graph.n_ops, dtype=np.int64)
    rest = np.asarray(graph.matrix_flops, dtype=np.int64).copy()
    if op_id.size:
        rows, cols = chiplet.array_shape
        np.add.at(tiled, op_id, gemm_cycles(b, m, k, n, rows, cols, chiplet.dataflow))
        np.subtract.at(rest, op_id, 2 * b * m * k * n)
    return tiled + _ceil_div(rest, 2 * chiplet.macs_per_cycle) + _ceil_div(graph.vector_flops,
                                                                          chiplet.vector_ops_per_cycle)


def memory_cycles(graph: TensorGraph, chiplet: Chiplet) -> np.ndarray:
    """SRAM traffic per op: the weights it reads, its inputs and its outputs each cross the SRAM port once."""
    return _ceil_div(graph.weight_read_bytes + graph.in_bytes + graph.out_bytes, chiplet.sram_bytes_per_cycle)


def op_cycles(graph: TensorGraph, chiplet: Chiplet) -> np.ndarray:
    """Roofline: an op takes the longer of its compute and its SRAM traffic, and at least one cycle."""
    return np.maximum(np.maximum(compute_cycles(graph, chiplet), memory_cycles(graph, chiplet)), 1)


def op_cycles_matrix(graph: TensorGraph, hw: Hardware) -> np.ndarray:
    """cycles[op, chiplet]; columns repeat for identical chiplets, so each kind is computed once."""
    by_kind: dict[Chiplet, np.ndarray] = {}
    for c in hw.chiplets:
        if c not in by_kind:
            by_kind[c] = op_cycles(graph, c)
    cols = [by_kind[c] for c in hw.chiplets]
    return np.stack(cols, axis=1)


def bound_cycles_per_inference(graph: TensorGraph, hw: Hardware) -> float:
    """Analytical lower bound on cycles per inference (perfect balance, free communication):
    max(sum of each op's cycles on its fastest chiplet / n_chiplets, the largest such op)."""
    if graph.n_ops == 0:
        return 1.0
    fastest = op_cycles_matrix(graph, hw).min(axis=1)
    return max(float(fastest.sum()) / hw.n_chiplets, float(fastest.max()), 1.0)


def serialization_cycles(nbytes: int | np.ndarray, hw: Hardware) -> np.ndarray:
    """Cycles a tensor occupies one link: its bytes over the link bandwidth."""
    return _ceil_div(nbytes, hw.link_bytes_per_cycle)


def transfer_cycles(nbytes: int, hops: int, hw: Hardware) -> int:
    """Uncontended transfer time: per-hop latency on each hop plus serialisation once (cut-through routing)."""
    if hops == 0 or nbytes == 0:
        return 0
    return int(hops * hw.hop_latency_cycles + serialization_cycles(nbytes, hw))


def compute_energy_pj(graph: TensorGraph, hw: Hardware, assignment: np.ndarray) -> tuple[float, float]:
    """(compute, SRAM) energy in pJ of one inference under an assignment."""
    compute = sram = 0.0
    a = np.asarray(assignment)
    for c, chip in enumerate(hw.chiplets):
        mask = a == c
        if not mask.any():
            continue
        compute += float(graph.matrix_flops[mask].sum()) / 2 * chip.mac_pj \
            + float(graph.vector_flops[mask].sum()) * chip.vector_op_pj
        traffic = graph.weight_read_bytes[mask] + graph.in_bytes[mask] + graph.out_bytes[mask]
        sram += float(traffic.sum()) * chip.sram_pj_per_byte
    return compute, sram


def link_energy_pj(nbytes: int, hops: int, hw: Hardware) -> float:
    return float(nbytes) * 8.0 * hops * hw.link_pj_per_bit
