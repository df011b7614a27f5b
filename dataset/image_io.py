"""Reading and writing survey images the same way in every tool.

prepare_data, inference_with_coralscop and the CVAT function all read images with
`read_rgb`, so an image means the same pixels everywhere:

- **Orientation**: the EXIF Orientation tag (JPEG, PNG eXIf, TIFF) is applied, as
  CVAT, FiftyOne's App and browsers show the image; annotations drawn there are in
  that frame. The tag is read once, by Pillow, and applied here with NumPy, so
  every format and every reader agrees (OpenCV applies it for some formats only).
- **Bit depth**: 16-bit images (12- or 14-bit camera data in 16-bit TIFF/PNG) are
  scaled by the bits they use, rounded up to 10, 12, 14 or 16 (a 12-bit image:
  x * 255 / 4095), not by 1/256, which leaves 12-bit data nearly black. Float
  images are refused: their range is unknown.
- **Colour**: grayscale becomes three equal channels, RGBA and palette images
  drop transparency; the result is always (H, W, 3) uint8 RGB.
- **Damage**: a file that does not decode, or a JPEG that ends before its last
  scan (OpenCV decodes the present part and only warns), is an `ImageReadError`
  that names the file.
- **Size**: the size comes from the header before anything is decoded; an image
  over `max_pixels` is an `ImageTooLargeError` without allocating its pixels.
  This limit replaces Pillow's decompression-bomb check, which would stop at
  ~179 MP with a traceback. A file whose header Pillow cannot read is refused
  (`ImageReadError`, naming the format where it is one OpenCV alone reads:
  Radiance HDR, PAM, PFM, OpenEXR) and never decoded: OpenCV would decode it
  whole before its size were known (a 1 MB Radiance file is a 16 MP float image).

Writes go through `write_image`: encoded in memory, checked, written under a
temporary name and renamed, so a failed write raises instead of leaving a
missing or half-written file behind (cv2.imwrite only returns False).
"""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

# The toolkit checks sizes itself (max_pixels below), before decoding anything.
Image.MAX_IMAGE_PIXELS = None

# Pillow's own bomb threshold: larger images are orthomosaics, read by windows.
DEFAULT_MAX_PIXELS = 2 * 89_478_485
ORIENTATION_TAG = 0x0112
JPEG_FORMATS = ("JPEG", "MPO")  # Pillow names camera JPEGs with preview images MPO
DEEP_BITS = (10, 12, 14, 16)


class ImageReadError(ValueError):
    """An image that cannot be read; the message names the file and what to do."""


class ImageTooLargeError(ImageReadError):
    """An image over the pixel limit, refused before decoding."""


# Formats OpenCV decodes and Pillow's header reader does not know, by their first bytes:
# their size is unknown until OpenCV has decoded every pixel, so they are refused, by name.
UNSIZED_FORMATS = (
    (b"#?RADIANCE", "a Radiance HDR image"),
    (b"#?RGBE", "a Radiance HDR image"),
    (b"P7\n", "a PAM image"),
    (b"PF\n", "a PFM (float) image"),
    (b"Pf\n", "a PFM (float) image"),
    (b"v/1\x01", "an OpenEXR image"),
)


class ImageWriteError(OSError):
    """An image that could not be written; the message names the file."""


@dataclass(frozen=True)
class ImageHeader:
    width: int  # as displayed: after the orientation is applied
    height: int
    orientation: int  # EXIF Orientation, 1 (none) to 8
    format: str  # Pillow's name: JPEG, MPO (camera JPEG with previews), PNG, TIFF, WEBP, ...
    mode: str = "unknown"  # Pillow's pixel mode: RGB, L, RGBA, P, I;16, CMYK, ...

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _load_bytes(source: str | Path | bytes, name: str) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except OSError as exc:
        raise ImageReadError(f"{name}: cannot read the file ({exc.strerror or exc})") from None


