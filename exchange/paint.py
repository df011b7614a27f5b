"""Regions painted into class-index windows: the one rule training crops and reef numbers share.

- Inside the annotated area and in no region: background (class 0).
- Outside the annotated area: ignore (255), never background: nobody looked there.
- A region paints its class. Where two regions overlap, the smaller one holds the pixel
  (regions are painted in decreasing area): a colony drawn on top of a larger one, as
  annotators do for an encrusting colony on a table coral, stays whole.
- A pixel belongs to a region when its centre lies inside the polygon (GDAL's rule,
  rasterio.features.rasterize without all_touched): holes are holes, every part of a
  multi-part region is painted, and a polygon on pixel edges paints exactly its pixels.

Windows are read from a spatial index (shapely's STRtree), so painting a window of a
40000 px map touches only the regions that reach it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from rasterio.features import rasterize
from rasterio.transform import Affine
from shapely.geometry.base import BaseGeometry

BACKGROUND = 0
IGNORE = 255


class RegionIndex:
    """Regions (pixel-coordinate geometries, exchange/regions.py) with their class values."""

    def __init__(
        self,
        geometries: Sequence[BaseGeometry],
        values: Sequence[int],
        area: BaseGeometry | None = None,
    ) -> None:
        order = np.argsort([-g.area for g in geometries], kind="stable")
        self._geometries = np.array([geometries[i] for i in order], dtype=object)
        self._values = np.array([values[i] for i in order], dtype=np.int64)
        self._tree = shapely.STRtree(self._geometries)
        self.area = area
        if area is not None:
            shapely.prepare(area)

    def __len__(self) -> int:
        return len(self._geometries)

    def regions_in(self, left: float, top: float, right: float, bottom: float) -> np.ndarray:
        """Indices (in painting order) of the regions that reach a box."""
        return np.sort(self._tree.query(shapely.box(left, top, right, bottom)))

    def paint(self, row0: int, col0: int, height: int, width: int, step: float = 1.0) -> np.ndarray:
        """The (height, width) uint8 class window whose top-left corner is map pixel (row0,
        col0), each output pixel `step` map pixels wide (1: native resolution)."""
        transform = Affine(step, 0, col0, 0, step, row0)
        right, bottom = col0 + width * step, row0 + height * step
        if self.area is None:
            window = np.full((height, width), BACKGROUND, np.uint8)
        else:
            window = np.full((height, width), IGNORE, np.uint8)
            inside = shapely.clip_by_rect(self.area, col0, row0, right, bottom)
            if not inside.is_empty:
                rasterize([(inside, BACKGROUND)], out=window, transform=transform)
        found = self.regions_in(col0, row0, right, bottom)
        if len(found):
            shapes = zip(self._geometries[found], self._values[found].tolist(), strict=True)
            rasterize(shapes, out=window, transform=transform)
        return window

    def reaches(self, left: float, top: float, right: float, bottom: float) -> bool:
        """Whether a box holds anything annotated: a region, or part of the annotated area
        (background a person looked at). Without a stated area, everything is."""
        if self.area is None or len(self.regions_in(left, top, right, bottom)):
            return True
        return self.area.intersects(shapely.box(left, top, right, bottom))
