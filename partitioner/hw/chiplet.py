"""One compute die (Chiplet) and one off-chip memory stack (MemoryStack): the parts a package is built of
(partitioner/hw/hardware.py wires them into a Hardware)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from partitioner.core.errors import UserError
from partitioner.hw.precision import LEGACY_PRECISIONS, PRECISIONS, suggested_precision

MIB = 1 << 20
DATAFLOWS = ("os", "ws", "is")


@dataclass(frozen=True)
class Chiplet:
    """One compute die. Rates are per cycle of the package clock; energies in picojoules. The defaults are the
    default chiplet (docs/hardware.md, "Presets"): a 64x64 fp16 array, 64 MiB of SRAM, 16 nm-class energies."""

    kind: str = "default"
    macs_per_cycle: int = 4096
    vector_ops_per_cycle: int = 512
    sram_bytes: int = 64 * MIB
    sram_bytes_per_cycle: int = 1024
    mac_pj: float = 0.5
    vector_op_pj: float = 0.2
    sram_pj_per_byte: float = 1.0
    unsupported_ops: tuple[str, ...] = ()
    array_rows: int | None = None
    """MAC array rows x cols (their product is macs_per_cycle); None: the most square factorisation (64 x 64)."""
    array_cols: int | None = None
    dataflow: str = "os"
    """What stays in the array while a GEMM fold runs: os (outputs), ws (weights), is (inputs); docs/simulator.md."""
    cores: int = 1
    """Independent MAC arrays (a GPU's SMs or CUs, Simba's PEs), each array_rows x array_cols; a GEMM's folds are
    dealt out to them (cost.gemm_cycles). cores x rows x cols = macs_per_cycle."""
    macs_by_precision: tuple[tuple[str, int], ...] = ()
    """(precision, MACs/cycle) pairs: the precisions the chiplet runs, each at its own rate. Empty: fp32, fp16, bf16
    and int8 at macs_per_cycle (and no fp8). `macs_for` reads it; docs/hardware.md."""

    def __post_init__(self) -> None:
        for name in ("macs_per_cycle", "vector_ops_per_cycle", "sram_bytes", "sram_bytes_per_cycle", "cores"):
            if getattr(self, name) <= 0:
                raise ValueError(f"chiplet {name} must be > 0")
        if self.macs_per_cycle % self.cores:
            raise ValueError(f"chiplet macs_per_cycle ({self.macs_per_cycle}) must split evenly over its "
                             f"{self.cores} cores")
        rows, cols = self.array_rows, self.array_cols
        if (rows is not None and rows < 1) or (cols is not None and cols < 1) or (
                self.array_shape[0] * self.array_shape[1] * self.cores != self.macs_per_cycle):
            raise ValueError(f"chiplet cores x array_rows x array_cols ({self.cores} x {rows} x {cols}) must "
                             f"multiply to macs_per_cycle ({self.macs_per_cycle})")
        for prec, rate in self.macs_by_precision:
            if prec not in PRECISIONS or type(rate) is not int or rate <= 0:
                raise ValueError(f"chiplet macs_by_precision: {prec!r} = {rate!r}; give one of "
                                 f"{', '.join(PRECISIONS)} a positive integer MACs/cycle")
        if len({p for p, _ in self.macs_by_precision}) != len(self.macs_by_precision):
            raise ValueError("chiplet macs_by_precision names a precision twice")
        if self.dataflow not in DATAFLOWS:
            raise ValueError(f"chiplet dataflow must be one of {', '.join(DATAFLOWS)}, got {self.dataflow!r}")
        for name in ("mac_pj", "vector_op_pj", "sram_pj_per_byte"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"chiplet {name} must be finite and >= 0")

    @property
    def array_shape(self) -> tuple[int, int]:
        """(rows, cols) of one core's MAC array: as given, the other side derived from macs_per_cycle / cores, or
        the most square factorisation when neither is given (4096 MACs on one core: 64 x 64)."""
        rows, cols, per_core = self.array_rows, self.array_cols, self.macs_per_cycle // self.cores
        if rows is None and cols is None:
            return near_square(per_core)
        if rows is None:
            return max(per_core // cols, 1), cols
        if cols is None:
            return rows, max(per_core // rows, 1)
        return rows, cols

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions this chiplet runs."""
        return tuple(p for p, _ in self.macs_by_precision) if self.macs_by_precision else LEGACY_PRECISIONS

    def macs_for(self, precision: str | None) -> int:
        """MACs per cycle at `precision` (None: macs_per_cycle, the array's own rate). The one rule every cost
        uses; a precision the chiplet does not run is a UserError (presets.require_precision says it first)."""
        if precision is None:
            return self.macs_per_cycle
        if not self.macs_by_precision and precision in LEGACY_PRECISIONS:
            return self.macs_per_cycle
        rate = dict(self.macs_by_precision).get(precision)
        if rate is None:
            raise UserError(f"chiplet {self.kind} cannot run {precision} (it runs {', '.join(self.precisions)})",
                            f"pass --precision {suggested_precision(self.precisions)}, or hardware whose chiplets "
                            f"run {precision}")
        return rate


@dataclass(frozen=True)
class MemoryStack:
    """An off-chip memory stack (HBM/DRAM) wired to one or more chiplets' routers (docs/hardware.md).

    capacity_bytes: what it stores. bytes_per_cycle: its peak read bandwidth. efficiency: the fraction of that peak a
    streaming read sustains (measured, e.g. a STREAM-like read kernel); reads are timed at `sustained_bytes_per_cycle`,
    shared by every read (one FIFO resource). pj_per_byte: access energy of a byte read. latency_cycles: from a read
    starting on the stack to its first byte at an attached chiplet's router. attached: chiplet ids whose routers the
    stack's PHY feeds; a read for chiplet c enters the network at the attached chiplet nearest to c.
    """

    name: str
    capacity_bytes: int
    bytes_per_cycle: int
    pj_per_byte: float
    latency_cycles: int
    attached: tuple[int, ...]
    efficiency: float = 1.0

    def __post_init__(self) -> None:
        if self.capacity_bytes <= 0 or self.bytes_per_cycle <= 0:
            raise ValueError(f"memory stack {self.name}: capacity and bandwidth must be > 0 "
                             f"(got {self.capacity_bytes} bytes, {self.bytes_per_cycle} bytes/cycle)")
        if not 0 < self.efficiency <= 1:
            raise ValueError(f"memory stack {self.name}: efficiency must be in (0, 1], got {self.efficiency}")
        if not (0 <= self.pj_per_byte < math.inf) or self.latency_cycles < 0:
            raise ValueError(f"memory stack {self.name}: energy and latency must be finite and >= 0")
        if not self.attached:
            raise ValueError(f"memory stack {self.name} is attached to no chiplet")

    @property
    def sustained_bytes_per_cycle(self) -> int:
        """What a streaming read gets: floor(bytes_per_cycle x efficiency), at least 1; bytes_per_cycle at 1.0."""
        return max(1, int(self.bytes_per_cycle * self.efficiency))


def near_square(n: int) -> tuple[int, int]:
    """rows x cols == n with rows the largest divisor of n not above sqrt(n)."""
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows
