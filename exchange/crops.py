"""Annotated orthomosaics -> the training dataset layout, by windows.

    python prepare_data.py reef_survey.json                      # a TagLab project
    python prepare_data.py ortho.tif --polygons colonies.gpkg --class-field genus

The folder is the one prepare_data.py writes for FiftyOne datasets (images/ and
annotations/ per split, classes.txt, palette.txt, dataset_info.py, manifest.csv), so the
training configs read it unchanged; each sample is a crop of a map.

- Crops: a grid of `crop_size` px squares at the map's native resolution, or resampled
  to `mm_per_pixel` (from the georeference, else the TagLab pixel size); those at the
  map's edge are padded (black image, ignore mask) so every crop has the same size. Only
  one crop's pixels are in memory at a time; the regions of every map are (10 000
  polygons are tens of MB) behind a spatial index.
- Masks: exchange/paint.py's rule (holes are holes, every part painted, the smaller of
  two overlapping regions wins). Pixels outside the annotated area are ignore (255):
  the area is TagLab's working area, else the `--area` polygons, else the union of the
  regions grown by `area_margin` map pixels; pixels the raster marks as outside the
  mosaic (nodata, alpha, `--nodata`) are ignore too. A crop without a labelled pixel is
  skipped and counted.
- Splits by space: crops are grouped in square blocks of `block_size` px (a whole
  number of crops, so no crop straddles two blocks), and whole blocks go to a split
  (seeded, in the given ratios, over the blocks that hold annotations); or whole maps
  go to a split. The manifest records each crop's map, window and block.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import shapely
from tqdm import tqdm

from dataset.image_io import ImageReadError, write_image
from dataset.info import SPLITS, write_dataset_info
from dataset.output_safety import OutputRefusedError, absolute, clean_leftovers, staged_folder
from dataset.prepare import (
    JPEG_QUALITY,
    TOOL,
    WHAT,
    PrepareError,
    check_target,
    output_name,
    pixel_counts,
)
from dataset.taxonomy import Taxonomy, load_taxonomy
from exchange.paint import IGNORE, RegionIndex
from exchange.regions import AnnotatedMap
from mosaic.ground import ground_pixel
from mosaic.raster import MosaicSource, gdal_env
from settings import Settings

log = logging.getLogger("prepare_data")

SPLIT_BY = ("block", "map")
IMAGE_FORMATS = ("jpg", "png")


@dataclass(frozen=True)
class CropSettings:
    crop_size: int = 1280
    mm_per_pixel: float | None = None  # resample to this ground size; None: native
    area_margin: int = 128  # map px around the regions when no annotated area is known
    split_by: str = "block"
    block_size: int | None = None  # px of output; None: 4 crops a side
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    val_maps: tuple[str, ...] = ()  # split_by="map": these maps are val / test, the rest train
    test_maps: tuple[str, ...] = ()
    image_format: str = "jpg"  # JPEG quality 95 (as prepare_data's camera images); png: lossless
    nodata: int | None = None  # a stored value marking pixels outside the mosaic

    def __post_init__(self) -> None:
        if self.crop_size < 32:
            raise PrepareError(f"--crop-size {self.crop_size}: give at least 32 px")
        if self.split_by not in SPLIT_BY:
            raise PrepareError(f"--split-by {self.split_by!r}: choose one of {SPLIT_BY}")
        if self.image_format not in IMAGE_FORMATS:
            raise PrepareError(f"--image-format {self.image_format!r}: one of {IMAGE_FORMATS}")
        ratios = self.split_ratios
        if len(ratios) != 3 or min(ratios) < 0 or not math.isclose(sum(ratios), 1, abs_tol=1e-6):
            raise PrepareError(
                f"--split-ratios {ratios}: give three shares (train, val, test) summing to 1"
            )
        if self.mm_per_pixel is not None and self.mm_per_pixel <= 0:
            raise PrepareError(f"--mm-per-pixel {self.mm_per_pixel}: give a positive size")

    @property
    def block_crops(self) -> int:
        """Crops per block side."""
        size = self.block_size or 4 * self.crop_size
        return max(1, math.ceil(size / self.crop_size))


@dataclass
class CropWindow:
    map_index: int
    row: int  # crop row and column in the map's grid
    col: int
    row0: int  # map pixels
    col0: int
    height: int
    width: int
    out_height: int
    out_width: int
    step: float  # map pixels per output pixel

    def block(self, crops_per_block: int) -> tuple[int, int, int]:
        return self.map_index, self.row // crops_per_block, self.col // crops_per_block


@dataclass
class PreparedMaps:
    path: Path
    written: int
    skipped_empty: int  # crops without a labelled pixel


def native_mm_per_pixel(source: MosaicSource, annotated: AnnotatedMap) -> float | None:
    ground = ground_pixel(source.crs, source.transform, source.width, source.height)
    if ground is not None:
        return ground.mm_per_pixel
    return annotated.mm_per_pixel


def crop_windows(
    map_index: int, width: int, height: int, size: int, step: float
) -> list[CropWindow]:
    """The map's crop grid: squares of `size` output px (`size * step` map px), the last
    row and column cut at the map's edge."""
    span = size * step
    rows, cols = math.ceil(height / span), math.ceil(width / span)
    windows = []
    for r in range(rows):
        row0 = round(r * span)
        out_h = min(size, math.floor((height - row0) / step))
        for c in range(cols):
            col0 = round(c * span)
            out_w = min(size, math.floor((width - col0) / step))
            if out_h < 1 or out_w < 1:
                continue
            h = min(height - row0, round(out_h * step))
            w = min(width - col0, round(out_w * step))
            windows.append(CropWindow(map_index, r, c, row0, col0, h, w, out_h, out_w, step))
    return windows


