"""Hardware TOML files and `--hardware` / `--chiplets` resolution: every key checked, one line per mistake.

The data types, presets and routing live in partitioner/hw/hardware.py; this module only reads and validates.
"""
from __future__ import annotations

import math
import tomllib
from dataclasses import fields, replace
from pathlib import Path

from partitioner.core.errors import UserError
from partitioner.hw.hardware import (
    HBM3_STACK, LINK_PJ_PER_BIT, MIB, PACKAGE_LINK, TOPOLOGIES, Chiplet, Hardware, MemoryStack, mesh_of, near_square)
from partitioner.hw.levels import PackageLevel
from partitioner.hw.order import NAMED, in_order
from partitioner.hw.precision import PRECISIONS
from partitioner.hw.presets import PRESETS

_CHIPLET_KEYS = {f.name for f in fields(Chiplet)} - {"sram_bytes"} | {"sram_mib"}
_PACKAGE_KEYS = {"name", "clock_ghz", "topology", "rows", "cols", "link_bytes_per_cycle", "hop_latency_cycles",
                 "link_pj_per_bit", "chiplets", "chiplet", "overrides", "memory_stacks", "level", "pipeline_order"}
_LEVEL_KEYS = {"count", "topology", "rows", "cols", "link_bytes_per_cycle", "hop_latency_cycles", "link_pj_per_bit",
               "link_name"}
_STACK_KEYS = {"name", "capacity_gib", "bytes_per_cycle", "pj_per_byte", "latency_cycles", "attached", "efficiency"}
_MAX_INT = 1 << 40  # keeps every product of sizes and rates inside int64
_INT_KEYS = {"count", "array_rows", "array_cols", "macs_per_cycle", "vector_ops_per_cycle", "sram_bytes_per_cycle", "rows",
             "cols", "chiplets", "link_bytes_per_cycle", "hop_latency_cycles", "cores"}


def _bad(path: str, key: str, why: str) -> UserError:
    return UserError(f"hardware file {path}: key '{key}' {why}",
                     "see docs/hardware.md for the keys, their types and units")


def _check_value(path: str, key: str, value: object) -> None:
    if key == "pipeline_order":
        if value not in NAMED:
            raise _bad(path, key, f"must be one of {', '.join(NAMED)}, got {value!r}")
    elif key in ("kind", "name", "topology", "dataflow", "link_name"):
        if not isinstance(value, str):
            raise _bad(path, key, f"must be a string, got {value!r}")
    elif key == "unsupported_ops":
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise _bad(path, key, "must be a list of op type strings")
    elif key == "macs_by_precision":
        if not isinstance(value, dict) or not value:
            raise _bad(path, key, "must be a table of precision = MACs per cycle, e.g. { bf16 = 4096, fp8 = 8192 }")
        for prec, rate in value.items():
            if prec not in PRECISIONS:
                raise _bad(path, key, f"names unknown precision '{prec}' (allowed: {', '.join(PRECISIONS)})")
            if type(rate) is not int or not 0 < rate <= _MAX_INT:
                raise _bad(path, key, f"gives {prec} = {rate!r}; MACs per cycle must be a positive integer")
    elif key == "ids":
        if not (isinstance(value, list) and all(type(v) is int for v in value)):
            raise _bad(path, key, "must be a list of chiplet ids")
    elif key in _INT_KEYS:
        if type(value) is not int:
            raise _bad(path, key, f"must be an integer, got {value!r}")
        if value < 0 and key == "hop_latency_cycles":
            raise _bad(path, key, f"must be 0 or more, got {value}")
        if value <= 0 and key != "hop_latency_cycles":
            raise _bad(path, key, f"must be positive, got {value}")
        if value > _MAX_INT:
            raise _bad(path, key, f"is implausibly large ({value} > {_MAX_INT})")
    else:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise _bad(path, key, f"must be a finite number, got {value!r}")
        if value < 0 or (key in ("sram_mib", "clock_ghz") and value == 0):
            raise _bad(path, key, f"must be positive, got {value}")
        if value > _MAX_INT:
            raise _bad(path, key, f"is implausibly large ({value} > {_MAX_INT})")


