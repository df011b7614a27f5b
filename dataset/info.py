"""Class information for configs: read from a prepared dataset, or from its taxonomy.

Configs call `dataset_class_info(data_root, taxonomy)` so the class names, the
palette, the class count and the suggested loss weights come from the folder that
prepare_data.py wrote, never from a retyped list. Where that folder does not exist
(a machine that only runs inference), the taxonomy file gives the same classes.
"""

from __future__ import annotations

import ast
import pprint
from pathlib import Path
from typing import Any

import numpy as np

from dataset.taxonomy import Taxonomy, load_taxonomy, taxonomy_path

INFO_FILE = "dataset_info.py"
SPLITS = ("train", "val", "test")
MAX_CLASS_WEIGHT = 10.0
MIN_CLASS_WEIGHT = 0.1


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


def class_weights(frequency: list[float]) -> list[float]:
    """Median-frequency balancing on the train split: rare classes weigh more.

    w_c = median(f) / f_c over the classes present, clipped to
    [MIN_CLASS_WEIGHT, MAX_CLASS_WEIGHT]; classes absent from train get the maximum.
    """
    present = [f for f in frequency if f > 0]
    if not present:
        return [1.0] * len(frequency)
    median = float(np.median(present))  # a Python float keeps dataset_info.py plain literals
    return [
        round(
            min(MAX_CLASS_WEIGHT, max(MIN_CLASS_WEIGHT, median / f)) if f > 0 else MAX_CLASS_WEIGHT,
            4,
        )
        for f in frequency
    ]


def write_dataset_info(
    out_dir: Path,
    taxonomy: Taxonomy,
    counts: dict[str, np.ndarray],
    num_samples: dict[str, int],
    facts: dict[str, Any],
    written_from: str,
) -> None:
    """classes.txt, palette.txt and dataset_info.py of a prepared folder.

    counts: per split, the pixels of each mask value 0-255; facts: the source's own
    entries (dataset_name, image_size, ...), written first; written_from: what the
    header comment names as the source."""
    n = taxonomy.num_classes
    (out_dir / "classes.txt").write_text("\n".join(taxonomy.classes) + "\n")
    (out_dir / "palette.txt").write_text(
        "\n".join(" ".join(map(str, c)) for c in taxonomy.palette) + "\n"
    )
    frequency = {}
    for split in SPLITS:
        split_counts = counts.get(split, np.zeros(256, np.int64))
        labelled = int(split_counts[:n].sum())
        frequency[split] = [
            round(float(c) / labelled, 6) if labelled else 0.0 for c in split_counts[:n]
        ]
    info = {
        **{key: value for key, value in facts.items() if key == "dataset_name"},
        "taxonomy": taxonomy.name,
        "classes": list(taxonomy.classes),
        "palette": [list(c) for c in taxonomy.palette],
        "num_classes": n,
        "ignore_index": taxonomy.ignore_index,
        **{key: value for key, value in facts.items() if key != "dataset_name"},
        "num_samples": {s: int(num_samples.get(s, 0)) for s in SPLITS},
        "class_pixel_frequency": frequency,
        "ignored_pixels": {
            s: int(counts[s][taxonomy.ignore_index]) if s in counts else 0 for s in SPLITS
        },
        "class_weights": class_weights(frequency["train"]),
    }
    lines = [
        f"# Written by prepare_data.py from {written_from} with the {taxonomy.name!r} taxonomy.",
        "# Configs read the classes, palette and class count from here; do not edit by hand.",
        "# class_pixel_frequency: fraction of labelled pixels per class and split;",
        "# class_weights: median-frequency balancing on train (rare genera weigh more).",
    ]
    lines += [
        f"{key} = {pprint.pformat(value, width=100, compact=True, sort_dicts=False)}"
        for key, value in info.items()
    ]
    lines.append("metainfo = dict(classes=classes, palette=palette)")
    (out_dir / INFO_FILE).write_text("\n".join(lines) + "\n")
