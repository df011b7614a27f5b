"""The colony as CVAT's interactor answer (CVAT >= 2.60).

CVAT's UI (cvat-ui tools-control.tsx, v2.73.0) reads `{"shapes": [...]}` and makes one
object per item of type "mask" whose `points` are CVAT's mask RLE: run lengths over the
mask's bounding box, row by row, starting with a run of zeros (possibly 0), then the box
[left, top, right, bottom] with right and bottom inclusive. Encoding over the colony's own
tight box keeps the answer the size of the colony (kB), where a full-frame 0/1 list of a
1920 px frame is ~11 MB of JSON on every click.

Nothing found is `{"shapes": []}`: the UI shows "No shapes to display". An RLE with no
foreground and 6 or more numbers would raise "Empty contour received from state" in the
UI, so an empty mask is never encoded.
"""

from __future__ import annotations

import numpy as np

# CVAT's answer for "no colony here"; answer() returns a fresh copy, do not mutate this one
NOTHING_FOUND: dict = {"shapes": []}
# CVAT's UI reads an attribute with spec_id 0 as the item's confidence
CONFIDENCE_SPEC_ID = 0


def encode_mask(mask: np.ndarray) -> list[int]:
    """CVAT's RLE of a 2-D mask over its tight inclusive box, + [left, top, right, bottom].

    Plain Python ints (json.dumps refuses numpy's). ValueError for an empty mask: there is
    no valid RLE of nothing (answer NOTHING_FOUND instead)."""
    mask = np.asarray(mask).astype(bool, copy=False)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        raise ValueError("the mask is empty: answer NOTHING_FOUND, not an RLE")
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    flat = mask[top : bottom + 1, left : right + 1].ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat[0]:
        runs.insert(0, 0)  # the RLE starts with the zero run, here empty
    return [*runs, left, top, right, bottom]


def answer(
    mask: np.ndarray | None, score: float | None = None, *, confidence: bool = False
) -> dict:
    """The interactor's answer: one mask object, or NOTHING_FOUND for None or an empty mask.

    The confidence attribute is left out by default. The UI reads {"spec_id": 0, "value":
    "<0..1>"} as a confidence, shows a threshold slider, and hides and does not create an
    item below it, 0.5 by default. SAM's predicted IoU is not a calibrated probability (on
    a coral with a fuzzy edge it is often under 0.5 for a good mask), so with it the UI
    would answer a click with "No shapes to display" while a usable colony was found; the
    user judges the mask on screen and adds clicks instead. confidence=True sends the
    score anyway (as a string: the UI drops every attribute if one value is not a string).
    """
    if mask is None or not np.any(mask):
        return {"shapes": []}
    attributes = []
    if confidence and score is not None:
        attributes = [{"spec_id": CONFIDENCE_SPEC_ID, "value": f"{float(score):.4f}"}]
    return {"shapes": [{"type": "mask", "points": encode_mask(mask), "attributes": attributes}]}
