"""The shipped BERT-base through the real command: the issue's acceptance figures and a full partition run."""
import json
from pathlib import Path

import pytest

from partitioner.app.cli import main
from partitioner.hw.toml import load_hardware
from partitioner.model.partition import check
from partitioner.app.document import assignment_from_document
from partitioner.app.run import load_model

BERT = str(Path(__file__).resolve().parent.parent / "examples" / "bert-base.onnx")


def test_inspect_bert_matches_public_figures(capsys):
    assert main(["inspect", BERT, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert abs(doc["flops"] / 22.35e9 - 1) < 0.01           # 11.17 GMACs at sequence 128
    # 109,482,240 parameters x 4 bytes, plus two int64 id buffers (position_ids, token_type_ids): 10,968 bytes.
    assert doc["param_bytes"] == 109_482_240 * 4 + 10_968
    assert doc["ops"] < doc["onnx_nodes"]


@pytest.mark.slow
def test_bert_16_chiplets_end_to_end(tmp_path):
    out = tmp_path / "bert"
    assert main([BERT, "--chiplets", "16", "--method", "anneal", "--budget", "16", "--out", str(out)]) == 0
    doc = json.loads((out / "partition.json").read_text())
    graph = load_model(BERT, precision="fp16")
    a = assignment_from_document(graph, doc, "partition.json")
    assert check(graph, load_hardware(None, 16), a) == []
    m = doc["metrics"]
    assert m["throughput_per_s"] <= m["solver_bound_throughput_per_s"] * (1 + 1e-9) <= \
        m["bound_throughput_per_s"] * (1 + 1e-9)
