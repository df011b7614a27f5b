"""CVAT's interactor prompt: the request's keys checked and turned into arrays.

CVAT's server forwards the UI's prompt unchanged (cvat/apps/lambda_manager/views.py,
v2.73.0): `pos_points` and `neg_points` are lists of [x, y] in pixels of the image it
sends, possibly fractional (the canvas does not round them); `obj_bbox` is [] or null
without a box, else [[x1, y1], [x2, y2]]. Every error names the key, because CVAT shows
the user only the status line and the function's log is where the message is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

KEYS = {"positives": "pos_points", "negatives": "neg_points", "box": "obj_bbox"}


class BadPrompt(ValueError):
    """The request's prompt cannot be used; the handler answers 400."""


def _no_points() -> np.ndarray:
    return np.zeros((0, 2), dtype=np.float64)


@dataclass
class Prompt:
    """Clicks and an optional box, in pixels of the frame CVAT sent (x right, y down).

    positives: (N, 2) x, y of positive clicks; negatives: (M, 2); box: (4,) x1, y1, x2,
    y2 with x1 <= x2 and y1 <= y2, or None.
    """

    positives: np.ndarray = field(default_factory=_no_points)
    negatives: np.ndarray = field(default_factory=_no_points)
    box: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.positives = np.asarray(self.positives, dtype=np.float64).reshape(-1, 2)
        self.negatives = np.asarray(self.negatives, dtype=np.float64).reshape(-1, 2)
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float64).reshape(4)

    @property
    def clicks(self) -> int:
        return len(self.positives) + len(self.negatives)

    @property
    def is_empty(self) -> bool:
        """Nothing says where the object is (negatives alone only say where it is not)."""
        return len(self.positives) == 0 and self.box is None

    @property
    def is_single_click(self) -> bool:
        """One positive click and nothing else: the ambiguous prompt SAM answers with three
        masks (whole, part, sub-part) to choose from."""
        return len(self.positives) == 1 and len(self.negatives) == 0 and self.box is None

    def check_inside(self, width: int, height: int) -> None:
        """BadPrompt unless every point lies in the frame's closed extent [0, W] x [0, H]
        (closed: CVAT's canvas coordinates are continuous, and a click on the last
        pixel's far edge is W or H)."""
        arrays = {"positives": self.positives, "negatives": self.negatives}
        if self.box is not None:
            arrays["box"] = self.box.reshape(2, 2)
        for name, points in arrays.items():
            outside = (
                (points[:, 0] < 0)
                | (points[:, 0] > width)
                | (points[:, 1] < 0)
                | (points[:, 1] > height)
            )
            if outside.any():
                x, y = points[np.flatnonzero(outside)[0]]
                raise BadPrompt(
                    f'"{KEYS[name]}": point [{x:g}, {y:g}] is outside the {width} x {height} '
                    f"frame (x in [0, {width}], y in [0, {height}])"
                )


def _number(value: object) -> float | None:
    # bool is an int in Python, but JSON's true is not a coordinate
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _points(body: dict, key: str) -> np.ndarray:
    raw = body.get(key)
    if raw is None:
        return _no_points()
    if not isinstance(raw, list):
        raise BadPrompt(f'"{key}" must be a list of [x, y] points, not {type(raw).__name__}')
    points = []
    for index, point in enumerate(raw):
        xy = [_number(v) for v in point] if isinstance(point, list) else []
        if len(xy) != 2 or None in xy:
            raise BadPrompt(
                f'"{key}"[{index}] must be [x, y] with two finite numbers, not {point!r}'
            )
        points.append(xy)
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _box(body: dict) -> np.ndarray | None:
    raw = body.get("obj_bbox")
    if raw is None or raw == []:
        return None
    corners = _points({"obj_bbox": raw}, "obj_bbox") if isinstance(raw, list) else None
    if corners is None or len(corners) != 2:
        raise BadPrompt(
            f'"obj_bbox" must be [], null or [[x1, y1], [x2, y2]] (one box, two corners), '
            f"not {raw!r}"
        )
    # CVAT sends the top-left corner first; a box drawn the other way is still that box
    return np.concatenate([corners.min(0), corners.max(0)])


def parse_prompt(body: dict, width: int | None = None, height: int | None = None) -> Prompt:
    """The prompt of an interactor request, checked; BadPrompt names the faulty key.

    A positive click is required (function.yaml sets min_pos_points 1, so CVAT's UI never
    sends a request without one). With width and height, points must lie in [0, W] x
    [0, H]; without them (the frame not decoded yet: a cached frame never is) the
    ClickSegmenter checks them against the frame's size (Prompt.check_inside).
    Unknown keys (threshold, text_prompts, ...) are ignored.
    """
    if not isinstance(body, dict):
        raise BadPrompt(f"the request must be a JSON object, not {type(body).__name__}")
    if "pos_points" not in body:
        raise BadPrompt('"pos_points" is missing (a list of [x, y] positive clicks)')
    prompt = Prompt(_points(body, "pos_points"), _points(body, "neg_points"), _box(body))
    if not len(prompt.positives):
        raise BadPrompt('"pos_points" is empty: click inside the colony at least once')
    if width is not None and height is not None:
        prompt.check_inside(width, height)
    return prompt