def _chiplet_from(table: dict, base: Chiplet, path: str, allowed: set[str]) -> Chiplet:
    for key, value in table.items():
        if key not in allowed:
            raise _bad(path, key, f"is unknown (allowed: {', '.join(sorted(allowed))})")
        _check_value(path, key, value)
    kwargs = {k: v for k, v in table.items() if k in _CHIPLET_KEYS and k != "sram_mib"}
    if "sram_mib" in table:
        kwargs["sram_bytes"] = int(table["sram_mib"] * MIB)
        if kwargs["sram_bytes"] < 1:
            raise _bad(path, "sram_mib", f"gives less than one byte ({table['sram_mib']!r} MiB)")
    if "unsupported_ops" in kwargs:
        kwargs["unsupported_ops"] = tuple(kwargs["unsupported_ops"])
    if "macs_by_precision" in kwargs:   # canonical order, so equal tables give equal (hashable) chiplets
        rates = kwargs["macs_by_precision"]
        kwargs["macs_by_precision"] = tuple((p, rates[p]) for p in PRECISIONS if p in rates)
    try:
        return replace(base, **kwargs)
    except ValueError as exc:
        raise UserError(f"hardware file {path}: {exc}", "see docs/hardware.md")


def hardware_from_toml(path: str | Path) -> Hardware:
    """Read a package description; see docs/hardware.md. Every bad key or value is a UserError naming it."""
    path = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(f"hardware file {path} does not exist", "pass a preset name or an existing .toml file")
    except OSError as exc:
        raise UserError(f"hardware file {path} cannot be read ({exc.strerror})", "pass a readable .toml file")
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"hardware file {path} is not valid TOML ({exc})", "fix the TOML syntax")
    for key, value in data.items():
        if key not in _PACKAGE_KEYS:
            raise _bad(path, key, f"is unknown (allowed: {', '.join(sorted(_PACKAGE_KEYS))})")
        if key not in ("chiplet", "overrides", "memory_stacks", "level"):
            _check_value(path, key, value)
    levels: tuple[PackageLevel, ...] = ()
    if "level" in data:
        data, levels = _levels_from(data, path)
    topology = data.get("topology", "mesh")
    if topology not in TOPOLOGIES:
        raise _bad(path, "topology", f"must be one of {', '.join(TOPOLOGIES)}, got {topology!r}")
    if "chiplets" in data:
        n = data["chiplets"]
        rows, cols = (data.get("rows"), data.get("cols"))
        if topology in ("mesh", "torus") and (rows is None or cols is None):
            rows, cols = near_square(n)
    elif "rows" in data and "cols" in data:
        rows, cols, n = data["rows"], data["cols"], data["rows"] * data["cols"]
    else:
        raise _bad(path, "chiplets", "is missing (give chiplets = N, or rows and cols for a grid)")
    if topology in ("mesh", "torus") and rows * cols != n:
        raise _bad(path, "rows", f"x cols = {rows * cols} does not match chiplets = {n}")
    per_package = n
    for level in levels:   # n above counts one package's chiplets; ids run over all packages
        n *= level.count
    base_table = data.get("chiplet", {})
    if not isinstance(base_table, dict):
        raise _bad(path, "chiplet", "must be a table ([chiplet])")
    base = _chiplet_from(base_table, Chiplet(), path, _CHIPLET_KEYS)
    chiplets = [base] * n
    overrides = data.get("overrides", [])
    if not isinstance(overrides, list):
        raise _bad(path, "overrides", "must be an array of tables ([[overrides]])")
    for table in overrides:
        if not isinstance(table, dict) or "ids" not in table:
            raise _bad(path, "overrides", "entries need ids = [chiplet ids]")
        special = _chiplet_from(table, base, path, _CHIPLET_KEYS | {"ids"})
        for i in table["ids"]:
            if not 0 <= i < n:
                raise _bad(path, "ids", f"names chiplet {i}, outside 0..{n - 1}")
            chiplets[i] = special
    stacks = _stacks_from(data.get("memory_stacks", []), n, path)
    order = data.get("pipeline_order", "auto")
    if order not in ("auto", "rows") and (topology not in ("mesh", "torus") or levels):
        raise _bad(path, "pipeline_order", f"= {order!r} needs one flat mesh or torus (this is {topology}"
                   f"{' on a board' if levels else ''}); use auto or rows")
    try:
        return in_order(Hardware(data.get("name", Path(path).stem), tuple(chiplets), topology,
                        rows if topology in ("mesh", "torus") else 1,
                        cols if topology in ("mesh", "torus") else per_package,
                        clock_hz=float(data.get("clock_ghz", 1.0)) * 1e9,
                        link_bytes_per_cycle=data.get("link_bytes_per_cycle", 64),
                        hop_latency_cycles=data.get("hop_latency_cycles", 20),
                        link_pj_per_bit=float(data.get("link_pj_per_bit", LINK_PJ_PER_BIT)), memory_stacks=stacks,
                        package_level=levels[0] if levels else None, upper_levels=levels[1:]), order)
    except ValueError as exc:
        raise UserError(f"hardware file {path}: {exc}", "see docs/hardware.md")


