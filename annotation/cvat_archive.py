"""Predictions to CVAT as an archive, and CVAT's "CVAT for images 1.1" export back.

Without a reachable CVAT server the annotation loop hands people a zip that CVAT imports
as it is, and later reads the corrected export they download. Both sides follow the
layout CVAT itself writes and reads (cvat/apps/dataset_manager/formats/cvat.py, v2.73):

- `annotations.xml` at the root of the zip: the exporter writes it there
  (`_export_task_or_job`); task "Upload annotations" loads every `*.xml` in the zip
  (`_import`), project "Import dataset" finds the XML recursively and reads the images
  from the `images/` folder beside it (`CvatExtractor.__init__`, `_parse_images`).
- `images/<name>`, flat: the dataset importer globs `images/*.*` and keeps only .jpg,
  .jpeg and .png (`CvatPath.MEDIA_EXTS`), so other formats are refused here.
- Frames are matched by file name without its extension (`match_dm_item`,
  `CommonData.match_frame`), so names must differ in their stems, not only their
  extensions. When no name matches, CVAT falls back to `<image id>` as the frame
  number, so ids here follow CVAT's default frame order (names sorted as strings).

The XML is FiftyOne's CVAT writer (`fiftyone.utils.cvat`), with the taxonomy as the task
labels. Reading parses the XML with ElementTree: FiftyOne's reader rounds every vertex to a
whole pixel and skips `<mask>`, `<ellipse>`, `<cuboid>` and `<skeleton>` without a word.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import warnings
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import fiftyone as fo

ANNOTATIONS_XML = "annotations.xml"
IMAGES_DIR = "images"
# what CVAT's dataset importer reads from images/ (CvatPath.MEDIA_EXTS)
CVAT_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# FiftyOne's XML template does not escape these in label names
XML_SPECIAL = set('<>&"')
# an ellipse becomes a polygon whose chords stray at most this far (pixels) from it
ELLIPSE_TOLERANCE = 0.1
EXPORT_FORMAT = '"CVAT for images 1.1"'


class CVATExportError(ValueError):
    """A file that is not a "CVAT for images 1.1" export; the message names it."""


class UnsupportedShapeError(ValueError):
    """CVAT shapes the dataset cannot hold (points, cuboids, skeletons, tags)."""


class ExportMismatchError(ValueError):
    """The export's images are not the ones sent to CVAT."""


@dataclass
class CVATFrame:
    """One `<image>` of an export: its size as CVAT saw it and its shapes, in relative
    coordinates (what the dataset's `fo.Polylines` field stores)."""

    width: int
    height: int
    polylines: list[fo.Polyline] = field(default_factory=list)


# --------------------------------------------------------------------------- writing


def write_cvat_archive(
    samples: Any,
    label_field: str,
    classes: Sequence[str],
    archive: Path,
    overwrite: bool = False,
) -> dict[str, str]:
    """Write `samples` (a FiftyOne collection) with their `label_field` polylines as a zip
    that CVAT imports unchanged ("CVAT 1.1": task "Upload annotations", or project "Import
    dataset" with images): `annotations.xml` and the images, copied byte for byte, under
    `images/`.

    The XML's task labels are all of `classes`, used or not, so the CVAT task's labels can
    be made from it. Every sample gets an `<image>`, with or without shapes. Closed or
    filled polylines become polygons (each entry of `points` its own, as the dataset paints
    them); open ones stay polylines. Vertices are rounded to whole pixels by FiftyOne's
    writer. Labels outside `classes` are refused: CVAT would reject the upload.

    The zip is written under a temporary name and renamed onto `archive`, so a failed run
    leaves no partial archive; an existing archive is kept unless `overwrite`.

    Returns {image name in the archive, as CVAT names the frame -> sample id}. Two images
    with the same file name get distinct names ("reef_003.jpg", "reef_003-2.jpg").
    """
    archive = Path(archive)
    if archive.exists() and not overwrite:
        raise FileExistsError(f"{archive} already exists: pass overwrite=True to replace it")
    classes = _check_classes(classes)
    _check_label_field(samples, label_field, classes)
    filepaths, ids = samples.values(["filepath", "id"])
    if not filepaths:
        raise ValueError("No samples to send to CVAT: the collection is empty")
    _check_filepaths(filepaths)

    archive.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", dir=archive.parent))
    staging, partial = temporary / "archive", temporary / "archive.zip"
    try:
        exporter = _archive_exporter(staging, classes)
        samples.export(dataset_exporter=exporter, label_field=label_field)
        sample_of = dict(zip(filepaths, ids, strict=True))
        names = {name: sample_of[path] for path, name in exporter.exported}
        _check_written(staging, names)
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.write(staging / ANNOTATIONS_XML, ANNOTATIONS_XML)
            for name in sorted(names):
                # JPEG and PNG are compressed already: stored as they are
                zf.write(staging / IMAGES_DIR / name, f"{IMAGES_DIR}/{name}", zipfile.ZIP_STORED)
        os.replace(partial, archive)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return names


