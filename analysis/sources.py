"""The toolkit's outputs, read as per-image labels: a class map and a list of colonies.

Three kinds of folder hold labels (analysis/open_source.py tells them apart):

- a two-stage inference output (inference_with_coralscop.py): predictions.json (COCO,
  RLE) gives the colonies with genus, confidence and unsure flag, in the order of
  masks/<image>/instance_NNN.png (colony id NNN); semantic/<image>.png (--save-semantic)
  gives the class map, otherwise the instances painted by confidence stand in for it;
- a folder of class maps, <stem>.png, one class index per pixel (test.py --pred-dir);
- a prepared dataset split (prepare_data.py): annotations/<split>/<stem>.png, the
  annotations themselves, so predicted and annotated numbers come from the same code.

In class maps, colonies are the 8-connected regions of each coral class (as the fusion
rule makes instances of uncovered pixels); touching colonies of one genus are one region.

The large-image outputs (class-map GeoTIFF + colonies GeoJSON in the mosaics/ folder
of a tiled run) are one more source with the same `stems` / `load` methods
(analysis/mosaic_source.py), whose `ImageLabels.scale` comes from the raster's
georeference.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from pycocotools import mask as mask_utils
from skimage.measure import label as label_regions
from skimage.measure import regionprops

from analysis.scale import Scale
from dataset import IMAGE_SUFFIXES
from dataset.info import INFO_FILE, read_dataset_info
from dataset.taxonomy import TAXONOMY_DIR, load_taxonomy

PREDICTED, ANNOTATED = "predicted", "annotated"
DEFAULT_IGNORE_INDEX = 255
# Where an image's name (CoralNet's key) comes from, most trusted first: a photo in the
# user's --images, the prepared dataset's manifest.csv (the file prepare_data.py read),
# the inference record (the file inference read: a prepared copy when it ran on one), a
# prepared copy's name, and "" when none is known (the class map's own file name).
NAME_SOURCES = ("photo", "manifest", "inference record", "prepared copy", "")
MANIFEST = "manifest.csv"

log = logging.getLogger("coral")


class SourceError(ValueError):
    """An input that cannot be read; the message names the file and what to do."""


@dataclass(frozen=True)
class ClassInfo:
    names: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int = DEFAULT_IGNORE_INDEX

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @classmethod
    def from_names(cls, names: Iterable[str], ignore_index: int = DEFAULT_IGNORE_INDEX):
        """The taxonomy's colours where the names are a known taxonomy's, else distinct ones."""
        names = tuple(names)
        for path in sorted(TAXONOMY_DIR.glob("*.yaml")):
            taxonomy = load_taxonomy(path)
            if taxonomy.classes == names:
                return cls(names, taxonomy.palette, ignore_index)
        return cls(names, _distinct_colours(len(names)), ignore_index)

    @classmethod
    def load(cls, spec: str | Path) -> ClassInfo:
        """From a prepared dataset folder, a classes.txt, or a taxonomy name / .yaml file."""
        path = Path(spec)
        if path.is_dir():
            return _prepared_classes(path)
        if path.is_file() and path.suffix == ".txt":
            names = [n.strip() for n in path.read_text().splitlines() if n.strip()]
            return cls.from_names(names)
        try:
            taxonomy = load_taxonomy(spec)
        except FileNotFoundError as exc:
            raise SourceError(
                f"--classes {spec}: not a prepared dataset folder, a classes.txt or a "
                f"taxonomy ({exc})"
            ) from None
        return cls(taxonomy.classes, taxonomy.palette, taxonomy.ignore_index)


def _distinct_colours(count: int) -> tuple[tuple[int, int, int], ...]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    colours = [(0, 0, 0)] + [
        tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(count - 1)
    ]
    return tuple(colours[:count])


def _prepared_classes(root: Path) -> ClassInfo:
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        raise SourceError(
            f"{root}: no classes.txt; is it a folder written by prepare_data.py? "
            "Give --classes a prepared dataset, a classes.txt or a taxonomy name"
        )
    names = tuple(n.strip() for n in classes_file.read_text().splitlines() if n.strip())
    palette_file = root / "palette.txt"
    info_file = root / INFO_FILE
    ignore = DEFAULT_IGNORE_INDEX
    if info_file.is_file():
        ignore = int(read_dataset_info(info_file).get("ignore_index", DEFAULT_IGNORE_INDEX))
    if palette_file.is_file():
        rows = [line.split() for line in palette_file.read_text().splitlines() if line.strip()]
        palette = tuple(tuple(int(v) for v in row[:3]) for row in rows)
        if len(palette) == len(names):
            return ClassInfo(names, palette, ignore)
    return ClassInfo.from_names(names, ignore)


@dataclass
class Colony:
    """One colony: its mask cropped to its bounding box, where that box sits in the image."""

    id: int
    class_index: int
    mask: np.ndarray  # bool, (bottom - top, right - left)
    top: int
    left: int
    confidence: float | None = None
    unsure: bool | None = None

    @classmethod
    def from_mask(cls, id: int, class_index: int, mask: np.ndarray, **extra) -> Colony | None:
        """From a full-size mask; None when it is empty."""
        rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
        if not rows.any():
            return None
        top, bottom = np.flatnonzero(rows)[[0, -1]]
        left, right = np.flatnonzero(cols)[[0, -1]]
        crop = mask[top : bottom + 1, left : right + 1].astype(bool)
        return cls(id, class_index, crop, int(top), int(left), **extra)

    @property
    def box(self) -> tuple[int, int, int, int]:
        """top, left, bottom, right (bottom and right exclusive)."""
        return self.top, self.left, self.top + self.mask.shape[0], self.left + self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        out = np.zeros(shape, bool)
        top, left, bottom, right = self.box
        out[top:bottom, left:right] = self.mask
        return out

    def clipped(self, region: np.ndarray | None) -> Colony | None:
        """The part inside `region` (full-size bool); None when nothing is left."""
        if region is None:
            return self
        top, left, bottom, right = self.box
        inside = self.mask & region[top:bottom, left:right]
        if np.array_equal(inside, self.mask):
            return self
        full = np.zeros(region.shape, bool)
        full[top:bottom, left:right] = inside
        return Colony.from_mask(
            self.id, self.class_index, full, confidence=self.confidence, unsure=self.unsure
        )


@dataclass
class ImageLabels:
    stem: str  # what predictions and annotations of one image share
    name: str  # the image file's name, as CoralNet and the user know it
    class_map: np.ndarray  # (H, W) class index per pixel, ignore_index where unknown
    colonies: list[Colony]
    cover_from: str  # "semantic map", "instance masks" or "class map"
    photo: Path | None = None  # the photograph, where known (registration, overlays)
    scale: Scale | None = None  # the image's own scale (a georeferenced raster)
    name_from: str = "photo"  # one of NAME_SOURCES

    @property
    def shape(self) -> tuple[int, int]:
        return self.class_map.shape[:2]


class LabelSource(Protocol):
    kind: str  # PREDICTED or ANNOTATED
    description: str
    classes: ClassInfo

    def stems(self) -> list[str]: ...

    def load(self, stem: str) -> ImageLabels: ...


def read_class_map(path: Path, classes: ClassInfo) -> np.ndarray:
    """A single-channel class map; SourceError naming the file when it is not one."""
    data = np.fromfile(path, np.uint8) if path.is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data is not None and data.size else None
    if image is None:
        what = "cannot be decoded" if path.exists() else "does not exist"
        raise SourceError(f"{path}: {what}; a class map is a single-channel PNG")
    if image.ndim != 2:
        raise SourceError(
            f"{path}: {image.shape[2]} channels, but a class map has one (a class index per "
            "pixel); is it an overlay or a colour mask? Use test.py --pred-dir maps or "
            "annotations/<split> masks"
        )
    bad = (image >= classes.num_classes) & (image != classes.ignore_index)
    if bad.any():
        values = ", ".join(str(v) for v in np.unique(image[bad])[:10])
        raise SourceError(
            f"{path}: values {values} are no class of the {classes.num_classes} classes "
            f"(0-{classes.num_classes - 1}, {classes.ignore_index} = ignore); is it from "
            "another taxonomy? Give the matching --classes"
        )
    return image.astype(np.uint8, copy=False)


def colonies_of_class_map(class_map: np.ndarray, classes: ClassInfo) -> list[Colony]:
    """8-connected regions of every class but background and ignore, ids in class order."""
    colonies: list[Colony] = []
    for index in np.unique(class_map):
        if index == 0 or index == classes.ignore_index:
            continue
        regions = label_regions(class_map == index, connectivity=2)
        for region in regionprops(regions):
            top, left, _, _ = region.bbox
            colonies.append(Colony(len(colonies) + 1, int(index), region.image, top, left))
    return colonies


def _find_image(folder: Path | None, stem: str) -> Path | None:
    if folder is None:
        return None
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def read_manifest_names(root: Path, split: str) -> dict[str, str]:
    """{prepared stem: the source photo's file name} of one split, from prepare_data.py's
    manifest.csv; {} (with a warning naming the file) when it cannot be read."""
    path = root / MANIFEST
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        named = {Path(r["image"]).stem: Path(r["source_filepath"]).name for r in rows
                 if Path(r["image"]).parent.name == split and r["source_filepath"]}  # fmt: skip
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, TypeError) as exc:
        log.warning("%s: not read (%s); photo names come from the prepared images instead. "
                    "Is it prepare_data.py's manifest (columns image, source_filepath)?",
                    path, exc)  # fmt: skip
        return {}
    # photos of one name from different folders (prepare_data.py then suffixes the stem)
    # would be one image to CoralNet: those keep their prepared, distinct names
    names = list(named.values())
    return {stem: name for stem, name in named.items() if names.count(name) == 1}


def _record_names(output: Path) -> dict[str, str]:
    """{stem: the file inference read} of a two-stage output folder (its predictions.json,
    else its .per_image records); {} when it holds neither."""
    try:
        document = json.loads((output / "predictions.json").read_text())
        return {Path(i["file_name"]).stem: i["file_name"] for i in document["images"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no or no readable predictions.json: the per-image records may be there
    names = {}
    for record in sorted((output / ".per_image").glob("*.json")):
        try:
            names[record.stem] = json.loads(record.read_text())["image"]["file_name"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a mosaic's record, or one being written: no name from it
    return names


@dataclass
class ClassMapFolder:
    """<stem>.png class maps, e.g. test.py --pred-dir; photos from `images` where given.

    The image's name (CoralNet's key): a photo's of `images`; where `images` is a prepared
    split, the source photo's from the dataset's manifest.csv; for the semantic/ maps of a
    two-stage output, the inference record's; else `<stem>.png`, which no photo has."""

    folder: Path
    classes: ClassInfo
    images: Path | None = None
    kind: str = PREDICTED
    _names: dict | None = field(default=None, init=False, repr=False)

    def _prepared_root(self) -> Path | None:
        """The prepared dataset `images` is a split of (<root>/images/<split>, classes.txt):
        its photos are copies named by stem, not the photos CoralNet holds."""
        root = self.images.parent.parent if self.images is not None else None
        in_images = root is not None and self.images.parent.name == "images"
        return root if in_images and (root / "classes.txt").is_file() else None

    def _known_names(self) -> dict[str, tuple[str, str]]:
        """{stem: (name, where from)} from the manifest and the inference record, read once."""
        if self._names is None:
            names = {}
            if self.folder.name == "semantic":  # the --save-semantic maps of a two-stage output
                records = _record_names(self.folder.parent)
                names = {s: (n, "inference record") for s, n in records.items()}
            root = self._prepared_root()
            if root is not None and (root / MANIFEST).is_file():  # older datasets have none
                manifest = read_manifest_names(root, self.images.name)
                names.update({s: (n, "manifest") for s, n in manifest.items()})
            self._names = names
        return self._names

    def _name(self, stem: str, photo: Path | None) -> tuple[str, str]:
        if photo is not None and self._prepared_root() is None:  # the user's --images
            return photo.name, "photo"
        known = self._known_names().get(stem)
        if known is not None:
            return known
        if photo is not None:
            return photo.name, "prepared copy"
        return f"{stem}.png", ""

    @property
    def description(self) -> str:
        return f"class maps in {self.folder}"

    def stems(self) -> list[str]:
        stems = sorted(p.stem for p in self.folder.glob("*.png") if not p.name.startswith("."))
        if not stems:
            raise SourceError(f"{self.folder}: no .png class map in this folder")
        return stems

    def load(self, stem: str) -> ImageLabels:
        class_map = read_class_map(self.folder / f"{stem}.png", self.classes)
        photo = _find_image(self.images, stem)
        name, name_from = self._name(stem, photo)
        colonies = colonies_of_class_map(class_map, self.classes)
        return ImageLabels(stem, name, class_map, colonies, "class map", photo,
                           name_from=name_from)  # fmt: skip


