"""The design space `partition explore` searches: its TOML file, its defaults, and design -> Hardware.

A design is one choice per axis: process node and clock; chiplets per package, packages per board, topology, link
bandwidth, package; the main chiplet kind (MAC array, vector width, SRAM) and an optional second kind (its own MAC
array, vector width and SRAM, its share of the chiplets and where in the pipeline order they sit), so a design may be
heterogeneous; the HBM stacks (GiB each, how many per package, on which edges). Every axis is a non-empty list of
candidate values; `--space FILE.toml` replaces any of them.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from partitioner.hw import ppa
from partitioner.core.errors import UserError
from partitioner.hw.hardware import (
    HBM3_STACK, MIB, TOPOLOGIES, Chiplet, Hardware, MemoryStack, edge_stacks, near_square, packages_of)
from partitioner.hw.toml_write import hardware_toml  # noqa: F401 - the name explore's callers import from here

B_PLACES = ("head", "tail", "interleave")
HBM_PLACES = ("sides", "west")


@dataclass(frozen=True)
class Space:
    """Candidate values per axis. Defaults span the nodes ppa.py knows and the sizes around the default chiplet."""

    process_nm: tuple[int, ...] = (28, 16, 7, 5, 3)
    chiplets: tuple[int, ...] = (4, 8, 16, 24, 36)
    topology: tuple[str, ...] = ("mesh", "torus", "ring")
    macs_per_cycle: tuple[int, ...] = (1024, 2048, 4096, 8192)
    """MAC array size; the vector unit is an eighth of it (the default chiplet's 4096:512 ratio)."""
    sram_mib: tuple[int, ...] = (8, 16, 32, 64, 128)
    link_bytes_per_cycle: tuple[int, ...] = (16, 32, 64, 128)
    clock_ghz: tuple[float, ...] = (0.8, 1.0, 1.4, 2.0)
    """capped at each node's ppa maximum: a design asking for more runs at the node's maximum (a space whose
    every clock is above every chosen node's maximum is contradictory and rejected)."""
    package: tuple[str, ...] = ("organic", "interposer")
    hbm_gib: tuple[float, ...] = (0, 8, 16)
    """GiB per HBM3 stack of the memory tier, 0 = none (SRAM only). Stacks sit along the package's west and east
    edges as for `--chiplets N` (hardware.edge_stacks); weights that do not fit SRAM stream from them. HBM needs
    the silicon interposer: an organic package with HBM is a design that does not fit."""
    hbm_stacks: tuple[int, ...] = (2, 4, 8)
    """HBM stacks per package (when hbm_gib > 0), spread along the edges hbm_place names."""
    hbm_place: tuple[str, ...] = HBM_PLACES
    """sides: west and east edges (as `--chiplets N`); west: the west edge only (one side of the package)."""
    packages: tuple[int, ...] = (1, 2, 4)
    """packages per board, each `chiplets` chiplets with its own HBM stacks, in a chain of package-to-package
    links (hardware.PACKAGE_LINK); the pipeline runs package by package."""
    vector_ratio: tuple[int, ...] = (8, 2)
    """the main kind's vector unit is macs_per_cycle / this wide (8: the default chiplet's 4096:512)."""
    b_macs_per_cycle: tuple[int, ...] = (0, 1024, 4096, 8192)
    """the second chiplet kind's MAC array; 0: no second kind (a homogeneous design; the b_ axes are then moot)."""
    b_sram_mib: tuple[float, ...] = (8, 32, 128)
    b_vector_ratio: tuple[int, ...] = (8, 2)
    b_share: tuple[float, ...] = (0.25, 0.5)
    """fraction of the chiplets (of all packages) that are the second kind, at least one."""
    b_place: tuple[str, ...] = B_PLACES
    """where the second kind sits in chiplet-id (pipeline) order: head (the first ids), tail (the last) or
    interleave (every 1/b_share-th id)."""

    def axes(self) -> dict[str, tuple]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def size(self) -> int:
        return math.prod(len(v) for v in self.axes().values())


_TYPES = {"process_nm": int, "chiplets": int, "topology": str, "macs_per_cycle": int, "sram_mib": (int, float),
          "link_bytes_per_cycle": int, "clock_ghz": (int, float), "package": str, "hbm_gib": (int, float),
          "hbm_stacks": int, "hbm_place": str, "packages": int, "vector_ratio": int, "b_macs_per_cycle": int,
          "b_sram_mib": (int, float), "b_vector_ratio": int, "b_share": float, "b_place": str}
_ZERO_OK = ("hbm_gib", "b_macs_per_cycle")


def load_space(path: str | None) -> Space:
    """Read `--space FILE.toml`: any axis given replaces the default list; each value is checked."""
    if path is None:
        return Space()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"space file {path} does not exist", "pass an existing .toml file to --space")
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"space file {path} is not readable TOML ({exc})", "fix the TOML syntax")
    fix = "see docs/explore.md for the axes and their values"
    kwargs = {}
    for key, values in data.items():
        if key not in _TYPES:
            raise UserError(f"space file {path}: axis '{key}' is unknown (allowed: {', '.join(_TYPES)})", fix)
        if not isinstance(values, list):
            values = [values]
        if not values:
            raise UserError(f"space file {path}: axis '{key}' is empty", "give it at least one value, or drop it")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, _TYPES[key]):
                raise UserError(f"space file {path}: axis '{key}' has value {v!r} of the wrong type", fix)
            if not isinstance(v, str) and not (0 < v < 1 << 40 or key in _ZERO_OK and v == 0):
                what = "values must be positive" + (" or 0 (none)" if key in _ZERO_OK else "")
                raise UserError(f"space file {path}: axis '{key}' has value {v!r}; {what}", fix)
        kwargs[key] = tuple(dict.fromkeys(values))
    space = Space(**kwargs)
    validate(space, f"space file {path}")
    return space


