"""Fault suite, CVAT function side (issue 14): the images and bundles of field work.

The function (nuclio/main.py) runs in this process under nuclio_sdk's test Platform,
from a folder laid out as a bundle: the demo config's model with random weights,
packaged semantic-only (CORAL_SEMANTIC_ONLY=1) so that no SAM pass is needed. For
each good image the answer must equal the model's own instances on the pixels as
CVAT shows them (decoded here by OpenCV and Pillow, not by dataset/image_io.py).
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from function_harness import Function, make_bundle
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MAX_PIXELS = 1_000_000  # CORAL_MAX_PIXELS of the function under test


@pytest.fixture(scope="module")
def served(tmp_path_factory, random_semantic_checkpoint):
    """A semantic-only function, started (init_context run) with its env set."""
    folder = make_bundle(tmp_path_factory.mktemp("faults") / "nuclio", random_semantic_checkpoint)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CORAL_SEMANTIC_ONLY", "1")
        patch.setenv("CORAL_MAX_PIXELS", str(MAX_PIXELS))
        function = Function(folder)
        function.start()  # while the function's env is set
    return function


# ---- images ----------------------------------------------------------------------------


def reef_rgb() -> np.ndarray:
    """A 128 x 80 (rows x columns) reef quadrat: not square, so a turn changes the frame."""
    from dataset.reef_demo import render_sample

    image, _ = render_sample(5, 128)
    return np.ascontiguousarray(image[:, 24:104])


def encode(rgb_or_gray: np.ndarray, suffix: str) -> bytes:
    image = rgb_or_gray
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def jpeg_with_orientation(rgb: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def full_masks(items: list[dict], frame: tuple[int, int]) -> list[np.ndarray]:
    """CVAT's reading of each answer item: the cropped mask put back into a (H, W) frame."""
    masks = []
    for item in items:
        xtl, ytl, xbr, ybr = item["mask"][-4:]
        assert 0 <= xtl <= xbr < frame[1] and 0 <= ytl <= ybr < frame[0], (item["mask"][-4:], frame)
        crop = np.array(item["mask"][:-4], np.uint8)
        assert crop.size == (ybr - ytl + 1) * (xbr - xtl + 1)
        mask = np.zeros(frame, bool)
        mask[ytl : ybr + 1, xtl : xbr + 1] = crop.reshape(ybr - ytl + 1, xbr - xtl + 1) > 0
        masks.append(mask)
    return masks


def assert_answer_is_the_models(served, items: list[dict], displayed_rgb: np.ndarray) -> None:
    """The answer holds exactly the model's instances on `displayed_rgb`, in its frame."""
    expected = served.model(displayed_rgb).instances
    assert expected, "the test image must give instances, or the frame is not checked"
    assert len(items) == len(expected)
    for got, inst in zip(full_masks(items, displayed_rgb.shape[:2]), expected, strict=True):
        assert np.array_equal(got, inst.mask)


# ---- requests that cannot be served: 400 with what is wrong ------------------------------


def test_truncated_jpeg_is_named_damaged(served):
    data = encode(reef_rgb(), ".jpg")
    status, answer = served.send(data[: len(data) * 2 // 3])
    assert status == 400
    assert answer["error"].startswith('"image": the JPEG is damaged or incomplete')
    assert "copy it again" in answer["error"]


def test_empty_body_says_what_to_send(served):
    for body in (b"", "  "):
        response = served.call(body)
        assert response.status_code == 400
        assert json.loads(response.body)["error"] == (
            'the body is empty; send a JSON object {"image": <base64 image>}'
        )


def test_empty_image_and_non_image_bytes_are_named(served):
    assert served.send(b"") == (400, {"error": '"image": the file is empty'})
    status, answer = served.send(b"certainly not a picture")
    assert status == 400 and answer["error"].startswith('"image": does not decode as an image')


def _peak_rss_growth_mib(action) -> float:
    """How far the process's peak resident memory rose above its size before `action`."""

    def status(field: str) -> int:  # kB
        lines = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in lines if line.startswith(field)).split()[1])

    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to measure peak memory")
    before = status("VmRSS:")
    action()
    return (status("VmHWM:") - before) / 1024


def test_huge_png_is_refused_from_its_header_without_decoding(served):
    buffer = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buffer, "PNG")
    data = buffer.getvalue()
    assert len(data) < 100_000  # 400 million pixels in a few tens of kB
    body = json.dumps({"image": base64.b64encode(data).decode()})
    del buffer
    answers = []
    growth = _peak_rss_growth_mib(lambda: answers.append(served.call(body)))
    assert answers[0].status_code == 400
    error = json.loads(answers[0].body)["error"]
    assert error.startswith('"image" has 400000000 pixels (20000 x 20000)')
    assert f"the limit is {MAX_PIXELS} pixels (CORAL_MAX_PIXELS" in error
    # decoded, the image is 400 MB (Pillow, 1 bit as 1 byte) or 1.2 GB (OpenCV, BGR)
    assert growth < 40, f"peak memory grew by {growth:.0f} MiB for a refused request"


