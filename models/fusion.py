"""Fusing the two stages: semantic class probabilities + instance masks -> labelled instances.

The rule (docs/inference.md states the same):
1. Per pixel, the best class probability p and its class c. Pixels where the
   model hardly prefers any class count for no class: p below the floor
   1/C + min_threshold * (1 - 1/C), C the number of classes. min_threshold is a
   share of the way from a uniform guess (p = 1/C, no preference) to certainty
   (p = 1); an absolute threshold under 1/C would never act, since the best of C
   probabilities that sum to one is at least 1/C. The default 0.05 (the guide's
   number) gives p < 0.106 with the 17 fine classes and p < 0.186 with the 7
   families: pixels the model spreads over many genera.
2. Each SAM mask takes the class with the highest mean probability over its
   counted pixels; that mean is its confidence. A mask whose class is background,
   or that has no counted pixel, is dropped (the semantic model sees no coral there).
3. A confidence under unsure_threshold keeps the instance but marks it unsure.
4. Pixels of a coral class that no kept SAM mask covers are not lost: each
   connected component (8-connectivity) of such pixels becomes an instance of that
   class (source "semantic"), with the mean probability of the class as confidence.
5. Instances smaller than min_area pixels are dropped; then mask NMS: by
   decreasing confidence, an instance whose mask IoU with an already kept one
   exceeds nms_threshold is dropped.
6. One pixel, one colony: by decreasing confidence, each instance keeps only the
   pixels that no more confident instance holds; one left with fewer than min_area
   pixels is dropped. The instances of an image partition the pixels they cover.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


@dataclass
class Instance:
    mask: np.ndarray  # (H, W) bool
    label: int  # class index in the taxonomy (>= 1)
    score: float  # mean probability of `label` inside the mask
    unsure: bool
    source: str  # "sam" or "semantic"

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> tuple[int, int, int, int]:
        """Inclusive (x0, y0, x1, y1)."""
        rows, cols = np.any(self.mask, 1), np.any(self.mask, 0)
        y0, y1 = np.flatnonzero(rows)[[0, -1]]
        x0, x1 = np.flatnonzero(cols)[[0, -1]]
        return int(x0), int(y0), int(x1), int(y1)


@dataclass(frozen=True)
class FusionSettings:
    min_threshold: float = 0.05  # share of the way from uniform (1/C) to certain (1); rule 1
    unsure_threshold: float = 0.2
    nms_threshold: float = 0.5
    min_area: int = 100

    def probability_floor(self, num_classes: int) -> float:
        """The best class probability under which a pixel counts for no class (rule 1)."""
        if self.min_threshold <= 0 or num_classes < 2:
            return 0.0
        uniform = 1.0 / num_classes
        return uniform + self.min_threshold * (1.0 - uniform)


def _mean_probabilities(
    probs: torch.Tensor, masks: torch.Tensor, chunk: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) mean probability per mask over its counted pixels, and (N,) counted pixel counts."""
    classes = probs.shape[0]
    flat = probs.reshape(classes, -1).T  # (HW, C)
    sums, counts = [], []
    for start in range(0, len(masks), chunk):
        weights = masks[start : start + chunk].reshape(-1, flat.shape[0]).to(flat.dtype)
        sums.append(weights @ flat)
        counts.append(weights.sum(1))
    if not sums:
        return torch.zeros((0, classes)), torch.zeros(0)
    total, count = torch.cat(sums), torch.cat(counts)
    return total / count.clamp(min=1)[:, None], count


def mask_nms(instances: list[Instance], threshold: float) -> list[Instance]:
    """Greedy NMS on mask IoU, highest confidence first; overlap is measured inside box overlaps."""
    kept: list[tuple[Instance, tuple[int, int, int, int], int]] = []
    for inst in sorted(instances, key=lambda i: -i.score):
        box, area = inst.box, inst.area
        duplicate = False
        for other, obox, oarea in kept:
            x0, y0 = max(box[0], obox[0]), max(box[1], obox[1])
            x1, y1 = min(box[2], obox[2]), min(box[3], obox[3])
            if x0 > x1 or y0 > y1:
                continue
            inter = int(np.logical_and(inst.mask[y0 : y1 + 1, x0 : x1 + 1],
                                       other.mask[y0 : y1 + 1, x0 : x1 + 1]).sum())  # fmt: skip
            if inter / (area + oarea - inter) > threshold:
                duplicate = True
                break
        if not duplicate:
            kept.append((inst, box, area))
    return [inst for inst, _, _ in kept]


