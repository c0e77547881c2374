"""Multi-level hardware: chiplets in packages, packages on a board, boards in a node, ... (docs/hardware.md, "Levels").

A flat Hardware is one package. Each level above the chiplets (a `PackageLevel`) groups `count` units of the level
below: the first groups chiplets into packages of m, the next groups packages into boards (nodes), the next nodes
into a rack, and so on. Ids stay the pipeline order: unit u of level j holds chiplet ids u*s .. u*s + s - 1, with s
the chiplets per unit (`spans`), so pipeline order runs package by package, node by node. Every package is laid
out and wired like a flat package (Hardware.topology, rows, cols and its link class); the units of each level sit
on that level's own topology and are joined by links of that level's class. This module holds the rules that are
the levels' own: their checks, where a level's link lands (`gateway`), the links of a level and the hierarchical
route. hardware.py calls them with its own routing for each level; nothing here imports it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

GRIDS = ("mesh", "torus")
LEVEL_NAMES = ("die-to-die", "package-to-package")
"""Default link class names: class 0 inside a package, class 1 between packages, then level-2, level-3, ..."""


# Package-to-package link (the board level of two-package-2x16 and the default of a [[level]] table), per direction:
# - bandwidth 16 B/cycle = 16 GB/s at 1 GHz: a PCIe 4.0 x8 port (8 lanes x 16 GT/s x 128b/130b = 15.75 GB/s), a
#   quarter of the default die-to-die link (64 B/cycle, Hardware.link_bytes_per_cycle).
# - energy 5.5 pJ/bit: a 112G PAM4 long-reach SerDes, against 1.3 pJ/bit for NVLink-C2C and 0.5 pJ/bit for UCIe on a
#   standard package (Wei et al., "NVLink-C2C: A Coherent Off Package Chip-to-Chip Interconnect with 40Gbps/pin
#   Single-ended Signaling", ISSCC 2023, paper 9.3, SerDes comparison; 112G-LR SerDes IP is quoted at ~5 pJ/bit).
# - latency 50 cycles (50 ns) per hop: PAM4 SerDes with FEC add up to ~20 ns at each end (same comparison) plus
#   the board trace and the routers.
PACKAGE_LINK = dict(bytes_per_cycle=16, hop_latency_cycles=50, pj_per_bit=5.5)


@dataclass(frozen=True)
class LinkClass:
    """The bandwidth, per-hop latency and energy shared by every link of one level."""

    name: str
    bytes_per_cycle: int
    hop_latency_cycles: int
    pj_per_bit: float


@dataclass(frozen=True)
class PackageLevel:
    """One level above the chiplets: `count` units of the level below (chiplets' packages, packages, nodes) on
    `topology` (rows x cols for a mesh or torus), joined by links of `link_bytes_per_cycle` per direction,
    `hop_latency_cycles` per hop and `link_pj_per_bit`. Checked by `check_levels`."""

    count: int
    topology: str = "chain"
    rows: int = 1
    cols: int = 1
    link_bytes_per_cycle: int = 16
    hop_latency_cycles: int = 50
    link_pj_per_bit: float = 5.5
    link_name: str = ""
    """The name of its link class in reports ("xgmi", "network"); "" for the default (`class_name`)."""


def class_name(j: int, given: str = "") -> str:
    """The name of link class j (0: inside a package): `given`, else package-to-package for 1, level-j above."""
    return given or (LEVEL_NAMES[j] if j < len(LEVEL_NAMES) else f"level-{j}")


def check_levels(n: int, levels: Sequence[PackageLevel], topologies: Sequence[str]) -> None:
    """ValueError (one line, naming the level) unless `levels` (innermost first) group n chiplets evenly, each on
    a known topology whose grid has room for exactly its count, with positive bandwidth and non-negative latency
    and energy. Level 1 is "package", the next "level 2", ... in the messages."""
    total = math.prod(lv.count for lv in levels)
    if any(lv.count < 1 for lv in levels) or n % total:
        raise ValueError(f"{n} chiplets do not split into {total} equal packages"
                         + (f" ({' x '.join(str(lv.count) for lv in reversed(levels))} over the levels)"
                            if len(levels) > 1 else ""))
    for j, lv in enumerate(levels, 1):
        what = "package" if j == 1 else f"level-{j}"
        if lv.topology not in topologies:
            raise ValueError(f"unknown {what} topology {lv.topology!r}; expected one of {', '.join(topologies)}")
        if lv.topology in GRIDS and lv.rows * lv.cols != lv.count:
            raise ValueError(f"{what} {lv.topology} {lv.rows}x{lv.cols} has {lv.rows * lv.cols} places "
                             f"but {lv.count} {'packages' if j == 1 else 'units'} are given")
        if not (lv.link_bytes_per_cycle > 0 and lv.hop_latency_cycles >= 0 and 0 <= lv.link_pj_per_bit < math.inf):
            raise ValueError(f"{what} link bandwidth must be > 0 and its hop latency, link energy >= 0")


def spans(n: int, levels: Sequence[PackageLevel]) -> tuple[int, ...]:
    """Chiplets in one unit of each level, innermost first: (package, level 2 unit, ..., n). (n,) when flat."""
    out = [n]
    for lv in reversed(levels):
        out.append(out[-1] // lv.count)
    return tuple(reversed(out))


def level_of(a: int, b: int, span: Sequence[int]) -> int:
    """The level whose link joins chiplets a and b: 0 inside a package, j when they share a unit of level j but
    not of level j - 1 (span as `spans`)."""
    return next(j for j, s in enumerate(span) if a // s == b // s)


def gateway(p: int, q: int, m: int) -> int:
    """The chiplet of unit p (of m chiplets) where its link to neighbouring unit q lands: p's last chiplet (id
    p*m + m - 1) towards a higher-numbered unit, its first (id p*m) towards a lower one. So the pipeline leaves unit
    p where its last stage runs and enters unit p + 1 where its first stage runs."""
    return p * m + (m - 1 if q > p else 0)


def level_links(groups: int, count: int, m: int, neighbours: Callable[[int], Sequence[int]]) -> list[tuple[int, int]]:
    """Directed links of one level: in each of `groups` groups of `count` units of m chiplets, (gateway(p, q),
    gateway(q, p)) for every unit q next to p on the level's topology (neighbours by index inside the group)."""
    return [(gateway(g * count + p, g * count + q, m), gateway(g * count + q, g * count + p, m))
            for g in range(groups) for p in range(count) for q in neighbours(p)]


