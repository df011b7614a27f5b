"""A run's predictions as one TagLab project, for correction in TagLab
(inference_with_coralscop.py --taglab): <output>/taglab_project.json.

- One map per finished image, in file order, named after the image's stem; one region
  per predicted colony, its genus as class name and its confidence in the region's data
  (exchange/taglab.py); TagLab's labels are the model's classes in the taxonomy's colours.
- Whole images: the instances of the image's record (COCO RLE), one mask at a time. The
  map's image is the input file when TagLab shows the pixels the model saw (an 8-bit
  RGB JPEG, PNG or TIFF without an EXIF rotation); otherwise (a rotated camera JPEG, a
  16-bit TIFF, ...) an upright 8-bit PNG copy in <output>/taglab_images/, since TagLab
  draws the file's stored pixels and the predictions are in the displayed frame.
- Tiled images: the colonies GeoJSON, back in pixel coordinates; the orthomosaic itself
  is the map's image and, when georeferenced, its georeference file.
- Pixel size: --mm-per-pixel, else the georeference's ground size (tiled images), else
  unknown. Acquisition date: the file's EXIF / TIFF DateTimeOriginal or DateTime.
- Maps over TagLab's 32767 px a side are left out, each named with what to do; the rest
  of the project is written and the run exits 1.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import shapely
from PIL import Image
from pycocotools import mask as mask_utils

from dataset.image_io import ImageReadError, read_header, read_rgb, write_image
from exchange.regions import Region
from exchange.taglab import TagLabError, TagLabWriter
from mosaic.batch import FOLDER
from mosaic.geojson import read_features
from mosaic.pipeline import output_paths
from mosaic.raster import header_facts, quiet_open
from mosaic.seams import mask_polygon

log = logging.getLogger("inference")

PROJECT = "taglab_project.json"
COPIES = "taglab_images"
# Files TagLab (Qt's image readers) shows with exactly the pixels image_io decodes
TAGLAB_AS_IS = {("JPEG", "RGB"), ("MPO", "RGB"), ("PNG", "RGB"), ("TIFF", "RGB")}
EXIF_DATES = (0x9003, 0x0132)  # DateTimeOriginal (Exif IFD), DateTime


def acquisition_date(path: Path) -> str | None:
    """YYYY-MM-DD from the file's EXIF or TIFF tags, or None."""
    try:
        with Image.open(path) as image:
            exif = image.getexif()
            found = [exif.get_ifd(0x8769).get(EXIF_DATES[0]), exif.get(EXIF_DATES[1])]
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    for value in found:
        if isinstance(value, str) and len(value) >= 10 and value[4] == ":" and value[7] == ":":
            date = value[:10].replace(":", "-")
            if date[:4].isdigit() and date != "0000-00-00":
                return date
    return None


def _map_image(path: Path, root: Path) -> Path:
    """The file TagLab opens for this image: the input, or an upright 8-bit PNG copy."""
    header = read_header(path)
    if header.orientation == 1 and (header.format, header.mode) in TAGLAB_AS_IS:
        return path.resolve()
    copy = root / COPIES / f"{path.stem}.png"
    copy.parent.mkdir(exist_ok=True)
    write_image(copy, cv2.cvtColor(read_rgb(path, name=path.name), cv2.COLOR_RGB2BGR))
    return copy.resolve()


def _instance_regions(record: dict, classes: Sequence[str]) -> Iterator[Region]:
    """The record's instances, decoded one mask at a time."""
    for number, annotation in enumerate(record["annotations"], start=1):
        mask = mask_utils.decode(annotation["segmentation"]).astype(bool)
        geometry = mask_polygon(mask, 0, 0)
        if geometry is not None:
            label = classes[annotation["category_id"]]
            yield Region(label, geometry, number, annotation["score"])


def _colony_regions(geojson: Path, image: Path) -> Iterator[Region]:
    """The colonies GeoJSON's polygons back in the image's pixel coordinates, one at a time."""
    with quiet_open(image) as src:
        inverse = ~src.transform if src.crs is not None else None
    matrix = None if inverse is None else [inverse.a, inverse.b, inverse.d, inverse.e,
                                           inverse.c, inverse.f]  # fmt: skip
    for feature in read_features(geojson):
        geometry = shapely.geometry.shape(feature["geometry"])
        if matrix is not None:
            geometry = shapely.affinity.affine_transform(geometry, matrix)
        props = feature["properties"]
        yield Region(props["class"], geometry, props["id"], props["confidence"])


def write_run_project(
    root: Path,
    images: Sequence[Path],
    record_of,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    mm_per_pixel: float | None = None,
    project: Path | None = None,
) -> tuple[Path | None, list[str]]:
    """<root>/taglab_project.json (or `project`) from every finished image (record_of(stem):
    its record file); returns the project's path (None when no map could be written) and
    the names of the images left out, each logged with why."""
    # TagLab's labels: the classes a region can have (background is no region)
    labels = [(n, tuple(int(v) for v in c)) for n, c in zip(classes, palette, strict=True)][1:]
    project = project or root / PROJECT
    writer = TagLabWriter(project, labels, dictionary_name="coral toolkit classes")
    refused: list[str] = []
    maps = 0
    try:
        for path in images:
            record_file = Path(record_of(path.stem))
            if not record_file.is_file():
                continue  # not done: the run's summary names it already
            record = json.loads(record_file.read_text())
            try:
                _add_map(writer, path, record, root, classes, mm_per_pixel)
                maps += 1
            except (TagLabError, ImageReadError) as exc:
                refused.append(path.name)
                log.error("%s: not in %s: %s", path.name, PROJECT, exc)
        if not maps:
            writer.abort()
            return None, refused
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    log.info("TagLab project: %s (%d maps, %d regions)", writer.path, maps, writer.count)
    return writer.path, refused


def _add_map(writer: TagLabWriter, path: Path, record: dict, root: Path,
             classes: Sequence[str], mm_per_pixel: float | None) -> None:  # fmt: skip
    height, width = record["image"]["height"], record["image"]["width"]
    mosaic = record.get("mosaic")
    georeference = None
    if mosaic is not None:
        image = path.resolve()
        facts = header_facts(path)
        if facts is not None and facts[2]:
            georeference = image
        if mm_per_pixel is None and mosaic.get("m2_per_pixel"):
            mm_per_pixel = math.sqrt(mosaic["m2_per_pixel"]) * 1000
    else:
        image = _map_image(path, root)
    date = acquisition_date(path)
    writer.begin_map(path.stem, image, width, height, mm_per_pixel=mm_per_pixel,
                     georeference=georeference, acquisition_date=date)  # fmt: skip
    if mosaic is not None:
        writer.write(_colony_regions(output_paths(root / FOLDER, path.stem)["colonies"], path))
    else:
        writer.write(_instance_regions(record, classes))
    writer.end_map()
