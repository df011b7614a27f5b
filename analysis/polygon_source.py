"""Corrected polygons as annotated labels: a TagLab project, or a GIS polygon file.

    reef_stats.py summarize survey.json --output-dir ...                           # TagLab
    reef_stats.py summarize corrected.gpkg --images ortho.tif --output-dir ...     # QGIS
    reef_stats.py summarize results/.../mosaics --truth corrected.gpkg --images ortho.tif ...

People correct the toolkit's predictions of an orthomosaic in TagLab or QGIS; the
corrected numbers must come from those polygons, not from the stale class map. exchange/
reads the files into AnnotatedMaps (regions in map pixel coordinates); this module counts
them as analysis/mosaic_source.py counts a class-map GeoTIFF, never holding a whole map:

- Class map: exchange/paint.py's RegionIndex paints each window (the rule training crops
  use too: holes are holes, every part of a multi-part region counts, the smaller of two
  overlapping regions holds the pixel).
- Counted pixels: the orthomosaic's valid pixels (mosaic/raster.MosaicSource.read_valid:
  not nodata, not transparent), and where the map states its annotated area (TagLab's
  working area, --area) only those inside it or inside a region drawn past its edge
  (paint.py's rule); the rest is 255. Without a stated area every valid pixel is
  counted, as the tiled class map counts them: a region-less valid pixel is background.
  The orthomosaic is then needed (a map without it is refused); with a stated area a
  missing orthomosaic only loses the nodata mask (warned).
- Colonies: one per region whose class is not background, its mask the pixels the
  painting rule gives it (overlaps taken off the larger region) among the counted ones,
  so the colonies partition the coral of the class map; the region's id (TagLab's blob
  id, the GIS feature's FID) where every region of the map has a distinct one, else its
  position (1, 2, ...).
- Scale: the orthomosaic's georeference (mosaic/ground.py, as MosaicImage), else TagLab's
  georeference file, else the map's pixel size (TagLab's px-to-mm), else none.
- Labels resolve to classes through the taxonomy the classes are (aliases, a coarse
  taxonomy's member genera: dataset/taxonomy.py), else by the class names themselves.
  A label that resolves to none is an error listing every such label with its count
  (TagLab's "Empty", an unlabelled region, too): none is dropped silently.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from analysis.mosaic_source import IGNORE, WindowedMap, ground_scale
from analysis.scale import Scale
from analysis.sources import ANNOTATED, ClassInfo, Colony, ImageLabels, SourceError
from dataset.image_io import ImageReadError
from dataset.taxonomy import TAXONOMY_DIR, load_taxonomy, normalize_label
from exchange.paint import BACKGROUND, RegionIndex
from exchange.regions import AnnotatedMap
from mosaic.raster import MosaicSource, gdal_env, quiet_open

log = logging.getLogger("coral")

TAGLAB_EMPTY = "Empty"  # TagLab's class of a region nobody labelled


def class_lookup(classes: ClassInfo) -> tuple[Callable[[str], int | None], str]:
    """label -> class index (None: unknown), and what the classes are, for messages.

    The taxonomy whose classes these are knows aliases and, for a coarse one, the genera
    of each class; classes of no known taxonomy match by name (case and separators aside,
    as taxonomies match)."""
    for path in sorted(TAXONOMY_DIR.glob("*.yaml")):
        taxonomy = load_taxonomy(path)
        if taxonomy.classes == classes.names:
            return taxonomy.index_of, f"the {taxonomy.name!r} taxonomy"
    by_name = {normalize_label(name): i for i, name in enumerate(classes.names)}
    shown = ", ".join(classes.names[:8]) + (", ..." if classes.num_classes > 8 else "")
    return (lambda label: by_name.get(normalize_label(label))), f"the classes ({shown})"


def resolve_labels(where: str, maps: list[AnnotatedMap], classes: ClassInfo) -> dict[str, int]:
    """{label: class index} for every region label; SourceError listing the unknown ones."""
    counts = Counter(region.label for annotated in maps for region in annotated.regions)
    index_of, described = class_lookup(classes)
    class_of = {label: index_of(label) for label in counts}
    unknown = Counter({label: counts[label] for label, i in class_of.items() if i is None})
    if unknown:
        listed = ", ".join(f"{label!r} ({n})" for label, n in unknown.most_common())
        empty = (
            f" {TAGLAB_EMPTY!r} is TagLab's class of a region nobody labelled: label or "
            "delete those regions."
            if TAGLAB_EMPTY in unknown
            else ""
        )
        raise SourceError(
            f"{where}: {sum(unknown.values())} region(s) with {len(unknown)} label(s) unknown "
            f"to {described}: {listed}.{empty} Relabel them, add them as aliases to the "
            "taxonomy, or give --classes the taxonomy (or prepared dataset) they belong to; "
            "no region is left out of the numbers silently"
        )
    return class_of


@dataclass
class PolygonSource:
    """Annotated maps (exchange/regions.py) as a label source: stems are the map names."""

    path: Path  # the file read (TagLab project or polygon file), for messages
    maps: list[AnnotatedMap]
    classes: ClassInfo
    kind: str = ANNOTATED
    _by_name: dict = field(init=False, repr=False)
    _class_of: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = Counter(m.name for m in self.maps)
        twice = sorted(name for name, n in names.items() if n > 1)
        if twice:
            raise SourceError(
                f"{self.path}: maps {twice} share a name; the numbers of a map are keyed by "
                "it, so rename them (TagLab: Project > Edit map)"
            )
        self._by_name = {m.name: m for m in self.maps}
        self._class_of = resolve_labels(str(self.path), self.maps, self.classes)

    @property
    def description(self) -> str:
        return f"corrected polygons {self.path}"

    def stems(self) -> list[str]:
        if not self.maps:
            raise SourceError(f"{self.path}: holds no map")
        return sorted(self._by_name)

    def open(self, stem: str) -> PolygonImage:
        """One map, painted by windows (close it, or use it in a `with`)."""
        annotated = self._by_name[stem]
        values = [self._class_of[region.label] for region in annotated.regions]
        return PolygonImage(annotated, values)

    def load(self, stem: str) -> ImageLabels:
        """The whole class map and every colony mask in memory (compare, --truth)."""
        with self.open(stem) as image:
            return ImageLabels(stem, image.name, image.whole(), list(image.colonies()),
                               image.cover_from, None, image.scale)  # fmt: skip


class PolygonImage(WindowedMap):
    """One annotated map: its class map painted, counted and measured a window at a time."""

    cover_from = "polygons"  # what images.csv says the cover was counted from

    def __init__(self, annotated: AnnotatedMap, values: list[int]) -> None:
        self.map = annotated
        self.name = annotated.image.name  # the orthomosaic's file, as the user knows it
        self.shape = (annotated.height, annotated.width)
        self._values = values
        geometries = [region.geometry for region in annotated.regions]
        self._index = RegionIndex(geometries, values, annotated.area)
        # Original order (not painting order): colonies find their neighbours here.
        self._tree = shapely.STRtree(geometries)
        ids = [region.id for region in annotated.regions]
        distinct = None not in ids and len(set(ids)) == len(ids)
        self._ids = ids if distinct else list(range(1, len(ids) + 1))
        self._env = gdal_env()
        self._env.__enter__()
        try:
            self._raster = self._open_raster()
            self.scale, self.scale_from = self._scale()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __enter__(self) -> PolygonImage:
        return self

    def __exit__(self, *exc) -> None:
        if getattr(self, "_raster", None) is not None:
            self._raster.close()
        self._env.__exit__(None, None, None)

    def _open_raster(self) -> MosaicSource | None:
        """The orthomosaic, for its valid pixels and georeference (module docstring)."""
        image, where = self.map.image, f"map {self.map.name!r}"
        try:
            raster = MosaicSource(image)
        except ImageReadError as exc:
            if self.map.area is None:
                raise SourceError(
                    f"{where}: its orthomosaic {image} cannot be read ({exc}), and without it "
                    "or an annotated area (TagLab's working area, --area) the pixels outside "
                    "the mosaic would count as background; put the orthomosaic where the "
                    "project says, or state the annotated area"
                ) from None
            log.warning("%s: its orthomosaic %s cannot be read (%s); every pixel of the "
                        "annotated area is counted, nodata or not", where, image, exc)  # fmt: skip
            return None
        if (raster.width, raster.height) != (self.map.width, self.map.height):
            raster.close()
            raise SourceError(
                f"{where}: its orthomosaic {image} is {raster.width} x {raster.height} px, the "
                f"annotations are on a {self.map.width} x {self.map.height} px map; give the "
                "raster the polygons were drawn on"
            )
        return raster

    def _scale(self) -> tuple[Scale | None, str]:
        raster, annotated = self._raster, self.map
        if raster is not None:
            scale = ground_scale(raster.crs, raster.transform, raster.width, raster.height)
            if scale is not None:
                return scale, scale.source
        georeference = annotated.georeference
        if georeference is not None:
            try:
                with quiet_open(georeference) as src:
                    same_grid = (src.width, src.height) == (annotated.width, annotated.height)
                    scale = ground_scale(src.crs, src.transform, src.width, src.height)
            except RasterioIOError as exc:
                log.warning("map %r: its georeference %s cannot be read (%s)",
                            annotated.name, georeference, exc)  # fmt: skip
                scale, same_grid = None, False
            if scale is not None and same_grid:  # another grid: other pixels
                return scale, scale.source
        if annotated.mm_per_pixel:
            mm = annotated.mm_per_pixel
            text = f"the project's pixel size of map {annotated.name!r} ({mm:g} mm)"
            return Scale(mm, text), text
        return None, (
            f"none: {annotated.image.name} has no georeference and the project no pixel size "
            "(give --mm-per-pixel)"
        )

    def _valid(self, row0: int, col0: int, height: int, width: int) -> np.ndarray | None:
        """The orthomosaic's valid pixels of a window; None where every pixel is."""
        if self._raster is None or not self._raster.marks_outside:
            return None
        return self._raster.read_valid(row0, col0, height, width)

    def _read(self, window: Window) -> np.ndarray:
        row0, col0 = int(window.row_off), int(window.col_off)
        height, width = int(window.height), int(window.width)
        block = self._index.paint(row0, col0, height, width)
        valid = self._valid(row0, col0, height, width)
        if valid is not None:
            block[~valid] = IGNORE
        return block

    def colonies(self) -> Iterator[Colony]:
        """One colony per region that is not background (module docstring), one at a time."""
        height, width = self.shape
        for k, region in enumerate(self.map.regions):
            if self._values[k] == BACKGROUND:
                continue
            x0, y0, x1, y1 = region.geometry.bounds
            left, top = max(math.floor(x0), 0), max(math.floor(y0), 0)
            right, bottom = min(math.ceil(x1), width), min(math.ceil(y1), height)
            if right <= left or bottom <= top:
                continue  # wholly off the map
            mask = self._own_pixels(k, top, left, bottom - top, right - left)
            valid = self._valid(top, left, bottom - top, right - left)
            if valid is not None:
                mask &= valid
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if not len(rows):
                continue  # no pixel centre inside, or every pixel taken by smaller regions
            crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            yield Colony(int(self._ids[k]), int(self._values[k]), crop, top + int(rows[0]),
                         left + int(cols[0]), region.confidence, None)  # fmt: skip

    def _own_pixels(self, k: int, top: int, left: int, height: int, width: int) -> np.ndarray:
        """The pixels of a box that region k holds in the class map. The regions reaching
        the box are painted by RegionIndex itself, k as 1 and the others as 2, in their
        original order: its painting order (area, then that order) is the whole map's,
        so this is the painting rule, not a second one."""
        near = np.sort(self._tree.query(shapely.box(left, top, left + width, top + height)))
        geometries = [self.map.regions[i].geometry for i in near]
        marks = [1 if i == k else 2 for i in near]
        return RegionIndex(geometries, marks).paint(top, left, height, width) == 1
