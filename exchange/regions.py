"""The shared model of an annotated orthomosaic, whatever file it came from.

Coordinates are the map's pixel coordinates, the convention of mosaic/seams.py: x to
the right, y down, (0, 0) the top-left corner of the top-left pixel, so pixel (row r,
column c) covers the unit square [c, c + 1] x [r, r + 1] and a polygon's area is the
number of pixels it covers. Readers convert from their file's convention (TagLab's
contour points, a GIS layer's CRS) into this one; writers convert back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from shapely.geometry.base import BaseGeometry


@dataclass(frozen=True)
class Region:
    """One annotated (or predicted) colony: a Polygon (holes kept) or a MultiPolygon."""

    label: str  # the class name as the file writes it (resolved by a taxonomy later)
    geometry: BaseGeometry  # map pixel coordinates (module docstring)
    id: int | None = None
    confidence: float | None = None  # predictions only


@dataclass
class AnnotatedMap:
    """One orthomosaic with its regions."""

    name: str  # TagLab's map name, or the raster's stem
    image: Path  # the orthomosaic file (RGB channel)
    width: int
    height: int
    regions: list[Region] = field(default_factory=list)
    # The area a person annotated, in pixel coordinates (TagLab's working area, an area
    # polygon the user gives); None: not stated, the reader's caller decides.
    area: BaseGeometry | None = None
    mm_per_pixel: float | None = None  # TagLab's pixel size; None when unknown
    acquisition_date: str | None = None  # YYYY-MM-DD when known
    georeference: Path | None = None  # TagLab's georef file (a GeoTIFF) when known
