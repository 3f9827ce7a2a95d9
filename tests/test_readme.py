"""The README is the front door: every code block in it must work."""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
PYTHON_BLOCKS = [code for lang, code in BLOCKS if lang == "python"]
COMMANDS = [line.split("#")[0].strip() for lang, code in BLOCKS if lang == "bash" for line in code.splitlines()]
COMMANDS = [c for c in COMMANDS if c]


def test_python_blocks_run_in_order(tmp_path, monkeypatch):
    """Blocks run in one namespace, top to bottom, as a reader pasting them into a session would."""
    assert PYTHON_BLOCKS, "the README has no python examples"
    monkeypatch.chdir(tmp_path)  # anything a block writes lands in a temporary folder
    namespace = {"__name__": "__readme__"}
    for i, code in enumerate(PYTHON_BLOCKS):
        try:
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)
        except Exception as error:
            pytest.fail(f"README python block {i} failed: {error!r}\n{code}")


def test_ci_runs_exactly_the_readme_test_command():
    test_commands = [c for c in COMMANDS if "pytest" in c]
    assert len(test_commands) == 1, test_commands
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_commands[0] in ci_lines


def test_bash_blocks_name_files_and_modules_that_exist():
    """Commands are not run here (installs, minutes-long jobs); what they point at must exist."""
    for command in COMMANDS:
        for part in command.split("&&"):
            words = shlex.split(part)
            if words[:2] == ["python", "-m"] and words[2].startswith("benchmarks."):
                assert (ROOT / (words[2].replace(".", "/") + ".py")).exists(), command
            elif words and words[0] == "python" and words[1].endswith(".py"):
                assert (ROOT / words[1]).exists(), command


def test_cli_commands_in_the_readme_parse():
    """Every `axial-attention ...` line (and the main job's, which is `axial-attention train`) names real
    sub-commands and flags: the parser accepts it as written."""
    from axial_attention.training.cli import build_parser

    parser = build_parser()
    checked = 0
    for command in COMMANDS:
        words = shlex.split(command)
        if "axial_attention" in words:  # python -m axial_attention ..., torchrun ... -m axial_attention ...
            args = words[words.index("axial_attention") + 1 :]
        elif words[0] == "axial-attention":
            args = words[1:]
        elif words[:2] == ["python", "examples/train_image_model.py"]:
            args = ["train", *words[2:]]
        else:
            continue
        parser.parse_args(args)  # exits (a failed test) on an unknown command or flag
        checked += 1
    assert checked >= 5