def test_a_format_the_header_check_cannot_size_is_refused_undecoded(served, tmp_path, monkeypatch):
    """Issue 23 item 4: Pillow does not know Radiance HDR, so the header check could not size
    it and OpenCV decoded it whole (a 1 MB body is a 16 MP float image) before the limit."""
    path = tmp_path / "sky.hdr"
    rows, columns = 1000, 1200  # 1.2 MP, over the function's 1 MP limit
    assert cv2.imwrite(str(path), np.full((rows, columns, 3), 0.5, np.float32))
    data = path.read_bytes()
    assert data.startswith(b"#?RADIANCE") and f"-Y {rows} +X {columns}".encode() in data[:100]
    assert len(data) < 100_000  # run-length coded: the size is only in the header

    def decoded(*args, **kwargs):
        raise AssertionError("OpenCV decoded an image the header check could not size")

    monkeypatch.setattr(cv2, "imdecode", decoded)
    monkeypatch.setattr(cv2, "imread", decoded)
    status, answer = served.send(data)
    assert status == 400, answer
    assert answer["error"] == (
        '"image": a Radiance HDR image, a format whose size cannot be checked before every '
        "pixel is decoded, so it is not read; send it as JPEG, PNG or 8/16-bit TIFF"
    )


# ---- good images: 200, masks in the frame CVAT shows ------------------------------------


def test_exif_rotated_jpeg_answers_in_the_displayed_frame(served):
    stored = reef_rgb()  # 128 rows x 80 columns as stored
    data = jpeg_with_orientation(stored, 6)  # shown turned 90 degrees clockwise: 80 x 128
    decoded = cv2.imdecode(
        np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    )
    displayed = np.ascontiguousarray(np.rot90(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), k=-1))
    assert displayed.shape[:2] == (80, 128)
    status, items = served.send(data)
    assert status == 200
    assert_answer_is_the_models(served, items, displayed)
    boxes = np.array([item["mask"][-4:] for item in items])
    assert boxes[:, 2].max() >= 80, "some mask reaches past the stored image's width"


def test_grayscale_png_is_read_as_three_equal_channels(served):
    gray = cv2.cvtColor(reef_rgb(), cv2.COLOR_RGB2GRAY)
    status, items = served.send(encode(gray, ".png"))
    assert status == 200
    assert_answer_is_the_models(served, items, np.repeat(gray[..., None], 3, axis=2))


def test_rgba_png_drops_transparency(served):
    rgb = reef_rgb()
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:40] = 0  # transparent pixels keep their colour values
    status, items = served.send(encode(np.dstack([rgb, alpha]), ".png"))
    assert status == 200
    assert_answer_is_the_models(served, items, rgb)


def test_palette_png_is_read_in_its_colours(served):
    palette_image = Image.fromarray(reef_rgb()).quantize(colors=32)
    buffer = io.BytesIO()
    palette_image.save(buffer, "PNG")
    status, items = served.send(buffer.getvalue())
    assert status == 200
    assert_answer_is_the_models(served, items, np.asarray(palette_image.convert("RGB")))


def test_sixteen_bit_tiff_is_scaled_by_the_bits_it_uses(served):
    rgb = reef_rgb()
    rgb[0, 0] = 255  # the 12-bit peak, 4095, is then present
    twelve_bit = np.rint(rgb.astype(np.float64) * 4095 / 255).astype(np.uint16)
    status, items = served.send(encode(twelve_bit, ".tif"))
    assert status == 200
    # x * 255 / 4095 gives the 8-bit values back; x / 256 (plain 16-bit) would give 1/16 of them
    assert_answer_is_the_models(served, items, rgb)


# ---- starting the function ------------------------------------------------------------


def test_a_bundle_without_sam_weights_refuses_to_start(
    tmp_path, monkeypatch, random_semantic_checkpoint
):
    folder = make_bundle(tmp_path / "nuclio", random_semantic_checkpoint)
    monkeypatch.delenv("CORAL_SEMANTIC_ONLY", raising=False)
    function = Function(folder)
    with pytest.raises(FileNotFoundError) as refused:
        function.start()
    message = str(refused.value)
    assert str(folder / "vit_b_coralscop.pth") in message
    assert "deploy_as_zip.sh --semantic-only" in message and "CORAL_SEMANTIC_ONLY=1" in message


def test_a_semantic_only_bundle_serves_genus_regions(served):
    assert type(served.model).__name__ == "SemanticRegions"
    rgb = reef_rgb()
    status, items = served.send(encode(rgb, ".png"))
    assert status == 200 and items
    assert {item["type"] for item in items} == {"mask"}
    assert_answer_is_the_models(served, items, rgb)


def test_a_bad_semantic_only_value_is_named(tmp_path, monkeypatch, random_semantic_checkpoint):
    folder = make_bundle(tmp_path / "nuclio", random_semantic_checkpoint)
    monkeypatch.setenv("CORAL_SEMANTIC_ONLY", "maybe")
    with pytest.raises(ValueError, match="CORAL_SEMANTIC_ONLY='maybe'"):
        Function(folder).start()