def assign_splits(keys: list, ratios: tuple[float, float, float], seed: int) -> dict:
    """Each key (a block or a map) to a split: shuffled with `seed`, val and test get their
    share (at least one each when their share is not zero and there are three keys),
    train the rest."""
    order = list(keys)
    np.random.default_rng(seed).shuffle(order)
    n = len(order)
    counts = [round(share * n) for share in ratios[1:]]
    if n >= 3:
        counts = [
            max(1, k) if share > 0 else 0 for k, share in zip(counts, ratios[1:], strict=True)
        ]
    val, test = counts
    val = min(val, n)
    test = min(test, n - val)
    splits = {}
    for i, key in enumerate(order):
        splits[key] = "val" if i < val else "test" if i < val + test else "train"
    return splits


def _split_of_maps(maps: list[AnnotatedMap], crops: CropSettings) -> dict[int, str]:
    names = [m.name for m in maps]
    named = set(crops.val_maps) | set(crops.test_maps)
    unknown = sorted(named - set(names))
    if unknown:
        raise PrepareError(
            f"--val-maps/--test-maps name maps not in the input: {unknown}; maps: {names}"
        )
    if named:
        return {
            i: "val"
            if m.name in crops.val_maps
            else "test"
            if m.name in crops.test_maps
            else "train"
            for i, m in enumerate(maps)
        }
    return assign_splits(list(range(len(maps))), crops.split_ratios, crops.seed)


