"""Survey image files read the same way in every tool: orientation, depth, colour, damage, size."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dataset.image_io import (
    ImageReadError,
    ImageTooLargeError,
    ImageWriteError,
    decode,
    read_header,
    read_rgb,
    to_uint8,
    write_image,
)


def _pattern(height: int = 24, width: int = 40) -> np.ndarray:
    """An asymmetric RGB picture: any flip or turn changes it."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[:6, :10] = (250, 20, 20)  # a red block top left
    image[-5:, -3:] = (20, 20, 250)
    return image


def _jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_the_displayed_frame_as_pillow_does(orientation):
    data = _jpeg_with_orientation(_pattern(), orientation)
    with Image.open(io.BytesIO(data)) as image:
        displayed = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    got = read_rgb(data, name="camera.jpg")
    assert got.shape == displayed.shape
    # same decoded pixels up to the two decoders' rounding
    assert np.abs(got.astype(int) - displayed.astype(int)).max() <= 2
    header = read_header(data, name="camera.jpg")
    assert (header.height, header.width) == displayed.shape[:2]
    assert header.orientation == orientation
    if orientation in (6, 8):
        assert got.shape[:2] == (40, 24)  # portrait: turned by 90 degrees


def test_sixteen_bit_data_is_scaled_by_the_bits_it_uses(tmp_path):
    twelve_bit = np.zeros((8, 8, 3), np.uint16)
    twelve_bit[0, 0] = (4095, 2048, 0)
    path = tmp_path / "raw12.tif"
    assert cv2.imwrite(str(path), twelve_bit)
    rgb = read_rgb(path)
    # BGR on disk: channel 0 holds 4095 -> blue = 255, green 2048 * 255 / 4095 = 127.5 -> 128
    assert rgb[0, 0].tolist() == [0, 128, 255]
    assert rgb.dtype == np.uint8
    full = np.array([[0, 65535, 30000]], np.uint16)
    assert to_uint8(full).tolist() == [[0, 255, round(30000 * 255 / 65535)]]
    with pytest.raises(ImageReadError, match="float32"):
        to_uint8(np.zeros((2, 2), np.float32), "dem.tif")


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_grayscale_rgba_and_palette_pngs_become_rgb(tmp_path, mode):
    rgb = _pattern()
    image = Image.fromarray(rgb)
    converted = image.convert(mode)
    path = tmp_path / f"quadrat_{mode}.png"
    converted.save(path)
    expected = np.asarray(converted.convert("RGB"))
    got = read_rgb(path)
    assert got.shape == rgb.shape and got.dtype == np.uint8
    assert np.array_equal(got, expected)


def test_truncated_jpeg_is_named_not_half_decoded(tmp_path):
    data = _jpeg_with_orientation(
        np.random.default_rng(1).integers(0, 255, (300, 400, 3), np.uint8), 1
    )
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    # OpenCV alone would return a full-size image with a grey lower part
    assert cv2.imread(str(path)) is not None
    with pytest.raises(ImageReadError, match=r"cut\.jpg: the JPEG is damaged or incomplete"):
        read_rgb(path)


