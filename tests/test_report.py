"""Report writers: atomic, well-formed JSON / Chrome trace / markdown / PNG."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from partitioner.core.errors import UserError
from partitioner.hw.hardware import Chiplet, Hardware, mesh_of
from partitioner.model.partition import Partition
from partitioner.app.markdown import report_markdown
from partitioner.app.plot import plot_partition
from partitioner.core.files import write_json, write_text
from partitioner.sim.report import Report
from partitioner.sim.trace import chrome_trace, write_chrome_trace
from partitioner.sim.simulator import simulate
from partitioner.frontend.synthetic import random_dag


@pytest.fixture(scope="module")
def case():
    g = random_dag(40, 7)
    hw = mesh_of(6)
    a = np.sort(np.random.default_rng(7).integers(0, 5, g.n_ops))   # chiplet 5 unused
    return g, hw, a, simulate(g, hw, a, trace=True)


def test_report_is_frozen_and_complete(case):
    g, hw, a, r = case
    assert isinstance(r, Report)
    with pytest.raises(AttributeError):
        r.throughput_per_s = 1.0  # type: ignore[misc]
    assert len(r.chiplet_busy_fraction) == len(r.chiplet_memory_fraction) == hw.n_chiplets
    assert set(r.link_utilisation) == {f"{x}->{y}" for x, y in hw.links}
    assert r.energy_j == pytest.approx(sum(r.energy_breakdown_j.values()))
    assert set(r.energy_breakdown_j) == {"compute", "sram", "link", "memory"}
    assert r.chiplet_busy_fraction[5] == 0.0
    assert r.latency_s == pytest.approx(r.latency_cycles / hw.clock_hz)
    assert r.throughput_per_s == pytest.approx(hw.clock_hz / r.cycles_per_inference)


def test_write_json_roundtrip_and_atomic(case, tmp_path):
    g, hw, a, r = case
    path = tmp_path / "sub" / "report.json"
    write_json(path, r)
    data = json.loads(path.read_text())
    assert data["throughput_per_s"] == r.throughput_per_s
    assert data["trace_events"] == len(r.trace_events)
    write_json(path, {"a": np.int64(3), "b": np.arange(3), "c": np.float32(0.5)})
    assert json.loads(path.read_text()) == {"a": 3, "b": [0, 1, 2], "c": 0.5}
    assert sorted(os.listdir(path.parent)) == ["report.json"], "no temporary files left behind"


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "x.json"
    write_text(path, "old")
    with pytest.raises(TypeError):
        write_json(path, {"bad": object()})
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["x.json"]


def test_chrome_trace(case, tmp_path):
    g, hw, a, r = case
    path = tmp_path / "trace.json"
    write_chrome_trace(path, r, g, hw)
    data = json.loads(path.read_text())
    events = data["traceEvents"]
    x = [e for e in events if e["ph"] == "X"]
    assert len(x) == len(r.trace_events)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in x)
    ops = [e for e in x if e["pid"] < hw.n_chiplets]
    assert len(ops) == g.n_ops * r.inferences_simulated
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert names[0] == "chiplet 0" and names[hw.n_chiplets] == "link {}->{}".format(*hw.links[0])
    assert min(e["ts"] for e in x) == 0
    first = next(e for e in r.trace_events if e.kind == "op")
    assert x[0]["ts"] == first.start * 1e6 / hw.clock_hz and x[0]["name"] == g.ops[first.item].name
    assert chrome_trace(r, g, hw) == data


def test_chrome_trace_needs_a_trace(case, tmp_path):
    g, hw, a, _ = case
    with pytest.raises(UserError):
        write_chrome_trace(tmp_path / "t.json", simulate(g, hw, a), g, hw)


def test_markdown(case):
    g, hw, a, r = case
    md = report_markdown(r, g, hw, Partition(a), "dp")
    assert md.startswith(f"# Partition of {g.name} on {hw.name}")
    assert "Method: dp." in md and r.bottleneck in md
    assert md.count("\n| ") >= hw.n_chiplets + 8
    assert report_markdown(r, g, hw, a, "dp") == md


def test_plot_partition_writes_a_png(case, tmp_path):
    g, hw, a, r = case
    path = tmp_path / "partition.png"
    plot_partition(path, g, hw, a, r)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # non-grid topologies and a single chiplet draw too
    ring = Hardware("ring", (Chiplet(),) * 4, "ring", 1, 4)
    b = np.sort(np.random.default_rng(1).integers(0, 4, g.n_ops))
    plot_partition(tmp_path / "ring.png", g, ring, b, simulate(g, ring, b))
    one = mesh_of(1)
    plot_partition(tmp_path / "one.png", g, one, np.zeros(g.n_ops, dtype=int), simulate(g, one, np.zeros(g.n_ops, int)))
    assert sorted(os.listdir(tmp_path)) == ["one.png", "partition.png", "ring.png"]
