"""The tiled outputs of large images as a label source: <stem>.classes.tif + <stem>.geojson.

    reef_stats.py summarize results/orthomosaic_inference/mosaics --output-dir ...

The class map is the GeoTIFF (255 outside the mosaic: not counted); the colonies are
the GeoJSON's polygons, burnt back into pixels (rasterio.features.rasterize, through
the raster's geotransform) with their class, confidence and unsure flag; the scale is
the ground size of the raster's pixels (mosaic/ground.py: geodesic, any CRS; none for
an image without a georeference). The class names are the GeoTIFF's `classes` tag,
written by mosaic/pipeline.py.

A mosaic is never read whole by `reef_stats.py summarize` (a 40000 px class map is
1.6 GB as bytes, and several times that as the masks of whole-image code): cover is
counted window by window, CoralNet points are drawn cell by cell in strips, and each
colony is measured in its own bounding box (`MosaicImage`). `load` still reads the whole
map, for `compare`. The window-by-window counting (`WindowedMap`) is shared with the
corrected polygons of analysis/polygon_source.py, painted a window at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.features import rasterize
from rasterio.windows import Window

from analysis.coralnet import check_point_count, grid_shape
from analysis.scale import Scale
from analysis.sources import PREDICTED, ClassInfo, Colony, ImageLabels, SourceError
from mosaic.geojson import read_features
from mosaic.ground import ground_pixel
from mosaic.raster import gdal_env

SUFFIX = ".classes.tif"
IGNORE = 255
# Rows x columns read at once: 4 MiB of class indices (32 MiB as bincount's int64),
# whatever the mosaic's size. GDAL's block cache is bounded as tiled inference bounds it.
WINDOW = 2048


def is_mosaic_folder(path: Path) -> bool:
    return any(path.glob(f"*{SUFFIX}"))


def ground_scale(crs, transform, width: int, height: int) -> Scale | None:
    """The ground scale of a raster's pixels (mosaic/ground.py), None without a georeference."""
    ground = ground_pixel(crs, transform, width, height)
    if ground is None:
        return None
    return Scale(ground.mm_per_pixel, ground.source, ground.area_m2 * 1e6)


def raster_scale(src) -> tuple[Scale | None, str]:
    """The ground scale of an open raster, and where it came from (or why there is none)."""
    scale = ground_scale(src.crs, src.transform, src.width, src.height)
    if scale is None:
        return None, "none: the class map has no georeference (give --mm-per-pixel)"
    return scale, scale.source


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

    def open(self, stem: str) -> MosaicImage:
        """One mosaic, read by windows (close it, or use it in a `with`)."""
        return MosaicImage(self._classes_file(stem), self.folder / f"{stem}.geojson", stem)

    def load(self, stem: str) -> ImageLabels:
        """The whole class map and every colony mask in memory (compare's pairs)."""
        with self.open(stem) as image:
            class_map = image.src.read(1)
            colonies = list(image.colonies())
            return ImageLabels(stem, image.name, class_map, colonies, "class map", None,
                               image.scale)  # fmt: skip