@dataclass
class PreparedSplit(ClassMapFolder):
    """annotations/<split>/ of a prepared dataset: the annotated numbers."""

    kind: str = ANNOTATED

    @classmethod
    def open(cls, root: Path, split: str) -> PreparedSplit:
        folder = root / "annotations" / split
        if not folder.is_dir():
            splits = sorted(p.name for p in (root / "annotations").iterdir() if p.is_dir())
            raise SourceError(
                f"{root}: no split {split!r} in annotations/ (there: {splits}); "
                "choose one with --split"
            )
        images = root / "images" / split
        return cls(folder, _prepared_classes(root), images if images.is_dir() else None)

    @property
    def description(self) -> str:
        return f"annotations in {self.folder}"

    def _prepared_root(self) -> Path | None:
        return self.folder.parent.parent  # <root>/annotations/<split>

    def _known_names(self) -> dict[str, tuple[str, str]]:
        if self._names is None:
            root = self.folder.parent.parent
            has_manifest = (root / MANIFEST).is_file()  # older datasets have none
            manifest = read_manifest_names(root, self.folder.name) if has_manifest else {}
            self._names = {s: (n, "manifest") for s, n in manifest.items()}
        return self._names


@dataclass
class TwoStageOutput:
    """The output folder of inference_with_coralscop.py."""

    folder: Path
    images: Path | None = None  # the input photos (the output folder does not keep them)
    kind: str = PREDICTED
    classes: ClassInfo = field(init=False)
    _images: dict = field(init=False, repr=False)
    _annotations: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        path = self.folder / "predictions.json"
        if not path.is_file():
            raise SourceError(
                f"{path} does not exist: the inference run has not finished (it writes "
                "predictions.json at the end); run the same inference command again to "
                "complete it"
            )
        try:
            document = json.loads(path.read_text())
            categories = {int(c["id"]): c["name"] for c in document["categories"]}
            images = document["images"]
            annotations = document["annotations"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{path}: not a COCO document of the toolkit ({exc})") from None
        names = ["background"] + [categories.get(i, "") for i in range(1, max(categories) + 1)]
        if "" in names:
            raise SourceError(
                f"{path}: category ids {sorted(categories)} leave gaps; the "
                "ids must be the taxonomy's class indices 1..N"
            )
        self.classes = ClassInfo.from_names(names)
        self._images = {Path(i["file_name"]).stem: i for i in images}
        self._annotations = {}
        for annotation in annotations:
            self._annotations.setdefault(annotation["image_id"], []).append(annotation)

    @property
    def description(self) -> str:
        return f"two-stage inference output {self.folder}"

    def stems(self) -> list[str]:
        if not self._images:
            raise SourceError(f"{self.folder / 'predictions.json'}: holds no image")
        return sorted(self._images)

    def load(self, stem: str) -> ImageLabels:
        image = self._images[stem]
        shape = (int(image["height"]), int(image["width"]))
        colonies = []
        records = sorted(self._annotations.get(image["id"], []), key=lambda a: a["id"])
        for number, annotation in enumerate(records, start=1):
            mask = self._decode(annotation, shape, image["file_name"])
            colony = Colony.from_mask(
                number,
                int(annotation["category_id"]),
                mask,
                confidence=float(annotation.get("score", float("nan"))),
                unsure=bool(annotation.get("attributes", {}).get("unsure", False)),
            )
            if colony is not None:
                colonies.append(colony)
        semantic = self.folder / "semantic" / f"{stem}.png"
        if semantic.is_file():
            class_map = read_class_map(semantic, self.classes)
            if class_map.shape != shape:
                raise SourceError(
                    f"{semantic}: {class_map.shape[1]} x {class_map.shape[0]} "
                    f"px, but predictions.json says {shape[1]} x {shape[0]}"
                )
            cover_from = "semantic map"
        else:
            class_map = paint_instances(colonies, shape)
            cover_from = "instance masks"
        photo = self.images / image["file_name"] if self.images else None
        photo = photo if photo is not None and photo.is_file() else None
        # the file inference read: the photo's own name, or a prepared copy's (a --truth
        # dataset's manifest then knows the photo's)
        return ImageLabels(stem, image["file_name"], class_map, colonies, cover_from, photo,
                           name_from="photo" if photo else "inference record")  # fmt: skip

    def _decode(self, annotation: dict, shape: tuple[int, int], file_name: str) -> np.ndarray:
        rle = dict(annotation["segmentation"])
        if isinstance(rle.get("counts"), str):
            rle["counts"] = rle["counts"].encode("ascii")
        mask = mask_utils.decode(rle)
        if mask.shape != shape:
            raise SourceError(
                f"{self.folder / 'predictions.json'}: annotation {annotation['id']} of "
                f"{file_name} is {mask.shape[1]} x {mask.shape[0]} px, the image "
                f"{shape[1]} x {shape[0]}"
            )
        return mask.astype(bool)


def paint_instances(colonies: list[Colony], shape: tuple[int, int]) -> np.ndarray:
    """A class map from instances: the most confident instance wins where they overlap."""
    class_map = np.zeros(shape, np.uint8)
    for colony in sorted(colonies, key=lambda c: c.confidence or 0.0):
        top, left, bottom, right = colony.box
        class_map[top:bottom, left:right][colony.mask] = colony.class_index
    return class_map
