"""CVAT interactor (Nuclio): clicks on a frame -> one coral colony mask from CoralSCoP.

Packaged by deploy_as_zip.sh as nuclio-interactor/ beside the detector, with interactor/,
models/, dataset/, segment_anything/ and vit_b_coralscop.pth. The contract is CVAT's since
2.60 (read in cvat-ai/cvat v2.73.0: cvat/apps/lambda_manager/views.py, cvat-core's
lambda-manager.ts, cvat-ui's tools-control.tsx):

request  {"image": <base64 frame file>, "pos_points": [[x, y], ...], "neg_points": [...],
          "obj_bbox": [] | null | [[x1, y1], [x2, y2]]}   (frame pixels, possibly fractional)
answer   {"shapes": [{"type": "mask", "points": [RLE..., left, top, right, bottom],
          "attributes": []}]}: one mask object, the colony's own box (holes kept in CVAT's
          mask mode); {"shapes": []} when nothing is found ("No shapes to display").

The first click on a frame runs SAM's image encoder and keeps the embedding in this
worker (interactor/cache.py: keyed by the frame's bytes, least recently used out past
CORAL_INTERACTOR_CACHE_MB); every later click on it decodes its prompt alone, without
even decoding the image. A bad request answers 400 with a JSON error (CVAT shows its
status line, "400 Client Error: Bad Request", and drops the body: the message is in this
function's log); a failure answers 500. Without CoralSCoP weights the function refuses
to start, as the detector does.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

FUNCTION_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(FUNCTION_DIR))

from request_body import BadRequest, check_size, image_bytes, json_body, read_image, respond  # noqa: E402

from interactor.answer import NOTHING_FOUND, answer  # noqa: E402  (the bundle's own copy)
from interactor.cache import EmbeddingCache, cache_budget_bytes  # noqa: E402
from interactor.clicks import (  # noqa: E402
    CHOICES,
    BadPrompt,
    ClickSegmenter,
    SamClickPredictor,
    parse_prompt,
)

SAM_WEIGHTS = FUNCTION_DIR / "vit_b_coralscop.pth"
CHOOSE_VARIABLE = "CORAL_INTERACTOR_CHOOSE"


def choice() -> str:
    """CORAL_INTERACTOR_CHOOSE: iou (SAM's predicted IoU) or coral (times the coral head)."""
    value = os.environ.get(CHOOSE_VARIABLE, "iou").strip().lower() or "iou"
    if value not in CHOICES:
        raise ValueError(f"{CHOOSE_VARIABLE}={value!r}: use one of {', '.join(CHOICES)}")
    return value


def init_context(context) -> None:

    if not SAM_WEIGHTS.is_file():
        # untrained SAM weights would answer with meaningless masks: refuse to start instead
        message = (
            f"{SAM_WEIGHTS} is missing: the interactor is CoralSCoP and needs its weights. "
            "Package the model again with deploy_as_zip.sh MODEL_NAME SEGFORMER_WEIGHTS "
            "SEGFORMER_CONFIG SAM_WEIGHTS"
        )
        context.logger.error(f"The function cannot start: {message}")
        raise FileNotFoundError(message)
    from models.cpu_precision import function_device, requested_precision

    try:
        requested_precision()  # a wrong value stops the function on any device
        budget, chosen = cache_budget_bytes(), choice()
    except ValueError as exc:
        context.logger.error(f"The function cannot start: {exc}")
        raise
    device, bf16 = function_device(context.logger)
    predictor = SamClickPredictor.load(str(SAM_WEIGHTS), device, bf16=bf16)
    context.user_data.segmenter = ClickSegmenter(predictor, EmbeddingCache(budget), chosen)
    context.logger.info(
        f"Ready on {device}: CoralSCoP clicks, embedding cache {budget / 2**20:.0f} MiB, "
        f"single-click choice by {chosen}"
    )


def handler(context, event):
    try:
        started = time.perf_counter()
        body = json_body(event.body)
        data = image_bytes(body)
        check_size(data)
        segmenter = context.user_data.segmenter
        prompt = parse_prompt(body)
        result = segmenter.segment(data, lambda: read_image(data), prompt)
        reply = NOTHING_FOUND if result.mask is None else answer(result.mask, result.score)
        context.logger.info(
            f"{len(prompt.positives)}+/{len(prompt.negatives)}- click(s)"
            f"{' and a box' if prompt.box is not None else ''}: "
            f"{'no colony' if result.mask is None else f'{int(result.mask.sum())} px'} in "
            f"{time.perf_counter() - started:.3f} s"
            f"{' (image encoder ran)' if result.encoder_ran else ' (cached embedding)'}"
        )
        return respond(context, reply, 200)
    except (BadRequest, BadPrompt) as exc:
        context.logger.warn(f"Bad request: {exc}")
        return respond(context, {"error": str(exc)}, 400)
    except Exception as exc:  # answered, logged, and the function keeps serving
        context.logger.error(f"Interaction failed: {exc}\n{traceback.format_exc()}")
        return respond(context, {"error": f"interaction failed: {type(exc).__name__}: {exc}"}, 500)
