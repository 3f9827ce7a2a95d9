"""The README and the docs pages are the front door: every code block in them must work.

```python blocks run (each page's in order, in one namespace, in a temporary folder); ```bash lines
are checked without being run (installs, minutes-long jobs): the files and modules they name exist and
the command line parses every `axial-attention` command. ```text blocks are not run.
"""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", flags=re.S | re.M)


def blocks(page: Path) -> list[tuple[str, str]]:
    return FENCE.findall(page.read_text(encoding="utf-8"))


def commands(page: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for lang, code in blocks(page) if lang == "bash" for line in code.splitlines()]
    return [line for line in lines if line]


ALL_COMMANDS = [(page.relative_to(ROOT).as_posix(), c) for page in PAGES for c in commands(page)]


def test_every_code_block_says_its_language():
    """A block without a language would be neither run nor checked."""
    for page in PAGES:
        for lang, code in blocks(page):
            assert lang in ("python", "bash", "text"), f"{page.name}: a ```{lang} block:\n{code}"


@pytest.mark.parametrize("page", [p for p in PAGES if any(lang == "python" for lang, _ in blocks(p))],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run_in_order(page, tmp_path, monkeypatch):
    """Blocks run in one namespace, top to bottom, as a reader pasting them into a session would."""
    monkeypatch.chdir(tmp_path)  # anything a block writes lands in a temporary folder
    namespace = {"__name__": "__docs__"}
    for i, (lang, code) in enumerate(blocks(page)):
        if lang != "python":
            continue
        try:
            exec(compile(code, f"{page.name} python block {i}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"{page.name} python block {i} failed: {error!r}\n{code}")


def test_the_readme_and_every_topic_page_have_python_examples():
    pages = [ROOT / "README.md", *(ROOT / "docs" / f"{name}.md" for name in
             ("index", "attention", "positional", "image-transformer", "autoregressive", "video", "deeplab",
              "migrating"))]
    assert [p.name for p in pages if not any(lang == "python" for lang, _ in blocks(p))] == []


def test_ci_runs_exactly_the_readme_test_command():
    test_commands = [c for c in commands(ROOT / "README.md") if "pytest" in c]
    assert len(test_commands) == 1, test_commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def test_bash_blocks_name_files_and_modules_that_exist():
    checked = 0
    for page, command in ALL_COMMANDS:
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["python", "-m"] and words[2].startswith("benchmarks."):
                assert (ROOT / (words[2].replace(".", "/") + ".py")).exists(), (page, command)
                checked += 1
            elif words and words[0] == "python" and words[1].endswith(".py"):
                assert (ROOT / words[1]).exists(), (page, command)
                checked += 1
    assert checked >= 5


def test_cli_commands_in_the_docs_parse():
    """Every `axial-attention ...` line (and the main job's, which is `axial-attention train`) names real
    sub-commands and flags: the parser accepts it as written."""
    from axial_attention.training.cli import build_parser

    parser = build_parser()
    checked = 0
    for page, command in ALL_COMMANDS:
        words = shlex.split(command)
        if "axial_attention" in words:  # python -m axial_attention ..., torchrun ... -m axial_attention ...
            args = words[words.index("axial_attention") + 1 :]
        elif words[0] == "axial-attention":
            args = words[1:]
        elif words[:2] == ["python", "examples/train_image_model.py"]:
            args = ["train", *words[2:]]
        else:
            continue
        try:
            parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{page}: the command line refuses {command!r}")
        checked += 1
    assert checked >= 10
