"""TagLab projects (.json) in and out: every map's regions read, predictions written.

TagLab (https://github.com/cnr-isti-vclab/TagLab) is the reef field's orthomosaic
annotation tool. No TagLab code is used here; the format facts below were read from its
source at commit 0150d84f1a2fd2835175fc9725b230d7a2a19306 (v2026.4.1-3, May 2026):
source/Project.py (loadProject, Project.save, ProjectEncoder), source/Image.py,
source/Channel.py, source/Blob.py, source/Mask.py, source/Label.py, source/Annotation.py,
source/RegionAttributes.py, source/QtPanelInfo.py and TagLab.py.

The project file: one JSON object, `Project(**data)` in TagLab, so only its constructor's
keys may appear (an unknown key is a TypeError there): filename, working_area,
dictionary_name, dictionary_description, labels ({name: {id, name, description, fill,
border, visible}}; TagLab adds "Empty" when missing), images (the maps), correspondences,
genet, region_attributes ({name, description, data: [attribute definitions]}),
spatial_reference_system, metadata, image_metadata_template, markers. A project with a
"Map File" key is the pre-2020 single-map format (refused here: TagLab converts it).

A map (`Image(**map)`, same rule for keys): name and id (TagLab uses the name as id),
width and height in pixels, map_px_to_mm_factor (the pixel size in mm, saved as a
string; "" means unknown, which TagLab's pixelSize() reads as 1), acquisition_date
(YYYY-MM-DD; TagLab replaces a missing or invalid date by 1955-11-05 when loading, so
that date reads back as unknown), georef_filename (a GeoTIFF TagLab opens with rasterio
when loading: it must exist), channels ([{filename, type: "RGB" | "DEM"}]), annotations
({"regions": [blobs], "points": [...]}; older versions: a plain list of blobs), layers,
grid, workspace, export_dataset_area, sampling_areas, rect, metadata. TagLab refuses
images over 32767 pixels a side (Image.addChannel, QtMapSettingsWidget).

File paths (channels, georef_filename) are NOT relative to the project file: TagLab
stores them relative to its own installation folder (QDir(taglab_dir).relativeFilePath,
e.g. "sampleProjects/data/VOS_RGB.png"), opens them relative to the working directory it
was started in, and accepts absolute paths as they are. The project's own `filename`
key is relative to the same folder, which is how the reader finds that folder. The
writer stores absolute paths, the only ones that open wherever TagLab is installed; a
map whose file moved makes TagLab ask for it, then fix every map in that folder.

The working area is project-wide (the maps are co-registered): [top, left, width,
height] in pixels, a rectangle covering pixel columns left .. left+width-1 and rows top
.. top+height-1 (genutils.cropQImage copies exactly those), or null.

A blob (one region; Blob.fromDict / toDict): "contour" (the outer boundary), "inner
contours" (holes), "bbox", "centroid", "area", "perimeter", "class name", "instance
name", "blob name", "id" (an integer unique in its map: TagLab renumbers duplicates),
"note", "data" (free per-region values: TagLab's region attributes, declared in the
project's region_attributes, kept through load, save, copy and cut).
- Points are (x, y) with the centre of pixel (row r, column c) at (c, r): TagLab's
  contours come from skimage.measure.find_contours on the mask (pixel centres at integer
  coordinates), and Blob.setupForDrawing adds 0.5 to draw them over the image.
- TagLab's mask of a blob (Blob.getMask, also behind dilate/erode and its exports) is
  cv2.fillPoly of the contour points rounded to integers, minus cv2.fillPoly of each
  rounded inner contour; fillPoly includes the pixels on the polygon's edges. So a
  region's pixels are the pixels that mask holds, and this module reads them that way.
- Saved as text: the coordinates times 10, truncated to integers, the first point then
  the differences to the previous one, space separated ("80 1144 -10 0 ..."); older
  projects: a list of [x, y]. Both are read.
- bbox = Mask.pointsBox(contour, 4): [top, left, width, height] =
  int([min y - 4, min x - 4, max x - min x + 8, max y - min y + 8]) (float arithmetic,
  then truncation toward zero); getMask draws into a bbox-sized array at (left, top).
- area = the mask's pixel count; centroid = the mean (x, y) of the mask's pixel indices
  (skimage moments), saved truncated to one decimal; perimeter = the length of the
  closed outer contour plus the inner ones; blob name = "c-{id}-{x:.1f}x-{y:.1f}y".

Reading (read_taglab_project): each blob becomes a Region whose geometry is the polygon
of exactly the pixels of TagLab's mask (the rounded contours filled with OpenCV as
TagLab does, then polygonized with pixel edges, holes kept): valid by construction, and
its area is its pixel count (so no repair is needed; a self-crossing outline is what
fillPoly makes of it, as in TagLab). A contour with no area as drawn (fewer than three
points, or its polygon, repaired with shapely.make_valid, of zero area: all on a line) is
skipped with a TagLabWarning, as is a blob wholly outside its map; a region reaching past
the map's edge is clipped to it. The class name is the label as written (TagLab's
unassigned class is the string "Empty"); the confidence is the blob's data["confidence"]
when it is a number. One region's mask is held at a time (in bands of rows past
MAX_MASK_PIXELS, where a sloping edge at a band's border may differ by a pixel from
OpenCV's unbanded fill).

Writing (TagLabWriter): a project TagLab opens as it is, streamed: the header and the
labels, then each map with its blobs appended as they come (the map's annotations are
the last key of its JSON object), in a temporary file renamed into place on commit().
- Contours are made so that TagLab's mask equals the region's pixels exactly: a region
  is first reduced to its pixels (a polygon with integer, axis-parallel edges, such as
  mosaic/seams.py makes, is used as it is; any other shape is rasterized with the
  pixel-centre rule), then each ring is moved 0.4 px toward its own inside (mitred
  corners) and into TagLab's centre convention (-0.5). The points round to the centres
  of the ring's boundary pixels, and land where TagLab's own contours lie (find_contours
  at 0.6 for the outer contour, 0.4 for holes: 0.1 px from the pixel edges, toward the
  ring's inside). Only the corners are written.
- TagLab's blobs have one outer contour: a region of several parts (a MultiPolygon, or
  pixels touching only at corners) is written as one blob per 4-connected part. The parts
  share the instance name "colony<N>" and data["colony"] = N (N: the region's id when it
  has one, else its number in the map, from 1); read_taglab_project(join_parts=True)
  joins them back. Blob ids are numbered 1, 2, ... in each map.
- The confidence goes to data["confidence"] (rounded to 4 decimals); "confidence"
  (decimal number, 0..1) and "colony" (integer number) are declared as region
  attributes, so TagLab shows them in a region's Attributes tab and exports them with
  its data table. Its spin box has 2 decimals (QDoubleSpinBox's default) and writes what
  it shows back, so a region viewed with that tab open may keep 2 decimals.
- bbox, centroid, area, perimeter and blob name are computed as TagLab computes them.

Checked with TagLab's own loader at that commit (tools/check_taglab_project.py): a
written project loads, every blob's getMask() equals the region's pixels, and the data
survives TagLab's Project.save.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize, shapes
from rasterio.transform import Affine
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

from dataset.image_io import StreamedTextFile
from exchange.regions import AnnotatedMap, Region
from mosaic.seams import Colony

TAGLAB_COMMIT = "0150d84f1a2fd2835175fc9725b230d7a2a19306"  # the source the format was read from
TAGLAB_MAX_SIDE = 32767  # TagLab refuses larger images (Image.addChannel)
TAGLAB_NO_DATE = "1955-11-05"  # what TagLab's loader puts for a missing or invalid date
BBOX_PAD = 4  # Mask.pointsBox(contour, 4), as Blob.updateUsingMask calls it
# Where each ring's points go, inward from the pixel edges, before the -0.5 shift to
# TagLab's pixel centres: 0.4 puts them where TagLab's own contours lie (module docstring)
# and rounds them to the boundary pixels' centres.
INSET = 0.4
BORDER = [200, 200, 200]  # TagLab's label border colour (Label's default)
# A region's mask, in pixels, above which it is built in bands of rows (bounded memory).
MAX_MASK_PIXELS = 1 << 26
FLUSH_BLOBS = 1000  # blobs held before they are written out
CONFIDENCE = "confidence"
COLONY = "colony"


class TagLabError(ValueError):
    """A TagLab project that cannot be read or written; the message says which and why."""


class TagLabWarning(UserWarning):
    """A region of a TagLab project that was skipped or changed while reading it."""


# ---------------------------------------------------------------------------- reading


def read_taglab_project(
    path: str | Path, *, taglab_dir: str | Path | None = None, join_parts: bool = False
) -> list[AnnotatedMap]:
    """Every map of the TagLab project at `path`, with its regions (module docstring).

    Relative file paths in the project are relative to TagLab's installation folder:
    `taglab_dir` when given, else the folder the project's own `filename` key points to,
    else the project's folder; the first where the file exists wins (a missing image is
    the caller's to report). `join_parts`: blobs that share data["colony"] and a class
    (the parts TagLabWriter writes for one multi-part region) become one Region, with
    that colony number as id; off by default, since a person's cut in TagLab copies the
    data to both halves.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise TagLabError(
            f"{path}: no such file; give the path of a TagLab project (.json)"
        ) from None
    except IsADirectoryError:
        raise TagLabError(f"{path}: a folder; give the path of a TagLab project (.json)") from None
    except OSError as exc:
        raise TagLabError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise TagLabError(f"{path}: not a TagLab project (not UTF-8 text)") from None
    except json.JSONDecodeError as exc:
        raise TagLabError(
            f"{path}: not a TagLab project: invalid JSON at line {exc.lineno}, column "
            f"{exc.colno} ({exc.msg}); open it in TagLab or restore a saved copy"
        ) from None
    if not isinstance(data, dict):
        raise TagLabError(f"{path}: not a TagLab project (a JSON object was expected)")
    if "Map File" in data:
        raise TagLabError(
            f"{path}: a TagLab project of the pre-2020 format (one map, 'Map File'); open it "
            "in TagLab and save it again, which converts it"
        )
    images = data.get("images")
    if not isinstance(images, list):
        raise TagLabError(
            f"{path}: not a TagLab project (no 'images' list of maps); is it a TagLab "
            "project saved by TagLab?"
        )
    bases = _path_bases(path, data.get("filename"), taglab_dir)
    area = _working_area(path, data.get("working_area"))
    # one GDAL environment for all of rasterio's polygonizing (it sets one up per call else)
    maps = []
    with rasterio.Env():
        for index, image in enumerate(images):
            maps.append(_read_map(path, index, image, bases, area, join_parts))
    return maps


