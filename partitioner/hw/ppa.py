"""Power, performance, area and cost of a package at a process node: pure functions over cited constants.

The simulator gives cycles and dynamic energy; this module says what the silicon costs: die area (MAC array,
vector unit, SRAM, die-to-die PHYs, fixed uncore), leakage, die yield (negative binomial), cost per known-good die
from the wafer price, and package assembly (organic substrate or silicon interposer). docs/ppa.md has the formulas
and a hand-computed example. Every constant names its source next to it; the few without a public figure say
"assumption" and why.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from partitioner.core.errors import UserError
from partitioner.hw.hardware import LINK_PJ_PER_BIT, Chiplet, Hardware

MIB_BITS = 8 * (1 << 20)
PACKAGES = ("organic", "interposer")


@dataclass(frozen=True)
class Node:
    """One process node. Logic density and dynamic energy are relative to TSMC 16FF+, the reference node."""

    nm: int
    logic_density: float
    """logic density relative to TSMC 16FF+ (x): MAC and vector area scale by 1/this."""
    sram_bitcell_um2: float
    """high-density 6T bitcell area."""
    energy_scale: float
    """dynamic energy per operation relative to 16FF+ at iso-speed."""
    leakage_w_per_mm2: float
    """static power per mm2 of die at nominal voltage and 85 C."""
    max_clock_ghz: float
    """highest package clock the design space allows at this node."""
    defect_density_per_cm2: float
    wafer_cost_usd: float
    """300 mm wafer, foundry sale price."""


# Logic density: TSMC's own node-to-node claims, chained from 16FF+: 16FF+ is ~2x 28HPM, N7 3.3x 16FF+ (WikiChip:
# 28.9 -> 91.2 MTr/mm2 = 3.16x), N5 1.8x N7 (TSMC N5 announcement 2019), N3 1.6x N5 (TSMC N3E, 2022 Technology
# Symposium). Bitcells: 28 nm 0.127 um2 (TSMC 28HP, IEDM 2011), 16FF+ 0.074 um2 (TSMC IEDM 2014), N7 0.027 um2
# (TSMC IEDM 2016), N5 0.021 um2 (TSMC IEDM 2019), N3E 0.021 um2 (TSMC IEDM 2022: no SRAM scaling from N5).
# Energy at iso-speed: 16FF+ 60% less power than 28HPM (TSMC 16FF+ brief), N7 60% less than 16FF+ (TSMC N7 brief),
# N5 30% less than N7 and N3E 30% less than N5 (TSMC N5 / N3 announcements).
# Defect density and wafer price: Chiplet Actuary (Feng & Ma, DAC 2022) parameter.ini, whose wafer prices are
# CSET's estimates (Khan & Mann, "AI Chips: What They Are and Why They Matter", 2020, Table 9); 3 nm is Chiplet
# Actuary's own "inaccurate assumption" ($30,000, 0.2/cm2); 12/16 nm uses their 14 nm row.
# Leakage and maximum clock are assumptions (no single public figure): leakage ~5-10% of a 0.5 W/mm2 dense
# design's power at 7-28 nm, rising on FinFET-less 28 nm and at the smallest nodes; clocks follow shipped
# accelerators (TPUv1 0.7 GHz at 28 nm, Simba 1.8 GHz at 16 nm at nominal voltage, A100 1.4 GHz at 7 nm, H100
# 1.98 GHz at 4N).
NODES: dict[int, Node] = {
    28: Node(28, 0.5, 0.127, 2.5, 0.040, 1.0, 0.07, 2891.0),
    16: Node(16, 1.0, 0.074, 1.0, 0.030, 1.8, 0.08, 3984.0),
    7: Node(7, 3.3, 0.027, 0.4, 0.030, 2.0, 0.09, 9346.0),
    5: Node(5, 3.3 * 1.8, 0.021, 0.28, 0.035, 2.2, 0.11, 16988.0),
    3: Node(3, 3.3 * 1.8 * 1.6, 0.021, 0.196, 0.040, 2.4, 0.20, 30000.0),
}

# MAC area at 16 nm, int8, including its pipeline registers and array wiring: TPUv1 (Jouppi et al., ISCA 2017):
# the 256x256 int8 matrix unit is 24% of a die "<= 331 mm2" at 28 nm -> 79.4 mm2 / 65,536 = 1.21e-3 mm2 per MAC
# at 28 nm, so 0.61e-3 at 16FF+ (x 0.5 logic density).
INT8_MAC_MM2_16NM = 331 * 0.24 / 65536 * 0.5
# Precision multipliers (area, energy) from Horowitz, "Computing's energy problem", ISSCC 2014, 45 nm:
# int8 MAC = 8b mult (282 um2, 0.2 pJ) + 32b add (137 um2, 0.1 pJ); fp16 MAC = fp16 mult (1640 um2, 1.1 pJ)
# + fp16 add (1360 um2, 0.4 pJ); fp32 MAC = fp32 mult (7700 um2, 3.7 pJ) + fp32 add (4184 um2, 0.9 pJ).
# bf16 is taken as fp16 (same multiplier width class).
PRECISION_AREA = {"int8": 1.0, "fp16": 3000 / 419, "bf16": 3000 / 419, "fp32": 11884 / 419}
PRECISION_ENERGY = {"int8": 1.0, "fp16": 1.5 / 0.3, "bf16": 1.5 / 0.3, "fp32": 4.6 / 0.3}
# int8 MAC energy at 16 nm: Simba (Zimmer et al., VLSI 2019, "A 0.11 pJ/Op ... 16nm") 0.11 pJ/op = 0.22 pJ/MAC.
INT8_MAC_PJ_16NM = 0.22
# Vector lane: one fp16 add-class op; Horowitz: fp16 add 1360 um2 / 0.4 pJ vs the int8 MAC's 419 um2 / 0.3 pJ.
VECTOR_AREA_PER_INT8_MAC = 1360 / 419
VECTOR_ENERGY_PER_INT8_MAC = 0.4 / 0.3
# SRAM macro efficiency: TSMC N5 high-density macros reach 31.8 Mb/mm2 (WikiChip on TSMC IEDM 2019) with a
# 0.021 um2 cell (47.6 Mb/mm2 of bare cells): 67% of the macro is cells.
SRAM_ARRAY_EFFICIENCY = 31.8 / (1 / 0.021)
# SRAM read energy per byte at 16 nm: Horowitz 45 nm, 64-bit read from an 8 KB SRAM is 10 pJ (1.25 pJ/byte);
# scaled by 16FF+'s energy vs 45 nm (~0.4, Stillmaker & Baas, Integration 2017, Table 4): 0.5 pJ/byte.
SRAM_PJ_PER_BYTE_16NM = 0.5
# Die-to-die PHYs: UCIe 1.0 (Das Sharma et al., UCIe white paper 2022, key metrics table, 32 GT/s):
# bandwidth per PHY area 125 GB/s/mm2 on a standard (organic) package and 1350 GB/s/mm2 on an advanced
# (silicon interposer / bridge) package; energy 0.5 pJ/bit standard (hardware.LINK_PJ_PER_BIT, the package default),
# 0.25 pJ/bit advanced.
PHY_GBPS_PER_MM2 = {"organic": 125.0, "interposer": 1350.0}
PHY_PJ_PER_BIT = {"organic": LINK_PJ_PER_BIT, "interposer": 0.25}
# Placement utilisation: the fraction of a block's area that is cells (OpenROAD flow scripts default
# CORE_UTILIZATION 40-70%; 70% is the dense end used for datapaths).
PLACEMENT_UTILISATION = 0.7
# Uncore per die (control processor, NoC router, clocking, test, power grid): assumption, 1.5 mm2 at 16 nm,
# scaled with logic density. Simba's RISC-V controller, global PE and router are of this order (MICRO 2019 die
# photo); the Simba check in tests/test_ppa.py is the published point it has to agree with.
UNCORE_MM2_16NM = 1.5
# Wafer geometry: Chiplet Actuary parameter.ini: 300 mm wafer, 0.2 mm scribe lane, 5 mm edge loss; yield
# clustering parameter alpha = 10 for dies, 6 for a silicon interposer.
WAFER_DIAMETER_MM, SCRIBE_MM, EDGE_LOSS_MM, YIELD_ALPHA = 300.0, 0.2, 5.0, 10.0
# Packaging (Chiplet Actuary parameter.ini, [OS] and [SI]): organic substrate 4x the dies' area at $0.005/mm2,
# x1.5 / 1.75 / 2 for multi-die substrates above 0 / 17x17 / 30x30 mm; C4 bumps $0.005/mm2 of die; bonding yield
# 0.99 per die. Silicon interposer: 1.1x the dies' area on a 55 nm wafer ($1,937), 0.06 defects/cm2, alpha 6,
# micro-bumps $0.01/mm2 of die, bonding yield 0.95 per die, on an organic substrate 4x its area.
SUBSTRATE_AREA_X, SUBSTRATE_USD_PER_MM2, C4_USD_PER_MM2, ORGANIC_BOND_YIELD = 4.0, 0.005, 0.005, 0.99
INTERPOSER_AREA_X, INTERPOSER_WAFER_USD, INTERPOSER_D0, INTERPOSER_ALPHA = 1.1, 1937.0, 0.06, 6.0
UBUMP_USD_PER_MM2, INTERPOSER_BOND_YIELD = 0.01, 0.95
# Known-good-die test: assumption, 5% of the raw die cost plus $0.50 of tester time per die (probe-card test of
# a few seconds on a tester billed at a few cents per second); catches the defects yield predicts.
KGD_TEST_FRACTION, KGD_TEST_USD = 0.05, 0.5
# HBM (the memory tier): an assumption, $15 per GiB of HBM3, bought as known-good stacks. No list price is
# published; analyst estimates for 2023-24 put HBM at about 5x DDR5 per GB, roughly $10-20 per GB (e.g. about
# $1,500 for an 80 GB H100's stacks). HBM's wide interface needs a silicon interposer (or bridge), which
# `partition explore` enforces on its designs (ppa prices what it is given). Not modelled: the stacks' footprint on the interposer, their bonding yield, the
# HBM PHY's die area and the stacks' standby and refresh power (read energy is the simulator's, pj_per_byte).
HBM_USD_PER_GIB = 15.0


@dataclass(frozen=True)
class DieArea:
    """mm2 of one chiplet, by block."""

    mac: float
    vector: float
    sram: float
    phy: float
    uncore: float

    @property
    def total(self) -> float:
        return self.mac + self.vector + self.sram + self.phy + self.uncore


@dataclass(frozen=True)
class Ppa:
    """A package's silicon at a node: what explore reports next to the simulator's throughput and energy."""

    process_nm: int
    package: str
    die_area_mm2: tuple[float, ...]
    area_mm2: float
    """total silicon: dies (plus the interposer when there is one)."""
    leakage_w: float
    die_yield: tuple[float, ...]
    cost_usd: float
    """dies, package and assembly, plus the HBM stacks (memory_usd)."""
    memory_usd: float = 0.0
    """the memory tier's HBM stacks (HBM_USD_PER_GIB)."""


