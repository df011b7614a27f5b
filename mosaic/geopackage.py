"""Colonies as a GeoPackage (QGIS's native format) beside the GeoJSON, streamed to disk.

The interface and per-feature properties of mosaic/geojson.py's GeoJSONWriter: one
MultiPolygon layer named after the image, in the input's CRS (pixel coordinates and no
CRS for an image without georeference), written through pyogrio (GDAL's OGR) in batches
appended as colonies close, under a temporary name renamed into place on commit. The
layer is created with its fields and CRS before the first colony, so an image without
colonies still has it. GDAL gives the layer its R-tree spatial index.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
import pyogrio.errors
import shapely
from pyogrio import raw
from rasterio.transform import Affine
from shapely.geometry.base import BaseGeometry

from dataset.image_io import ImageWriteError
from mosaic.geojson import colony_properties, placed_geometry
from mosaic.seams import Colony

# What OGR raises through pyogrio (RuntimeError subclasses, not OSError).
OGR_ERRORS = (
    pyogrio.errors.DataSourceError,
    pyogrio.errors.DataLayerError,
    pyogrio.errors.FieldError,
    pyogrio.errors.FeatureError,
    pyogrio.errors.GeometryError,
    pyogrio.errors.CRSError,
)

# The layer's column types, for the attributes of mosaic.geojson.colony_properties
FIELD_TYPES = {"id": np.int64, "class_index": np.int32, "class": object,
               "confidence": np.float64, "unsure": bool, "area_px": np.int64,
               "area_m2": np.float64, "source": object}  # fmt: skip


class GeoPackageWriter:
    """Colonies as one MultiPolygon layer of a GeoPackage, streamed to disk (module
    docstring); the interface and feature properties of GeoJSONWriter."""

    FIELDS = ("id", "class_index", "class", "confidence", "unsure", "area_px", "area_m2",
              "source")  # fmt: skip

    def __init__(self, path: Path, transform: Affine, crs, classes: list[str],
                 pixel_area_m2: float | None, name: str) -> None:  # fmt: skip
        self.path = path = Path(path)
        self.count = 0
        self.unsure = 0
        # A .gpkg name: GDAL warns about any other extension.
        self._temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}.gpkg")
        t = transform
        self._matrix = [t.a, t.b, t.d, t.e, t.c, t.f]
        self._classes = classes
        self._pixel_area_m2 = pixel_area_m2
        self._layer = name
        self._crs = crs.to_wkt() if crs is not None else None
        self._temporary.unlink(missing_ok=True)  # a leftover of a killed run of this pid
        # The layer is created now, empty, so that an image without colonies still gets
        # it with its fields and CRS; every batch is then appended to it.
        self._append(
            [],
            create=True,
            # VERSION 1.2: GDAL before 3.7 (still in distributions' QGIS) warns on 1.4.
            dataset_options={"VERSION": "1.2"},
            layer_options={"SPATIAL_INDEX": "YES"},
        )

    def write(self, colonies: list[Colony]) -> None:
        if colonies:
            self._append(colonies, create=False)

    def _append(self, colonies: list[Colony], create: bool, **options) -> None:
        rows = [colony_properties(c, self.count + 1 + i, self._classes, self._pixel_area_m2)
                for i, c in enumerate(colonies)]  # fmt: skip
        geometries = np.array(
            [shapely.to_wkb(_multipolygon(placed_geometry(c, self._matrix))) for c in colonies],
            dtype=object,
        )
        fields = {
            name: np.array([r[name] for r in rows], dtype=FIELD_TYPES[name]) for name in self.FIELDS
        }
        # None (the area unknown) is NaN in the float column, written as null (nan_as_null)
        fields["area_m2"] = np.array(
            [np.nan if r["area_m2"] is None else r["area_m2"] for r in rows], np.float64
        )
        try:
            with warnings.catch_warnings():
                # No CRS is meant for an image without georeference (pixel coordinates).
                warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
                raw.write(
                    self._temporary,
                    geometries,
                    [fields[f] for f in self.FIELDS],
                    list(self.FIELDS),
                    layer=self._layer,
                    driver="GPKG",
                    geometry_type="MultiPolygon",
                    crs=self._crs,
                    promote_to_multi=True,
                    append=not create,
                    **options,
                )
        except (OSError, *OGR_ERRORS) as exc:
            self.abort()
            reason = getattr(exc, "strerror", None) or exc
            raise ImageWriteError(f"{self.path}: cannot write ({reason})") from None
        self.count += len(colonies)
        self.unsure += sum(bool(c.unsure) for c in colonies)

    def commit(self) -> None:
        try:
            self._temporary.replace(self.path)
        except OSError as exc:
            self.abort()
            raise ImageWriteError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def abort(self) -> None:
        # SQLite's side files exist only while a write is under way (a failed one).
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                Path(f"{self._temporary}{suffix}").unlink(missing_ok=True)


def _multipolygon(geometry: BaseGeometry) -> BaseGeometry:
    """One feature per colony, whatever its parts: the layer's type is MultiPolygon."""
    if geometry.geom_type == "MultiPolygon":
        return geometry
    if geometry.geom_type == "Polygon":
        return shapely.MultiPolygon([geometry])
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type == "Polygon"]
    return shapely.MultiPolygon(parts)
