"""One pass over a large image's tiles: semantic probabilities, CoralSCoP proposals and
their fusion per tile (inferencer.py's models and models/fusion.py's rule), the
probabilities blended into the class map and confidence GeoTIFFs, the instances
merged across seams into the colonies GeoJSON.

Per tile, at native resolution: the window is read (mosaic/raster.py), the semantic
model gives its (C, h, w) probabilities, CoralSCoP its proposals, and the fusion rule
labels them with that window's probabilities. Memory: one tile on the device and on
the host, one overlap strip of probabilities across the image (mosaic/blend.py), two
rows of colony polygons (mosaic/seams.py), and GDAL's bounded block cache.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rasterio.transform import Affine
from tqdm import tqdm

from models.fusion import FusionSettings, fuse
from mosaic.blend import Blender
from mosaic.geojson import GeoJSONWriter
from mosaic.geopackage import GeoPackageWriter
from mosaic.ground import ground_pixel
from mosaic.raster import IGNORE_INDEX, MapWriter, MosaicSource, gdal_env, header_facts
from mosaic.seams import Piece, SeamMerger, mask_polygon
from mosaic.windows import check_tiling, grid

log = logging.getLogger("inference.mosaic")

# Images with more pixels go through tiles without --tiled: the whole-image path holds
# (C, H, W) float probabilities and full-size proposal masks (17 classes at 40 MP: 2.7 GB
# per copy) and shrinks the image to SAM's 1024 px. 40 MP is also the CVAT function's
# default request limit (CORAL_MAX_PIXELS); camera quadrats (24 MP at 6000 x 4000) stay whole.
TILED_ABOVE_PIXELS = 40_000_000


@dataclass(frozen=True)
class TileSettings:
    tile_size: int = 1024  # SAM's input size: proposals at native resolution
    overlap: int = 128
    mm_per_pixel: float | None = None  # wins over the georeference for areas
    always: bool = False  # --tiled: every image, whatever its size
    min_shared: float = 0.5  # seam merge rule (mosaic/seams.py)
    nodata: int | None = None  # --nodata: this stored value in every band is outside

    def __post_init__(self) -> None:
        check_tiling(self.tile_size, self.overlap)


@dataclass
class MosaicResult:
    colonies: int  # counts only: nothing per colony is kept (the GeoJSON holds them)
    unsure: int
    outputs: dict[str, Path]
    width: int
    height: int
    tiles: int
    pixel_area_m2: float | None
    scale_from: str
    seconds: dict = field(default_factory=dict)


def wants_tiling(path: str | Path, forced: bool) -> bool:
    """Forced, a georeferenced image (its outputs are GIS files, whatever its size), or an
    image GDAL opens with more than TILED_ABOVE_PIXELS pixels."""
    if forced:
        return True
    facts = header_facts(path)
    if facts is None:
        return False
    height, width, georeferenced = facts
    return georeferenced or height * width > TILED_ABOVE_PIXELS


def output_paths(out_dir: Path, stem: str) -> dict[str, Path]:
    return {
        "classes": out_dir / f"{stem}.classes.tif",
        "confidence": out_dir / f"{stem}.confidence.tif",
        "colonies": out_dir / f"{stem}.geojson",
        "geopackage": out_dir / f"{stem}.gpkg",  # the same colonies, QGIS's native format
    }


def pixel_area(source: MosaicSource, mm_per_pixel: float | None) -> tuple[float | None, str]:
    """Square metres per pixel on the ground and where that comes from (mosaic/ground.py:
    geodesic, for any CRS; --mm-per-pixel wins)."""
    ground = ground_pixel(source.crs, source.transform, source.width, source.height)
    if mm_per_pixel:
        area = (mm_per_pixel / 1000) ** 2
        if ground and abs(area / ground.area_m2 - 1) > 0.01:
            log.warning("%s: --mm-per-pixel %s differs from the georeference (%.4g mm/px); "
                        "areas use --mm-per-pixel", source.path.name, mm_per_pixel,
                        ground.mm_per_pixel)  # fmt: skip
        return area, f"--mm-per-pixel {mm_per_pixel}"
    if ground:
        return ground.area_m2, ground.source
    return None, "none (no georeference, no --mm-per-pixel): areas in pixels only"


def _warn_of_an_unmarked_collar(source: MosaicSource) -> None:
    """Most photogrammetry exports surround the mosaic with a black or white collar; when
    nothing marks it as outside, it would be predicted and counted as sea floor."""
    if source.marks_outside:
        return
    colour = source.constant_edge()
    if colour is None:
        return
    value = str(colour[0]) if len(set(colour)) == 1 else "VALUE"
    log.warning(
        "%s: most of the image's edge is one colour %s and the file marks no pixel as "
        "outside the mosaic (no nodata value, no alpha): if that is a collar, pass --nodata "
        "%s, or it is predicted and counted as sea floor, lowering every cover figure",
        source.path.name, colour, value,
    )  # fmt: skip


def run_tiled(
    path: str | Path,
    out_dir: str | Path,
    predict_probs: Callable[[np.ndarray], torch.Tensor],
    propose: Callable[[np.ndarray], object],
    fusion: FusionSettings,
    classes: list[str],
    palette: list | None = None,
    settings: TileSettings | None = None,
) -> MosaicResult:
    """Tiled two-stage inference of one image into out_dir (see output_paths).

    predict_probs: RGB tile -> (C, h, w) probabilities (SemanticSegmenter.predict_probs);
    propose: RGB tile -> proposals with `.masks` (N, h, w) bool (CoralSCoPSegmenter.propose).
    """
    settings = settings or TileSettings()
    path, out_dir = Path(path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = output_paths(out_dir, path.stem)
    started = time.perf_counter()
    seconds = dict(semantic=0.0, sam=0.0, fusion=0.0)
    with gdal_env(), MosaicSource(path, settings.nodata) as source:
        _warn_of_an_unmarked_collar(source)
        area_m2, scale_from = pixel_area(source, settings.mm_per_pixel)
        rows = grid(source.height, source.width, settings.tile_size, settings.overlap)
        tiles = sum(len(r) for r in rows)
        log.info("%s: %d x %d px in %d tiles of %d px (overlap %d); georeferenced: %s; "
                 "area per pixel from %s", path.name, source.width, source.height, tiles,
                 settings.tile_size, settings.overlap,
                 source.crs.to_string() if source.georeferenced else "no", scale_from)  # fmt: skip
        tags = dict(classes=json.dumps(classes), source=path.name)
        georeferenced = source.georeferenced
        writers: list = []  # each removes its temporary file when the image fails
        try:
            writers.append(MapWriter(outputs["classes"], source, IGNORE_INDEX, palette, tags))
            writers.append(MapWriter(outputs["confidence"], source, tags=tags))
            place = (source.transform, source.crs) if georeferenced else (Affine.identity(), None)
            colonies = GeoJSONWriter(outputs["colonies"], *place, classes, area_m2, path.stem)
            writers.append(colonies)
            writers.append(
                GeoPackageWriter(outputs["geopackage"], *place, classes, area_m2, path.stem)
            )
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
        merger = SeamMerger(fusion.unsure_threshold, settings.min_shared, fusion.min_area)
        blender = Blender(source.width, len(classes), settings.overlap)

        def emit(found) -> None:
            for writer in writers[2:]:  # they count them; nothing per colony stays in memory
                writer.write(found)

        try:
            with tqdm(total=tiles, unit="tile", leave=False, desc=path.name) as bar:
                for row in rows:
                    for tile in row:
                        _one_tile(tile, source, predict_probs, propose, fusion, blender,
                                  writers, merger, seconds)  # fmt: skip
                        bar.update()
                    emit(merger.finish_row(row[0].rows.index))
            emit(merger.finish())
            for writer in writers:
                writer.commit()
        except BaseException:
            for writer in writers:
                writer.abort()
            raise
    seconds["total"] = time.perf_counter() - started
    return MosaicResult(colonies.count, colonies.unsure, outputs, source.width, source.height,
                        tiles, area_m2, scale_from, seconds)  # fmt: skip


def _one_tile(tile, source, predict_probs, propose, fusion, blender, writers, merger, seconds):
    rows, cols = tile.rows, tile.cols
    rgb = source.read_rgb(rows.start, cols.start, rows.size, cols.size)
    valid = source.read_valid(rows.start, cols.start, rows.size, cols.size)
    clock = time.perf_counter()
    probs = predict_probs(rgb)
    host = probs.float().cpu().numpy()
    seconds["semantic"] += time.perf_counter() - clock
    clock = time.perf_counter()
    proposals = propose(rgb)
    seconds["sam"] += time.perf_counter() - clock
    clock = time.perf_counter()
    instances = fuse(probs, proposals.masks, fusion)
    del probs, proposals  # the device holds one tile at a time
    block = blender.add(tile, host)
    height, width = block.classes.shape
    block.classes[~valid[:height, :width]] = IGNORE_INDEX
    writers[0].write(block.row0, block.col0, block.classes)
    writers[1].write(block.row0, block.col0, block.confidence)
    pieces = []
    for inst in instances:
        mask = inst.mask & valid
        if mask.sum() < fusion.min_area:
            continue
        geometry = mask_polygon(mask, rows.start, cols.start)
        pieces.append(Piece(tile.key, inst.label, inst.score, inst.source, geometry))
    merger.add(tile, pieces)
    seconds["fusion"] += time.perf_counter() - clock
