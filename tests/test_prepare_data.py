"""prepare_data: masks pixel for pixel, splits, metadata, the mmseg dataset, every error path."""

from __future__ import annotations

import csv
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import mmcv
import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image, ImageOps

from dataset.image_io import write_image
from dataset.prepare import PrepareError, output_name, prepare
from dataset.rasterize import Shape, outside_image, rasterize
from dataset.taxonomy import UnknownLabelsError, load_taxonomy
from settings import Settings

ROOT = Path(__file__).resolve().parents[1]
FINE = load_taxonomy("fine")
ACROPORA, PORITES, FUNGIA = (FINE.classes.index(g) for g in ("Acropora", "Porites", "Fungia"))
_names = itertools.count()


def square(x0, y0, x1, y1):
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


@pytest.fixture
def dataset_of_files(fiftyone):
    """dataset_of_files([(path, tags, [(label, points, closed), ...]), ...]) -> dataset name."""
    fo = fiftyone
    created = []

    def make(files, name: str | None = None) -> str:
        name = name or f"prep_test_{next(_names)}_fo"
        fo_samples = [
            fo.Sample(
                filepath=str(path),
                tags=tags,
                polylines=fo.Polylines(
                    polylines=[
                        fo.Polyline(label=label, points=[points], closed=closed, filled=closed)
                        for label, points, closed in shapes
                    ]
                ),
            )
            for path, tags, shapes in files
        ]
        dataset = fo.Dataset(name)
        dataset.add_samples(fo_samples, progress=False)
        created.append(dataset)
        return name

    yield make
    for dataset in created:
        dataset.delete()


