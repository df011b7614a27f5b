"""Field data, day one: what a user sees when prepare_data.py or test.py meets bad input.

One FiftyOne dataset holds a sample of each kind of file a field season brings
(non-ASCII names, gray / RGBA / palette PNGs, a truncated JPEG, a PNG whose header
claims 400 MP, an EXIF-rotated JPEG, a 12-bit TIFF, a WebP, a polygon outside its
image). prepare_data.py runs on it as users run it, in a subprocess, and each test
checks one case: the exit status, the message naming the file, and that nothing
was lost or half written.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mmcv
import numpy as np
import pytest
from PIL import Image

from dataset.image_io import write_image
from dataset.output_safety import MARKER
from dataset.prepare import PrepareError, prepare
from dataset.taxonomy import load_taxonomy
from settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FINE = load_taxonomy("fine")
ACROPORA = FINE.classes.index("Acropora")
SQUARE = [(0.25, 0.25), (0.5, 0.25), (0.5, 0.5), (0.25, 0.5)]
OFF_IMAGE = [(1.2, 0.1), (1.6, 0.1), (1.4, 0.4)]  # right of the image: drawn on another one
NON_ASCII = "récif_été_珊瑚"
BAD = ("truncated.jpg", "huge.png")


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture (JPEG scan data of a real size, no flat areas)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return cv2.GaussianBlur(image, (0, 0), 2)


def _write_sources(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True)
    paths = {}

    def path(name: str) -> Path:
        paths[name] = folder / name
        return paths[name]

    Image.fromarray(_photo(48, 64)).save(path(f"{NON_ASCII}.jpg"), quality=95)
    rgb = Image.fromarray(_photo(48, 64, seed=1))
    rgb.convert("L").save(path("gray.png"))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))))
    rgba.save(path("rgba.png"))
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(path("palette.png"))
    full = io.BytesIO()
    Image.fromarray(_photo(192, 256, seed=2)).save(full, "JPEG", quality=95)
    path("truncated.jpg").write_bytes(full.getvalue()[: len(full.getvalue()) // 3])
    Image.new("1", (20000, 20000)).save(path("huge.png"))  # 400 MP in a few kB
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:16, :16] = 255  # a bright block top left as stored, top right once turned
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path("rotated.jpg"), quality=95, exif=exif)
    twelve_bit = np.zeros((48, 64), np.uint16)
    twelve_bit[:, 32:] = 4095  # 12-bit camera data: the right half at full scale
    twelve_bit[:, :32] = 1024
    write_image(path("raw12.tif"), twelve_bit)
    Image.fromarray(_photo(48, 64, seed=3)).save(path("reef.webp"), lossless=True)
    Image.fromarray(_photo(48, 64, seed=4)).save(path("outside.png"))
    return paths


SAMPLES = {  # file -> split, shapes
    f"{NON_ASCII}.jpg": ("train", [("Acropora", SQUARE, True)]),
    "gray.png": ("train", [("Acropora", SQUARE, True)]),
    "rgba.png": ("train", [("Acropora", SQUARE, True)]),
    "palette.png": ("train", [("Acropora", SQUARE, True)]),
    "truncated.jpg": ("train", [("Acropora", SQUARE, True)]),
    "huge.png": ("val", [("Acropora", SQUARE, True)]),
    # the block, outlined where the App shows it: the top-right 16 px of a 48 x 64 portrait
    "rotated.jpg": ("val", [("Acropora", [(2 / 3, 0), (1, 0), (1, 0.25), (2 / 3, 0.25)], True)]),
    "raw12.tif": ("test", [("Acropora", SQUARE, True)]),
    "reef.webp": ("test", [("Acropora", SQUARE, True)]),
    "outside.png": (
        "test",
        [("Acropora", SQUARE, True), ("Porites", [(1.2, 0.1), (1.6, 0.1), (1.4, 0.4)], True)],
    ),  # fmt: skip
}


def _tree(folder: Path) -> dict[str, str]:
    """Every file under the folder with its content hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _prepare_data(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "prepare_data.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _env(tmp: Path, data_root: Path, image_size: int) -> dict:
    env_file = tmp / f"{data_root.name}.env"
    env_file.write_text(
        f"CORAL_DATA_ROOT={data_root}\nCORAL_IMAGE_SIZE={image_size}\nCORAL_NUM_WORKERS=1\n"
    )
    return {**os.environ, "CORAL_ENV_FILE": str(env_file), "PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="module")
def field_day(fiftyone, tmp_path_factory):
    """The field dataset, prepared three times as a user would: plain (refused), with
    --skip-missing (written, exit 1), then plain with --overwrite (refused, old output kept)."""
    fo = fiftyone
    tmp = tmp_path_factory.mktemp("field_day")
    sources = _write_sources(tmp / "sources")
    before = {name: path.read_bytes() for name, path in sources.items()}
    dataset = fo.Dataset("field_day_fo")
    dataset.add_samples(
        [
            fo.Sample(
                filepath=str(sources[name]),
                tags=[split],
                polylines=fo.Polylines(
                    polylines=[
                        fo.Polyline(label=label, points=[points], closed=closed, filled=closed)
                        for label, points, closed in shapes
                    ]
                ),
            )
            for name, (split, shapes) in SAMPLES.items()
        ],
        progress=False,
    )
    data_root = tmp / "prepared"
    env = _env(tmp, data_root, image_size=64)
    refused = _prepare_data(env, "field_day_fo")
    root_after_refusal = sorted(p.name for p in data_root.iterdir()) if data_root.exists() else []
    skipped = _prepare_data(env, "field_day_fo", "--skip-missing")
    out = data_root / "field_day"
    tree = _tree(out)
    overwrite_refused = _prepare_data(env, "field_day_fo", "--overwrite")
    yield dict(
        tmp=tmp,
        sources=sources,
        sources_before=before,
        out=out,
        refused=refused,
        root_after_refusal=root_after_refusal,
        skipped=skipped,
        tree=tree,
        overwrite_refused=overwrite_refused,
    )
    dataset.delete()


def _written(field_day, split: str, name: str) -> Path:
    stem = Path(name).stem
    matches = list((field_day["out"] / "images" / split).glob(f"{stem}.*"))
    assert len(matches) == 1, f"{name}: {matches}"
    return matches[0]


def _mask(field_day, split: str, name: str) -> np.ndarray:
    path = field_day["out"] / "annotations" / split / f"{Path(name).stem}.png"
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_unreadable_images_stop_the_run_naming_each_file(field_day):
    run = field_day["refused"]
    assert run.returncode == 1
    for name in BAD:
        assert str(field_day["sources"][name]) in run.stderr
    assert "the JPEG is damaged or incomplete" in run.stderr
    assert "20000 x 20000 pixels (400 MP) is over the limit" in run.stderr
    assert "2 sample(s) could not be read (listed above)" in run.stderr
    assert "--skip-missing" in run.stderr and "Traceback" not in run.stderr
    assert field_day["root_after_refusal"] == [], "no dataset, no half folder, no leftovers"


def test_skip_missing_writes_the_rest_and_still_exits_1(field_day):
    run = field_day["skipped"]
    assert run.returncode == 1, run.stderr[-2000:]
    assert "2 sample(s) were left out because their image could not be read" in run.stderr
    assert "Traceback" not in run.stderr
    written = {p.stem for p in (field_day["out"] / "images").rglob("*") if p.is_file()}
    expected = {Path(name).stem for name in SAMPLES if name not in BAD}
    assert written == expected
    hidden = [p.name for p in field_day["out"].rglob(".*")]
    assert hidden == [MARKER], "no temporary file left, only the tool's marker"


def test_sources_are_never_modified(field_day):
    for name, path in field_day["sources"].items():
        assert path.read_bytes() == field_day["sources_before"][name], name


def test_a_failed_overwrite_keeps_the_previous_output(field_day):
    run = field_day["overwrite_refused"]
    assert run.returncode == 1 and "2 sample(s) could not be read" in run.stderr
    assert _tree(field_day["out"]) == field_day["tree"]
    assert sorted(p.name for p in field_day["out"].parent.iterdir()) == ["field_day"]


def test_every_written_image_is_a_training_sample(field_day):
    from mmseg.utils import register_all_modules

    from dataset.mmseg_dataset import CoralDataset

    register_all_modules()
    for split in ("train", "val", "test"):
        coral = CoralDataset(
            data_root=str(field_day["out"]),
            data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
            pipeline=[dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")],
        )
        expected = {Path(n).stem for n, (s, _) in SAMPLES.items() if s == split and n not in BAD}
        assert {Path(coral[i]["img_path"]).stem for i in range(len(coral))} == expected
        for index in range(len(coral)):
            item = coral[index]
            assert item["img"].shape[:2] == item["gt_seg_map"].shape, item["img_path"]


def test_non_ascii_file_name_is_copied_as_is(field_day):
    written = _written(field_day, "train", f"{NON_ASCII}.jpg")
    assert written.name == f"{NON_ASCII}.jpg"
    assert written.read_bytes() == field_day["sources"][f"{NON_ASCII}.jpg"].read_bytes()
    expected = np.zeros((48, 64), np.uint8)
    expected[12:24, 16:32] = ACROPORA
    assert np.array_equal(_mask(field_day, "train", f"{NON_ASCII}.jpg"), expected)


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "palette.png"])
def test_gray_rgba_and_palette_pngs_train_on_their_rgb_pixels(field_day, name):
    written = _written(field_day, "train", name)
    assert written.suffix == ".png"
    with Image.open(field_day["sources"][name]) as source:
        expected = np.asarray(source.convert("RGB"))
    assert np.array_equal(mmcv.imread(str(written))[..., ::-1], expected)


def test_exif_rotated_jpeg_is_turned_and_its_polygon_lands_on_the_block(field_day):
    seen = mmcv.imread(str(_written(field_day, "val", "rotated.jpg")))
    assert seen.shape[:2] == (64, 48), "portrait, as CVAT and the FiftyOne App show it"
    bright = cv2.cvtColor(seen, cv2.COLOR_BGR2GRAY) > 128
    assert bright[:16, 32:].all() and bright.sum() == 16 * 16
    assert np.array_equal(_mask(field_day, "val", "rotated.jpg") == ACROPORA, bright)


def test_twelve_bit_tiff_is_scaled_by_its_bits_not_darkened(field_day):
    written = _written(field_day, "test", "raw12.tif")
    assert written.suffix == ".png"
    seen = mmcv.imread(str(written))
    assert (seen[:, 32:] == 255).all()
    assert (seen[:, :32] == round(1024 * 255 / 4095)).all()


def test_webp_source_becomes_a_png_sample(field_day):
    written = _written(field_day, "test", "reef.webp")
    assert written.suffix == ".png"
    with Image.open(field_day["sources"]["reef.webp"]) as source:
        expected = np.asarray(source.convert("RGB"))
    assert np.array_equal(mmcv.imread(str(written))[..., ::-1], expected)


def test_polygon_outside_its_image_is_counted_not_fatal(field_day):
    assert "outside.png): 1 of 2 shape(s) lie wholly outside the image" in (
        field_day["skipped"].stderr
    )
    expected = np.zeros((48, 64), np.uint8)
    expected[12:24, 16:32] = ACROPORA
    assert np.array_equal(_mask(field_day, "test", "outside.png"), expected)


TEST_CONFIG = """
_base_ = ["{root}/configs/reef_demo_tiny.py"]
data_root = "{data_root}"
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
"""


def test_test_py_names_a_mask_with_label_values_that_are_no_class(
    field_day, random_semantic_checkpoint
):
    data_root = field_day["tmp"] / "relabelled"
    shutil.copytree(field_day["out"], data_root)
    bad_mask = data_root / "annotations" / "test" / "reef.png"
    mask = cv2.imread(str(bad_mask), cv2.IMREAD_UNCHANGED)
    mask[:4, :4] = 40  # a value from another taxonomy
    mask[-4:, -4:] = 255  # the ignore index is fine
    write_image(bad_mask, mask)
    config = field_day["tmp"] / "test_config.py"
    config.write_text(TEST_CONFIG.format(root=ROOT, data_root=data_root))
    run = subprocess.run(
        [sys.executable, "test.py", str(config), str(random_semantic_checkpoint),
         "--split", "test", "--work-dir", str(field_day["tmp"] / "eval")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"{bad_mask}: label values 40 in 16 pixel(s)" in run.stderr
    assert "17 classes (0-16, 255 = ignore)" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (field_day["tmp"] / "eval" / "metrics.json").exists(), "no metrics from bad labels"


def test_killed_preparation_leaves_the_previous_output_and_a_rerun_succeeds(fiftyone, tmp_path):
    fo = fiftyone
    sources = tmp_path / "sources"
    sources.mkdir()
    samples = []
    for index in range(60):
        path = sources / f"quadrat_{index:03d}.jpg"
        Image.fromarray(_photo(600, 800, seed=index % 4)).save(path, quality=90)
        colony = fo.Polyline(label="Acropora", points=[SQUARE], closed=True, filled=True)
        samples.append(
            fo.Sample(
                filepath=str(path), tags=["train"], polylines=fo.Polylines(polylines=[colony])
            )
        )
    dataset = fo.Dataset("killed_run_fo")
    dataset.add_samples(samples, progress=False)
    data_root = tmp_path / "prepared"
    try:
        target = prepare(
            "killed_run_fo", Settings(data_root=data_root, image_size=64, num_workers=1)
        )
        previous = _tree(target)
        env = _env(tmp_path, data_root, image_size=400)  # re-encodes: slower than the first
        run = subprocess.Popen(
            [sys.executable, "prepare_data.py", "killed_run_fo", "--overwrite"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        partial = data_root.glob(".killed_run.partial-*/annotations/train/*.png")
        while run.poll() is None and not any(partial) and time.monotonic() < deadline:
            time.sleep(0.01)
            partial = data_root.glob(".killed_run.partial-*/annotations/train/*.png")
        assert run.poll() is None, "the run ended before it could be killed mid-way"
        os.kill(run.pid, signal.SIGKILL)
        run.wait(timeout=60)

        assert _tree(target) == previous, "the previous output is intact"
        left = [p.name for p in data_root.iterdir() if p.name != "killed_run"]
        assert left and all(name.startswith(".killed_run.partial-") for name in left)
        rerun = _prepare_data(env, "killed_run_fo", "--overwrite")
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "left by an interrupted run" in rerun.stderr
        assert [p.name for p in data_root.iterdir()] == ["killed_run"]
        assert len(list((target / "images" / "train").iterdir())) == 60
        assert mmcv.imread(str(target / "images" / "train" / "quadrat_000.jpg")).shape == (
            300, 400, 3,
        )  # fmt: skip
    finally:
        dataset.delete()


def _ended_pid() -> int:
    """The pid of a process that has ended (pids are not reused this soon)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_run_killed_while_swapping_folders_gets_the_previous_output_back(tmp_path):
    """Killed between its two renames, a run leaves the old output under a hidden name
    and no target: the next run puts it back before anything else."""
    data_root = tmp_path / "prepared"
    target = data_root / "swapped"
    (target / "images" / "train").mkdir(parents=True)
    (target / "images" / "train" / "a.jpg").write_bytes(b"jpeg")
    previous = _tree(target)
    host = socket.gethostname()
    target.rename(data_root / f".swapped.old-{host}-{_ended_pid()}-x1")
    (data_root / f".swapped.partial-{host}-{_ended_pid()}-x2" / "images").mkdir(parents=True)
    alive = data_root / f".swapped.partial-{host}-{os.getpid()}-x3"  # a run still going
    alive.mkdir()
    with pytest.raises(PrepareError, match="already exists; pass --overwrite"):
        prepare("swapped_fo", Settings(data_root=data_root))
    assert _tree(target) == previous
    assert sorted(p.name for p in data_root.iterdir()) == sorted(["swapped", alive.name])
