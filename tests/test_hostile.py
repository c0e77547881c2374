"""A representative subset of benchmarks/hostile_inputs.py, each case a real `partition` subprocess: exit 2 with one
line naming the problem and the fix, no traceback, nothing created in --out."""
import pytest

from benchmarks.hostile_inputs import CASES, make_fixtures, run_case

SUBSET = ("seed 2**32", "input declared [0,64]", "simulate chiplet 2**70")
"""An option, a model file and a partition file; three subprocesses keep this under ~30 s on a busy machine (the
in-process tests of test_reliability.py and test_fuzz.py cover the rest)."""


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    make_fixtures(tmp, slow=False)
    return tmp


@pytest.mark.parametrize("name", SUBSET)
def test_hostile_input_gets_one_line_and_exit_2(fixtures, name):
    case = next(c for c in CASES if c.name == name)
    outcome = run_case(case, fixtures, timeout=120)
    assert outcome.code == 2 and not outcome.traceback, outcome
    assert outcome.first_line.startswith("error: ") and ". Fix: " in outcome.first_line
    assert not list(fixtures.glob("out-*")) and not list(fixtures.glob(".out-*"))
