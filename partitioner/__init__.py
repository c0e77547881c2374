"""chiplet-partitioner: map a neural network onto a multi-chip-module accelerator."""

__version__ = "0.1.0"