def node(nm: int) -> Node:
    if nm not in NODES:
        raise UserError(f"unknown process node {nm} nm", f"use one of {', '.join(str(n) for n in sorted(NODES))}")
    return NODES[nm]


def _check_precision(precision: str) -> None:
    if precision not in PRECISION_AREA:
        raise UserError(f"unknown precision {precision!r}", f"use one of {', '.join(PRECISION_AREA)}")


def _check_package(package: str) -> None:
    if package not in PACKAGES:
        raise UserError(f"unknown package {package!r}", f"use one of {', '.join(PACKAGES)}")


def chiplet_energies(nm: int, precision: str = "fp16") -> dict[str, float]:
    """mac_pj, vector_op_pj and sram_pj_per_byte of a chiplet built at this node."""
    _check_precision(precision)
    s = node(nm).energy_scale
    return {"mac_pj": INT8_MAC_PJ_16NM * PRECISION_ENERGY[precision] * s,
            "vector_op_pj": INT8_MAC_PJ_16NM * VECTOR_ENERGY_PER_INT8_MAC * s,
            "sram_pj_per_byte": SRAM_PJ_PER_BYTE_16NM * s}


def link_pj_per_bit(package: str) -> float:
    _check_package(package)
    return PHY_PJ_PER_BIT[package]


