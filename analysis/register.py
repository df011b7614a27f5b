"""Bring the second survey's photo onto the first: features + RANSAC homography (OpenCV).

SIFT features (ORB where OpenCV lacks SIFT), Lowe's ratio test, then
cv2.findHomography with RANSAC. The homography maps a pixel (x, y) of the second
photo to the first; colonies of the second survey are warped with it (nearest
neighbour, so masks stay masks) and everything is compared in the first photo's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from analysis.sources import Colony

RATIO = 0.75  # Lowe's ratio test
RANSAC_PIXELS = 3.0
MIN_INLIERS = 12
MAX_FEATURES = 5000


class RegistrationError(ValueError):
    """The photos could not be aligned; the message says how far it got."""


@dataclass(frozen=True)
class Registration:
    homography: np.ndarray  # 3 x 3, second photo (x, y) -> first photo
    method: str
    matches: int = 0
    inliers: int = 0

    @classmethod
    def identity(cls) -> Registration:
        return cls(np.eye(3), "none (--no-register)")


def _detector():
    if hasattr(cv2, "SIFT_create"):
        return cv2.SIFT_create(MAX_FEATURES), cv2.NORM_L2, "SIFT"
    return cv2.ORB_create(MAX_FEATURES), cv2.NORM_HAMMING, "ORB"


def register(before_rgb: np.ndarray, after_rgb: np.ndarray) -> Registration:
    """The homography from `after_rgb` to `before_rgb`; RegistrationError when too few
    features agree."""
    detector, norm, name = _detector()
    gray = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in (after_rgb, before_rgb)]
    (kp_after, d_after), (kp_before, d_before) = (detector.detectAndCompute(g, None) for g in gray)
    if d_after is None or d_before is None or len(kp_after) < 2 or len(kp_before) < 2:
        raise RegistrationError(f"{name} found too few features to align the photos")
    pairs = cv2.BFMatcher(norm).knnMatch(d_after, d_before, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < MIN_INLIERS:
        raise RegistrationError(
            f"{name}: {len(good)} feature matches between the photos (at least {MIN_INLIERS} "
            "needed); are they the same quadrat?"
        )
    source = np.float32([kp_after[m.queryIdx].pt for m in good]).reshape(-1, 1, 2)
    target = np.float32([kp_before[m.trainIdx].pt for m in good]).reshape(-1, 1, 2)
    homography, inliers = cv2.findHomography(source, target, cv2.RANSAC, RANSAC_PIXELS)
    count = int(inliers.sum()) if inliers is not None else 0
    if homography is None or count < MIN_INLIERS:
        raise RegistrationError(
            f"{name} + RANSAC: {count} of {len(good)} matches agree on one homography "
            f"(at least {MIN_INLIERS} needed); are they the same quadrat?"
        )
    return Registration(homography, f"{name} + RANSAC homography", len(good), count)


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], np.float64)


def warp_colony(colony: Colony, homography: np.ndarray, shape: tuple[int, int]) -> Colony | None:
    """The colony in the first photo's frame (of `shape`); None when it lands outside."""
    top, left, bottom, right = colony.box
    corners = np.float64([[left, top], [right, top], [right, bottom], [left, bottom]])
    moved = cv2.perspectiveTransform(corners.reshape(-1, 1, 2), homography).reshape(-1, 2)
    height, width = shape
    x0, y0 = (max(0, int(np.floor(v)) - 1) for v in moved.min(axis=0))
    x1 = min(width, int(np.ceil(moved[:, 0].max())) + 2)
    y1 = min(height, int(np.ceil(moved[:, 1].max())) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    # Warp only the colony's box: the same pixels as warping the full mask, far cheaper.
    local = _translation(-x0, -y0) @ homography @ _translation(left, top)
    warped = cv2.warpPerspective(
        colony.mask.astype(np.uint8), local, (x1 - x0, y1 - y0), flags=cv2.INTER_NEAREST
    )
    moved_colony = Colony.from_mask(
        colony.id,
        colony.class_index,
        warped > 0,
        confidence=colony.confidence,
        unsure=colony.unsure,
    )
    if moved_colony is not None:
        moved_colony.top += y0
        moved_colony.left += x0
    return moved_colony


def common_area(
    registration: Registration, before_shape: tuple[int, int], after_shape: tuple[int, int]
) -> np.ndarray:
    """Pixels of the first photo that the second one also shows."""
    height, width = before_shape
    ones = np.ones(after_shape, np.uint8)
    return (
        cv2.warpPerspective(ones, registration.homography, (width, height), flags=cv2.INTER_NEAREST)
        > 0
    )
