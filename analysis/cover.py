"""Percent cover per class over the valid area, and the cover error of an evaluation.

Cover is what monitoring programs publish: for each class, the share of the counted
pixels (not ignored, inside the quadrat) it covers, in percent; the classes (background
included) sum to 100. The cover error of a model is predicted minus annotated cover in
percentage points, per class, as a mean (bias) and a mean absolute value over images:
the figure mIoU hides (a model can have a fair IoU and still over-report a genus).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from analysis.sources import ClassInfo, SourceError, read_class_map
from dataset.image_io import write_bytes_atomic


def valid_area(
    class_maps: Iterable[np.ndarray], ignore_index: int, region: np.ndarray | None = None
) -> np.ndarray:
    """Pixels counted: inside `region` (the quadrat) and not ignored in any of `class_maps`
    (prediction and annotation share one area, so their covers compare)."""
    valid = None
    for class_map in class_maps:
        here = class_map != ignore_index
        valid = here if valid is None else valid & here
    if region is not None:
        valid = region.copy() if valid is None else valid & region
    return valid


def class_pixels(class_map: np.ndarray, num_classes: int, valid: np.ndarray) -> np.ndarray:
    """Valid pixels of each class (index order)."""
    return np.bincount(class_map[valid].ravel(), minlength=num_classes)[:num_classes]


def cover_percent(class_map: np.ndarray, num_classes: int, valid: np.ndarray) -> np.ndarray:
    """Percent cover of each class over the valid pixels; NaN where none is valid."""
    total = int(valid.sum())
    if total == 0:
        return np.full(num_classes, np.nan)
    return class_pixels(class_map, num_classes, valid) * (100.0 / total)


def image_cover_error(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
    region: np.ndarray | None = None,
) -> np.ndarray | None:
    """Predicted minus annotated cover of each class (percentage points) over the pixels
    neither map ignores (and inside `region`); None when no pixel is left."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and annotation {gt.shape} differ in size")
    valid = valid_area([gt, pred], ignore_index, region)
    if not valid.any():
        return None
    return cover_percent(pred, num_classes, valid) - cover_percent(gt, num_classes, valid)


def mean_errors(errors: Sequence[np.ndarray], classes: Sequence[str]) -> dict:
    """{"images": n, "per_class": {name: {"mean": pp, "mean_abs": pp}}} over per-image errors
    (NaN when there is none)."""
    table = np.array(errors, float).reshape(len(errors), len(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no image: NaN, as documented
        mean, mean_abs = table.mean(axis=0), np.abs(table).mean(axis=0)
    return {
        "images": len(errors),
        "per_class": {
            name: {"mean": float(m), "mean_abs": float(a)}
            for name, m, a in zip(classes, mean, mean_abs, strict=True)
        },
    }


def cover_error(
    pred_maps: Iterable[np.ndarray],
    gt_maps: Iterable[np.ndarray],
    classes: Sequence[str],
    ignore_index: int = 255,
) -> dict:
    """Per-class cover error, predicted minus annotated, in percentage points: its mean and
    mean absolute value over the images (`mean_errors`'s layout).

    Each image's covers are taken over the pixels neither map ignores; an image with no
    such pixel is left out.
    """
    errors = []
    for pred, gt in zip(pred_maps, gt_maps, strict=True):
        error = image_cover_error(pred, gt, len(classes), ignore_index)
        if error is not None:
            errors.append(error)
    return mean_errors(errors, classes)


def cover_error_from_folders(
    pred_dir: str | Path, annotation_dir: str | Path, classes: Sequence[str],
    ignore_index: int = 255,
) -> dict:  # fmt: skip
    """cover_error over every annotation <stem>.png of `annotation_dir` and its predicted map
    in `pred_dir` (other files there, such as another split's maps, are not read)."""
    pred_dir, annotation_dir = Path(pred_dir), Path(annotation_dir)
    info = ClassInfo(tuple(classes), ((0, 0, 0),) * len(classes), ignore_index)
    stems = sorted(p.stem for p in annotation_dir.glob("*.png") if not p.name.startswith("."))
    if not stems:
        raise SourceError(f"{annotation_dir}: no annotation (.png) to compare with")
    missing = [s for s in stems if not (pred_dir / f"{s}.png").is_file()]
    if missing:
        raise SourceError(
            f"{pred_dir}: no predicted class map for {len(missing)} annotated image(s) of "
            f"{annotation_dir}: {', '.join(missing[:5])}; predict the whole split"
        )

    def maps(folder: Path):
        return (read_class_map(folder / f"{s}.png", info) for s in stems)

    return cover_error(maps(pred_dir), maps(annotation_dir), classes, ignore_index)


def format_cover_error(result: dict) -> str:
    """A table for the log, one row per class."""
    per_class = result["per_class"]
    width = max(len("Class"), *(len(c) for c in per_class))
    rule = f"+{'-' * (width + 2)}+-----------+-----------+"
    lines = [
        f"Cover error, predicted - annotated, percentage points over {result['images']} images",
        rule,
        f"| {'Class'.center(width)} |   mean    | mean abs  |",
        rule,
    ]
    lines += [
        f"| {name:<{width}} | {v['mean']:>+9.3f} | {v['mean_abs']:>9.3f} |"
        for name, v in per_class.items()
    ]
    lines.append(rule)
    return "\n".join(lines)


def add_cover_error(
    metrics_file: str | Path,
    pred_dir: str | Path,
    annotation_dir: str | Path,
    classes: Sequence[str],
    ignore_index: int = 255,
) -> str:
    """What test.py calls after its evaluation: computes the cover error of `pred_dir` against
    `annotation_dir`, writes it into metrics.json next to each class's IoU ("cover_error" and
    "cover_abs_error", percentage points) and returns the table to print."""
    metrics_file = Path(metrics_file)
    result = cover_error_from_folders(pred_dir, annotation_dir, classes, ignore_index)
    metrics = json.loads(metrics_file.read_text())
    per_class = metrics.setdefault("per_class", {})
    for name, values in result["per_class"].items():
        entry = per_class.setdefault(name, {})
        entry["cover_error"] = _json_float(values["mean"])
        entry["cover_abs_error"] = _json_float(values["mean_abs"])
    metrics["cover_error"] = {
        "unit": "percentage points, predicted minus annotated cover, mean over images",
        "images": result["images"],
    }
    write_bytes_atomic(metrics_file, json.dumps(metrics, indent=2).encode())
    return format_cover_error(result)


def _json_float(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None
