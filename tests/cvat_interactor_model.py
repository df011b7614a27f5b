"""A model of what CVAT's UI does with an interactor's answer, to test answers against.

Written from CVAT v2.73.0's source (the behaviour since 2.63), independently of the
package under test (nothing here imports interactor/):

- cvat-core/src/lambda-manager.ts `call()`: a legacy {"mask": 2-D} answer is turned into a
  full-frame RLE; {"shapes": [...]} items keep points, attributes (all dropped if one is
  not {spec_id: number, value: string}) and type (default "mask"); anything else passes
  through unchanged;
- cvat-ui tools-control.tsx `runInteractionRequest`: `for (item of response.shapes)` (a
  TypeError without a list there), non-mask items skipped, `Int32Array.from(points)`,
  `receiveContoursFromMask` (fewer than 6 numbers: no contour; else opencv-wrapper's
  getContoursFromStateSync: rle2Mask over the inclusive box, 1 px border, 2x2 dilation,
  findContours RETR_EXTERNAL / CHAIN_APPROX_NONE sorted by length, longest first, and
  "Empty contour received from state" when there is none), items whose longest contour
  has fewer than 3 points dropped, confidence = attribute spec_id 0 (else 1);
- `drawIntermediateShapesOnCanvas`: items under the confidence threshold (0.5) hidden;
  none left: the info "No shapes to display";
- `constructFromLatestResponse` + cvat-core's `put()` / `cropMask`: mask mode, one MASK
  object per item with an RLE of 6 or more numbers, clipped to the frame; polygon mode
  ("Convert masks to polygons"), one POLYGON per item from its longest outer contour.

An error the UI would show ("Interaction error occurred: ...") is raised as CvatError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

NO_SHAPES = "No shapes to display"
DEFAULT_THRESHOLD = 0.5  # tools-control.tsx: thresholdValue


class CvatError(Exception):
    """What the UI would show as "Interaction error occurred" (or refuse to create)."""


class CvatTypeError(CvatError):
    """A JavaScript TypeError in the UI (reading a property of undefined or null, ...)."""


@dataclass
class Item:
    """One entry of tools-control's latestResponse."""

    rle: list[int]
    contours: list[np.ndarray]  # (N, 2) x, y, frame pixels, longest first
    confidence: float


@dataclass
class Outcome:
    """What the user gets: the objects CVAT would create and the info message, if any."""

    objects: list[np.ndarray] = field(default_factory=list)
    message: str | None = None


# ------------------------------------------------------------------ JavaScript semantics


def _js_number(value: object) -> float:
    """JavaScript's Number(value) for what JSON can hold."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        try:
            return float(text)
        except ValueError:
            return math.nan
    if isinstance(value, list):  # Number([]) = 0, Number([5]) = 5, else NaN
        return 0.0 if not value else (_js_number(value[0]) if len(value) == 1 else math.nan)
    return math.nan


def _int32(value: object) -> int:
    """One element of Int32Array.from: ToInt32 (NaN and infinities are 0, truncation,
    wrap-around modulo 2**32)."""
    number = _js_number(value)
    if not math.isfinite(number):
        return 0
    wrapped = int(number) % 2**32
    return wrapped - 2**32 if wrapped >= 2**31 else wrapped


def _iterate(value: object, what: str) -> list:
    """`for (x of value)` / `Array.from(value)`: a TypeError unless value is iterable (a
    string iterates over its characters)."""
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        return list(value)
    raise CvatTypeError(f"{what} is not iterable ({type(value).__name__})")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _strictly_equal(a: object, b: object) -> bool:
    """JavaScript's ===: 1 and 1.0 are one Number, true and 1 differ."""
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


def mask2rle(flat: list) -> list[int]:
    """cvat-core rle-utils.ts mask2Rle: the first value counts as set when > 0, then runs
    break where a value differs (===) from the one before."""
    runs = [0]
    if not flat:
        return runs
    if _js_number(flat[0]) > 0:
        runs.append(1)
    else:
        runs[0] = 1
    for previous, value in zip(flat, flat[1:], strict=False):
        if _strictly_equal(previous, value):
            runs[-1] += 1
        else:
            runs.append(1)
    return runs


