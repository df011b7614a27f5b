"""Class information for configs: read from a prepared dataset, or from its taxonomy.

Configs call `dataset_class_info(data_root, taxonomy)` so the class names, the
palette, the class count and the suggested loss weights come from the folder that
prepare_data.py wrote, never from a retyped list. Where that folder does not exist
(a machine that only runs inference), the taxonomy file gives the same classes.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from dataset.taxonomy import load_taxonomy, taxonomy_path

INFO_FILE = "dataset_info.py"


def read_dataset_info(path: str | Path) -> dict[str, Any]:
    """The literal assignments of a dataset_info.py, parsed without executing it."""
    tree = ast.parse(Path(path).read_text(), filename=str(path))
    info = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                info[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:  # e.g. metainfo = dict(...), derived from the literals
                continue
    return info


def dataset_class_info(data_root: str | Path, taxonomy: str = "fine") -> dict[str, Any]:
    """classes, palette, num_classes, class_weights (None without a prepared dataset), source."""
    info_path = Path(data_root) / INFO_FILE
    expected = load_taxonomy(taxonomy)
    if info_path.is_file():
        info = read_dataset_info(info_path)
        if info.get("taxonomy") != expected.name or tuple(info["classes"]) != expected.classes:
            raise ValueError(
                f"{info_path} was prepared with the {info.get('taxonomy')!r} taxonomy "
                f"({info.get('num_classes')} classes) but the config asks for {expected.name!r} "
                f"({expected.num_classes} classes): set `taxonomy` or `data_root` in the config, "
                "or prepare the dataset again with that taxonomy."
            )
        return dict(
            classes=list(info["classes"]),
            palette=[list(c) for c in info["palette"]],
            num_classes=int(info["num_classes"]),
            class_weights=list(info["class_weights"]),
            source=str(info_path),
        )
    return dict(
        classes=list(expected.classes),
        palette=[list(c) for c in expected.palette],
        num_classes=expected.num_classes,
        class_weights=None,
        source=str(taxonomy_path(taxonomy)),
    )
