"""Small-region clean-up of proposals: ours (per box window) vs segment-anything's (whole image).

    python bench/cleanup_bench.py                         # 100 masks of 1920 px, CPU
    python bench/cleanup_bench.py --device cuda           # masks on the GPU, as generated
    python bench/cleanup_bench.py --masks 4 --size 128    # smoke setting

CoralSCoP's settings remove holes and islands under 100 pixels from every proposal
(`min_mask_region_area`). segment-anything's generator
(`SamAutomaticMaskGenerator.postprocess_small_regions`) decodes each mask's
run-length encoding, cleans the whole mask on the host, recomputes every box
from the whole masks and re-encodes the changed ones; CoralMaskGenerator works
on each mask's box window and brings only that window to the host and back.
Both run here on the same synthetic colony masks (discs with small holes and
islands), each on its own representation built outside the timing, and must
give the same masks. Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import fire  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from segment_anything import SamAutomaticMaskGenerator  # noqa: E402
from segment_anything.utils.amg import (  # noqa: E402
    MaskData,
    batched_mask_to_box,
    mask_to_rle_pytorch,
    rle_to_mask,
)
from timing import time_call  # noqa: E402

from models.coralscop import SAM_TINY, build_coralscop  # noqa: E402
from models.mask_generator import CoralMaskGenerator, GeneratorSettings, Proposals  # noqa: E402


def colony_masks(count: int, size: int, seed: int = 0) -> np.ndarray:
    """(count, size, size) bool: a disc each, with a few 4x4 holes and 3x3 islands."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((count, size, size), np.uint8)
    for mask in masks:
        radius = int(rng.integers(max(size // 100, 2), max(size // 12, 3)))
        cx, cy = (int(v) for v in rng.integers(radius, size - radius, 2))
        cv2.circle(mask, (cx, cy), radius, 1, -1)
        for _ in range(4):
            hx, hy = np.clip(
                np.array([cx, cy]) + rng.integers(-radius // 2, radius // 2 + 1, 2), 0, size - 4
            )
            mask[hy : hy + 4, hx : hx + 4] = 0
            ix, iy = np.clip(
                np.array([cx, cy]) + rng.integers(-2 * radius, 2 * radius + 1, 2), 0, size - 3
            )
            mask[iy : iy + 3, ix : ix + 3] = 1
    return masks.astype(bool)


def stock_mask_data(masks: torch.Tensor) -> MaskData:
    """The masks as segment-anything's generator holds them: run-length encoded, with boxes."""
    return MaskData(rles=mask_to_rle_pytorch(masks.cpu()), boxes=batched_mask_to_box(masks).cpu())


def main(
    masks: int = 100, size: int = 1920, device: str = "cpu", warmup: int = 1, repeats: int = 3
) -> dict:
    settings = GeneratorSettings()
    generator = CoralMaskGenerator(build_coralscop(SAM_TINY), settings=settings)
    source = torch.from_numpy(colony_masks(masks, size)).to(device)
    boxes = batched_mask_to_box(source)
    ones = torch.ones(len(source), device=device)

    def ours():  # it cleans in place: a fresh copy each time, outside the timed part
        return generator._remove_small_regions(Proposals(copies.pop(), boxes, ones, ones, ones))

    copies = [source.clone() for _ in range(warmup + repeats)]
    ours_out, ours_s = time_call(ours, device, warmup, repeats)
    # segment-anything's own clean-up, on its own representation (it edits it in place too)
    stock_inputs = [stock_mask_data(source) for _ in range(warmup + repeats)]
    stock_out, stock_s = time_call(
        lambda: SamAutomaticMaskGenerator.postprocess_small_regions(
            stock_inputs.pop(), settings.min_mask_region_area, settings.box_nms_thresh
        ),
        device,
        warmup,
        repeats,
    )
    stock_masks = torch.from_numpy(np.stack([rle_to_mask(rle) for rle in stock_out["rles"]]))
    stock_masks = stock_masks[stock_masks.flatten(1).any(1)]  # ours drops emptied masks
    result = dict(
        benchmark="cleanup",
        device=torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        masks=masks,
        size=size,
        stock_s=round(statistics.median(stock_s), 4),
        ours_s=round(statistics.median(ours_s), 4),
        speedup=round(statistics.median(stock_s) / statistics.median(ours_s), 2),
        kept=len(ours_out.masks),
        same_masks=bool(torch.equal(ours_out.masks.cpu(), stock_masks)),
    )
    print(f"\nsmall-region clean-up of {masks} masks of {size} px on {result['device']}")
    print(f"  segment-anything (whole masks): {result['stock_s']} s")
    print(f"  ours (box windows):             {result['ours_s']} s  ({result['speedup']}x)")
    print(f"  kept {result['kept']} masks, same masks: {result['same_masks']}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
