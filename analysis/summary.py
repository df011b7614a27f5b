"""The `summarize` command: from one output (and optionally its annotations) to the numbers.

Per image: percent cover per class, colonies with their measures, CoralNet points; then
groups, size classes, CoralNet files, figures and report.html, all in one output folder
that appears complete or not at all. A bad image is named and skipped; the run goes on
and exits non-zero at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from analysis import coralnet, figures
from analysis.cover import image_cover_error, mean_errors, valid_area
from analysis.groups import (
    groups_from_pattern,
    read_groups_csv,
    single_group,
    size_classes,
    summarize_groups,
)
from analysis.mosaic_source import MosaicOutput
from analysis.mosaic_summary import summarize_mosaic, summarize_mosaic_pair
from analysis.open_source import DEFAULT_CLASS_FIELD, is_polygon_file, open_source
from analysis.output import check_target, staged_folder, write_csv
from analysis.polygon_source import PolygonSource
from analysis.quadrat import Quadrat
from analysis.report import Report, Section
from analysis.rows import Collected, colony_rows, cover_rows, image_row
from analysis.scale import ScaleError, ScaleSpec
from analysis.sources import (
    ANNOTATED,
    NAME_SOURCES,
    ClassInfo,
    ImageLabels,
    LabelSource,
    SourceError,
)

log = logging.getLogger("coral")

IMAGE_COLUMNS = [
    "image",
    "file_name",
    "source",
    "width",
    "height",
    "valid_pixels",
    "valid_area_cm2",
    "valid_area_m2",
    "mm_per_pixel",
    "scale_source",
    "cover_from",
    "colonies",
]
COVER_COLUMNS = [
    "image",
    "file_name",
    "source",
    "class_index",
    "class",
    "pixels",
    "valid_pixels",
    "cover_percent",
    "area_cm2",
]
COLONY_COLUMNS = [
    "image",
    "file_name",
    "source",
    "colony_id",
    "genus",
    "class_index",
    "confidence",
    "unsure",
    "touches_edge",
    "area_px",
    "perimeter_px",
    "feret_px",
    "centroid_row",
    "centroid_col",
    "area_cm2",
    "perimeter_cm",
    "feret_cm",
]


@dataclass
class SummaryOptions:
    input: Path
    output_dir: Path
    split: str = "test"
    truth: Path | None = None
    classes: str | None = None
    images: Path | None = None
    scale: ScaleSpec = field(default_factory=ScaleSpec)
    quadrat: Quadrat = field(default_factory=Quadrat)
    groups: Path | None = None
    group_pattern: str | None = None
    group_by: list[str] | None = None
    points: int = 100
    seed: int = 0
    label_codes: Path | None = None
    overwrite: bool = False
    class_field: str = DEFAULT_CLASS_FIELD  # a polygon file's class attribute
    area: Path | None = None  # a polygon file of the annotated area (polygon inputs)

    @property
    def inputs(self) -> list[Path | None]:
        """Every file or folder the run reads (the output may not replace any of them)."""
        read = [self.input, self.truth, self.images, self.groups, self.label_codes, self.area]
        classes = Path(self.classes) if self.classes else None
        return [*read, self.quadrat.mask, classes if classes and classes.exists() else None]


def open_inputs(options: SummaryOptions) -> dict[str, LabelSource]:
    """{role: source}: the input under its own kind, and the annotations under ANNOTATED."""
    classes = options.classes
    if classes is None and options.truth and (Path(options.truth) / "classes.txt").is_file():
        classes = options.truth  # class maps predicted for that prepared dataset
    polygon_truth = is_polygon_file(options.truth)
    source = open_source(options.input, options.split, classes, options.images,
                         options.class_field, None if polygon_truth else options.area)  # fmt: skip
    sources = {source.kind: source}
    if options.truth:
        if source.kind == ANNOTATED:
            raise SourceError(
                f"{options.input} holds annotations already; --truth compares predictions "
                "(a two-stage output or predicted class maps) with annotations"
            )
        if polygon_truth:  # on the input's orthomosaic (--images), in the input's classes
            truth = open_source(options.truth, options.split, classes or source.classes,
                                options.images, options.class_field, options.area)  # fmt: skip
        else:
            truth = open_source(options.truth, options.split, classes)
        truth.kind = ANNOTATED
        if truth.classes.names != source.classes.names:
            raise SourceError(
                f"{options.truth} has the classes {list(truth.classes.names)}, "
                f"{options.input} {list(source.classes.names)}: compare outputs of one taxonomy"
            )
        sources[ANNOTATED] = truth
    return sources


def group_table(options: SummaryOptions, names: dict[str, str]) -> tuple[pd.DataFrame, list[str]]:
    stems = sorted(names)
    if options.groups and options.group_pattern:
        raise SourceError("give --groups or --group-pattern, not both")
    if options.groups:
        table = read_groups_csv(options.groups, names)
    elif options.group_pattern:
        table = groups_from_pattern(options.group_pattern, stems)
    else:
        table = single_group(stems)
    keys = options.group_by or list(table.columns)
    unknown = [k for k in keys if k not in table.columns]
    if unknown:
        raise SourceError(
            f"--group-by {','.join(unknown)}: no such column; there are {list(table.columns)}"
        )
    return table, keys


def _load_matching(stem: str, sources: dict[str, LabelSource]) -> dict[str, ImageLabels]:
    labels = {role: source.load(stem) for role, source in sources.items()}
    first = next(iter(labels.values()))
    for role, other in labels.items():
        if other.shape != first.shape:
            raise SourceError(
                f"{first.name}: the {role} map is {other.shape[1]} x {other.shape[0]} px, "
                f"the {first.cover_from} {first.shape[1]} x {first.shape[0]}; compare maps of "
                "one image size"
            )
    return labels


def windowed_pair(sources: dict[str, LabelSource]) -> bool:
    """A tiled run's mosaics beside corrected polygons: counted window by window
    (mosaic_summary.summarize_mosaic_pair)."""
    main = next(iter(sources.values()))
    return (
        len(sources) == 2
        and isinstance(main, MosaicOutput)
        and isinstance(sources.get(ANNOTATED), PolygonSource)
    )


def summarize_image(
    stem: str, sources: dict[str, LabelSource], options: SummaryOptions, classes: ClassInfo,
    codes: list[str],
) -> Collected:  # fmt: skip
    """Every row of one image; raises (naming the file) when the image cannot be counted."""
    main = next(iter(sources.values()))
    # A mosaic or polygon map is never read whole, alone or beside corrected polygons
    # (--truth); quadrat options are refused for both (a quadrat is a photo's frame).
    if windowed_pair(sources):
        return summarize_mosaic_pair(stem, main, sources[ANNOTATED], options, classes, codes)
    polygon_truth = len(sources) == 2 and isinstance(sources.get(ANNOTATED), PolygonSource)
    if isinstance(main, MosaicOutput | PolygonSource) and not polygon_truth:
        return summarize_mosaic(stem, main, options, classes, codes, len(sources) - 1)
    labels = _load_matching(stem, sources)
    first = next(iter(labels.values()))
    region = options.quadrat.region(stem, first.shape)
    valid = valid_area([lab.class_map for lab in labels.values()], classes.ignore_index, region)
    scale = options.scale.for_image(first.name, first.shape, first.scale)
    if options.points:
        rng = coralnet.image_rng(options.seed, stem)
        rows, cols = coralnet.stratified_points(valid, options.points, rng)
    out = Collected()
    # predictions and annotations of an image share its name (CoralNet's key), the one
    # from the most trusted place (a --truth manifest knows the photo inference ran on)
    named = min(labels.values(), key=lambda lab: NAME_SOURCES.index(lab.name_from))
    if not named.name_from:
        out.unnamed.append(stem)
    for role, lab in labels.items():
        base = {"image": stem, "file_name": named.name, "source": role}
        out.cover += cover_rows(base, lab.class_map, classes, valid, scale)
        colonies = [c for c in (c.clipped(valid) for c in lab.colonies) if c is not None]
        out.colonies += colony_rows(base, colonies, classes, valid, scale)
        out.images.append(image_row(base, lab, valid, scale, len(colonies)))
        if options.points:
            table = coralnet.point_rows(named.name, lab.class_map, rows, cols, codes)
            out.points[role] = [table]
    if len(labels) == 2:
        predicted = next(lab for role, lab in labels.items() if role != ANNOTATED)
        error = image_cover_error(predicted.class_map, labels[ANNOTATED].class_map,
                                  classes.num_classes, classes.ignore_index, region)  # fmt: skip
        out.errors += [error] if error is not None else []
    return out


def run_summary(options: SummaryOptions) -> int:
    """The whole command; returns the exit status (1 when an image failed)."""
    check_target(options.output_dir, options.overwrite, options.inputs)
    if options.points:
        coralnet.check_point_count(options.points)
    sources = open_inputs(options)
    main = next(iter(sources.values()))
    classes = main.classes
    codes = coralnet.label_codes(classes.names, options.label_codes)
    stems = main.stems()
    collected = Collected()
    if ANNOTATED in sources and len(sources) == 2:
        annotated = set(sources[ANNOTATED].stems())
        for stem in [s for s in stems if s not in annotated]:
            collected.failures.append((stem, f"no annotation in {sources[ANNOTATED].description}"))
        stems = [s for s in stems if s in annotated]
    groups, keys = group_table(options, {s: s for s in stems})
    for stem in tqdm(stems, unit="img", desc="summarize"):
        try:
            collected.extend(summarize_image(stem, sources, options, classes, codes))
        except (SourceError, ScaleError) as exc:
            collected.failures.append((stem, str(exc)))
        except Exception as exc:  # one bad image must not stop the batch; it is named
            collected.failures.append((stem, f"{type(exc).__name__}: {exc}"))
    for stem, reason in collected.failures:
        log.error("%s: not counted: %s", stem, reason)
    if collected.unnamed:
        log.warning(
            "No photo name is known for %d image(s) (%s): CoralNet files name them "
            "<image>.png, which no photo in CoralNet has; give --images PHOTOS (the folder "
            "of the photos) or --classes the prepared dataset they came from",
            len(collected.unnamed), ", ".join(collected.unnamed[:10])
            + (", ..." if len(collected.unnamed) > 10 else ""),
        )  # fmt: skip
    if not collected.images:
        log.error("No image could be counted; nothing written to %s", options.output_dir)
        return 1
    with staged_folder(options.output_dir, options.overwrite, options.inputs) as staging:
        report = write_outputs(staging, collected, groups, keys, sources, classes, codes, options)
    n_images = len({row["image"] for row in collected.images})
    print(f"\nCounted {n_images} images of {main.description} -> {options.output_dir}")
    print(f"Report: {Path(options.output_dir) / report.name}")
    if collected.failures:
        print(f"{len(collected.failures)} image(s) not counted (listed above and in the report)")
    return 1 if collected.failures else 0


def _with_groups(rows: list[dict], columns: list[str], groups: pd.DataFrame) -> pd.DataFrame:
    """The rows as a table, the image's group columns after its name."""
    table = pd.DataFrame(rows, columns=columns).join(groups, on="image")
    return table[columns[:2] + list(groups.columns) + columns[2:]]


