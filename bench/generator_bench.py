"""Proposal generator vs segment-anything's SamAutomaticMaskGenerator, same image and weights.

    python bench/generator_bench.py --device cuda --image-size 1920 --checkpoint vit_b_coralscop.pth
    python bench/generator_bench.py --tiny --image-size 64 --points-per-side 2 --crop-n-layers 0 \
        --pred-iou-thresh 0 --stability-score-thresh 0                  # CPU smoke setting

Both run the stock algorithm's setting (multimask output, no category filter) with
CoralSCoP's grid, crops and thresholds, so the masks must agree: the bench reports
the time of each (warm-up, median of the repeats, CUDA-synchronised), the speed-up,
the mask counts and the worst best-match IoU. Weights are random (no checkpoint can
be downloaded here) unless --checkpoint names a SAM / CoralSCoP ViT-B file.
Random weights make noise, not masks: on a 512 px reef image a random ViT-B's masks
had ~48,000 row transitions each, stability 0 and predicted IoUs within +-0.15,
so CoralSCoP's thresholds keep none of them. Its figures then time the model work
(image encoder passes, prompt decoding, filters) only; turning the thresholds off
instead would time run-length encoding and clean-up of noise, far costlier than
real masks. The speed-up on real masks needs real weights. Prints a table and one
JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fire  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from timing import time_call  # noqa: E402

import models  # noqa: E402, F401
from dataset.reef_demo import render_sample  # noqa: E402
from models.coralscop import SAM_TINY, build_coralscop, load_coralscop  # noqa: E402
from models.mask_generator import CoralMaskGenerator, GeneratorSettings  # noqa: E402


def worst_best_match_iou(stock: list[np.ndarray], ours: torch.Tensor, chunk: int = 32) -> float:
    """The lowest, over the stock masks, of the best IoU with any of our masks (1.0: none).

    Intersections come from one matrix product per chunk of stock masks, on our
    masks' device (hundreds of 1920 px masks compare in a second on a GPU)."""
    if not stock:
        return 1.0
    if not len(ours):
        return 0.0
    flat = ours.flatten(1).float()  # fp32 counts are exact up to 2**24 pixels
    our_area = flat.sum(1)
    worst = 1.0
    for start in range(0, len(stock), chunk):
        block = torch.from_numpy(np.stack(stock[start : start + chunk])).to(ours.device)
        block = block.flatten(1).float()
        inter = block @ flat.T
        union = block.sum(1, keepdim=True) + our_area[None] - inter
        worst = min(worst, float((inter / union).max(1).values.min()))
    return worst


def _stock_generate(stock, image: np.ndarray) -> list[dict]:
    """segment-anything's generate; [] where it keeps no mask in any crop.

    With crop layers and not one mask left, segment-anything 1.0 fails in its final
    cross-crop NMS (box_area of an empty box tensor): every crop's model work is
    done by then, so the time up to that point is its time for this image."""
    try:
        return stock.generate(image)
    except IndexError:
        if stock.crop_n_layers == 0:
            raise
        return []


def main(
    device: str = "cpu",
    image_size: int = 1920,
    points_per_side: int = 32,
    crop_n_layers: int = 1,
    checkpoint: str | None = None,
    pred_iou_thresh: float = GeneratorSettings.pred_iou_thresh,
    stability_score_thresh: float = GeneratorSettings.stability_score_thresh,
    tiny: bool = False,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    from segment_anything import SamAutomaticMaskGenerator

    torch.manual_seed(0)
    sam = build_coralscop(SAM_TINY) if tiny else load_coralscop(checkpoint)[0]
    sam = sam.to(device).eval()
    image, _ = render_sample(0, image_size)
    settings = dict(
        points_per_side=points_per_side,
        crop_n_layers=crop_n_layers,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
        min_mask_region_area=GeneratorSettings.min_mask_region_area,
    )
    stock = SamAutomaticMaskGenerator(sam, **settings)
    ours = CoralMaskGenerator(
        sam, use_category=False, settings=GeneratorSettings(multimask_output=True, **settings)
    )
    with torch.inference_mode():
        stock_out, stock_s = time_call(
            lambda: _stock_generate(stock, image), device, warmup, repeats
        )
        ours_out, ours_s = time_call(lambda: ours.generate(image), device, warmup, repeats)
    stock_masks = [m["segmentation"] for m in stock_out if m["segmentation"].any()]
    our_masks = ours_out.masks[ours_out.masks.flatten(1).any(1)]
    worst = worst_best_match_iou(stock_masks, our_masks)
    result = dict(
        benchmark="generator",
        device=torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        image_size=image_size,
        settings=settings,
        weights=checkpoint or ("random tiny" if tiny else "random ViT-B"),
        stock_s=round(statistics.median(stock_s), 4),
        ours_s=round(statistics.median(ours_s), 4),
        speedup=round(statistics.median(stock_s) / statistics.median(ours_s), 2),
        stock_masks=len(stock_masks),
        our_masks=len(our_masks),
        worst_best_iou=round(worst, 4),
    )
    print(f"\ngenerator on {result['device']}, {image_size}px, {result['weights']} weights")
    print(f"{'generator':28} {'seconds':>9} {'masks':>6}")
    print(f"{'segment-anything (stock)':28} {result['stock_s']:>9} {result['stock_masks']:>6}")
    print(f"{'ours (device-resident)':28} {result['ours_s']:>9} {result['our_masks']:>6}")
    print(f"speed-up {result['speedup']}x; worst best-match IoU {result['worst_best_iou']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
