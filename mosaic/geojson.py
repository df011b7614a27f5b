"""Colonies as a GeoJSON FeatureCollection that QGIS opens as is, streamed to disk.

Coordinates are in the input's CRS (its geotransform applied to the pixel polygons),
named by the collection's `crs` member (the 2008 GeoJSON form, which GDAL/QGIS read)
when the CRS has an EPSG code; an image without a georeference gets pixel coordinates
(x right, y down) and no `crs`. Rings follow the right-hand rule (RFC 7946), holes
kept. Features are appended as colonies become final, into a temporary file renamed
into place when the collection is complete.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import shapely
from rasterio.transform import Affine
from shapely.geometry.base import BaseGeometry

from dataset.image_io import StreamedTextFile
from mosaic.seams import Colony


def placed_geometry(colony: Colony, matrix: list[float]) -> BaseGeometry:
    """The colony's polygon in the output's coordinates, exterior counter-clockwise."""
    return shapely.orient_polygons(shapely.affinity.affine_transform(colony.geometry, matrix))


def colony_properties(
    colony: Colony, number: int, classes: list[str], pixel_area_m2: float | None
) -> dict:
    """The attributes every colonies file carries (GeoJSON here, GeoPackage in exchange/)."""
    area_px = colony.area_px
    return {
        "id": number,
        "class_index": colony.label,
        "class": classes[colony.label],
        "confidence": round(colony.confidence, 4),
        "unsure": colony.unsure,
        "area_px": area_px,
        "area_m2": None if pixel_area_m2 is None else round(area_px * pixel_area_m2, 8),
        "source": "+".join(colony.sources),
    }


class GeoJSONWriter:
    def __init__(self, path: Path, transform: Affine, crs, classes: list[str],
                 pixel_area_m2: float | None, name: str) -> None:  # fmt: skip
        self.path = path
        self.count = 0
        self.unsure = 0
        t = transform
        self._matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
        self._classes = classes
        self._pixel_area_m2 = pixel_area_m2
        header = {"type": "FeatureCollection", "name": name}
        epsg = crs.to_epsg() if crs is not None else None
        if epsg:
            header["crs"] = {
                "type": "name",
                "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"},
            }
        self._file = StreamedTextFile(path, json.dumps(header)[:-1] + ', "features": [\n')

    def write(self, colonies: list[Colony]) -> None:
        lines = []
        for colony in colonies:
            self.count += 1
            self.unsure += colony.unsure
            properties = colony_properties(colony, self.count, self._classes, self._pixel_area_m2)
            geometry = shapely.to_geojson(placed_geometry(colony, self._matrix))
            lines.append(
                f'{{"type": "Feature", "properties": {json.dumps(properties)}, '
                f'"geometry": {geometry}}}'
            )
        if lines:
            self._file.write((",\n" if self.count > len(lines) else "") + ",\n".join(lines))

    def commit(self) -> None:
        self._file.commit("\n]}\n")

    def abort(self) -> None:
        self._file.abort()


def read_features(path: Path) -> Iterator[dict]:
    """The features of a colonies GeoJSON, one at a time. GeoJSONWriter writes one feature
    a line, read so (the whole collection as Python objects grows with the mosaic: ~40 MB
    for 6400 colonies); any other layout (a file saved again by QGIS) is read whole.
    OSError, ValueError or KeyError when the file is not such a collection."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline()
        if header.rstrip().endswith('"features": ['):
            for line in handle:
                line = line.strip().rstrip(",")
                if line.startswith("{"):
                    yield json.loads(line)
            return
    yield from json.loads(Path(path).read_text())["features"]
