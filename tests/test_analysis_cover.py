"""Percent cover and the cover error against numpy bincounts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_analysis_synthetic import write_png

from analysis.cover import (
    add_cover_error,
    cover_error,
    cover_error_from_folders,
    cover_percent,
    valid_area,
)
from analysis.quadrat import Quadrat, parse_polygon
from analysis.sources import SourceError

CLASSES = ("background", "A", "B", "C")


def random_map(rng, shape=(60, 80), ignore_share=0.1):
    class_map = rng.integers(0, len(CLASSES), shape).astype(np.uint8)
    class_map[rng.random(shape) < ignore_share] = 255
    return class_map


def test_cover_equals_a_bincount_over_the_valid_pixels():
    rng = np.random.default_rng(0)
    class_map = random_map(rng)
    quadrat = Quadrat(polygon=tuple(parse_polygon("5,5 70,8 72,50 4,55")))
    region = quadrat.region("q", class_map.shape)
    valid = valid_area([class_map], 255, region)
    cover = cover_percent(class_map, len(CLASSES), valid)
    kept = class_map[(class_map != 255) & region]
    expected = np.bincount(kept, minlength=256)[: len(CLASSES)] / kept.size * 100
    assert np.allclose(cover, expected) and cover.sum() == pytest.approx(100)
    assert region[30, 30] and not region[0, 0] and not region[58, 78]


def test_no_valid_pixel_gives_nan_not_a_division_error():
    class_map = np.full((4, 4), 255, np.uint8)
    assert np.isnan(cover_percent(class_map, 4, valid_area([class_map], 255))).all()


def test_cover_error_is_predicted_minus_annotated_mean_and_mean_abs():
    rng = np.random.default_rng(1)
    gts = [random_map(rng) for _ in range(3)]
    preds = [rng.integers(0, len(CLASSES), gt.shape).astype(np.uint8) for gt in gts]
    result = cover_error(preds, gts, CLASSES, 255)
    diffs = []
    for pred, gt in zip(preds, gts, strict=True):
        keep = gt != 255
        pc = np.bincount(pred[keep], minlength=4) / keep.sum() * 100
        gc = np.bincount(gt[keep], minlength=4) / keep.sum() * 100
        diffs.append(pc - gc)
    diffs = np.array(diffs)
    assert result["images"] == 3
    for k, name in enumerate(CLASSES):
        assert result["per_class"][name]["mean"] == pytest.approx(diffs[:, k].mean())
        assert result["per_class"][name]["mean_abs"] == pytest.approx(np.abs(diffs[:, k]).mean())


def test_a_perfect_prediction_has_no_cover_error_but_a_biased_one_does():
    gt = np.zeros((10, 10), np.uint8)
    gt[:5] = 1
    assert cover_error([gt], [gt], CLASSES)["per_class"]["A"] == {"mean": 0.0, "mean_abs": 0.0}
    pred = gt.copy()
    pred[5:7] = 1  # 20 more pixels of A: +20 points
    result = cover_error([pred, gt], [gt, gt], CLASSES)["per_class"]
    assert result["A"] == {"mean": 10.0, "mean_abs": 10.0}
    assert result["background"] == {"mean": -10.0, "mean_abs": 10.0}


def test_add_cover_error_writes_metrics_json_next_to_iou(tmp_path):
    rng = np.random.default_rng(2)
    for stem in ("a", "b"):
        gt = random_map(rng, (20, 20))
        write_png(tmp_path / "ann" / f"{stem}.png", gt)
        write_png(tmp_path / "pred" / f"{stem}.png", np.where(gt == 255, 0, gt).astype(np.uint8))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"mIoU": 0.5, "per_class": {n: {"IoU": 0.5} for n in CLASSES}}))
    table = add_cover_error(metrics, tmp_path / "pred", tmp_path / "ann", CLASSES, 255)
    written = json.loads(metrics.read_text())
    assert written["mIoU"] == 0.5 and written["cover_error"]["images"] == 2
    for name in CLASSES:
        entry = written["per_class"][name]
        assert entry["IoU"] == 0.5 and entry["cover_error"] == 0.0
        assert entry["cover_abs_error"] == 0.0 and name in table
    assert "percentage points over 2 images" in table


def test_every_annotated_image_needs_its_prediction_and_extra_maps_are_not_read(tmp_path):
    write_png(tmp_path / "ann" / "a.png", np.zeros((4, 4), np.uint8))
    write_png(tmp_path / "ann" / "b.png", np.ones((4, 4), np.uint8))
    write_png(tmp_path / "pred" / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(SourceError, match="no predicted class map for 1 annotated.*: b"):
        cover_error_from_folders(tmp_path / "pred", tmp_path / "ann", CLASSES)
    write_png(tmp_path / "pred" / "b.png", np.ones((4, 4), np.uint8))
    write_png(tmp_path / "pred" / "other_split.png", np.full((4, 4), 3, np.uint8))
    result = cover_error_from_folders(tmp_path / "pred", tmp_path / "ann", CLASSES)
    assert result["images"] == 2 and result["per_class"]["C"]["mean_abs"] == 0.0


def test_a_quadrat_mask_file_or_folder_limits_the_counted_area(tmp_path):
    inside = np.zeros((20, 30), np.uint8)
    inside[2:12, 5:25] = 255
    write_png(tmp_path / "quadrat.png", inside)
    write_png(tmp_path / "masks" / "q1.png", inside)
    for quadrat in (Quadrat(mask=tmp_path / "quadrat.png"), Quadrat(mask=tmp_path / "masks")):
        assert quadrat.region("q1", (20, 30)).sum() == 200
    with pytest.raises(SourceError, match=r"q2\.png: no readable quadrat mask for q2"):
        Quadrat(mask=tmp_path / "masks").region("q2", (20, 30))
    with pytest.raises(SourceError, match="quadrat mask is 30 x 20 px, the image 40 x 20"):
        Quadrat(mask=tmp_path / "quadrat.png").region("q1", (20, 40))
