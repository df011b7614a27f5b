"""Benchmarks stay runnable: each runs here in its smallest setting."""

import sys
from pathlib import Path

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

    for part in ("backbone", "segmentor"):
        result = semantic_bench.main(part=part, sizes=(42,), warmup=0, repeats=1)
        assert {r["model"] for r in result["rows"]} == set(semantic_bench.CONFIGS)
        assert all(r["median_s"] > 0 for r in result["rows"])
    assert '"benchmark": "semantic_segmentor"' in capsys.readouterr().out


def test_generator_bench_smallest_setting(capsys):
    import generator_bench

    result = generator_bench.main(
        image_size=64, points_per_side=2, crop_n_layers=0, tiny=True, warmup=0, repeats=1
    )
    assert result["stock_masks"] == result["our_masks"] and result["worst_best_iou"] >= 0.99
    assert result["speedup"] > 0 and '"benchmark": "generator"' in capsys.readouterr().out


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
