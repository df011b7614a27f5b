"""The commands in README.md and docs/*.md stay true: every flag they pass exists in the
script's own parser, and every config and script they name exists. (What the commands
do is tested where the work is: the demo's steps run as written in test_mosaic.py and
test_analysis_cli.py, each capability in its own tests.)"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# scripts whose flags are checked: argparse ones through their parse_args(["--help"]),
# prepare_data.py (fire) through its main()'s parameters
ARGPARSE = {"train.py", "test.py", "inference_with_coralscop.py", "reef_stats.py", "annotate.py"}
SUBCOMMANDS = {"reef_stats.py", "annotate.py"}  # their flags belong to the subcommand


def commands() -> list[tuple[str, list[str]]]:
    """(page, tokens after `python`) of every python command in a bash block."""
    found = []
    for page in PAGES:
        for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.split(" #")[0].strip()
                match = re.match(r"(?:[A-Z_]+=\S+\s+)*python\s+(\S+\.py)(.*)", line)
                if match:
                    found.append((page.name, [match.group(1), *match.group(2).split()]))
    return found


def _flags_of(script: str, subcommand: str | None) -> set[str]:
    module = importlib.import_module(Path(script).stem)
    if script == "prepare_data.py":
        return {"--" + p.replace("_", "-") for p in inspect.signature(module.main).parameters}
    text = io.StringIO()
    argv = [subcommand, "--help"] if subcommand else ["--help"]
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        module.parse_args(argv)
    return set(re.findall(r"--[a-z][a-z0-9-]*", text.getvalue()))


def test_every_documented_flag_exists_and_every_named_file_is_there():
    checked = 0
    known: dict[tuple[str, str | None], set[str]] = {}
    for page, tokens in commands():
        script = tokens[0]
        # nuclio's helpers are run from inside nuclio/ (docs/cvat.md says cd nuclio)
        places = (ROOT / script, ROOT / "nuclio" / script)
        assert any(p.is_file() for p in places), f"{page}: {script} does not exist"
        for token in tokens[1:]:
            if token.startswith("configs/"):
                assert (ROOT / token).is_file(), f"{page}: {token} does not exist"
        if script not in ARGPARSE and script != "prepare_data.py":
            continue
        subcommand = tokens[1] if script in SUBCOMMANDS else None
        if (script, subcommand) not in known:
            known[(script, subcommand)] = _flags_of(script, subcommand)
        flags = {t.split("=")[0] for t in tokens[1:] if t.startswith("--")}
        unknown = flags - known[(script, subcommand)]
        assert not unknown, f"{page}: {' '.join(tokens)}: no such flag {sorted(unknown)}"
        checked += 1
    assert checked >= 20  # the pages do hold commands: the pattern found them


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped,
    spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(page: Path) -> str:
    """The page without its code blocks (a `# comment` in bash is no heading)."""
    return re.sub(r"```.*?```", "", page.read_text(), flags=re.S)


def test_every_link_between_the_pages_lands():
    """README.md and docs/ link to each other by file and section; a page or heading that
    moves must take its links along."""
    anchors: dict[Path, set[str]] = {}  # each linked page's headings, read once
    checked = 0
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", _prose(page)):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: link to {target}: no such file"
            if anchor:
                if linked not in anchors:
                    headings = re.findall(r"^#+ (.+)$", _prose(linked), flags=re.M)
                    anchors[linked] = {_anchor(h) for h in headings}
                assert anchor in anchors[linked], f"{page.name}: link to {target}: no such heading"
            checked += 1
    assert checked >= 20  # the pattern found the links
