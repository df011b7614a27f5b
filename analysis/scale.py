"""How many millimetres a pixel spans, and where that figure came from.

A scale comes from one of three places:
- `--mm-per-pixel X`: the user knows it;
- `--quadrat-size-cm W[xH]`: the image spans a W x H cm quadrat, so the pixel size is
  W*10 / width (and H*10 / height, which must agree: pixels are square);
- the image itself: a georeferenced raster (the large-image class-map GeoTIFF) carries
  a CRS and an affine transform; mosaic/ground.py measures its pixels on the ground
  (geodesic, any CRS: a Web Mercator or degree unit is no ground length).

Every measure is in pixels first; centimetres are added only where a scale is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Quadrat sides may differ a little from a perfect fit of the image (lens, cropping);
# more than this and lengths in cm would depend on the direction they are measured in.
MAX_ANISOTROPY = 0.02


class ScaleError(ValueError):
    """A scale that cannot be used; the message says which option to fix."""


@dataclass(frozen=True)
class Scale:
    mm_per_pixel: float
    source: str  # what it came from, as the user would recognise it
    # The ground area of a pixel, where it is not mm_per_pixel squared: the pixels of a
    # geographic CRS are not square on the ground (mosaic/ground.py measures both).
    mm2_per_pixel: float | None = None

    # Divided last: 10000 px at 2 mm is 400.0 cm2, not 400.00000000000006.
    def cm(self, pixels: float) -> float:
        return pixels * self.mm_per_pixel / 10.0

    def cm2(self, pixel_area: float) -> float:
        return pixel_area * self._mm2() / 100.0

    def m2(self, pixel_area: float) -> float:
        return pixel_area * self._mm2() / 1e6

    def _mm2(self) -> float:
        return self.mm_per_pixel**2 if self.mm2_per_pixel is None else self.mm2_per_pixel


def _check_square(width_mm: float, height_mm: float, source: str) -> None:
    if abs(width_mm - height_mm) > MAX_ANISOTROPY * max(width_mm, height_mm):
        raise ScaleError(
            f"{source}: pixels would be {width_mm:.4g} mm wide but {height_mm:.4g} mm high; "
            "lengths in cm need square pixels. Check the quadrat size (W x H in the image's "
            "width x height order), or crop the image to the quadrat, or give --mm-per-pixel."
        )


def parse_quadrat_size(text: str) -> tuple[float, float]:
    """'50' -> (50, 50); '100x50' -> (100, 50) (width x height, cm)."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(?:[xX*]\s*([0-9.]+))?\s*", text)
    try:
        width = float(match.group(1))
        height = float(match.group(2) or match.group(1))
    except (AttributeError, ValueError):
        raise ScaleError(
            f"--quadrat-size-cm {text!r}: expected W or WxH in cm, e.g. 50 or 100x50"
        ) from None
    if width <= 0 or height <= 0:
        raise ScaleError(f"--quadrat-size-cm {text!r}: sizes must be positive")
    return width, height


@dataclass(frozen=True)
class ScaleSpec:
    """What the command line asked for; `for_image` gives each image its Scale (or None)."""

    mm_per_pixel: float | None = None
    quadrat_cm: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.mm_per_pixel is not None and self.quadrat_cm is not None:
            raise ScaleError("give --mm-per-pixel or --quadrat-size-cm, not both")
        if self.mm_per_pixel is not None and not self.mm_per_pixel > 0:
            raise ScaleError(f"--mm-per-pixel {self.mm_per_pixel}: must be positive")

    @property
    def given(self) -> bool:
        return self.mm_per_pixel is not None or self.quadrat_cm is not None

    def for_image(
        self, name: str, shape: tuple[int, int], own: Scale | None = None
    ) -> Scale | None:
        """The command line's scale where one was given (it overrides the image's own, so a
        user can correct a wrong georeference), else the image's own, else None."""
        if self.mm_per_pixel is not None:
            return Scale(self.mm_per_pixel, f"--mm-per-pixel {self.mm_per_pixel:g}")
        if self.quadrat_cm is not None:
            width_cm, height_cm = self.quadrat_cm
            height, width = shape
            x_mm, y_mm = width_cm * 10 / width, height_cm * 10 / height
            source = f"--quadrat-size-cm {width_cm:g}x{height_cm:g}"
            _check_square(x_mm, y_mm, f"{name}: {source} over {width} x {height} px")
            return Scale((x_mm + y_mm) / 2, source)
        return own
