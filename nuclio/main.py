"""CVAT auto-annotation function (Nuclio): DINOv2 + SegFormer semantics, CoralSCoP instances.

Packaged by deploy_as_zip.sh next to inferencer.py, models/, dataset/,
segment_anything/ and the weights under their standard names. CVAT sends
{"image": <base64>, "threshold": <optional float>} and gets one item per instance:
{"confidence": "0.87", "label": "Acropora", "type": "mask",
 "points": [x1, y1, x2, y2, ...],           # outline polygon (for conv_mask_to_poly)
 "mask": [0, 1, ..., xtl, ytl, xbr, ybr]}   # mask cropped to its box, row by row, then the box
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import traceback
from pathlib import Path

import cv2
import numpy as np

FUNCTION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUNCTION_DIR))

SEGFORMER_WEIGHTS = FUNCTION_DIR / "best_segformer.pth"
SEGFORMER_CONFIG = FUNCTION_DIR / "best_segformer_config.py"
SAM_WEIGHTS = FUNCTION_DIR / "vit_b_coralscop.pth"
# 1920x1920 quadrats are 3.7 MP; anything far above is refused rather than risking the GPU.
MAX_PIXELS = int(os.environ.get("CORAL_MAX_PIXELS", 40_000_000))


class BadRequest(ValueError):
    """The request cannot be served; answered with status 400."""


def init_context(context) -> None:
    import torch

    from inferencer import TwoStageInferencer
    from models.mask_generator import GeneratorSettings

    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    # CPU deployments may lighten CoralSCoP's prompt grid through the environment.
    generator = GeneratorSettings(
        points_per_side=int(os.environ.get("CORAL_SAM_POINTS_PER_SIDE", 32)),
        crop_n_layers=int(os.environ.get("CORAL_SAM_CROP_N_LAYERS", 1)),
    )
    sam = str(SAM_WEIGHTS) if SAM_WEIGHTS.is_file() else None
    context.logger.info(f"Loading the two-stage model on {device}")
    model = TwoStageInferencer(str(SEGFORMER_CONFIG), str(SEGFORMER_WEIGHTS), sam, device,
                               generator=generator)  # fmt: skip
    context.user_data.model = model
    context.logger.info(f"Ready: {len(model.classes) - 1} genera")


def decode_image(body) -> tuple[np.ndarray, float]:
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict) or "image" not in body:
        raise BadRequest('the body must be a JSON object with "image" (base64 encoded)')
    try:
        data = base64.b64decode(body["image"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(f'"image" is not valid base64: {exc}') from None
    header = np.frombuffer(data, np.uint8)
    image = cv2.imdecode(header, cv2.IMREAD_COLOR) if len(header) else None
    if image is None:
        raise BadRequest('"image" does not decode to an image (JPEG, PNG, TIFF, ...)')
    if image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise BadRequest(
            f"the image has {image.shape[0] * image.shape[1]} pixels; the limit is {MAX_PIXELS}"
        )
    try:
        threshold = float(body.get("threshold", 0.0))
    except (TypeError, ValueError):
        raise BadRequest('"threshold" must be a number') from None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), threshold


def outline(mask: np.ndarray) -> list[int]:
    """The largest external contour, flattened: x1, y1, x2, y2, ..."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    if not contours:
        return []
    return max(contours, key=cv2.contourArea).reshape(-1).tolist()


def to_cvat(instance, classes) -> dict:
    xtl, ytl, xbr, ybr = instance.box
    cropped = instance.mask[ytl : ybr + 1, xtl : xbr + 1].astype(np.uint8)
    return {
        "confidence": f"{instance.score:.4f}",
        "label": classes[instance.label],
        "points": outline(instance.mask),
        "mask": [*cropped.reshape(-1).tolist(), xtl, ytl, xbr, ybr],
        "type": "mask",
    }


def _respond(context, payload, status: int):
    return context.Response(body=json.dumps(payload), headers={}, content_type="application/json",
                            status_code=status)  # fmt: skip


def handler(context, event):
    try:
        image, threshold = decode_image(event.body)
    except BadRequest as exc:
        context.logger.warn(f"Bad request: {exc}")
        return _respond(context, {"error": str(exc)}, 400)
    try:
        model = context.user_data.model
        result = model(image)
        instances = [i for i in result.instances if i.score >= threshold]
        return _respond(context, [to_cvat(i, model.classes) for i in instances], 200)
    except Exception as exc:  # answered, logged, and the function keeps serving
        context.logger.error(f"Inference failed: {exc}\n{traceback.format_exc()}")
        return _respond(context, {"error": f"inference failed: {type(exc).__name__}: {exc}"}, 500)
