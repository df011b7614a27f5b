"""The semantic stage's blending: tile probabilities in, final class and confidence out.

Tiles arrive row by row, left to right (windows.grid). Each tile's probabilities are
weighted by windows.weights (the weights of overlapping tiles sum to 1) and summed
with what its neighbours left for the shared pixels: the tile to the left leaves its
right overlap, the row above leaves its bottom overlap strip. The tile's final span
(windows.Span.final) is then complete and goes out as a class map and a confidence
(the blended probability of that class) block. Held in memory: one tile's
probabilities and one strip of `overlap` rows across the image, never the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mosaic.windows import Tile, weights


@dataclass
class Block:
    """A finalised block of the maps: its top-left pixel and its uint8 class and confidence."""

    row0: int
    col0: int
    classes: np.ndarray  # (h, w) uint8 class index
    confidence: np.ndarray  # (h, w) uint8, 255 * blended probability of that class


def to_block(row0: int, col0: int, probs: np.ndarray) -> Block:
    best = probs.argmax(0)
    confidence = np.take_along_axis(probs, best[None], 0)[0]
    confidence = np.clip(confidence * 255 + 0.5, 0, 255).astype(np.uint8)
    return Block(row0, col0, best.astype(np.uint8), confidence)


class Blender:
    def __init__(self, width: int, num_classes: int, overlap: int) -> None:
        self.overlap = overlap
        # the bottom overlap of the row above, for every column (C, overlap, W)
        self._strip = np.zeros((num_classes, overlap, width), np.float32)
        self._left: np.ndarray | None = None  # the right overlap of the tile to the left

    def add(self, tile: Tile, probs: np.ndarray) -> Block:
        """probs: (C, h, w) float32 probabilities of the tile; returns its final block."""
        rows, cols = tile.rows, tile.cols
        acc = probs * weights(tile, self.overlap)[None]
        final_h, final_w = rows.final - rows.start, cols.final - cols.start
        if not rows.first:
            acc[:, : self.overlap, :final_w] += self._strip[:, :, cols.start : cols.final]
        if not cols.first:
            acc[:, :, : self._left.shape[2]] += self._left
        self._left = None if cols.last else acc[:, :, final_w:].copy()
        if not rows.last:  # what this row leaves for the next one, in the columns it finalised
            self._strip[:, :, cols.start : cols.final] = acc[:, final_h:, :final_w]
        return to_block(rows.start, cols.start, acc[:, :final_h, :final_w])
