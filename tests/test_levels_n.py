"""Three levels and more (partitioner/hw/levels.py): spans, link classes, hierarchical routes across three levels,
a collective's cycles across a level boundary, the N-level [[level]] TOML format, the mi300x-node preset's totals,
and a staged plan that keeps its groups inside packages when the board links are slow."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from partitioner.core.errors import UserError
from partitioner.core.graph import Op, TensorGraph
from partitioner.hw.hardware import Chiplet, Hardware, packages_of
from partitioner.hw.levels import PackageLevel
from partitioner.hw.presets import MI300X, PRESETS
from partitioner.hw.toml import hardware_from_toml
from partitioner.model.cost import collective_cycles, group_links, may_group, route_energy_pj, route_transfer_cycles
from partitioner.model.partition import Partition
from partitioner.plan.staged_dp import staged_partition
from partitioner.sim.simulator import simulate

ROOT = Path(__file__).resolve().parents[1]
THREE_TOML = """name = "three"
[[level]]
count = 3
topology = "ring"
link_bytes_per_cycle = 8
hop_latency_cycles = 100
link_pj_per_bit = 10.0
link_name = "network"
[[level]]
count = 2
topology = "chain"
[[level]]
count = 4
topology = "mesh"
rows = 2
cols = 2
"""


def three_levels() -> Hardware:
    """2x2 meshes of default chiplets (64 B/cycle, 20 cycles, 0.5 pJ/bit), two per board on a chain (16 B/cycle,
    50 cycles, 5.5 pJ/bit: hardware.PACKAGE_LINK), three boards on a ring (8 B/cycle, 100 cycles, 10 pJ/bit)."""
    die = Hardware("three", (Chiplet(),) * 4, "mesh", 2, 2)
    return packages_of(packages_of(die, 2, "chain"), 3, "ring", name="three", link_bytes_per_cycle=8,
                       hop_latency_cycles=100, link_pj_per_bit=10.0, link_name="network")


def path_of(hw: Hardware, a: int, b: int) -> list[int]:
    out = [a]
    for k in hw.route(a, b):
        assert hw.links[k][0] == out[-1], "route links must chain"
        out.append(hw.links[k][1])
    return out


# --- numbering, links, routes -----------------------------------------------------------------------------------------
def test_three_levels_number_link_and_route_hierarchically():
    hw = three_levels()
    assert (hw.n_chiplets, hw.spans, hw.n_packages, hw.chiplets_per_package) == (24, (4, 8, 24), 6, 4)
    assert hw.layout == "3 groups (ring) of 2 packages (chain) of mesh 2x2"
    # 6 meshes of 4 undirected links, 3 boards of one package pair, a ring of 3 boards: 48 + 6 + 6 directed links
    classes = [hw.link_class.count(j) for j in range(3)]
    assert len(hw.links) == 60 and classes == [48, 6, 6]
    # board b's link to a higher board leaves from its last chiplet (8b + 7), to a lower one from its first (8b)
    assert sorted(hw.links[k] for k, j in enumerate(hw.link_class) if j == 2) == [
        (7, 8), (7, 16), (8, 7), (15, 16), (16, 7), (16, 15)]
    # 0 -> 17: in package 0 to its gateway 3 (one mesh hop, 0 at (0,0), 3 at (1,0)), the board link 3 -> 4, in
    # package 1 to 7, the node link 7 -> 16 (board 0 to board 2 the short way round the ring), then 16 -> 17.
    assert path_of(hw, 0, 17) == [0, 3, 4, 7, 16, 17] and hw.hops(0, 17) == 5
    assert [hw.link_class[k] for k in hw.route(0, 17)] == [0, 1, 0, 2, 0]
    assert path_of(hw, 17, 0) == [17, 16, 7, 4, 3, 0]
    assert path_of(hw, 9, 10) == [9, 10]
    # 5 -> 14: to board 0's gateway 7 by XY (5 at (0,1) -> 4 at (0,0) -> 7 at (1,0)), the node link 7 -> 8, board 1's
    # package 2 to its gateway 11, the board link 11 -> 12, then 12 -> 13 -> 14 inside package 3
    assert path_of(hw, 5, 14) == [5, 4, 7, 8, 11, 12, 13, 14]
    assert [hw.link_class[k] for k in hw.route(5, 14)] == [0, 0, 2, 0, 1, 0, 0]
    # 6,400 B over 0 -> 17: latencies 20 + 50 + 20 + 100 + 20, then the slowest link's hold, 6,400 / 8 = 800
    assert route_transfer_cycles(6400, hw.route(0, 17), hw) == 210 + 800
    assert route_energy_pj(100, hw.route(0, 17), hw) == pytest.approx(800 * (0.5 + 5.5 + 0.5 + 10.0 + 0.5))


def test_the_simulator_charges_each_levels_links():
    """One 6,400 B tensor from an op on chiplet 0 to one on chiplet 17 of three_levels(): each Add takes 10 cycles;
    the message holds the node link 800 cycles, the busiest resource in steady state, and reaches chiplet 17
    after 210 + 800 cycles (cut-through)."""
    vec = Chiplet().vector_ops_per_cycle
    ops = [Op(f"op{i}", "Add", (f"op{i}",), vec * 10, 0, 0, 0, 0) for i in range(2)]
    g = TensorGraph.build("pair", ops, [(0, 1, 6400)])
    rep = simulate(g, three_levels(), np.array([0, 17]))
    assert rep.latency_cycles == 10 + 1010 + 10
    assert rep.cycles_per_inference == 800 and rep.bottleneck == "link 7->16"
    assert rep.package_link_bytes_per_inference == 2 * 6400                # the board link and the node link


# --- collectives across a level boundary ---------------------------------------------------------------------------
def test_a_collective_across_a_level_boundary_is_timed_at_its_slowest_links():
    """Two packages of 2 chiplets on a chain; the board links 256 B/cycle but 50 cycles a hop. A group inside a
    package runs at the die links (64 B/cycle, 20 cycles); one across the boundary at the slowest of both
    classes, (64, 50). A 2-way all-reduce of 6,400 B (direct: one 6,400 B partial each way, then one hop):
    100 + 20 = 120 inside, 100 + 50 = 150 across. 4 ways across: direct 2 x 2 x 100 + 3 x 50 = 550, ring
    6 x (1,600 / 64 + 1) + 10 x 50 = 656, so 550."""
    hw = Hardware("b", (Chiplet(),) * 4, "chain", 1, 2, package_level=PackageLevel(2, "chain", 1, 2, 256, 50, 5.5))
    assert group_links(hw, 0, 2) == (64, 20) and group_links(hw, 1, 2) == (64, 50) == group_links(hw, 0, 4)
    assert int(collective_cycles("all-reduce", 6400, 2, hw, 0)) == 120
    assert int(collective_cycles("all-reduce", 6400, 2, hw, 1)) == 150
    assert int(collective_cycles("all-reduce", 6400, 4, hw, 0)) == 550
    # were every link a die link: the ring, 6 x 26 + 10 x 20 = 356, beats direct (400 + 60): the slow hops flip it
    assert int(collective_cycles("all-reduce", 6400, 4, hw)) == 356
    # on three_levels() the board (16 B/cycle) and node (8) links are slower than the die's 64: groups stay inside
    three = three_levels()
    assert [may_group(three, c, g) for c, g in ((0, 4), (2, 3), (0, 8), (4, 8))] == [True, False, False, False]
    assert group_links(three, 4, 8) == (8, 100)


def test_a_plan_keeps_its_groups_inside_packages_when_the_board_links_are_slow():
    """One MatMul of 1,000 cycles on a default chiplet, max_shard 4, two packages of two chiplets. With board links of
    the die's 64 B/cycle the DP splits it over all four (250 cycles: no consumer, so no collective); with 16 B/cycle
    links it may not cross the board and takes the two chiplets of one package (500 cycles)."""
    op = Op("fc", "MatMul", ("fc",), 8192 * 1000, 8192 * 1000, 65536, 16384, 32768)
    g = TensorGraph.build("g", [op], [])
    for bw, shard, cycles in ((64, 4, 250.0), (16, 2, 500.0)):
        hw = Hardware("b", (Chiplet(),) * 4, "chain", 1, 2,
                      package_level=PackageLevel(2, "chain", 1, 2, bw, 50, 5.5))
        a, k = staged_partition(g, hw, 4)
        assert int(k[0]) == shard and hw.package_of(int(a[0])) == hw.package_of(int(a[0] + k[0] - 1)) or bw == 64
        assert simulate(g, hw, Partition(a, shard=k)).cycles_per_inference == cycles


# --- TOML ------------------------------------------------------------------------------------------------------------
def test_three_level_toml_reads_to_the_built_hardware(tmp_path):
    f = tmp_path / "three.toml"
    f.write_text(THREE_TOML)
    hw = hardware_from_toml(f)
    assert hw == three_levels() == hardware_from_toml(ROOT / "examples" / "hardware" / "three-level-2x2x3.toml")
    assert hw.levels == (PackageLevel(2, "chain", 1, 2, 16, 50, 5.5),
                         PackageLevel(3, "ring", 1, 3, 8, 100, 10.0, "network"))
    assert [c.name for c in hw.link_classes] == ["die-to-die", "package-to-package", "network"]
    # a fourth level (a rack of two such nodes) reads too: ids run rack-wide
    f.write_text(THREE_TOML.replace('name = "three"\n', 'name = "rack"\n[[level]]\ncount = 2\n'))
    rack = hardware_from_toml(f)
    assert rack == packages_of(three_levels(), 2, "chain", name="rack")
    assert (rack.n_chiplets, rack.spans, len(rack.link_classes)) == (48, (4, 8, 24, 48), 4)
    assert [rack.link_class[k] for k in rack.route(0, 47)].count(3) == 1


@pytest.mark.parametrize("text,needle", [
    ("[[level]]\ncount = 2\n[[level]]\ncount = 0\n[[level]]\ncount = 4\n",
     "key 'count' in [[level]] 2 must be positive, got 0"),
    ("[[level]]\ncount = 2\n[[level]]\ncount = 3\ntopology = \"mesh\"\nrows = 2\ncols = 2\n[[level]]\ncount = 4\n",
     "x cols = 4 in [[level]] 2 does not match its count = 3"),
    ("[[level]]\ncount = 2\n[[level]]\ncount = 3\ntopology = \"bus\"\n[[level]]\ncount = 4\n",
     "key 'topology' in [[level]] 2 must be one of"),
    ("[[level]]\ncount = 2\nlink_bytes_per_cycle = 0\n[[level]]\ncount = 3\n[[level]]\ncount = 4\n",
     "link_bytes_per_cycle"),
])
def test_bad_n_level_specs_are_one_line_errors(tmp_path, text, needle):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(UserError) as err:
        hardware_from_toml(f)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_upper_levels_need_a_board_and_must_split_evenly():
    with pytest.raises(ValueError, match="upper levels need a package level"):
        Hardware("x", (Chiplet(),) * 4, "chain", 1, 4, upper_levels=(PackageLevel(2),))
    with pytest.raises(ValueError, match=r"6 chiplets do not split into 4 equal packages \(2 x 2 over the levels\)"):
        Hardware("x", (Chiplet(),) * 6, "chain", 1, 2, package_level=PackageLevel(2), upper_levels=(PackageLevel(2),))


# --- the mi300x-node preset ------------------------------------------------------------------------------------------
def test_the_mi300x_node_preset_totals():
    """Eight mi300x (8 XCDs on 4 I/O dies each) fully connected by one xGMI link per GPU pair: 64 XCDs, 32 HBM
    stacks of 48 GiB (1,536 GiB), 8 x 5.3 TB/s; a link of 64 GB/s per direction at 2.1 GHz is 30 B/cycle,
    50 ns = 105 cycles a hop."""
    node = PRESETS["mi300x-node"]
    assert (node.n_chiplets, node.spans, node.n_packages) == (64, (2, 8, 64), 32)
    assert node.layout == "8 groups (all-to-all) of 4 packages (ring) of chain 1x2"
    assert len(node.memory_stacks) == 32 and sum(s.capacity_bytes for s in node.memory_stacks) == 1536 << 30
    per_gpu = sum(s.bytes_per_cycle for s in MI300X.memory_stacks)
    assert sum(s.bytes_per_cycle for s in node.memory_stacks) == 8 * per_gpu
    assert sum(s.bytes_per_cycle for s in node.memory_stacks) * node.clock_hz == pytest.approx(8 * 5.3e12, rel=1e-3)
    xgmi = node.link_classes[2]
    assert (xgmi.bytes_per_cycle, xgmi.hop_latency_cycles) == (30, 105)
    assert node.link_class.count(2) == 8 * 7 and len(node.links) == 8 * len(MI300X.links) + 8 * 7
    # GPU 0's XCD 3 to GPU 5's XCD 2 (chiplet 42): round GPU 0's ring of I/O dies to its gateway 7 (3 -> 4 and
    # 5 -> 6 between I/O dies, 4 -> 5 and 6 -> 7 inside one), the xGMI link 7 -> 40 into GPU 5's first XCD, then
    # 40 -> 41 and the I/O-die link 41 -> 42
    assert path_of(node, 3, 42) == [3, 4, 5, 6, 7, 40, 41, 42]
    assert [node.link_class[k] for k in node.route(3, 42)] == [1, 0, 1, 0, 2, 0, 1]
    assert may_group(node, 0, 8) and not may_group(node, 4, 8)             # a whole GPU, never two halves


def test_two_nodes_on_a_400g_network_make_four_levels():
    """mi300x-2node: two mi300x-node on one 400G link pair (50 GB/s = 24 B/cycle at 2.1 GHz, 1 us = 2,100 cycles):
    128 XCDs, spans (2, 8, 64, 128); the pipeline's crossing 63 -> 64 is the one network link, and a message from
    the first XCD to the last crosses it once after an xGMI link (0's GPU to GPU 7's gateway) and before another."""
    rack = PRESETS["mi300x-2node"]
    assert (rack.n_chiplets, rack.spans, len(rack.memory_stacks)) == (128, (2, 8, 64, 128), 64)
    net = rack.link_classes[3]
    assert (net.name, net.bytes_per_cycle, net.hop_latency_cycles, net.pj_per_bit) == ("network", 24, 2100, 60.0)
    assert sorted(rack.links[k] for k, j in enumerate(rack.link_class) if j == 3) == [(63, 64), (64, 63)]
    assert [rack.link_class[k] for k in rack.route(0, 127)].count(3) == 1
    assert [rack.link_class[k] for k in rack.route(0, 127)].count(2) == 2


def test_the_benchmark_reads_a_plans_stages_gpus_and_straddling_groups():
    """benchmarks/multilevel.plan_shape on GPUs of 8 chiplets: units (0, 4), (4, 2), (7, 2), (9, 1), (16, 2): five
    stages on GPUs 0 (three), 1 and 2; four groups, the largest of 4; (7, 2) holds chiplets 7 and 8, two GPUs."""
    from benchmarks.multilevel import plan_shape

    a, shard = np.array([0, 0, 4, 7, 9, 16]), np.array([4, 4, 2, 2, 1, 2])
    assert plan_shape(a, shard, 8) == dict(stages=5, gpus=3, stages_per_gpu="1-3", groups=4, largest_group=4,
                                           straddling=1)
