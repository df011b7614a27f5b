"""Benchmarks stay runnable: each runs here in its smallest setting."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_prepare_bench_smallest_setting(fiftyone, capsys):
    import prepare_bench

    result = prepare_bench.main(
        num_samples=3, image_size=96, colonies=3, vertices=12, num_workers=1
    )
    for mode in ("copy", "resize"):
        assert result[mode]["images_per_s"] > 0
    assert result["resize"]["output_px"] == 48
    assert '"benchmark": "prepare_data"' in capsys.readouterr().out


def test_semantic_bench_smallest_setting(capsys):
    import semantic_bench

    for part in ("backbone", "segmentor", "end2end"):
        result = semantic_bench.main(part=part, sizes=(42,), native_size=True, warmup=0, repeats=1)
        assert {r["model"] for r in result["rows"]} == set(semantic_bench.CONFIGS)
        assert all(r["median_s"] > 0 for r in result["rows"])
    assert [r["dtype"] for r in result["rows"]] == ["fp32", "fp32"]
    assert '"benchmark": "semantic_end2end"' in capsys.readouterr().out


def test_generator_bench_smallest_setting(capsys):
    import generator_bench

    result = generator_bench.main(
        image_size=64, points_per_side=2, crop_n_layers=0, tiny=True, warmup=0, repeats=1
    )
    assert result["stock_masks"] == result["our_masks"] and result["worst_best_iou"] >= 0.99
    assert result["speedup"] > 0 and '"benchmark": "generator"' in capsys.readouterr().out


def test_generator_bench_mask_matching():
    import numpy as np
    import torch
    from generator_bench import worst_best_match_iou

    a = np.zeros((8, 8), bool)
    a[:4] = True  # 32 pixels
    b = np.zeros((8, 8), bool)
    b[:, :2] = True  # 16 pixels, 8 shared with a
    ours = torch.from_numpy(np.stack([a, b]))
    assert worst_best_match_iou([a, b], ours, chunk=1) == 1.0
    shifted = np.roll(a, 1, axis=0)  # rows 1-4: 24 pixels shared with a, 40 in the union
    assert worst_best_match_iou([b, shifted], ours) == pytest.approx(24 / 40)
    assert worst_best_match_iou([a], ours[:0]) == 0.0


def test_train_bench_smallest_setting(capsys):
    import train_bench

    root = Path(__file__).resolve().parents[1]
    result = train_bench.main(str(root / "configs/reef_demo_tiny.py"), batch=2, steps=2, warmup=1)
    assert result["images_per_s"] > 0 and result["crop"] == [224, 224]
    assert '"benchmark": "train"' in capsys.readouterr().out


def test_pipeline_bench_smallest_setting(capsys):
    import pipeline_bench

    result = pipeline_bench.main(num_samples=2, image_size=128, workers="0,1", batches=1)
    assert [row["workers"] for row in result["loaders"]] == [0, 1]
    assert all(row["images_per_s"] > 0 and row["batch"] == 4 for row in result["loaders"])
    # the recipe's crop is timed beside mmseg's RandomCrop, which it replaces
    assert list(result["replaced_transforms"]) == ["3:CountingRandomCrop"]
    assert '"benchmark": "train_pipeline"' in capsys.readouterr().out


def test_two_stage_bench_smallest_setting(capsys):
    import two_stage_bench

    result = two_stage_bench.main(
        image_size=96, points_per_side=3, crop_n_layers=0, tiny=True, warmup=0, repeats=1
    )
    stages = ("semantic_class_map_s", "proposals_s", "fusion_s")
    assert all(result[key] > 0 for key in ("total_s", *stages))
    assert result["weights"] == {"semantic": "random", "sam": "random tiny"}
    # random weights make instances from the semantic map's regions at least
    assert result["instances"] > 0
    assert '"benchmark": "two_stage"' in capsys.readouterr().out