def _read_map(
    path: Path, index: int, image, bases: list[Path], area: BaseGeometry | None, join: bool
) -> AnnotatedMap:
    if not isinstance(image, dict):
        raise TagLabError(f"{path}: map {index + 1} is not a JSON object")
    # TagLab's loader names a nameless map "noname01", "noname02", ...
    name = str(image.get("name") or image.get("id") or f"noname{index + 1:02d}")
    where = f"{path}, map {name!r}"
    channels = image.get("channels")
    rgb = None
    if isinstance(channels, list):
        for channel in channels:
            if isinstance(channel, dict) and channel.get("type") == "RGB":
                rgb = channel.get("filename")
                break
    if not isinstance(rgb, str) or not rgb:
        raise TagLabError(
            f"{where}: no RGB channel (the orthomosaic's file); open the project in TagLab "
            "and give the map its RGB image (Map settings), or remove the map"
        )
    width, height = image.get("width"), image.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        raise TagLabError(
            f"{where}: no valid width and height ({width!r} x {height!r}); open the project "
            "in TagLab and save it again, which stores them"
        )
    georef = image.get("georef_filename")
    annotated = AnnotatedMap(
        name=name,
        image=_resolve(rgb, bases),
        width=width,
        height=height,
        area=area,
        mm_per_pixel=_pixel_size(image.get("map_px_to_mm_factor")),
        acquisition_date=_date(image.get("acquisition_date")),
        georeference=_resolve(georef, bases) if isinstance(georef, str) and georef else None,
    )
    annotations = image.get("annotations")
    blobs = annotations.get("regions") if isinstance(annotations, dict) else annotations
    if blobs is None:
        blobs = []
    if not isinstance(blobs, list):
        raise TagLabError(f"{where}: its 'annotations' hold no list of regions")
    regions = []
    colonies = []  # the data["colony"] of each region, for join_parts
    skipped = []
    for number, blob in enumerate(blobs):
        region, colony = _read_blob(where, number, blob, width, height)
        if region is None:
            skipped.append(colony)
            continue
        regions.append(region)
        colonies.append(colony)
    if skipped:
        shown = ", ".join(skipped[:10]) + (", ..." if len(skipped) > 10 else "")
        warnings.warn(f"{where}: {len(skipped)} regions skipped: {shown}", TagLabWarning, 3)
    annotated.regions = _join(regions, colonies) if join else regions
    return annotated


