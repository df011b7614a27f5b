"""The model's colonies as the shapes annotators correct: closed, filled polylines in
relative coordinates, labelled with the taxonomy's class names, as the datasets store
what people draw in CVAT.

Colonies are the fusion rule's instances (models/fusion.py) from the semantic stage:
each connected region of a genus, as the semantic-only CVAT function makes them. Each
external outline of an instance becomes one polyline; its vertices sit on the centres
of the boundary pixels (pixel (x, y) is the unit square from x to x + 1), so a person
sees the outline on the colony's edge. Holes are not drawn: the datasets' polylines
fill every ring.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from models.fusion import FusionSettings, Instance, semantic_instances


def outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Every external outline of a mask, (K, 2) float pixel coordinates, >= 3 vertices."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    return [c.reshape(-1, 2).astype(np.float64) + 0.5 for c in contours if len(c) >= 3]


def instance_polylines(instances: Sequence[Instance], classes: Sequence[str], width: int,
                       height: int):  # fmt: skip
    """fo.Polyline per outline of each instance (closed, filled, relative coordinates),
    with the instance's confidence and unsure flag."""
    import fiftyone as fo

    polylines = []
    for instance in instances:
        for outline in outlines(instance.mask):
            relative = outline / (width, height)
            polylines.append(
                fo.Polyline(
                    label=classes[instance.label],
                    points=[[(float(x), float(y)) for x, y in relative]],
                    closed=True,
                    filled=True,
                    confidence=float(instance.score),
                    unsure=bool(instance.unsure),
                )
            )
    return polylines


class ColonyPredictor:
    """A SemanticSegmenter's colonies of one image, as polylines."""

    def __init__(self, segmenter, fusion: FusionSettings | None = None) -> None:
        self.segmenter = segmenter
        self.fusion = fusion or FusionSettings()

    def __call__(self, image_rgb: np.ndarray):
        instances = semantic_instances(self.segmenter.predict_probs(image_rgb), self.fusion)
        height, width = image_rgb.shape[:2]
        return instance_polylines(instances, self.segmenter.classes, width, height)
