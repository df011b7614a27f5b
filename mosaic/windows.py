"""The tile grid over a large image, and the weights that blend overlapping tiles.

Tiles start every `tile - overlap` pixels along each axis; the last one of a row or
column stops at the image edge (it may be narrower than `tile`), so a pixel lies in at
most two tiles per axis as long as the overlap is at most half a tile. Each tile
finalises the span from its start to the next tile's start: the pixels there get
contributions only from this tile and the one before it on each axis, which is what
lets the semantic stage keep only one overlap strip in memory.

Each tile also has a core: from the middle of the overlap with the tile before to the
middle of the overlap with the tile after (the image edge for the first and last). The
cores partition the image; a pixel two tiles see belongs to the one whose core holds it,
the one that sees it further from its own edge (mosaic/seams.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Span:
    """One tile along one axis: [start, stop) read, [start, final) finalised by it."""

    index: int
    start: int
    stop: int
    final: int
    first: bool
    last: bool
    core_start: int = 0  # [core_start, core_stop): the pixels this tile owns
    core_stop: int = 0

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Tile:
    rows: Span
    cols: Span

    @property
    def key(self) -> tuple[int, int]:
        return self.rows.index, self.cols.index


# Colonies cut by a seam are merged by comparing what two tiles see in the strip they
# share: without a strip (or with a sliver of one) a colony across a seam would come out
# as two to four colonies.
MIN_OVERLAP = 16


def check_tiling(tile: int, overlap: int) -> None:
    if tile < 2 * MIN_OVERLAP:
        raise ValueError(f"--tile-size {tile}: a tile must be at least {2 * MIN_OVERLAP} pixels")
    if not MIN_OVERLAP <= overlap <= tile // 2:
        raise ValueError(
            f"--tile-overlap {overlap}: must be between {MIN_OVERLAP} and half the tile size "
            f"({tile // 2}): colonies cut by a seam are joined by comparing what the two tiles "
            "see in the strip they share"
        )


def spans(length: int, tile: int, overlap: int) -> list[Span]:
    """Tiles along an axis of `length` pixels."""
    check_tiling(tile, overlap)
    stride = tile - overlap
    count = 1 if length <= tile else math.ceil((length - overlap) / stride)
    starts = [k * stride for k in range(count)]
    return [
        Span(
            index=k,
            start=start,
            stop=min(start + tile, length),
            final=starts[k + 1] if k + 1 < count else length,
            first=k == 0,
            last=k + 1 == count,
            core_start=0 if k == 0 else start + overlap // 2,
            core_stop=length if k + 1 == count else starts[k + 1] + overlap // 2,
        )
        for k, start in enumerate(starts)
    ]


def grid(height: int, width: int, tile: int, overlap: int) -> list[list[Tile]]:
    """Rows of tiles, top to bottom, each row left to right."""
    columns = spans(width, tile, overlap)
    return [[Tile(rows, cols) for cols in columns] for rows in spans(height, tile, overlap)]


def ramp(span: Span, overlap: int) -> np.ndarray:
    """1-D weights of a tile: rising over the overlap with the tile before, falling over
    the overlap with the tile after, 1 elsewhere. Neighbours' ramps over a shared
    overlap sum to 1, so blended probabilities stay probabilities."""
    weights = np.ones(span.size, np.float32)
    if overlap == 0:
        return weights
    rising = np.arange(1, overlap + 1, dtype=np.float32) / (overlap + 1)
    if not span.first:
        weights[:overlap] = rising
    if not span.last:
        weights[-overlap:] = rising[::-1]
    return weights


def weights(tile: Tile, overlap: int) -> np.ndarray:
    """(h, w) blending weights of a tile: the outer product of its two ramps."""
    return np.outer(ramp(tile.rows, overlap), ramp(tile.cols, overlap))
