"""CVAT auto-annotation function (Nuclio): DINOv2 + SegFormer semantics, CoralSCoP instances.

Packaged by deploy_as_zip.sh next to inferencer.py, models/, dataset/,
segment_anything/ and the weights under their standard names. CVAT sends
{"image": <base64>, "threshold": <optional float>} and gets one item per instance:
{"confidence": "0.87", "label": "Acropora", "type": "mask",
 "attributes": [{"name": "confidence", "value": "87"}, {"name": "unsure", "value": "false"}],
 "points": [x1, y1, x2, y2, ...],           # outer outline (conv_mask_to_poly: no holes)
 "mask": [0, 1, ..., xtl, ytl, xbr, ybr]}   # mask cropped to its box, row by row, then the box

CVAT's server ignores the top-level "confidence"; it keeps an attribute only when the
task's label declares one of that name, so the spec (nuclio/package.py) and the labels
JSON written beside nuclio.zip declare `confidence` (0-100) and `unsure` (checkbox).

Images are read by dataset/image_io.py, as every tool of the toolkit reads them: in
the frame CVAT shows (EXIF orientation applied), 16-bit scaled, gray/RGBA/palette as RGB.

A bundle made with `deploy_as_zip.sh --semantic-only` has no SAM weights and sets
CORAL_SEMANTIC_ONLY=1 in function.yaml: each connected region of a genus in the
semantic map is then one instance. Any other bundle without vit_b_coralscop.pth
refuses to start rather than serve masks from untrained SAM weights.

On a CPU, CORAL_CPU_PRECISION (function.yaml's env) is f32 by default; bf16 runs the
semantic model and SAM's image encoder in bf16 where the CPU has it natively (AVX512_BF16
or AMX), else the log warns and the function runs f32 (models/cpu_precision.py). GPUs run
bf16 where they support it, whatever it says.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

FUNCTION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUNCTION_DIR))

from request_body import BadRequest, image_bytes, json_body, read_image, respond  # noqa: E402

if TYPE_CHECKING:
    from inferencer import InferenceResult

SEGFORMER_WEIGHTS = FUNCTION_DIR / "best_segformer.pth"
SEGFORMER_CONFIG = FUNCTION_DIR / "best_segformer_config.py"
SAM_WEIGHTS = FUNCTION_DIR / "vit_b_coralscop.pth"
SEMANTIC_ONLY_VARIABLE = "CORAL_SEMANTIC_ONLY"


def semantic_only_requested() -> bool:
    """CORAL_SEMANTIC_ONLY from the function's env (deploy_as_zip.sh --semantic-only sets it)."""
    raw = os.environ.get(SEMANTIC_ONLY_VARIABLE, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ValueError(f"{SEMANTIC_ONLY_VARIABLE}={raw!r}: use 1 (semantic only) or 0 (with SAM)")


def _require_bundle_files(semantic_only: bool) -> None:
    for path in (SEGFORMER_CONFIG, SEGFORMER_WEIGHTS):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing from the function bundle; package the model again with "
                "deploy_as_zip.sh"
            )
    if not semantic_only and not SAM_WEIGHTS.is_file():
        # untrained SAM weights would answer with meaningless masks: refuse to start instead
        raise FileNotFoundError(
            f"{SAM_WEIGHTS} is missing: this bundle has no CoralSCoP (SAM) weights. Package "
            "the model again with deploy_as_zip.sh MODEL_NAME SEGFORMER_WEIGHTS "
            "SEGFORMER_CONFIG SAM_WEIGHTS, or with deploy_as_zip.sh --semantic-only (sets "
            f"{SEMANTIC_ONLY_VARIABLE}=1 in function.yaml) to serve each genus region of the "
            "semantic map as an instance, without SAM"
        )


class SemanticRegions:
    """The semantic model alone: the fusion rule with no SAM proposal, so each connected
    region of a genus becomes one instance (models/fusion.py, step 4)."""

    def __init__(self, config: str, weights: str, device: str, bf16: bool | None = None) -> None:
        from inferencer import SemanticSegmenter
        from models.fusion import FusionSettings

        self.semantic = SemanticSegmenter(config, weights, device, bf16)
        self.classes = self.semantic.classes
        self.fusion = FusionSettings()

    def __call__(self, image_rgb: np.ndarray) -> InferenceResult:
        import torch

        from inferencer import InferenceResult
        from models.fusion import semantic_instances

        probs = self.semantic.predict_probs(image_rgb)
        instances = semantic_instances(probs, self.fusion)
        return InferenceResult(instances, probs.argmax(0).to(torch.uint8).cpu().numpy())