def validate(space: Space, where: str = "design space") -> None:
    """Reject values no design can use, and spaces whose axes contradict each other."""
    for nm in space.process_nm:
        if nm not in ppa.NODES:
            raise UserError(f"{where}: unknown process node {nm} nm",
                            f"use nodes from {', '.join(str(n) for n in sorted(ppa.NODES))}")
    for t in space.topology:
        if t not in TOPOLOGIES:
            raise UserError(f"{where}: unknown topology {t!r}", f"use topologies from {', '.join(TOPOLOGIES)}")
    for p in space.package:
        if p not in ppa.PACKAGES:
            raise UserError(f"{where}: unknown package {p!r}", f"use packages from {', '.join(ppa.PACKAGES)}")
    ceiling = max(ppa.NODES[nm].max_clock_ghz for nm in space.process_nm)
    if min(space.clock_ghz) > ceiling:
        raise UserError(f"{where}: every clock_ghz ({', '.join(f'{c:g}' for c in space.clock_ghz)}) is above the "
                        f"fastest chosen node's ceiling of {ceiling:g} GHz", f"allow a clock of at most {ceiling:g} "
                        "GHz or a newer process node (ceilings in docs/ppa.md)")
    for key, allowed in (("b_place", B_PLACES), ("hbm_place", HBM_PLACES)):
        bad = [v for v in getattr(space, key) if v not in allowed]
        if bad:
            raise UserError(f"{where}: unknown {key} {bad[0]!r}", f"use {key} values from {', '.join(allowed)}")
    if any(not 0 < v < 1 for v in space.b_share):
        raise UserError(f"{where}: b_share must lie strictly between 0 and 1", "give fractions such as 0.25 or 0.5")
    if space.topology == ("torus",) and max(space.chiplets) < 4:
        raise UserError(f"{where}: a torus needs at least 4 chiplets but the space allows at most "
                        f"{max(space.chiplets)}", "allow more chiplets or another topology")


@dataclass(frozen=True)
class Design:
    """One point of the space."""

    process_nm: int
    chiplets: int
    topology: str
    macs_per_cycle: int
    sram_mib: float
    link_bytes_per_cycle: int
    clock_ghz: float
    package: str
    hbm_gib: float = 0
    """GiB per HBM3 stack; 0: no memory tier."""
    hbm_stacks: int = 0
    """stacks per package; 0: the `--chiplets N` rule (hardware.edge_stacks: one per two rows on each side)."""
    hbm_place: str = "sides"
    packages: int = 1
    vector_ratio: int = 8
    b_macs_per_cycle: int = 0
    b_sram_mib: float = 64
    b_vector_ratio: int = 8
    b_share: float = 0.25
    b_place: str = "head"

    def canonical(self) -> "Design":
        """The same hardware with the moot axes at their defaults (the b_ axes without a second kind, the stack
        axes without HBM), so two spellings of one design share a name and a result."""
        d = self
        if not d.b_macs_per_cycle:
            d = replace(d, b_sram_mib=64, b_vector_ratio=8, b_share=0.25, b_place="head")
        if not d.hbm_gib:
            d = replace(d, hbm_stacks=0, hbm_place="sides")
        return d

    @property
    def n_chiplets(self) -> int:
        return self.chiplets * self.packages

    def b_ids(self) -> tuple[int, ...]:
        """Chiplet ids (over all packages) of the second kind: none without one, else at least one."""
        n = self.n_chiplets
        if not self.b_macs_per_cycle or n < 2:
            return ()
        k = min(n - 1, max(1, round(self.b_share * n)))
        if self.b_place == "head":
            return tuple(range(k))
        if self.b_place == "tail":
            return tuple(range(n - k, n))
        step = max(2, round(1 / self.b_share))
        return tuple(range(0, n, step))

    @property
    def effective_clock_ghz(self) -> float:
        return min(self.clock_ghz, ppa.node(self.process_nm).max_clock_ghz)

    @property
    def name(self) -> str:
        d = self.canonical()
        return (f"n{d.process_nm}-{f'p{d.packages}x' if d.packages > 1 else ''}c{d.chiplets}-{d.topology}"
                f"-m{d.macs_per_cycle}{f'v{d.vector_ratio}' if d.vector_ratio != 8 else ''}-s{d.sram_mib:g}"
                f"-l{d.link_bytes_per_cycle}-f{d.effective_clock_ghz:g}-{d.package}"
                + (f"-h{d.hbm_gib:g}" if d.hbm_gib else "")
                + (f"x{d.hbm_stacks}{'w' if d.hbm_place == 'west' else ''}" if d.hbm_gib and d.hbm_stacks else "")
                + (f"-b{d.b_macs_per_cycle}v{d.b_vector_ratio}s{d.b_sram_mib:g}-{d.b_place}{d.b_share:g}"
                   if d.b_ids() else ""))