def rle2mask(runs: list[int], width: int, height: int) -> np.ndarray:
    """cvat-core rle-utils.ts rle2Mask: runs alternate 0, 1, 0, ... from a zero run;
    (height, width) uint8. Runs past width x height are cut off (the JS array would grow
    and the Mat read only its first width x height values)."""
    values = np.arange(len(runs)) % 2
    counts = np.maximum(np.asarray(runs, dtype=np.int64), 0)
    flat = np.repeat(values, counts)[: width * height].astype(np.uint8)
    flat = np.concatenate([flat, np.zeros(width * height - len(flat), np.uint8)])
    return flat.reshape(height, width)


# ------------------------------------------------------------------ cvat-core


def normalise(result: object) -> object:
    """cvat-core lambda-manager.ts call() for an interactor."""
    if isinstance(result, dict | list) or result is None:  # typeof === 'object'
        if result is None:
            raise CvatTypeError("Cannot use 'in' operator to search for 'mask' in null")
        if isinstance(result, dict) and "mask" in result:
            mask = result["mask"]
            if not isinstance(mask, list):
                raise CvatTypeError("Cannot read properties of result.mask")
            # mask[0].length: undefined for [] (a TypeError); rows other than lists are
            # outside what this model follows
            if not mask or not isinstance(mask[0], list):
                raise CvatTypeError("Cannot read properties of undefined (reading 'length')")
            height, width = len(mask), len(mask[0])
            flat = [v for row in mask for v in (row if isinstance(row, list) else [row])]
            rle = mask2rle(flat)
            rle = [0, 0, 0, 0, 0] if len(rle) < 2 else [*rle, 0, 0, width - 1, height - 1]
            return {"shapes": [{"points": rle, "type": "mask", "attributes": []}]}
        if isinstance(result, dict) and isinstance(result.get("shapes"), list):
            shapes = []
            for item in result["shapes"]:
                if not isinstance(item, dict):
                    raise CvatTypeError(f"Cannot read properties of {item!r} (reading 'points')")
                attributes = item.get("attributes")
                valid = isinstance(attributes, list) and all(
                    isinstance(a, dict)
                    and _is_number(a.get("spec_id"))
                    and isinstance(a.get("value"), str)
                    for a in attributes
                )
                kind = item.get("type")
                shapes.append(
                    {
                        "points": item.get("points"),
                        "attributes": attributes if valid else [],
                        "type": "mask" if kind is None else kind,
                    }
                )
            return {"shapes": shapes}
    return result


# ------------------------------------------------------------------ opencv-wrapper


