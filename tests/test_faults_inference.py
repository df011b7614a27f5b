"""Field data, day one: what a user sees when inference_with_coralscop.py meets a field folder.

One input folder holds a file of each kind a field season brings (a non-ASCII
name, gray / RGBA / palette PNGs, an EXIF-rotated JPEG, a 12-bit TIFF, a WebP, a
GIF, a truncated JPEG, and files that are no images: notes, a HEIC photo, macOS's
hidden copies, a sub-folder). The command runs on it as users run it, in a
subprocess, and each test checks one case: the exit status, the message naming
the file, and that nothing was lost or half written. Then the faults of the run
itself: a run killed mid-batch, two runs on one output folder, a folder with
nothing to do, an output that cannot be written.

The models are the tests' usual ones: the tiny semantic config with random weights
and a tiny random SAM (swapped in for SAM ViT-B before the command starts).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
NON_ASCII = "récif_été_珊瑚"
TRUNCATED = "truncated.jpg"
# the command with the tiny SAM swapped in (ViT-B would take minutes per image here)
LAUNCHER = """
import sys
from models import coralscop
coralscop.SAM_VIT_B = coralscop.SAM_TINY
import inference_with_coralscop as cli
sys.exit(cli.main(sys.argv[1:]))
"""
LIGHT = ["--device", "cpu", "--points-per-side", "2", "--crop-n-layers", "0",
         "--score-threshold", "0", "--min-threshold", "0.0", "--min-area", "1"]  # fmt: skip


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 2)


def _args(inputs: Path, out: Path, checkpoint: Path, *extra: str) -> list[str]:
    return ["--input-dir", str(inputs), "--output-dir", str(out),
            "--segformer-config", str(ROOT / "configs/reef_demo_tiny.py"),
            "--segformer-weights", str(checkpoint), *LIGHT, *extra]  # fmt: skip


def _command(*args: str) -> list[str]:
    return [sys.executable, "-c", LAUNCHER, *args]


def _env() -> dict:
    return {**os.environ, "PYTHONWARNINGS": "ignore"}


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(*args), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600
    )


def _leftovers(out: Path) -> list[Path]:
    """Temporary files and staging folders: what a half-finished write leaves."""
    return [p for p in out.rglob("*") if ".tmp-" in p.name or p.name.endswith(".partial")]


def _coco(out: Path):
    from pycocotools.coco import COCO

    return COCO(str(out / "predictions.json"))


def _write_field_folder(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    rgb = Image.fromarray(_photo(48, 64, seed=1))
    rgb.save(folder / f"{NON_ASCII}.jpg", quality=95)
    rgb.convert("L").save(folder / "gray.png")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))))
    rgba.save(folder / "rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "palette.png")
    # stored landscape, left half white; shown (Orientation 6: turned clockwise) as a
    # portrait whose top half is white
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:, :32] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(folder / "rotated.jpg", quality=95, exif=exif)
    twelve_bit = np.full((48, 64), 1024, np.uint16)  # 12-bit camera data
    twelve_bit[:, 32:] = 4095  # the right half at full scale: white, not 16/255 gray
    assert cv2.imwrite(str(folder / "raw12.tif"), twelve_bit)
    Image.fromarray(_photo(48, 64, seed=3)).save(folder / "reef.webp", lossless=True)
    Image.fromarray(_photo(48, 64, seed=4)).save(folder / "drone.gif")
    full = io.BytesIO()
    Image.fromarray(_photo(192, 256, seed=2)).save(full, "JPEG", quality=95)
    (folder / TRUNCATED).write_bytes(full.getvalue()[: len(full.getvalue()) // 3])
    # not images: each must be named in the log, with what to do
    (folder / "notes.txt").write_text("station 4, 12 m")
    (folder / "IMG_0002.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (folder / "._rotated.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "day2").mkdir()
    rgb.save(folder / "day2" / "later.jpg")
    return {p.name: p for p in folder.iterdir()}


IMAGES = [f"{NON_ASCII}.jpg", "gray.png", "rgba.png", "palette.png", "rotated.jpg",
          "raw12.tif", "reef.webp", "drone.gif"]  # fmt: skip
NOT_IMAGES = {
    "notes.txt": "not an image format inference reads ('.txt' files)",
    "IMG_0002.HEIC": "HEIC/HEIF photos are not readable here; export them as JPEG",
    "._rotated.jpg": "a hidden file",
    ".DS_Store": "a hidden file",
    "day2": "a folder: only the files directly in --input-dir are read",
}


@pytest.fixture(scope="module")
def field_day(tmp_path_factory, random_semantic_checkpoint):
    tmp = tmp_path_factory.mktemp("field_day_inference")
    inputs = tmp / "in"
    sources = _write_field_folder(inputs)
    before = {n: p.read_bytes() for n, p in sources.items() if p.is_file()}
    out = tmp / "out"
    run = _run(*_args(inputs, out, random_semantic_checkpoint, "--save-semantic"))
    assert (out / "inference_log.txt").is_file(), run.stderr[-3000:]
    log = (out / "inference_log.txt").read_text(encoding="utf-8")
    return dict(inputs=inputs, out=out, run=run, log=log, before=before)


def _visualization(field_day, name: str) -> np.ndarray:
    path = field_day["out"] / "visualizations" / f"{Path(name).stem}.jpg"
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def _image_record(field_day, name: str) -> dict:
    coco = _coco(field_day["out"])
    return next(i for i in coco.dataset["images"] if i["file_name"] == name)


def _gray(image_bgr: np.ndarray) -> np.ndarray:
    return image_bgr.astype(np.float32).mean(axis=2)


def test_truncated_jpeg_is_a_named_failure_and_the_rest_is_done(field_day):
    run = field_day["run"]
    assert run.returncode == 1, run.stderr[-3000:]
    assert f"{TRUNCATED}: not done: ImageReadError: the JPEG is damaged or incomplete" in run.stderr
    assert "copy it again from the camera or card" in run.stderr
    assert f"1 of {len(IMAGES) + 1} images failed; rerun the same command" in run.stderr
    assert "Traceback" not in run.stderr
    out = field_day["out"]
    assert sorted(i["file_name"] for i in _coco(out).dataset["images"]) == sorted(IMAGES)
    stem = Path(TRUNCATED).stem
    assert not (out / ".per_image" / f"{stem}.json").exists()
    assert not (out / "masks" / stem).exists()
    assert not (out / "visualizations" / f"{stem}.jpg").exists()
    assert _leftovers(out) == []


def test_every_input_file_is_a_result_or_named_in_the_log(field_day):
    log = field_day["log"]
    for name, reason in NOT_IMAGES.items():
        assert f"WARNING {name}: skipped: {reason}" in log, name
    names = {p.name for p in field_day["inputs"].iterdir()}
    done = {i["file_name"] for i in _coco(field_day["out"]).dataset["images"]}
    assert names == done | set(NOT_IMAGES) | {TRUNCATED}
    for name in IMAGES:
        stem = Path(name).stem
        assert f"INFO {name}: " in log and (field_day["out"] / "semantic" / f"{stem}.png").is_file()


def test_inputs_are_never_modified(field_day):
    for name, data in field_day["before"].items():
        assert (field_day["inputs"] / name).read_bytes() == data, name


def test_non_ascii_file_name_keeps_its_name_everywhere(field_day):
    out = field_day["out"]
    assert _image_record(field_day, f"{NON_ASCII}.jpg")["height"] == 48
    assert (out / "masks" / NON_ASCII).is_dir()
    assert _visualization(field_day, f"{NON_ASCII}.jpg").shape[:2][0] == 48
    assert f"{NON_ASCII}.jpg: " in field_day["log"]


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "palette.png", "reef.webp", "drone.gif"])
def test_gray_rgba_palette_webp_and_gif_are_read_as_rgb(field_day, name):
    record = _image_record(field_day, name)
    assert (record["height"], record["width"]) == (48, 64)
    drawn = _visualization(field_day, name)
    assert drawn.ndim == 3 and drawn.shape[0] == 48 and drawn.shape[1] > 64  # image + legend
    pngs = sorted((field_day["out"] / "masks" / Path(name).stem).glob("instance_*.png"))
    assert pngs and all(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape == (48, 64) for p in pngs)


def test_exif_rotated_jpeg_is_processed_as_displayed(field_day):
    record = _image_record(field_day, "rotated.jpg")
    assert (record["height"], record["width"]) == (64, 48), "the displayed (portrait) frame"
    masks = sorted((field_day["out"] / "masks" / "rotated").glob("instance_*.png"))
    assert masks and all(cv2.imread(str(m), 0).shape == (64, 48) for m in masks)
    picture = _gray(_visualization(field_day, "rotated.jpg")[:, :48])
    # instances blend at most half their colour in: white stays >= 127, black <= 127
    assert picture[:32].mean() > picture[32:].mean() + 40, "white on top, as displayed"


def test_12_bit_tiff_is_scaled_by_its_bits(field_day):
    record = _image_record(field_day, "raw12.tif")
    assert (record["height"], record["width"]) == (48, 64)
    picture = _gray(_visualization(field_day, "raw12.tif")[:, :64])
    # 4095 -> 255 and 1024 -> 64 (scaled by 1/256 both would be nearly black: 16 and 4)
    assert picture[:, 32:].mean() > picture[:, :32].mean() + 40


def test_empty_or_text_only_folder_stops_before_any_model_is_loaded(
    tmp_path, monkeypatch, capsys, random_semantic_checkpoint
):
    import inference_with_coralscop as cli
    from engine import batch_inference

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a folder with nothing to do")

    monkeypatch.setattr(batch_inference, "TwoStageInferencer", no_model)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out"
    assert cli.main(_args(empty, out, random_semantic_checkpoint)) == 2
    assert f"ERROR: --input-dir {empty} is empty: no image to process" in capsys.readouterr().err
    text_only = tmp_path / "text_only"
    text_only.mkdir()
    for name in ("notes.txt", "readme.txt"):
        (text_only / name).write_text("station 4")
    assert cli.main(_args(text_only, out, random_semantic_checkpoint)) == 2
    err = capsys.readouterr().err
    assert "holds no image inference reads (2 other entries: notes.txt, readme.txt)" in err
    assert "readable: .jpg" in err
    assert not out.exists(), "no output folder for a run that did nothing"
    missing = tmp_path / "no_such_folder"
    assert cli.main(_args(missing, out, random_semantic_checkpoint)) == 2
    assert f"--input-dir {missing} does not exist" in capsys.readouterr().err


def test_output_folder_of_the_users_own_files_is_refused_and_left_as_it_was(
    tmp_path, capsys, random_semantic_checkpoint
):
    import inference_with_coralscop as cli

    inputs = tmp_path / "in"
    inputs.mkdir()
    assert cv2.imwrite(str(inputs / "quadrat.jpg"), _photo(32, 32))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "thesis.docx").write_bytes(b"chapter 3")
    assert cli.main(_args(inputs, theirs, random_semantic_checkpoint)) == 2
    assert f"{theirs} already holds files of its own" in capsys.readouterr().err
    assert [p.name for p in theirs.iterdir()] == ["thesis.docx"], "not even a lock file"
    a_file = tmp_path / "results.txt"
    a_file.write_text("keep me")
    assert cli.main(_args(inputs, a_file, random_semantic_checkpoint)) == 2
    assert f"ERROR: --output-dir {a_file} is a file; choose a folder" in capsys.readouterr().err
    assert a_file.read_text() == "keep me"


def test_text_only_folder_exits_2_as_the_user_runs_it(tmp_path, random_semantic_checkpoint):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "notes.txt").write_text("station 4")
    run = _run(*_args(inputs, tmp_path / "out", random_semantic_checkpoint))
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(f"ERROR: --input-dir {inputs} holds no")
    assert "Traceback" not in run.stderr and not (tmp_path / "out").exists()


def _quadrats(folder: Path, count: int, size: int) -> list[str]:
    from dataset.reef_demo import render_sample

    folder.mkdir()
    for index in range(count):
        image, _ = render_sample(index, size)
        assert cv2.imwrite(
            str(folder / f"quadrat_{index:02d}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        )
    return sorted(p.stem for p in folder.iterdir())


def _check_readable(out: Path) -> None:
    """predictions.json as a user may open it at any moment: absent, or complete COCO."""
    path = out / "predictions.json"
    if path.exists():
        document = json.loads(path.read_text())
        assert {"images", "annotations", "categories"} <= set(document)


def _wait_for(condition, process: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        _check_readable(out)
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)


def _done(out: Path) -> set[str]:
    return {p.stem for p in (out / ".per_image").glob("*.json")} if out.exists() else set()


def test_killed_run_resumes_exactly_the_missing_images(
    tmp_path, monkeypatch, random_semantic_checkpoint
):
    import inference_with_coralscop as cli
    from models import coralscop

    stems = _quadrats(tmp_path / "in", 12, 96)
    out = tmp_path / "out"
    args = _args(tmp_path / "in", out, random_semantic_checkpoint)
    process = subprocess.Popen(
        _command(*args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _wait_for(lambda: len(_done(out)) >= 3, process, out)
        process.send_signal(signal.SIGKILL)  # as the OOM killer or a power cut would
        process.wait(timeout=60)
    finally:
        process.kill()
        process.stderr.close()
    finished = _done(out)
    assert 3 <= len(finished) < len(stems), "killed mid-batch"
    assert not (out / "predictions.json").exists(), "written only at the end of a run"
    assert f"pid {process.pid}" in (out / ".inference.lock").read_text(), "the dead run's lock"

    monkeypatch.setattr(coralscop, "SAM_VIT_B", coralscop.SAM_TINY)
    log_before = (out / "inference_log.txt").read_text()
    assert cli.main(args) == 0, "a killed run's lock does not block the rerun"
    rerun = (out / "inference_log.txt").read_text()[len(log_before) :]
    missing = len(stems) - len(finished)
    assert f"{len(stems)} images in" in rerun
    assert f"{len(finished)} already done, {missing} to process" in rerun
    redone = {line.split("INFO ")[1].split(".jpg: ")[0] for line in rerun.splitlines()
              if " instances (" in line}  # fmt: skip
    assert redone == set(stems) - finished
    coco = _coco(out)
    assert sorted(Path(i["file_name"]).stem for i in coco.dataset["images"]) == stems
    assert sorted(p.name for p in (out / "masks").iterdir()) == stems
    assert sorted(p.stem for p in (out / "visualizations").iterdir()) == stems
    assert _leftovers(out) == [], "the killed run's temporary files are cleared"


def test_second_run_on_the_same_output_folder_is_refused(
    tmp_path, capsys, random_semantic_checkpoint
):
    import inference_with_coralscop as cli

    stems = _quadrats(tmp_path / "in", 6, 96)
    out = tmp_path / "out"
    args = _args(tmp_path / "in", out, random_semantic_checkpoint)
    first = subprocess.Popen(
        _command(*args), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lock = out / ".inference.lock"
        claimed = out / "inference_run.json"  # written once the lock is held
        _wait_for(
            lambda: lock.exists() and f"pid {first.pid}" in lock.read_text() and claimed.exists(),
            first,
            out,
        )
        run_file = (out / "inference_run.json").read_bytes()
        # the same command, --overwrite, and other settings with --overwrite: all refused
        for extra in ([], ["--overwrite"], ["--nms-threshold", "0.3", "--overwrite"]):
            assert cli.main([*args, *extra]) == 2
            err = capsys.readouterr().err
            assert f"another inference run is writing {out} (pid {first.pid}, started" in err
            assert "wait for it to finish, or choose another --output-dir" in err
        assert (out / "inference_run.json").read_bytes() == run_file
        _, stderr = first.communicate(timeout=600)
    finally:
        first.kill()
    assert first.returncode == 0, stderr[-3000:]
    assert sorted(Path(i["file_name"]).stem for i in _coco(out).dataset["images"]) == stems
    assert sorted(p.name for p in (out / "masks").iterdir()) == stems
    assert _leftovers(out) == []


def test_failed_write_is_a_failed_image_and_a_rerun_redoes_it(
    tmp_path, monkeypatch, random_semantic_checkpoint
):
    """A folder where the visualization file should go: the write raises (as a full disk or
    a lost network share would), whoever runs the test (root ignores permission bits)."""
    import inference_with_coralscop as cli
    from models import coralscop

    monkeypatch.setattr(coralscop, "SAM_VIT_B", coralscop.SAM_TINY)
    _quadrats(tmp_path / "in", 2, 64)
    out = tmp_path / "out"
    args = _args(tmp_path / "in", out, random_semantic_checkpoint)
    later = tmp_path / "quadrat_01.jpg"
    (tmp_path / "in" / "quadrat_01.jpg").rename(later)
    assert cli.main(args) == 0
    later.rename(tmp_path / "in" / "quadrat_01.jpg")
    blocker = out / "visualizations" / "quadrat_01.jpg"
    blocker.mkdir()

    assert cli.main(args) == 1
    log = (out / "inference_log.txt").read_text()
    assert f"quadrat_01.jpg: not done: ImageWriteError: {blocker}: cannot write" in log
    assert not (out / ".per_image" / "quadrat_01.json").exists(), "not marked done"
    assert not (out / "masks" / "quadrat_01").exists(), "no half-written image left"
    assert [i["file_name"] for i in _coco(out).dataset["images"]] == ["quadrat_00.jpg"]
    assert blocker.is_dir(), "what the user put there stays"

    blocker.rmdir()
    assert cli.main(args) == 0
    rerun = (out / "inference_log.txt").read_text()[len(log) :]
    assert "2 images in" in rerun and "1 already done, 1 to process" in rerun
    assert [i["file_name"] for i in _coco(out).dataset["images"]] == [
        "quadrat_00.jpg",
        "quadrat_01.jpg",
    ]
    assert cv2.imread(str(blocker)) is not None


def test_prediction_maps_of_test_py_fail_loudly_when_unwritable(tmp_path):
    """test.py's SavePredictionsHook: cv2.imwrite's False used to pass unnoticed."""
    from types import SimpleNamespace

    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from dataset.image_io import ImageWriteError
    from engine.hooks import SavePredictionsHook

    image = tmp_path / "quadrat.jpg"
    assert cv2.imwrite(str(image), _photo(8, 8))
    sample = SegDataSample(metainfo=dict(img_path=str(image)))
    sample.pred_sem_seg = PixelData(data=torch.ones(1, 8, 8, dtype=torch.long))
    runner = SimpleNamespace(
        test_dataloader=SimpleNamespace(
            dataset=SimpleNamespace(metainfo=dict(palette=[[0] * 3] * 2))
        )
    )
    hook = SavePredictionsHook(pred_dir=str(tmp_path / "pred"), show_dir=str(tmp_path / "show"))
    hook.before_test(runner)
    hook.after_test_iter(runner, 0, outputs=[sample])
    assert (cv2.imread(str(tmp_path / "pred" / "quadrat.png"), 0) == 1).all()
    assert cv2.imread(str(tmp_path / "show" / "quadrat.jpg")).shape == (8, 8, 3)
    (tmp_path / "pred" / "quadrat.png").unlink()
    (tmp_path / "pred" / "quadrat.png").mkdir()  # a folder where the map should go
    with pytest.raises(ImageWriteError, match=r"pred/quadrat\.png: cannot write"):
        hook.after_test_iter(runner, 1, outputs=[sample])
