"""Topologies, numbering, routing, TOML files and presets."""
from __future__ import annotations

from pathlib import Path

import pytest

from partitioner.core.errors import UserError
from partitioner.hw.hardware import MIB, Chiplet, Hardware, mesh_of, near_square
from partitioner.hw.presets import PRESETS
from partitioner.hw.toml import hardware_from_toml, load_hardware

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "hardware"


def hw_of(topology: str, n: int, rows: int = 1, cols: int | None = None) -> Hardware:
    return Hardware(topology, (Chiplet(),) * n, topology, rows, cols if cols is not None else n)


def path_of(hw: Hardware, a: int, b: int) -> list[int]:
    """Chiplets visited from a to b (a included)."""
    out = [a]
    for k in hw.route(a, b):
        la, lb = hw.links[k]
        assert la == out[-1], "route links must chain"
        out.append(lb)
    return out


# --- geometry --------------------------------------------------------------------------------------------------
def test_snake_order_on_a_mesh():
    hw = mesh_of(12)   # 3 x 4
    assert (hw.rows, hw.cols) == (3, 4)
    assert hw.positions == ((0, 0), (0, 1), (0, 2), (0, 3),
                            (1, 3), (1, 2), (1, 1), (1, 0),
                            (2, 0), (2, 1), (2, 2), (2, 3))
    # consecutive pipeline stages are neighbours
    assert all(hw.hops(i, i + 1) == 1 for i in range(11))


@pytest.mark.parametrize("n,expected", [(1, (1, 1)), (2, (1, 2)), (7, (1, 7)), (12, (3, 4)), (16, (4, 4)),
                                        (36, (6, 6)), (18, (3, 6))])
def test_near_square(n, expected):
    assert near_square(n) == expected


@pytest.mark.parametrize("topology,n,rows,cols,links,diameter", [
    ("mesh", 16, 4, 4, 2 * 2 * 4 * 3, 6),        # 24 undirected edges
    ("mesh", 6, 2, 3, 2 * 7, 3),
    ("torus", 16, 4, 4, 2 * 32, 4),              # every node has 4 distinct neighbours
    ("torus", 6, 2, 3, 2 * 9, 2),                 # 2 rows wrap onto the same neighbour
    ("ring", 5, 1, 5, 10, 2),
    ("ring", 2, 1, 2, 2, 1),
    ("chain", 5, 1, 5, 8, 4),
    ("all-to-all", 5, 1, 5, 20, 1),
    ("mesh", 1, 1, 1, 0, 0),
])
def test_link_and_hop_counts(topology, n, rows, cols, links, diameter):
    hw = hw_of(topology, n, rows, cols)
    assert len(hw.links) == links
    assert len(set(hw.links)) == links and all(a != b for a, b in hw.links)
    assert all((b, a) in hw.link_index for a, b in hw.links), "links come in both directions"
    assert max(hw.hops(a, b) for a in range(n) for b in range(n)) == diameter
    assert all(hw.hops(a, a) == 0 and hw.route(a, a) == () for a in range(n))


def test_xy_routing_goes_along_the_row_first():
    hw = mesh_of(16)   # 4 x 4 snake: row 0 = 0 1 2 3, row 1 = 7 6 5 4, row 2 = 8 9 10 11, row 3 = 15 14 13 12
    assert path_of(hw, 0, 10) == [0, 1, 2, 5, 10]     # (0,0) -> (0,2) then down to (2,2)
    assert path_of(hw, 10, 0) == [10, 9, 8, 7, 0]     # (2,2) -> (2,0) then up
    assert path_of(hw, 3, 12) == [3, 4, 11, 12]       # same column: straight down
    assert hw.hops(0, 15) == 3 and hw.hops(0, 12) == 6


def test_routes_are_shortest_on_every_topology():
    import networkx as nx
    for hw in (mesh_of(12), hw_of("torus", 12, 3, 4), hw_of("ring", 7), hw_of("chain", 5), hw_of("all-to-all", 4)):
        g = nx.DiGraph(list(hw.links))
        dist = dict(nx.all_pairs_shortest_path_length(g))
        for a in range(hw.n_chiplets):
            for b in range(hw.n_chiplets):
                assert path_of(hw, a, b)[-1] == b
                assert hw.hops(a, b) == dist[a][b], (hw.topology, a, b)


def test_ring_and_torus_go_the_short_way_round():
    ring = hw_of("ring", 6)
    assert path_of(ring, 0, 5) == [0, 5]
    assert path_of(ring, 0, 3) == [0, 1, 2, 3]        # tie: positive direction
    torus = hw_of("torus", 16, 4, 4)
    assert torus.hops(0, 3) == 1                      # (0,0) -> (0,3) wraps


def test_hardware_validation():
    with pytest.raises(ValueError):
        Hardware("x", (Chiplet(),) * 5, "mesh", 2, 2)
    with pytest.raises(ValueError):
        Hardware("x", (Chiplet(),) * 4, "hypercube", 2, 2)
    with pytest.raises(ValueError):
        Hardware("x", (), "mesh", 0, 0)
    with pytest.raises(ValueError):
        Chiplet(macs_per_cycle=0)
    with pytest.raises(UserError):
        mesh_of(0)


def test_homogeneous_and_bandwidth_copy():
    hw = mesh_of(4)
    assert hw.homogeneous
    faster = hw.with_link_bandwidth(128)
    assert faster.link_bytes_per_cycle == 128 and hw.link_bytes_per_cycle == 64 and faster.links == hw.links


