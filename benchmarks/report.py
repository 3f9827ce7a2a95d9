"""Write the benchmark tables of the docs from `benchmarks/results/*.json`; never type them by hand.

A page holds a generated table between two markers, named by the JSON file, the part and the table's
index within the part:

    <!-- table: deeplab/forward/0 -->
    (everything here is rewritten: the machine, the command and date, the caption, the table)
    <!-- /table -->

`python -m benchmarks.report` rewrites every such region in README.md and docs/*.md;
`python -m benchmarks.report --check` writes nothing and exits 1 naming each page that differs from
what the JSON would write (tests/test_benchmark_report.py runs it). To add a table to a page, put the
two marker lines where it goes and run the command.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"<!-- table: (?P<key>[^>]+?) -->\n(?P<body>.*?)<!-- /table -->", flags=re.S)
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)  # markers shown inside code blocks are left alone


def pages(root: Path) -> list[Path]:
    """The pages that may hold generated tables: the README and every docs page."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def load_results(results_dir: Path | None = None) -> dict[str, dict]:
    """Every results file, by its stem: {"deeplab": {part: entry, ...}, ...}."""
    paths = sorted((results_dir or RESULTS_DIR).glob("*.json"))
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in paths}


def render(key: str, results: dict[str, dict]) -> str:
    """The text between the markers of `key` ("<file>/<part>/<index>"), headed by its machine."""
    script, _, rest = key.partition("/")
    part, _, index = rest.rpartition("/")
    if not part or not index.isdigit():
        raise ValueError(f"table marker: expected 'table: <results file>/<part>/<index>', got {key!r}")
    if script not in results:
        raise ValueError(f"table marker {key!r}: expected one of the results files {sorted(results)}, "
                         f"got {script!r} (no benchmarks/results/{script}.json)")
    if part not in results[script]:
        raise ValueError(f"table marker {key!r}: expected a part of {script}.json {sorted(results[script])}, got {part!r}")
    entry = results[script][part]
    tables = entry["tables"]
    if int(index) >= len(tables):
        raise ValueError(f"table marker {key!r}: expected an index below {len(tables)} "
                         f"(the tables of part {part!r}), got {index}")
    table = tables[int(index)]
    date = entry["date"][:10]
    return (f"Machine: **{entry['machine']['description']}** · `{entry['command']}` · {date}\n\n"
            f"{table['caption']}\n\n{table['markdown'].strip()}\n")


def _outside_fences(text: str) -> list[tuple[bool, str]]:
    """`text` cut into (is prose, piece), code blocks kept whole."""
    pieces, start = [], 0
    for fence in FENCE.finditer(text):
        pieces += [(True, text[start:fence.start()]), (False, fence.group())]
        start = fence.end()
    return pieces + [(True, text[start:])]


def rewrite(text: str, results: dict[str, dict], where: str = "page") -> str:
    """`text` with every table region outside code blocks regenerated."""
    out = []
    for prose, piece in _outside_fences(text):
        if prose:
            closed = len(MARKER.findall(piece))
            if piece.count("<!-- table: ") != closed or piece.count("<!-- /table -->") != closed:
                raise ValueError(f"{where}: expected every '<!-- table: ... -->' line to be closed by a "
                                 f"'<!-- /table -->' line, got {piece.count('<!-- table: ')} openings, "
                                 f"{piece.count('<!-- /table -->')} closings and {closed} whole regions")
            piece = MARKER.sub(lambda m: f"<!-- table: {m['key']} -->\n{render(m['key'], results)}<!-- /table -->",
                               piece)
        out.append(piece)
    return "".join(out)


def stale_pages(root: Path | None = None, results_dir: Path | None = None, write: bool = False) -> list[Path]:
    """The pages under `root` (default: the repository) whose tables differ from the JSON in
    `results_dir` (default: benchmarks/results), rewritten when `write`."""
    root = root or ROOT
    results = load_results(results_dir or RESULTS_DIR)
    stale = []
    for page in pages(root):
        text = page.read_text(encoding="utf-8")
        new = rewrite(text, results, where=str(page.relative_to(root)))
        if new != text:
            stale.append(page)
            if write:
                page.write_text(new, encoding="utf-8")
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a page differs from what the JSON would write")
    args = parser.parse_args(argv)
    stale = stale_pages(write=not args.check)
    for page in stale:
        print(f"{page.relative_to(ROOT).as_posix()}: {'out of date' if args.check else 'rewritten'}")
    if args.check and stale:
        print("run `python -m benchmarks.report` to regenerate the tables", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