def test_empty_missing_and_foreign_files_are_named(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty.png: the file is empty"):
        read_rgb(empty)
    with pytest.raises(ImageReadError, match="gone.jpg: no such file"):
        read_rgb(tmp_path / "gone.jpg")
    notes = tmp_path / "notes.jpg"
    notes.write_text("field notes, not a picture")
    with pytest.raises(ImageReadError, match="notes.jpg: does not decode"):
        read_rgb(notes)


def test_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    path = tmp_path / "mosaic.png"
    Image.new("1", (20000, 20000)).save(path)  # 400 MP in a few kB: over Pillow's bomb limit
    assert path.stat().st_size < 200_000
    assert read_header(path).pixels == 400_000_000
    with pytest.raises(ImageTooLargeError, match=r"mosaic.png: 20000 x 20000 pixels \(400 MP\)"):
        read_rgb(path)
    with pytest.raises(ImageTooLargeError):
        read_rgb(path, max_pixels=1_000_000)


@pytest.mark.parametrize(
    ("suffix", "dtype", "kind"),
    [(".hdr", np.float32, "a Radiance HDR image"), (".pam", np.uint8, "a PAM image")],
)
def test_formats_the_header_check_cannot_size_are_refused_undecoded(
    tmp_path, monkeypatch, suffix, dtype, kind
):
    """Issue 23 item 4: Pillow reads no Radiance HDR or PAM header, and OpenCV decoded such
    a file whole before the pixel limit applied (in a batch, a file named .jpg will do)."""
    written = tmp_path / f"written{suffix}"
    assert cv2.imwrite(str(written), np.ones((30, 40, 3), dtype))
    path = tmp_path / "IMG_0007.jpg"  # what inference and prepare_data pick up in a folder
    path.write_bytes(written.read_bytes())

    def decoded(*args, **kwargs):
        raise AssertionError("OpenCV decoded an image the header check could not size")

    monkeypatch.setattr(cv2, "imdecode", decoded)
    monkeypatch.setattr(cv2, "imread", decoded)
    expected = (
        f"{path}: {kind}, a format whose size cannot be checked before every pixel is "
        "decoded, so it is not read; send it as JPEG, PNG or 8/16-bit TIFF"
    )
    for read in (read_rgb, read_header, lambda p: read_rgb(p.read_bytes(), name=str(p))):
        with pytest.raises(ImageReadError) as refused:
            read(path)
        assert str(refused.value) == expected
    from dataset.sharding import pixel_count

    assert pixel_count(path) == 0  # weighed without decoding; it fails when processed


def test_gif_and_webp_read_and_plain_files_are_flagged(tmp_path):
    rgb = _pattern()
    Image.fromarray(rgb).save(tmp_path / "a.webp", lossless=True)
    assert np.array_equal(read_rgb(tmp_path / "a.webp"), rgb)
    Image.fromarray(rgb).save(tmp_path / "a.gif")
    assert read_rgb(tmp_path / "a.gif").shape == rgb.shape
    plain = tmp_path / "plain.png"
    Image.fromarray(rgb).save(plain)
    assert decode(plain).stored_uint8_bgr
    Image.fromarray(rgb).convert("L").save(tmp_path / "gray.png")
    assert not decode(tmp_path / "gray.png").stored_uint8_bgr


def test_non_ascii_names_read_and_write(tmp_path):
    path = tmp_path / "récif_Moorea_été_珊瑚.png"
    write_image(path, cv2.cvtColor(_pattern(), cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_rgb(path), _pattern())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left


def test_failed_writes_raise_and_leave_nothing(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ImageWriteError, match="missing/x.png: cannot write"):
        write_image(tmp_path / "missing" / "x.png", image)
    with pytest.raises(ImageWriteError, match="cannot encode"):
        write_image(tmp_path / "x.unknownformat", image)
    assert list(tmp_path.iterdir()) == []


def test_reading_a_png_header_decodes_no_pixel(tmp_path):
    import tracemalloc

    path = tmp_path / "mosaic.png"
    Image.new("L", (6000, 6000)).save(path)  # 36 MB of pixels in a few kB
    tracemalloc.start()
    header = read_header(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert (header.width, header.height) == (6000, 6000)
    assert peak < 5_000_000


def test_png_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    Image.fromarray(_pattern()).save(path, exif=exif)
    assert read_header(path).orientation == 6
    assert read_rgb(path).shape[:2] == (40, 24)


def test_plain_jpegs_are_told_from_those_that_need_decoding(tmp_path):
    from dataset.image_io import check_complete_jpeg, is_plain_jpeg

    upright = _jpeg_with_orientation(_pattern(), 1)
    assert is_plain_jpeg(read_header(upright))
    assert not is_plain_jpeg(read_header(_jpeg_with_orientation(_pattern(), 6)))
    gray = io.BytesIO()
    Image.fromarray(_pattern()).convert("L").save(gray, "JPEG")
    assert not is_plain_jpeg(read_header(gray.getvalue()))
    png = io.BytesIO()
    Image.fromarray(_pattern()).save(png, "PNG")
    assert not is_plain_jpeg(read_header(png.getvalue()))
    check_complete_jpeg(upright, name="ok.jpg")
    with pytest.raises(ImageReadError, match="cut.jpg: the JPEG is damaged or incomplete"):
        check_complete_jpeg(upright[: len(upright) // 2], name="cut.jpg")
