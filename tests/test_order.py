"""The pipeline order on heterogeneous grids (partitioner/hw/order.py): which path the chiplet ids follow, what the
staged DP and the simulator make of it, and how a run and `partition simulate` keep it."""
import json
from pathlib import Path

import numpy as np
import pytest

from partitioner.app.candidates import best_staged, staged_in_order
from partitioner.app.cli import main
from partitioner.app.simulate_cmd import saved_order
from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware
from partitioner.hw.order import (
    ORDERS, candidate_orders, in_order, kind_changes, order_name, snake_cells, tied_orders)
from partitioner.hw.toml import hardware_from_toml, load_hardware
from partitioner.model.partition import check
from partitioner.plan.staged_dp import staged_partition
from tests.test_cli import _mlp

HETERO_64 = Path(__file__).resolve().parent.parent / "examples" / "hardware" / "hetero-64.toml"
VECTOR = Chiplet(kind="vector", macs_per_cycle=512, vector_ops_per_cycle=4 * 512)


def test_snakes_visit_every_cell_through_neighbours():
    for order in ORDERS:
        cells = snake_cells(3, 4, order)
        assert sorted(cells) == [(r, c) for r in range(3) for c in range(4)]
        assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in zip(cells, cells[1:]))
    assert snake_cells(2, 3, "rows") == [(0, 0), (0, 1), (0, 2), (1, 2), (1, 1), (1, 0)]
    assert snake_cells(2, 3, "columns") == [(0, 0), (1, 0), (1, 1), (0, 1), (0, 2), (1, 2)]
    assert snake_cells(2, 3, "columns-reversed") == [(1, 2), (0, 2), (0, 1), (1, 1), (1, 0), (0, 0)]


def test_hetero_64_takes_kinds_first_where_each_column_is_one_kind(tmp_path):
    rows_file = tmp_path / "rows.toml"
    rows_file.write_text('pipeline_order = "rows"\n' + HETERO_64.read_text())
    by_rows = hardware_from_toml(rows_file)            # ids as the file writes them: the row snake
    hw = load_hardware(str(HETERO_64))                 # auto
    # kinds by column (big, mid, small, big, mid, small, big, mid): the row snake changes kind at 7 of the 8 steps
    # along each row, none at the 7 row turns (same column): 56; the column snake only between columns: 7; kinds
    # first: 2, in each of the 3! orders of the kinds
    changes = {name: kind_changes(by_rows, ids) for name, ids in candidate_orders(by_rows)}
    assert changes == {"rows": 56, "columns": 7, "rows-reversed": 56, "columns-reversed": 7,
                       **{f"kinds: {a}, {b}, {c}": 2 for a, b, c in
                          [("big", "mid", "small"), ("big", "small", "mid"), ("mid", "big", "small"),
                           ("mid", "small", "big"), ("small", "big", "mid"), ("small", "mid", "big")]}}
    assert [name for name, _ in tied_orders(by_rows)] == list(changes)[4:]
    assert order_name(by_rows) == "rows" and order_name(hw) == "kinds: big, mid, small"
    # big: columns 0, 3, 6 as the column snake visits them (down, up, down), then mid (1 up, 4 down, 7 up), then small
    assert [c.kind for c in hw.chiplets] == ["big"] * 24 + ["mid"] * 24 + ["small"] * 16
    assert [hw.positions[i] for i in (0, 7, 8, 15, 16, 24)] == [(0, 0), (7, 0), (7, 3), (0, 3), (0, 6), (7, 1)]
    # every chiplet keeps its kind and its cell; the pipeline jumps 3 hops between columns of a kind and 5 between
    # kinds ((7, 6) -> (7, 1), (0, 7) -> (0, 2)); stacks stay on the north edge
    kind_at = {by_rows.positions[i]: c for i, c in enumerate(by_rows.chiplets)}
    assert all(kind_at[hw.positions[i]] == c for i, c in enumerate(hw.chiplets))
    assert [i for i in range(63) if hw.hops(i, i + 1) != 1] == [7, 15, 23, 31, 39, 47, 55]
    assert [sorted(hw.positions[a] for a in s.attached) for s in hw.memory_stacks] == [
        sorted(by_rows.positions[a] for a in s.attached) for s in by_rows.memory_stacks]
    assert in_order(hw, "rows").chiplets == by_rows.chiplets and in_order(hw, "kinds") == hw
    assert order_name(in_order(hw, "columns-reversed")) == "columns-reversed"