def _check_classes(classes: Sequence[str]) -> list[str]:
    classes = list(classes)
    if not classes:
        raise ValueError("classes is empty: CVAT needs the taxonomy's labels")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"classes lists {repeated} more than once")
    unsafe = [c for c in classes if XML_SPECIAL & set(c)]
    if unsafe:
        raise ValueError(f"Labels {unsafe} hold one of < > & \": CVAT's XML cannot carry them")
    return classes


def _check_label_field(samples: Any, label_field: str, classes: list[str]) -> None:
    import fiftyone as fo

    schema = samples.get_field_schema()
    kind = getattr(schema.get(label_field), "document_type", None)
    if kind is not fo.Polylines:
        found = "no such field" if label_field not in schema else f"a {kind or 'plain'} field"
        raise ValueError(f"label_field {label_field!r} must hold fo.Polylines ({found})")
    used = samples.distinct(f"{label_field}.polylines.label")
    unknown = sorted(set(used) - set(classes))
    if unknown:
        raise ValueError(
            f"Labels in {label_field!r} that classes does not list: {unknown}; CVAT would "
            "refuse them. Pass the taxonomy that made the predictions."
        )


def _check_filepaths(filepaths: list[str]) -> None:
    repeated = sorted({p for p in filepaths if filepaths.count(p) > 1})
    if repeated:
        raise ValueError(f"Images listed by more than one sample: {repeated}")
    other = [p for p in filepaths if Path(p).suffix.lower() not in CVAT_IMAGE_EXTENSIONS]
    if other:
        raise ValueError(
            f"CVAT's dataset import reads {', '.join(CVAT_IMAGE_EXTENSIONS)} images only; "
            f"convert these first: {other}"
        )


def _check_written(staging: Path, names: Mapping[str, str]) -> None:
    """The XML parses and names each exported image once (FiftyOne's template escapes
    nothing, so a file name with & or < would break it)."""
    try:
        root = ET.parse(staging / ANNOTATIONS_XML).getroot()
    except ET.ParseError as exc:
        raise ValueError(
            f"FiftyOne wrote an XML that does not parse ({exc}): a file name holds one of "
            '< > & "; rename those images'
        ) from None
    written = sorted(image.get("name", "") for image in root.iter("image"))
    if written != sorted(names):
        raise RuntimeError(f"annotations.xml names {written}, the images are {sorted(names)}")