def _levels_from(data: dict, path: str) -> tuple[dict, tuple[PackageLevel, ...]]:
    """[[level]] tables, outermost first: (data with the innermost level's keys moved to the top level, as a flat
    file spells them, with `count` as `chiplets`; the levels above it, innermost first: the board of packages, then
    nodes of boards, ...; empty for a single level)."""
    tables = data["level"]
    if not (isinstance(tables, list) and tables and all(isinstance(t, dict) for t in tables)):
        raise _bad(path, "level", "must be an array of tables ([[level]]), outermost level first")
    flat = sorted(k for k in _LEVEL_KEYS | {"chiplets"} if k in data)
    if flat:
        raise UserError(f"hardware file {path}: key '{flat[0]}' is given at the top level beside [[level]] tables",
                        f"with levels, move '{flat[0]}' into the innermost [[level]] (use 'count' for 'chiplets')")
    for k, table in enumerate(tables):
        for key, value in table.items():
            if key not in _LEVEL_KEYS:
                raise _bad(path, key, f"is unknown in [[level]] {k + 1} (allowed: {', '.join(sorted(_LEVEL_KEYS))})")
            if key == "count" and type(value) is int and value < 1:
                raise UserError(f"hardware file {path}: key 'count' in [[level]] {k + 1} must be positive, got {value}",
                                "give every [[level]] count = 1 or more (packages on the board, chiplets in a package)")
            _check_value(path, key, value)
        topology = table.get("topology", "mesh" if k == len(tables) - 1 else "chain")
        if topology not in TOPOLOGIES:
            raise _bad(path, "topology", f"in [[level]] {k + 1} must be one of {', '.join(TOPOLOGIES)}, "
                                         f"got {topology!r}")
        if "count" not in table and not ("rows" in table and "cols" in table):
            raise UserError(f"hardware file {path}: [[level]] {k + 1} has no 'count'",
                            "give count = N (or rows and cols for a grid) in every [[level]]")
        if topology in ("mesh", "torus") and "rows" in table and "cols" in table and "count" in table \
                and table["rows"] * table["cols"] != table["count"]:
            raise _bad(path, "rows", f"x cols = {table['rows'] * table['cols']} in [[level]] {k + 1} does not "
                                     f"match its count = {table['count']}")
    inner = dict(tables[-1])
    if "count" in inner:
        inner["chiplets"] = inner.pop("count")
    data = {**{key: v for key, v in data.items() if key != "level"}, **inner}
    return data, tuple(_level_of(outer) for outer in reversed(tables[:-1]))


def _level_of(outer: dict) -> PackageLevel:
    """One checked [[level]] table above the chiplets; unset links take PACKAGE_LINK's class."""
    topology = outer.get("topology", "chain")
    count = outer.get("count", outer.get("rows", 1) * outer.get("cols", 1))
    rows, cols = (outer.get("rows"), outer.get("cols"))
    if topology in ("mesh", "torus") and (rows is None or cols is None):
        rows, cols = near_square(count)
    if topology not in ("mesh", "torus"):
        rows, cols = 1, count
    return PackageLevel(count, topology, rows, cols,
                        link_bytes_per_cycle=outer.get("link_bytes_per_cycle", PACKAGE_LINK["bytes_per_cycle"]),
                        hop_latency_cycles=outer.get("hop_latency_cycles", PACKAGE_LINK["hop_latency_cycles"]),
                        link_pj_per_bit=float(outer.get("link_pj_per_bit", PACKAGE_LINK["pj_per_bit"])),
                        link_name=outer.get("link_name", ""))


