"""Benchmarks stay runnable: each runs here in its smallest setting."""

import sys
from pathlib import Path

import numpy as np
import pytest

# a tiny random SAM on one crop, every mask through (random weights make no confident
# masks), one run without warm-up: the SAM benches' smallest setting
TINY_SAM_THRESHOLDS_OFF = dict(
    crop_n_layers=0, pred_iou_thresh=0, stability_score_thresh=0, tiny=True, warmup=0, repeats=1
)

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

    result = generator_bench.main(image_size=64, points_per_side=2, **TINY_SAM_THRESHOLDS_OFF)
    assert result["stock_masks"] > 0
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


def test_cleanup_bench_smallest_setting(capsys):
    import cleanup_bench

    result = cleanup_bench.main(masks=6, size=128, warmup=0, repeats=1)
    assert result["same_masks"] and result["kept"] > 0
    assert '"benchmark": "cleanup"' in capsys.readouterr().out


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

    result = two_stage_bench.main(image_size=96, points_per_side=3, **TINY_SAM_THRESHOLDS_OFF)
    stages = ("semantic_class_map_s", "proposals_s", "fusion_s")
    assert all(result[key] > 0 for key in ("total_s", *stages))
    assert result["weights"] == {"semantic": "random", "sam": "random tiny"}
    # random weights make instances from the semantic map's regions at least
    assert result["instances"] > 0
    assert '"benchmark": "two_stage"' in capsys.readouterr().out


def test_batch_memory_bench_smallest_setting(capsys):
    import batch_memory_bench

    result = batch_memory_bench.main(sizes="1", image_size=64, points_per_side=2)
    rows = result["rows"]
    assert [(r["to_fiftyone"], r["images"]) for r in rows] == [(False, 1), (True, 1)]
    assert all(r["peak_rss_mib"] > 100 for r in rows)  # a whole Python with torch, from the kernel
    assert set(result["verdicts"]) == {"without_fiftyone", "with_fiftyone"}
    assert '"benchmark": "batch_memory"' in capsys.readouterr().out


