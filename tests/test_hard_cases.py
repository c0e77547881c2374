"""benchmarks/hard_cases.py: the suite's cases load, and its best-so-far reading is right on known steps."""
from pathlib import Path

from benchmarks.hard_cases import CASES, at, reach
from partitioner.hw.toml import load_hardware

ROOT = Path(__file__).resolve().parent.parent


def test_cases_name_existing_models_and_packages_and_a_source():
    assert len({c.name for c in CASES}) == len(CASES)
    for c in CASES:
        assert (ROOT / "examples" / f"{c.model}.onnx").exists()
        assert c.source
        hw = load_hardware(str(ROOT / c.hardware))
        assert hw.n_chiplets in (32, 64, 144)


def test_new_packages_have_the_counts_and_kinds_their_comments_give():
    hw = load_hardware(str(ROOT / "benchmarks/hardware/hetero-144.toml"))
    kinds = [ch.kind for ch in hw.chiplets]
    assert (hw.n_chiplets, len(hw.memory_stacks)) == (144, 6)
    assert (kinds.count("big"), kinds.count("mid"), kinds.count("small")) == (48, 48, 48)
    # the file interleaves the kinds along each row (by row-snake id: 0 1 2 -> big mid small, 12 13 14 -> row 1
    # from its east end); loading orders the pipeline kinds first (pipeline_order auto), each chiplet keeps its cell
    at = {cell: ch.kind for cell, ch in zip(hw.positions, hw.chiplets)}
    assert [at[(0, c)] for c in range(3)] == ["big", "mid", "small"]
    assert [at[(1, c)] for c in (11, 10, 9)] == ["small", "mid", "big"]
    assert kinds[:48] == ["big"] * 48 or kinds[:48] == ["mid"] * 48 or kinds[:48] == ["small"] * 48
    hw = load_hardware(str(ROOT / "benchmarks/hardware/two-package-2x32-mixed.toml"))
    kinds = [ch.kind for ch in hw.chiplets]
    assert kinds[:32] == ["default"] * 32 and kinds[32:] == ["small"] * 32
    slow = load_hardware(str(ROOT / "benchmarks/hardware/two-package-2x32-slow.toml"))
    assert slow.n_chiplets == 64 and min(slow.link_bw) == 4 and slow.fastest_link_bytes_per_cycle == 64


def test_best_so_far_reads_the_last_improving_step():
    run = {"steps": [[1, 10.0], [3, 12.0], [40, 15.0]]}
    assert [at(run, n) for n in (1, 2, 3, 39, 40, 1000)] == [10.0, 10.0, 12.0, 12.0, 15.0, 15.0]
    assert (reach(run, 12.0), reach(run, 14.0), reach(run, 16.0)) == (3, 40, None)
