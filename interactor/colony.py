"""Which connected parts of SAM's mask are the colony the user pointed at.

SAM's mask for a click often carries stray blobs elsewhere on the frame (another colony of
the same look, a patch of substrate). CVAT's mask mode would store all of them in the one
object, and its polygon mode would keep the longest outline, which may be a blob's. The
rule (8-connectivity, the connectivity of a colony's pixel outline):

1. Components under a positive click are kept, all of them (several clicks on the parts of
   one colony split by a crack or a shadow give one object), even when a negative click
   is on one of them too: SAM saw both clicks and still joined them, and dropping the
   component would drop the colony the user pointed at.
2. If no positive click lands on the mask (SAM's mask can miss a click on a thin branch
   or inside a hole), the component nearest to a positive click is kept, among those
   without a negative click.
3. Box only (no positive click; not sent by CVAT with min_pos_points 1): the component
   with the most pixels inside the box, among those without a negative click.
4. Nothing left: None.

Holes inside a kept component stay (CVAT's mask mode keeps them).
"""

from __future__ import annotations

import cv2
import numpy as np

from .prompt import Prompt


def _pixels(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the pixel under each point: a click at x in [i, i+1) is on pixel
    i; the frame's far edges (x = W, y = H, allowed by parse_prompt) are on the last one."""
    cols = np.clip(np.floor(points[:, 0]).astype(np.int64), 0, width - 1)
    rows = np.clip(np.floor(points[:, 1]).astype(np.int64), 0, height - 1)
    return rows, cols


def _labels_under(labels: np.ndarray, points: np.ndarray) -> set[int]:
    height, width = labels.shape
    rows, cols = _pixels(points, width, height)
    return {int(v) for v in labels[rows, cols] if v > 0}


def _nearest(labels: np.ndarray, candidates: set[int], points: np.ndarray) -> set[int]:
    ys, xs = np.nonzero(np.isin(labels, list(candidates)))
    if not len(ys):
        return set()
    height, width = labels.shape
    rows, cols = _pixels(points, width, height)
    best, best_label = None, 0
    for row, col in zip(rows, cols, strict=True):
        distance = (ys - row) ** 2 + (xs - col) ** 2
        index = int(np.argmin(distance))
        if best is None or distance[index] < best:
            best, best_label = distance[index], int(labels[ys[index], xs[index]])
    return {best_label}


def _largest_in_box(labels: np.ndarray, candidates: set[int], box: np.ndarray) -> set[int]:
    height, width = labels.shape
    x1, y1 = (int(np.floor(v)) for v in box[:2])
    x2, y2 = (int(np.ceil(v)) for v in box[2:])
    window = labels[
        max(y1, 0) : min(max(y2, y1 + 1), height), max(x1, 0) : min(max(x2, x1 + 1), width)
    ]
    counts = np.bincount(window.ravel(), minlength=int(labels.max()) + 1)
    inside = {label: int(counts[label]) for label in candidates if counts[label] > 0}
    return {max(inside, key=inside.get)} if inside else set()


def keep_colony(mask: np.ndarray, prompt: Prompt) -> np.ndarray | None:
    """The part of `mask` ((H, W) bool) that is the prompt's colony, by the module's rule;
    None when nothing is left."""
    if not mask.any() or prompt.is_empty:
        return None
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    negative = _labels_under(labels, prompt.negatives)
    candidates = set(range(1, count)) - negative
    if len(prompt.positives):
        keep = _labels_under(labels, prompt.positives)
        if not keep:
            keep = _nearest(labels, candidates, prompt.positives)
    else:
        keep = _largest_in_box(labels, candidates, prompt.box)
    if not keep:
        return None
    if count == 2:  # one component: the mask itself, no label lookup over the frame
        return mask.astype(bool, copy=True)
    return np.isin(labels, sorted(keep))
