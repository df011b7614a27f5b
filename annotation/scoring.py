"""What the current model says about one image: how unsure it is, and where it sits among
the others in the model's own feature space.

Uncertainty, from the semantic stage's class probabilities (C classes, background 0):
- entropy: mean over the pixels predicted as coral of -sum p log p / log C (0 = certain,
  1 = uniform over all classes);
- margin: mean over the same pixels of 1 - (p_best - p_second) (0 = certain, 1 = a tie);
- unsure share: the share of the image's colonies the fusion rule flags unsure
  (models/fusion.py rule 3; colonies are the connected regions of each genus, as the
  semantic-only CVAT function makes them).
An image where the model sees no coral at all is scored over all its pixels instead:
a reef photo without coral is itself a sign the model is unsure of it.

Features: the DINOv2 backbone's last block, averaged over its patches (over every
window when the config slides) and scaled to unit length: one vector per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from models.fusion import FusionSettings, semantic_instances

UNCERTAINTIES = ("entropy", "margin")


@dataclass(frozen=True)
class ImageScores:
    entropy: float
    margin: float
    coral_share: float  # share of pixels predicted as a coral class
    colonies: int
    unsure_share: float
    embedding: np.ndarray  # (D,) float32, unit length


def pixel_uncertainty(probs: torch.Tensor) -> tuple[float, float, float]:
    """(entropy, margin, coral share) of (C, H, W) class probabilities; see the module."""
    classes = probs.shape[0]
    probs = probs.float()
    best_class = probs.argmax(0)
    coral = best_class > 0
    where = coral if bool(coral.any()) else torch.ones_like(coral)
    picked = probs[:, where]  # (C, P)
    entropy = -(picked * torch.log(picked.clamp_min(1e-12))).sum(0) / math.log(classes)
    top2 = picked.topk(2, dim=0).values
    margin = 1.0 - (top2[0] - top2[1])
    return float(entropy.mean()), float(margin.mean()), float(coral.float().mean())


class FeatureTap:
    """Collects the backbone's last feature map, pooled, while the model predicts."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        self._sum: torch.Tensor | None = None
        self._windows = 0
        self._handle = backbone.register_forward_hook(self._collect)

    def _collect(self, _module, _inputs, outputs) -> None:
        last = outputs[-1] if isinstance(outputs, (tuple, list)) else outputs
        pooled = last.float().mean(dim=(2, 3)).sum(0)  # (D,), windows of a batch summed
        self._sum = pooled if self._sum is None else self._sum + pooled
        self._windows += last.shape[0]

    def take(self) -> np.ndarray:
        """The mean over the windows seen since the last take, unit length."""
        if self._sum is None:
            raise RuntimeError("the backbone did not run")
        mean = (self._sum / self._windows).cpu().numpy().astype(np.float32)
        self._sum, self._windows = None, 0
        norm = float(np.linalg.norm(mean))
        return mean / norm if norm > 0 else mean

    def close(self) -> None:
        self._handle.remove()


class ImageScorer:
    """Scores images with a loaded SemanticSegmenter (inferencer.py)."""

    def __init__(self, segmenter, fusion: FusionSettings | None = None) -> None:
        self.segmenter = segmenter
        self.fusion = fusion or FusionSettings()
        self.tap = FeatureTap(segmenter.model.backbone)

    def __call__(self, image_rgb: np.ndarray) -> ImageScores:
        probs = self.segmenter.predict_probs(image_rgb)
        embedding = self.tap.take()
        entropy, margin, coral_share = pixel_uncertainty(probs)
        colonies = semantic_instances(probs, self.fusion)
        unsure = sum(c.unsure for c in colonies) / len(colonies) if colonies else 0.0
        return ImageScores(entropy, margin, coral_share, len(colonies), unsure, embedding)
