"""Polylines in relative coordinates -> a class-index mask, drawn at the output resolution.

Conventions (the tests check each):
- A relative point (x, y) sits at (x * width, y * height) in continuous image
  coordinates, where pixel (row i, column j) is the unit square
  [j, j + 1) x [i, i + 1); a pixel belongs to a filled shape when its centre
  (j + 0.5, i + 0.5) is inside it (even-odd rule). Masks are drawn straight at
  the output size: no mask is ever resampled.
- Closed or filled polylines are filled. Open ones are strokes: every pixel whose
  centre lies within `line_width / 2` of the line.
- Overlaps: filled shapes are painted from the largest area to the smallest, so a
  small colony on top of (or inside) a large one stays visible; equal areas keep
  the order of the labels. Strokes are painted last.
- A shape wholly outside the image (drawn on another frame or image) paints
  nothing; `outside_image` finds such shapes so that callers can report them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Point = tuple[float, float]


@dataclass(frozen=True)
class Shape:
    class_index: int
    points: Sequence[Point]  # relative (x, y) in [0, 1]
    filled: bool


def polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def fill_polygon(mask: np.ndarray, points: np.ndarray, value: int) -> None:
    """Paint `value` on pixels whose centre is inside the polygon (pixel coordinates)."""
    height, width = mask.shape
    if len(points) < 3:
        return
    row_start = max(0, int(np.ceil(points[:, 1].min() - 0.5)))
    row_stop = min(height, int(np.ceil(points[:, 1].max() - 0.5)))
    if row_start >= row_stop:
        return
    centres_y = np.arange(row_start, row_stop) + 0.5
    start, end = points, np.roll(points, -1, axis=0)
    y0, y1 = start[:, 1][None, :], end[:, 1][None, :]
    cy = centres_y[:, None]
    # half-open rule so a vertex on a scanline is counted once
    crosses = (y0 <= cy) != (y1 <= cy)
    # horizontal edges give inf/nan here; they never cross a scanline and are masked out
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (cy - y0) / (y1 - y0)
        x_at = start[:, 0][None, :] + t * (end[:, 0] - start[:, 0])[None, :]
    x_cross = np.where(crosses, x_at, np.inf)
    x_cross.sort(axis=1)
    # crossings come in (enter, leave) pairs; the pixel centres between them are inside
    enter, leave = x_cross[:, 0::2], x_cross[:, 1::2]
    pairs = min(enter.shape[1], leave.shape[1])
    enter, leave = enter[:, :pairs], leave[:, :pairs]
    valid = np.isfinite(leave)
    # work inside the polygon's column range only: masks are large, colonies small
    col_start = max(0, int(np.floor(points[:, 0].min())))
    col_stop = min(width, int(np.ceil(points[:, 0].max())) + 1)
    if col_start >= col_stop:  # wholly left or right of the image
        return
    first = np.clip(np.ceil(enter[valid] - 0.5), col_start, col_stop).astype(np.int64) - col_start
    stop = np.clip(np.ceil(leave[valid] - 0.5), col_start, col_stop).astype(np.int64) - col_start
    rows = np.broadcast_to(np.arange(row_stop - row_start)[:, None], valid.shape)[valid]
    coverage = np.zeros((row_stop - row_start, col_stop - col_start + 1), np.int32)
    np.add.at(coverage, (rows, first), 1)
    np.add.at(coverage, (rows, stop), -1)
    # int32 throughout: cumsum would widen to int64, several times slower on large colonies
    inside = np.cumsum(coverage[:, :-1], axis=1, dtype=np.int32) > 0
    mask[row_start:row_stop, col_start:col_stop][inside] = value


def stroke_polyline(mask: np.ndarray, points: np.ndarray, value: int, line_width: float) -> None:
    """Paint `value` on pixels whose centre is within line_width / 2 of the open polyline."""
    height, width = mask.shape
    radius = line_width / 2.0
    if len(points) == 1:
        points = np.vstack([points, points])
    for a, b in zip(points[:-1], points[1:], strict=True):
        x_lo = max(0, int(np.floor(min(a[0], b[0]) - radius)))
        x_hi = min(width, int(np.ceil(max(a[0], b[0]) + radius)) + 1)
        y_lo = max(0, int(np.floor(min(a[1], b[1]) - radius)))
        y_hi = min(height, int(np.ceil(max(a[1], b[1]) + radius)) + 1)
        if x_lo >= x_hi or y_lo >= y_hi:
            continue
        cx = np.arange(x_lo, x_hi)[None, :] + 0.5
        cy = np.arange(y_lo, y_hi)[:, None] + 0.5
        direction = b - a
        length2 = float(direction @ direction)
        if length2 == 0.0:
            t = np.zeros((1, 1))
        else:
            t = np.clip(((cx - a[0]) * direction[0] + (cy - a[1]) * direction[1]) / length2, 0, 1)
        dx = cx - (a[0] + t * direction[0])
        dy = cy - (a[1] + t * direction[1])
        near = dx * dx + dy * dy <= radius * radius
        mask[y_lo:y_hi, x_lo:x_hi][near] = value


def outside_image(shape: Shape, width: int, height: int, line_width: float = 3.0) -> bool:
    """True when the shape lies so far outside the image that it cannot paint a pixel:
    its bounding box (widened by half the stroke for open lines) holds no pixel centre."""
    points = np.asarray(shape.points, np.float64).reshape(-1, 2) * (width, height)
    if not len(points):
        return False
    margin = 0.0 if shape.filled else line_width / 2.0
    low, high = points.min(axis=0) - margin, points.max(axis=0) + margin
    return bool((high < 0.5).any() or (low > np.array([width, height]) - 0.5).any())


def rasterize(
    shapes: Sequence[Shape], width: int, height: int, line_width: float = 3.0
) -> np.ndarray:
    """A (height, width) uint8 mask, 0 where no shape is, painted with the rules above."""
    mask = np.zeros((height, width), np.uint8)
    scale = np.array([width, height], np.float64)
    pixel_shapes = [(s, np.asarray(s.points, np.float64).reshape(-1, 2) * scale) for s in shapes]
    filled = [(s, p) for s, p in pixel_shapes if s.filled and len(p) >= 3]
    strokes = [(s, p) for s, p in pixel_shapes if not s.filled and len(p) >= 1]
    for shape, points in sorted(filled, key=lambda sp: -polygon_area(sp[1])):
        fill_polygon(mask, points, shape.class_index)
    for shape, points in strokes:
        stroke_polyline(mask, points, shape.class_index, line_width)
    return mask
