"""The `compare` command: colony events between two surveys of the same quadrat(s).

Pairs: from a groups CSV (rows image, quadrat, date: each quadrat's images in date order,
each with the next), the earlier image read from BEFORE and the later one from AFTER;
without a CSV, the images of the same name in both. Each pair is registered (or taken as
aligned with --no-register), its colonies matched, and every colony's event written to
changes.csv and drawn on an overlay. A bad pair is named and skipped; the run exits
non-zero at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.change import EVENTS, Event, colony_events
from analysis.open_source import open_source
from analysis.output import check_target, staged_folder, write_csv
from analysis.register import Registration, common_area, register, warp_colony
from analysis.scale import ScaleError, ScaleSpec
from analysis.sources import ImageLabels, LabelSource, SourceError
from dataset.image_io import read_rgb, write_image

log = logging.getLogger("coral")

# RGB, chosen to read apart on reef photos
EVENT_COLOURS = {
    "grew": (30, 144, 255),
    "shrank": (255, 140, 0),
    "same": (200, 200, 200),
    "born": (50, 205, 50),
    "died": (220, 20, 60),
    "split": (186, 85, 211),
    "fused": (0, 206, 209),
    "split and fused": (255, 215, 0),
}
CHANGE_COLUMNS = [
    "quadrat",
    "before_image",
    "after_image",
    "date_before",
    "date_after",
    "event",
    "before_ids",
    "after_ids",
    "genus_before",
    "genus_after",
    "area_before_px",
    "area_after_px",
    "change_percent",
    "area_before_cm2",
    "area_after_cm2",
]


@dataclass
class CompareOptions:
    before: Path
    after: Path
    output_dir: Path
    split: str = "test"
    classes: str | None = None
    scale: ScaleSpec = field(default_factory=ScaleSpec)
    groups: Path | None = None
    quadrat_column: str = "quadrat"
    date_column: str = "date"
    images_before: Path | None = None
    images_after: Path | None = None
    register: bool = True
    min_overlap: float = 0.6
    same_within: float = 0.05
    overwrite: bool = False
    class_field: str = "class"  # polygon files: the attribute holding the class name

    @property
    def inputs(self) -> list[Path | None]:
        """Every file or folder the run reads (the output may not replace any of them)."""
        classes = Path(self.classes) if self.classes else None
        read = [self.before, self.after, self.groups, self.images_before, self.images_after]
        return [*read, classes if classes and classes.exists() else None]


@dataclass(frozen=True)
class Pair:
    quadrat: str
    before: str  # stem
    after: str
    date_before: str = ""
    date_after: str = ""

    @property
    def name(self) -> str:
        return f"{self.before}__{self.after}"


def find_pairs(options: CompareOptions, before: LabelSource, after: LabelSource) -> list[Pair]:
    if options.groups is None:
        common = sorted(set(before.stems()) & set(after.stems()))
        if not common:
            raise SourceError(
                f"no image name is in both {before.description} and {after.description}; "
                "give --groups (columns image, quadrat, date) to pair them"
            )
        return [Pair(stem, stem, stem) for stem in common]
    return pairs_from_groups(options.groups, options.quadrat_column, options.date_column)


def pairs_from_groups(path: Path, quadrat_column: str, date_column: str) -> list[Pair]:
    """Each quadrat's images in date order, each paired with the next."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SourceError(f"--groups {path}: cannot read it as CSV ({exc})") from None
    needed = {"image", quadrat_column, date_column}
    if not needed <= set(table.columns):
        raise SourceError(
            f"--groups {path}: compare needs the columns {sorted(needed)} "
            f"(--quadrat-column, --date-column); it has {list(table.columns)}"
        )
    try:
        when = pd.to_datetime(table[date_column], format="mixed")
    except (ValueError, TypeError) as exc:
        raise SourceError(
            f"--groups {path}: column {date_column!r} holds a value that is no "
            f"date ({exc}); write dates as YYYY-MM-DD"
        ) from None
    table = table.assign(_when=when, image=table["image"].map(lambda s: Path(s.strip()).stem))
    pairs = []
    for quadrat, rows in table.sort_values("_when").groupby(quadrat_column, sort=True):
        rows = rows.to_dict("records")
        for first, second in zip(rows, rows[1:], strict=False):
            pairs.append(
                Pair(
                    str(quadrat),
                    first["image"],
                    second["image"],
                    first[date_column],
                    second[date_column],
                )
            )
    if not pairs:
        raise SourceError(f"--groups {path}: no quadrat has images at two dates")
    return pairs


