"""Which reader an input needs: the one place that tells the toolkit's outputs apart.

two-stage inference output   predictions.json or masks/      analysis/sources.py
prepared dataset             annotations/<split>/            analysis/sources.py
folder of class maps         <stem>.png, with --classes      analysis/sources.py
tiled inference's mosaics/   <stem>.classes.tif + .geojson   analysis/mosaic_source.py
TagLab project               <name>.json file                analysis/polygon_source.py
GIS polygons                 .geojson/.gpkg/.shp + --images  analysis/polygon_source.py

The last two are corrected annotations (of orthomosaics, in TagLab or QGIS), read by
exchange/open_maps.py as prepare_data.py reads them.
"""

from __future__ import annotations

from pathlib import Path

from analysis.mosaic_source import MosaicOutput, is_mosaic_folder
from analysis.polygon_source import PolygonSource
from analysis.sources import (
    ClassInfo,
    ClassMapFolder,
    LabelSource,
    PreparedSplit,
    SourceError,
    TwoStageOutput,
)
from exchange.open_maps import POLYGON_SUFFIXES, TAGLAB_SUFFIX, open_maps

# The attribute our own colony writers (mosaic/geojson.py, exchange/gis.py) name the class by.
DEFAULT_CLASS_FIELD = "class"
# Polygons name their classes; they resolve through this taxonomy unless --classes says.
DEFAULT_CLASSES = "fine"


def is_polygon_file(path: str | Path | None) -> bool:
    """A TagLab project or a GIS polygon file (by its suffix; a folder is neither)."""
    if path is None or Path(path).is_dir():
        return False
    return Path(path).suffix.lower() in (TAGLAB_SUFFIX, *POLYGON_SUFFIXES)


def open_source(
    path: str | Path,
    split: str = "test",
    classes: str | Path | ClassInfo | None = None,
    images: str | Path | None = None,
    class_field: str = DEFAULT_CLASS_FIELD,
    area: str | Path | None = None,
) -> LabelSource:
    """The reader for a folder: two-stage output, prepared dataset (its `split`), or class maps
    (with `classes`: a prepared dataset, whose images/<split> then names the photos, a
    classes.txt or a taxonomy name); or for a file of corrected polygons: a TagLab project,
    or a GIS polygon file (`images`: the orthomosaic it was drawn on; the class in the
    attribute `class_field`). `area`: a polygon file of the annotated area of either."""
    path = Path(path)
    images = Path(images) if images else None
    if path.is_file():
        return _open_polygons(path, classes, images, class_field, area)
    if area is not None:
        raise SourceError(
            f"--area {area}: the annotated area of a TagLab project or polygon file; "
            f"{path} is neither"
        )
    if not path.is_dir():
        raise SourceError(f"{path}: does not exist")
    if is_mosaic_folder(path):  # the mosaics/ folder of tiled inference
        return MosaicOutput(path)
    if (path / "predictions.json").exists() or (path / "masks").is_dir():
        return TwoStageOutput(path, images)
    if (path / "annotations").is_dir():
        return PreparedSplit.open(path, split)
    if classes is None:
        raise SourceError(
            f"{path}: a folder of class maps needs --classes (the prepared dataset the "
            "model was trained on, a classes.txt, or a taxonomy name such as fine)"
        )
    info = classes if isinstance(classes, ClassInfo) else ClassInfo.load(classes)
    split_photos = None if isinstance(classes, ClassInfo) else Path(classes) / "images" / split
    if images is None and split_photos is not None and split_photos.is_dir():
        images = split_photos  # maps predicted for that prepared split (test.py --pred-dir)
    return ClassMapFolder(path, info, images)


def _open_polygons(
    path: Path, classes: str | Path | ClassInfo | None, images: Path | None, class_field: str,
    area: str | Path | None,
) -> PolygonSource:  # fmt: skip
    suffix = path.suffix.lower()
    if suffix not in (TAGLAB_SUFFIX, *POLYGON_SUFFIXES):
        raise SourceError(
            f"{path}: not an input reef_stats reads; give an output folder, a prepared "
            f"dataset, a TagLab project (.json) or a polygon file ({', '.join(POLYGON_SUFFIXES)})"
        )
    if suffix != TAGLAB_SUFFIX and (images is None or not images.is_file()):
        raise SourceError(
            f"{path}: polygons are placed on the orthomosaic they were drawn on: give it as "
            f"--images (a GeoTIFF{'; ' + str(images) + ' is no file' if images else ''})"
        )
    info = classes if isinstance(classes, ClassInfo) else ClassInfo.load(
        classes or DEFAULT_CLASSES)  # fmt: skip
    try:
        if suffix == TAGLAB_SUFFIX:
            maps = open_maps(path, area=area)
        else:
            maps = open_maps(images, polygons=path, class_field=class_field, area=area)
    except (ValueError, OSError) as exc:  # TagLabError and GISError are ValueErrors
        message = str(exc)
        what = "a TagLab project" if suffix == TAGLAB_SUFFIX else "a polygon file"
        named = message if str(path) in message else f"{path}: {message}"
        raise SourceError(f"{named} (read as {what})") from None
    return PolygonSource(path, maps, info)
