"""Reef numbers from the toolkit's outputs: cover, colonies, groups, CoralNet files, report, change.

    # predicted numbers beside the annotated ones, 50 x 50 cm quadrats
    python reef_stats.py summarize results/two_stage_inference \\
        --truth data/prepared_for_training/criobe_finegrained --split test \\
        --quadrat-size-cm 50 --output-dir results/reef_stats

    # the same quadrats at two dates: colony events
    python reef_stats.py compare results/survey_2023 results/survey_2024 \\
        --groups groups.csv --images-before photos/2023 --images-after photos/2024 \\
        --output-dir results/change_2023_2024

    # an orthomosaic's predictions corrected in QGIS (or TagLab: survey.json), and the
    # stale tiled output beside them
    python reef_stats.py summarize corrected.gpkg --images ortho.tif --output-dir ...
    python reef_stats.py summarize results/orthomosaic_inference/mosaics \\
        --truth corrected.gpkg --images ortho.tif --output-dir ...

An input is a two-stage inference output folder, a folder of class maps (test.py
--pred-dir, with --classes), a prepared dataset (its --split: the annotations), tiled
inference's mosaics/ folder, or corrected polygons: a TagLab project (.json) or a
GeoJSON / GeoPackage / shapefile with --images, the orthomosaic they were drawn on.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from analysis.compare import CompareOptions, run_compare
from analysis.open_source import DEFAULT_CLASS_FIELD
from analysis.quadrat import Quadrat, parse_polygon
from analysis.scale import ScaleError, ScaleSpec, parse_quadrat_size
from analysis.sources import SourceError
from analysis.summary import SummaryOptions, run_summary
from dataset.output_safety import OutputRefusedError


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", required=True, type=Path, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")
    parser.add_argument("--split", default="test", help="split of a prepared dataset (test)")
    parser.add_argument(
        "--classes",
        help="for class-map folders: a prepared dataset, a "
        "classes.txt or a taxonomy name (fine, coarse)",
    )
    scale = parser.add_argument_group("scale (sizes in cm / cm2 where one is given)")
    scale.add_argument("--mm-per-pixel", type=float, help="ground size of one pixel, in mm")
    scale.add_argument(
        "--quadrat-size-cm",
        metavar="W[xH]",
        help="the image spans a W x H cm quadrat (W alone: square)",
    )
    parser.add_argument(
        "--class-field",
        default=DEFAULT_CLASS_FIELD,
        help=f"a polygon file's attribute holding the class name ({DEFAULT_CLASS_FIELD})",
    )
    parser.add_argument(
        "--groups",
        type=Path,
        help="CSV with a column 'image' and group columns (site, date, transect, quadrat, ...)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    summarize = commands.add_parser(
        "summarize", help="cover, colonies, groups, CoralNet CSVs, figures and report.html"
    )
    summarize.add_argument(
        "input",
        type=Path,
        help="two-stage output, class-map folder, prepared dataset, mosaics/ folder, "
        "TagLab project (.json) or polygon file (.geojson, .gpkg, .shp; with --images)",
    )
    _common(summarize)
    summarize.add_argument(
        "--truth",
        type=Path,
        help="the annotations of the same images (a prepared dataset, a TagLab project or a "
        "polygon file): predicted and annotated numbers side by side",
    )
    summarize.add_argument(
        "--images",
        type=Path,
        help="the photos (for their file names); for a polygon file, the orthomosaic "
        "(GeoTIFF) it was drawn on",
    )
    summarize.add_argument(
        "--area",
        type=Path,
        help="polygon file of the annotated area of a TagLab project or polygon file "
        "(default: the project's working area, else the orthomosaic's valid pixels)",
    )
    summarize.add_argument(
        "--quadrat-mask",
        type=Path,
        help="PNG, non-zero inside the quadrat (or a folder of <image>.png masks)",
    )
    summarize.add_argument("--quadrat-polygon", help="quadrat corners in pixels: 'x,y x,y x,y ...'")
    summarize.add_argument(
        "--group-pattern",
        help="regular expression with named groups over "
        "the image name, e.g. '(?P<site>[A-Z]+)_(?P<date>\\d{8})'",
    )
    summarize.add_argument("--group-by", help="comma-separated group columns (default: all)")
    summarize.add_argument(
        "--points",
        type=int,
        default=100,
        help="CoralNet points per image, stratified random (100; 0: none)",
    )
    summarize.add_argument("--seed", type=int, default=0, help="seed of the points (0)")
    summarize.add_argument(
        "--label-codes",
        type=Path,
        help="CSV class,code: CoralNet short codes (default: class names cut to 10 characters)",
    )

    compare = commands.add_parser("compare", help="colony events between two surveys")
    compare.add_argument("before", type=Path, help="output of the first survey")
    compare.add_argument("after", type=Path, help="output of the second survey")
    _common(compare)
    compare.add_argument(
        "--quadrat-column", default="quadrat", help="groups CSV column naming the quadrat (quadrat)"
    )
    compare.add_argument("--date-column", default="date", help="groups CSV date column (date)")
    compare.add_argument("--images-before", type=Path, help="photos of the first survey")
    compare.add_argument("--images-after", type=Path, help="photos of the second survey")
    compare.add_argument(
        "--no-register", action="store_true", help="the pairs are aligned already: no registration"
    )
    compare.add_argument(
        "--min-overlap",
        type=float,
        default=0.6,
        help="overlap, as a share of the smaller colony, that matches (0.6)",
    )
    compare.add_argument(
        "--same-within",
        type=float,
        default=0.05,
        help="relative area change still counted as 'same' (0.05)",
    )
    return parser.parse_args(argv)


def _scale(args: argparse.Namespace) -> ScaleSpec:
    quadrat = parse_quadrat_size(args.quadrat_size_cm) if args.quadrat_size_cm else None
    return ScaleSpec(args.mm_per_pixel, quadrat)


def summarize(args: argparse.Namespace) -> int:
    polygon = tuple(parse_polygon(args.quadrat_polygon)) if args.quadrat_polygon else None
    quadrat = Quadrat(args.quadrat_mask, polygon)
    if quadrat.given and args.quadrat_size_cm:
        raise ScaleError(
            "--quadrat-size-cm says the image is the quadrat; with a quadrat mask "
            "or polygon give --mm-per-pixel instead"
        )
    options = SummaryOptions(
        input=args.input,
        output_dir=args.output_dir,
        split=args.split,
        truth=args.truth,
        classes=args.classes,
        images=args.images,
        scale=_scale(args),
        quadrat=quadrat,
        groups=args.groups,
        group_pattern=args.group_pattern,
        group_by=args.group_by.split(",") if args.group_by else None,
        points=args.points,
        seed=args.seed,
        label_codes=args.label_codes,
        overwrite=args.overwrite,
        class_field=args.class_field,
        area=args.area,
    )
    return run_summary(options)


def compare(args: argparse.Namespace) -> int:
    options = CompareOptions(
        before=args.before,
        after=args.after,
        output_dir=args.output_dir,
        split=args.split,
        classes=args.classes,
        scale=_scale(args),
        groups=args.groups,
        quadrat_column=args.quadrat_column,
        date_column=args.date_column,
        images_before=args.images_before,
        images_after=args.images_after,
        register=not args.no_register,
        min_overlap=args.min_overlap,
        same_within=args.same_within,
        overwrite=args.overwrite,
        class_field=args.class_field,
    )
    return run_compare(options)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.captureWarnings(True)  # the polygon readers' warnings, as log lines
    try:
        return summarize(args) if args.command == "summarize" else compare(args)
    except (SourceError, ScaleError, OutputRefusedError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
