"""The ground size of a georeferenced raster's pixels, in any coordinate reference system.

A CRS's unit is not a ground length: a Web Mercator (EPSG:3857) "metre" is a metre only at
the equator (areas off by 1/cos^2(latitude): +10.6 % at 18 degrees S), and a geographic
CRS (EPSG:4326) counts degrees. So the ground size is measured, never read off the unit:
the corners of a block of pixels at the raster's centre go through the geotransform into
the CRS, from there (pyproj) to longitude and latitude on the CRS's own ellipsoid, and
the block's geodesic area and side lengths (pyproj.Geod, Karney's algorithms) divided by
its pixel count give one pixel's ground area, width and height.

One figure serves the whole raster: across a mosaic a kilometre tall the pixel area of a
conformal projection changes by about 2 tan(latitude) x 1 km / 6371 km (1e-4 at 18
degrees), far under any figure reported. A CRS without an ellipsoid (a local engineering
CRS) falls back to its linear unit, and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pyproj import CRS, Transformer
from rasterio.transform import Affine

# Pixels per side of the block measured at the centre: large enough that the corner
# coordinates' rounding does not matter, small enough that its edges are straight lines
# on the ellipsoid to ~1e-12.
BLOCK = 64


@dataclass(frozen=True)
class GroundPixel:
    """One pixel on the ground: width and height in metres, area in square metres."""

    width_m: float
    height_m: float
    area_m2: float
    source: str  # where the figures came from, as logs and reports say it

    @property
    def mm_per_pixel(self) -> float:
        """The side of a square of the pixel's area (lengths of non-square pixels use it)."""
        return math.sqrt(self.area_m2) * 1000


def _describe(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"{crs.name} (EPSG:{epsg})" if epsg else crs.name


def ground_pixel(crs, transform: Affine, width: int, height: int) -> GroundPixel | None:
    """The ground pixel of a raster (rasterio's crs and transform), or None without a CRS."""
    if crs is None or transform == Affine.identity():
        return None
    crs = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    geod = crs.get_geod()
    cols = min(BLOCK, width)
    rows = min(BLOCK, height)
    col0, row0 = (width - cols) // 2, (height - rows) // 2
    corners = [(col0, row0), (col0 + cols, row0), (col0 + cols, row0 + rows), (col0, row0 + rows)]
    xs, ys = zip(*(transform @ corner for corner in corners), strict=True)
    if geod is None:  # no ellipsoid (a local CRS, "Local Coordinates (m)"): its unit
        unit = crs.axis_info[0] if crs.axis_info else None
        if unit is None or "degree" in unit.unit_name.lower() or not unit.unit_conversion_factor:
            return None
        metres = unit.unit_conversion_factor
        side_x = math.hypot(transform.a, transform.d) * metres
        side_y = math.hypot(transform.b, transform.e) * metres
        return GroundPixel(side_x, side_y, side_x * side_y,
                           f"{_describe(crs)}: its unit (no ellipsoid to measure on)")  # fmt: skip
    to_degrees = Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    lons, lats = to_degrees.transform(xs, ys)
    area, _ = geod.polygon_area_perimeter(lons, lats)
    top = geod.inv(lons[0], lats[0], lons[1], lats[1])[2]
    side = geod.inv(lons[0], lats[0], lons[3], lats[3])[2]
    width_m, height_m, area_m2 = top / cols, side / rows, abs(area) / (cols * rows)
    ellipsoid = crs.ellipsoid.name if crs.ellipsoid else "its ellipsoid"
    text = (
        f"georeference {_describe(crs)}: {width_m * 1000:.4g} x {height_m * 1000:.4g} mm per "
        f"pixel on the ground at the raster's centre (geodesic on the {ellipsoid} ellipsoid, "
        "pyproj)"
    )
    return GroundPixel(width_m, height_m, area_m2, text)
