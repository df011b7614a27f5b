"""summarize's rows for one orthomosaic (a tiled run's class map, or corrected polygons),
alone or beside its corrections (--truth), in memory that does not grow with the mosaic:
cover counted window by window, each colony measured in its own box, CoralNet points
drawn cell by cell (analysis/mosaic_source.py and analysis/polygon_source.py read;
analysis/rows.py formats).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np

from analysis import coralnet
from analysis.measures import touches_edge
from analysis.mosaic_source import IGNORE, MosaicImage, MosaicOutput, WindowedMap
from analysis.polygon_source import PolygonImage, PolygonSource
from analysis.rows import Collected, colony_row, cover_rows_of_counts, image_row_of_counts
from analysis.sources import ANNOTATED, ClassInfo, Colony, SourceError

WholeMap = MosaicImage | PolygonImage  # a map with its name, scale and colonies


def summarize_mosaic(
    stem: str, source: MosaicOutput | PolygonSource, options, classes: ClassInfo, codes: list[str],
    others: int = 0,
) -> Collected:  # fmt: skip
    """Every row of one mosaic (options: summary.SummaryOptions); others: sources beside it."""
    if others or options.quadrat.given:
        raise SourceError(
            f"{stem}: an orthomosaic is counted over its whole map (outside it not at all); "
            "--truth, --quadrat-mask and --quadrat-polygon apply to quadrat photos"
        )
    out = Collected()
    with source.open(stem) as image:
        scale = options.scale.for_image(image.name, image.shape, image.scale)
        _count(out, stem, image.name, source.kind, image, image, image.colonies(), classes,
               (scale, image.scale_from), options, codes)  # fmt: skip
    return out


def summarize_mosaic_pair(
    stem: str, predicted: MosaicOutput, annotated: PolygonSource, options,
    classes: ClassInfo, codes: list[str],
) -> Collected:  # fmt: skip
    """A mosaic's predictions beside its corrected polygons, counted as summary.py counts a
    quadrat's pair (one counted area: pixels neither map ignores; one name and scale: the
    predicted map's; the cover error of the pair), a window at a time."""
    if options.quadrat.given:
        raise SourceError(
            f"{stem}: an orthomosaic is counted over the area both maps count; "
            "--quadrat-mask and --quadrat-polygon apply to quadrat photos"
        )
    out = Collected()
    with predicted.open(stem) as mine, annotated.open(stem) as truth:
        if mine.shape != truth.shape:
            raise SourceError(
                f"{mine.name}: the annotated map is {truth.shape[1]} x {truth.shape[0]} px, "
                f"the {mine.cover_from} {mine.shape[1]} x {mine.shape[0]}; compare maps of "
                "one image size"
            )
        scale = options.scale.for_image(mine.name, mine.shape, mine.scale)
        covers = []
        for kind, image, other in ((predicted.kind, mine, truth), (ANNOTATED, truth, mine)):
            shared = SharedArea(image, other)
            colonies = _clipped(image.colonies(), shared)
            # both rows state the scale used, the predicted map's (or why there is none)
            covers.append(_count(out, stem, mine.name, kind, image, shared, colonies, classes,
                                 (scale, mine.scale_from), options, codes))  # fmt: skip
    (pred_pixels, total), (truth_pixels, _) = covers
    if total:  # as cover.image_cover_error computes it, to the last bit
        out.errors.append(pred_pixels * (100.0 / total) - truth_pixels * (100.0 / total))
    return out


class SharedArea(WindowedMap):
    """One map, counted only where another counts too: a prediction and its annotation
    share one counted area (cover.valid_area), here a window at a time."""

    def __init__(self, own: WindowedMap, other: WindowedMap) -> None:
        self.own, self.other, self.shape = own, other, own.shape

    def _read(self, window) -> np.ndarray:
        block = self.own._read(window)
        block[self.other._read(window) == IGNORE] = IGNORE
        return block


def _count(
    out: Collected, stem: str, name: str, kind: str, image: WholeMap, counted: WindowedMap,
    colonies: Iterable[Colony], classes: ClassInfo, scaled: tuple, options, codes: list[str],
) -> tuple[np.ndarray, int]:  # fmt: skip
    """Rows of one source over the `counted` pixels; returns its class pixels and total.
    scaled: the Scale used (or None) and where it came from (or why there is none)."""
    scale, scale_text = scaled
    base = {"image": stem, "file_name": name, "source": kind}
    pixels, total = counted.class_pixels(classes.num_classes)
    out.cover += cover_rows_of_counts(base, pixels, total, classes, scale)
    count = 0
    for colony in colonies:
        out.colonies.append(colony_row(base, colony, classes, _touches(counted, colony), scale))
        count += 1
    out.images.append(image_row_of_counts(base, image.shape, total, scale, scale_text,
                                          image.cover_from, count))  # fmt: skip
    if options.points:
        rng = coralnet.image_rng(options.seed, stem)
        rows, cols, labels = counted.stratified_points(options.points, rng)
        out.points[kind] = [coralnet.point_table(name, rows, cols, labels, codes)]
    return pixels, total


def _clipped(colonies: Iterable[Colony], counted: WindowedMap) -> Iterator[Colony]:
    """Each colony's part inside the counted pixels (Colony.clipped, read in its own box)."""
    for colony in colonies:
        inside = colony.mask & counted.counted(*colony.box)
        if np.array_equal(inside, colony.mask):
            yield colony
            continue
        part = Colony.from_mask(colony.id, colony.class_index, inside,
                                confidence=colony.confidence, unsure=colony.unsure)  # fmt: skip
        if part is not None:
            yield replace(part, top=part.top + colony.top, left=part.left + colony.left)


def _touches(image: WindowedMap, colony: Colony) -> bool:
    """measures.touches_edge on the colony's box grown by one pixel, read from the map."""
    top, left, bottom, right = colony.box
    height, width = image.shape
    if top == 0 or left == 0 or bottom == height or right == width:
        return True
    local = Colony(colony.id, colony.class_index, colony.mask, 1, 1)
    return touches_edge(local, image.valid_around(colony))