def test_batch_memory_bench_measures_each_run_alone():
    """The peak of one child, not the largest of all children so far (RUSAGE_CHILDREN)."""
    import batch_memory_bench

    grow = [sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"]
    small = [sys.executable, "-c", "pass"]
    big, _, _ = batch_memory_bench.peak_rss_of(grow, {}, Path.cwd())
    after, _, _ = batch_memory_bench.peak_rss_of(small, {}, Path.cwd())
    assert big >= 300 > after


def test_scale_bench_smallest_setting(capsys):
    import scale_bench

    result = scale_bench.main(sizes="192", tile_size=128, overlap=32, quadrat=128)
    (row,) = result["rows"]
    assert row["tiles"] == 4 and row["megapixels"] == pytest.approx(0.0369, abs=0.001)
    assert row["peak_rss_mib"] > 100 and row["s_per_mp"] > 0 and row["peak_gpu_mib"] is None
    assert '"benchmark": "scale"' in capsys.readouterr().out


@pytest.mark.parametrize("truth", [False, True])
def test_reef_stats_scale_bench_smallest_setting(capsys, truth):
    import scale_bench

    result = scale_bench.main(reef_stats=True, sizes="600,1200", truth=truth)
    assert [(r["size"], r["colonies"]) for r in result["rows"]] == [(600, 1), (1200, 4)]
    assert all(r["peak_rss_mib"] > 100 for r in result["rows"]) and result["truth"] == truth
    assert '"benchmark": "reef_stats_scale"' in capsys.readouterr().out


def test_orthomosaic_prepare_bench_smallest_setting(capsys):
    import orthomosaic_prepare_bench

    result = orthomosaic_prepare_bench.main(sizes="1200", crop_size=256)
    # 3 x 3 disc cells of 400 px; a 5 x 5 grid of 256 px crops, those with a colony written
    assert [(r["source"], r["polygons"]) for r in result["rows"]] == [
        ("GeoPackage", 9), ("TagLab", 9)
    ]  # fmt: skip
    assert len({r["crops"] for r in result["rows"]}) == 1 and 0 < result["rows"][0]["crops"] <= 25
    assert all(r["peak_rss_mib"] > 100 for r in result["rows"]) and result["under_4_gib"]
    assert '"benchmark": "orthomosaic_prepare"' in capsys.readouterr().out


def test_interactor_bench_smallest_setting(capsys, monkeypatch):
    import interactor_bench

    for name in ("main", "request_body"):  # another function's, imported by another test
        monkeypatch.delitem(sys.modules, name, raising=False)
    result = interactor_bench.main(size=256, clicks=3, frames=6, sam="tiny", precisions="f32",
                                   budget_mb=10)  # fmt: skip
    (row,) = result["rows"]
    assert row["first_click_s"] > 0 and row["later_median_s"] > 0 and row["encoder_s"] > 0
    assert row["cache_peak_mib"] <= 10 and row["evictions"] >= 4  # 7 frames of 4 MiB, 2 kept
    assert '"benchmark": "interactor"' in capsys.readouterr().out
    from models import coralscop

    assert coralscop.SAM_VIT_B["embed_dim"] == 768  # the smoke's tiny SAM did not stay behind


def test_gpu_session_script_runs_every_benchmark_in_smoke_mode(tmp_path):
    import json
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    env = dict(os.environ, SMOKE="1", PYTHON=sys.executable, WHEELS="")
    done = subprocess.run(
        ["bash", "bench/gpu_session.sh", str(out)], cwd=root, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    runs = [json.loads(line)["run"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert runs == [
        "semantic_end2end", "train_b4", "two_stage", "generator", "train_b8_checkpointing",
        "semantic_end2end_fp32", "generator_no_filters", "profile", "two_stage_no_filters",
        "train_b4_fused", "cleanup", "pipeline", "scale_40000",
    ]  # fmt: skip
    targets = (out / "targets.txt").read_text()
    # no CPU figure meets a GPU target; peak GPU memory of a CPU run is no figure
    assert "met" not in targets.replace("targets met", "")
    assert targets.count("CPU figure, not a target run") >= 8
    assert "0 of 10 targets met" in targets and (out / "device.txt").is_file()
    profile = next(
        json.loads(line)
        for line in (out / "results.jsonl").read_text().splitlines()
        if '"run": "profile"' in line
    )
    assert set(profile["top"]) == {"semantic", "proposals"}
    assert all(row["ms"] >= 0 and row["op"] for rows in profile["top"].values() for row in rows)


def test_gpu_session_budget_skips_what_cannot_start_in_time(tmp_path):
    import os
    import subprocess

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    # 30 s: after the 15 s kept for check_targets, no benchmark has its 20 s
    env = dict(os.environ, SMOKE="1", PYTHON=sys.executable, WHEELS="", BUDGET_S="30")
    done = subprocess.run(
        ["bash", "bench/gpu_session.sh", str(out)], cwd=root, env=env, capture_output=True
    )
    log = (out / "session.log").read_text()
    assert done.returncode == 1
    assert "=== semantic_end2end: skipped" in log and "=== pipeline: skipped" in log
    assert "failed: semantic_end2end(skipped)" in log
    assert "0 of 10 targets met" in (out / "targets.txt").read_text()
    # RUNS= picks runs (a second call on the same lease)
    env.update(BUDGET_S="0", RUNS="cleanup")
    out = tmp_path / "picked"
    done = subprocess.run(
        ["bash", "bench/gpu_session.sh", str(out)], cwd=root, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stdout.decode()[-3000:]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [line.split('"run": "')[1].split('"')[0] for line in lines] == ["cleanup"]


def test_check_targets_verdicts():
    from check_targets import check

    gpu = "NVIDIA H100 80GB HBM3"
    results = [
        dict(run="semantic_end2end", device=gpu, rows=[
            dict(model="ours (timm DINOv2, SDPA)", median_s=0.062, speedup_vs_guide=12.5),
            dict(model="guide (mmseg VisionTransformer)", median_s=0.775),
        ]),
        dict(run="train_b4", device=gpu, images_per_s=18.0, peak_gib=14.2),
        dict(run="generator", device=gpu, speedup=6.0, stock_masks=40, our_masks=39,
             worst_best_iou=1.0),
    ]  # fmt: skip
    no_masks = dict(run="generator", device=gpu, speedup=3.0, stock_masks=0, our_masks=0,
                    worst_best_iou=1.0)  # fmt: skip
    verdicts = {target.name: verdict for target, _, verdict in check([no_masks])}
    # a run that kept no proposal timed the model work only: no figure, never "met"
    assert verdicts["generator masks match (worst best-match IoU)"] == "not measured"
    assert verdicts["generator speed-up vs segment-anything"] == "not measured"
    no_proposals = dict(run="two_stage", device=gpu, total_s=0.4, proposals=0)
    verdicts = {target.name: verdict for target, _, verdict in check([no_proposals])}
    assert verdicts["two-stage inference per 1920 px image"] == "not measured"
    verdicts = {t.name: v for t, _, v in check([{**no_proposals, "proposals": 12}])}
    assert verdicts["two-stage inference per 1920 px image"] == "met"
    verdicts = {t.name: v for t, _, v in check([{**no_proposals, "proposals": 12, "total_s": 1.2}])}
    assert verdicts["two-stage inference per 1920 px image"] == "MISSED"
    verdicts = {target.name: verdict for target, _, verdict in check(results)}
    assert verdicts["semantic 1920 px, end to end, bf16"] == "met"
    assert verdicts["semantic speed-up, ours bf16 vs the guide fp32"] == "met"
    assert verdicts["semantic 1920 px, end to end, guide fp32"] == "reported"
    assert verdicts["training, batch 4, data loading included"] == "MISSED"
    assert verdicts["training peak memory, batch 4"] == "met"
    assert verdicts["training peak memory, batch 8, checkpointing"] == "not measured"
    assert verdicts["generator speed-up vs segment-anything"] == "met"
    # a different mask count fails the equality target whatever the IoU
    assert verdicts["generator masks match (worst best-match IoU)"] == "MISSED"


def test_shard_bench_smallest_setting(capsys):
    import shard_bench

    result = shard_bench.main(images=2, image_size=64, points_per_side=2)
    one, two = result["rows"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["images"] == two["images"] == 2 and one["processing_images_per_s"] > 0
    ratio = two["processing_images_per_s"] / one["processing_images_per_s"]
    assert result["speedup"] == pytest.approx(ratio, rel=1e-2)
    assert two["wall_s"] >= two["processing_s"], "start-up is in the wall time only"
    assert '"benchmark": "shard"' in capsys.readouterr().out


def test_function_cpu_bench_smallest_setting(tmp_path):
    """Both paths through the packaged function's handler (CoralSCoP-shaped ViT-B, random
    weights, one encoder pass each) at a set count of kept proposals: the count each run
    really kept, and the same SAM items from both paths."""
    import json
    import subprocess

    out = tmp_path / "function.json"
    run = subprocess.run(
        [sys.executable, "bench/function_cpu_bench.py", "--size", "128", "--points", "2",
         "--crop-layers", "0", "--kept", "0,3", "--out", str(out)],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["prompts"] == 4
    rows = {(r["asked"], r["path"]): r for r in report["rows"]}
    assert rows[0, "pytorch"]["encoder_runtime"] == "torch"
    assert not rows[0, "pytorch"]["staged_decoding"]
    assert rows[0, "fast"]["encoder_runtime"] == "openvino" and rows[0, "fast"]["staged_decoding"]
    assert all(r["handler_s"] > 0 and r["peak_rss_mib"] > 0 for r in rows.values())
    assert rows[0, "pytorch"]["kept"] == rows[0, "fast"]["kept"] == 0
    assert rows[0, "fast"]["items_sam"] == 0, "nothing kept, no SAM item"
    assert rows[3, "pytorch"]["kept"] == rows[3, "fast"]["kept"] == 3
    same = rows[3, "fast"]["same_sam_items"]
    assert same["reference_items"] == same["other_items"] == rows[3, "fast"]["items_sam"]
    if same["reference_items"]:
        assert same["same_label"] == same["reference_items"] and same["min_iou"] >= 0.99


def test_kept_thresholds_sit_between_the_models_scores():
    from function_cpu_bench import thresholds_for

    rng = np.random.default_rng(0)
    scores = {"iou": rng.normal(-0.2, 0.3, 2048).tolist(), "coral": rng.random(2048).tolist()}
    iou = np.asarray(scores["iou"])
    coral = np.asarray(scores["coral"])
    for kept in (1, 100, 300, 1000):
        threshold, cut = thresholds_for(scores, kept)
        passing = iou > threshold
        assert abs(int(passing.sum()) - kept) <= kept // 100
        assert np.abs(iou - threshold).min() > 0, "never on a prediction"
        assert (coral[passing] > cut).all(), "every prompt above the IoU threshold is coral"
    threshold, _ = thresholds_for(scores, 0)
    assert not (iou > threshold).any() and threshold != 0


def test_function_bench_matches_answers_by_iou():
    from function_cpu_bench import compare_answers

    def item(label, x0, y0, x1, y1):
        crop = [1] * ((x1 - x0 + 1) * (y1 - y0 + 1))
        return {"label": label, "mask": [*crop, x0, y0, x1, y1]}

    reference = [item("Acropora", 0, 0, 9, 9), item("Porites", 20, 20, 29, 29)]
    other = [item("Porites", 20, 20, 29, 28), item("Acropora", 0, 0, 9, 9)]  # one row less
    result = compare_answers(reference, other, 32)
    assert result["same_label"] == 2 and result["min_iou"] == 0.9 and result["mean_iou"] == 0.95
    assert result["matched_iou_ge_0.9"] == 2


def test_annotation_rank_bench_smallest_setting(capsys):
    import annotation_rank_bench

    assert annotation_rank_bench.main(["--sizes", "300", "--dims", "16"]) == 0
    out = capsys.readouterr().out
    rows = __import__("json").loads(out.strip().splitlines()[-1])
    assert [(r["candidates"], r["strategy"]) for r in rows] == [(300, "hybrid"), (300, "random")]
    assert all(r["peak_rss_mib"] > 0 for r in rows)


def test_annotation_loop_bench_smallest_setting(fiftyone, tmp_path, capsys):
    """One round per strategy, one seed, the tiniest pool: the loop's real steps end in
    the summary table and figure."""
    import annotation_loop_bench

    args = ["--out", str(tmp_path), "--pool", "24", "--test", "4", "--val", "3", "--start", "4",
            "--per-round", "3", "--rounds", "1", "--seeds", "7", "--image-size", "64",
            "--start-epochs", "1", "--epochs", "1"]  # fmt: skip
    assert annotation_loop_bench.main(args) == 0
    summary = (tmp_path / "summary.md").read_text()
    assert "| hybrid | 1 | 7 | " in summary and "| random | 1 | 7 | " in summary
    assert (tmp_path / "annotation_loop.png").read_bytes()[:4] == b"\x89PNG"
    assert "random's final mean mIoU" in capsys.readouterr().out


def test_labels_to_reach_interpolates_between_rounds():
    from annotation_loop_bench import labels_to_reach

    curve = [(20, 0.5), (40, 0.6), (60, 0.7)]
    assert labels_to_reach(curve, 0.65) == pytest.approx(50)
    assert labels_to_reach(curve, 0.5) == 20
    assert labels_to_reach(curve, 0.71) is None