@dataclass
class Tables:
    images: pd.DataFrame
    cover: pd.DataFrame
    colonies: pd.DataFrame
    groups: pd.DataFrame
    size_classes: pd.DataFrame
    cover_error: pd.DataFrame | None  # with annotations only

    @classmethod
    def build(cls, collected: Collected, groups: pd.DataFrame, keys: list[str],
              classes: ClassInfo, with_truth: bool) -> Tables:  # fmt: skip
        images = _with_groups(collected.images, IMAGE_COLUMNS, groups)
        cover = _with_groups(collected.cover, COVER_COLUMNS, groups)
        colonies = _with_groups(collected.colonies, COLONY_COLUMNS, groups)
        errors = None
        if with_truth:
            result = mean_errors(collected.errors, classes.names)
            errors = pd.DataFrame(
                [{"class": name, "images": result["images"], "mean_error_pp": v["mean"],
                  "mean_abs_error_pp": v["mean_abs"]} for name, v in result["per_class"].items()]
            )  # fmt: skip
        return cls(images, cover, colonies, summarize_groups(cover, images, colonies, keys),
                   size_classes(colonies, keys), errors)  # fmt: skip

    def write(self, folder: Path) -> None:
        for name in ("images", "cover", "colonies", "groups", "size_classes", "cover_error"):
            if getattr(self, name) is not None:
                write_csv(getattr(self, name), folder / f"{name}.csv")


