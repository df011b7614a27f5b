"""What both functions read from CVAT's request: a JSON object whose "image" is a base64
image file, checked and decoded as every tool of the toolkit reads images.

Shipped in both bundles (nuclio/ and nuclio-interactor/, nuclio/package.py). Every problem
is a BadRequest, answered with status 400 and a JSON error that says what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from dataset.image_io import ImageReadError, read_rgb

# 1920x1920 quadrats are 3.7 MP; anything far above is refused rather than risking the GPU.
MAX_PIXELS = int(os.environ.get("CORAL_MAX_PIXELS", 40_000_000))


class BadRequest(ValueError):
    """The request cannot be served; answered with status 400."""


def json_body(body) -> dict:
    """The request's JSON object (Nuclio gives bytes, a str, or an already parsed dict)."""
    if body is None or (isinstance(body, bytes | str) and not body.strip()):
        raise BadRequest('the body is empty; send a JSON object {"image": <base64 image>}')
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict) or "image" not in body:
        raise BadRequest('the body must be a JSON object with "image" (base64 encoded)')
    return body


def image_bytes(body: dict) -> bytes:
    """The image file's bytes, from the body's base64 "image"."""
    try:
        return base64.b64decode(body["image"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise BadRequest(f'"image" is not valid base64: {exc}') from None


def check_size(data: bytes) -> None:
    """Refuse an oversized image from its size alone, before anything is decoded.

    image_io's header check also reads the EXIF orientation, and for a PNG Pillow decodes
    every pixel looking for an eXIf chunk after them (PngImageFile.getexif calls load()):
    a 50 kB PNG of 20000 x 20000 pixels takes 400 MB there. The pixel count does not
    depend on the orientation, so it is checked first from the bare size."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        # not a header Pillow reads: read_rgb refuses it without decoding a pixel (OpenCV
        # would decode a Radiance HDR, PAM or PFM whole before its size were known)
        return
    if width * height > MAX_PIXELS:
        raise BadRequest(
            f'"image" has {width * height} pixels ({width} x {height}); the limit is '
            f"{MAX_PIXELS} pixels (CORAL_MAX_PIXELS in function.yaml): send a smaller image, "
            "or split it into tiles"
        )


def read_image(data: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB in the frame CVAT shows; BadRequest says what is wrong otherwise."""
    check_size(data)
    try:
        return read_rgb(data, max_pixels=MAX_PIXELS, name='"image"')
    except ImageReadError as exc:
        raise BadRequest(str(exc)) from None


def respond(context, payload, status: int):
    """Nuclio's response: the payload as JSON, with its status."""
    return context.Response(body=json.dumps(payload), headers={}, content_type="application/json",
                            status_code=status)  # fmt: skip