def _archive_exporter(export_dir: Path, classes: list[str]) -> Any:
    """FiftyOne's CVAT image exporter, with: the taxonomy as task labels; sizes read from
    each file (as CVAT shows it, EXIF orientation applied), not the dataset's cached
    metadata; an `<image>` for samples without labels; only label, points and closed /
    filled of each polyline; image stems kept unique (CVAT matches frames by stem);
    `<image id>` in CVAT's default frame order. FiftyOne is imported here, after settings
    has set its environment, as everywhere in the project."""
    import fiftyone as fo
    import fiftyone.core.metadata as fom
    import fiftyone.utils.cvat as fouc
    import fiftyone.utils.data as foud

    from dataset.image_io import read_header

    class ArchiveExporter(fouc.CVATImageDatasetExporter):
        def __init__(self) -> None:
            super().__init__(
                export_dir=str(export_dir),
                data_path=IMAGES_DIR,
                labels_path=ANNOTATIONS_XML,
                export_media=True,
            )
            self.exported: list[tuple[str, str]] = []  # (source path, name in images/)

        @property
        def requires_image_metadata(self) -> bool:
            return False  # sizes come from read_header in export_sample

        def setup(self) -> None:
            super().setup()
            self._media_exporter = foud.ImageExporter(
                True, export_path=self.data_path, ignore_exts=True
            )
            self._media_exporter.setup()

        def log_collection(self, sample_collection: Any) -> None:
            super().log_collection(sample_collection)
            self._task_labels = [{"name": name, "attributes": []} for name in classes]

        def export_sample(self, image_or_path: Any, labels: Any, metadata: Any = None) -> None:
            header = read_header(image_or_path)
            metadata = fom.ImageMetadata(width=header.width, height=header.height)
            shapes = []
            for line in labels.polylines if labels is not None else []:
                closed = bool(line.closed or line.filled)  # the dataset fills either
                shapes.append(
                    fo.Polyline(label=line.label, points=line.points, closed=closed, filled=closed)
                )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Found polyline with more than one shape")
                super().export_sample(image_or_path, fo.Polylines(polylines=shapes), metadata)
            # FiftyOne names the frame by the stem when ignore_exts is set: CVAT's dataset
            # import needs the file name (`_load_items`); the same call again returns the
            # same path (idempotent) and copies nothing
            out_path, _ = self._media_exporter.export(image_or_path)
            self._cvat_images[-1].name = os.path.basename(out_path)
            self.exported.append((image_or_path, self._cvat_images[-1].name))

        def close(self, *args: Any) -> None:
            self._cvat_images.sort(key=lambda image: image.name)
            for index, image in enumerate(self._cvat_images):
                image.id = index
            super().close(*args)

    return ArchiveExporter()


# --------------------------------------------------------------------------- reading


def read_cvat_export(path: Path) -> dict[str, CVATFrame]:
    """The frames of a "CVAT for images 1.1" export: the zip CVAT gives (with or without
    images), a folder holding it unzipped, or its annotations.xml. Keys are CVAT's frame
    names (`<image name>`); every frame is there, with or without shapes.

    Shapes become `fo.Polyline`s in relative coordinates (pixel (row i, column j) is the
    square [j, j + 1) x [i, i + 1), as in CVAT and dataset/rasterize.py), with the label
    and no attributes (the dataset has none; occluded, z_order, source, group and shape
    attributes are not kept):

    - `<polygon>`: closed, filled; `<polyline>`: open (closed=False, filled=False), a stroke;
    - `<box>` and `<ellipse>`: closed, filled polygons (rotation applied; an ellipse by
      chords within `ELLIPSE_TOLERANCE` px);
    - `<mask>` (brush, SAM): one closed, filled polygon per 8-connected part of the mask,
      along its pixel edges, so it paints exactly the mask's pixels. Holes are filled: a
      Polyline's point lists are painted as separate filled shapes, it cannot hold holes;
    - `<points>`, `<cuboid>`, `<skeleton>`, `<tag>` and anything else raise
      UnsupportedShapeError naming each image and shape.

    Raises CVATExportError for other formats (COCO, "CVAT for video" with `<track>`s).
    """
    path = Path(path)
    source, data = _export_xml(path)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise _not_cvat(source, f"not XML: {exc}") from None
    return _frames(root, source)


