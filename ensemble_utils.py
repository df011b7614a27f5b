"""Merge YOLO instance predictions with the two-stage (DINOv2 + CoralSCoP) ones.

    from ensemble_utils import load_yolo_predictions, load_mmseg_predictions, merge_predictions
    merged = merge_predictions(load_yolo_predictions("yolo_results.json"),
                               load_mmseg_predictions("results/two_stage_inference/predictions.json"),
                               strategy="weighted", yolo_weight=0.4, mmseg_weight=0.6)
    python ensemble_utils.py yolo_results.json predictions.json --strategy voting -o merged.json

Both inputs are COCO results on the same images: a list of
{image_id, category_id, segmentation (RLE), score} (YOLO's COCO export), or a full
COCO document with "annotations" (predictions.json). Two instances *match* when
they are on the same image, from different sources, and their mask IoU is at
least `iou_threshold` (0.5); each instance matches at most one other, best IoU
first. Strategies:

- weighted: a matched pair becomes one instance: its mask keeps the pixels whose
  summed source weight is at least half the total weight (pixels both found, plus
  those of the heavier source); its score is yolo_weight * s_yolo + mmseg_weight *
  s_mmseg; its category is that of the source with the larger weight * score.
  An unmatched instance is kept with its score times its source weight.
- voting: an instance is kept when the sources that found it (itself, plus its
  match if the categories agree) carry at least half the total weight; the kept
  mask and category are those of the heaviest of them, the score their
  weight-averaged score. With 0.4 / 0.6, instances found by both or by the
  semantic pipeline alone stay; YOLO-only ones go.
- nms: all instances, scores times their source weight, then class-agnostic mask
  NMS: an instance overlapping a better-scored kept one with IoU > iou_threshold goes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

STRATEGIES = ("weighted", "voting", "nms")


def _load(path: str | Path, source: str) -> list[dict]:
    data = json.loads(Path(path).read_text())
    annotations = data["annotations"] if isinstance(data, dict) else data
    out = []
    for annotation in annotations:
        if not isinstance(annotation.get("segmentation"), dict):
            raise ValueError(
                f"{path}: instance {annotation.get('id', '?')} has no RLE mask "
                "('segmentation' with size and counts); polygons are not supported"
            )
        out.append({**annotation, "source": source})
    return out


def load_yolo_predictions(path: str | Path) -> list[dict]:
    """YOLO instance predictions in COCO results form (list, or a document with annotations)."""
    return _load(path, "yolo")


def load_mmseg_predictions(path: str | Path) -> list[dict]:
    """predictions.json of inference_with_coralscop.py (or any COCO results with RLE masks)."""
    return _load(path, "mmseg")


def _rle(annotation: dict) -> dict:
    rle = dict(annotation["segmentation"])
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle


def _as_result(
    annotation: dict, rle: dict, score: float, category: int, sources: list[str]
) -> dict:
    counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return {
        "image_id": annotation["image_id"],
        "category_id": int(category),
        "segmentation": {"size": list(rle["size"]), "counts": counts},
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "area": float(mask_utils.area(rle)),
        "score": round(float(score), 6),
        "sources": sources,
    }


def _match(yolo: list[dict], mmseg: list[dict], threshold: float) -> list[tuple[int, int]]:
    """Greedy one-to-one matching by mask IoU (best first), within each image."""
    pairs = []
    images = {a["image_id"] for a in yolo} & {a["image_id"] for a in mmseg}
    for image in images:
        ys = [i for i, a in enumerate(yolo) if a["image_id"] == image]
        ms = [j for j, a in enumerate(mmseg) if a["image_id"] == image]
        ious = np.asarray(
            mask_utils.iou([_rle(yolo[i]) for i in ys], [_rle(mmseg[j]) for j in ms], [0] * len(ms))
        )
        taken_y, taken_m = set(), set()
        for flat in np.argsort(-ious, axis=None):
            a, b = np.unravel_index(flat, ious.shape)
            if ious[a, b] < threshold:
                break
            if a not in taken_y and b not in taken_m:
                taken_y.add(a)
                taken_m.add(b)
                pairs.append((ys[a], ms[b]))
    return pairs


def _mask_nms(results: list[dict], threshold: float) -> list[dict]:
    kept: list[dict] = []
    for result in sorted(results, key=lambda r: -r["score"]):
        same_image = [k for k in kept if k["image_id"] == result["image_id"]]
        if same_image:
            ious = mask_utils.iou(
                [_rle(result)], [_rle(k) for k in same_image], [0] * len(same_image)
            )
            if np.max(ious) > threshold:
                continue
        kept.append(result)
    return kept


def merge_predictions(
    yolo_preds: list[dict],
    mmseg_preds: list[dict],
    strategy: str = "weighted",
    yolo_weight: float = 0.4,
    mmseg_weight: float = 0.6,
    iou_threshold: float = 0.5,
) -> list[dict]:
    """Merged COCO results (list of instances); see the module docstring for each strategy."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r}: choose one of {STRATEGIES}")
    weight = {"yolo": yolo_weight, "mmseg": mmseg_weight}
    total = yolo_weight + mmseg_weight
    if strategy == "nms":
        pooled = [
            _as_result(a, _rle(a), a["score"] * weight[source], a["category_id"], [source])
            for source, preds in (("yolo", yolo_preds), ("mmseg", mmseg_preds))
            for a in preds
        ]
        return _mask_nms(pooled, iou_threshold)
    pairs = _match(yolo_preds, mmseg_preds, iou_threshold)
    matched_y = {y for y, _ in pairs}
    matched_m = {m for _, m in pairs}
    merged = []
    for y, m in pairs:
        a, b = yolo_preds[y], mmseg_preds[m]
        if strategy == "weighted":
            heavier = a if yolo_weight * a["score"] >= mmseg_weight * b["score"] else b
            ma, mb = mask_utils.decode(_rle(a)), mask_utils.decode(_rle(b))
            votes = yolo_weight * ma + mmseg_weight * mb
            fused = mask_utils.encode(np.asfortranarray((votes >= total / 2).astype(np.uint8)))
            score = yolo_weight * a["score"] + mmseg_weight * b["score"]
            merged.append(_as_result(a, fused, score, heavier["category_id"], ["yolo", "mmseg"]))
        elif a["category_id"] == b["category_id"]:  # voting: both sources agree
            heavier = b if mmseg_weight >= yolo_weight else a
            score = (yolo_weight * a["score"] + mmseg_weight * b["score"]) / total
            merged.append(
                _as_result(heavier, _rle(heavier), score, heavier["category_id"], ["yolo", "mmseg"])
            )
        else:  # voting, categories disagree: each stands alone
            matched_y.discard(y)
            matched_m.discard(m)
    for source, preds, matched in (
        ("yolo", yolo_preds, matched_y),
        ("mmseg", mmseg_preds, matched_m),
    ):
        for index, a in enumerate(preds):
            if index in matched:
                continue
            if strategy == "weighted":
                merged.append(
                    _as_result(a, _rle(a), a["score"] * weight[source], a["category_id"], [source])
                )
            elif weight[source] >= total / 2:
                merged.append(_as_result(a, _rle(a), a["score"], a["category_id"], [source]))
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("yolo", help="YOLO predictions (COCO results JSON)")
    parser.add_argument("mmseg", help="predictions.json of inference_with_coralscop.py")
    parser.add_argument("--strategy", choices=STRATEGIES, default="weighted")
    parser.add_argument("--yolo-weight", type=float, default=0.4)
    parser.add_argument("--mmseg-weight", type=float, default=0.6)
    parser.add_argument("--iou-threshold", type=float, default=0.5)
    parser.add_argument(
        "-o", "--output", type=Path, required=True, help="merged COCO file to write"
    )
    args = parser.parse_args(argv)
    merged = merge_predictions(
        load_yolo_predictions(args.yolo),
        load_mmseg_predictions(args.mmseg),
        args.strategy,
        args.yolo_weight,
        args.mmseg_weight,
        args.iou_threshold,
    )
    document = json.loads(Path(args.mmseg).read_text())
    if isinstance(document, dict):  # keep images and categories: a full COCO file again
        document = {
            **document,
            "annotations": [{**r, "id": i} for i, r in enumerate(merged, start=1)],
        }
    else:
        document = merged
    args.output.write_text(json.dumps(document))
    print(f"{len(merged)} merged instances ({args.strategy}) written to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
