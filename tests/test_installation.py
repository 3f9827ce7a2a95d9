"""The install clash with lucidrains' axial-attention (both ship the package axial_attention): the import
warns and prints the command that repairs it, and that command, run as printed, does."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from axial_attention.compat import installation

ROOT = Path(__file__).resolve().parent.parent
IMPORT_CHECK = ("import warnings, axial_attention\n"
                "print(axial_attention.__file__)\n")


def test_no_warning_without_axial_attention_installed():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        installation.check_installation()  # this environment has no axial-attention


def _run(command: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_USER")}
    return subprocess.run(command, cwd=cwd, env={**env, "PYTHONWARNINGS": "always"}, capture_output=True, text=True,
                          timeout=timeout)


def _pip_or_skip(python: str, *args: str, cwd: Path) -> None:
    done = _run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *args], cwd)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        if "axial-attention" in " ".join(args):  # the one install that needs the package index
            pytest.skip(f"pip could not install axial-attention==0.6.1: {reason}")
        raise AssertionError(done.stderr)


@pytest.mark.slow
def test_installing_axial_attention_over_this_package_warns_and_the_printed_fix_repairs_it(tmp_path):
    # Our wheel, built from a copy of the source (no build outputs in the checkout).
    source = tmp_path / "source"
    shutil.copytree(ROOT / "axial_attention", source / "axial_attention",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    # The environment's setuptools (>= 70.1 builds wheels itself): no build environment to download.
    built = _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
                  "--outdir", str(tmp_path / "dist"), str(source)], tmp_path)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("torch_axial_attention-*.whl")

    # A throwaway environment that sees this one's torch through a path file: torch may live in a venv
    # (a newcomer's) or system-wide, and a path file (unlike --system-site-packages) finds it in either. Only
    # the directory is added, not its .pth files, so this environment's own install of the package stays out.
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path).stdout.strip()
    (Path(site) / "outer_torch.pth").write_text(str(Path(torch.__file__).resolve().parent.parent) + "\n")
    _pip_or_skip(python, "--no-deps", str(wheel), cwd=tmp_path)
    _pip_or_skip(python, "--no-deps", "axial-attention==0.6.1", cwd=tmp_path)  # over it, as requirements files do

    clashed = _run([python, "-c", IMPORT_CHECK], tmp_path)
    message = clashed.stderr
    assert "InstallationClashWarning" in message, message
    assert "axial-attention 0.6.1 (lucidrains' package) is installed beside torch-axial-attention" in message
    assert "Its files replaced this package's __init__.py, so" in message, message
    fix = re.search(r"To repair, run:\n {4}(.+)\n", message).group(1)
    assert "uninstall -y axial-attention" in fix and "--force-reinstall --no-deps" in fix

    repaired = subprocess.run(fix, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert repaired.returncode == 0, repaired.stderr
    works = _run([python, "-W", "error", "-c", IMPORT_CHECK + (
        "import torch\n"
        "from axial_attention import AutoregressiveAxialTransformer, SelfAttention, __version__\n"
        "from axial_attention.reversible import ReversibleBlock\n"
        "m = AutoregressiveAxialTransformer((1, 4, 4), 4, dim=8, heads=2, depth=1)\n"
        "print(m.log_prob(torch.zeros(1, 1, 4, 4, dtype=torch.long)).shape, __version__)\n"
    )], tmp_path)
    assert works.returncode == 0, works.stderr
    assert Path(works.stdout.splitlines()[0]).is_relative_to(tmp_path / "venv"), works.stdout
    assert "torch.Size([1])" in works.stdout