def _file_stem(name: str) -> str:
    """A map name as a file name: path separators and control characters out."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]+', "_", name).strip(" .") or "map"


def _annotated_area(annotated: AnnotatedMap, margin: int):
    """The stated area, else the regions' outlines (a colony's holes are annotated
    background too) grown by `margin` map pixels."""
    if annotated.area is not None:
        return annotated.area
    parts = shapely.get_parts(np.array([r.geometry for r in annotated.regions], dtype=object))
    if not len(parts):
        return shapely.Polygon()
    outlines = shapely.polygons(shapely.get_exterior_ring(parts))
    # Pixel-edge outlines (TagLab's, ours) are staircases of hundreds of vertices that make
    # buffering slow (4 s for 576 colonies); 1 px of simplification is nothing beside the
    # margin, which the simplified outline is then grown by 1 px more to keep covering.
    if margin >= 1:
        outlines = shapely.simplify(outlines, 1.0)
    return shapely.union_all(shapely.buffer(outlines, margin + (margin >= 1), quad_segs=4))


@dataclass
class _MapPlan:
    annotated: AnnotatedMap
    index: RegionIndex
    windows: list[CropWindow]
    stem: str
    mm_per_pixel: float | None  # of the written crops


def _plan(
    maps: list[AnnotatedMap], taxonomy: Taxonomy, crops: CropSettings, unknown: str
) -> list[_MapPlan]:
    labels = Counter(region.label for m in maps for region in m.regions)
    class_of = taxonomy.resolve(labels, unknown=unknown)
    stems = Counter(_file_stem(m.name) for m in maps)
    plans = []
    for i, annotated in enumerate(maps):
        with gdal_env(), MosaicSource(annotated.image, crops.nodata) as source:
            if (source.width, source.height) != (annotated.width, annotated.height):
                raise PrepareError(
                    f"map {annotated.name!r}: its image {annotated.image} is {source.width} x "
                    f"{source.height} px but the annotations are on a {annotated.width} x "
                    f"{annotated.height} px map; point the map at the image it was drawn on"
                )
            native = native_mm_per_pixel(source, annotated)
        step = 1.0
        if crops.mm_per_pixel is not None:
            if native is None:
                raise PrepareError(
                    f"map {annotated.name!r}: --mm-per-pixel needs the map's own pixel size, "
                    f"and {annotated.image} has no georeference (nor a TagLab pixel size); "
                    "prepare at the native resolution, or georeference the image"
                )
            step = crops.mm_per_pixel / native
        index = RegionIndex(
            [r.geometry for r in annotated.regions],
            [class_of[r.label] for r in annotated.regions],
            _annotated_area(annotated, crops.area_margin),
        )
        stem = _file_stem(annotated.name)
        if stems[stem] > 1:
            stem = f"{stem}_{i}"
        windows = crop_windows(i, annotated.width, annotated.height, crops.crop_size, step)
        written_mm = crops.mm_per_pixel or native
        plans.append(_MapPlan(annotated, index, windows, stem, written_mm))
    return plans


def _splits(plans: list[_MapPlan], crops: CropSettings) -> dict:
    """The split of every map (split_by "map") or of every block that holds annotations."""
    if crops.split_by == "map":
        return _split_of_maps([p.annotated for p in plans], crops)
    extents: dict[tuple[int, int, int], list[int]] = {}
    for plan in plans:
        for w in plan.windows:
            box = extents.setdefault(w.block(crops.block_crops), [w.col0, w.row0, 0, 0])
            box[2] = max(box[2], w.col0 + w.width)
            box[3] = max(box[3], w.row0 + w.height)
    annotated = [key for key, box in extents.items() if plans[key[0]].index.reaches(*box)]
    return assign_splits(annotated, crops.split_ratios, crops.seed)


def _split_of(window: CropWindow, splits: dict, crops: CropSettings) -> str | None:
    if crops.split_by == "map":
        return splits[window.map_index]
    return splits.get(window.block(crops.block_crops))


def _padded(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A crop at the map's edge padded to size x size (black, ignore): every crop the same
    size, so the recipe's scale augmentation is relative to the map's resolution."""
    height, width = mask.shape
    if (height, width) == (size, size):
        return rgb, mask
    rgb = np.pad(rgb, ((0, size - height), (0, size - width), (0, 0)))
    mask = np.pad(mask, ((0, size - height), (0, size - width)), constant_values=IGNORE)
    return rgb, mask


