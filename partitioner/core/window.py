"""Which slice of its inputs a piece of a split op holds: the one rule for the memory model, the cost model and the
executable split (docs/simulator.md S11).

A sliding-window op (Conv, MaxPool, AveragePool) cut along its output rows (the first spatial axis, NCHW axis 2)
reads, for output rows [h0, h1), the input rows [h0 x stride - pad, (h1 - 1) x stride - pad + extent), clipped to
the image, where extent = (kernel - 1) x dilation + 1: its own rows plus a halo of extent - stride rows (kernel - 1
at stride 1). What falls outside the image is the piece's own padding. An element-wise op cut k ways reads 1/k of
each input. Pieces take `bounds(rows, k)`: sizes differing by at most one, the largest ceil(rows / k).
"""
from __future__ import annotations

from dataclasses import dataclass

ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Relu", "LeakyRelu", "PRelu", "Erf", "Sigmoid", "Tanh", "Gelu", "Cast",
    "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Where", "Identity", "Dropout", "Clip", "Softplus", "Elu",
    "Selu", "HardSigmoid", "HardSwish", "Equal", "Less", "Greater", "And", "Or", "Not", "Max", "Min", "Sin", "Cos",
    "Floor", "Ceil", "Round", "Sign", "Mish"})
"""ONNX op types that compute each output element from the same element of their inputs (broadcast aside)."""
POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"})
WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})
"""Op types whose rows geometry the importer records (Op.window)."""


def bounds(dim: int, k: int) -> tuple[tuple[int, int], ...]:
    """Piece j of a k-way split of `dim` rows: [dim*j//k, dim*(j+1)//k), sizes differing by at most one."""
    return tuple((dim * j // k, dim * (j + 1) // k) for j in range(k))


def same_pads(in_size: int, out_size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX's auto_pad SAME_UPPER / SAME_LOWER rule along one axis: (pad before, pad after)."""
    total = max(0, (out_size - 1) * stride + (kernel - 1) * dilation + 1 - in_size)
    first = total // 2 if upper else total - total // 2
    return first, total - first


@dataclass(frozen=True)
class Window:
    """The rows geometry of a sliding-window op along its input's first spatial axis.

    in_rows / out_rows: the input's and the output's extent along that axis.
    extent: input rows one output row reads, (kernel - 1) x dilation + 1.
    stride: input rows between two output rows.
    pad: padding rows before the first input row (the model's top padding).
    """

    in_rows: int
    out_rows: int
    extent: int
    stride: int = 1
    pad: int = 0

    def __post_init__(self) -> None:
        if min(self.in_rows, self.out_rows, self.extent, self.stride) < 1 or self.pad < 0:
            raise ValueError("window: rows, extent and stride must be >= 1 and pad >= 0")

    def reads(self, h0: int, h1: int) -> tuple[int, int]:
        """Input rows [lo, hi) that output rows [h0, h1) read, before clipping to the image (lo < 0 and hi >
        in_rows are the piece's own padding)."""
        lo = h0 * self.stride - self.pad
        return lo, (h1 - 1) * self.stride - self.pad + self.extent

    def held(self, h0: int, h1: int) -> int:
        """Input rows a piece writing output rows [h0, h1) holds: what it reads, clipped to the image."""
        if h1 <= h0:
            return 0
        lo, hi = self.reads(h0, h1)
        return max(0, min(hi, self.in_rows) - max(lo, 0))

    def piece_rows(self, k: int) -> int:
        """Input rows the largest of k pieces holds (pieces take bounds(out_rows, k))."""
        return max(self.held(h0, h1) for h0, h1 in bounds(self.out_rows, k))

    def halo(self, nbytes: int, k: int) -> tuple[tuple[int, int, int], ...]:
        """(i, j, bytes): what piece j of k of this op reads from piece i of k of the producer of its input of
        `nbytes` (which holds input rows bounds(in_rows, k)[i]): the rows they share, rounded up. i == j is the
        piece's own rows; the others are its halo."""
        out = []
        for j, (h0, h1) in enumerate(bounds(self.out_rows, k)):
            if h1 <= h0:
                continue
            lo, hi = self.reads(h0, h1)
            for i, (r0, r1) in enumerate(bounds(self.in_rows, k)):
                rows = min(hi, r1) - max(lo, r0)
                if rows > 0:
                    out.append((i, j, -(-int(nbytes) * rows // self.in_rows)))
        return tuple(out)

    def piece_in_bytes(self, in_bytes: int, k: int) -> int:
        """Bytes of an input of `in_bytes` that the largest of k pieces holds: its rows plus halo, rounded up."""
        return -(-int(in_bytes) * self.piece_rows(k) // self.in_rows)


def sliced_in_bytes(op_type: str, window: Window | None, in_bytes: int, k: int) -> int | None:
    """Activation bytes one of k row pieces of an op holds (module docstring): its rows plus halo for a windowed op,
    1/k for an element-wise op or a global pool (cut along channels), None when a piece reads its full inputs."""
    if k <= 1:
        return int(in_bytes)
    if window is not None:
        return window.piece_in_bytes(in_bytes, k)
    if op_type in ELEMENTWISE or op_type in ("GlobalAveragePool", "GlobalMaxPool"):
        return -(-int(in_bytes) // k)
    return None
