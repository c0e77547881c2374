"""The one SI formatter: every figure the tool prints with a unit prefix goes through it."""
from __future__ import annotations

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"),
             (1e-12, "p"))


def si(x: float, unit: str = "", digits: int = 3) -> str:
    """x with the largest prefix that keeps it >= 1, to `digits` significant digits: si(0.00131, "s") = "1.31 ms",
    si(22.42e9, "FLOP", 4) = "22.42 GFLOP"; 0 and values below a pico-unit keep the smallest prefix that applies."""
    if x == 0:
        return f"0 {unit}".rstrip()
    for scale, prefix in _PREFIXES:
        if float(f"{abs(x) / scale:.{digits}g}") >= 1:    # 999.7 rounds to 1.00 k, not 1e+03
            break
    return f"{x / scale:.{digits}g} {prefix}{unit}".rstrip()
