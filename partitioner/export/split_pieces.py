"""Rewrite an ONNX model so every sharded op runs as its pieces plus the collective that joins them.

A pure function: (TensorGraph, assignment, shard, ModelProto) -> Pieces, the model's nodes in topological order,
each with a chiplet (compute) or None (copied into every stage that needs it: folded nodes, joins and Slices). The
rewritten nodes compute exactly what the model computes; docs/split.md "Sharded ops" gives the rules:

- An op split k ways on chiplets c..c+k-1 takes the axis its plan ran (partition.json's, else `sharding.layout`),
  so aligned consumers work on their producer's slices as the simulator assumes. Its *anchor* node becomes k pieces, piece j on chiplet c+j writing
  slice j of one output axis: column = the last axis of a MatMul/Gemm with a weight (1/k of the weight's columns
  and bias), out_channel = a Conv's filters, vocab = the embedding table's columns (each piece holds 1/k of the
  table and looks up every token: the same split of weight bytes as the row-range form, joined by a Concat
  instead of an Add of masked partials), head/row = the outermost axis the node computes independently along.
  row_parallel (a weight GEMM reading a slice) splits the contraction: 1/k of the weight's rows, full-size partial
  sums joined by Sum (a Gemm's C only in piece 0). spatial = a Conv's output rows (axis 2): every piece holds all
  the filters and reads its input rows plus the halo its kernel needs, with the padding only at the image's edges.
- The op's later nodes that read a slice follow it piece by piece when they compute independently along the
  sliced axis (elementwise, Softmax/LayerNorm off their axis, Transpose, pooling, MatMul, Gemm, Conv, Gather);
  the others run whole on the group's first chiplet (reported as `whole_nodes` with the reason).
- An input a piece needs sliced is, in order: the producer's matching piece (no transfer: Megatron's aligned
  layers), a sliced copy of the initializer (the piece holds only its part), or a Slice of the whole tensor.
- Every sliced tensor keeps its name as the output of the join (Concat along its axis) of its pieces, so every
  other reader is unchanged; an unused join is never copied into a stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from partitioner.core.graph import TensorGraph
from partitioner.core.window import ELEMENTWISE, POOLS, Window, bounds, same_pads
from partitioner.export.stages import first_out
from partitioner.model.sharding import layout

RESHAPES = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})
"""Row-major reshapes: an axis they keep whole, with the same number of elements before it, slices through."""
ANCHOR = {"column": ("MatMul", "Gemm"), "row_parallel": ("MatMul", "Gemm"), "out_channel": ("Conv",),
          "vocab": ("Gather",)}
"""Axes with a weight to split: the node type that carries it (its weight is input 1, or 0 for a Gather)."""


@dataclass(frozen=True)
class Sliced:
    """A tensor computed as k pieces along `axis` (of its own rank): piece j = rows ranges[j] on chips[j]."""

    axis: int
    ranges: tuple[tuple[int, int], ...]
    pieces: tuple[str, ...]
    chips: tuple[int, ...]


@dataclass(frozen=True)
class Pieces:
    """The rewritten model: `nodes` in topological order, `chip` per node (None: copied where needed),
    `initializers` (the model's plus the sliced weights), `types` of the new tensors, and per split op what
    became of it (`sharded`, for the manifest)."""

    nodes: tuple[onnx.NodeProto, ...]
    chip: tuple[int | None, ...]
    initializers: dict[str, onnx.TensorProto]
    types: dict[str, onnx.TypeProto]
    sharded: tuple[dict, ...]


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def input_axes(node: onnx.NodeProto, o: int, shape, opset: int) -> list[int | None] | None:
    """For `node` writing slices of its first output along axis `o` (0-based), the axis along which each input must
    be sliced (None: read whole), or None when the node does not compute independently along `o`. `shape(t)` is a
    tensor's shape (None for an absent optional input)."""
    ins = list(node.input)
    out = shape(node.output[0])
    r = len(out)
    t = node.op_type

    def aligned(name: str) -> int | None:  # numpy broadcasting: align from the right; size-1 dims are broadcast
        if not name:
            return None
        s = shape(name)
        a = o - (r - len(s))
        return a if a >= 0 and s[a] != 1 else None

    if t in ELEMENTWISE:
        return [aligned(x) for x in ins]
    if t in ("Softmax", "LogSoftmax"):
        return [o] if opset >= 13 and o != _attr(node, "axis", -1) % r else None
    if t == "LayerNormalization":
        return [o] + [None] * (len(ins) - 1) if o < _attr(node, "axis", -1) % r else None
    if t == "Transpose":
        perm = list(_attr(node, "perm", list(range(r))[::-1]))
        return [perm[o]]
    if t in RESHAPES:  # output axis o is input axis i when both have the same extent and elements before them
        src = shape(ins[0])
        before = int(np.prod(out[:o], dtype=np.int64))
        i = next((i for i in range(len(src)) if src[i] == out[o] and int(np.prod(src[:i], dtype=np.int64)) == before),
                 None)
        return None if i is None else [i] + [None] * (len(ins) - 1)
    if t in POOLS:
        return [o] if o < 2 else None
    if t == "Conv":
        if o == 0:
            return [0] + [None] * (len(ins) - 1)
        return [None, 0, 0][:len(ins)] if o == 1 and _attr(node, "group", 1) == 1 else None
    if t == "MatMul":
        ra, rb = len(shape(ins[0])), len(shape(ins[1]))
        if ra < 2 or rb < 2:
            return None
        if o == r - 1:
            return [None, rb - 1]
        if o == r - 2:
            return [ra - 2, None]
        return [aligned(ins[0]), aligned(ins[1])]  # a batch axis: both sides' (or broadcast)
    if t == "Gemm":
        ta, tb = _attr(node, "transA", 0), _attr(node, "transB", 0)
        return ([ta, None] if o == 0 else [None, 1 - tb]) + [aligned(x) for x in ins[2:]]
    if t == "Gather":
        g = _attr(node, "axis", 0) % len(shape(ins[0]))
        ri = len(shape(ins[1]))
        if o < g:
            return [o, None]
        if o >= g + ri:
            return [o - ri + 1, None]
        return [None, o - g]
    return None


def partial_axes(node: onnx.NodeProto, shape) -> list[int | None] | None:
    """row_parallel: the contraction axis of each input (A's columns, the weight's rows), or None."""
    ins = list(node.input)
    if node.op_type == "MatMul":
        ra, rb = len(shape(ins[0])), len(shape(ins[1]))
        return [ra - 1, rb - 2] if ra >= 2 and rb >= 2 else None
    if node.op_type == "Gemm":
        return [1 - _attr(node, "transA", 0), _attr(node, "transB", 0)]
    return None


class _Unknown(Exception):
    """A tensor whose shape neither the importer nor ONNX inference resolved: its node cannot be cut."""


def rewrite(graph: TensorGraph, assignment: np.ndarray, shard: np.ndarray, model: onnx.ModelProto,
            types: dict[str, onnx.TypeProto], read: set[str], axes: tuple[str, ...] | None = None) -> Pieces:
    """The model's nodes with every op of shard degree k > 1 cut into pieces and joins (module docstring).
    `types` are the model's tensor types, `read` every tensor some node or the caller reads. `axes` (one per op,
    read for the split ops only): the axis each op's plan ran, as partition.json records it (rule S8 may keep a
    GEMM a column split); None: `sharding.layout` without S8."""
    a = np.asarray(assignment, dtype=np.int64)
    k = np.asarray(shard, dtype=np.int64)
    if axes is None:
        axes, _ = layout(graph, a, k)
    elif len(axes) != graph.n_ops:
        raise ValueError(f"{len(axes)} axes for {graph.n_ops} ops")
    g = model.graph
    names = graph.metadata["onnx_node_names"]
    owner = graph.onnx_node_owner()
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    inits = {t.name: t for t in g.initializer}
    folded_made = {o for n in g.node if names.get(first_out(n)) not in owner for o in n.output if o}
    resolved = graph.metadata.get("tensor_shapes", {})
    new_inits = dict(inits)
    new_shapes: dict[str, tuple[int, ...]] = {}
    new_types: dict[str, onnx.TypeProto] = {}
    nodes: list[onnx.NodeProto] = []
    chip: list[int | None] = []
    slices: dict[str, Sliced] = {}
    made: dict[tuple, str] = {}
    notes: dict[int, dict] = {}
    anchored: set[int] = set()

    def shape(t: str) -> tuple[int, ...]:
        for table in (new_shapes, resolved):
            if t in table:
                return tuple(table[t])
        if t in inits:
            return tuple(inits[t].dims)
        tt = types[t].tensor_type if t in types else None
        if tt is not None and tt.HasField("shape") and all(d.dim_value > 0 for d in tt.shape.dim):
            return tuple(d.dim_value for d in tt.shape.dim)
        raise _Unknown(t)

    def elem(t: str) -> int | None:
        if t in inits:
            return inits[t].data_type
        ty = types.get(t) or new_types.get(t)
        return ty.tensor_type.elem_type if ty is not None and ty.tensor_type.elem_type else None

    def new_tensor(name: str, like: str, dims: tuple[int, ...]) -> None:
        new_shapes[name] = dims
        e = elem(like)
        if e is not None:
            new_types[name] = helper.make_tensor_type_proto(e, list(dims))

    def resolve(t: str, ax: int, rng: tuple[int, int], j: int, c: int) -> str:
        """Slice `rng` of tensor t along axis ax, for piece j on chiplet c (module docstring, third rule)."""
        s = slices.get(t)
        if s is not None and s.axis == ax and j < len(s.ranges) and s.ranges[j] == rng and s.chips[j] == c:
            return s.pieces[j]
        key = (t, ax, rng)
        if key in made:
            return made[key]
        lo, hi = rng
        dims = tuple(hi - lo if d == ax else n for d, n in enumerate(shape(t)))
        if t in inits and inits[t].data_location != onnx.TensorProto.EXTERNAL:
            nm = f"{t}.ax{ax}.{lo}_{hi}"
            part = np.ascontiguousarray(np.take(numpy_helper.to_array(inits[t]), np.arange(lo, hi), axis=ax))
            new_inits[nm] = numpy_helper.from_array(part, nm)
        else:  # an activation, a folded tensor, or a graph-only weight (no bytes to cut)
            nm = f"{t}.slice{ax}.{lo}_{hi}"
            if opset >= 10:
                for suffix, v in (("starts", lo), ("ends", hi), ("axes", ax)):
                    new_inits[f"{nm}.{suffix}"] = numpy_helper.from_array(np.array([v], np.int64), f"{nm}.{suffix}")
                node = helper.make_node("Slice", [t, f"{nm}.starts", f"{nm}.ends", f"{nm}.axes"], [nm], name=nm)
            else:
                node = helper.make_node("Slice", [t], [nm], name=nm, starts=[lo], ends=[hi], axes=[ax])
            nodes.append(node)
            chip.append(None)
            new_tensor(nm, t, dims)
        made[key] = nm
        return nm

    def plan(node: onnx.NodeProto, i: int, chips: tuple[int, ...]):
        """(mode, output axis, input axes, ranges) for cutting node, or (None, why)."""
        ki = len(chips)
        if any(o and o in read for o in node.output[1:]):
            return None, "it writes more than one tensor that is read"
        out = shape(node.output[0])
        axis = axes[i]
        if axis == "head" and node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 \
                and len(inits[node.input[1]].dims if node.input[1] in inits else ()) == 2:
            axis = "column"  # a small weight matrix (S1 costs it as head) is still a weight: cut its columns
        if axis == "spatial" and i not in anchored and node.op_type == "Conv":
            anchored.add(i)
            return spatial_plan(node, shape, ki)
        if i not in anchored and node.op_type in ANCHOR.get(axis, ()):
            w = 0 if node.op_type == "Gather" else 1
            if node.input[w] in inits or node.input[w] in folded_made:
                anchored.add(i)
                if axis == "row_parallel":
                    ins = partial_axes(node, shape)
                    if ins is None:
                        return None, "its operands have rank < 2"
                    dim = shape(node.input[1])[ins[1]]
                    if dim < ki:
                        return None, f"its contraction has {dim} < {ki} rows"
                    return "partial", None, ins, bounds(dim, ki)
                o = {"Gemm": 1, "Conv": 1}.get(node.op_type, len(out) - 1)
                ins = input_axes(node, o, shape, opset)
                if ins is None or ins[w] is None:
                    return None, f"its weight cannot be split along output axis {o}"
                if out[o] < ki:
                    return None, f"its output axis {o} has {out[o]} < {ki} entries"
                return "slice", o, ins, bounds(out[o], ki)
        free = axis in ("head", "row") and i not in anchored
        best = None
        for o in range(len(out)):
            ins = input_axes(node, o, shape, opset) if out[o] >= ki else None
            if ins is None or any(x is not None and shape(t)[x] != out[o] for t, x in zip(node.input, ins)):
                continue
            rng = bounds(out[o], ki)
            score = sum(1 for t, x in zip(node.input, ins) if x is not None and t in slices
                        and slices[t].axis == x and slices[t].ranges == rng and slices[t].chips == chips)
            if (free or score) and (best is None or score > best[0]):
                best = (score, o, ins, rng)
        if best is None:
            why = ("it does not compute independently along any axis of size >= "
                   f"{ki}" if free else f"{node.op_type} does not continue the pieces' slices")
            return None, why
        anchored.add(i)
        return "slice", best[1], best[2], best[3]

    for node in g.node:
        name = names[first_out(node)]
        i = owner.get(name)
        if i is None or k[i] == 1:
            nodes.append(node)
            chip.append(None if i is None else int(a[i]))
            continue
        ki, first = int(k[i]), int(a[i])
        chips = tuple(range(first, first + ki))
        note = notes.setdefault(i, {"op": graph.ops[i].name, "axis": axes[i], "chiplets": list(chips),
                                    "pieced": [], "whole": []})
        try:
            p = plan(node, i, chips)
        except _Unknown as exc:
            p = None, f"the shape of tensor '{exc.args[0]}' is unknown"
        if p[0] is None:
            nodes.append(node)
            chip.append(first)
            note["whole"].append({"node": name, "why": p[1]})
            continue
        mode, o, ins, ranges = p[:4]
        pieces = []
        for j, c in enumerate(chips):
            if mode == "spatial":   # input rows plus halo (spatial_plan); filters and bias whole
                rows, pads = p[4][j]
                x = node.input[0]
                new_in = [x if rows == (0, shape(x)[2]) else resolve(x, 2, rows, j, c)] + list(node.input[1:])
            else:
                if mode == "partial" and node.op_type == "Gemm" and j > 0:
                    src = list(node.input[:2])  # C is added once, by piece 0
                else:
                    src = list(node.input)
                new_in = [t if x is None or not t else resolve(t, x, ranges[j], j, c)
                          for t, x in zip(src, ins + [None] * len(src))]
            piece = onnx.NodeProto()
            piece.CopyFrom(node)
            piece.name = f"{name}.p{j}of{ki}"
            del piece.input[:], piece.output[:]
            piece.input.extend(new_in)
            piece.output.append(f"{node.output[0]}.p{j}of{ki}")
            if mode == "spatial":   # the piece's own padding: only the image's edges keep the model's
                kept = [a for a in piece.attribute if a.name not in ("pads", "auto_pad")]
                del piece.attribute[:]
                piece.attribute.extend(kept + [helper.make_attribute("pads", pads)])
            out = shape(node.output[0])
            dims = out if mode == "partial" else tuple(ranges[j][1] - ranges[j][0] if d == o else n
                                                       for d, n in enumerate(out))
            if node.op_type == "Reshape":  # the piece's own target shape (the resolved one, sliced)
                target = f"{piece.name}.shape"
                new_inits[target] = numpy_helper.from_array(np.array(dims, np.int64), target)
                piece.input[1] = target
            new_tensor(piece.output[0], node.output[0], dims)
            nodes.append(piece)
            chip.append(c)
            pieces.append(piece.output[0])
        if mode == "partial":
            join = helper.make_node("Sum", pieces, [node.output[0]], name=f"{name}.join")
        else:
            join = helper.make_node("Concat", pieces, [node.output[0]], name=f"{name}.join", axis=o)
            slices[node.output[0]] = Sliced(o, ranges, tuple(pieces), chips)
        nodes.append(join)
        chip.append(None)
        note["pieced"].append(name)
    sharded = []
    for i in sorted(notes):
        n = notes[i]
        if n["whole"]:
            n["whole_on"] = int(a[i])
        sharded.append(n)
    return Pieces(tuple(nodes), tuple(chip), new_inits, new_types, tuple(sharded))


def spatial_plan(node: onnx.NodeProto, shape, ki: int):
    """("spatial", 2, None, output row ranges, per piece ((input rows lo, hi), explicit pads)) for a Conv cut along
    its output's first spatial axis, or (None, why). Piece j reads the input rows core/window.py's Window.reads
    gives (the rule the memory and cost models charge), clipped to the image; what falls outside is the piece's
    own padding, so only the first and last pieces keep the model's top and bottom padding."""
    out, x = shape(node.output[0]), shape(node.input[0])
    nsp = len(x) - 2
    if nsp < 1:
        return None, "it has no spatial axis"
    if out[2] < ki:
        return None, f"its output axis 2 has {out[2]} < {ki} rows"
    kernel = list(_attr(node, "kernel_shape", list(shape(node.input[1])[2:])))
    strides = list(_attr(node, "strides", [1] * nsp))
    dil = list(_attr(node, "dilations", [1] * nsp))
    pads = list(_attr(node, "pads", [0] * (2 * nsp)))
    auto = _attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto in ("SAME_UPPER", "SAME_LOWER"):   # ONNX's rule, made explicit so each piece can carry its own
        for d in range(nsp):
            pads[d], pads[nsp + d] = same_pads(x[2 + d], out[2 + d], kernel[d], strides[d], dil[d],
                                               auto == "SAME_UPPER")
    elif auto == "VALID":
        pads = [0] * (2 * nsp)
    window = Window(x[2], out[2], (kernel[0] - 1) * dil[0] + 1, strides[0], pads[0])
    ranges = bounds(out[2], ki)
    per_piece = []
    for h0, h1 in ranges:
        lo, hi = window.reads(h0, h1)
        rows = (max(lo, 0), min(hi, x[2]))
        if rows[1] <= rows[0]:
            return None, f"its output rows {h0}..{h1 - 1} read only padding"
        own = list(pads)
        own[0], own[nsp] = rows[0] - lo, hi - rows[1]
        per_piece.append((rows, own))
    return "spatial", 2, None, ranges, tuple(per_piece)