def hierarchical_path(src: int, dst: int, span: Sequence[int], paths: Sequence[Callable[[int, int], Sequence[int]]]
                      ) -> list[int]:
    """Chiplets visited from src to dst (both included). paths[0](a, b): the route inside one package (local ids);
    paths[j](p, q): the route between units p and q of level j inside their group (local indices); span as
    `spans`. In one package: that package's route. Across units of level j (the outermost they differ at): along
    level j's route of units; inside each unit on the way, the level-below route from where the message is to the
    gateway towards the next unit, then that level's link to the next unit's gateway."""
    return _path_at(len(span) - 1, src, dst, span, paths)


def _path_at(j: int, src: int, dst: int, span: Sequence[int], paths: Sequence[Callable]) -> list[int]:
    if j == 0:
        base = src - src % span[0]
        return [base + x for x in paths[0](src % span[0], dst % span[0])]
    unit = span[j - 1]
    ps, pd = src // unit, dst // unit
    if ps == pd:
        return _path_at(j - 1, src, dst, span, paths)
    count = span[j] // unit
    base = ps - ps % count
    units = [base + u for u in paths[j](ps % count, pd % count)]
    out, cur = [src], src
    for p, q in zip(units, units[1:]):
        out += _path_at(j - 1, cur, gateway(p, q, unit), span, paths)[1:]
        cur = gateway(q, p, unit)
        out.append(cur)
    return out + _path_at(j - 1, cur, dst, span, paths)[1:]


def nested_positions(span: Sequence[int], die: Sequence[tuple[int, int]],
                     boards: Sequence[Sequence[tuple[int, int]]]) -> tuple[tuple[int, int], ...]:
    """(row, col) of each chiplet for drawing: each package's own layout `die`, shifted to its place on each
    level's layout (boards[j - 1]: the positions of level j's units), three empty rows and columns between units."""
    pos = list(die)
    for j, board in enumerate(boards, 1):
        h = max(r for r, _ in pos) + 4
        w = max(c for _, c in pos) + 4
        pos = [(br * h + r, bc * w + c) for br, bc in board for r, c in pos]
    return tuple(pos)
