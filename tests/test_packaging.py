"""The install files agree with each other, and the front door stays what the README says."""

import re
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _requirement(text: str) -> tuple[str, str]:
    """('name', 'specifier') of a PEP 508 string, without its environment marker."""
    text = text.split(";")[0].strip()
    name, spec = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", text).groups()
    return re.sub(r"[-_.]+", "-", name).lower(), spec.replace(" ", "")


def _pixi_table(table: dict) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", k).lower(): v.replace(" ", "") for k, v in table.items()}


def test_pixi_and_pyproject_declare_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pixi = tomllib.loads((ROOT / "pixi.toml").read_text())
    runtime = dict(_requirement(r) for r in project["dependencies"])
    assert _pixi_table(pixi["feature"]["dinov2-mmseg"]["pypi-dependencies"]) == runtime
    dev = dict(_requirement(r) for r in project["optional-dependencies"]["dev"])
    dev.pop("tomli")  # only for Python 3.10, which pixi's environment does not use
    assert _pixi_table(pixi["feature"]["dev"]["pypi-dependencies"]) == dev


def test_pixi_has_the_guides_environment_and_tasks():
    pixi = tomllib.loads((ROOT / "pixi.toml").read_text())
    assert "dinov2-mmseg" in pixi["environments"]
    tasks = pixi["feature"]["dinov2-mmseg"]["tasks"]
    assert set(tasks) >= {"prepare", "train", "test", "infer", "demo"}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    front_door = readme.split("\n## ", 2)[1]  # the first section after the title
    assert "make demo" in front_door and "make test" in front_door


def test_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test"):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
