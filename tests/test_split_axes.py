"""partition.json records the axis each split op's simulated plan ran (rule S8 included) and `partition split` cuts
along it; files without "shard_axes" (written before) still split along sharding.layout without S8."""
from __future__ import annotations

import json

import numpy as np
import pytest

from partitioner.app.cli import main
from partitioner.app.split_cmd import split
from partitioner.model.cost import keep_column
from partitioner.hw.toml import load_hardware
from partitioner.frontend.load import load_onnx
from partitioner.model.sharding import layout
from test_split_shard import _chain, _doc, _group


def _joins(outcome):
    """The op type of the node that writes each joined tensor, by tensor name."""
    return {n.output[0]: n.op_type for s in outcome.split.stages for n in s.model.graph.node
            if n.op_type in ("Concat", "Sum")}


def test_s8_column_is_recorded_and_split_as_a_concat(tmp_path, capsys):
    """x (2 x 32) -> mm1 (W1 32 x 128) -> h1 -> mm2 (W2 128 x 128) -> y, both on chiplets 0..1 of the default
    4-chiplet mesh (64 x 64 output-stationary arrays). mm2's row_parallel piece (M 2, K 64, N 128) runs 2 output
    tiles x (64 + 126) = 380 cycles, its column piece (N 64) 1 tile x (128 + 126) = 254: S8 keeps it a column
    split. The simulated plan therefore all-gathers h1 and concatenates y; the old split cut mm2 row-parallel
    (a Sum of partials). Re-scoring the hand-written plan writes partition.json with mm2's axis "column", and
    its split joins y with a Concat; the hand-written file (no "shard_axes") still splits the old way."""
    path = _chain(tmp_path / "mlp.onnx", 32, 128, 128)
    graph = load_onnx(path)
    a, k = np.zeros(2, np.int64), np.full(2, 2)
    assert layout(graph, a, k)[0] == ("column", "row_parallel")
    assert layout(graph, a, k, keep_column(load_hardware(None, 4)))[0] == ("column", "column")

    old = _doc(tmp_path / "old.json", {"mm1": _group(0, 1), "mm2": _group(0, 1)})
    assert main(["simulate", str(path), "--partition", old, "--out", str(tmp_path / "run")]) == 0
    doc = json.loads((tmp_path / "run" / "partition.json").read_text())
    assert doc["assignment"] == {"mm1": _group(0, 1), "mm2": _group(0, 1, axis="column")}
    assert doc["shard_axes"] == "simulated"

    new = split(str(path), str(tmp_path / "run" / "partition.json"), str(tmp_path / "new"), {}, verify=True)
    assert _joins(new) == {"h1": "Concat", "y": "Concat"}
    assert [op["axis"] for op in new.split.sharded] == ["column", "column"]
    # mm2's pieces read the whole h1 (its all-gather) and W2's columns 0..64 / 64..128
    mm2 = [list(n.input) for s in new.split.stages for n in s.model.graph.node if n.name.startswith("mm2.p")]
    assert mm2 == [["h1", "W2.ax1.0_64"], ["h1", "W2.ax1.64_128"]]
    assert new.verification.max_abs_diff <= 1e-4

    before = split(str(path), old, str(tmp_path / "old"), {}, verify=True)
    assert _joins(before) == {"y": "Sum"}
    assert [op["axis"] for op in before.split.sharded] == ["column", "row_parallel"]
    assert before.verification.max_abs_diff <= 1e-4
    capsys.readouterr()


def test_row_parallel_is_a_valid_recorded_axis(tmp_path):
    """A file that records Megatron's row_parallel for mm2 (32 x 32 weights: S8 does not hold) splits as a Sum."""
    path = _chain(tmp_path / "mlp.onnx", 32, 32, 32)
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"chiplets": 4, "shard_axes": "simulated", "assignment": {
        "mm1": _group(0, 1), "mm2": _group(0, 1, axis="row_parallel")}}))
    out = split(str(path), str(p), str(tmp_path / "out"), {}, verify=True)
    assert _joins(out) == {"y": "Sum"} and out.verification.max_abs_diff <= 1e-4


@pytest.mark.parametrize("marker,axis,fragment", [
    ("simulated", "out_channel", "splits op mm2 (MatMul) along 'out_channel', not one axis it can take (column, "
                                 "row_parallel)"),
    ("guessed", "column", "has \"shard_axes\": 'guessed', expected 'simulated'"),
])
def test_recorded_axes_the_op_cannot_take_are_one_line_errors(tmp_path, capsys, marker, axis, fragment):
    path = _chain(tmp_path / "mlp.onnx", 32, 32, 32)
    p = tmp_path / "p.json"
    p.write_text(json.dumps({"chiplets": 4, "shard_axes": marker, "assignment": {
        "mm1": _group(0, 1), "mm2": _group(0, 1, axis=axis)}}))
    out = tmp_path / "out"
    code = main(["split", str(path), "--partition", str(p), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_whole_op_partition_json_has_no_shard_axes(tmp_path, capsys):
    path = _chain(tmp_path / "mlp.onnx", 32, 32, 32)
    assert main(["simulate", str(path), "--partition", _doc(tmp_path / "p.json", {"mm1": 0, "mm2": 1}),
                 "--out", str(tmp_path / "run")]) == 0
    doc = json.loads((tmp_path / "run" / "partition.json").read_text())
    assert doc["assignment"] == {"mm1": 0, "mm2": 1} and "shard_axes" not in doc
    capsys.readouterr()
