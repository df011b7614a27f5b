"""ensemble_utils: each merge strategy on hand-made overlapping instances."""

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ensemble_utils import load_mmseg_predictions, load_yolo_predictions, main, merge_predictions


def instance(category, score, rows, cols, image_id=1):
    mask = np.zeros((20, 20), np.uint8)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"image_id": image_id, "category_id": category, "segmentation": rle, "score": score}


def decoded(result):
    return mask_utils.decode(
        dict(result["segmentation"], counts=result["segmentation"]["counts"].encode())
    )


@pytest.fixture
def predictions(tmp_path):
    yolo = [instance(2, 0.9, (0, 10), (0, 10)), instance(3, 0.8, (12, 18), (12, 18))]
    mmseg = [
        instance(5, 0.5, (0, 10), (1, 11)),
        instance(4, 0.7, (0, 5), (14, 19)),
    ]  # first: IoU 0.82 with yolo[0]
    (tmp_path / "yolo.json").write_text(json.dumps(yolo))
    (tmp_path / "mmseg.json").write_text(
        json.dumps(
            {
                "images": [{"id": 1, "height": 20, "width": 20}],
                "categories": [],
                "annotations": mmseg,
            }
        )
    )
    return load_yolo_predictions(tmp_path / "yolo.json"), load_mmseg_predictions(
        tmp_path / "mmseg.json"
    )


def summary(results):
    return sorted((r["category_id"], round(r["score"], 4), tuple(r["sources"])) for r in results)


def test_weighted_fuses_matched_pairs_and_scales_the_rest(predictions):
    merged = merge_predictions(*predictions, strategy="weighted", yolo_weight=0.4, mmseg_weight=0.6)
    assert summary(merged) == [
        (2, 0.66, ("yolo", "mmseg")),
        (3, 0.32, ("yolo",)),
        (4, 0.42, ("mmseg",)),
    ]
    fused = next(r for r in merged if len(r["sources"]) == 2)
    expected = np.zeros((20, 20), np.uint8)
    expected[0:10, 1:11] = 1  # both found + the heavier (mmseg) source's pixels
    assert np.array_equal(decoded(fused), expected)


def test_voting_keeps_what_enough_weight_agrees_on(predictions):
    yolo, mmseg = predictions
    merged = merge_predictions(yolo, mmseg, strategy="voting")
    # categories of the matched pair disagree: yolo-only instances lack the votes
    assert summary(merged) == [(4, 0.7, ("mmseg",)), (5, 0.5, ("mmseg",))]
    mmseg[0]["category_id"] = 2
    merged = merge_predictions(yolo, mmseg, strategy="voting")
    assert summary(merged) == [(2, 0.66, ("yolo", "mmseg")), (4, 0.7, ("mmseg",))]
    agreed = next(r for r in merged if len(r["sources"]) == 2)
    assert np.array_equal(
        decoded(agreed),
        mask_utils.decode(
            {**mmseg[0]["segmentation"], "counts": mmseg[0]["segmentation"]["counts"].encode()}
        ),
    )


def test_nms_pools_weighted_scores_and_drops_overlaps(predictions):
    merged = merge_predictions(*predictions, strategy="nms")
    assert summary(merged) == [(2, 0.36, ("yolo",)), (3, 0.32, ("yolo",)), (4, 0.42, ("mmseg",))]
    assert summary(merge_predictions(*predictions, strategy="nms", iou_threshold=0.9)) == [
        (2, 0.36, ("yolo",)),
        (3, 0.32, ("yolo",)),
        (4, 0.42, ("mmseg",)),
        (5, 0.3, ("mmseg",)),
    ]


def test_command_line_writes_a_coco_file(predictions, tmp_path):
    assert (
        main(
            [
                str(tmp_path / "yolo.json"),
                str(tmp_path / "mmseg.json"),
                "-o",
                str(tmp_path / "merged.json"),
                "--strategy",
                "voting",
            ]
        )
        == 0
    )
    from pycocotools.coco import COCO

    merged = json.loads((tmp_path / "merged.json").read_text())
    merged["categories"] = [{"id": i, "name": str(i)} for i in range(6)]
    (tmp_path / "merged.json").write_text(json.dumps(merged))
    assert len(COCO(str(tmp_path / "merged.json")).getAnnIds()) == 2


def test_unknown_strategy_and_polygons_are_refused(predictions, tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        merge_predictions(*predictions, strategy="average")
    (tmp_path / "poly.json").write_text(
        json.dumps([{"id": 7, "image_id": 1, "segmentation": [[0, 0, 1, 1]]}])
    )
    with pytest.raises(ValueError, match="instance 7 has no RLE mask"):
        load_yolo_predictions(tmp_path / "poly.json")