def _write_crop(
    source: MosaicSource,
    plan: _MapPlan,
    window: CropWindow,
    split: str,
    out_dir: Path,
    crops: CropSettings,
) -> tuple[str, np.ndarray] | None:
    """Write one crop's image and mask: the crop's name and its mask, or None when it holds
    no labelled pixel."""
    mask = plan.index.paint(
        window.row0, window.col0, window.out_height, window.out_width, window.step
    )
    if (mask == IGNORE).all():
        return None
    rgb = source.read_rgb(window.row0, window.col0, window.height, window.width)
    valid = source.read_valid(window.row0, window.col0, window.height, window.width)
    size = (window.out_width, window.out_height)
    if (window.width, window.height) != size:
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        valid = cv2.resize(valid.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    mask[~valid] = IGNORE
    if (mask == IGNORE).all():
        return None
    rgb, mask = _padded(rgb, mask, crops.crop_size)
    name = f"{plan.stem}_r{window.row:03d}_c{window.col:03d}"
    image_file = out_dir / "images" / split / f"{name}.{crops.image_format}"
    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if crops.image_format == "jpg" else []
    write_image(image_file, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    mask_file = out_dir / "annotations" / split / f"{name}.png"
    write_image(mask_file, mask)
    return name, mask


MANIFEST_COLUMNS = [
    "crop", "split", "map", "source_image", "block_row", "block_col", "col0", "row0",
    "width", "height", "out_width", "out_height", "mm_per_pixel", "labelled_pixels", "regions",
]  # fmt: skip


def _manifest_row(plan: _MapPlan, window: CropWindow, crop_name: str, split: str,
                  labelled: int, crops: CropSettings) -> list:  # fmt: skip
    block = ["", ""]
    if crops.split_by == "block":
        block = list(window.block(crops.block_crops)[1:])
    box = (window.col0, window.row0, window.col0 + window.width, window.row0 + window.height)
    mm = "" if plan.mm_per_pixel is None else round(plan.mm_per_pixel, 6)
    return [crop_name, split, plan.annotated.name, str(plan.annotated.image), *block,
            window.col0, window.row0, window.width, window.height, window.out_width,
            window.out_height, mm, labelled, len(plan.index.regions_in(*box))]  # fmt: skip


def write_crops(
    plans: list[_MapPlan], out_dir: Path, taxonomy: Taxonomy, crops: CropSettings, name: str
) -> tuple[int, int]:
    splits = _splits(plans, crops)
    counts = {split: np.zeros(256, np.int64) for split in SPLITS}
    written = Counter()
    skipped = 0
    total = sum(len(p.windows) for p in plans)
    with open(out_dir / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        manifest = csv.writer(handle)
        manifest.writerow(MANIFEST_COLUMNS)
        with tqdm(total=total, unit="crop", desc="crops") as bar:
            for plan in plans:
                with gdal_env(), MosaicSource(plan.annotated.image, crops.nodata) as source:
                    for window in plan.windows:
                        bar.update()
                        split = _split_of(window, splits, crops)
                        done = (
                            None
                            if split is None
                            else _write_crop(source, plan, window, split, out_dir, crops)
                        )
                        if done is None:
                            skipped += 1
                            continue
                        crop_name, mask = done
                        found = pixel_counts(mask)
                        counts[split] += found
                        written[split] += 1
                        labelled = int(found[: taxonomy.num_classes].sum())
                        manifest.writerow(
                            _manifest_row(plan, window, crop_name, split, labelled, crops)
                        )
    facts = dict(
        dataset_name=name,
        image_size=crops.crop_size,
        source="annotated orthomosaics",
        crop_size=crops.crop_size,
        mm_per_pixel=crops.mm_per_pixel,
        split_by=crops.split_by,
        block_size=crops.block_crops * crops.crop_size if crops.split_by == "block" else None,
        skipped_crops=skipped,
    )
    write_dataset_info(
        out_dir, taxonomy, counts, dict(written), facts, f"the annotated maps {name!r}"
    )
    return sum(written.values()), skipped


def prepare_maps(
    maps: list[AnnotatedMap],
    name: str,
    settings: Settings,
    crops: CropSettings,
    overwrite: bool = False,
) -> PreparedMaps:
    """Write the crops of `maps` as the dataset folder <data_root>/<name>."""
    started = time.perf_counter()
    taxonomy = load_taxonomy(settings.taxonomy)
    target = absolute(Path(settings.data_root) / output_name(name, taxonomy.name))
    clean_leftovers(target)
    check_target(target, overwrite, [str(m.image) for m in maps])
    if not maps:
        raise PrepareError(f"{name}: no map to prepare")
    try:
        plans = _plan(maps, taxonomy, crops, settings.unknown_labels)
    except ImageReadError as exc:
        raise PrepareError(str(exc)) from None
    regions = sum(len(p.index) for p in plans)
    log.info("%d map(s), %d region(s), %d crop windows of %d px (%s); splits by %s",
             len(plans), regions, sum(len(p.windows) for p in plans), crops.crop_size,
             f"{crops.mm_per_pixel} mm/px" if crops.mm_per_pixel else "native resolution",
             crops.split_by)  # fmt: skip
    try:
        with staged_folder(target, TOOL, overwrite, what=WHAT) as staging:
            for kind in ("images", "annotations"):
                for split in SPLITS:
                    (staging / kind / split).mkdir(parents=True)
            written, skipped = write_crops(plans, staging, taxonomy, crops, name)
            if not written:
                raise PrepareError(
                    f"{name}: no crop holds an annotated pixel inside the annotated area; "
                    "are the polygons on this image (CRS, map)?"
                )
    except OutputRefusedError as exc:
        raise PrepareError(str(exc)) from None
    except ImageReadError as exc:
        raise PrepareError(str(exc)) from None
    except OSError as exc:
        raise PrepareError(
            f"Could not write the prepared dataset: {exc}. Nothing was changed at {target}."
        ) from None
    log.info("Dataset prepared at: %s (%d crops, %d without an annotated pixel skipped, %.1f s)",
             target, written, skipped, time.perf_counter() - started)  # fmt: skip
    return PreparedMaps(target, written, skipped)