def _photo(labels: ImageLabels, option: str) -> np.ndarray:
    if labels.photo is None:
        raise SourceError(
            f"{labels.name}: registration needs the photo; give {option} (the folder of the "
            "photos), or --no-register when the pairs are aligned already"
        )
    return read_rgb(labels.photo)


def align(before: ImageLabels, after: ImageLabels, options: CompareOptions) -> Registration:
    if options.register:
        return register(_photo(before, "--images-before"), _photo(after, "--images-after"))
    if before.shape != after.shape:
        raise SourceError(
            f"{before.name} is {before.shape[1]} x {before.shape[0]} px, {after.name} "
            f"{after.shape[1]} x {after.shape[0]}: not aligned; drop --no-register"
        )
    return Registration.identity()


def compare_pair(
    pair: Pair, before_source: LabelSource, after_source: LabelSource, options: CompareOptions
) -> tuple[list[Event], Registration, ImageLabels, np.ndarray]:
    """The pair's events, its registration, the first survey's labels and the common area."""
    before, after = before_source.load(pair.before), after_source.load(pair.after)
    registration = align(before, after, options)
    common = common_area(registration, before.shape, after.shape)
    moved = (warp_colony(c, registration.homography, before.shape) for c in after.colonies)
    after_colonies = [c for c in (m.clipped(common) for m in moved if m) if c is not None]
    before_colonies = [c for c in (b.clipped(common) for b in before.colonies) if c is not None]
    events = colony_events(
        before_colonies, after_colonies, options.min_overlap, options.same_within
    )
    return events, registration, before, common


def event_rows(pair: Pair, events: list[Event], names: tuple[str, ...], scale) -> list[dict]:
    rows = []
    for event in events:
        area_before, area_after = event.area_before, event.area_after
        rows.append(
            {
                "quadrat": pair.quadrat,
                "before_image": pair.before,
                "after_image": pair.after,
                "date_before": pair.date_before,
                "date_after": pair.date_after,
                "event": event.event,
                "before_ids": ";".join(str(c.id) for c in event.before),
                "after_ids": ";".join(str(c.id) for c in event.after),
                "genus_before": ";".join(sorted({names[c.class_index] for c in event.before})),
                "genus_after": ";".join(sorted({names[c.class_index] for c in event.after})),
                "area_before_px": area_before,
                "area_after_px": area_after,
                "change_percent": 100.0 * (area_after - area_before) / area_before
                if area_before
                else np.nan,
                "area_before_cm2": scale.cm2(area_before) if scale else np.nan,
                "area_after_cm2": scale.cm2(area_after) if scale else np.nan,
            }
        )
    return rows


def draw_overlay(before: ImageLabels, events: list[Event], common: np.ndarray) -> np.ndarray:
    """The first photo (grey where unknown) with the second survey's colonies filled and the
    first's outlined, both in their event's colour, and a legend; RGB."""
    if before.photo is not None:
        canvas = read_rgb(before.photo).astype(np.float32)
    else:
        canvas = np.full((*before.shape, 3), 110, np.float32)
    canvas[~common] *= 0.4  # outside what both photos show
    outlines = []
    for event in events:
        colour = np.array(EVENT_COLOURS[event.event], np.float32)
        for colony in event.after:
            top, left, bottom, right = colony.box
            window = canvas[top:bottom, left:right]
            window[colony.mask] = window[colony.mask] * 0.45 + colour * 0.55
        outlines += [(colony, EVENT_COLOURS[event.event]) for colony in event.before]
    image = canvas.astype(np.uint8)
    thickness = max(1, round(max(image.shape[:2]) / 500))
    for colony, colour in outlines:
        contours, _ = cv2.findContours(
            colony.mask.astype(np.uint8),
            cv2.RETR_EXTERNAL,
            cv2.CHAIN_APPROX_SIMPLE,
            offset=(colony.left, colony.top),
        )
        cv2.drawContours(image, contours, -1, colour, thickness)
    return _legend(image, events)


