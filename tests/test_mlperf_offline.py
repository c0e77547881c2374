"""benchmarks/mlperf_offline.py: the Offline arithmetic by hand, and `--batch auto` against the app's own fit check
on the tiny Llama export."""
from pathlib import Path

import pytest

from benchmarks.llm_runs import RunFigures, run_partition
from benchmarks.mlperf_offline import Offline, fits, fitting_batch
from partitioner.core.errors import DoesNotFit

LLAMA = Path(__file__).parent / "data" / "llama_tiny_legacy.onnx"


def _figures(per_s: float, tokens: int, read: float = 0.0, stream: float = 1.0) -> RunFigures:
    return RunFigures("cmd", per_s, 1 / per_s, tokens, read, 0.0, stream, "x", 1, 0.0)


def test_offline_tokens_per_s_by_hand():
    # a 512-token prompt in 8 chunks of 64 at 160 chunks/s: 50 ms; a step of 100 sequences 10 times a second: 1,000
    # tokens/s. 300 output tokens: 0.05 s + 300 / 1000 s = 0.35 s a sample, 300 / 0.35 = 857.14 tokens/s
    r = Offline(512, 300.0, 662, 100, 64, _figures(160.0, 64), _figures(10.0, 100, read=2e9, stream=4e12))
    assert r.chunks == 8
    assert r.prefill_s == pytest.approx(0.05)
    assert r.decode_s == pytest.approx(0.3)
    assert r.tokens_per_s == pytest.approx(300 / 0.35)
    # roofline: 2 GB a step at 4 TB/s is 0.5 ms, 100 tokens a step: 200,000 tokens/s
    assert r.roofline_tokens_per_s == pytest.approx(200_000)


def test_auto_batch_is_the_largest_the_app_places(tmp_path):
    """One default chiplet with 1 MiB of SRAM and a 2 MiB stack: the batch fitting_batch picks places, and one of
    twice that size does not (the app's own capacity check, solver/infeasibility.py)."""
    hw = tmp_path / "small.toml"
    hw.write_text('chiplets = 1\n[chiplet]\nsram_mib = 1\n[[memory_stacks]]\nname = "m"\nattached = [0]\n'
                  'capacity_gib = 0.001953125\n')
    b = fitting_batch(LLAMA, str(hw), "fp16", context=1000)
    assert 1 < b < 1024
    assert run_partition(LLAMA, str(hw), "fp16", phase="decode", context=1000, batch=b, budget=4).tokens_per_s > 0
    with pytest.raises(DoesNotFit):
        run_partition(LLAMA, str(hw), "fp16", phase="decode", context=1000, batch=2 * b, budget=4)


def test_prompt_chunk_is_the_largest_the_app_places(tmp_path):
    """With 32 KiB of SRAM the tiny Llama's whole 64-token prompt does not fit; the chunk fits() picks does."""
    hw = tmp_path / "tiny.toml"
    hw.write_text('chiplets = 1\n[chiplet]\nsram_mib = 0.03125\n[[memory_stacks]]\nname = "m"\nattached = [0]\n')
    chunk = fits(LLAMA, str(hw), "fp16", context=64).chunk
    assert 1 < chunk < 64
    assert run_partition(LLAMA, str(hw), "fp16", phase="prefill", prompt=chunk, batch=2, budget=4).tokens_per_s > 0
    with pytest.raises(DoesNotFit):
        run_partition(LLAMA, str(hw), "fp16", phase="prefill", prompt=64, budget=4)
