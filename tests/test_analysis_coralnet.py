"""CoralNet layouts (as CoralNet's own tests spell them) and the stratified random points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.coralnet import (
    grid_shape,
    image_rng,
    label_codes,
    percent_covers,
    point_rows,
    stratified_points,
)
from analysis.sources import ANNOTATED, PREDICTED, SourceError


def test_points_are_one_per_cell_reproducible_and_labelled_by_their_pixel():
    shape = (97, 131)  # not a multiple of the grid: cells differ by one pixel, as in CoralNet
    class_map = np.random.default_rng(5).integers(0, 6, shape).astype(np.uint8)
    valid = np.ones(shape, bool)
    rows, cols = stratified_points(valid, 100, image_rng(0, "quadrat_07"))
    assert len(rows) == 100 and grid_shape(100) == (10, 10)
    # cell k spans [k * size // 10, (k + 1) * size // 10), CoralNet's integer division
    row_starts = [k * shape[0] // 10 for k in range(10)]
    col_starts = [k * shape[1] // 10 for k in range(10)]
    cells = set(
        zip(
            np.searchsorted(row_starts, rows, side="right"),
            np.searchsorted(col_starts, cols, side="right"),
            strict=True,
        )
    )
    assert len(cells) == 100  # every cell holds exactly one point
    again = stratified_points(valid, 100, image_rng(0, "quadrat_07"))
    assert np.array_equal(again[0], rows) and np.array_equal(again[1], cols)
    other = stratified_points(valid, 100, image_rng(1, "quadrat_07"))
    assert not np.array_equal(other[0], rows)
    codes = ["bg", "A", "B", "C", "D", "E"]
    table = point_rows("quadrat_07.jpg", class_map, rows, cols, codes)
    assert list(table.columns) == ["Name", "Row", "Column", "Label code"]
    for row, col, code in table[["Row", "Column", "Label code"]].itertuples(index=False):
        assert code == codes[class_map[row, col]]
    assert table["Row"].between(0, shape[0] - 1).all()  # 0-based, as CoralNet counts


def test_points_stay_in_the_valid_area():
    valid = np.zeros((50, 50), bool)
    valid[:, :25] = True  # the right half is outside the quadrat
    rows, cols = stratified_points(valid, 16, image_rng(3, "x"))
    assert len(rows) == 8 and valid[rows, cols].all()  # the 8 cells of the right half: none
    with pytest.raises(SourceError, match="1 to 1000"):
        stratified_points(valid, 1001, image_rng(3, "x"))


def test_percent_covers_matches_coralnets_own_expected_export():
    # project/export/tests/test_covers.py, test_all_images_multiple: 5 points A,B,A,B,A;
    # A,B,B,B,B; A,A,A,A,A -> 60/40, 20/80, 100/0 and ALL IMAGES 60/40.
    cover = pd.DataFrame(
        [
            (stem, f"{stem}.jpg", 5, k, pct)
            for stem, a in (("1", 60), ("2", 20), ("3", 100))
            for k, pct in ((0, a), (1, 100 - a))
        ],
        columns=["image", "name", "valid_pixels", "class_index", "cover_percent"],
    )
    table = percent_covers(cover, ["A", "B"], ANNOTATED)
    lines = table.to_csv(index=False).splitlines()
    assert lines == [
        "Image ID,Image name,Annotation status,Points,A,B",
        "1,1.jpg,Confirmed,5,60.000,40.000",
        "2,2.jpg,Confirmed,5,20.000,80.000",
        "3,3.jpg,Confirmed,5,100.000,0.000",
        "ALL IMAGES,,,,60.000,40.000",
    ]
    one = percent_covers(cover[cover["image"] == "1"], ["A", "B"], PREDICTED)
    assert one.to_csv(index=False).splitlines() == [
        "Image ID,Image name,Annotation status,Points,A,B",
        "1,1.jpg,Unconfirmed,5,60.000,40.000",  # one image: no summary row
    ]


def test_label_codes_fit_coralnets_10_characters(tmp_path):
    assert label_codes(["background", "Pavona/Leptoseris", "Porites"]) == [
        "background",
        "PavonaLept",
        "Porites",
    ]
    with pytest.raises(SourceError, match="--label-codes"):
        label_codes(["Montastrea1", "Montastrea2"])  # both cut to Montastrea
    codes = tmp_path / "codes.csv"
    codes.write_text("class,code\nMontastrea1,MONT1\nMontastrea2,MONT2\n")
    assert label_codes(["Montastrea1", "Montastrea2"], codes) == ["MONT1", "MONT2"]
