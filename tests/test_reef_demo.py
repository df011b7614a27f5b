import collections
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from dataset.reef_demo import (
    GENUS_LOOKS,
    SKEWED_GENUS_WEIGHTS,
    create_reef_demo,
    create_reef_pool,
    render_sample,
)
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


# Recorded from render_sample(i, 64) before genus_weights existed: the uniform draw must
# keep the demo's images (and everything trained or tested on them) the same. The genus
# draws and outline vertices come from the seeded generator (exact on any CPU); the pixel
# mean is compared to 0.01 grey levels, as vectorised sin/cos and cubic resizing may
# differ in the last bit between CPUs (AVX-512 or not).
UNIFORM_REFERENCE = [
    (["Porites", "Montipora"], [26, 23], 44.3421, 117.7386),
    (["Fungia", "Pocillopora", "Pocillopora"], [28, 23, 35], 70.6089, 148.3333),
    (["Porites", "Montipora", "Acropora", "Porites"], [30, 23, 30, 28], 124.3592, 124.1913),
]


@pytest.mark.parametrize("index", range(3))
def test_uniform_rendering_is_unchanged_by_genus_weights(index):
    genera, vertices, vertex_sum, pixel_mean = UNIFORM_REFERENCE[index]
    image, colonies = render_sample(index, 64)
    assert [c["label"] for c in colonies] == genera
    points = [np.round(np.array(c["points"]), 4) for c in colonies]
    assert [len(p) for p in points] == vertices
    assert sum(p.sum() for p in points) == pytest.approx(vertex_sum, abs=1e-3)
    assert float(image.mean()) == pytest.approx(pixel_mean, abs=0.01)
    again, same = render_sample(index, 64, seed=0, genus_weights=None)
    assert np.array_equal(image, again) and same == colonies


def test_genus_weights_must_name_every_known_genus():
    with pytest.raises(ValueError, match="Stylophora"):
        render_sample(0, 32, genus_weights={**SKEWED_GENUS_WEIGHTS, "Stylophora": 1.0})
    with pytest.raises(ValueError, match="Fungia"):
        render_sample(0, 32, genus_weights={g: 1 for g in GENUS_LOOKS if g != "Fungia"})
    with pytest.raises(ValueError):
        render_sample(0, 32, genus_weights=dict.fromkeys(GENUS_LOOKS, 0.0))


def test_a_single_weighted_genus_is_all_there_is():
    weights = {g: float(g == "Porites") for g in GENUS_LOOKS}
    for index in range(5):
        _, colonies = render_sample(index, 32, genus_weights=weights)
        assert colonies and {c["label"] for c in colonies} == {"Porites"}


def test_skewed_weights_make_two_rare_genera_in_300_images():
    counts = collections.Counter(
        c["label"]
        for index in range(300)
        for c in render_sample(index, 256, seed=0, genus_weights=SKEWED_GENUS_WEIGHTS)[1]
    )
    total = sum(counts.values())
    rare = sorted(SKEWED_GENUS_WEIGHTS, key=SKEWED_GENUS_WEIGHTS.get)[:2]
    assert set(rare) == {"Fungia", "Montipora"}
    for genus in rare:
        assert 0 < counts[genus] < 0.03 * total, (genus, counts)
    frequent = sorted(set(GENUS_LOOKS) - set(rare), key=SKEWED_GENUS_WEIGHTS.get, reverse=True)
    assert [counts[g] for g in frequent] == sorted((counts[g] for g in frequent), reverse=True)
    assert counts[frequent[-1]] > 5 * max(counts[g] for g in rare)


POOL = {"num_samples": 30, "image_size": 32, "labelled": 4, "val": 3, "test": 5}


def _pool_layout(dataset):
    """{image index: tag or None} of a pool."""
    return {
        int(Path(s.filepath).stem.split("_")[-1]): (s.tags[0] if s.tags else None) for s in dataset
    }


@pytest.fixture(scope="module")
def pool(fiftyone, tmp_path_factory):
    image_dir = tmp_path_factory.mktemp("reef_pool")
    dataset = create_reef_pool("test_reef_pool", image_dir=image_dir, **POOL)
    yield dataset
    dataset.delete()


def test_pool_has_fixed_evaluation_sets_a_labelled_set_and_an_unlabelled_pool(pool):
    assert len(pool) == 30
    assert pool.count_sample_tags() == {"test": 5, "val": 3, "train": 4}
    assert all(len(tags) <= 1 for tags in pool.values("tags"))
    for sample in pool:
        if sample.tags:
            assert sample["polylines"] is not None
            labels, truth = sample["polylines"].polylines, sample["ground_truth"].polylines
            assert [(p.label, p.points) for p in labels] == [(p.label, p.points) for p in truth]
            assert {p.id for p in labels}.isdisjoint(p.id for p in truth)
        else:
            assert sample["polylines"] is None
    assert pool.info["created_by"] == "dataset.reef_demo"
    assert pool.persistent


def test_pool_truth_is_what_render_sample_draws(pool):
    for sample in pool:
        index = int(Path(sample.filepath).stem.split("_")[-1])
        _, colonies = render_sample(index, 32, seed=0, genus_weights=SKEWED_GENUS_WEIGHTS)
        polylines = sample["ground_truth"].polylines
        assert [p.label for p in polylines] == [c["label"] for c in colonies]
        assert [p.points[0] for p in polylines] == [list(map(list, c["points"])) for c in colonies]
        assert all(p.closed and p.filled for p in polylines)
        assert Path(sample.filepath).is_file()


def test_pool_splits_are_random_but_deterministic(pool, tmp_path):
    layout = _pool_layout(pool)
    tagged = sorted(i for i, tag in layout.items() if tag)
    assert tagged != list(range(12)), "splits are drawn, not taken in index order"
    same = create_reef_pool("test_reef_pool_same", image_dir=tmp_path / "same", **POOL)
    other = create_reef_pool("test_reef_pool_other", image_dir=tmp_path / "other", seed=1, **POOL)
    try:
        assert _pool_layout(same) == layout
        assert _pool_layout(other) != layout
    finally:
        same.delete()
        other.delete()


def test_pool_is_reused_unless_overwrite_or_other_settings(pool, tmp_path):
    again = create_reef_pool("test_reef_pool", image_dir=tmp_path, **POOL)
    assert len(again) == 30 and not any(tmp_path.iterdir())
    with pytest.raises(FileExistsError, match="other settings"):
        create_reef_pool("test_reef_pool", image_dir=tmp_path, **{**POOL, "labelled": 5})


def test_pool_refuses_a_foreign_dataset(fiftyone, tmp_path):
    foreign = fiftyone.Dataset("test_reef_pool_foreign")
    foreign.add_sample(fiftyone.Sample(filepath=str(tmp_path / "x.jpg")))
    try:
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match="was not made by dataset.reef_demo"):
                create_reef_pool(
                    "test_reef_pool_foreign", image_dir=tmp_path, overwrite=overwrite, **POOL
                )
        assert fiftyone.dataset_exists("test_reef_pool_foreign") and len(foreign) == 1
    finally:
        foreign.delete()


def test_pool_counts_must_fit(fiftyone, tmp_path):
    with pytest.raises(ValueError, match="> num_samples"):
        create_reef_pool("test_reef_pool_bad", image_dir=tmp_path, **{**POOL, "test": 25})
    assert not fiftyone.dataset_exists("test_reef_pool_bad")
