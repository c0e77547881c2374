"""The multi-chip-module package: chiplets, the network between them, routing and presets (TOML files: hw/toml.py).

Chiplet ids are the pipeline order. On a mesh or torus they snake through the rows (row 0 left to right, row 1
right to left, ...), so consecutive pipeline stages sit on neighbouring chiplets; `places` gives another path
through the grid (hw/order.py: on a heterogeneous package, the one along which the kinds change least).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from functools import cached_property

from partitioner.core.errors import UserError
from partitioner.hw.levels import (  # noqa: F401  (PACKAGE_LINK: hw/toml.py reads it from here)
    PACKAGE_LINK, LinkClass, PackageLevel, check_levels, class_name, hierarchical_path, level_links, level_of,
    nested_positions, spans)
from partitioner.hw.chiplet import (  # noqa: F401  (importers read them from here)
    DATAFLOWS, MIB, Chiplet, MemoryStack, near_square)

# On-package die-to-die link energy: UCIe 1.0's target for the standard (organic) package, 0.5 pJ/bit (0.25 pJ/bit
# on advanced packaging), Das Sharma et al., "Universal Chiplet Interconnect Express (UCIe): An Open Industry
# Standard for Innovations With Chiplets at Package Level", IEEE Trans. CPMT 12(9), 2022 (not the board-level 1.17).
LINK_PJ_PER_BIT = 0.5
TOPOLOGIES = ("mesh", "torus", "ring", "chain", "all-to-all")


@dataclass(frozen=True)
class Hardware:
    """A package of chiplets on a network. Links are directed (a, b) pairs between neighbouring chiplets."""

    name: str
    chiplets: tuple[Chiplet, ...]
    topology: str = "mesh"
    rows: int = 1
    cols: int = 1
    clock_hz: float = 1.0e9
    link_bytes_per_cycle: int = 64
    hop_latency_cycles: int = 20
    link_pj_per_bit: float = LINK_PJ_PER_BIT
    memory_stacks: tuple[MemoryStack, ...] = ()
    package_level: PackageLevel | None = None
    """None: one flat package. Else the board level (partitioner/hw/levels.py): `package_level.count` packages, each of
    n_chiplets / (count x the upper levels' counts) chiplets laid out as topology/rows/cols with the link fields
    above (the on-package class)."""
    upper_levels: tuple[PackageLevel, ...] = ()
    """Levels above the board, innermost first: upper_levels[0] puts its count boards (of package_level.count
    packages each) in a node, the next puts nodes in a rack, ...; each with its own topology and link class.
    Needs a package_level."""
    places: tuple[tuple[int, int], ...] | None = None
    """(row, col) of each chiplet id on a flat mesh or torus whose pipeline order is not the row snake
    (hw/order.py); None: the row snake. Consecutive ids should be neighbours, as in the snake."""

    def __post_init__(self) -> None:
        n = len(self.chiplets)
        if n < 1:
            raise ValueError("a package needs at least one chiplet")
        if self.places is not None and (self.topology not in ("mesh", "torus") or self.package_level is not None
                                        or sorted(self.places) != [(r, c) for r in range(self.rows)
                                                                   for c in range(self.cols)]):
            raise ValueError("places must put each chiplet of a flat mesh or torus on its own cell of the grid")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {self.topology!r}; expected one of {', '.join(TOPOLOGIES)}")
        pl = self.package_level
        if self.upper_levels and pl is None:
            raise ValueError("upper levels need a package level (the board) beneath them")
        check_levels(n, self.levels, TOPOLOGIES)
        m = self.chiplets_per_package
        if self.topology in ("mesh", "torus") and self.rows * self.cols != m:
            raise ValueError(f"{self.topology} {self.rows}x{self.cols} has {self.rows * self.cols} places "
                             f"but {m} chiplets {'per package ' if pl else ''}are given")
        if not (0 < self.clock_hz < math.inf and self.link_bytes_per_cycle > 0 and self.hop_latency_cycles >= 0
                and 0 <= self.link_pj_per_bit < math.inf):
            raise ValueError("clock, link bandwidth must be > 0 and hop latency, link energy >= 0")
        for stack in self.memory_stacks:
            bad = [c for c in stack.attached if not 0 <= c < n]
            if bad:
                raise ValueError(f"memory stack {stack.name} is attached to chiplet {bad[0]}, outside 0..{n - 1}")

    def __hash__(self) -> int:
        return self._field_hash

    @cached_property
    def _field_hash(self) -> int:
        """The dataclass's field hash, computed once: memoised functions hash a package of hundreds of chiplets on
        every call."""
        return hash(tuple(getattr(self, f.name) for f in fields(self) if f.compare))

    # --- memory tier -------------------------------------------------------------------------------------------------
    @cached_property
    def stack_feed(self) -> tuple[tuple[int, int], ...]:
        """Per chiplet c: (stack index, attached chiplet) its streamed weights come from: the attached chiplet
        fewest hops from c over all stacks (ties: lower stack index, then lower chiplet id). Empty without stacks."""
        if not self.memory_stacks:
            return ()
        out = []
        for c in range(self.n_chiplets):
            _, s, src = min((self.hops(a, c), s, a) for s, st in enumerate(self.memory_stacks) for a in st.attached)
            out.append((s, src))
        return tuple(out)

    def without_memory_tier(self) -> "Hardware":
        return replace(self, memory_stacks=())

    @property
    def n_chiplets(self) -> int:
        return len(self.chiplets)

    @property
    def homogeneous(self) -> bool:
        return len(set(self.chiplets)) == 1

    # --- levels (partitioner/hw/levels.py) -------------------------------------------------------------------------------
    @property
    def levels(self) -> tuple[PackageLevel, ...]:
        """Every level above the chiplets, innermost (the board of packages) first; () when flat."""
        return () if self.package_level is None else (self.package_level, *self.upper_levels)

    @cached_property
    def spans(self) -> tuple[int, ...]:
        """Chiplets in one unit of each level: (per package, per board, per node, ..., n_chiplets)."""
        return spans(len(self.chiplets), self.levels)

    @property
    def n_packages(self) -> int:
        return len(self.chiplets) // self.spans[0]

    @property
    def chiplets_per_package(self) -> int:
        return self.spans[0]

    def package_of(self, chiplet: int) -> int:
        return chiplet // self.chiplets_per_package

    @cached_property
    def link_classes(self) -> tuple[LinkClass, ...]:
        """Class 0: the links inside a package (die-to-die); class j >= 1: the links of level j (1: the board's
        package-to-package links, then level-2, ..., or each level's own link_name)."""
        out = [LinkClass(class_name(0), self.link_bytes_per_cycle, self.hop_latency_cycles, self.link_pj_per_bit)]
        out += [LinkClass(class_name(j, lv.link_name), lv.link_bytes_per_cycle, lv.hop_latency_cycles,
                          lv.link_pj_per_bit)
                for j, lv in enumerate(self.levels, 1)]
        return tuple(out)

    @cached_property
    def link_class(self) -> tuple[int, ...]:
        """Per link of `links`: its class (index into link_classes): 0 inside a package, else the level whose units
        its ends join (levels.level_of)."""
        return tuple(level_of(a, b, self.spans) for a, b in self.links)

    @cached_property
    def link_bw(self) -> tuple[int, ...]:
        """Bytes per cycle of each link of `links`."""
        return tuple(self.link_classes[k].bytes_per_cycle for k in self.link_class)

    @cached_property
    def link_latency(self) -> tuple[int, ...]:
        """Per-hop latency in cycles of each link of `links`."""
        return tuple(self.link_classes[k].hop_latency_cycles for k in self.link_class)

    @cached_property
    def link_pj(self) -> tuple[float, ...]:
        """Energy per bit of each link of `links`."""
        return tuple(self.link_classes[k].pj_per_bit for k in self.link_class)

    @property
    def fastest_link_bytes_per_cycle(self) -> int:
        """The highest link bandwidth anywhere: what bounds that aggregate over links divide by."""
        return max(c.bytes_per_cycle for c in self.link_classes)

    @property
    def layout(self) -> str:
        """One phrase for reports: "mesh 4x4", "2 packages (chain) of mesh 4x4" with a package level, "8 groups
        (all-to-all) of 4 packages (ring) of chain 1x2" with one more."""
        out = f"{self.topology} {self.rows}x{self.cols}"
        for j, lv in enumerate(self.levels):
            unit = "packages" if j == 0 else "groups"
            out = f"{lv.count} {unit} ({lv.topology}) of {out}"
        return out

    @cached_property
    def _die(self) -> "Hardware":
        """One package alone, flat: its layout and routing are those of every package."""
        m = self.chiplets_per_package
        return Hardware(f"{self.name}-package", self.chiplets[:m], self.topology, self.rows, self.cols)

    @cached_property
    def _boards(self) -> tuple["Hardware", ...]:
        """Each level as a flat package whose 'chiplets' are its units (for its layout and routing)."""
        return tuple(Hardware(f"{self.name}-level{j}", (Chiplet(),) * lv.count, lv.topology, lv.rows, lv.cols)
                     for j, lv in enumerate(self.levels, 1))

    # --- geometry --------------------------------------------------------------------------------------------------
    @cached_property
    def positions(self) -> tuple[tuple[int, int], ...]:
        """(row, col) of each chiplet id; `places`, or snake order on grids; a single row otherwise. With packages: each
        package's own layout, shifted to its place on the board, three empty rows and columns apart (room to draw
        memory stacks); for drawing only, routing uses each level's own layout."""
        if self.package_level is not None:
            return nested_positions(self.spans, self._die.positions, [b.positions for b in self._boards])
        if self.topology not in ("mesh", "torus"):
            return tuple((0, i) for i in range(self.n_chiplets))
        if self.places is not None:
            return self.places
        out = []
        for i in range(self.n_chiplets):
            r, c = divmod(i, self.cols)
            out.append((r, c if r % 2 == 0 else self.cols - 1 - c))
        return tuple(out)

    @cached_property
    def _id_at(self) -> dict[tuple[int, int], int]:
        return {pos: i for i, pos in enumerate(self.positions)}

    @cached_property
    def links(self) -> tuple[tuple[int, int], ...]:
        """Every directed physical link (a, b), sorted."""
        out: set[tuple[int, int]] = set()
        if self.package_level is not None:
            m, span = self.chiplets_per_package, self.spans
            out.update((p * m + a, p * m + b) for p in range(self.n_packages) for a, b in self._die.links)
            for j, board in enumerate(self._boards, 1):
                out.update(level_links(self.n_chiplets // span[j], board.n_chiplets, span[j - 1], board._neighbours))
            return tuple(sorted(out))
        for a in range(self.n_chiplets):
            for b in self._neighbours(a):
                out.add((a, b))
        return tuple(sorted(out))

    @cached_property
    def link_index(self) -> dict[tuple[int, int], int]:
        return {link: k for k, link in enumerate(self.links)}

    def _neighbours(self, a: int) -> list[int]:
        n = self.n_chiplets
        if n == 1:
            return []
        if self.topology == "all-to-all":
            return [b for b in range(n) if b != a]
        if self.topology == "chain":
            return [b for b in (a - 1, a + 1) if 0 <= b < n]
        if self.topology == "ring":
            return sorted({(a - 1) % n, (a + 1) % n})
        r, c = self.positions[a]
        wrap = self.topology == "torus"
        out = []
        for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
            rr, cc = r + dr, c + dc
            if wrap:
                rr, cc = rr % self.rows, cc % self.cols
            if 0 <= rr < self.rows and 0 <= cc < self.cols and (rr, cc) != (r, c):
                out.append(self._id_at[(rr, cc)])
        return sorted(set(out))

    # --- routing -----------------------------------------------------------------------------------------------------
    def route(self, src: int, dst: int) -> tuple[int, ...]:
        """Link indices a packet from chiplet src to chiplet dst traverses, in order (empty if src == dst).
        Computed per pair on first use and cached: a run touches few pairs, and a table of all n^2 routes would
        take minutes at thousands of chiplets."""
        key = (src, dst)
        cached = self._route_cache.get(key)
        if cached is None:
            cached = self._route_cache[key] = self._compute_route(src, dst)
        return cached

    def hops(self, src: int, dst: int) -> int:
        return len(self.route(src, dst))

    @cached_property
    def _route_cache(self) -> dict[tuple[int, int], tuple[int, ...]]:
        return {}

    def _compute_route(self, src: int, dst: int) -> tuple[int, ...]:
        """Dimension-order routing: along the row (X) first, then along the column (Y); shortest way round on
        rings and tori (ties go the positive direction). With levels: hierarchical (levels.hierarchical_path)."""
        if src == dst:
            return ()
        if self.package_level is not None:
            path = hierarchical_path(src, dst, self.spans, [self._die._path] + [b._path for b in self._boards])
        else:
            path = self._path(src, dst)
        return tuple(self.link_index[(a, b)] for a, b in zip(path, path[1:]))

    def _path(self, src: int, dst: int) -> list[int]:
        """Chiplets visited from src to dst (both included) by the flat routing of `_compute_route`."""
        if src == dst:
            return [src]
        if self.topology == "all-to-all":
            return [src, dst]
        path = [src]
        if self.topology in ("chain", "ring"):
            n = self.n_chiplets
            step = 1 if dst > src else -1
            if self.topology == "ring":
                forward = (dst - src) % n
                step = 1 if forward <= n - forward else -1
            cur = src
            while cur != dst:
                cur = (cur + step) % n
                path.append(cur)
        else:
            (r, c), (tr, tc) = self.positions[src], self.positions[dst]
            wrap = self.topology == "torus"
            for axis, size in ((1, self.cols), (0, self.rows)):
                while (c if axis else r) != (tc if axis else tr):
                    cur_v, tgt_v = (c, tc) if axis else (r, tr)
                    step = 1 if tgt_v > cur_v else -1
                    if wrap:
                        forward = (tgt_v - cur_v) % size
                        step = 1 if forward <= size - forward else -1
                    nxt = (cur_v + step) % size if wrap else cur_v + step
                    if axis:
                        c = nxt
                    else:
                        r = nxt
                    path.append(self._id_at[(r, c)])
        return path

    def with_link_bandwidth(self, link_bytes_per_cycle: int) -> "Hardware":
        return replace(self, link_bytes_per_cycle=link_bytes_per_cycle)


# --- construction ----------------------------------------------------------------------------------------------------
# HBM3 stack (JEDEC JESD238, Jan 2022): 1024 data pins x 6.4 Gb/s = 819.2 GB/s per stack, i.e. 819 bytes per
# cycle of the 1 GHz package clock; 16 GiB per stack (12-high of 16 Gb dies; JESD238 allows up to 16-high, 24 GiB
# with 24 Gb dies, the SK hynix HBM3 parts of 2023); access energy 3.9 pJ/bit = 31.2 pJ/byte (O'Connor et al.,
# "Fine-Grained DRAM", MICRO 2017: 3.9 pJ/bit for HBM2 row + I/O energy; HBM3-class parts report similar);
# latency 100 ns = 100 cycles (random-access latency of HBM2/HBM3 measured around 100-130 ns on GPUs, Jia et al.,
# "Dissecting the NVIDIA Volta GPU architecture via microbenchmarking", 2018, and later Ampere/Hopper studies).
HBM3_STACK = dict(capacity_bytes=16 << 30, bytes_per_cycle=819, pj_per_byte=31.2, latency_cycles=100)


def edge_stacks(rows: int, cols: int, **params) -> tuple[MemoryStack, ...]:
    """The default tier of a rows x cols mesh: HBM stacks along the west and east edges (where a package's
    HBM sits beside the compute dies), one per two rows on each edge, each wired to the edge chiplets of its two
    rows; a single-column mesh gets the west edge only. 4x4 -> 4 stacks, 8x8 -> 8, 1xN -> 2."""
    params = {**HBM3_STACK, **params}
    positions = Hardware("probe", (Chiplet(),) * (rows * cols), "mesh", rows, cols).positions
    at = {pos: i for i, pos in enumerate(positions)}
    stacks = []
    for side, col in (("w", 0), ("e", cols - 1)):
        if side == "e" and cols == 1:
            break
        for r0 in range(0, rows, 2):
            ids = tuple(sorted(at[(r, col)] for r in range(r0, min(r0 + 2, rows))))
            stacks.append(MemoryStack(f"hbm-{side}{r0 // 2}", attached=ids, **params))
    return tuple(stacks)


def mesh_of(n: int, chiplet: Chiplet | None = None, name: str | None = None, memory_tier: bool = False,
            **package) -> Hardware:
    """A near-square mesh of n identical chiplets; with memory_tier, plus the default HBM tier (`edge_stacks`).
    `--chiplets N` is `mesh_of(N, memory_tier=True)` (load_hardware); SRAM-only by default here so that code
    building packages by hand gets exactly what it spells out."""
    if n < 1:
        raise UserError(f"--chiplets must be at least 1, got {n}", "pass a positive chiplet count such as 16")
    rows, cols = near_square(n)
    if memory_tier and "memory_stacks" not in package:
        package["memory_stacks"] = edge_stacks(rows, cols)
    return Hardware(name or f"default-{n}", (chiplet or Chiplet(),) * n, "mesh", rows, cols, **package)


def packages_of(package: Hardware, count: int, topology: str = "chain", name: str | None = None,
                rows: int | None = None, cols: int | None = None, **link) -> Hardware:
    """`count` copies of a package on a board of `topology` (rows x cols for a grid, default near-square), joined
    by links of PACKAGE_LINK's class unless link_bytes_per_cycle, hop_latency_cycles or link_pj_per_bit are given.
    Copy p's chiplets are ids p*m .. p*m + m - 1; its memory stacks are the package's own, renamed p<p>-<name> and
    attached to its chiplets. A package with levels already (a GPU of I/O dies, a node) gets one more on top."""
    m = package.n_chiplets
    if rows is None or cols is None:
        rows, cols = near_square(count) if topology in ("mesh", "torus") else (1, count)
    level = PackageLevel(count, topology, rows, cols,
                         link_bytes_per_cycle=link.get("link_bytes_per_cycle", PACKAGE_LINK["bytes_per_cycle"]),
                         hop_latency_cycles=link.get("hop_latency_cycles", PACKAGE_LINK["hop_latency_cycles"]),
                         link_pj_per_bit=link.get("link_pj_per_bit", PACKAGE_LINK["pj_per_bit"]),
                         link_name=link.get("link_name", ""))
    stacks = tuple(replace(st, name=f"p{p}-{st.name}", attached=tuple(p * m + c for c in st.attached))
                   for p in range(count) for st in package.memory_stacks)
    levels = dict(upper_levels=(*package.upper_levels, level)) if package.levels else dict(package_level=level)
    return replace(package, name=name or f"{count}x{package.name}", chiplets=package.chiplets * count,
                   memory_stacks=stacks, **levels)