def contours_from_rle(points: list[int]) -> list[np.ndarray]:
    """opencv-wrapper.ts getContoursFromStateSync for a mask, with opencv-interface.ts
    findContours: contours in frame pixels, longest (summed step length) first."""
    left, top, right, bottom = points[-4:]
    width, height = right - left + 1, bottom - top + 1
    if width <= 0 or height <= 0:
        raise CvatError(f"Invalid array length (mask box {width} x {height})")
    mask = rle2mask(points[:-4], width, height)
    expanded = cv2.copyMakeBorder(mask, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    expanded = cv2.dilate(expanded, np.ones((2, 2), np.uint8), anchor=(-1, -1), iterations=1)
    found, _ = cv2.findContours(expanded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    converted = []
    for contour in found:
        xy = contour.reshape(-1, 2).astype(np.int64) - 1  # the border's offset
        steps = np.diff(xy, axis=0)
        length = float(np.hypot(steps[:, 0], steps[:, 1]).sum())
        converted.append((length, xy + np.array([left, top])))
    if not converted:
        raise CvatError("Empty contour received from state")
    converted.sort(key=lambda pair: -pair[0])  # Array.sort is stable
    return [xy for _, xy in converted]


# ------------------------------------------------------------------ cvat-ui tools-control


def interaction_items(result: object) -> list[Item]:
    """runInteractionRequest: the latestResponse for an answer (errors as CvatError)."""
    response = normalise(result)
    shapes = response.get("shapes") if isinstance(response, dict) else None
    if shapes is None:
        raise CvatTypeError("Cannot read properties of undefined (response.shapes)")
    items = []
    for item in _iterate(shapes, "response.shapes"):
        if not isinstance(item, dict) or item.get("type") != "mask":
            continue
        raw = item.get("points")
        if raw is None:
            raise CvatTypeError("Int32Array.from: points is undefined")
        # an iterable is read element by element; anything else as an array-like without
        # a length, i.e. empty
        rle = [_int32(v) for v in (_iterate(raw, "") if isinstance(raw, list | str) else [])]
        contours = [] if len(rle) < 6 else contours_from_rle(rle)  # receiveContoursFromMask
        polygon = contours[0] if contours else np.zeros((0, 2), np.int64)
        if len(polygon) < 3:
            continue
        confidence_attr = next((a for a in item["attributes"] if a.get("spec_id") == 0), None)
        confidence = 1.0 if confidence_attr is None else _js_number(confidence_attr["value"])
        items.append(Item(rle, contours, confidence))
    return items


def _shown(items: list[Item], threshold: float) -> list[Item]:
    # NaN >= threshold is false: a non-numeric confidence hides the item
    return [i for i in items if i.confidence >= threshold]


def crop_mask(rle: list[int], width: int, height: int) -> np.ndarray:
    """cvat-core put() then object-utils.ts cropMask: the full-frame mask of the object
    CVAT stores (the part outside the frame cut off)."""
    if len(rle) < 6:
        raise CvatError("Could not create empty mask")
    left, top, right, bottom = rle[-4:]
    box = rle2mask(rle[:-4], right - left + 1, bottom - top + 1).astype(bool)
    full = np.zeros((height + 2 * box.shape[0], width + 2 * box.shape[1]), bool)
    y0, x0 = top + box.shape[0], left + box.shape[1]  # padded so any box fits
    full[y0 : y0 + box.shape[0], x0 : x0 + box.shape[1]] = box
    frame = full[box.shape[0] : box.shape[0] + height, box.shape[1] : box.shape[1] + width]
    if not frame.any():
        raise CvatError("Could not create empty mask (nothing inside the frame)")
    return frame.copy()


def consume_masks(
    result: object, width: int, height: int, threshold: float = DEFAULT_THRESHOLD
) -> Outcome:
    """Mask mode (CVAT's default): the full-frame bool masks of the objects created."""
    shown = _shown(interaction_items(result), threshold)
    if not shown:
        return Outcome([], NO_SHAPES)
    return Outcome([crop_mask(i.rle, width, height) for i in shown if len(i.rle) >= 6])


def consume_polygons(
    result: object,
    width: int,
    height: int,
    threshold: float = DEFAULT_THRESHOLD,
    epsilon: float | None = None,
) -> Outcome:
    """Polygon mode: the (N, 2) polygons of the objects created, each the item's longest
    outer contour (holes and other components gone), approximated with approxPolyDP when
    `epsilon` is given (the accuracy slider; None: no approximation)."""
    polygons = []
    for item in _shown(interaction_items(result), threshold):
        points = item.contours[0]
        if epsilon is not None and len(points) > 3:
            points = cv2.approxPolyDP(points.astype(np.int32)[:, None], epsilon, True)[:, 0]
        if len(points) >= 3:
            polygons.append(np.asarray(points))
    return Outcome(polygons, None if polygons else NO_SHAPES)


def polygon_area_mask(polygon: np.ndarray, width: int, height: int) -> np.ndarray:
    """The pixels whose centres lie inside a polygon from contours_from_rle (even-odd rule).

    The contour runs through the dilated mask's pixel centres, i.e. the original pixels'
    corners (pixel (x, y) spans [x, x+1] x [y, y+1]): the polygon is the mask's outline,
    save that its diagonal steps cut corner pixels in half. So this is the mask CVAT's
    polygon stands for, up to those half pixels."""
    points = np.asarray(polygon, dtype=np.float64)
    inside = np.zeros((height, width), bool)
    x_lo, y_lo = np.maximum(np.floor(points.min(0)).astype(int), 0)
    x_hi, y_hi = np.minimum(np.ceil(points.max(0)).astype(int), [width, height])
    cx, cy = np.meshgrid(np.arange(x_lo, x_hi) + 0.5, np.arange(y_lo, y_hi) + 0.5)
    window = np.zeros(cx.shape, bool)
    for (x0, y0), (x1, y1) in zip(points, np.roll(points, -1, axis=0), strict=True):
        if y0 == y1:
            continue  # a horizontal edge never crosses a ray at a half-integer height
        crosses = (y0 > cy) != (y1 > cy)
        window ^= crosses & (cx < x0 + (cy - y0) * (x1 - x0) / (y1 - y0))
    inside[y_lo:y_hi, x_lo:x_hi] = window
    return inside