def claim_pixels(instances: list[Instance], min_area: int) -> list[Instance]:
    """Rule 6: contested pixels go to the most confident instance; the others keep the rest
    (dropped under min_area). Returns instances with disjoint masks, most confident first."""
    if not instances:
        return []
    claimed = np.zeros(instances[0].mask.shape, dtype=bool)
    kept = []
    for inst in sorted(instances, key=lambda i: -i.score):
        x0, y0, x1, y1 = inst.box
        window = np.s_[y0 : y1 + 1, x0 : x1 + 1]
        own = inst.mask[window] & ~claimed[window]
        if own.sum() < max(min_area, 1):  # an instance left with no pixel is none
            continue
        if not np.array_equal(own, inst.mask[window]):
            mask = np.zeros_like(inst.mask)
            mask[window] = own
            inst = Instance(mask, inst.label, inst.score, inst.unsure, inst.source)
        claimed[window] |= own
        kept.append(inst)
    return kept


def _semantic_components(
    pixels: np.ndarray, class_probs: torch.Tensor, cls: int, settings: FusionSettings
) -> list[Instance]:
    """One instance per 8-connected component of `pixels` with at least min_area pixels.

    Areas, boxes and probability sums come from one pass over the image (a noisy
    class map has tens of thousands of components: comparing the whole label image
    with each one took minutes at 1920 px); each kept mask is cut from its box."""
    count, components, stats, _ = cv2.connectedComponentsWithStats(
        pixels.astype(np.uint8), connectivity=8
    )
    areas = stats[:, cv2.CC_STAT_AREA]
    kept = [k for k in range(1, count) if areas[k] >= settings.min_area]
    if not kept:
        return []
    sums = np.bincount(
        components.ravel(), weights=class_probs.float().cpu().numpy().ravel(), minlength=count
    )
    found = []
    for k in kept:
        x, y, w, h = stats[k, :4]
        mask = np.zeros(pixels.shape, dtype=bool)
        mask[y : y + h, x : x + w] = components[y : y + h, x : x + w] == k
        score = float(sums[k] / areas[k])
        found.append(Instance(mask, cls, score, score < settings.unsure_threshold, "semantic"))
    return found


def fuse(probs: torch.Tensor, sam_masks: torch.Tensor, settings: FusionSettings) -> list[Instance]:
    """probs: (C, H, W) softmax of the semantic model; sam_masks: (N, H, W) bool, same device."""
    best_prob, best_class = probs.max(0)
    counted = best_prob >= settings.probability_floor(probs.shape[0])
    probs = probs * counted  # uncounted pixels add nothing to any class
    masks = sam_masks & counted
    means, count = _mean_probabilities(probs.float(), masks)
    instances: list[Instance] = []
    covered = torch.zeros_like(counted)
    if len(masks):
        score, label = means.max(1)
        keep = torch.nonzero((label > 0) & (count > 0)).flatten()
        covered = sam_masks[keep].any(0) if len(keep) else covered
        # one host copy for all kept masks
        kept_masks, scores, labels = (
            t.cpu().numpy() for t in (sam_masks[keep], score[keep], label[keep])
        )
        for mask, confidence, cls in zip(kept_masks, scores.tolist(), labels.tolist(), strict=True):
            unsure = confidence < settings.unsure_threshold
            instances.append(Instance(mask, int(cls), confidence, unsure, "sam"))
    leftover = ((best_class > 0) & counted & ~covered).cpu().numpy()
    class_map = best_class.cpu().numpy()
    for cls in np.unique(class_map[leftover]):
        instances += _semantic_components(
            leftover & (class_map == cls), probs[cls], int(cls), settings
        )
    instances = [inst for inst in instances if inst.area >= settings.min_area]
    instances = claim_pixels(mask_nms(instances, settings.nms_threshold), settings.min_area)
    return [_owning_its_mask(inst) for inst in instances]


def semantic_instances(probs: torch.Tensor, settings: FusionSettings) -> list[Instance]:
    """The fusion rule with no SAM proposal: each connected region of a genus is one
    instance (rule 4), as the semantic-only CVAT function and the annotation loop make them."""
    no_proposals = torch.zeros((0, *probs.shape[1:]), dtype=torch.bool, device=probs.device)
    return fuse(probs, no_proposals, settings)


def _owning_its_mask(inst: Instance) -> Instance:
    """A SAM instance's mask is a view into the (K, H, W) stack of kept proposals: while
    any instance lives, the whole stack (K full-size masks) stays in memory. A copy
    frees it as soon as the image's instances are written."""
    if inst.mask.base is not None:
        inst.mask = inst.mask.copy()
    return inst
