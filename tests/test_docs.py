"""The docs site: the API reference covers the public names, and the nav holds every page."""
import re
from pathlib import Path

import axial_attention

ROOT = Path(__file__).resolve().parent.parent


def test_the_api_reference_lists_every_public_name():
    documented = set(re.findall(r"^::: axial_attention\.(\w+)$", (ROOT / "docs" / "api.md").read_text(), flags=re.M))
    assert sorted(set(axial_attention.__all__) - documented) == []


def test_the_nav_lists_every_page():
    nav = set(re.findall(r"^  - [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), flags=re.M))
    assert nav == {p.name for p in (ROOT / "docs").glob("*.md")}
