"""Colouring class maps and instances for people to look at."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def colorize(classes: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class map -> RGB; indices beyond the palette (the ignore index 255) are white."""
    lut = np.full((256, 3), 255, np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[classes]


def overlay(image_rgb: np.ndarray, classes: np.ndarray, palette, alpha: float = 0.5) -> np.ndarray:
    """Blend the class colours over the image; background (0) stays untouched."""
    blended = image_rgb.astype(np.float32) * (1 - alpha) + colorize(classes, palette) * alpha
    return np.where((classes == 0)[..., None], image_rgb, blended.astype(np.uint8))


def draw_instances(image_rgb: np.ndarray, instances, classes: Sequence[str], palette) -> np.ndarray:
    """Instances filled in their genus colour with an outline, and a legend of the genera shown.

    Unsure instances (confidence under the unsure threshold) get a lighter fill, a
    white outline and a '?' after their name in the legend.
    """
    canvas = image_rgb.astype(np.float32)
    outlines = []
    for inst in instances:
        color = np.asarray(palette[inst.label], np.float32)
        alpha = 0.25 if inst.unsure else 0.5
        canvas[inst.mask] = canvas[inst.mask] * (1 - alpha) + color * alpha
        contours, _ = cv2.findContours(
            inst.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        outlines.append(
            (contours, (255, 255, 255) if inst.unsure else tuple(int(c) for c in color))
        )
    out = canvas.astype(np.uint8)
    thickness = max(1, round(max(out.shape[:2]) / 600))
    for contours, color in outlines:
        cv2.drawContours(out, contours, -1, color, thickness)
    return add_legend(out, instances, classes, palette)


def add_legend(image: np.ndarray, instances, classes: Sequence[str], palette) -> np.ndarray:
    entries = {}
    for inst in instances:
        name = classes[inst.label] + ("?" if inst.unsure else "")
        entries.setdefault(name, palette[inst.label])
    scale = max(0.4, image.shape[0] / 1600)
    line = int(28 * scale) + 4
    width = int(max([len(n) for n in entries] + [12]) * 11 * scale) + line + 16
    panel = np.full((image.shape[0], width, 3), 255, np.uint8)
    font = 0.7 * scale
    cv2.putText(panel, "genus (? = unsure)", (8, line - 6), cv2.FONT_HERSHEY_SIMPLEX, font,
                (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    for row, (name, color) in enumerate(sorted(entries.items()), start=1):
        y = row * line + line
        if y > image.shape[0] - 4:
            break
        cv2.rectangle(panel, (8, y - line + 8), (8 + line - 8, y), tuple(int(c) for c in color), -1)
        cv2.putText(panel, name, (line + 8, y - 4), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
    return np.hstack([image, panel])