def write_coralnet(
    folder: Path, tables: Tables, points: dict[str, list[pd.DataFrame]],
    sources: dict[str, LabelSource], codes: list[str],
) -> None:  # fmt: skip
    """coralnet/<source>/percent_covers.csv and annotations.csv (the points)."""
    for role, source in sources.items():
        part = tables.cover[tables.cover["source"] == role].rename(columns={"file_name": "name"})
        target = folder / "coralnet" / role
        write_csv(coralnet.percent_covers(part, codes, source.kind), target / "percent_covers.csv")
        if role in points:
            write_csv(pd.concat(points[role], ignore_index=True), target / "annotations.csv")


def draw_figures(
    folder: Path, tables: Tables, keys: list[str], classes: ClassInfo, predicted: str
) -> list[tuple[str, Path]]:
    folder.mkdir()
    shown = [
        ("Mean coral cover per group and genus",
         figures.cover_by_group(tables.groups, keys, classes, folder / "cover_by_group.png")),
        ("Colony size-frequency (log2 size classes)",
         figures.size_frequency(tables.size_classes, classes, folder / "size_frequency.png")),
    ]  # fmt: skip
    if tables.cover_error is not None:
        scatter = figures.cover_scatter(tables.cover, predicted, classes,
                                        folder / "cover_scatter.png")  # fmt: skip
        shown.append(("Predicted vs annotated cover (1:1 line)", scatter))
    return shown


