"""rounds.csv and rounds.png: what each round bought.

One row per evaluated model: round 0 is the model the loop started from, round N the
one fine-tuned after round N's corrections, all on the same fixed test split. Columns:
labelled training images, images added and images people changed in the round, mIoU,
mAcc, aAcc, the mean absolute cover error over the coral classes (percentage points,
predicted minus annotated cover per image, test.py's figure), then IoU and cover error
per class. The file is rewritten whole (temporary name, rename) with each row.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from dataset.image_io import write_bytes_atomic

ROUNDS_FILE = "rounds.csv"
FIGURE_FILE = "rounds.png"
BASE_COLUMNS = ("round", "strategy", "labelled_images", "new_images", "edited_images",
                "mIoU", "mAcc", "aAcc", "cover_abs_error", "checkpoint")  # fmt: skip


def metrics_row(metrics_file: Path, background: str = "background") -> dict:
    """The metric columns of a row from test.py's metrics.json."""
    metrics = json.loads(Path(metrics_file).read_text())
    row = {key: metrics.get(key) for key in ("mIoU", "mAcc", "aAcc")}
    errors = []
    for name, entry in metrics.get("per_class", {}).items():
        row[f"IoU.{name}"] = entry.get("IoU")
        row[f"cover_error.{name}"] = entry.get("cover_error")
        if name != background and entry.get("cover_abs_error") is not None:
            errors.append(entry["cover_abs_error"])
    row["cover_abs_error"] = float(np.mean(errors)) if errors else None
    return row


def read_rounds(folder: Path) -> list[dict]:
    path = Path(folder) / ROUNDS_FILE
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def append_round(folder: Path, row: dict) -> list[dict]:
    """Add (or replace, for the same round number) one row; returns every row."""
    rows = [r for r in read_rounds(folder) if str(r["round"]) != str(row["round"])]
    rows.append({k: ("" if v is None else v) for k, v in row.items()})
    rows.sort(key=lambda r: int(r["round"]))
    extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS))
    columns = [*BASE_COLUMNS, *extra]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_bytes_atomic(Path(folder) / ROUNDS_FILE, text.getvalue().encode())
    return rows


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def draw_rounds(folder: Path, rows: list[dict], title: str = "") -> Path:
    """mIoU against labelled training images, one point per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401  (matplotlib.ticker below)

    labelled = [_number(r["labelled_images"]) for r in rows]
    miou = [_number(r["mIoU"]) for r in rows]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    axes.plot(labelled, miou, marker="o")
    for r, x, y in zip(rows, labelled, miou, strict=True):
        axes.annotate(f"round {r['round']}", (x, y), textcoords="offset points", xytext=(4, -12),
                      fontsize=8)  # fmt: skip
    axes.set_xlabel("labelled training images")
    axes.set_ylabel("test mIoU")
    axes.set_ylim(0.0, 1.0)  # the whole scale: a zoomed axis makes noise look like progress
    axes.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axes.set_title(title or "Annotation loop")
    axes.grid(alpha=0.3)
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    path = Path(folder) / FIGURE_FILE
    write_bytes_atomic(path, buffer.getvalue())
    return path
