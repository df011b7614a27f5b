"""Annotated maps from what a user has: a TagLab project, or an orthomosaic and a GIS
polygon file. The one place prepare_data.py and reef_stats.py tell the two apart."""

from __future__ import annotations

import logging
from pathlib import Path

from exchange.gis import read_area, read_regions
from exchange.regions import AnnotatedMap
from exchange.taglab import read_taglab_project
from mosaic.raster import header_facts

log = logging.getLogger(__name__)

TAGLAB_SUFFIX = ".json"
POLYGON_SUFFIXES = (".geojson", ".gpkg", ".shp", ".kml", ".gml", ".fgb")


class MapSourceError(ValueError):
    """An annotated-map input that cannot be read as given (the message says what to pass)."""


def is_taglab_project(path: str | Path) -> bool:
    return Path(path).suffix.lower() == TAGLAB_SUFFIX and Path(path).is_file()


def open_maps(
    source: str | Path,
    polygons: str | Path | None = None,
    class_field: str = "class",
    layer: str | None = None,
    area: str | Path | None = None,
) -> list[AnnotatedMap]:
    """The maps of a TagLab project (`source` .json), or the one map of an orthomosaic
    `source` with the regions of `polygons` (class from `class_field`). `area`: a polygon
    file of the annotated area, which replaces what the source says (TagLab's working area)."""
    source = Path(source)
    if is_taglab_project(source):
        if polygons is not None:
            raise MapSourceError(
                f"{source} is a TagLab project, which holds its own regions; --polygons "
                "goes with an orthomosaic"
            )
        maps = read_taglab_project(source)
        if not maps:
            raise MapSourceError(f"{source}: the TagLab project has no map; add one in TagLab")
    else:
        facts = header_facts(source)
        if facts is None:
            hint = (
                " It looks like a polygon file: give the orthomosaic first and this file "
                "with --polygons."
                if source.suffix.lower() in POLYGON_SUFFIXES
                else ""
            )
            raise MapSourceError(
                f"{source}: neither a TagLab project (.json) nor an image GDAL can open "
                f"(GeoTIFF, BigTIFF, COG, ...).{hint}"
            )
        if polygons is None:
            raise MapSourceError(
                f"{source}: an orthomosaic needs its annotations: pass --polygons FILE "
                "(GeoJSON, GeoPackage, shapefile) and --class-field NAME"
            )
        height, width, _ = facts
        regions = read_regions(polygons, source, class_field, layer)
        maps = [AnnotatedMap(source.stem, source, width, height, regions)]
    if area is not None:
        for annotated in maps:
            annotated.area = read_area(area, annotated.image)
    return maps
