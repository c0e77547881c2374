"""Multi-level hardware: packages of chiplets on a board (docs/hardware.md, "Levels").

A flat Hardware is one package. With a `PackageLevel` its chiplets are grouped into `count` packages of m each:
package p holds chiplet ids p*m .. p*m + m - 1, so pipeline order runs package by package. Every package is laid
out and wired like a flat package (Hardware.topology, rows, cols and its link class); the packages sit on the
board level's own topology and are joined by links of the board's class. This module holds the two rules that
are the level's own: where a package link lands (`gateway`) and the hierarchical route (`hierarchical_path`).
hardware.py calls them with its own routing for each level; nothing here imports it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence


@dataclass(frozen=True)
class LinkClass:
    """The bandwidth, per-hop latency and energy shared by every link of one level."""

    name: str
    bytes_per_cycle: int
    hop_latency_cycles: int
    pj_per_bit: float


@dataclass(frozen=True)
class PackageLevel:
    """The board level: `count` packages on `topology` (rows x cols for a mesh or torus), joined by links of
    `link_bytes_per_cycle` per direction, `hop_latency_cycles` per hop and `link_pj_per_bit`. Validated by
    Hardware, which knows the topologies."""

    count: int
    topology: str = "chain"
    rows: int = 1
    cols: int = 1
    link_bytes_per_cycle: int = 16
    hop_latency_cycles: int = 50
    link_pj_per_bit: float = 5.5


def gateway(p: int, q: int, m: int) -> int:
    """The chiplet of package p where its link to neighbouring package q lands: p's last chiplet (id p*m + m - 1)
    towards a higher-numbered package, its first (id p*m) towards a lower one. So the pipeline leaves package p
    where its last stage runs and enters package p + 1 where its first stage runs."""
    return p * m + (m - 1 if q > p else 0)


def package_links(count: int, m: int, board_neighbours: Callable[[int], Sequence[int]]) -> list[tuple[int, int]]:
    """Directed links between packages: (gateway(p, q), gateway(q, p)) for every package q next to p on the board."""
    return [(gateway(p, q, m), gateway(q, p, m)) for p in range(count) for q in board_neighbours(p)]


def hierarchical_path(src: int, dst: int, m: int, die_path: Callable[[int, int], Sequence[int]],
                      board_path: Callable[[int, int], Sequence[int]]) -> list[int]:
    """Chiplets visited from src to dst (both included). In one package: that package's own route. Across
    packages: along the board's route of packages; in each package on the way, the package's own route from where
    the message is to the gateway towards the next package, then the package link to that package's gateway.
    die_path(a, b) and board_path(p, q) give the nodes visited inside one package (local ids) and on the board."""
    ps, pd = src // m, dst // m
    if ps == pd:
        return [ps * m + x for x in die_path(src % m, dst % m)]
    out, cur = [src], src
    packages = list(board_path(ps, pd))
    for p, q in zip(packages, packages[1:]):
        out += [p * m + x for x in die_path(cur % m, gateway(p, q, m) % m)[1:]]
        cur = gateway(q, p, m)
        out.append(cur)
    out += [pd * m + x for x in die_path(cur % m, dst % m)[1:]]
    return out
