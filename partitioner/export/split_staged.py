"""Cut a sharded partition into stages: one ONNX model per (chiplet, step), in an order that runs sequentially.

split_pieces rewrites the model into pieces and joins; this module groups the rewritten nodes into stages. Nodes
with a chiplet are placed in model order; a chiplet's current stage takes the next node of that chiplet unless the
node reads (through other chiplets) something that itself read the current stage, which would be a cycle: then the
chiplet opens a new stage (Megatron FC1 -> all-gather -> FC2: a chiplet's FC2 piece waits for the join of
everyone's FC1 pieces). Nodes without a chiplet (folded, joins, Slices) are copied into each stage that needs them,
as for whole-op splits, so a join is an all-gather: every chiplet that reads the joined tensor concatenates the
pieces itself. A stage's step is its depth in the stage graph (stages sharing a step are independent); stages are
ordered by (step, chiplet) and written as stage_<chiplet>_<step>.onnx.
"""
from __future__ import annotations

import numpy as np
import onnx

from partitioner.core.errors import UserError
from partitioner.core.graph import TensorGraph
from partitioner.model.sharding import check_groups
from partitioner.export.stages import Split, Stage, node_inputs, stage_model, value_types
from partitioner.export.split_pieces import rewrite

_FIX_GROUP = "re-run `partition` for this model, or give the op a group inside the package"


