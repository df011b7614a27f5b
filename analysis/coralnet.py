"""CoralNet's own CSV layouts, so a lab can set our numbers beside its CoralNet/CPCe history.

Read in CoralNet's source (github.com/coralnet/coralnet, commit ced146eb, 2026-07):

- Point annotations, upload and export (project/annotations/utils.py
  `annotations_csv_to_dict`; help text project/annotations/templates/annotations/
  help_upload.html; export columns in project/annotations/views.py): one row per point,
  columns `Name` (image file name), `Row` (pixel y from the top), `Column` (pixel x
  from the left), `Label code` (the labelset's short code; the older header `Label` is
  still accepted). Rows and columns count from 0 (coralnet.ucsd.edu/blog/
  two-changes-to-point-annotations/); at most 1000 points per image
  (project/config/settings.py MAX_POINTS_PER_IMAGE); short codes are at most 10
  characters (project/labels/models.py).
- Image covers export, `percent_covers.csv` (project/export/views.py
  `ImageCoversExportPrepView`, tests in project/export/tests/test_covers.py): columns
  `Image ID, Image name, Annotation status, Points`, then one column per label (short
  code by default), each a percentage with exactly 3 decimals; when more than one image
  is exported, a last row `ALL IMAGES,,,,` holds the mean over images, each image weighted
  equally.
- Stratified random points (project/images/utils.py `calculate_points`): the annotation
  area is cut into cell_rows x cell_columns cells whose sides differ by at most one
  pixel (integer division), and each cell gets its own random points.

Here the cover is counted over every valid pixel, not over points, so `Points` holds
the number of valid pixels; `Image ID` (CoralNet's database id, which we cannot know)
holds the image's position in the export; predictions have the status CoralNet gives
machine annotations, `Unconfirmed`, and annotations `Confirmed`.
"""

from __future__ import annotations

import csv
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.sources import ANNOTATED, SourceError

MAX_CODE_LENGTH = 10
MAX_POINTS_PER_IMAGE = 1000
POINT_COLUMNS = ["Name", "Row", "Column", "Label code"]
COVER_COLUMNS = ["Image ID", "Image name", "Annotation status", "Points"]


def label_codes(classes: Sequence[str], codes_file: str | Path | None = None) -> list[str]:
    """CoralNet short codes of the classes: from `codes_file` (CSV with columns class, code)
    where given, else the class name with its punctuation removed, cut to 10 characters."""
    given: dict[str, str] = {}
    if codes_file is not None:
        with open(codes_file, newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"class", "code"} <= set(reader.fieldnames or ()):
                raise SourceError(f"{codes_file}: needs the columns 'class' and 'code'")
            given = {row["class"].strip(): row["code"].strip() for row in reader}
    codes = [
        given.get(name) or re.sub(r"[^0-9A-Za-z]+", "", name)[:MAX_CODE_LENGTH] for name in classes
    ]
    too_long = [c for c in codes if len(c) > MAX_CODE_LENGTH]
    clashes = sorted({c for c in codes if codes.count(c) > 1})
    if too_long or clashes:
        raise SourceError(
            f"CoralNet short codes must be unique and at most {MAX_CODE_LENGTH} characters "
            f"(too long: {too_long}, shared: {clashes}); give --label-codes a CSV with the "
            "columns class,code (your source's labelset codes)"
        )
    return codes


def check_point_count(count: int) -> None:
    if not 1 <= count <= MAX_POINTS_PER_IMAGE:
        raise SourceError(f"--points {count}: CoralNet takes 1 to {MAX_POINTS_PER_IMAGE} per image")


def grid_shape(count: int) -> tuple[int, int]:
    """Cell rows x columns for `count` points, one per cell, as square as `count` allows."""
    rows = max(r for r in range(1, int(np.sqrt(count)) + 1) if count % r == 0)
    return rows, count // rows


def image_rng(seed: int, stem: str) -> np.random.Generator:
    """Each image's own random stream: its points do not depend on which other images run."""
    return np.random.default_rng([seed, zlib.crc32(stem.encode())])


def stratified_points(
    valid: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """`count` points, one random valid pixel in each cell of a grid (CoralNet's stratified
    random design, cells cut as CoralNet cuts them); a cell without a valid pixel gets no
    point. Returns (rows, columns), in cell order."""
    check_point_count(count)
    cell_rows, cell_cols = grid_shape(count)
    height, width = valid.shape
    rows, cols = [], []
    for r in range(cell_rows):
        top, bottom = r * height // cell_rows, (r + 1) * height // cell_rows
        for c in range(cell_cols):
            left, right = c * width // cell_cols, (c + 1) * width // cell_cols
            ys, xs = np.nonzero(valid[top:bottom, left:right])
            if len(ys):
                pick = rng.integers(len(ys))
                rows.append(top + int(ys[pick]))
                cols.append(left + int(xs[pick]))
    return np.array(rows, int), np.array(cols, int)


def point_rows(
    name: str, class_map: np.ndarray, rows: np.ndarray, cols: np.ndarray, codes: Sequence[str]
) -> pd.DataFrame:
    """The CoralNet point-annotation rows of one image: each point labelled by its pixel."""
    return point_table(name, rows, cols, class_map[rows, cols], codes)


def point_table(
    name: str, rows: np.ndarray, cols: np.ndarray, labels: np.ndarray, codes: Sequence[str]
) -> pd.DataFrame:
    """The rows of points whose class indices are known already (`labels`)."""
    return pd.DataFrame(
        {"Name": name, "Row": rows, "Column": cols, "Label code": [codes[i] for i in labels]},
        columns=POINT_COLUMNS,
    )


def percent_covers(cover: pd.DataFrame, codes: Sequence[str], kind: str) -> pd.DataFrame:
    """CoralNet's percent_covers.csv from our tidy cover table of one source (columns image,
    name, class_index, cover_percent, valid_pixels), values already as CoralNet's strings."""
    wide = cover.pivot_table(
        index=["image", "name", "valid_pixels"],
        columns="class_index",
        values="cover_percent",
        sort=False,
    )
    wide = wide.reindex(columns=range(len(codes)), fill_value=0.0)
    out = pd.DataFrame(
        {
            "Image ID": range(1, len(wide) + 1),
            "Image name": wide.index.get_level_values("name"),
            "Annotation status": "Confirmed" if kind == ANNOTATED else "Unconfirmed",
            "Points": wide.index.get_level_values("valid_pixels"),
        }
    )
    for index, code in enumerate(codes):
        out[code] = [_percent(v) for v in wide[index]]
    if len(wide) > 1:
        summary = {
            "Image ID": "ALL IMAGES",
            "Image name": "",
            "Annotation status": "",
            "Points": "",
        }
        summary.update({code: _percent(wide[i].mean()) for i, code in enumerate(codes)})
        out = pd.concat([out, pd.DataFrame([summary])], ignore_index=True)
    return out


def _percent(value: float) -> str:
    """CoralNet's number format: always 3 decimals, no negative zero."""
    text = format(float(value), ".3f")
    return "0.000" if text == "-0.000" else text
