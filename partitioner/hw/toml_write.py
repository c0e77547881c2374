"""Hardware -> the TOML text partitioner/hw/toml.py reads back to an equal Hardware: flat or two-level (packages on
a board), homogeneous or with other chiplet kinds as [[overrides]], with its memory stacks."""
from __future__ import annotations

from collections import Counter
from dataclasses import fields

from partitioner.hw.hardware import MIB, Chiplet, Hardware

_DEFAULT = Chiplet()


def _chiplet_lines(c: Chiplet) -> list[str]:
    """Every field a reader needs to rebuild c exactly: the rates, sizes and energies always, the rest when they
    differ from the default chiplet."""
    lines = [f'kind = "{c.kind}"', f"macs_per_cycle = {c.macs_per_cycle}",
             f"vector_ops_per_cycle = {c.vector_ops_per_cycle}", f"sram_mib = {c.sram_bytes / MIB!r}",
             f"sram_bytes_per_cycle = {c.sram_bytes_per_cycle}", f"mac_pj = {c.mac_pj!r}",
             f"vector_op_pj = {c.vector_op_pj!r}", f"sram_pj_per_byte = {c.sram_pj_per_byte!r}"]
    done = {"kind", "macs_per_cycle", "vector_ops_per_cycle", "sram_bytes", "sram_bytes_per_cycle", "mac_pj",
            "vector_op_pj", "sram_pj_per_byte"}
    for f in fields(Chiplet):
        value = getattr(c, f.name)
        if f.name in done or value == getattr(_DEFAULT, f.name):
            continue
        if f.name == "macs_by_precision":
            lines.append("macs_by_precision = { " + ", ".join(f"{p} = {r}" for p, r in value) + " }")
        elif f.name == "unsupported_ops":
            lines.append("unsupported_ops = [" + ", ".join(f'"{o}"' for o in value) + "]")
        elif isinstance(value, str):
            lines.append(f'{f.name} = "{value}"')
        else:
            lines.append(f"{f.name} = {value!r}")
    return lines


def _grid(topology: str, rows: int, cols: int) -> list[str]:
    return [f"rows = {rows}", f"cols = {cols}"] if topology in ("mesh", "torus") else []


def hardware_toml(hw: Hardware, header: str = "") -> str:
    """A TOML file hardware_from_toml reads back to an equal Hardware. The most common chiplet is the [chiplet]
    table; every other kind is an [[overrides]] table with its chiplet ids."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f'name = "{hw.name}"', f"clock_ghz = {hw.clock_hz / 1e9!r}"]
    links = [f"link_bytes_per_cycle = {hw.link_bytes_per_cycle}", f"hop_latency_cycles = {hw.hop_latency_cycles}",
             f"link_pj_per_bit = {hw.link_pj_per_bit!r}"]
    pl = hw.package_level
    if pl is None:
        lines += [f'topology = "{hw.topology}"', f"chiplets = {hw.n_chiplets}",
                  *_grid(hw.topology, hw.rows, hw.cols), *links]
    else:
        lines += ["", "[[level]]", f"count = {pl.count}", f'topology = "{pl.topology}"',
                  *_grid(pl.topology, pl.rows, pl.cols), f"link_bytes_per_cycle = {pl.link_bytes_per_cycle}",
                  f"hop_latency_cycles = {pl.hop_latency_cycles}", f"link_pj_per_bit = {pl.link_pj_per_bit!r}",
                  "", "[[level]]", f"count = {hw.chiplets_per_package}", f'topology = "{hw.topology}"',
                  *_grid(hw.topology, hw.rows, hw.cols), *links]
    kinds = Counter(hw.chiplets)
    base = max(kinds, key=lambda c: (kinds[c], -hw.chiplets.index(c)))
    lines += ["", "[chiplet]", *_chiplet_lines(base)]
    for chip in dict.fromkeys(hw.chiplets):
        if chip != base:
            ids = [i for i, c in enumerate(hw.chiplets) if c == chip]
            lines += ["", "[[overrides]]", f"ids = {ids}", *_chiplet_lines(chip)]
    for st in hw.memory_stacks:
        lines += ["", "[[memory_stacks]]", f'name = "{st.name}"', f"attached = {list(st.attached)}",
                  f"capacity_gib = {st.capacity_bytes / (1 << 30)!r}", f"bytes_per_cycle = {st.bytes_per_cycle}",
                  f"pj_per_byte = {st.pj_per_byte!r}", f"latency_cycles = {st.latency_cycles}"]
        if st.efficiency != 1.0:
            lines.append(f"efficiency = {st.efficiency!r}")
    return "\n".join(lines) + "\n"