@pytest.fixture
def make_dataset(dataset_of_files, tmp_path):
    """make_dataset([(size, tags, [(label, points, closed), ...]), ...]) -> dataset name."""

    def make(samples, image_format="png"):
        name = f"prep_test_{next(_names)}_fo"
        rng = np.random.default_rng(0)
        files = []
        for index, (size, tags, shapes) in enumerate(samples):
            path = tmp_path / "src" / f"{name}_{index:02d}.{image_format}"
            path.parent.mkdir(exist_ok=True)
            width, height = size
            write_image(path, rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
            files.append((path, tags, shapes))
        return dataset_of_files(files, name)

    return make


@pytest.fixture
def settings_for(tmp_path):
    def build(**overrides):
        values = dict(data_root=tmp_path / "prepared", image_size=64, num_workers=1)
        values.update(overrides)
        return Settings(**values)

    return build


def read_mask(folder: Path, split: str, stem: str) -> np.ndarray:
    mask = cv2.imread(str(folder / "annotations" / split / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8 and mask.ndim == 2
    return mask


def read_manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def centres_inside(points_rel, width, height) -> np.ndarray:
    """Independent rasterization: matplotlib's point-in-polygon test on pixel centres."""
    polygon = MplPath(np.array(points_rel) * [width, height])
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    return polygon.contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(height, width)


def test_output_name_drops_the_fo_suffix():
    assert output_name("criobe_finegrained_fo") == "criobe_finegrained"
    assert output_name("reefs") == "reefs"
    assert output_name("criobe_finegrained_fo", "coarse") == "criobe_finegrained_coarse"


def test_square_triangle_border_and_open_line_pixel_for_pixel(make_dataset, settings_for):
    triangle = [(0.11, 0.07), (0.93, 0.31), (0.37, 0.87)]
    name = make_dataset(
        [
            ((64, 64), ["train"], [("Acropora", square(0.25, 0.25, 0.5, 0.5), True)]),
            ((64, 64), ["train"], [("Porites", triangle, True)]),
            ((64, 64), ["val"], [("Fungia", square(0.0, 0.0, 0.5, 1.0), True)]),
            ((64, 64), ["test"], [("acropora", [(0.25, 0.5), (0.75, 0.5)], False)]),
        ]
    )
    out = prepare(name, settings_for())
    stem = f"{name}_{{:02d}}"

    expected = np.zeros((64, 64), np.uint8)
    expected[16:32, 16:32] = ACROPORA
    assert np.array_equal(read_mask(out, "train", stem.format(0)), expected)

    expected = np.where(centres_inside(triangle, 64, 64), PORITES, 0)
    assert np.array_equal(read_mask(out, "train", stem.format(1)), expected)

    expected = np.zeros((64, 64), np.uint8)
    expected[:, :32] = FUNGIA  # touches three image borders
    assert np.array_equal(read_mask(out, "val", stem.format(2)), expected)

    # open polyline: pixel centres within 1.5 px (line width 3) of the segment
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    dx = xx - np.clip(xx, 16.0, 48.0)
    expected = np.where(dx**2 + (yy - 32.0) ** 2 <= 1.5**2, ACROPORA, 0)
    assert np.array_equal(read_mask(out, "test", stem.format(3)), expected)


def test_small_colony_on_a_large_one_stays_visible_whatever_the_order(make_dataset, settings_for):
    small, large = square(0.375, 0.375, 0.5, 0.5), square(0.125, 0.125, 0.875, 0.875)
    name = make_dataset(
        [
            ((64, 64), ["train"], [("Porites", small, True), ("Acropora", large, True)]),
            ((64, 64), ["train"], [("Acropora", large, True), ("Porites", small, True)]),
        ]
    )
    out = prepare(name, settings_for())
    expected = np.zeros((64, 64), np.uint8)
    expected[8:56, 8:56] = ACROPORA
    expected[24:32, 24:32] = PORITES
    for index in range(2):
        assert np.array_equal(read_mask(out, "train", f"{name}_{index:02d}"), expected)


def test_resizing_keeps_aspect_and_draws_masks_at_the_output_size(make_dataset, settings_for):
    shape = square(0.5, 0.0, 1.0, 0.5)
    name = make_dataset(
        [((160, 80), ["train"], [("Acropora", shape, True)]), ((64, 32), ["val"], [])],
        image_format="jpg",
    )
    out = prepare(name, settings_for(image_size=64))
    resized = cv2.imread(str(out / "images" / "train" / f"{name}_00.jpg"))
    assert resized.shape[:2] == (32, 64)
    mask = read_mask(out, "train", f"{name}_00")
    expected = np.zeros((32, 64), np.uint8)
    expected[:16, 32:] = ACROPORA
    assert np.array_equal(mask, expected)
    # already at the output size: the file is copied byte for byte, not re-encoded
    val_row = next(r for r in read_manifest(out) if r["split"] == "val")
    source = Path(val_row["source_filepath"])
    assert (out / "images" / "val" / source.name).read_bytes() == source.read_bytes()


def test_splits_metadata_manifest_and_mmseg_dataset(make_dataset, settings_for):
    big, small = square(0.0, 0.0, 0.5, 0.5), square(0.75, 0.75, 0.875, 0.875)
    samples = [((64, 64), ["train"], [("Acropora", big, True), ("Porites", small, True)])] * 3
    samples += [((64, 64), ["val", "reviewed"], [("Fungia", big, True)])]
    samples += [((64, 64), ["test"], [("Porites", small, True)])] * 2
    name = make_dataset(samples)
    out = prepare(name, settings_for())

    assert sorted(p.name for p in out.iterdir()) == [
        ".coral_toolkit_output.json",  # the marker: prepare_data.py wrote this folder
        "annotations", "classes.txt", "dataset_info.py", "images", "manifest.csv", "palette.txt",
    ]  # fmt: skip
    for split, count in (("train", 3), ("val", 1), ("test", 2)):
        assert len(list((out / "images" / split).iterdir())) == count
        assert len(list((out / "annotations" / split).iterdir())) == count
    assert (out / "classes.txt").read_text().splitlines() == list(FINE.classes)
    palette = [
        tuple(map(int, line.split())) for line in (out / "palette.txt").read_text().splitlines()
    ]
    assert palette == list(FINE.palette)

    info: dict = {}
    exec((out / "dataset_info.py").read_text(), info)
    assert info["num_classes"] == 17 and info["classes"] == list(FINE.classes)
    assert info["num_samples"] == {"train": 3, "val": 1, "test": 2}
    train = info["class_pixel_frequency"]["train"]
    assert train[ACROPORA] == pytest.approx(0.25, abs=1e-6)
    assert train[PORITES] == pytest.approx(1 / 64, abs=1e-6)
    assert sum(train) == pytest.approx(1.0, abs=1e-5)
    weights = info["class_weights"]
    assert weights[PORITES] > weights[ACROPORA] > weights[0], "rarer classes weigh more"

    rows = read_manifest(out)
    import fiftyone as fo

    dataset = fo.load_dataset(name)
    assert {r["sample_id"] for r in rows} == set(dataset.values("id"))
    for row in rows:
        sample = dataset[row["sample_id"]]
        assert row["source_filepath"] == sample.filepath and row["split"] in sample.tags
        assert (out / row["annotation"]).is_file() and (out / row["image"]).is_file()

    from mmseg.utils import register_all_modules

    from dataset.mmseg_dataset import CoralDataset

    register_all_modules()
    coral = CoralDataset(
        data_root=str(out),
        data_prefix=dict(img_path="images/train", seg_map_path="annotations/train"),
        pipeline=[
            dict(type="LoadImageFromFile"),
            dict(type="LoadAnnotations"),
            dict(type="PackSegInputs"),
        ],
    )
    assert len(coral) == 3 and coral.metainfo["classes"] == FINE.classes
    item = coral[0]
    stem = Path(item["data_samples"].img_path).stem
    expected = read_mask(out, "train", stem)
    assert np.array_equal(item["data_samples"].gt_sem_seg.data[0].numpy(), expected)


def test_coarse_taxonomy_maps_genera_to_families(make_dataset, settings_for):
    name = make_dataset(
        [
            ((64, 64), ["train"], [("Montipora", square(0, 0, 0.5, 0.5), True)]),
            ((64, 64), ["val"], []),
        ]
    )
    out = prepare(name, settings_for(taxonomy="coarse"))
    assert out.name == name.removesuffix("_fo") + "_coarse"
    coarse = load_taxonomy("coarse")
    mask = read_mask(out, "train", f"{name}_00")
    assert set(np.unique(mask)) == {0, coarse.classes.index("Acroporidae")}
    assert (out / "classes.txt").read_text().splitlines() == list(coarse.classes)


def test_unknown_labels_stop_with_counts_or_go_to_ignore(make_dataset, settings_for):
    shapes = [("Seaweed", square(0, 0, 0.5, 0.5), True), ("Seaweed", square(0.5, 0.5, 1, 1), True)]
    name = make_dataset([((64, 64), ["train"], shapes)])
    with pytest.raises(UnknownLabelsError, match=r"'Seaweed' \(2\)"):
        prepare(name, settings_for())
    out = prepare(name, settings_for(unknown_labels="ignore"))
    assert set(np.unique(read_mask(out, "train", f"{name}_00"))) == {0, 255}


def test_samples_without_one_split_are_listed_or_skipped(make_dataset, settings_for):
    name = make_dataset(
        [
            ((64, 64), ["train"], []),
            ((64, 64), [], []),
            ((64, 64), ["train", "val"], []),
        ]
    )
    with pytest.raises(PrepareError) as error:
        prepare(name, settings_for())
    message = str(error.value)
    assert "2 sample(s) have no split tag or several" in message
    assert (
        f"{name}_01.png" in message and f"{name}_02.png" in message and "--skip-unsplit" in message
    )
    out = prepare(name, settings_for(), skip_unsplit=True)
    assert len(list((out / "images" / "train").iterdir())) == 1


def test_missing_image_names_the_sample_and_leaves_the_previous_output(make_dataset, settings_for):
    name = make_dataset([((64, 64), ["train"], []), ((64, 64), ["val"], [])])
    settings = settings_for()
    out = prepare(name, settings)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    import fiftyone as fo

    missing = fo.load_dataset(name).match_tags("val").first()
    Path(missing.filepath).unlink()
    with pytest.raises(PrepareError, match="1 sample"):
        prepare(name, settings, overwrite=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before, "previous output intact"
    assert [p.name for p in out.parent.iterdir()] == [out.name], "no partial folder left behind"
    out = prepare(name, settings, overwrite=True, skip_missing=True)
    assert len(list((out / "images" / "val").iterdir())) == 0
    assert len(list((out / "images" / "train").iterdir())) == 1


def test_existing_output_needs_overwrite(make_dataset, settings_for):
    name = make_dataset([((64, 64), ["train"], [])])
    out = prepare(name, settings_for())
    written = sorted(p.name for p in (out / "images" / "train").iterdir())
    stale = out / "images" / "train" / "stale.jpg"
    stale.write_bytes(b"old")
    with pytest.raises(PrepareError, match="already exists; pass --overwrite"):
        prepare(name, settings_for())
    # a file prepare_data.py did not write is never removed, even with --overwrite
    with pytest.raises(PrepareError, match=r"did not write \(images/train/stale.jpg\)"):
        prepare(name, settings_for(), overwrite=True)
    assert stale.read_bytes() == b"old"
    stale.unlink()
    prepare(name, settings_for(), overwrite=True)
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == written


def test_unknown_dataset_and_field_are_explained(make_dataset, settings_for):
    name = make_dataset([((64, 64), ["train"], [])])
    with pytest.raises(PrepareError, match=rf"No FiftyOne dataset named 'nope_fo'.*{name}"):
        prepare("nope_fo", settings_for())
    with pytest.raises(PrepareError, match=r"no fo.Polylines field 'segments'.*\['polylines'\]"):
        prepare(name, settings_for(polylines_field="segments"))


def test_command_line_with_worker_processes(make_dataset, tmp_path):
    """The guide's command: one positional name, settings from .env, parallel workers."""
    shapes = [("Acropora", square(0.25, 0.25, 0.5, 0.5), True)]
    name = make_dataset([((64, 64), ["train"], shapes)] * 3 + [((64, 64), ["val"], shapes)])
    env_file = tmp_path / "test.env"
    env_file.write_text(
        f"CORAL_DATA_ROOT={tmp_path / 'cli'}\nCORAL_IMAGE_SIZE=32\nCORAL_NUM_WORKERS=2\n"
    )
    env = {**__import__("os").environ, "CORAL_ENV_FILE": str(env_file)}
    run = subprocess.run(
        [sys.executable, "prepare_data.py", name], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert "Found 4 samples (train: 3, val: 1, test: 0)" in run.stderr
    assert "Created 3 semantic masks (32x32)" in run.stderr
    out = tmp_path / "cli" / name.removesuffix("_fo")
    expected = np.zeros((32, 32), np.uint8)
    expected[8:16, 8:16] = ACROPORA
    assert np.array_equal(read_mask(out, "val", f"{name}_03"), expected)
    again = subprocess.run(
        [sys.executable, "prepare_data.py", name], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "already exists; pass --overwrite" in again.stderr


def _jpeg_with_orientation(path: Path, stored_rgb: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored_rgb).save(path, "JPEG", quality=95, exif=exif)


def _bright_box(gray: np.ndarray) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) of the pixels over 128, as pixel edges."""
    rows, cols = np.nonzero(gray > 128)
    return cols.min(), rows.min(), cols.max() + 1, rows.max() + 1


@pytest.mark.parametrize("image_size", [48, 24], ids=["source_size", "resized"])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_rotated_jpeg_mask_lands_on_the_feature_drawn_on(
    dataset_of_files, settings_for, tmp_path, orientation, image_size
):
    """CVAT and FiftyOne show (and take coordinates in) the frame with the EXIF Orientation
    applied; the prepared image, as mmcv reads it for training, must be in that frame too."""
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:16, :16] = 255  # one bright 16 px block, top left as stored: every turn moves it
    source = tmp_path / "camera.jpg"
    _jpeg_with_orientation(source, stored, orientation)
    with Image.open(source) as image:
        displayed = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    height, width = displayed.shape
    x0, y0, x1, y1 = _bright_box(displayed)
    # the annotator outlines the block where the App shows it
    polygon = square(x0 / width, y0 / height, x1 / width, y1 / height)
    name = dataset_of_files([(source, ["train"], [("Acropora", polygon, True)])])
    out = prepare(name, settings_for(image_size=image_size))

    prepared_file = out / "images" / "train" / "camera.jpg"
    seen = mmcv.imread(str(prepared_file))  # how the training pipeline reads it
    scale = image_size / max(height, width)
    assert seen.shape[:2] == (round(height * scale), round(width * scale))
    mask = read_mask(out, "train", "camera")
    assert mask.shape == seen.shape[:2]
    assert np.array_equal(mask == ACROPORA, cv2.cvtColor(seen, cv2.COLOR_BGR2GRAY) > 128)
    with Image.open(prepared_file) as image:
        assert image.getexif().get(0x0112, 1) == 1, "no Orientation tag left to apply twice"
    if orientation == 1 and image_size == 48:
        assert prepared_file.read_bytes() == source.read_bytes(), "copied, not re-encoded"


def test_shapes_outside_the_image_paint_nothing_and_are_counted(make_dataset, settings_for, caplog):
    inside = square(0.25, 0.25, 0.5, 0.5)
    outside = [
        ("Porites", square(1.2, 0.2, 1.5, 0.5), True),  # right
        ("Porites", square(-0.5, 0.2, -0.1, 0.5), True),  # left
        ("Porites", square(0.2, 1.1, 0.5, 1.4), True),  # below
        ("Porites", square(0.2, -0.9, 0.5, -0.3), True),  # above
        ("Porites", [(-0.5, -0.5), (-0.2, -0.1)], False),  # an open line, above left
    ]
    name = make_dataset([((64, 64), ["train"], [("Acropora", inside, True), *outside])])
    with caplog.at_level("WARNING", logger="prepare_data"):
        out = prepare(name, settings_for())
    expected = np.zeros((64, 64), np.uint8)
    expected[16:32, 16:32] = ACROPORA
    assert np.array_equal(read_mask(out, "train", f"{name}_00"), expected)
    assert f"{name}_00.png): 5 of 6 shape(s) lie wholly outside the image" in caplog.text
    assert read_manifest(out)[0]["shapes_outside"] == "5"
    # touching the border from outside, a stroke still reaches the first pixels: not counted
    edge = Shape(ACROPORA, [(-0.01, 0.5), (-0.01, 0.75)], False)
    assert not outside_image(edge, 64, 64, line_width=3)
    assert rasterize([edge], 64, 64, line_width=3)[:, 0].any()


def test_coral_dataset_names_files_it_would_leave_out(make_dataset, settings_for):
    from dataset.mmseg_dataset import CoralDataset

    name = make_dataset([((64, 64), ["train"], [])] * 2)
    out = prepare(name, settings_for())
    images = out / "images" / "train"
    shutil.copyfile(images / f"{name}_00.png", images / f"{name}_00.jpg")
    (images / "field_photo.webp").write_bytes(b"RIFF....WEBP")
    (images / "extra").mkdir()
    with pytest.raises(ValueError) as error:
        CoralDataset(
            data_root=str(out),
            data_prefix=dict(img_path="images/train", seg_map_path="annotations/train"),
            pipeline=[],
        )
    message = str(error.value)
    assert "3 entries that CoralDataset would leave out of training" in message
    assert f"{images / 'field_photo.webp'} (not an image file" in message
    assert f"{images / 'extra'} (not an image file" in message
    assert f"{images / name}_00.png (same stem as {name}_00.jpg)" in message
    assert "Re-run prepare_data.py --overwrite" in message