def _read_blob(
    where: str, number: int, blob, width: int, height: int
) -> tuple[Region | None, object]:
    """The region of one blob, with its data["colony"]; (None, why) for a skipped one."""
    if not isinstance(blob, dict):
        raise TagLabError(f"{where}: region {number + 1} is not a JSON object")
    blob_id = blob.get("id")
    label = blob.get("class name")
    if not isinstance(label, str):
        raise TagLabError(
            f"{where}: region {number + 1} (id {blob_id}) has no 'class name'; TagLab "
            "cannot open this project either: restore a copy it saved"
        )
    try:
        outer = _decode(blob["contour"])
        holes = [_decode(hole) for hole in blob.get("inner contours") or []]
    except (KeyError, TypeError, ValueError):
        raise TagLabError(
            f"{where}: region {number + 1} (id {blob_id}) has no readable 'contour'; TagLab "
            "cannot open this project either: restore a copy it saved"
        ) from None
    # A contour with no area as drawn is no region a person or TagLab made (TagLab builds
    # contours from masks); fillPoly would still paint its line, so say it is left out.
    # make_valid, for the rare zero shoelace sum of a self-crossing outline whose lobes
    # cancel: repaired, its lobes have area.
    drawn = shapely.Polygon(outer) if len(outer) >= 3 else None
    if drawn is None or (drawn.area == 0 and shapely.make_valid(drawn).area == 0):
        return None, f"id {blob_id} (contour without area)"
    geometry = _mask_polygons(outer, holes)
    if not geometry.within(box(0, 0, width, height)):
        geometry = _polygonal(geometry.intersection(box(0, 0, width, height)))
        if geometry.is_empty:
            return None, f"id {blob_id} (outside the map)"
    data = blob.get("data")
    data = data if isinstance(data, dict) else {}
    confidence = data.get(CONFIDENCE)
    if not _is_number(confidence) or not math.isfinite(confidence):
        confidence = None
    region_id = blob_id if isinstance(blob_id, int) and not isinstance(blob_id, bool) else None
    region = Region(
        label,
        geometry,
        region_id,
        None if confidence is None else float(confidence),
    )
    return region, data.get(COLONY)


