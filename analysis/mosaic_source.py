"""The tiled outputs of large images as a label source: <stem>.classes.tif + <stem>.geojson.

    reef_stats.py summarize results/orthomosaic_inference/mosaics --output-dir ...

The class map is the GeoTIFF (255 outside the mosaic: not counted); the colonies are
the GeoJSON's polygons, burnt back into pixels (rasterio.features.rasterize, through
the raster's geotransform) with their class, confidence and unsure flag; the scale is
the georeference's pixel size (a projected CRS; none for an image without one). The
class names are the GeoTIFF's `classes` tag, written by mosaic/pipeline.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize

from analysis.scale import Scale
from analysis.sources import PREDICTED, ClassInfo, Colony, ImageLabels, SourceError

SUFFIX = ".classes.tif"


def is_mosaic_folder(path: Path) -> bool:
    return any(path.glob(f"*{SUFFIX}"))


@dataclass
class MosaicOutput:
    """The mosaics/ folder of inference_with_coralscop.py (tiled images)."""

    folder: Path
    kind: str = PREDICTED
    classes: ClassInfo = field(init=False)

    def __post_init__(self) -> None:
        first = self._classes_file(self.stems()[0])
        with rasterio.open(first) as src:
            names = src.tags().get("classes")
        if not names:
            raise SourceError(f"{first}: no 'classes' tag; not a class map of tiled inference")
        self.classes = ClassInfo.from_names(json.loads(names))

    @property
    def description(self) -> str:
        return f"tiled inference output {self.folder}"

    def _classes_file(self, stem: str) -> Path:
        return self.folder / f"{stem}{SUFFIX}"

    def stems(self) -> list[str]:
        stems = sorted(p.name[: -len(SUFFIX)] for p in self.folder.glob(f"*{SUFFIX}"))
        if not stems:
            raise SourceError(f"{self.folder}: no {SUFFIX} class map in this folder")
        return stems

    def load(self, stem: str) -> ImageLabels:
        with rasterio.open(self._classes_file(stem)) as src:
            class_map = src.read(1)
            transform, crs = src.transform, src.crs
            name = src.tags().get("source", f"{stem}.tif")
        scale = None
        if crs is not None and crs.is_projected:
            metres = crs.linear_units_factor[1]
            t = transform
            where = f"georeference ({crs.to_string()})"
            scale = Scale.from_affine(t.a, t.b, t.d, t.e, metres * 1000, where)
        geojson = self.folder / f"{stem}.geojson"
        try:
            features = json.loads(geojson.read_text())["features"]
        except (OSError, ValueError, KeyError) as exc:
            raise SourceError(f"{geojson}: not the colonies of tiled inference ({exc})") from None
        to_pixels = ~transform if crs is not None else None
        colonies = []
        for feature in features:
            colony = self._colony(feature, to_pixels, class_map.shape)
            if colony is not None:
                colonies.append(colony)
        return ImageLabels(stem, name, class_map, colonies, "class map", None, scale)

    @staticmethod
    def _colony(feature: dict, to_pixels, shape: tuple[int, int]) -> Colony | None:
        geometry = shapely.geometry.shape(feature["geometry"])
        if to_pixels is not None:
            t = to_pixels
            geometry = shapely.affinity.affine_transform(geometry, [t.a, t.b, t.d, t.e, t.c, t.f])
        x0, y0, x1, y1 = geometry.bounds
        left, top = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        right, bottom = min(int(np.ceil(x1)), shape[1]), min(int(np.ceil(y1)), shape[0])
        if right <= left or bottom <= top:
            return None
        placed = shapely.affinity.translate(geometry, -left, -top)
        mask = rasterize([placed], out_shape=(bottom - top, right - left), dtype="uint8") > 0
        if not mask.any():
            return None
        props = feature["properties"]
        return Colony(int(props["id"]), int(props["class_index"]), mask, top, left,
                      float(props["confidence"]), bool(props["unsure"]))  # fmt: skip