def _legend(image: np.ndarray, events: list[Event]) -> np.ndarray:
    counts = {name: sum(e.event == name for e in events) for name in EVENTS}
    scale = max(0.7, image.shape[0] / 1400)
    line = int(26 * scale) + 6
    panel = np.full((max(image.shape[0], line * 11), int(250 * scale) + 20, 3), 255, np.uint8)
    font = 0.6 * scale
    text = [("filled: after", None), ("outline: before", None)]
    text += [(f"{name}: {count}", EVENT_COLOURS[name]) for name, count in counts.items()]
    for row, (label, colour) in enumerate(text, start=1):
        y = row * line
        if colour is not None:
            cv2.rectangle(panel, (8, y - line + 8), (8 + line - 10, y - 2), colour, -1)
        cv2.putText(
            panel,
            label,
            (line + 6, y - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            font,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    out = np.full((panel.shape[0], image.shape[1] + panel.shape[1], 3), 255, np.uint8)
    out[: image.shape[0], : image.shape[1]] = image
    out[:, image.shape[1] :] = panel
    return out


def pair_row(pair: Pair, registration: Registration, common: np.ndarray, events) -> dict:
    return {
        "quadrat": pair.quadrat, "before_image": pair.before, "after_image": pair.after,
        "date_before": pair.date_before, "date_after": pair.date_after,
        "registration": registration.method, "matches": registration.matches,
        "inliers": registration.inliers, "common_area_px": int(common.sum()),
        **{name: sum(e.event == name for e in events) for name in EVENTS},
    }  # fmt: skip


class _NothingCompared(Exception):
    """Every pair failed: the output folder is not written."""


def compare_all(
    pairs: list[Pair],
    before_source: LabelSource,
    after_source: LabelSource,
    options: CompareOptions,
    folder: Path,
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Every pair into `folder` (changes.csv, pairs.csv, overlays/); returns the pair rows
    and the failures."""
    names = before_source.classes.names
    changes, summaries, failures = [], [], []
    (folder / "overlays").mkdir()
    sides = [(before_source, set(before_source.stems())), (after_source, set(after_source.stems()))]
    for pair in tqdm(pairs, unit="pair", desc="compare"):
        try:
            for stem, (source, stems) in zip((pair.before, pair.after), sides, strict=True):
                if stem not in stems:
                    raise SourceError(f"{stem} is not in {source.description}")
            events, registration, before, common = compare_pair(
                pair, before_source, after_source, options
            )
            scale = options.scale.for_image(before.name, before.shape, before.scale)
            overlay = draw_overlay(before, events, common)
            write_image(
                folder / "overlays" / f"{pair.name}.png", cv2.cvtColor(overlay, cv2.COLOR_RGB2BGR)
            )
        except (SourceError, ScaleError, ValueError) as exc:
            failures.append((pair.name, str(exc)))
            continue
        except Exception as exc:  # one bad pair must not stop the batch; it is named
            failures.append((pair.name, f"{type(exc).__name__}: {exc}"))
            continue
        changes += event_rows(pair, events, names, scale)
        summaries.append(pair_row(pair, registration, common, events))
    for name, reason in failures:
        log.error("%s: not compared: %s", name, reason)
    if not summaries:
        raise _NothingCompared
    write_csv(pd.DataFrame(changes, columns=CHANGE_COLUMNS), folder / "changes.csv")
    write_csv(pd.DataFrame(summaries), folder / "pairs.csv")
    return summaries, failures


def run_compare(options: CompareOptions) -> int:
    """The whole command; returns the exit status (1 when a pair failed)."""
    check_target(options.output_dir, options.overwrite, options.inputs)
    before_source = open_source(options.before, options.split, options.classes,
                                options.images_before, options.class_field)  # fmt: skip
    after_source = open_source(options.after, options.split, options.classes,
                               options.images_after, options.class_field)  # fmt: skip
    if after_source.classes.names != before_source.classes.names:
        raise SourceError(
            f"{options.before} and {options.after} have different classes; "
            "compare outputs of one taxonomy"
        )
    pairs = find_pairs(options, before_source, after_source)
    try:
        with staged_folder(options.output_dir, options.overwrite, options.inputs) as staging:
            summaries, failures = compare_all(pairs, before_source, after_source, options, staging)
    except _NothingCompared:
        log.error("No pair could be compared; nothing written to %s", options.output_dir)
        return 1
    totals = pd.DataFrame(summaries)[list(EVENTS)].sum()
    print(
        f"\nCompared {len(summaries)} pair(s) -> {options.output_dir} (changes.csv, pairs.csv, "
        "overlays/)"
    )
    print("Events: " + ", ".join(f"{name} {int(n)}" for name, n in totals.items() if n))
    if failures:
        print(f"{len(failures)} pair(s) not compared (listed above)")
    return 1 if failures else 0