def _two_kinds() -> tuple[Hardware, TensorGraph]:
    """A 2x2 mesh with vector chiplets in column 0 (4x the vector rate, 1/8 the MACs) and default ones in column 1;
    ids as the row snake numbers them: vector, default, default, vector. Four ops in a chain: two vector ops of 400
    cycles on a default chiplet (100 on a vector one), then two matrix ops of 100 cycles on a default chiplet (800 on
    a vector one); 64 bytes between consecutive ops."""
    d = Chiplet()
    hw = Hardware("two-kinds", (VECTOR, d, d, VECTOR), "mesh", 2, 2)
    vec = [Op(f"v{i}", "Add", (f"v{i}",), 400 * 512) for i in range(2)]
    mat = [Op(f"m{i}", "MatMul", (f"m{i}",), 100 * 2 * 4096, 100 * 2 * 4096) for i in range(2)]
    return hw, TensorGraph.build("chain", vec + mat, [(0, 1, 64), (1, 2, 64), (2, 3, 64)])


def test_the_column_snake_gives_each_op_its_kind_where_the_row_snake_cannot():
    hw, g = _two_kinds()
    # row snake (vector, default, default, vector): the vector ops both go on chiplet 0 (100 + 100) or the second
    # on a default chiplet (400); the matrix ops go on default chiplets (100 each, or 200 together): 200 cycles per
    # inference, whichever tie the DP takes
    row = best_staged(g, hw, 1)
    assert tuple(row.assignment[:2]) == (0, 0) and set(row.assignment[2:].tolist()) <= {1, 2}
    assert row.report.cycles_per_inference == 200
    # column snake (vector, vector, default, default): every op on a chiplet of its kind, 100 cycles each
    cols = in_order(hw, "columns")
    assert [c.kind for c in cols.chiplets] == ["vector", "vector", "default", "default"]
    col = best_staged(g, cols, 1)
    assert tuple(col.assignment) == (0, 1, 2, 3) and check(g, cols, col.assignment) == []
    assert col.report.cycles_per_inference == 100
    assert col.report.bound_cycles_per_inference <= 100
    # the run's choice: columns and its reverse change kind once (row: twice); the reverse puts the default
    # chiplets first, and the matrix ops cannot follow the vector ops onto a vector chiplet (800 each), so the vector
    # ops run on the default ones at 400 each, the second with both matrix ops: 400 + 100 + 100 = 600
    # (kinds first, vector then default, is the column snake itself; default then vector visits the default
    # column downwards, unlike the reversed snake, and is as slow)
    assert [name for name, _ in tied_orders(hw)] == ["columns", "columns-reversed", "kinds: default, vector"]
    chosen, ev = staged_in_order(g, hw, 1)
    assert order_name(chosen) == "columns" and ev.report.cycles_per_inference == 100
    rev = best_staged(g, in_order(hw, "columns-reversed"), 1)
    assert tuple(rev.assignment) == (0, 1, 1, 1) and rev.report.cycles_per_inference == 600


def test_the_order_choice_stops_with_the_run_budget():
    """Once --max-time or Ctrl-C says stop, the orders not yet tried are left out; the first is always tried."""
    hw, g = _two_kinds()
    asked = []
    chosen, ev = staged_in_order(g, hw, 1, stop=lambda: asked.append(1) or True)
    # asked once, before the second of the three tied orders: only the first (columns) was simulated
    assert order_name(chosen) == "columns" and ev.report.cycles_per_inference == 100 and len(asked) == 1
    asked.clear()
    staged_in_order(g, hw, 1, stop=lambda: asked.append(1) and False)
    assert len(asked) == 2          # never told to stop: asked before each order after the first


