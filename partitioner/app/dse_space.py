"""The design space `partition explore` searches: its TOML file, its defaults, and design -> Hardware.

A design is one choice per axis (process node, chiplet count, topology, MAC array, SRAM, link bandwidth, clock,
package). Every axis is a non-empty list of candidate values; `--space FILE.toml` replaces any of them.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from partitioner.hw import ppa
from partitioner.core.errors import UserError
from partitioner.hw.hardware import HBM3_STACK, MIB, TOPOLOGIES, Chiplet, Hardware, edge_stacks, near_square


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

    def axes(self) -> dict[str, tuple]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def size(self) -> int:
        return math.prod(len(v) for v in self.axes().values())


_TYPES = {"process_nm": int, "chiplets": int, "topology": str, "macs_per_cycle": int, "sram_mib": (int, float),
          "link_bytes_per_cycle": int, "clock_ghz": (int, float), "package": str, "hbm_gib": (int, float)}


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
            if not isinstance(v, str) and not (0 < v < 1 << 40 or key == "hbm_gib" and v == 0):
                what = "values must be positive" + (" or 0 (no HBM)" if key == "hbm_gib" else "")
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

    @property
    def effective_clock_ghz(self) -> float:
        return min(self.clock_ghz, ppa.node(self.process_nm).max_clock_ghz)

    @property
    def name(self) -> str:
        return (f"n{self.process_nm}-c{self.chiplets}-{self.topology}-m{self.macs_per_cycle}-s{self.sram_mib:g}"
                f"-l{self.link_bytes_per_cycle}-f{self.effective_clock_ghz:g}-{self.package}"
                + (f"-h{self.hbm_gib:g}" if self.hbm_gib else ""))


def hardware_of(design: Design, precision: str = "fp16") -> Hardware:
    """The package a design describes, with the node's energies and the package's link energy (ppa.at_node)."""
    n = design.chiplets
    chip = Chiplet(kind=f"dse-{design.process_nm}nm", macs_per_cycle=design.macs_per_cycle,
                   vector_ops_per_cycle=max(1, design.macs_per_cycle // 8),
                   sram_bytes=int(design.sram_mib * MIB),
                   sram_bytes_per_cycle=max(256, design.macs_per_cycle // 4))
    topology = design.topology
    if topology == "torus" and n < 4:
        topology = "mesh"   # a 1xN or 2x1 torus is a ring or a pair; keep the grid semantics honest
    rows, cols = near_square(n) if topology in ("mesh", "torus") else (1, n)
    hw = Hardware(design.name, (chip,) * n, topology, rows, cols, clock_hz=design.effective_clock_ghz * 1e9,
                  link_bytes_per_cycle=design.link_bytes_per_cycle, hop_latency_cycles=20,
                  memory_stacks=hbm_stacks(rows, cols, design.hbm_gib, design.effective_clock_ghz))
    return ppa.at_node(hw, design.process_nm, precision=precision, package=design.package)


def hbm_stacks(rows: int, cols: int, gib: float, clock_ghz: float) -> tuple:
    """The memory tier of a design: `edge_stacks` of `gib` GiB each, HBM3's 819 GB/s and 100 ns (HBM3_STACK, given
    there per 1 GHz cycle) converted to the design's clock. 0 GiB: none."""
    if not gib:
        return ()
    return edge_stacks(rows, cols, capacity_bytes=int(gib * (1 << 30)),
                       bytes_per_cycle=max(1, round(HBM3_STACK["bytes_per_cycle"] / clock_ghz)),
                       latency_cycles=round(HBM3_STACK["latency_cycles"] * clock_ghz))


def hardware_toml(hw: Hardware, header: str = "") -> str:
    """A TOML file hardware_from_toml reads back to an equal Hardware (homogeneous packages only)."""
    if not hw.homogeneous:
        raise ValueError("hardware_toml writes homogeneous packages only")
    c = hw.chiplets[0]
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f'name = "{hw.name}"', f"clock_ghz = {hw.clock_hz / 1e9!r}", f'topology = "{hw.topology}"',
              f"chiplets = {hw.n_chiplets}"]
    if hw.topology in ("mesh", "torus"):
        lines += [f"rows = {hw.rows}", f"cols = {hw.cols}"]
    lines += [f"link_bytes_per_cycle = {hw.link_bytes_per_cycle}", f"hop_latency_cycles = {hw.hop_latency_cycles}",
              f"link_pj_per_bit = {hw.link_pj_per_bit!r}", "", "[chiplet]", f'kind = "{c.kind}"',
              f"macs_per_cycle = {c.macs_per_cycle}", f"vector_ops_per_cycle = {c.vector_ops_per_cycle}",
              f"sram_mib = {c.sram_bytes / MIB!r}", f"sram_bytes_per_cycle = {c.sram_bytes_per_cycle}",
              f"mac_pj = {c.mac_pj!r}", f"vector_op_pj = {c.vector_op_pj!r}",
              f"sram_pj_per_byte = {c.sram_pj_per_byte!r}"]
    for st in hw.memory_stacks:
        lines += ["", "[[memory_stacks]]", f'name = "{st.name}"', f"attached = {list(st.attached)}",
                  f"capacity_gib = {st.capacity_bytes / (1 << 30)!r}", f"bytes_per_cycle = {st.bytes_per_cycle}",
                  f"pj_per_byte = {st.pj_per_byte!r}", f"latency_cycles = {st.latency_cycles}"]
    return "\n".join(lines) + "\n"


def design_from_params(params: dict) -> Design:
    return Design(**{f.name: params[f.name] for f in fields(Design) if f.name in params})   # studies before hbm_gib


def space_file_text(space: Space) -> str:
    """The space as a TOML file (written next to the results so a run can be repeated)."""
    def value(v):
        return f'"{v}"' if isinstance(v, str) else repr(v)
    return "".join(f"{k} = [{', '.join(value(v) for v in vs)}]\n" for k, vs in space.axes().items())


def save_space(path: Path, space: Space) -> None:
    from partitioner.core.files import write_text

    write_text(path, space_file_text(space))