def _join(regions: list[Region], colonies: list) -> list[Region]:
    """Regions sharing a colony number and a class as one (join_parts)."""
    groups: dict[tuple[int, str], list[Region]] = {}
    order: list[tuple[int, str] | Region] = []
    for region, colony in zip(regions, colonies, strict=True):
        if not isinstance(colony, int) or isinstance(colony, bool):
            order.append(region)
            continue
        key = (colony, region.label)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(region)
    joined = []
    for item in order:
        if isinstance(item, Region):
            joined.append(item)
            continue
        parts = groups[item]
        if len(parts) == 1:
            geometry = parts[0].geometry
        else:
            geometry = _polygonal(shapely.union_all([p.geometry for p in parts]))
        joined.append(Region(item[1], geometry, item[0], parts[0].confidence))
    return joined


def _decode(value) -> np.ndarray:
    """A contour as TagLab saves it (Blob.toPoints, or an older list of [x, y]) -> (n, 2)."""
    if isinstance(value, str):
        steps = np.array(value.split(), dtype=np.int64)
        if steps.size % 2:
            raise ValueError("odd number of coordinates")
        # the same arithmetic as Blob.toContour, so rounding sees the same numbers
        return np.cumsum(steps.reshape(-1, 2), axis=0) / 10.0
    points = np.asarray(value, dtype=float)
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ValueError("not a list of [x, y]")
    return points


def _mask_polygons(outer: np.ndarray, holes: list[np.ndarray]) -> BaseGeometry:
    """The pixels of Blob.getMask (module docstring) as a pixel-edge polygon."""
    rounded = outer.round().astype(np.int64)  # numpy's rounding, as TagLab's
    rounded_holes = [hole.round().astype(np.int64) for hole in holes if len(hole)]
    x0, y0 = rounded.min(axis=0)
    x1, y1 = rounded.max(axis=0) + 1

    def paint(mask: np.ndarray, row: int) -> None:
        origin = np.array([x0, y0 + row])
        cv2.fillPoly(mask, [(rounded - origin).astype(np.int32)], 1)
        for hole in rounded_holes:
            cv2.fillPoly(mask, [(hole - origin).astype(np.int32)], 0)

    return _banded(int(x0), int(y0), int(x1 - x0), int(y1 - y0), paint)