def _header(data: bytes | BinaryIO, name: str) -> ImageHeader | None:
    """The header as Pillow reads it (no pixel is decoded); None if Pillow does not know it."""
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            width, height = image.size
            kind = image.format or "unknown"
            mode = image.mode
            # Pillow's PNG reader decodes every pixel looking for an eXIf chunk after the
            # image data: read the tag only where the header holds one (the spec's place)
            has_exif = kind != "PNG" or "exif" in image.info
            orientation = int(image.getexif().get(ORIENTATION_TAG, 1) or 1) if has_exif else 1
    except UnidentifiedImageError:
        return None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{name}: not a readable image header ({exc})") from None
    if orientation not in range(1, 9):
        orientation = 1  # an invalid tag is ignored, as viewers ignore it
    if orientation >= 5:  # the four orientations that turn the image by 90 degrees
        width, height = height, width
    return ImageHeader(width, height, orientation, kind, mode)


def read_header(source: str | Path | bytes, name: str | None = None) -> ImageHeader:
    """Size (as displayed), orientation and format, from the header alone."""
    name = name or str(source if not isinstance(source, bytes) else "image")
    if isinstance(source, str | Path):
        # from the file, Pillow reads the header's bytes only: sizing a multi-GB mosaic
        # (or every image of an archive, to share it among processes) loads no pixel data
        try:
            with open(source, "rb") as handle:
                header = _header(handle, name)
        except OSError:
            header = None  # _load_bytes below names what is wrong with the file
        if header is not None:
            return header
    data = _load_bytes(source, name)
    header = _header(data, name)
    if header is None:  # its size is known only once it is decoded whole: refused, undecoded
        raise ImageReadError(_unsized(name, data))
    return header


def _undecodable(name: str, data: bytes) -> str:
    if not data:
        return f"{name}: the file is empty"
    return (
        f"{name}: does not decode as an image (truncated, corrupt, or a format OpenCV and "
        "Pillow cannot read); re-export it as JPEG, PNG or TIFF"
    )


def _unsized(name: str, data: bytes) -> str:
    """Why a file whose header Pillow cannot read is refused: its size is unknown until it
    is decoded, and decoding it first is what the pixel limit must prevent."""
    kind = next((what for magic, what in UNSIZED_FORMATS if data.startswith(magic)), None)
    if kind is None:
        return _undecodable(name, data)
    return (
        f"{name}: {kind}, a format whose size cannot be checked before every pixel is "
        "decoded, so it is not read; send it as JPEG, PNG or 8/16-bit TIFF"
    )


def _check_complete_jpeg(data: bytes, name: str) -> None:
    """OpenCV decodes a truncated JPEG's first part and only warns: let Pillow decode it
    at 1/8 scale (entropy decoding of every scan, little else) to find a missing end."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
            image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(
            f"{name}: the JPEG is damaged or incomplete ({exc}); copy it again from the "
            "camera or card"
        ) from None


def _decode_with_opencv(data: bytes) -> np.ndarray | None:
    buffer = np.frombuffer(data, np.uint8)
    if not len(buffer):
        return None
    # as stored: every channel and bit, no orientation (applied from the header below)
    return cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)


def _decode_with_pillow(data: bytes) -> np.ndarray | None:
    """For formats OpenCV lacks (e.g. GIF): RGB, no orientation applied."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))[..., ::-1]  # BGR, as OpenCV returns
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError):
        return None