def _chiplet(nm: int, macs: int, vector_ratio: int, sram_mib: float, kind: str) -> Chiplet:
    return Chiplet(kind=f"{kind}-{nm}nm", macs_per_cycle=macs, vector_ops_per_cycle=max(1, macs // vector_ratio),
                   sram_bytes=int(sram_mib * MIB), sram_bytes_per_cycle=max(256, macs // 4))


def hardware_of(design: Design, precision: str = "fp16") -> Hardware:
    """The board a design describes (one package, or `packages` copies in a chain), with the node's energies and
    the package's link energy (ppa.at_node)."""
    n = design.chiplets
    main = _chiplet(design.process_nm, design.macs_per_cycle, design.vector_ratio, design.sram_mib, "dse")
    topology = design.topology
    if topology == "torus" and n < 4:
        topology = "mesh"   # a 1xN or 2x1 torus is a ring or a pair; keep the grid semantics honest
    rows, cols = near_square(n) if topology in ("mesh", "torus") else (1, n)
    clock = design.effective_clock_ghz
    hw = Hardware(design.name, (main,) * n, topology, rows, cols, clock_hz=clock * 1e9,
                  link_bytes_per_cycle=design.link_bytes_per_cycle, hop_latency_cycles=20,
                  memory_stacks=hbm_stacks(rows, cols, design.hbm_gib, clock, design.hbm_stacks, design.hbm_place))
    if design.packages > 1:
        hw = packages_of(hw, design.packages, name=design.name)
    b_ids = set(design.b_ids())
    if b_ids:
        second = _chiplet(design.process_nm, design.b_macs_per_cycle, design.b_vector_ratio, design.b_sram_mib,
                          "dse-b")
        hw = replace(hw, chiplets=tuple(second if i in b_ids else c for i, c in enumerate(hw.chiplets)))
    return ppa.at_node(hw, design.process_nm, precision=precision, package=design.package)


def hbm_stacks(rows: int, cols: int, gib: float, clock_ghz: float, count: int = 0, place: str = "sides") -> tuple:
    """The memory tier of one package: HBM3's 819 GB/s and 100 ns (HBM3_STACK, given there per 1 GHz cycle)
    converted to the design's clock, `gib` GiB per stack. count 0: `edge_stacks` (one per two rows on the west and
    east edges); else `count` stacks along the west edge, or shared between west and east (west first) for
    "sides", each wired to a contiguous run of that edge's chiplets (two stacks may share a chiplet when there are
    more stacks than edge chiplets). 0 GiB: none."""
    if not gib:
        return ()
    params = dict(capacity_bytes=int(gib * (1 << 30)), bytes_per_cycle=max(1, round(HBM3_STACK["bytes_per_cycle"]
                                                                                       / clock_ghz)),
                  latency_cycles=round(HBM3_STACK["latency_cycles"] * clock_ghz))
    if not count:
        return edge_stacks(rows, cols, **params)
    positions = Hardware("probe", (Chiplet(),) * (rows * cols), "mesh", rows, cols).positions
    at = {pos: i for i, pos in enumerate(positions)}
    sides = [("w", 0)] if place == "west" or cols == 1 else [("w", 0), ("e", cols - 1)]
    per_side = [count // len(sides) + (k < count % len(sides)) for k in range(len(sides))]
    params = {**HBM3_STACK, **params}
    stacks = []
    for (side, col), k in zip(sides, per_side):
        edge = [at[(r, col)] for r in range(rows)]
        for j in range(k):
            lo, hi = j * rows // k, max(j * rows // k + 1, (j + 1) * rows // k)
            stacks.append(MemoryStack(f"hbm-{side}{j}", attached=tuple(sorted(edge[lo:hi])), **params))
    return tuple(stacks)


def design_from_params(params: dict) -> Design:
    """A trial's parameters as a Design; axes a study did not have (older studies) take the Design defaults."""
    return Design(**{f.name: params[f.name] for f in fields(Design) if f.name in params})


def space_file_text(space: Space) -> str:
    """The space as a TOML file (written next to the results so a run can be repeated)."""
    def value(v):
        return f'"{v}"' if isinstance(v, str) else repr(v)
    return "".join(f"{k} = [{', '.join(value(v) for v in vs)}]\n" for k, vs in space.axes().items())


def save_space(path: Path, space: Space) -> None:
    from partitioner.core.files import write_text

    write_text(path, space_file_text(space))
