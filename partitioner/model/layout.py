"""The layout the simulator runs a split plan as, in one place: every split op becomes its pieces on its group's
chiplets, with ring relays where a ring beats direct copies (cost.ring_links) and each piece's axis chosen per
chiplet (rules S8, S9: cost.keep_column). The simulator, partition.json, report.md, the plot and the terminal
summary all ask this module, so they count the same groups, axes and pieces.

(Memory checks deliberately take the larger of this layout and Megatron's: model/partition.memory_use.)"""
from __future__ import annotations

import numpy as np

from partitioner.core.graph import TensorGraph
from partitioner.hw.hardware import Hardware
from partitioner.model.cost import keep_column, ring_links
from partitioner.model.experts import owners, piece_rows
from partitioner.model.sharding import Expanded, expand, groups, layout


def simulated_pieces(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray | None
                     ) -> Expanded:
    """The pieces the simulator runs (sharding.expand with the package's ring links and axis rule)."""
    return expand(graph, assignment, shard, links=ring_links(hw), keep_column=_rule(graph, hw))


def simulated_groups(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray | None
                     ) -> list[dict]:
    """Each group of split ops as the simulator runs it: chiplets, shard degree, axes, collectives, rings, bytes."""
    return groups(graph, assignment, shard, links=ring_links(hw), keep_column=_rule(graph, hw))


def simulated_axes(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray | None
                   ) -> tuple[str, ...]:
    """The axis each op is split along in the simulated plan ("none" for a whole op)."""
    return layout(graph, assignment, shard, _rule(graph, hw))[0]


def _rule(graph: TensorGraph, hw: Hardware):
    """cost.keep_column on `hw` at the graph's precision."""
    return keep_column(hw, graph.metadata.get("precision"))


def simulated_experts(graph: TensorGraph, hw: Hardware, assignment: np.ndarray, shard: np.ndarray | None
                      ) -> list[dict]:
    """Where each mixture-of-experts op's experts run in the simulated plan, and the bytes its all-to-alls put on
    the links per inference (one message per piece and destination chiplet, R5): per op its chiplets, the experts
    on each chiplet (an expert over several chiplets once per chiplet), the rows each runs, and the dispatch and
    combine bytes."""
    k = np.ones(graph.n_ops, dtype=np.int64) if shard is None else np.asarray(shard, dtype=np.int64)
    a = np.asarray(assignment, dtype=np.int64)
    moe = [i for i, op in enumerate(graph.ops) if op.experts is not None]
    if not moe:
        return []
    ex = simulated_pieces(graph, hw, a, k)
    chip, owner = ex.assignment.tolist(), ex.owner.tolist()
    sent: dict[tuple[int, int], int] = {}
    for u, v, b in zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist(), ex.graph.edge_bytes.tolist()):
        if chip[u] != chip[v]:
            sent[(u, chip[v])] = max(sent.get((u, chip[v]), 0), b)
    out = []
    for i in moe:
        op, ki = graph.ops[i], int(k[i])
        src = next((j for j, o in enumerate(graph.ops) if o.name == op.experts.source), None)
        pieces = owners(op.experts.count, ki)
        dispatch = _bytes_into(ex, sent, src, i)
        combine = sum(b for (u, _), b in sent.items() if owner[u] == i)
        out.append({"op": op.name, "chiplets": list(range(int(a[i]), int(a[i]) + ki)), "experts": op.experts.count,
                    "top_k": op.experts.top_k,
                    "experts_per_chiplet": [list(e) for e, _ in pieces] if ki > 1 else [list(range(op.experts.count))],
                    "rows_per_chiplet": [round(r, 3) for r in (piece_rows(op, ki) if ki > 1 else
                                                                (sum(op.experts.rows),))],
                    "dispatch_bytes": dispatch, "combine_bytes": combine})
    return out


def _bytes_into(ex: Expanded, sent: dict, src: int | None, moe: int) -> int:
    """Bytes the pieces of op `src` send to chiplets holding a piece of op `moe` over its dispatch edges."""
    if src is None:
        return 0
    owner, chip = ex.owner.tolist(), ex.assignment.tolist()
    targets = {chip[v] for u, v in zip(ex.graph.edge_src.tolist(), ex.graph.edge_dst.tolist())
               if owner[u] == src and owner[v] == moe and chip[u] != chip[v]}
    return sum(b for (u, d), b in sent.items() if owner[u] == src and d in targets)
