import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset.reef_demo import GENUS_LOOKS, create_reef_demo, render_sample
from dataset.taxonomy import load_taxonomy


@pytest.fixture(scope="module")
def demo(fiftyone, tmp_path_factory):
    image_dir = tmp_path_factory.mktemp("reef_demo")
    dataset = create_reef_demo("test_reef_demo", num_samples=12, image_size=96, image_dir=image_dir)
    yield dataset
    dataset.delete()


def test_splits_follow_the_4_1_1_cycle(demo):
    assert len(demo) == 12
    assert demo.count_sample_tags() == {"train": 8, "val": 2, "test": 2}
    assert all(len(tags) == 1 for tags in demo.values("tags"))


def test_labels_are_closed_filled_relative_polylines_of_fine_genera(demo):
    fine = load_taxonomy("fine")
    polylines = [p for s in demo for p in s["polylines"].polylines]
    assert len(polylines) >= 2 * len(demo)
    for polyline in polylines:
        assert polyline.closed and polyline.filled
        assert fine.index_of(polyline.label) is not None
        points = np.array(polyline.points[0])
        assert points.shape[1] == 2 and len(points) >= 20
        assert points.min() >= 0.0 and points.max() <= 1.0
    assert {p.label for p in polylines} <= set(GENUS_LOOKS)


def test_rendering_is_deterministic():
    first, colonies_a = render_sample(3, 64, seed=7)
    second, colonies_b = render_sample(3, 64, seed=7)
    assert np.array_equal(first, second) and colonies_a == colonies_b
    other, _ = render_sample(4, 64, seed=7)
    assert not np.array_equal(first, other)


def test_existing_dataset_is_reused_unless_overwrite(demo, tmp_path):
    again = create_reef_demo("test_reef_demo", num_samples=3, image_dir=tmp_path)
    assert len(again) == 12 and not any(tmp_path.iterdir())


def test_genera_differ_in_colour_so_a_model_can_learn_them():
    pixels: dict[str, list[np.ndarray]] = {}
    for index in range(20):
        image, colonies = render_sample(index, 128)
        for colony in colonies:
            mask = np.zeros(image.shape[:2], np.uint8)
            outline = np.round(np.array(colony["points"]) * 128).astype(np.int32)
            cv2.fillPoly(mask, [outline], 1)
            pixels.setdefault(colony["label"], []).append(image[cv2.erode(mask, None) > 0])
    assert set(pixels) == set(GENUS_LOOKS), "20 images show every genus"
    means = {genus: np.concatenate(p).mean(axis=0) for genus, p in pixels.items()}
    for a, b in itertools.combinations(means, 2):
        assert np.linalg.norm(means[a] - means[b]) > 40, (a, b)


def test_a_demo_whose_images_were_deleted_is_made_again(fiftyone, tmp_path):
    first = create_reef_demo(
        "test_reef_gone", num_samples=3, image_size=32, image_dir=tmp_path / "a"
    )
    for path in first.values("filepath"):
        Path(path).unlink()  # e.g. the checkout holding them was deleted
    again = create_reef_demo(
        "test_reef_gone", num_samples=3, image_size=32, image_dir=tmp_path / "b"
    )
    assert all(Path(p).is_file() for p in again.values("filepath"))
    again.delete()


def test_a_foreign_dataset_with_missing_images_is_not_touched(fiftyone, tmp_path):
    foreign = fiftyone.Dataset("test_reef_foreign")
    foreign.add_sample(fiftyone.Sample(filepath=str(tmp_path / "gone.jpg")))
    with pytest.raises(FileExistsError, match="was not made by dataset.reef_demo"):
        create_reef_demo("test_reef_foreign", num_samples=3, image_dir=tmp_path)
    assert fiftyone.dataset_exists("test_reef_foreign")
    foreign.delete()