# --- presets -------------------------------------------------------------------------------------------------------
def test_presets():
    d = PRESETS["default-16"]
    assert (d.n_chiplets, d.rows, d.cols, d.topology) == (16, 4, 4, "mesh")
    assert d.chiplets[0].macs_per_cycle == 4096 and d.chiplets[0].sram_bytes == 64 * MIB
    assert d.clock_hz == 1e9 and d.link_bytes_per_cycle == 64 and d.hop_latency_cycles == 20
    s = PRESETS["simba-36"]
    assert (s.n_chiplets, s.rows, s.cols) == (36, 6, 6)
    assert s.clock_hz == 1.733e9 and s.chiplets[0].macs_per_cycle == 1024 and s.link_pj_per_bit == 0.82
    assert load_hardware("simba-36") is s
    assert load_hardware(None, 9).n_chiplets == 9 and load_hardware(None).n_chiplets == 16


def test_load_hardware_errors():
    with pytest.raises(UserError, match="unknown hardware"):
        load_hardware("no-such-preset")
    with pytest.raises(UserError, match="disagrees"):
        load_hardware("default-16", 8)


# --- TOML ----------------------------------------------------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "hw.toml"
    p.write_text(text)
    return p


def test_toml_good_file(tmp_path):
    p = write(tmp_path, """
name = "mine"
clock_ghz = 1.5
topology = "mesh"
rows = 2
cols = 3
link_bytes_per_cycle = 32
hop_latency_cycles = 10
link_pj_per_bit = 0.9
pipeline_order = "rows"         # ids as written (auto would take the column snake: the vector chiplets share column 0)

[chiplet]
macs_per_cycle = 2048
sram_mib = 32

[[overrides]]
ids = [0, 5]
kind = "vector"
macs_per_cycle = 256
vector_ops_per_cycle = 2048
unsupported_ops = ["Conv"]
""")
    hw = hardware_from_toml(p)
    assert hw.name == "mine" and hw.clock_hz == 1.5e9 and (hw.rows, hw.cols) == (2, 3)
    assert hw.link_bytes_per_cycle == 32 and hw.hop_latency_cycles == 10 and hw.link_pj_per_bit == 0.9
    assert hw.chiplets[1].macs_per_cycle == 2048 and hw.chiplets[1].sram_bytes == 32 * MIB
    assert hw.chiplets[0].kind == "vector" and hw.chiplets[5].vector_ops_per_cycle == 2048
    assert hw.chiplets[0].sram_bytes == 32 * MIB, "overrides start from the [chiplet] table"
    assert hw.chiplets[0].unsupported_ops == ("Conv",)
    assert not hw.homogeneous


def test_toml_chiplet_count_and_defaults(tmp_path):
    hw = hardware_from_toml(write(tmp_path, "chiplets = 8\n"))
    assert (hw.rows, hw.cols, hw.topology, hw.name) == (2, 4, "mesh", "hw")
    ring = hardware_from_toml(write(tmp_path, 'chiplets = 5\ntopology = "ring"\n'))
    assert (ring.rows, ring.cols, len(ring.links)) == (1, 5, 10)


@pytest.mark.parametrize("text,names", [
    ("chiplets = 4\nbogus = 1\n", "'bogus'"),
    ("chiplets = 4\n[chiplet]\nmacs = 3\n", "'macs'"),
    ("chiplets = -4\n", "'chiplets'"),
    ("chiplets = 4\n[chiplet]\nsram_mib = -1\n", "'sram_mib'"),
    ("chiplets = 4\nclock_ghz = \"fast\"\n", "'clock_ghz'"),
    ("chiplets = 4\nrows = 1.5\n", "'rows'"),
    ("chiplets = 4\nlink_bytes_per_cycle = true\n", "'link_bytes_per_cycle'"),
    ("chiplets = 4\ntopology = \"hypercube\"\n", "'topology'"),
    ("chiplets = 4\nrows = 3\ncols = 3\n", "'rows'"),
    ("name = \"x\"\n", "'chiplets'"),
    ("chiplets = 4\n[[overrides]]\nids = [7]\n", "'ids'"),
    ("chiplets = 4\n[[overrides]]\nkind = \"x\"\n", "'overrides'"),
])
def test_toml_errors_name_the_key(tmp_path, text, names):
    with pytest.raises(UserError) as err:
        hardware_from_toml(write(tmp_path, text))
    assert names in err.value.problem
    assert "docs/hardware.md" in err.value.fix


def test_toml_missing_and_malformed(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        hardware_from_toml(tmp_path / "nope.toml")
    with pytest.raises(UserError, match="not valid TOML"):
        hardware_from_toml(write(tmp_path, "chiplets = = 4\n"))


@pytest.mark.parametrize("name", ["mesh-16-hetero.toml", "ring-8.toml"])
def test_example_files_load(name):
    hw = load_hardware(str(EXAMPLES / name))
    assert hw.n_chiplets >= 2


def test_default_link_energy_is_the_ucie_standard_package_figure():
    """docs/hardware.md, "Link energy": 196,608 B over 2 hops at 0.5 pJ/bit = 1,572,864 pJ."""
    from partitioner.model.cost import link_energy_pj
    from partitioner.hw.hardware import mesh_of
    from partitioner.hw.toml import load_hardware

    assert mesh_of(4).link_pj_per_bit == 0.5 == load_hardware(None, 16).link_pj_per_bit
    assert link_energy_pj(196_608, 2, mesh_of(4)) == 1_572_864.0


@pytest.mark.parametrize("field", ["mac_pj", "vector_op_pj", "sram_pj_per_byte"])
@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_chiplet_energies_must_be_finite_and_non_negative(field, value):
    with pytest.raises(ValueError, match=f"chiplet {field} must be finite"):
        Chiplet(**{field: value})
