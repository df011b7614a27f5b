"""The part of an image that is counted: inside the quadrat (an optional mask or polygon).

Pixels with the ignore index are left out as well, by the caller (cover.valid_area),
since that depends on the class maps rather than on the quadrat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.draw import polygon2mask

from analysis.sources import SourceError


def parse_polygon(text: str) -> list[tuple[float, float]]:
    """'x1,y1 x2,y2 x3,y3 ...' (pixels, x to the right, y down) -> [(x, y), ...]."""
    try:
        points = [tuple(float(v) for v in pair.split(",")) for pair in text.split()]
    except ValueError:
        points = []
    if len(points) < 3 or any(len(p) != 2 for p in points):
        raise SourceError(
            f"--quadrat-polygon {text!r}: expected at least three 'x,y' corners in pixels, "
            "separated by spaces, e.g. '10,10 1900,12 1905,1910 8,1900'"
        )
    return points


@dataclass(frozen=True)
class Quadrat:
    """A mask file (the same for every image), a folder of <stem>.png masks, or a polygon."""

    mask: Path | None = None
    polygon: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        if self.mask is not None and self.polygon is not None:
            raise SourceError("give --quadrat-mask or --quadrat-polygon, not both")
        if self.mask is not None and not self.mask.exists():
            raise SourceError(f"--quadrat-mask {self.mask} does not exist")

    @property
    def given(self) -> bool:
        return self.mask is not None or self.polygon is not None

    def region(self, stem: str, shape: tuple[int, int]) -> np.ndarray | None:
        """(H, W) bool, True inside the quadrat; None when no quadrat was given."""
        if self.polygon is not None:
            # polygon2mask takes (row, col) vertices
            return polygon2mask(shape, [(y, x) for x, y in self.polygon])
        if self.mask is None:
            return None
        path = self.mask / f"{stem}.png" if self.mask.is_dir() else self.mask
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) if path.is_file() else None
        if image is None:
            raise SourceError(
                f"{path}: no readable quadrat mask for {stem} (a single-channel PNG, non-zero "
                "inside the quadrat); add it, or leave the image out"
            )
        if image.shape != tuple(shape):
            raise SourceError(
                f"{path}: quadrat mask is {image.shape[1]} x {image.shape[0]} px, the image "
                f"{shape[1]} x {shape[0]}; draw it on the image itself"
            )
        return image > 0
