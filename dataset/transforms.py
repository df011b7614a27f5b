"""Training transforms registered in MMSegmentation's TRANSFORMS registry.

`CountingRandomCrop` is mmseg's `RandomCrop` with the same random draws and the
same result, made cheaper where the guide's recipe spends most of its loading
time: with `cat_max_ratio` (0.75 in the recipe) each candidate window is
re-drawn, up to ten times, while one class covers too much of it. Reef quadrats
are mostly background, so most samples try all ten, and mmseg counts each
window's classes with `np.unique` (a sort of 1.6 M labels at 1280 px).
`np.bincount` gives the same counts without sorting (bench/pipeline_bench.py
has the figures).
"""

from __future__ import annotations

import numpy as np
from mmseg.datasets.transforms import RandomCrop
from mmseg.registry import TRANSFORMS


def class_pixel_counts(labels: np.ndarray, ignore_index: int) -> np.ndarray:
    """Pixels of each class present in `labels`, the ignore index left out."""
    if labels.dtype.kind == "u":
        counts = np.bincount(labels.ravel(), minlength=ignore_index + 1)
        counts[ignore_index] = 0
        return counts[counts > 0]
    values, counts = np.unique(labels, return_counts=True)  # signed or float label maps
    return counts[values != ignore_index]


@TRANSFORMS.register_module()
class CountingRandomCrop(RandomCrop):
    """`RandomCrop` (same arguments, same draws, same crops) with cheaper class counting."""

    def crop_bbox(self, results: dict) -> tuple:
        image = results["img"]

        def draw() -> tuple[int, int, int, int]:
            # the same draws, in the same order, as mmseg's RandomCrop
            margin_h = max(image.shape[0] - self.crop_size[0], 0)
            margin_w = max(image.shape[1] - self.crop_size[1], 0)
            offset_h = np.random.randint(0, margin_h + 1)
            offset_w = np.random.randint(0, margin_w + 1)
            return (offset_h, offset_h + self.crop_size[0], offset_w, offset_w + self.crop_size[1])

        bbox = draw()
        if self.cat_max_ratio < 1.0:
            for _ in range(10):
                window = self.crop(results["gt_seg_map"], bbox)
                counts = class_pixel_counts(window, self.ignore_index)
                if len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio:
                    break
                bbox = draw()
        return bbox