def die_area(chip: Chiplet, nm: int, *, precision: str = "fp16", phy_gbps: float = 0.0,
             package: str = "organic") -> DieArea:
    """Area of one chiplet. phy_gbps: the die-to-die bandwidth its PHYs carry, in + out, in GB/s."""
    _check_precision(precision)
    _check_package(package)
    n = node(nm)
    mac = chip.macs_per_cycle * INT8_MAC_MM2_16NM * PRECISION_AREA[precision] / n.logic_density
    vector = chip.vector_ops_per_cycle * INT8_MAC_MM2_16NM * VECTOR_AREA_PER_INT8_MAC / n.logic_density
    sram = chip.sram_bytes * 8 * n.sram_bitcell_um2 * 1e-6 / SRAM_ARRAY_EFFICIENCY
    phy = phy_gbps / PHY_GBPS_PER_MM2[package]
    return DieArea(mac / PLACEMENT_UTILISATION, vector / PLACEMENT_UTILISATION, sram, phy,
                   UNCORE_MM2_16NM / n.logic_density)


def die_yield(area_mm2: float, defects_per_cm2: float, alpha: float = YIELD_ALPHA) -> float:
    """Negative binomial yield (1 + A D0 / alpha)^-alpha, A in cm2."""
    return (1.0 + area_mm2 / 100.0 * defects_per_cm2 / alpha) ** -alpha


def dies_per_wafer(area_mm2: float) -> float:
    """Gross dies: wafer area over die area (with scribe) minus the partial dies along the edge."""
    side = math.sqrt(area_mm2) + SCRIBE_MM
    a = side * side
    r = WAFER_DIAMETER_MM / 2 - EDGE_LOSS_MM
    return math.pi * r * r / a - math.pi * 2 * r / math.sqrt(2 * a)