def generator_settings():
    """CoralSCoP's settings, as inference_with_coralscop.py's defaults, with what function.yaml's
    env changes: CORAL_SAM_POINTS_PER_SIDE (--points-per-side), CORAL_SAM_CROP_N_LAYERS
    (--crop-n-layers), CORAL_SAM_PRED_IOU_THRESH (--score-threshold),
    CORAL_SAM_STABILITY_THRESH (--stability-threshold)."""
    from models.mask_generator import GeneratorSettings

    defaults = GeneratorSettings()
    env = os.environ.get
    try:
        return GeneratorSettings(
            points_per_side=int(env("CORAL_SAM_POINTS_PER_SIDE", defaults.points_per_side)),
            crop_n_layers=int(env("CORAL_SAM_CROP_N_LAYERS", defaults.crop_n_layers)),
            pred_iou_thresh=float(env("CORAL_SAM_PRED_IOU_THRESH", defaults.pred_iou_thresh)),
            stability_score_thresh=float(
                env("CORAL_SAM_STABILITY_THRESH", defaults.stability_score_thresh)
            ),
        )
    except ValueError as exc:
        raise ValueError(f"function.yaml env CORAL_SAM_*: {exc}") from None


def init_context(context) -> None:

    semantic_only = semantic_only_requested()
    try:
        _require_bundle_files(semantic_only)
    except FileNotFoundError as exc:
        context.logger.error(f"The function cannot start: {exc}")
        raise
    from models.cpu_precision import function_device, requested_precision

    try:
        requested_precision()  # a wrong value stops the function on any device, GPUs too
    except ValueError as exc:
        context.logger.error(f"The function cannot start: {exc}")
        raise
    device, bf16 = function_device(context.logger)
    if semantic_only:
        context.logger.info(
            f"Loading the semantic model on {device}; {SEMANTIC_ONLY_VARIABLE}=1: no SAM, "
            "each genus region is an instance"
        )
        model = SemanticRegions(str(SEGFORMER_CONFIG), str(SEGFORMER_WEIGHTS), device, bf16)
    else:
        from inferencer import TwoStageInferencer

        generator = generator_settings()
        context.logger.info(
            f"Loading the two-stage model on {device}: SAM {generator.points_per_side}x"
            f"{generator.points_per_side} points, {generator.crop_n_layers} crop layer(s), "
            f"predicted-IoU threshold {generator.pred_iou_thresh}"
        )
        model = TwoStageInferencer(str(SEGFORMER_CONFIG), str(SEGFORMER_WEIGHTS),
                                   str(SAM_WEIGHTS), device, generator=generator,
                                   cpu_precision="bf16" if bf16 else "f32")  # fmt: skip
    context.user_data.model = model
    runtime = getattr(getattr(model, "instances", None), "encoder_runtime", None)
    encoder = f"; SAM image encoder on {runtime}" if runtime else ""
    context.logger.info(f"Ready: {len(model.classes) - 1} genera{encoder}")


def decode_image(body) -> tuple[np.ndarray, float]:
    body = json_body(body)
    data = image_bytes(body)
    try:
        threshold = float(body.get("threshold", 0.0))
    except (TypeError, ValueError):
        raise BadRequest('"threshold" must be a number') from None
    return read_image(data), threshold


def outline(mask: np.ndarray) -> list[int]:
    """The largest external contour, flattened: x1, y1, x2, y2, ..."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return []
    return max(contours, key=cv2.contourArea).reshape(-1).tolist()


def attributes(instance) -> list[dict]:
    """The values of the attributes the label spec declares (nuclio/package.py ATTRIBUTES):
    confidence in whole percent (a number attribute 0-100, step 1), unsure as a checkbox."""
    return [
        {"name": "confidence", "value": str(round(100 * instance.score))},
        {"name": "unsure", "value": "true" if instance.unsure else "false"},
    ]


def to_cvat(instance, classes) -> dict:
    xtl, ytl, xbr, ybr = instance.box
    cropped = instance.mask[ytl : ybr + 1, xtl : xbr + 1].astype(np.uint8)
    return {
        "confidence": f"{instance.score:.4f}",
        "label": classes[instance.label],
        "attributes": attributes(instance),
        "points": outline(instance.mask),
        "mask": [*cropped.reshape(-1).tolist(), xtl, ytl, xbr, ybr],
        "type": "mask",
    }


def _timing(result, instances: int, started: float) -> str:
    stages = getattr(result, "seconds", None) or {}
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in stages.items() if k != "total")
    return f"{instances} instances in {time.perf_counter() - started:.1f} s" + (
        f" ({parts})" if parts else ""
    )


def handler(context, event):
    try:
        started = time.perf_counter()
        image, threshold = decode_image(event.body)
        model = context.user_data.model
        result = model(image)
        instances = [i for i in result.instances if i.score >= threshold]
        answer = [to_cvat(i, model.classes) for i in instances]
        # CVAT waits CVAT_NUCLIO_DEFAULT_TIMEOUT (120 s by default): the log says how close
        context.logger.info(
            f"{image.shape[1]}x{image.shape[0]}: {_timing(result, len(answer), started)}"
        )
        return respond(context, answer, 200)
    except BadRequest as exc:
        context.logger.warn(f"Bad request: {exc}")
        return respond(context, {"error": str(exc)}, 400)
    except Exception as exc:  # answered, logged, and the function keeps serving
        context.logger.error(f"Inference failed: {exc}\n{traceback.format_exc()}")
        return respond(context, {"error": f"inference failed: {type(exc).__name__}: {exc}"}, 500)
