"""The benchmark tables in the docs are what benchmarks/results/*.json says (benchmarks.report)."""
import json
import shutil
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent


def test_the_pages_match_the_results_files():
    assert report.stale_pages() == [], "run `python -m benchmarks.report` to regenerate the tables"


def test_every_results_file_has_a_table_on_some_page():
    text = "".join(page.read_text(encoding="utf-8") for page in report.pages(ROOT))
    for stem in report.load_results():
        assert f"<!-- table: {stem}/" in text, stem


@pytest.fixture
def copy(tmp_path):
    """A copy of the pages and results files, to break."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png"))
    shutil.copytree(ROOT / "benchmarks" / "results", tmp_path / "results")
    return tmp_path


def eval_cell(data: dict) -> str:
    """The deeplab forward table's eval time of ours, as the table prints it."""
    return f"| {data['forward']['results']['eval']['ours_s'] * 1e3:.1f} |"


def test_changing_one_number_in_a_results_file_makes_the_check_fail(copy):
    path = copy / "results" / "deeplab.json"
    data = json.loads(path.read_text())
    table, cell = data["forward"]["tables"][0], eval_cell(data)
    assert cell in table["markdown"]
    table["markdown"] = table["markdown"].replace(cell, "| 0.1 |")
    path.write_text(json.dumps(data))
    assert report.stale_pages(copy, copy / "results") == [copy / "docs" / "deeplab.md"]
    report.stale_pages(copy, copy / "results", write=True)  # regenerating fixes it
    assert "| 0.1 |" in (copy / "docs" / "deeplab.md").read_text()
    assert report.stale_pages(copy, copy / "results") == []


def test_an_edited_table_is_stale_and_the_machine_heads_it(copy):
    page = copy / "docs" / "image-transformer.md"
    text = page.read_text()
    machine = json.loads((copy / "results" / "transformer.json").read_text())["training step"]["machine"]["description"]
    assert f"<!-- table: transformer/training step/0 -->\nMachine: **{machine}**" in text
    page.write_text(text.replace("| 12 | yes |", "| 12 | no |"))
    assert report.stale_pages(copy, copy / "results") == [page]


def test_a_marker_shown_in_a_code_block_is_left_alone():
    text = "```text\n<!-- table: nothing/here/0 -->\n<!-- /table -->\n```\n"
    assert report.rewrite(text, {}) == text


@pytest.mark.parametrize("key, expected", [
    ("nothing/part/0", "results files"),
    ("deeplab/nothing/0", "a part of deeplab.json"),
    ("deeplab/forward/9", "an index below 1"),
    ("deeplab-forward", "<results file>/<part>/<index>"),
])
def test_a_bad_marker_is_a_clear_error(key, expected):
    with pytest.raises(ValueError, match=expected):
        report.rewrite(f"<!-- table: {key} -->\n<!-- /table -->\n", report.load_results())


def test_an_unclosed_marker_is_a_clear_error():
    with pytest.raises(ValueError, match="closed by"):
        report.rewrite("<!-- table: deeplab/forward/0 -->\n", report.load_results())


def test_the_check_command_exits_1_on_a_stale_page(copy, monkeypatch, capsys):
    monkeypatch.setattr(report, "ROOT", copy)
    monkeypatch.setattr(report, "RESULTS_DIR", copy / "results")
    assert report.main(["--check"]) == 0
    page = copy / "docs" / "deeplab.md"
    cell = eval_cell(json.loads((copy / "results" / "deeplab.json").read_text()))
    assert cell in page.read_text()
    page.write_text(page.read_text().replace(cell, "| 0.1 |"))
    assert report.main(["--check"]) == 1
    assert "docs/deeplab.md: out of date" in capsys.readouterr().out
