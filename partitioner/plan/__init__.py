"""Constructive plans: contiguous splits of the topological order and the staged DP over chiplet groups."""