def _export_xml(path: Path) -> tuple[str, bytes]:
    """(name for messages, annotations.xml bytes) of a zip, folder or XML file."""
    if path.is_dir():
        found = [path / ANNOTATIONS_XML] if (path / ANNOTATIONS_XML).is_file() else []
        found = found or sorted(path.rglob(ANNOTATIONS_XML))
        if len(found) != 1:
            raise _not_cvat(path, f"{len(found)} {ANNOTATIONS_XML} files inside")
        return str(found[0]), found[0].read_bytes()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if PurePosixPath(n).name == ANNOTATIONS_XML]
            if ANNOTATIONS_XML in members:
                members = [ANNOTATIONS_XML]
            if len(members) != 1:
                held = ", ".join(zf.namelist()[:5]) or "nothing"
                raise _not_cvat(path, f"{len(members)} {ANNOTATIONS_XML} inside (holds {held})")
            return f"{path}:{members[0]}", zf.read(members[0])
    return str(path), path.read_bytes()


def _not_cvat(source: Any, why: str) -> CVATExportError:
    return CVATExportError(
        f"{source} is not a CVAT for images 1.1 export ({why}). In CVAT choose Export task "
        f"dataset (or Export annotations) with the format {EXPORT_FORMAT}."
    )


def _frames(root: ET.Element, source: str) -> dict[str, CVATFrame]:
    if root.tag != "annotations":
        raise _not_cvat(source, f"its root element is <{root.tag}>, not <annotations>")
    version = (root.findtext("version") or "").strip()
    if version != "1.1":
        raise _not_cvat(source, f"version {version or 'missing'}, not 1.1")
    if root.find("track") is not None:
        raise _not_cvat(source, 'it holds <track>s: that is "CVAT for video 1.1"')
    frames: dict[str, CVATFrame] = {}
    unsupported: list[str] = []
    for image in root.iter("image"):
        name = image.get("name")
        try:
            width, height = int(image.get("width", "")), int(image.get("height", ""))
        except ValueError:
            raise _not_cvat(source, f"<image name={name!r}> has no width and height") from None
        if not name:
            raise _not_cvat(source, f"<image id={image.get('id')!r}> has no name")
        if name in frames:
            raise CVATExportError(
                f"{source}: two frames are named {name!r} (a project export of several "
                "tasks?). Export the task itself."
            )
        frame = CVATFrame(width, height)
        for shape in image:
            try:
                frame.polylines.extend(_polylines(shape, width, height))
            except _Unsupported:
                unsupported.append(f"{name}: <{shape.tag} label={shape.get('label')!r}>")
            except (KeyError, ValueError) as exc:
                raise CVATExportError(
                    f"{source}: {name}: a <{shape.tag}> that does not read ({exc!r})"
                ) from None
        frames[name] = frame
    if unsupported:
        raise UnsupportedShapeError(
            f"{source}: {len(unsupported)} shape(s) the dataset cannot hold (it stores "
            "polygons and polylines; masks, boxes and ellipses are converted). Delete or "
            "redraw them in CVAT and export again: " + "; ".join(unsupported)
        )
    return frames


class _Unsupported(Exception):
    pass


def _polylines(shape: ET.Element, width: int, height: int) -> list[fo.Polyline]:
    import fiftyone as fo

    if shape.tag not in ("polygon", "polyline", "box", "ellipse", "mask"):
        raise _Unsupported(shape.tag)
    label = shape.attrib["label"]
    if shape.tag in ("polygon", "polyline"):
        points = [
            tuple(float(v) for v in pair.split(",")) for pair in shape.attrib["points"].split(";")
        ]
        outlines = [np.array(points, np.float64)]
    elif shape.tag == "box":
        x0, y0, x1, y1 = (float(shape.attrib[k]) for k in ("xtl", "ytl", "xbr", "ybr"))
        corners = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float64)
        rotation = float(shape.get("rotation", 0))
        outlines = [_rotate(corners, rotation, (x0 + x1) / 2, (y0 + y1) / 2)]
    elif shape.tag == "ellipse":
        cx, cy, rx, ry = (float(shape.attrib[k]) for k in ("cx", "cy", "rx", "ry"))
        outlines = [_ellipse(cx, cy, rx, ry, float(shape.get("rotation", 0)))]
    elif shape.tag == "mask":
        rle = [int(v) for v in shape.attrib["rle"].split(",")]
        box = (int(shape.attrib[k]) for k in ("left", "top", "width", "height"))
        outlines = mask_outlines(rle, *box)
    closed = shape.tag != "polyline"
    scale = np.array([width, height], np.float64)
    return [
        fo.Polyline(
            label=label,
            points=[[(float(x), float(y)) for x, y in outline / scale]],
            closed=closed,
            filled=closed,
        )
        for outline in outlines
    ]


