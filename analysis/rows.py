"""The rows of summarize's tables for one image, from its class map and colonies, or from
counts made elsewhere (a mosaic counted window by window: analysis/mosaic_summary.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.cover import class_pixels
from analysis.measures import measure_colony, touches_edge
from analysis.scale import Scale
from analysis.sources import ClassInfo, Colony, ImageLabels


@dataclass
class Collected:
    images: list[dict] = field(default_factory=list)
    cover: list[dict] = field(default_factory=list)
    colonies: list[dict] = field(default_factory=list)
    points: dict[str, list[pd.DataFrame]] = field(default_factory=dict)
    errors: list[np.ndarray] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    unnamed: list[str] = field(default_factory=list)  # images no photo name is known for

    def extend(self, other: Collected) -> None:
        self.unnamed += other.unnamed
        self.images += other.images
        self.cover += other.cover
        self.colonies += other.colonies
        for role, tables in other.points.items():
            self.points.setdefault(role, []).extend(tables)
        self.errors += other.errors


def cover_rows_of_counts(
    base: dict, pixels: np.ndarray, total: int, classes: ClassInfo, scale: Scale | None
) -> list[dict]:
    """One row per class from its pixel count and the counted total."""
    return [
        {**base, "class_index": index, "class": name, "pixels": int(count),
         "valid_pixels": total, "cover_percent": 100.0 * count / total if total else np.nan,
         "area_cm2": scale.cm2(count) if scale else np.nan}
        for index, (name, count) in enumerate(zip(classes.names, pixels, strict=True))
    ]  # fmt: skip


def cover_rows(
    base: dict, class_map: np.ndarray, classes: ClassInfo, valid: np.ndarray, scale: Scale | None
) -> list[dict]:
    pixels = class_pixels(class_map, classes.num_classes, valid)
    return cover_rows_of_counts(base, pixels, int(valid.sum()), classes, scale)


def colony_row(
    base: dict, colony: Colony, classes: ClassInfo, touches: bool, scale: Scale | None
) -> dict:
    return {
        **base, "colony_id": colony.id, "genus": classes.names[colony.class_index],
        "class_index": colony.class_index, "confidence": colony.confidence,
        "unsure": colony.unsure, "touches_edge": touches, **measure_colony(colony, scale),
    }  # fmt: skip


def colony_rows(
    base: dict, colonies: list[Colony], classes: ClassInfo, valid: np.ndarray,
    scale: Scale | None,
) -> list[dict]:  # fmt: skip
    return [
        colony_row(base, colony, classes, touches_edge(colony, valid), scale) for colony in colonies
    ]


def image_row_of_counts(
    base: dict, shape: tuple[int, int], total: int, scale: Scale | None, scale_text: str,
    cover_from: str, colonies: int,
) -> dict:  # fmt: skip
    """scale_text: where the scale came from, or why there is none."""
    return {
        **base, "width": shape[1], "height": shape[0], "valid_pixels": total,
        "valid_area_cm2": scale.cm2(total) if scale else np.nan,
        "valid_area_m2": scale.m2(total) if scale else np.nan,
        "mm_per_pixel": scale.mm_per_pixel if scale else np.nan,
        "scale_source": scale.source if scale else scale_text, "cover_from": cover_from,
        "colonies": colonies,
    }  # fmt: skip


def image_row(
    base: dict, labels: ImageLabels, valid: np.ndarray, scale: Scale | None, colonies: int
) -> dict:
    return image_row_of_counts(base, labels.shape, int(valid.sum()), scale, "",
                               labels.cover_from, colonies)  # fmt: skip