def known_good_die_cost(area_mm2: float, nm: int) -> float:
    """Cost of one tested good die: wafer price over good dies per wafer, plus test."""
    n = node(nm)
    gross = dies_per_wafer(area_mm2)
    if gross < 1:
        raise UserError(f"a {area_mm2:,.0f} mm2 die does not fit on a 300 mm wafer",
                        "use more chiplets, less SRAM or a smaller MAC array per chiplet")
    raw = n.wafer_cost_usd / gross
    return (raw * (1 + KGD_TEST_FRACTION) + KGD_TEST_USD) / die_yield(area_mm2, n.defect_density_per_cm2)


def package_cost(die_areas: list[float], die_costs: list[float], package: str) -> float:
    """Assembled package: good dies plus substrate (and interposer), divided by the assembly yield."""
    _check_package(package)
    total_die = sum(die_areas)
    n = len(die_areas)
    if package == "organic":
        substrate = total_die * SUBSTRATE_AREA_X
        factor = 1.0 if n == 1 else 2.0 if substrate > 30 * 30 else 1.75 if substrate > 17 * 17 else 1.5
        raw = substrate * SUBSTRATE_USD_PER_MM2 * factor + total_die * C4_USD_PER_MM2
        return (sum(die_costs) + raw) / ORGANIC_BOND_YIELD ** n
    interposer = total_die * INTERPOSER_AREA_X
    gross = dies_per_wafer(interposer)
    if gross < 1:
        raise UserError(f"a {interposer:,.0f} mm2 silicon interposer does not fit on a 300 mm wafer",
                        "use the organic package, fewer chiplets or smaller ones")
    interposer_good = INTERPOSER_WAFER_USD / gross / die_yield(interposer, INTERPOSER_D0, INTERPOSER_ALPHA)
    raw = (interposer_good + interposer * SUBSTRATE_AREA_X * SUBSTRATE_USD_PER_MM2
           + total_die * UBUMP_USD_PER_MM2)
    return (sum(die_costs) + raw) / (INTERPOSER_BOND_YIELD ** n * ORGANIC_BOND_YIELD)


def phy_gbps(hw: Hardware) -> list[float]:
    """Die-to-die bandwidth (GB/s, in + out) each chiplet's PHYs carry: its links times the link bandwidth. With
    packages, only the links inside a package (the package-to-package SerDes are not costed, docs/ppa.md)."""
    per_link = hw.link_bytes_per_cycle * hw.clock_hz / 1e9
    degree = [0] * hw.n_chiplets
    for (a, b), cls in zip(hw.links, hw.link_class):
        if cls == 0:
            degree[a] += 1
            degree[b] += 1
    return [d * per_link for d in degree]


def at_node(hw: Hardware, nm: int, *, precision: str = "fp16", package: str = "organic") -> Hardware:
    """The same package with the node's energies (MAC, vector, SRAM) and the package's link energy."""
    e = chiplet_energies(nm, precision)
    chips = tuple(replace(c, **e) for c in hw.chiplets)
    return replace(hw, chiplets=chips, link_pj_per_bit=link_pj_per_bit(package))


def ppa(hw: Hardware, nm: int, *, precision: str = "fp16", package: str = "organic") -> Ppa:
    """Area, leakage, yield and cost of the package built at node nm, its HBM stacks included."""
    n = node(nm)
    memory = memory_cost_usd(hw)
    areas = [die_area(c, nm, precision=precision, phy_gbps=g, package=package).total
             for c, g in zip(hw.chiplets, phy_gbps(hw))]
    costs = [known_good_die_cost(a, nm) for a in areas]
    silicon = sum(areas) + (sum(areas) * INTERPOSER_AREA_X if package == "interposer" else 0.0)
    # With packages (hw.package_level) each is assembled on its own: the cost is the sum of the packages (the
    # board and its SerDes are not modelled).
    m = hw.chiplets_per_package
    cost = sum(package_cost(areas[p * m:(p + 1) * m], costs[p * m:(p + 1) * m], package)
               for p in range(hw.n_packages))
    return Ppa(nm, package, tuple(areas), silicon, sum(areas) * n.leakage_w_per_mm2,
               tuple(die_yield(a, n.defect_density_per_cm2) for a in areas), cost + memory, memory)


def memory_cost_usd(hw: Hardware) -> float:
    """The HBM stacks of the memory tier at HBM_USD_PER_GIB."""
    return sum(st.capacity_bytes for st in hw.memory_stacks) / (1 << 30) * HBM_USD_PER_GIB


def power_w(energy_j_per_inference: float, throughput_per_s: float, leakage_w: float) -> float:
    """Average power running the pipeline flat out: dynamic energy per inference times rate, plus leakage."""
    return energy_j_per_inference * throughput_per_s + leakage_w
