"""Automatic instance proposals from (CoralSCoP-)SAM, kept on the device.

The same algorithm as segment-anything's SamAutomaticMaskGenerator (a grid of
point prompts over the image and over overlapping crops, filtered by predicted
IoU and stability, de-duplicated by box NMS), built from segment-anything's own
utilities, with three changes:
- masks, scores and filtering stay on the device for the whole image: no
  run-length encoding per batch, no host copy per mask; NMS is torchvision's on
  the device; masks are upsampled only once they passed the cheap filters;
- CoralSCoP's category head drops masks it calls background (when the model has one);
- masks come back as one boolean tensor (one host copy per image when needed).
Small-region clean-up (`min_mask_region_area`) works on each mask's box, the
only part that can change.

On a CPU the prompts are decoded in stages (models/sam_lean.py: the shared image read
once, re-associated attention, the IoU filter before the category head and both before
mask upscaling) in batches of `cpu_points_per_batch`; other devices run
segment-anything's batched decoder as before. Both give the same proposals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    batched_mask_to_box,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    remove_small_regions,
    uncrop_boxes_xyxy,
)
from torchvision.ops import batched_nms, box_area

from .sam_lean import decode_prompts


@dataclass
class GeneratorSettings:
    """Defaults are CoralSCoP's (single-mask output, its thresholds)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    # staged CPU decoding: small batches keep a prompt's 4096 x 256 image tokens in cache
    # (per prompt, batch 4-16 took half the time of batch 64 on a 2-core CPU)
    cpu_points_per_batch: int = 8
    pred_iou_thresh: float = 0.72
    stability_score_thresh: float = 0.62
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 1
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 2
    min_mask_region_area: int = 100
    multimask_output: bool = False
    # CoralSCoP keeps an output its category head calls coral: the argmax of (background,
    # coral), i.e. a coral probability over 0.5
    coral_thresh: float = 0.5


@dataclass
class Proposals:
    """Instance proposals of one image; tensors on the generator's device."""

    masks: torch.Tensor  # (N, H, W) bool
    boxes: torch.Tensor  # (N, 4) xyxy, image pixels
    iou_preds: torch.Tensor  # (N,)
    stability: torch.Tensor  # (N,)
    coral_prob: torch.Tensor  # (N,) 1.0 where the model has no category head
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.masks)

    def select(self, keep: torch.Tensor) -> Proposals:
        return Proposals(
            self.masks[keep],
            self.boxes[keep],
            self.iou_preds[keep],
            self.stability[keep],
            self.coral_prob[keep],
        )


def _cat(parts: list[Proposals], height: int, width: int, device) -> Proposals:
    if not parts:
        empty = torch.zeros(0, device=device)
        return Proposals(
            torch.zeros((0, height, width), dtype=torch.bool, device=device),
            torch.zeros((0, 4), device=device),
            empty,
            empty,
            empty,
        )
    return Proposals(
        *(
            torch.cat([getattr(p, name) for p in parts])
            for name in ("masks", "boxes", "iou_preds", "stability", "coral_prob")
        )
    )