def _rotate(points: np.ndarray, degrees: float, cx: float, cy: float) -> np.ndarray:
    """CVAT's rotation (transformations.py, RotatedBoxesToPolygons): clockwise on screen."""
    if not degrees:
        return points
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    dx, dy = points[:, 0] - cx, points[:, 1] - cy
    return np.stack([cx + cos * dx - sin * dy, cy + sin * dx + cos * dy], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, rotation: float) -> np.ndarray:
    radius = max(abs(rx), abs(ry), ELLIPSE_TOLERANCE * 2)
    count = max(32, math.ceil(math.pi / math.acos(1 - ELLIPSE_TOLERANCE / radius)))
    t = np.linspace(0, 2 * math.pi, count, endpoint=False)
    points = np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)
    return _rotate(points, rotation, cx, cy)


def decode_cvat_rle(rle: Sequence[int], width: int, height: int) -> np.ndarray:
    """CVAT's mask RLE (cvat-core rle-utils.ts): run lengths over the mask's box, row by
    row, alternating, starting with a (possibly empty) run of zeros. (height, width) bool."""
    counts = np.asarray(rle, np.int64)
    if (counts < 0).any() or counts.sum() != width * height:
        raise ValueError(f"RLE runs add up to {counts.sum()}, the box has {width}x{height}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)


def mask_outlines(
    rle: Sequence[int], left: int, top: int, width: int, height: int
) -> list[np.ndarray]:
    """Outlines in image pixel coordinates, one per 8-connected part of a CVAT mask, holes
    filled. Each is traced by marching squares at level 0.5 on the hole-filled mask, so it
    runs between pixel centres: a pixel's centre is inside exactly when the pixel is set."""
    from scipy import ndimage
    from skimage import measure

    mask = decode_cvat_rle(rle, width, height)
    # holes: background not 4-connected to the border, the dual of 8-connected parts
    solid = np.pad(ndimage.binary_fill_holes(mask), 1).astype(np.float64)
    outlines = []
    for contour in measure.find_contours(solid, 0.5, fully_connected="high"):
        contour = measure.approximate_polygon(contour, tolerance=0)[:-1]  # drop the repeat
        # padded (row, col) -> (x, y): pixel (r, c) of the box has its centre at
        # (left + c + 0.5, top + r + 0.5), and it sits at padded (r + 1, c + 1)
        outlines.append(contour[:, ::-1] + (left - 0.5, top - 0.5))
    return outlines


# --------------------------------------------------------------------------- checks


def check_frames(frames: Mapping[str, Any], expected: Mapping[str, str]) -> None:
    """Raise ExportMismatchError when the export's frames are not the images sent (the
    names `write_cvat_archive` returned): it lists every image sent that the export lacks
    and every frame that was not sent. A frame without shapes is fine: someone deleted
    every shape on it."""
    missing = sorted(set(expected) - set(frames))
    extra = sorted(set(frames) - set(expected))
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} image(s) sent, missing or renamed in CVAT: {missing}")
    if extra:
        parts.append(f"{len(extra)} frame(s) in the export that were not sent: {extra}")
    if any(PurePosixPath(name).name in missing for name in extra):
        parts.append(
            "Some frames carry a folder in their name: the task was made from the archive's "
            "files; make it by importing the archive as a dataset, or from the images alone"
        )
    raise ExportMismatchError(". ".join(parts))


def unknown_labels(frames: Mapping[str, CVATFrame], classes: Sequence[str]) -> list[str]:
    """Labels in the export that `classes` (the taxonomy) does not know, sorted."""
    known = set(classes)
    used = {line.label for frame in frames.values() for line in frame.polylines}
    return sorted(label for label in used if label not in known)