def _banded(
    x0: int, y0: int, width: int, height: int, paint: Callable[[np.ndarray, int], None]
) -> BaseGeometry:
    """The polygon (holes kept) of the pixels `paint(mask, row0)` sets in a mask of
    width x height placed at (x0, y0): painted whole, or in bands of rows when large (a
    band holds rows row0 .. row0 + its height)."""
    rows = max(1, min(height, MAX_MASK_PIXELS // max(width, 1)))
    parts = []
    for row in range(0, height, rows):
        mask = np.zeros((min(rows, height - row), width), np.uint8)
        paint(mask, row)
        where = Affine.translation(x0, y0 + row)
        parts += [
            shapely.geometry.shape(g) for g, _ in shapes(mask, mask=mask > 0, transform=where)
        ]
    if not parts:
        return shapely.Polygon()
    if rows < height:
        return _polygonal(shapely.union_all(parts))
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    """The areal part of a geometry, as a Polygon or MultiPolygon (possibly empty)."""
    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def _path_bases(path: Path, stored, taglab_dir: str | Path | None) -> list[Path]:
    """Folders a relative path in the project may be relative to, most likely first."""
    bases = [Path(taglab_dir)] if taglab_dir is not None else []
    here = path.resolve()
    # The project's `filename` is relative to TagLab's folder when TagLab saved it there
    # or below ("sampleProjects/x.json"): strip its folders from the project's real folder
    # to get TagLab's (the folders only: a project file may have been renamed since).
    if isinstance(stored, str) and stored and not os.path.isabs(stored):
        folders = Path(os.path.normpath(stored)).parent.parts
        folder = here.parent.parts
        tail = folder[len(folder) - len(folders) :]
        if ".." not in folders and len(folders) < len(folder) and tail == folders:
            bases.append(Path(*folder[: len(folder) - len(folders)]))
    bases.append(here.parent)
    return bases


def _resolve(filename: str, bases: list[Path]) -> Path:
    # Windows separators in a project saved there (QDir writes "/", a user may not)
    filename = filename.replace("\\", "/") if os.sep == "/" else filename
    if os.path.isabs(filename):
        return Path(filename)
    candidates = [Path(os.path.normpath(base / filename)) for base in bases]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return candidates[0]


def _working_area(path: Path, value) -> BaseGeometry | None:
    if value is None or (isinstance(value, list) and not value):
        return None
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
        raise TagLabError(
            f"{path}: the working area {value!r} is not [top, left, width, height]; set it "
            "again in TagLab (Working area) or delete it"
        )
    top, left, width, height = value
    if width <= 0 or height <= 0:
        return None  # TagLab draws none either (QtImageViewerPlus.drawWorkingArea)
    return box(left, top, left + width, top + height)


def _pixel_size(value) -> float | None:
    try:
        size = float(str(value).strip())  # saved as text, sometimes " 1.275"
    except ValueError:
        return None
    return size if math.isfinite(size) and size > 0 else None


def _date(value) -> str | None:
    if not isinstance(value, str) or value.strip() == TAGLAB_NO_DATE:
        return None
    try:
        # TagLab's own test (genutils.isValidDate), which also takes "2000-1-01"
        return datetime.datetime.strptime(value.strip(), "%Y-%m-%d").date().isoformat()
    except ValueError:
        return None


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------- writing


def colony_regions(colonies: Iterable[Colony], classes: Sequence[str]) -> Iterator[Region]:
    """mosaic.seams colonies as Regions for TagLabWriter.write: class index -> name."""
    for colony in colonies:
        if not 0 <= colony.label < len(classes):
            raise TagLabError(
                f"colony class index {colony.label} is not in the {len(classes)} classes given"
            )
        yield Region(classes[colony.label], colony.geometry, None, colony.confidence)


class TagLabWriter:
    """A TagLab project written map by map, regions streamed (module docstring): per map,
    begin_map(), write() any number of times (colony_regions() turns mosaic.seams
    colonies into regions), end_map(); then commit(), or abort() to leave nothing."""

    def __init__(
        self,
        path: str | Path,
        labels: Sequence[tuple[str, tuple[int, int, int]]],
        *,
        dictionary_name: str = "",
        working_area: BaseGeometry | None = None,
    ) -> None:
        self.path = Path(path)
        self.count = 0  # regions written
        self.blobs = 0  # TagLab blobs written (one per part of a region)
        self.skipped = 0  # regions without pixels in the map (empty, lines, outside)
        self._names: set[str] = set()
        self._map: str | None = None
        self._in_map = 0  # regions of the current map
        self._blobs_in_map = 0
        self._next_id = 1  # the current map's next blob id
        self._frame = box(0, 0, 0, 0)  # the current map's extent
        self._with_confidence = False
        label_dict = {}
        for name, colour in labels:
            if name in label_dict:
                raise TagLabError(f"{self.path}: the label {name!r} is given twice")
            fill = [int(c) for c in colour]
            if len(fill) != 3 or not all(0 <= c <= 255 for c in fill):
                raise TagLabError(f"{self.path}: label {name!r}: colour {colour!r} is no RGB")
            label_dict[name] = {"id": name, "name": name, "description": None,
                                "fill": fill, "border": BORDER, "visible": True}  # fmt: skip
        header = {
            # TagLab replaces it by the path it opened; kept absolute for a reader
            "filename": os.path.abspath(self.path),
            "working_area": _area_rectangle(working_area),
            "dictionary_name": dictionary_name,
            "dictionary_description": "",
            "labels": label_dict,
        }
        self._file = StreamedTextFile(self.path, json.dumps(header)[:-1] + ',\n "images": [')

    def begin_map(
        self,
        name: str,
        image: str | Path,
        width: int,
        height: int,
        mm_per_pixel: float | None = None,
        georeference: str | Path | None = None,
        acquisition_date: str | datetime.date | None = None,
    ) -> None:
        """Start a map: its orthomosaic `image` (RGB channel), size in pixels, pixel size
        in mm, georeferenced GeoTIFF (often `image` itself) and date (YYYY-MM-DD)."""
        if self._map is not None:
            raise RuntimeError(
                f"{self.path}: begin_map({name!r}) before end_map() of {self._map!r}"
            )
        where = f"{self.path}, map {name!r}"
        if not name or name in self._names:
            raise TagLabError(f"{where}: a map needs a name of its own (TagLab's map id)")
        if width > TAGLAB_MAX_SIDE or height > TAGLAB_MAX_SIDE:
            raise TagLabError(
                f"{where}: {width} x {height} pixels; TagLab cannot open images over "
                f"{TAGLAB_MAX_SIDE} pixels a side. Cut the orthomosaic into parts TagLab "
                "opens (gdal_translate -srcwin XOFF YOFF XSIZE YSIZE ortho.tif part.tif) "
                "and predict each part, or predict a smaller area"
            )
        if width <= 0 or height <= 0:
            raise TagLabError(f"{where}: {width} x {height} pixels is no image")
        image = Path(image)
        if not image.is_file():
            # TagLab would stop loading the project to ask for it
            raise TagLabError(f"{where}: the image {image} does not exist")
        if georeference is not None and not Path(georeference).is_file():
            # TagLab opens it while loading and fails when it is missing
            raise TagLabError(f"{where}: the georeference file {georeference} does not exist")
        if mm_per_pixel is not None and not (math.isfinite(mm_per_pixel) and mm_per_pixel > 0):
            raise TagLabError(f"{where}: pixel size {mm_per_pixel} mm is not a positive number")
        date = ""
        if acquisition_date is not None:
            date = str(acquisition_date)
            if _date(date) is None:
                raise TagLabError(
                    f"{where}: acquisition date {acquisition_date!r} is not YYYY-MM-DD (TagLab "
                    f"would replace it by {TAGLAB_NO_DATE})"
                )
            date = _date(date)
        fields = {
            "rect": [0.0, 0.0, 0.0, 0.0],
            "map_px_to_mm_factor": "" if mm_per_pixel is None else repr(float(mm_per_pixel)),
            "width": int(width),
            "height": int(height),
            "channels": [{"filename": os.path.abspath(image), "type": "RGB"}],
            "id": name,
            "name": name,
            "acquisition_date": date,
            "georef_filename": "" if georeference is None else os.path.abspath(georeference),
            "workspace": [],
            "metadata": {},
            "layers": [],
            "grid": None,
            "export_dataset_area": [],
            "sampling_areas": [],
        }
        text = json.dumps(fields)[:-1] + ', "annotations": {"points": [], "regions": [\n'
        self._put(("," if self._names else "") + "\n " + text)
        self._names.add(name)
        self._map = name
        self._in_map = 0
        self._blobs_in_map = 0
        self._next_id = 1
        self._frame = box(0, 0, width, height)

    def write(self, regions: Iterable[Region]) -> None:
        """Append regions to the current map (colony_regions() makes them from colonies).
        Region.label: the class name; Region.id, when set, its colony number. A region is
        clipped to the map; one without pixels there is skipped (counted in `skipped`)."""
        if self._map is None:
            raise RuntimeError(f"{self.path}: write() outside begin_map() .. end_map()")
        lines: list[str] = []
        with rasterio.Env():  # one for all the regions' polygonizing (see the reader)
            for region in regions:
                self._in_map += 1
                colony = region.id if region.id is not None else self._in_map
                geometry = region.geometry
                if not geometry.is_empty and not geometry.within(self._frame):
                    # pixels outside the image are none TagLab can show or edit
                    geometry = geometry.intersection(self._frame)
                parts = _pixel_parts(geometry)
                if not parts:
                    self.skipped += 1
                    continue
                self.count += 1
                data: dict = {COLONY: int(colony)}
                if region.confidence is not None:
                    data[CONFIDENCE] = round(float(region.confidence), 4)
                    self._with_confidence = True
                for part in parts:
                    lines.append(json.dumps(self._blob(part, region.label, colony, data)))
                if len(lines) >= FLUSH_BLOBS:  # a long iterable stays streamed
                    self._put_blobs(lines)
                    lines = []
        self._put_blobs(lines)

    def _put_blobs(self, lines: list[str]) -> None:
        if lines:
            self._put(("" if self._blobs_in_map == 0 else ",\n") + ",\n".join(lines))
            self.blobs += len(lines)
            self._blobs_in_map += len(lines)

    def end_map(self) -> None:
        if self._map is None:
            raise RuntimeError(f"{self.path}: end_map() without begin_map()")
        self._put("\n]}}")
        self._map = None

    def commit(self) -> None:
        """Finish the project (ending an open map) and move it into place."""
        if self._map is not None:
            self.end_map()
        attributes = [{"name": COLONY, "type": "integer number", "min": None, "max": None,
                       "keywords": []}]  # fmt: skip
        if self._with_confidence:
            attributes.append({"name": CONFIDENCE, "type": "decimal number", "min": 0.0,
                               "max": 1.0, "keywords": []})  # fmt: skip
        tail = {
            "correspondences": {},
            "genet": {},
            "region_attributes": {"name": "", "description": "", "data": attributes},
            "spatial_reference_system": None,
            "metadata": {},
            "image_metadata_template": {},
            "markers": {},
        }
        self._file.commit("\n],\n " + json.dumps(tail)[1:] + "\n")

    def abort(self) -> None:
        self._file.abort()

    def _put(self, text: str) -> None:
        self._file.write(text)

    def _blob(self, part: Polygon, label: str, colony: int, data: dict) -> dict:
        blob_id = self._next_id
        self._next_id += 1
        outer = _ring_contour(part.exterior)
        holes = [_ring_contour(ring) for ring in part.interiors]
        contour = outer / 10.0  # as TagLab reads it back (Blob.toContour)
        # centroid: the mean pixel index (x, y) = the polygon's centroid - 0.5
        centre = part.centroid
        x, y = centre.x - 0.5, centre.y - 0.5
        perimeter = _perimeter(contour) + sum(_perimeter(h / 10.0) for h in holes)
        return {
            "bbox": taglab_bbox(contour).tolist(),
            "centroid": [math.trunc(10 * x) / 10, math.trunc(10 * y) / 10],
            "area": float(round(part.area)),
            "perimeter": math.trunc(10 * perimeter) / 10,
            "contour": _encode(outer),
            "inner contours": [_encode(h) for h in holes],
            "class name": label,
            "instance name": f"colony{colony}",
            "blob name": f"c-{blob_id:d}-{x:.1f}x-{y:.1f}y",
            "id": blob_id,
            "note": "",
            "data": data,
        }


def taglab_bbox(contour: np.ndarray) -> np.ndarray:
    """TagLab's bbox of a contour (Mask.pointsBox(contour, 4)): [top, left, width, height]."""
    top, left = contour[:, 1].min() - BBOX_PAD, contour[:, 0].min() - BBOX_PAD
    right, bottom = contour[:, 0].max() + BBOX_PAD, contour[:, 1].max() + BBOX_PAD
    return np.array([top, left, right - left, bottom - top]).astype(int)


def _area_rectangle(area: BaseGeometry | None) -> list[int] | None:
    """A geometry's pixel bounding box as TagLab's working area, [top, left, width, height]."""
    if area is None or area.is_empty:
        return None
    minx, miny, maxx, maxy = area.bounds
    left, top = math.floor(minx), math.floor(miny)
    return [top, left, math.ceil(maxx) - left, math.ceil(maxy) - top]


def _pixel_parts(geometry: BaseGeometry) -> list[Polygon]:
    """The pixels a geometry covers (pixel-centre rule) as pixel-edge polygons, one per
    4-connected part; [] when it covers none."""
    if geometry.is_empty:
        return []
    if not geometry.is_valid:
        geometry = shapely.make_valid(geometry, method="structure", keep_collapsed=False)
    geometry = _polygonal(geometry)
    if geometry.is_empty or geometry.area == 0:
        return []
    if _on_pixel_edges(geometry):
        return [p for p in shapely.get_parts(geometry) if p.area > 0]
    minx, miny, maxx, maxy = geometry.bounds
    x0, y0 = math.floor(minx), math.floor(miny)
    width, height = math.ceil(maxx) - x0, math.ceil(maxy) - y0

    def paint(mask: np.ndarray, row: int) -> None:
        where = Affine.translation(x0, y0 + row)
        rasterize([(geometry, 1)], out=mask, transform=where)

    return list(shapely.get_parts(_banded(x0, y0, width, height, paint)))


def _on_pixel_edges(geometry: BaseGeometry) -> bool:
    """Whether every edge runs along pixel edges: integer vertices, axis-parallel edges."""
    for ring in shapely.get_rings(shapely.get_parts(geometry)):
        xy = shapely.get_coordinates(ring)
        if not np.array_equal(xy, np.round(xy)):
            return False
        step = np.diff(xy, axis=0)
        if np.any((step[:, 0] != 0) & (step[:, 1] != 0)):
            return False
    return True


def _ring_contour(ring) -> np.ndarray:
    """A pixel-edge ring as TagLab contour points in tenths of a pixel (module docstring)."""
    closed = shapely.get_coordinates(ring)
    x, y = closed[:, 0], closed[:, 1]
    # counter-clockwise in a y-up frame: the ring's inside is on the left of each edge
    if np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]) < 0:
        closed = closed[::-1]
    step = np.diff(closed, axis=0)  # step[i]: from point i to point i + 1
    moves = np.any(step != 0, axis=1)  # repeated points dropped
    xy, step = closed[:-1][moves], step[moves]
    # straight-through points dropped: only the corners, where the edges turn
    before = step[np.arange(len(step)) - 1]
    turns = before[:, 0] * step[:, 1] != before[:, 1] * step[:, 0]
    xy = xy[turns]
    step = np.diff(np.vstack([xy, xy[:1]]), axis=0)
    before = step[np.arange(len(step)) - 1]
    # axis-parallel edges meet at right angles: the mitred corner moves by INSET along
    # both edges' inward (left) unit normals, (-dy, dx) of a unit step
    inward = np.sign(np.stack([-before[:, 1] - step[:, 1], before[:, 0] + step[:, 0]], axis=1))
    return np.rint((xy + INSET * inward - 0.5) * 10).astype(np.int64)


def _encode(tenths: np.ndarray) -> str:
    """Blob.toPoints's text: the first point, then differences, in tenths of a pixel."""
    steps = np.diff(tenths, axis=0, prepend=np.zeros((1, 2), np.int64))
    return " ".join(str(int(v)) for v in steps.reshape(-1))


def _perimeter(contour: np.ndarray) -> float:
    """Blob.calculateContourPerimeter: the closed polyline's length."""
    closed = np.vstack([contour, contour[:1]])
    return float(np.sum(np.hypot(*np.diff(closed, axis=0).T)))
