"""Masks of two runs matched one to one, for the benches that compare two paths' answers."""

from __future__ import annotations

import numpy as np


def mask_ious(first: np.ndarray, second: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """(len(first), len(second)) IoU of two stacks of boolean masks (N, H, W); pixel chunks
    keep the float copies small (64 masks of a 1920 px quadrat are 0.9 GB in float)."""
    a, b = first.reshape(len(first), -1), second.reshape(len(second), -1)
    inter = np.zeros((len(a), len(b)))
    for start in range(0, a.shape[1], chunk):
        inter += a[:, start : start + chunk].astype(np.float32) @ (
            b[:, start : start + chunk].astype(np.float32).T
        )
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def one_to_one(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of a one-to-one matching by mask IoU (Hungarian): indices into `first`,
    into `second`, and each pair's IoU."""
    from scipy.optimize import linear_sum_assignment

    ious = mask_ious(first, second)
    rows, cols = linear_sum_assignment(-ious)
    return rows, cols, ious[rows, cols]