def _small_region_reaches_ring(window: np.ndarray, ring: tuple[bool, ...], area: int) -> bool:
    """Does a background region under `area` pixels touch the window's one-pixel ring?

    Regions inside the ring are the same in the window and the image; one that
    touches the ring continues outside, where only the whole image tells its size.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (~window).astype(np.uint8), connectivity=8
    )
    top, bottom, left, right = ring
    edges = [
        labels[0] if top else None,
        labels[-1] if bottom else None,
        labels[:, 0] if left else None,
        labels[:, -1] if right else None,
    ]
    touching = np.unique(np.concatenate([e for e in edges if e is not None] or [np.zeros(0, int)]))
    return any(stats[label, cv2.CC_STAT_AREA] < area for label in touching if label > 0)


class CoralMaskGenerator:
    def __init__(
        self,
        sam: Sam,
        use_category: bool = True,
        settings: GeneratorSettings | None = None,
        staged: bool | None = None,
    ):
        """staged: decode prompts in stages (models/sam_lean.py); by default on a CPU only."""
        self.sam = sam
        self.use_category = use_category and hasattr(sam.mask_decoder, "predict_with_category")
        self.settings = settings or GeneratorSettings()
        self.staged = sam.device.type == "cpu" if staged is None else staged
        self.predictor = SamPredictor(sam)
        s = self.settings
        self.point_grids = build_all_layer_point_grids(
            s.points_per_side, s.crop_n_layers, s.crop_n_points_downscale_factor
        )

    @property
    def device(self) -> torch.device:
        return self.sam.device

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> Proposals:
        """Proposals for an RGB uint8 image (H, W, 3)."""
        s = self.settings
        height, width = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes(
            (height, width), s.crop_n_layers, s.crop_overlap_ratio
        )
        parts, crop_of = [], []
        for crop_box, layer in zip(crop_boxes, layers, strict=True):
            found = self._process_crop(image, crop_box, layer)
            parts.append(found)
            crop_of += [crop_box] * len(found)
        proposals = _cat(parts, height, width, self.device)
        if len(crop_boxes) > 1 and len(proposals):
            # prefer masks from smaller crops, as segment-anything does
            crop_tensor = torch.tensor(crop_of, dtype=torch.float32, device=self.device)
            keep = batched_nms(
                proposals.boxes.float(),
                1.0 / box_area(crop_tensor),
                torch.zeros(len(proposals), device=self.device),
                iou_threshold=s.crop_nms_thresh,
            )
            proposals = proposals.select(keep)
        if s.min_mask_region_area > 0 and len(proposals):
            proposals = self._remove_small_regions(proposals)
        return proposals

    def _decode(self, points: torch.Tensor):
        sam, s = self.sam, self.settings
        labels = torch.ones(points.shape[0], 1, dtype=torch.int, device=points.device)
        sparse, dense = sam.prompt_encoder(
            points=(points[:, None, :], labels), boxes=None, masks=None
        )
        args = (
            self.predictor.features,
            sam.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            s.multimask_output,
        )
        if self.use_category:
            low_res, iou, category = sam.mask_decoder.predict_with_category(*args)
            coral = category.float().softmax(-1)[..., 1]
        else:
            low_res, iou = sam.mask_decoder(*args)
            coral = torch.ones_like(iou)
        return low_res.flatten(0, 1), iou.flatten(0, 1), coral.flatten(0, 1)

    def _decode_kept(self, points: torch.Tensor):
        """Low-res logits, IoU predictions and coral probabilities of the outputs that pass
        the IoU filter and (with a category head) the coral filter."""
        s = self.settings
        if self.staged:
            decoded = decode_prompts(
                self.sam, self.predictor.features, points, s.multimask_output,
                s.pred_iou_thresh, self.use_category, s.coral_thresh,
            )  # fmt: skip
            return decoded.low_res, decoded.iou, decoded.coral
        low_res, iou, coral = self._decode(points)
        # like segment-anything, a threshold of 0 turns its filter off
        keep = (
            iou > s.pred_iou_thresh
            if s.pred_iou_thresh != 0
            else torch.ones_like(iou, dtype=torch.bool)
        )
        if self.use_category:
            keep &= coral > s.coral_thresh
        return low_res[keep], iou[keep], coral[keep]

    def _process_crop(self, image: np.ndarray, crop_box: list[int], layer: int) -> Proposals:
        s = self.settings
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_h, crop_w = crop.shape[:2]
        self.predictor.set_image(crop)
        grid = self.point_grids[layer] * np.array([[crop_w, crop_h]])
        points = torch.as_tensor(
            self.predictor.transform.apply_coords(grid, (crop_h, crop_w)), device=self.device
        ).float()
        found = []
        batch = s.cpu_points_per_batch if self.staged else s.points_per_batch
        for start in range(0, len(points), batch):
            low_res, iou, coral = self._decode_kept(points[start : start + batch])
            if not len(iou):
                continue
            logits = self.sam.postprocess_masks(
                low_res[:, None], self.predictor.input_size, self.predictor.original_size
            )[:, 0]
            stability = calculate_stability_score(
                logits, self.sam.mask_threshold, s.stability_score_offset
            )
            keep = (
                stability >= s.stability_score_thresh
                if s.stability_score_thresh > 0
                else stability > -1
            )
            masks = logits[keep] > self.sam.mask_threshold
            boxes = batched_mask_to_box(masks)
            keep_box = ~is_box_near_crop_edge(
                boxes, crop_box, [0, 0, image.shape[1], image.shape[0]]
            )
            found.append(
                Proposals(
                    masks[keep_box],
                    boxes[keep_box],
                    iou[keep][keep_box],
                    stability[keep][keep_box],
                    coral[keep][keep_box],
                )
            )
        self.predictor.reset_image()
        crop_found = _cat(found, crop_h, crop_w, self.device)
        if len(crop_found):
            keep = batched_nms(
                crop_found.boxes.float(),
                crop_found.iou_preds,
                torch.zeros(len(crop_found), device=self.device),
                iou_threshold=s.box_nms_thresh,
            )
            crop_found = crop_found.select(keep)
        return self._uncrop(crop_found, crop_box, image.shape[0], image.shape[1])

    def _uncrop(self, found: Proposals, crop_box: list[int], height: int, width: int) -> Proposals:
        x0, y0, x1, y1 = crop_box
        if (x0, y0, x1, y1) == (0, 0, width, height):
            return found
        masks = torch.zeros((len(found), height, width), dtype=torch.bool, device=self.device)
        masks[:, y0:y1, x0:x1] = found.masks
        return Proposals(
            masks,
            uncrop_boxes_xyxy(found.boxes, crop_box),
            found.iou_preds,
            found.stability,
            found.coral_prob,
        )

    def _remove_small_regions(self, proposals: Proposals) -> Proposals:
        """segment-anything's clean-up (fill small holes, drop small islands, then box NMS).

        Only a mask's box plus a one-pixel border can change, so only that window goes
        to the host and back, and the new box comes from the window: no whole-image
        copy or scan per mask. The masks are cleaned in place.
        """
        area = self.settings.min_mask_region_area
        masks = proposals.masks
        height, width = masks.shape[1:]
        boxes = proposals.boxes.cpu().numpy().astype(int)
        new_boxes = np.zeros_like(boxes)
        scores, nonempty = [], []
        for index, (bx0, by0, bx1, by1) in enumerate(boxes):
            ya, yb = max(by0 - 1, 0), min(by1 + 2, height)
            xa, xb = max(bx0 - 1, 0), min(bx1 + 2, width)
            window = masks[index, ya:yb, xa:xb].cpu().numpy()
            if not window.any():  # an empty mask (its box is all zeros): nothing to clean
                scores.append(1.0)
                nonempty.append(False)
                continue
            ring = (ya < by0, yb > by1 + 1, xa < bx0, xb > bx1 + 1)  # top, bottom, left, right
            if _small_region_reaches_ring(window, ring, area):
                # that background region may be large outside the window: decide on the
                # whole image, exactly as segment-anything does (rare: small boxes)
                ya, yb, xa, xb = 0, height, 0, width
                window = masks[index].cpu().numpy()
            cleaned, holes_changed = remove_small_regions(window, area, mode="holes")
            cleaned, islands_changed = remove_small_regions(cleaned, area, mode="islands")
            changed = holes_changed or islands_changed
            if changed:
                masks[index, ya:yb, xa:xb] = torch.from_numpy(cleaned).to(masks.device)
            scores.append(0.0 if changed else 1.0)
            rows, cols = np.flatnonzero(cleaned.any(1)), np.flatnonzero(cleaned.any(0))
            nonempty.append(len(rows) > 0)
            if len(rows):  # as batched_mask_to_box: inclusive corners, zeros when empty
                new_boxes[index] = (xa + cols[0], ya + rows[0], xa + cols[-1], ya + rows[-1])
        device = masks.device
        boxes_t = torch.as_tensor(new_boxes, dtype=proposals.boxes.dtype, device=device)
        keep = batched_nms(
            boxes_t.float(),
            torch.tensor(scores, device=device),
            torch.zeros(len(scores), device=device),
            iou_threshold=self.settings.box_nms_thresh,
        )
        keep = keep[torch.as_tensor(nonempty, device=device)[keep]]
        result = Proposals(
            masks, boxes_t, proposals.iou_preds, proposals.stability, proposals.coral_prob
        )
        return result.select(keep)
