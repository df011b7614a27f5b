"""Taxonomies: class names, fixed colours and label aliases, read from one YAML file each.

A taxonomy turns the free-text labels of CVAT polylines into class indices. The
files in `dataset/taxonomies/` are the single source of truth for class order and
colours; prepared datasets copy them into classes.txt, palette.txt and
dataset_info.py so configs never retype them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

TAXONOMY_DIR = Path(__file__).resolve().parent / "taxonomies"
BACKGROUND = "background"
UNKNOWN_LABEL_POLICIES = ("error", "ignore")


class UnknownLabelsError(ValueError):
    """Some labels map to no class of the taxonomy."""


def normalize_label(label: str) -> str:
    """Case, spacing and separators don't count: 'pavona / leptoseris' == 'Pavona_Leptoseris'."""
    return re.sub(r"[\s_\-/.]+", "", label).lower()


@dataclass(frozen=True)
class Taxonomy:
    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    lookup: Mapping[str, int]  # normalized label -> class index

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index_of(self, label: str) -> int | None:
        """Class index of a label (name, alias or, for a coarse taxonomy, a member genus)."""
        return self.lookup.get(normalize_label(label))

    def resolve(self, label_counts: Mapping[str, int], unknown: str = "error") -> dict[str, int]:
        """Map every label to a class index.

        Unknown labels raise UnknownLabelsError listing each with its count, or,
        with unknown='ignore', go to the ignore index so the loss skips them.
        """
        if unknown not in UNKNOWN_LABEL_POLICIES:
            raise ValueError(f"unknown={unknown!r}: choose one of {UNKNOWN_LABEL_POLICIES}")
        mapping: dict[str, int] = {}
        missing: Counter[str] = Counter()
        for label, count in label_counts.items():
            index = self.index_of(label)
            if index is None:
                missing[label] += count
                index = self.ignore_index
            mapping[label] = index
        if missing and unknown == "error":
            listed = ", ".join(f"{label!r} ({count})" for label, count in missing.most_common())
            raise UnknownLabelsError(
                f"{len(missing)} label(s) unknown to the '{self.name}' taxonomy: {listed}. "
                f"Add them as aliases in {TAXONOMY_DIR / (self.name + '.yaml')}, or set "
                "CORAL_UNKNOWN_LABELS=ignore (--unknown-labels ignore) to paint them "
                f"with the ignore index {self.ignore_index}."
            )
        return mapping


def taxonomy_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        return path
    path = TAXONOMY_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml"))
        raise FileNotFoundError(
            f"No taxonomy named {name_or_path!r}; known taxonomies: {known} "
            "(or give the path of a .yaml file)"
        )
    return path


def _add_key(lookup: dict[str, int], label: str, index: int, source: Path) -> None:
    key = normalize_label(label)
    if lookup.get(key, index) != index:
        raise ValueError(f"{source}: label {label!r} maps to two classes")
    lookup[key] = index


def load_taxonomy(name_or_path: str | Path) -> Taxonomy:
    """Load a taxonomy by name ('fine', 'coarse') or from a YAML file."""
    path = taxonomy_path(name_or_path)
    spec = yaml.safe_load(path.read_text())
    entries = spec["classes"]
    if entries[0]["name"] != BACKGROUND:
        raise ValueError(f"{path}: the first class must be {BACKGROUND!r} (index 0)")
    lookup: dict[str, int] = {}
    for index, entry in enumerate(entries):
        for label in [entry["name"], *entry.get("aliases", [])]:
            _add_key(lookup, label, index, path)
    if "refines" in spec:
        _add_refined_labels(lookup, spec["refines"], entries, path)
    return Taxonomy(
        name=spec["name"],
        classes=tuple(entry["name"] for entry in entries),
        palette=tuple(tuple(int(c) for c in entry["color"]) for entry in entries),
        ignore_index=int(spec.get("ignore_index", 255)),
        lookup=lookup,
    )


def _add_refined_labels(
    lookup: dict[str, int], finer_name: str, entries: list[dict], path: Path
) -> None:
    """Every label of the finer taxonomy maps to the coarse class listing its class as a member."""
    finer = load_taxonomy(finer_name)
    coarse_of_fine = {0: 0}
    for index, entry in enumerate(entries):
        for member in entry.get("members", []):
            fine_index = finer.index_of(member)
            if fine_index is None:
                raise ValueError(f"{path}: member {member!r} is not a class of {finer_name!r}")
            if fine_index in coarse_of_fine:
                raise ValueError(f"{path}: {member!r} is a member of two classes")
            coarse_of_fine[fine_index] = index
    unmapped = [finer.classes[i] for i in range(finer.num_classes) if i not in coarse_of_fine]
    if unmapped:
        raise ValueError(
            f"{path}: no class lists these {finer_name!r} classes as members: {unmapped}"
        )
    for key, fine_index in finer.lookup.items():
        lookup.setdefault(key, coarse_of_fine[fine_index])
