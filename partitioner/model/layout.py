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