def test_groups_of_one_kind_form_along_the_column_snake_only():
    """Mixed groups never form (staged_dp._stage_fn), so on the row snake the two vector chiplets (ids 0 and 3)
    cannot split an op between them; on the column snake they are ids 0 and 1."""
    hw, g = _two_kinds()
    a, shard = staged_partition(g, in_order(hw, "columns"), 2)
    row_a, row_shard = staged_partition(g, hw, 2)
    groups = {(int(x), int(k)) for x, k in zip(a, shard) if k > 1}
    row_groups = {(int(x), int(k)) for x, k in zip(row_a, row_shard) if k > 1}
    assert all(hw.chiplets[x] == hw.chiplets[x + k - 1] for x, k in row_groups)     # (1, 2): the default pair
    assert (0, 1) not in {(x, k) for x, k in row_groups} and all(x != 0 or k == 1 for x, k in row_groups)
    assert all(in_order(hw, "columns").chiplets[x] == in_order(hw, "columns").chiplets[x + k - 1]
               for x, k in groups)


@pytest.mark.parametrize("text, needle", [
    ('rows = 2\ncols = 2\npipeline_order = "diagonal"\n', "'pipeline_order' must be one of auto, kinds, rows"),
    ('topology = "ring"\nchiplets = 4\npipeline_order = "columns"\n', "needs one flat mesh or torus"),
])
def test_a_bad_pipeline_order_is_one_user_error(tmp_path, text, needle):
    f = tmp_path / "hw.toml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        hardware_from_toml(f)
    assert needle in str(exc.value)


def test_a_saved_order_is_taken_again_and_a_bad_one_refused():
    hw, _ = _two_kinds()
    cols = in_order(hw, "columns")
    doc = {"per_chiplet": [{"place": list(p)} for p in cols.positions]}
    assert saved_order(hw, {}, "p.json") is hw and saved_order(cols, doc, "p.json") is cols
    assert saved_order(hw, doc, "p.json") == cols
    doc["per_chiplet"][0]["place"] = [5, 5]
    with pytest.raises(UserError, match="places do not match two-kinds"):
        saved_order(hw, doc, "p.json")


def test_a_run_records_its_path_and_simulate_scores_the_same_plan(tmp_path, capsys):
    model = _mlp(tmp_path / "mlp.onnx", layers=4)
    hw_file = tmp_path / "two-kinds.toml"
    hw_file.write_text('rows = 2\ncols = 2\n[[overrides]]\nids = [0, 3]\nkind = "vector"\nmacs_per_cycle = 512\n'
                       'vector_ops_per_cycle = 2048\n')
    out = tmp_path / "run"
    assert main([model, "--hardware", str(hw_file), "--method", "dp", "--precision", "fp32", "--out", str(out),
                 "--no-certificate"]) == 0
    doc = json.loads((out / "partition.json").read_text())
    assert doc["pipeline_order"] in ("columns", "columns-reversed", "kinds: default, vector")
    places = [tuple(c["place"]) for c in doc["per_chiplet"]]
    named = dict(candidate_orders(load_hardware(str(hw_file))))[doc["pipeline_order"]]
    assert places == [load_hardware(str(hw_file)).positions[i] for i in named]
    assert f"pipeline order {doc['pipeline_order']}" in capsys.readouterr().out
    assert main(["simulate", model, "--partition", str(out / "partition.json")]) == 0
    assert f"{doc['metrics']['throughput_per_s']:,.1f} inferences/s" in capsys.readouterr().out
    assert np.isfinite(doc["metrics"]["throughput_per_s"])


def test_beyond_three_kinds_only_the_met_order_and_its_reverse_go_kinds_first():
    """A 2x4 mesh of four kinds, one per column: the column snake (3 changes) is kinds first in the order it meets
    them, so of the kinds-first orders only the reverse (d, c, b, a) is new, not all 4! = 24."""
    kinds = [Chiplet(kind=k, macs_per_cycle=m) for k, m in zip("abcd", (1024, 2048, 4096, 8192))]
    by_cell = {(r, c): kinds[c] for r in range(2) for c in range(4)}
    cells = snake_cells(2, 4, "rows")
    hw = Hardware("four", tuple(by_cell[cell] for cell in cells), "mesh", 2, 4)
    names = [name for name, _ in candidate_orders(hw)]
    assert names == ["rows", "columns", "rows-reversed", "columns-reversed", "kinds: d, c, b, a"]
    assert [name for name, _ in tied_orders(hw)] == ["columns", "columns-reversed", "kinds: d, c, b, a"]
    assert [c.kind for c in in_order(hw, "kinds").chiplets] == list("aabbccdd")
