"""The element types a chiplet may run, and which one an error suggests instead.

frontend/op_cost.PRECISION_BYTES gives their sizes; Chiplet.macs_for their MAC rates. A chiplet without
`macs_by_precision` runs the legacy four at macs_per_cycle (every figure from before fp8 stays the same); fp8 runs
only where a chiplet lists it.
"""
from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "bf16", "fp8", "int8")
LEGACY_PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def suggested_precision(precisions: tuple[str, ...]) -> str:
    """The precision to suggest in an error's fix: bf16, else fp16, int8, fp8, fp32, whichever is run first."""
    return next(p for p in ("bf16", "fp16", "int8", "fp8", "fp32", *precisions) if p in precisions)