class WindowedMap:
    """A class map counted a window at a time, never read whole: cover, CoralNet points and
    the counted pixels around a colony. A subclass gives `shape` and `_read` (a window's
    class indices, IGNORE where not counted): a class-map GeoTIFF (MosaicImage) or
    polygons painted window by window (analysis/polygon_source.py)."""

    shape: tuple[int, int]  # rows, columns

    def _read(self, window: Window) -> np.ndarray:
        raise NotImplementedError

    def _windows(self, top: int = 0, left: int = 0, bottom=None, right=None) -> Iterator[Window]:
        """The windows over a region, WINDOW rows and columns at a time."""
        bottom = self.shape[0] if bottom is None else bottom
        right = self.shape[1] if right is None else right
        for row0 in range(top, bottom, WINDOW):
            for col0 in range(left, right, WINDOW):
                yield Window(col0, row0, min(WINDOW, right - col0), min(WINDOW, bottom - row0))

    def class_pixels(self, num_classes: int) -> tuple[np.ndarray, int]:
        """Pixels of each class (index order) and the counted total, window by window."""
        counts = np.zeros(num_classes, np.int64)
        for window in self._windows():
            found = np.bincount(self._read(window).ravel(), minlength=256)
            counts += found[:num_classes]
        return counts, int(counts.sum())

    def stratified_points(
        self, count: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CoralNet's stratified random points as analysis/coralnet.py draws them (cells cut
        the same way, one uniformly random counted pixel in each, none where a cell has
        none), each cell read in strips: rows, columns and the class at each."""
        check_point_count(count)
        cell_rows, cell_cols = grid_shape(count)
        height, width = self.shape
        rows, cols, labels = [], [], []
        for r in range(cell_rows):
            top, bottom = r * height // cell_rows, (r + 1) * height // cell_rows
            for c in range(cell_cols):
                left, right = c * width // cell_cols, (c + 1) * width // cell_cols
                strips = [
                    (window, int((self._read(window) != IGNORE).sum()))
                    for window in self._windows(top, left, bottom, right)
                ]
                total = sum(n for _, n in strips)
                if not total:
                    continue
                pick = int(rng.integers(total))
                for window, n in strips:
                    if pick < n:
                        block = self._read(window)  # read again: no window is kept
                        y, x = _nth_counted(block, pick)
                        rows.append(int(window.row_off) + y)
                        cols.append(int(window.col_off) + x)
                        labels.append(int(block[y, x]))
                        break
                    pick -= n
        return np.array(rows, int), np.array(cols, int), np.array(labels, int)

    def whole(self) -> np.ndarray:
        """The whole class map, assembled window by window (compare's pairs, --truth)."""
        class_map = np.empty(self.shape, np.uint8)
        for w in self._windows():
            class_map[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] = (
                self._read(w)
            )
        return class_map

    def counted(self, top: int, left: int, bottom: int, right: int) -> np.ndarray:
        """Counted pixels (not 255) of a box (bottom and right exclusive)."""
        return self._read(Window(left, top, right - left, bottom - top)) != IGNORE

    def valid_around(self, colony: Colony) -> np.ndarray:
        """Counted pixels (not 255) in the colony's box grown by one pixel, clipped to the map."""
        top, left, bottom, right = colony.box
        top, left = max(top - 1, 0), max(left - 1, 0)
        bottom, right = min(bottom + 1, self.shape[0]), min(right + 1, self.shape[1])
        return self.counted(top, left, bottom, right)


class MosaicImage(WindowedMap):
    """A class-map GeoTIFF and its colonies, counted and measured a window at a time."""

    cover_from = "class map"  # what images.csv says the cover was counted from

    def __init__(self, classes_file: Path, geojson: Path, stem: str) -> None:
        self.geojson = geojson
        self._env = gdal_env()
        self._env.__enter__()
        try:
            self.src = rasterio.open(classes_file)
        except rasterio.errors.RasterioIOError as exc:
            self._env.__exit__(None, None, None)
            raise SourceError(f"{classes_file}: cannot be read ({exc})") from None
        self.name = self.src.tags().get("source", f"{stem}.tif")
        self.shape = (self.src.height, self.src.width)
        self.scale, self.scale_from = raster_scale(self.src)

    def __enter__(self) -> MosaicImage:
        return self

    def __exit__(self, *exc) -> None:
        self.src.close()
        self._env.__exit__(None, None, None)

    def _read(self, window: Window) -> np.ndarray:
        return self.src.read(1, window=window)

    def colonies(self) -> Iterator[Colony]:
        """Each colony of the GeoJSON as a mask in its own bounding box, one at a time."""
        t = ~self.src.transform if self.src.crs is not None else None
        to_pixels = None if t is None else [t.a, t.b, t.d, t.e, t.c, t.f]
        for feature in _features(self.geojson):
            colony = _colony(feature, to_pixels, self.shape)
            if colony is not None:
                yield colony


def _features(path: Path) -> Iterator[dict]:
    """The colonies GeoJSON's features, one at a time (mosaic/geojson.py reads its own format)."""
    try:
        yield from read_features(path)
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"{path}: not the colonies of tiled inference ({exc})") from None


def _nth_counted(block: np.ndarray, n: int) -> tuple[int, int]:
    """(row, column) of the n-th counted pixel in row-major order, without listing them all
    (np.nonzero of a 2048 px window is 64 MiB of indices)."""
    per_row = np.count_nonzero(block != IGNORE, axis=1)
    row = int(np.searchsorted(np.cumsum(per_row), n, side="right"))
    before = int(per_row[:row].sum())
    col = int(np.flatnonzero(block[row] != IGNORE)[n - before])
    return row, col


def _colony(feature: dict, to_pixels: list[float] | None, shape: tuple[int, int]) -> Colony | None:
    geometry = shapely.geometry.shape(feature["geometry"])
    if to_pixels is not None:
        geometry = shapely.affinity.affine_transform(geometry, to_pixels)
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