def split_sharded(graph: TensorGraph, assignment: np.ndarray, shard: np.ndarray, model: onnx.ModelProto,
                  n_chiplets: int | None = None, axes: tuple[str, ...] | None = None) -> Split:
    """Stages for a partition with split ops (module docstring). `model` has its local functions inlined; `axes`
    as for split_pieces.rewrite."""
    a = np.asarray(assignment, dtype=np.int64)
    k = np.asarray(shard, dtype=np.int64)
    if k.shape != a.shape or not np.issubdtype(k.dtype, np.integer):
        raise UserError(f"the shard degrees have shape {k.shape}, expected {a.shape}", _FIX_GROUP)
    limit = n_chiplets if n_chiplets is not None else int((a + k).max())
    problems = check_groups(graph, limit, a, k)
    if problems:
        raise UserError(f"cannot split: {problems[0]}", _FIX_GROUP)
    g = model.graph
    types = value_types(model)
    read = {t for n in g.node for t in node_inputs(n)} | {vi.name for vi in g.output}
    pieces = rewrite(graph, a, k, model, types, read, axes)
    nodes, chip = pieces.nodes, pieces.chip
    inits = pieces.initializers
    producer = {o: n for n, node in enumerate(nodes) for o in node.output if o}
    graph_inputs = [vi.name for vi in g.input if vi.name not in inits]
    graph_outputs = [vi.name for vi in g.output]

    # --- the compute nodes each tensor depends on, through copied (chip None) nodes --------------------------
    sources: dict[str, frozenset[int]] = {}

    def srcs(t: str) -> frozenset[int]:
        if t in sources:
            return sources[t]
        stack, seen, found = [t], set(), set()
        while stack:
            u = stack.pop()
            if u in seen or u in inits or u not in producer:
                continue
            seen.add(u)
            p = producer[u]
            if chip[p] is not None:
                found.add(p)
            else:
                stack.extend(node_inputs(nodes[p]))
        sources[t] = frozenset(found)
        return sources[t]

    # --- greedy stages: a chiplet opens a new stage only where keeping the current one would close a cycle ---
    stage_chip: list[int] = []
    deps: list[set[int]] = []
    current: dict[int, int] = {}
    stage_of: dict[int, int] = {}

    def reaches(s: int, target: int) -> bool:
        stack, seen = [s], set()
        while stack:
            u = stack.pop()
            if u == target:
                return True
            if u not in seen:
                seen.add(u)
                stack.extend(deps[u])
        return False

    def place(c: int, reads: list[str]) -> int:
        need = {stage_of[p] for t in reads for p in srcs(t)}
        cur = current.get(c)
        if cur is None or any(d != cur and reaches(d, cur) for d in need):
            stage_chip.append(c)
            deps.append(set() if cur is None else {cur})
            cur = current[c] = len(stage_chip) - 1
        deps[cur] |= need - {cur}
        return cur

    for n, node in enumerate(nodes):
        if chip[n] is not None:
            stage_of[n] = place(chip[n], node_inputs(node))
    chips = sorted(set(stage_chip))
    # Model outputs a copied node makes (a join, a folded constant) come out of the last chiplet that feeds them.
    copied_out: dict[str, int] = {}
    for t in graph_outputs:
        if t not in producer:
            raise UserError(f"model output '{t}' is not computed by any node",
                            "export the model with its outputs computed by the graph")
        if chip[producer[t]] is None:
            feed = [chip[p] for p in srcs(t)]
            copied_out[t] = place(max(feed) if feed else chips[-1], [t])

    # --- members: each stage's compute nodes plus the copied nodes they need -------------------------------
    n_st = len(stage_chip)
    members: list[set[int]] = [set() for _ in range(n_st)]
    ins: list[dict[str, int | str]] = [dict() for _ in range(n_st)]
    for n, s in stage_of.items():
        members[s].add(n)
    for t, s in copied_out.items():
        members[s].add(producer[t])
    for s in range(n_st):
        todo = list(members[s])
        while todo:
            n = todo.pop()
            members[s].add(n)
            todo += [producer[t] for t in node_inputs(nodes[n]) if t in producer and chip[producer[t]] is None
                     and producer[t] not in members[s]]
        for n in sorted(members[s]):  # inputs in the order the stage's nodes first read them
            for t in node_inputs(nodes[n]):
                if t in inits:
                    continue
                if t not in producer:
                    ins[s].setdefault(t, "input")
                elif chip[producer[t]] is not None and stage_of[producer[t]] != s:
                    ins[s].setdefault(t, stage_of[producer[t]])

    # --- order: depth in the stage graph, then chiplet ---------------------------------------------------------
    depth: dict[int, int] = {}
    for s in range(n_st):
        stack = [s]
        while stack:
            u = stack[-1]
            todo = [d for d in deps[u] if d not in depth]
            if todo:
                stack.extend(todo)
                continue
            stack.pop()
            depth[u] = 1 + max((depth[d] for d in deps[u]), default=-1)
    order = sorted(range(n_st), key=lambda s: (depth[s], stage_chip[s]))
    file = {s: f"stage_{stage_chip[s]}_{depth[s]}.onnx" for s in range(n_st)}

    out_of = {t: stage_of.get(producer[t], copied_out.get(t)) for t in graph_outputs}
    sends: list[dict[str, list]] = [dict() for _ in range(n_st)]
    for s in order:
        for t, src in ins[s].items():
            if src != "input":
                sends[src].setdefault(t, []).append(s)
    for t in graph_outputs:
        sends[out_of[t]].setdefault(t, []).append("output")

    types = {**types, **pieces.types}
    rewritten = onnx.helper.make_model(onnx.helper.make_graph(list(nodes), g.name, list(g.input), list(g.output)),
                                       opset_imports=list(model.opset_import))
    resolved = graph.metadata.get("tensor_shapes", {})
    stages = []
    for s in order:
        c = stage_chip[s]
        inputs = {t: src if src == "input" else stage_chip[src] for t, src in ins[s].items()}
        sent = {t: tuple(d if d == "output" else stage_chip[d] for d in dst) for t, dst in sends[s].items()}
        m = stage_model(rewritten, c, sorted(members[s]), inputs, list(sent), inits, types, resolved)
        m.ir_version = model.ir_version
        stages.append(Stage(c, m, inputs, sent, step=depth[s],
                            sources={t: "input" if src == "input" else file[src] for t, src in ins[s].items()},
                            targets={t: tuple(d if d == "output" else file[d] for d in dst)
                                     for t, dst in sends[s].items()}))
    return Split(tuple(stages), tuple(graph_inputs), tuple(graph_outputs), sharded=pieces.sharded)
