"""Instances -> COCO (what pycocotools, CVAT and FiftyOne read): RLE masks, boxes, scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pycocotools import mask as mask_utils


def encode_masks(masks: Sequence[np.ndarray]) -> list[dict]:
    """Compressed RLE of each (H, W) bool mask, counts as str (JSON-ready); one call per image."""
    if not len(masks):
        return []
    stacked = np.asfortranarray(np.stack(masks, axis=-1).astype(np.uint8))
    rles = mask_utils.encode(stacked)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def categories(classes: Sequence[str]) -> list[dict]:
    """COCO categories: every class but background, with its taxonomy index as id."""
    return [{"id": index, "name": name, "supercategory": "coral"}
            for index, name in enumerate(classes) if index > 0]  # fmt: skip


def image_annotations(instances, image_id: int, first_id: int) -> list[dict]:
    annotations = []
    for offset, (inst, rle) in enumerate(
        zip(instances, encode_masks([i.mask for i in instances]), strict=True)
    ):
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        annotations.append({
            "id": first_id + offset,
            "image_id": image_id,
            "category_id": int(inst.label),
            "segmentation": rle,
            "area": float(mask_utils.area(rle)),
            "bbox": [x, y, w, h],
            "score": round(float(inst.score), 6),
            "iscrowd": 0,
            "attributes": {"unsure": bool(inst.unsure), "source": inst.source},
        })  # fmt: skip
    return annotations


def coco_document(images: list[dict], annotations: list[dict], classes: Sequence[str]) -> dict:
    return {
        "info": {"description": "Two-stage coral predictions (DINOv2 + SegFormer, CoralSCoP)"},
        "images": images,
        "categories": categories(classes),
        "annotations": annotations,
    }