def write_outputs(
    folder: Path, collected: Collected, groups: pd.DataFrame, keys: list[str],
    sources: dict[str, LabelSource], classes: ClassInfo, codes: list[str],
    options: SummaryOptions,
) -> Path:  # fmt: skip
    """Every output file into `folder`; returns the report's path."""
    tables = Tables.build(collected, groups, keys, classes, with_truth=len(sources) == 2)
    tables.write(folder)
    write_coralnet(folder, tables, collected.points, sources, codes)
    shown = draw_figures(folder / "figures", tables, keys, classes, next(iter(sources)))
    report = build_report(sources, options, tables, keys, shown, collected.failures)
    return report.write(folder / "report.html")


def _scale_text(images: pd.DataFrame) -> str:
    known = images.drop_duplicates("image")[["mm_per_pixel", "scale_source"]].dropna()
    if known.empty:
        reasons = sorted({r for r in images["scale_source"].dropna() if r})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        return f"unknown{why}: sizes in pixels only (give --mm-per-pixel or --quadrat-size-cm)"
    means = known.groupby("scale_source")["mm_per_pixel"].mean()
    return "; ".join(f"{source} ({mm:.4g} mm/px)" for source, mm in means.items())


def _side_by_side(
    table: pd.DataFrame, column: str, values: str, names: tuple[str, ...], roles: list[str],
    aggfunc: str = "mean",
) -> pd.DataFrame:  # fmt: skip
    """Images down, classes across in taxonomy order, each class's sources next to each
    other; classes that are nowhere present are left out."""
    wide = table.pivot_table(index="image", columns=[column, "source"], values=values,
                             aggfunc=aggfunc, fill_value=0)  # fmt: skip
    present = {c for (c, _), v in wide.max().items() if v > 0}
    order = [(c, s) for c in names if c in present for s in roles if (c, s) in wide.columns]
    wide = wide[order]
    wide.columns = [f"{c} ({s})" if len(roles) > 1 else c for c, s in order]
    return wide.reset_index()


def build_report(
    sources: dict[str, LabelSource], options: SummaryOptions, tables: Tables, keys: list[str],
    shown: list[tuple[str, Path]], failures: list[tuple[str, str]],
) -> Report:  # fmt: skip
    images, cover, colonies = tables.images, tables.cover, tables.colonies
    group_stats, sizes, errors = tables.groups, tables.size_classes, tables.cover_error
    quadrat = ", inside the quadrat" if options.quadrat.given else ""
    points = "none"
    if options.points:
        points = f"{options.points} per image, stratified random, seed {options.seed}"
    settings = [(role.capitalize(), source.description) for role, source in sources.items()]
    settings += [
        ("Scale", _scale_text(images)),
        ("Counted area", f"pixels no map ignores{quadrat}"),
        ("CoralNet points", points),
        # without --groups / --group-pattern the one group's column is a placeholder
        ("Groups", ", ".join(keys) if options.groups or options.group_pattern else "none"),
    ]
    names, roles = next(iter(sources.values())).classes.names, list(sources)
    sections = [
        Section("Cover per image (%)",
                _side_by_side(cover, "class", "cover_percent", names, roles),
                "Share of the counted pixels; cover.csv holds every class and pixel count."),
        Section("Colonies per image",
                _side_by_side(colonies, "genus", "colony_id", names, roles, "count"),
                "colonies.csv holds each colony's genus, confidence, area, perimeter, "
                "Feret diameter and centroid."),
    ]  # fmt: skip
    if errors is not None:
        present = set(cover.loc[cover["pixels"] > 0, "class"])
        sections.append(Section(
            "Cover error, predicted - annotated (percentage points)",
            errors[errors["class"].isin(present)],
            "Mean (bias) and mean absolute error over images; cover_error.csv has every class.",
        ))  # fmt: skip
    sections.append(Section(
        "Groups", group_stats[group_stats["cover_mean"] > 0],
        "Mean cover across images with its spread; colony density per m2 over the images "
        "with a scale (density_images of them; colonies of images without one count in "
        "colonies only). groups.csv has every class.",
    ))  # fmt: skip
    if not sizes.empty:
        size_wide = sizes.pivot_table(index=["source", "genus"], columns="size_class",
                                      values="colonies", aggfunc="sum", fill_value=0)  # fmt: skip
        size_wide.columns = [f"2^{k} {sizes['unit'].iloc[0]}" for k in size_wide.columns]
        sections.append(Section("Size classes (colonies per log2 class, all groups)",
                                size_wide.reset_index()))  # fmt: skip
    return Report("Reef numbers", settings, shown, sections, failures)
