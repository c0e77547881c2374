"""ppa.py: published points within a stated tolerance, and hand-computed yield, wafer and cost examples."""
import math

import pytest

from partitioner.hw import ppa
from partitioner.core.errors import UserError
from partitioner.hw.hardware import MIB, Chiplet, Hardware, mesh_of

# Simba (Shao et al., MICRO 2019; Zimmer et al., VLSI 2019): a 6 mm2 chiplet in TSMC 16 nm with 16 PEs of
# 8 lanes x 8-wide int8 MACs (1024 MACs/cycle), per PE a 32 KB weight, 8 KB input and 3 KB accumulation buffer plus a
# 64 KB global buffer (752 KB of SRAM), and 100 GB/s of die-to-die bandwidth per direction on an organic package.
SIMBA = Chiplet(kind="simba", macs_per_cycle=1024, vector_ops_per_cycle=16, sram_bytes=(16 * 43 + 64) * 1024)


def test_simba_chiplet_area_within_25_percent_of_published_6_mm2():
    area = ppa.die_area(SIMBA, 16, precision="int8", phy_gbps=200.0, package="organic")
    # The model gives 4.7 mm2: MACs 0.89 + vector 0.04 + SRAM 0.68 + PHY 1.6 + uncore 1.5. Tolerance 25%.
    assert area.total == pytest.approx(6.0, rel=0.25)
    assert area.phy == pytest.approx(200 / 125)
    assert area.uncore == pytest.approx(1.5)


def test_simba_energy_per_op_is_the_published_0_11_pj():
    # Zimmer et al. VLSI 2019: 0.11 pJ/op (one MAC is two ops) for int8 at 16 nm.
    assert ppa.chiplet_energies(16, "int8")["mac_pj"] / 2 == pytest.approx(0.11)


def test_tpu_v1_matrix_unit_area_at_28nm():
    # Jouppi et al., ISCA 2017: 64K int8 MACs take 24% of a <= 331 mm2 die at 28 nm (79.4 mm2); our MAC block
    # adds the 70% placement utilisation on top of that measured area: 79.4 / 0.7 = 113.5 mm2.
    tpu = Chiplet(macs_per_cycle=65536, vector_ops_per_cycle=1, sram_bytes=1)
    mac = ppa.die_area(tpu, 28, precision="int8").mac
    assert mac == pytest.approx(331 * 0.24 / 0.7, rel=1e-9)


def test_n5_sram_macro_density_is_31_8_mbit_per_mm2():
    # WikiChip on TSMC IEDM 2019: N5 high-density SRAM macros at 31.8 Mb/mm2. 4 MiB = 33.55 Mb -> 1.055 mm2.
    chip = Chiplet(sram_bytes=4 * MIB)
    assert ppa.die_area(chip, 5).sram == pytest.approx(4 * 8 * 1.048576 / 31.8, rel=1e-9)


def test_negative_binomial_yield_hand_computed():
    # 100 mm2 = 1 cm2 at 0.1 defects/cm2, alpha 10: (1 + 0.01)^-10 = 0.905287
    assert ppa.die_yield(100.0, 0.1) == pytest.approx(1.01 ** -10)
    assert ppa.die_yield(100.0, 0.1) == pytest.approx(0.905287, abs=1e-6)
    # alpha -> infinity tends to Poisson exp(-A D0)
    assert ppa.die_yield(100.0, 0.1, alpha=1e6) == pytest.approx(math.exp(-0.1), rel=1e-5)


def test_dies_per_wafer_hand_computed():
    # 100 mm2 die + 0.2 mm scribe: 10.2 mm side, 104.04 mm2; usable radius 145 mm:
    # pi 145^2 / 104.04 - pi 290 / sqrt(208.08) = 634.87 - 63.16 = 571.71
    assert ppa.dies_per_wafer(100.0) == pytest.approx(571.71, abs=0.01)


def test_known_good_die_cost_hand_computed():
    # 7 nm, 100 mm2: $9,346 / 571.68 = $16.348 raw; x1.05 + $0.50 test = $17.666; / yield (1 + 0.009)^-10 = 0.91436
    y = 1.009 ** -10
    expected = (9346 / ppa.dies_per_wafer(100.0) * 1.05 + 0.5) / y
    assert ppa.known_good_die_cost(100.0, 7) == pytest.approx(expected)
    assert expected == pytest.approx(19.32, abs=0.01)


def test_organic_package_cost_hand_computed():
    # Two 50 mm2 dies at $10: substrate 400 mm2 (> 17x17 = 289) so x1.75: 400 x 0.005 x 1.75 = $3.50; C4 bumps
    # 100 x 0.005 = $0.50; (20 + 4) / 0.99^2 = $24.487
    assert ppa.package_cost([50.0, 50.0], [10.0, 10.0], "organic") == pytest.approx(24 / 0.99 ** 2)


def test_interposer_costs_more_but_its_phys_are_smaller():
    org = ppa.die_area(Chiplet(), 7, phy_gbps=512.0, package="organic")
    si = ppa.die_area(Chiplet(), 7, phy_gbps=512.0, package="interposer")
    assert si.phy < org.phy / 10
    dies = [30.0] * 4
    assert ppa.package_cost(dies, [5.0] * 4, "interposer") > ppa.package_cost(dies, [5.0] * 4, "organic")


def test_smaller_nodes_shrink_logic_and_energy_but_cost_more_per_mm2():
    chip = Chiplet()
    areas = [ppa.die_area(chip, nm).mac for nm in (28, 16, 7, 5, 3)]
    assert areas == sorted(areas, reverse=True)
    energies = [ppa.chiplet_energies(nm)["mac_pj"] for nm in (28, 16, 7, 5, 3)]
    assert energies == sorted(energies, reverse=True)
    per_mm2 = [ppa.known_good_die_cost(50.0, nm) / 50 for nm in (28, 16, 7, 5, 3)]
    assert per_mm2 == sorted(per_mm2)


def test_phy_bandwidth_counts_each_chiplets_links():
    hw = mesh_of(4)   # 2x2 mesh: every chiplet has 2 neighbours, 4 directed links in+out
    assert ppa.phy_gbps(hw) == [4 * 64.0] * 4
    chain = Hardware("c", (Chiplet(),) * 3, "chain", 1, 3, link_bytes_per_cycle=10, clock_hz=2e9)
    assert ppa.phy_gbps(chain) == [40.0, 80.0, 40.0]


def test_ppa_of_a_package_sums_its_dies():
    hw = ppa.at_node(mesh_of(4), 7, package="interposer")
    assert hw.link_pj_per_bit == 0.25
    assert hw.chiplets[0].mac_pj == pytest.approx(0.22 * 5 * 0.4)
    p = ppa.ppa(hw, 7, package="interposer")
    die = ppa.die_area(hw.chiplets[0], 7, phy_gbps=256.0, package="interposer").total
    assert p.die_area_mm2 == pytest.approx((die,) * 4)
    assert p.area_mm2 == pytest.approx(4 * die * 2.1)   # dies plus the 1.1x interposer
    assert p.leakage_w == pytest.approx(4 * die * 0.03)
    assert ppa.power_w(1e-3, 100.0, p.leakage_w) == pytest.approx(0.1 + p.leakage_w)


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="unknown process node 10 nm"):
        ppa.node(10)
    with pytest.raises(UserError, match="unknown package"):
        ppa.link_pj_per_bit("ceramic")
    with pytest.raises(UserError, match="unknown precision"):
        ppa.chiplet_energies(7, "fp8")
    with pytest.raises(UserError, match="does not fit on a 300 mm wafer"):
        ppa.known_good_die_cost(80_000.0, 7)