def to_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """8-bit pixels from 8- or 16-bit ones: 16-bit data scaled by the bits it uses."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        peak = int(image.max()) if image.size else 0
        bits = next((b for b in DEEP_BITS if peak < 2**b), 16)
        scaled = image.astype(np.float32) * (255.0 / (2**bits - 1))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    raise ImageReadError(
        f"{name}: {image.dtype} pixels are not supported (their range is unknown); "
        "export the image as 8- or 16-bit"
    )


def _to_bgr3(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)  # transparency is dropped
    if channels == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(image[..., 0]), cv2.COLOR_GRAY2BGR)
    return image


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """The displayed image of a stored one with this EXIF Orientation (as Pillow's
    ImageOps.exif_transpose does it)."""
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    elif orientation == 5:
        image = image.swapaxes(0, 1)
    elif orientation == 6:
        image = image.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        image = image[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        image = image.swapaxes(0, 1)[::-1]
    return np.ascontiguousarray(image)


@dataclass
class DecodedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, as displayed
    header: ImageHeader
    stored_uint8_bgr: bool  # the file holds 8-bit, 3-channel pixels (no conversion needed)


def decode(
    source: str | Path | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None
) -> DecodedImage:
    """Read, check and convert one image (see the module's rules)."""
    name = name or str(source if not isinstance(source, bytes) else "image")
    data = _load_bytes(source, name)
    header = _header(data, name)
    if header is None:
        # OpenCV would read some of these (Radiance HDR, PAM, PFM), but only by decoding
        # them whole, before the limit below could apply: refused undecoded
        raise ImageReadError(_unsized(name, data))
    if max_pixels is not None and header.pixels > max_pixels:
        raise ImageTooLargeError(
            f"{name}: {header.width} x {header.height} pixels "
            f"({header.pixels / 1e6:.0f} MP) is over the limit of {max_pixels / 1e6:.0f} MP; "
            "split it into tiles (or raise the limit if the machine has the memory)"
        )
    if header.format in JPEG_FORMATS:
        _check_complete_jpeg(data, name)
    stored = _decode_with_opencv(data)
    if stored is None:
        stored = _decode_with_pillow(data)
    if stored is None:
        raise ImageReadError(_undecodable(name, data))
    plain = stored.dtype == np.uint8 and stored.ndim == 3 and stored.shape[2] == 3
    bgr = _to_bgr3(to_uint8(stored, name))
    rgb = apply_orientation(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), header.orientation)
    return DecodedImage(rgb, header, plain)


def is_plain_jpeg(header: ImageHeader) -> bool:
    """An upright 8-bit RGB JPEG: the same pixels to every reader, usable as it is once
    `check_complete_jpeg` has passed (no full decode needed)."""
    return header.format in JPEG_FORMATS and header.mode == "RGB" and header.orientation == 1


def check_complete_jpeg(source: str | Path | bytes, name: str | None = None) -> None:
    """ImageReadError if the JPEG ends before its last scan (checked at 1/8 scale: entropy
    decoding only, ~3x cheaper than a full decode)."""
    name = name or str(source if not isinstance(source, bytes) else "image")
    _check_complete_jpeg(_load_bytes(source, name), name)


def read_rgb(
    source: str | Path | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None
) -> np.ndarray:
    """(H, W, 3) uint8 RGB as displayed; ImageReadError names the file otherwise."""
    return decode(source, max_pixels, name).rgb


def write_image(path: str | Path, image_bgr: np.ndarray, params: list[int] | None = None) -> None:
    """Encode by the path's suffix, write to a temporary name and rename; raises on failure."""
    path = Path(path)
    try:
        ok, encoded = cv2.imencode(path.suffix, image_bgr, params or [])
    except cv2.error as exc:
        raise ImageWriteError(f"{path}: cannot encode the image ({exc})") from None
    if not ok:
        raise ImageWriteError(f"{path}: cannot encode the image as {path.suffix!r}")
    write_bytes_atomic(path, encoded.tobytes())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write under a temporary name in the same folder, then rename; raises ImageWriteError."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:  # write and close raise on a full disk
            handle.write(data)
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ImageWriteError(f"{path}: cannot write ({exc.strerror or exc})") from None


class StreamedTextFile:
    """A text file written piece by piece under a temporary name in its folder, renamed
    into place by commit(); abort() (or any failed write, which raises ImageWriteError
    naming the file) leaves nothing behind."""

    def __init__(self, path: str | Path, first: str = "") -> None:
        self.path = Path(path)
        self._temporary = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            self._file = open(self._temporary, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ImageWriteError(f"{self.path}: cannot write ({exc.strerror or exc})") from None
        self.write(first)

    def write(self, text: str) -> None:
        try:
            self._file.write(text)
        except OSError as exc:
            self.abort()
            raise ImageWriteError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def commit(self, last: str = "") -> None:
        self.write(last)
        try:
            self._file.close()  # a full disk can show only here
            self._temporary.replace(self.path)
        except OSError as exc:
            self.abort()
            raise ImageWriteError(f"{self.path}: cannot write ({exc.strerror or exc})") from None

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        self._temporary.unlink(missing_ok=True)
