"""summarize's rows for one orthomosaic (a tiled run's class map, or corrected polygons),
in memory that does not grow with the mosaic: cover counted window by window, each colony
measured in its own box, CoralNet points drawn cell by cell (analysis/mosaic_source.py and
analysis/polygon_source.py read; analysis/rows.py formats).
"""

from __future__ import annotations

from analysis import coralnet
from analysis.measures import touches_edge
from analysis.mosaic_source import MosaicImage, MosaicOutput
from analysis.polygon_source import PolygonSource
from analysis.rows import Collected, colony_row, cover_rows_of_counts, image_row_of_counts
from analysis.sources import ClassInfo, Colony, SourceError


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
        base = {"image": stem, "file_name": image.name, "source": source.kind}
        pixels, total = image.class_pixels(classes.num_classes)
        out.cover += cover_rows_of_counts(base, pixels, total, classes, scale)
        count = 0
        for colony in image.colonies():
            out.colonies.append(colony_row(base, colony, classes, _touches(image, colony), scale))
            count += 1
        out.images.append(image_row_of_counts(base, image.shape, total, scale, image.scale_from,
                                              image.cover_from, count))  # fmt: skip
        if options.points:
            rng = coralnet.image_rng(options.seed, stem)
            rows, cols, labels = image.stratified_points(options.points, rng)
            out.points[source.kind] = [coralnet.point_table(image.name, rows, cols, labels, codes)]
    return out


def _touches(image: MosaicImage, colony: Colony) -> bool:
    """measures.touches_edge on the colony's box grown by one pixel, read from the map."""
    top, left, bottom, right = colony.box
    height, width = image.shape
    if top == 0 or left == 0 or bottom == height or right == width:
        return True
    local = Colony(colony.id, colony.class_index, colony.mask, 1, 1)
    return touches_edge(local, image.valid_around(colony))
