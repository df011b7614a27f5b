"""CountingRandomCrop must crop exactly where mmseg's RandomCrop crops, draw for draw."""

from __future__ import annotations

import numpy as np
import pytest
from mmseg.datasets.transforms import RandomCrop

from dataset.transforms import CountingRandomCrop, class_pixel_counts


def _mostly_background(seed: int, size: int = 96) -> np.ndarray:
    """Label maps like reef quadrats: background with a few colonies and ignored pixels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(0, 4))):
        y, x = rng.integers(0, size - 20, 2)
        labels[y : y + int(rng.integers(5, 20)), x : x + int(rng.integers(5, 20))] = rng.integers(
            1, 6
        )
    labels[rng.random((size, size)) < 0.02] = 255
    return labels


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_class_counts_match_numpy_unique(dtype):
    labels = _mostly_background(3).astype(dtype)
    values, counts = np.unique(labels, return_counts=True)
    expected = counts[values != 255]
    assert list(class_pixel_counts(labels, 255)) == list(expected)
    assert sum(expected) == (labels != 255).sum()


@pytest.mark.parametrize("cat_max_ratio", [0.75, 0.95, 1.0])
def test_same_crops_as_mmseg_random_crop(cat_max_ratio):
    ours = CountingRandomCrop(crop_size=(48, 40), cat_max_ratio=cat_max_ratio)
    theirs = RandomCrop(crop_size=(48, 40), cat_max_ratio=cat_max_ratio)
    retried = 0
    for seed in range(40):
        labels = _mostly_background(seed)
        image = np.dstack([labels] * 3)
        results = []
        for transform in (ours, theirs):
            np.random.seed(seed)
            sample = dict(img=image.copy(), gt_seg_map=labels.copy(), seg_fields=["gt_seg_map"])
            out = transform(sample)
            results.append((out["img"], out["gt_seg_map"], np.random.randint(1 << 30)))
        (img_a, seg_a, next_a), (img_b, seg_b, next_b) = results
        assert np.array_equal(seg_a, seg_b) and np.array_equal(img_a, img_b)
        assert seg_a.shape == (48, 40)
        assert next_a == next_b  # the same number of random draws was taken
        np.random.seed(seed)
        y, x = np.random.randint(0, 49), np.random.randint(0, 57)  # the first draw
        retried += not np.array_equal(seg_a, labels[y : y + 48, x : x + 40])
    if cat_max_ratio < 1.0:
        assert retried > 0  # the class-ratio rule did move some crops
