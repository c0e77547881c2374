"""benchmarks/results_md.update_section replaces exactly one section at its own heading level."""
from benchmarks.results_md import update_section


def test_a_subsection_is_replaced_up_to_the_next_heading_of_its_level(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# R\n\n## A\n\n### B\n\nold b\n\n#### B1\n\nx\n\n### C\n\nc\n\n## D\n\nd\n")
    update_section("B", "new b", path)
    assert path.read_text() == "# R\n\n## A\n\n### B\n\nnew b\n\n### C\n\nc\n\n## D\n\nd\n"


def test_a_new_title_is_appended_as_a_subsection(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# R\n\n## A\n\na\n")
    update_section("E", "e\n", path)
    assert path.read_text() == "# R\n\n## A\n\na\n\n### E\n\ne\n"