def _stacks_from(tables: object, n: int, path: str) -> tuple[MemoryStack, ...]:
    """[[memory_stacks]] tables; unset keys take the HBM3 defaults (HBM3_STACK), `attached` is required."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _bad(path, "memory_stacks", "must be an array of tables ([[memory_stacks]])")
    out = []
    for k, table in enumerate(tables):
        for key, value in table.items():
            if key not in _STACK_KEYS:
                raise _bad(path, key, f"is unknown in [[memory_stacks]] (allowed: {', '.join(sorted(_STACK_KEYS))})")
        name = table.get("name", f"stack{k}")
        if not isinstance(name, str):
            raise _bad(path, "name", f"must be a string, got {name!r}")
        attached = table.get("attached")
        if not (isinstance(attached, list) and attached and all(type(v) is int for v in attached)):
            raise UserError(f"hardware file {path}: memory stack {name} is attached to no chiplet",
                            "give it attached = [chiplet ids], e.g. attached = [0]")
        bad = [v for v in attached if not 0 <= v < n]
        if bad:
            raise UserError(f"hardware file {path}: memory stack {name} is attached to chiplet {bad[0]}, outside "
                            f"0..{n - 1}", f"attach it to chiplet ids 0..{n - 1}")
        params = dict(HBM3_STACK)
        for key in ("capacity_gib", "bytes_per_cycle", "pj_per_byte", "latency_cycles", "efficiency"):
            if key not in table:
                continue
            value = table[key]
            if type(value) not in (int, float) or not math.isfinite(value):
                raise _bad(path, key, f"must be a finite number, got {value!r}")
            if key in ("bytes_per_cycle", "latency_cycles") and type(value) is not int:
                raise _bad(path, key, f"must be an integer, got {value!r}")
            if value <= 0 and key in ("capacity_gib", "bytes_per_cycle") or value < 0:
                raise UserError(f"hardware file {path}: memory stack {name} has {key} = {value}",
                                f"give {key} a positive value (HBM3: capacity_gib = 16, bytes_per_cycle = 819)")
            if value > _MAX_INT:
                raise _bad(path, key, f"is implausibly large ({value} > {_MAX_INT})")
            if key == "efficiency" and not 0 < value <= 1:
                raise UserError(f"hardware file {path}: memory stack {name} has efficiency = {value}",
                                "give efficiency in (0, 1]: the fraction of peak bandwidth a streaming read sustains")
            if key == "capacity_gib":
                params["capacity_bytes"] = int(value * (1 << 30))
            else:
                params[key] = value
        if params["capacity_bytes"] < 1:
            raise _bad(path, "capacity_gib", "gives less than one byte")
        out.append(MemoryStack(name, attached=tuple(attached), **params))
    return tuple(out)


def load_hardware(spec: str | None, chiplets: int | None = None, memory_tier: bool = True) -> Hardware:
    """Resolve `--hardware PRESET|FILE.toml` and `--chiplets N` into a Hardware.

    No spec: a near-square mesh of N default chiplets with the default HBM tier. A preset or file with
    `--chiplets` that disagrees with its chiplet count is an error rather than a silent resize. memory_tier=False
    (`--no-memory-tier`) drops any memory stacks: every weight must then fit in SRAM.
    """
    if not memory_tier:
        return load_hardware(spec, chiplets).without_memory_tier()
    if spec is None:
        return mesh_of(16 if chiplets is None else chiplets, memory_tier=True)
    if spec in PRESETS:
        hw = PRESETS[spec]
    elif spec.endswith(".toml") or Path(spec).exists():
        hw = hardware_from_toml(spec)
    else:
        raise UserError(f"unknown hardware {spec!r}",
                        f"use a preset ({', '.join(PRESETS)}) or a path to a .toml file")
    if chiplets is not None and chiplets != hw.n_chiplets:
        if chiplets < 1:
            raise UserError(f"--chiplets must be at least 1, got {chiplets}", "pass a positive chiplet count")
        raise UserError(f"--chiplets {chiplets} disagrees with hardware {hw.name}, which has {hw.n_chiplets}",
                        "drop --chiplets or pass the matching count")
    return hw


def file_pipeline_order(spec: str | None) -> str:
    """The `pipeline_order` a hardware file gives ("auto" when it gives none, for presets and `--chiplets N`): with
    "auto" a run may take any path of hw/order.tied_orders; a named path is kept as given. Read after
    load_hardware, which has checked the file."""
    if spec is None or spec in PRESETS:
        return "auto"
    with open(spec, "rb") as fh:
        return tomllib.load(fh).get("pipeline_order", "auto")
