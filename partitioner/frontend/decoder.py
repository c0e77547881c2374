"""Decoder phases: prefill (the whole prompt in one pass) and decode (one new token per sequence reading a KV
cache), and the checks on the options that ask for them.

A decode step is costed by partitioner/frontend/one_token.py from the graph as imported, whatever sequence length
it was exported at; whether a graph is a decoder at all is partitioner/frontend/causal.py's call, which
`decoder=True` (`--decoder`) overrides. docs/onnx_import.md has the rules and a worked example.
"""
from __future__ import annotations

import onnx

from partitioner.core.errors import UserError
from partitioner.frontend.causal import causal_evidence

PHASES = ("prefill", "decode")
ASSERTED = "asserted by --decoder"


def check_phase(graph: onnx.GraphProto, phase: str | None, context: int | None, path: str, *,
                decoder: bool = False, sequences: int = 1) -> str | None:
    """Bad phase settings are one-line UserErrors with the fix. Returns why the model counts as a decoder (None
    without a phase)."""
    if phase is not None and phase not in PHASES:
        raise UserError(f"unknown phase '{phase}'", f"use --phase {' or --phase '.join(PHASES)}")
    if context is not None and context < 0:
        raise UserError(f"--context must be >= 0 tokens, got {context}", "pass the KV-cache length, e.g. --context 1024")
    if phase == "prefill" and context:
        raise UserError("--context is for --phase decode (prefill has no cache yet)",
                        "drop --context, or pass --phase decode --context L")
    if decoder and phase is None:
        raise UserError("--decoder says the model is a decoder, which matters only for --phase prefill or decode",
                        "add --phase decode --context L (or --phase prefill), or drop --decoder")
    if type(sequences) is not int or sequences < 1:
        raise UserError(f"the sequences a decode step decodes must be a positive integer, got {sequences!r}",
                        "pass --batch 1 or more")
    if phase is None and context is None:
        return None
    if decoder:
        return ASSERTED
    evidence = causal_evidence(graph)
    if evidence is None:
        raise UserError(f"{path} looks encoder-only (no causal mask, KV cache or causal attention found), so it has "
                        "no prefill/decode phases", "drop --phase and --context for this model, or pass --decoder "
                        "if it is a decoder whose causal mask this importer does not recognise")
    return evidence
