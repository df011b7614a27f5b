"""reef_stats.py summarize: the demo's own command line, every output file, bad inputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_analysis_synthetic import (
    ACROPORA,
    FINE,
    POCILLOPORA,
    PORITES,
    Instance,
    disc,
    write_png,
    write_prepared,
    write_two_stage,
)

import reef_stats
from analysis.sources import ClassInfo, colonies_of_class_map

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (128, 128)
COLUMNS = {
    "images.csv": [
        "image",
        "file_name",
        "group",
        "source",
        "width",
        "height",
        "valid_pixels",
        "valid_area_cm2",
        "valid_area_m2",
        "mm_per_pixel",
        "scale_source",
        "cover_from",
        "colonies",
    ],
    "cover.csv": [
        "image",
        "file_name",
        "group",
        "source",
        "class_index",
        "class",
        "pixels",
        "valid_pixels",
        "cover_percent",
        "area_cm2",
    ],
    "colonies.csv": [
        "image",
        "file_name",
        "group",
        "source",
        "colony_id",
        "genus",
        "class_index",
        "confidence",
        "unsure",
        "touches_edge",
        "area_px",
        "perimeter_px",
        "feret_px",
        "centroid_row",
        "centroid_col",
        "area_cm2",
        "perimeter_cm",
        "feret_cm",
    ],
    "groups.csv": [
        "group",
        "source",
        "class",
        "images",
        "cover_mean",
        "cover_sd",
        "cover_se",
        "cover_min",
        "cover_max",
        "colonies",
        "area_m2",
        "density_images",
        "density_per_m2",
    ],
    "size_classes.csv": [
        "group",
        "source",
        "genus",
        "size_class",
        "lower",
        "upper",
        "unit",
        "colonies",
        "fraction",
    ],
    "cover_error.csv": ["class", "images", "mean_error_pp", "mean_abs_error_pp"],
    "coralnet/predicted/annotations.csv": ["Name", "Row", "Column", "Label code"],
    "coralnet/annotated/annotations.csv": ["Name", "Row", "Column", "Label code"],
}


def demo_like_tree(base: Path, count: int = 4) -> tuple[Path, Path, dict, dict]:
    """What the demo has after step 6: a prepared reef_demo (test split) and a two-stage
    output with semantic maps; predictions a little off the annotations."""
    maps, semantic, instances = {}, {}, {}
    for k in range(count):
        stem = f"reef_{6 * k + 5:03d}"
        truth = np.zeros(SHAPE, np.uint8)
        truth[disc(SHAPE, (40, 40 + 5 * k), 15)] = ACROPORA
        truth[disc(SHAPE, (90, 90), 12)] = PORITES
        truth[120:, :10] = 255  # an unknown label, ignored
        pred = truth.copy()
        pred[pred == 255] = 0
        pred[disc(SHAPE, (95, 30), 8 + k)] = POCILLOPORA  # a false positive, growing with k
        maps[stem], semantic[stem] = truth, pred
        colonies = colonies_of_class_map(pred, ClassInfo.from_names(FINE.classes))
        instances[stem] = [
            Instance(c.full(SHAPE), c.class_index, 0.3 + 0.1 * i) for i, c in enumerate(colonies)
        ]
    data_root = base / "data" / "prepared_for_training"
    write_prepared(data_root / "reef_demo", maps)
    infer_dir = write_two_stage(
        base / "results" / "two_stage_inference", instances, semantic, SHAPE
    )
    return data_root, infer_dir, maps, semantic


def demo_lines() -> str:
    text = (ROOT / "demo.sh").read_text()
    return re.search(r"# >>> reef numbers\n(.*?)# <<< reef numbers", text, re.S).group(1)


def test_the_demos_report_step_runs_as_written_and_the_report_is_self_contained(tmp_path):
    data_root, infer_dir, maps, semantic = demo_like_tree(tmp_path)
    stats_dir = tmp_path / "results" / "reef_stats"
    env = dict(
        os.environ,
        DATA_ROOT=str(data_root),
        INFER_DIR=str(infer_dir),
        STATS_DIR=str(stats_dir),
        PY=sys.executable,
    )
    script = 'set -euo pipefail\npython() { "$PY" "$@"; }\n' + demo_lines()
    run = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert f"Report: {stats_dir / 'report.html'}" in run.stdout
    for name, columns in COLUMNS.items():
        assert list(pd.read_csv(stats_dir / name).columns) == columns, name

    html = (stats_dir / "report.html").read_text()
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    assert not re.search(r"https?:|//[a-z]|<script|<link|@import|url\(|<iframe", text, re.I)
    assert "Acropora (predicted)</th>" in html and "Acropora (annotated)</th>" in html
    # the report's cover values are the bincounts of the maps over the pixels not ignored
    for stem, truth in maps.items():
        valid = truth != 255
        for class_map in (semantic[stem], truth):  # predicted, annotated
            cover = np.bincount(class_map[valid], minlength=256)[ACROPORA] / valid.sum() * 100
            assert f"<td>{cover:.2f}</td>" in html
        assert f"<td>{stem}</td>" in html
    assert "Cover error, predicted - annotated" in html and "&lt;NA&gt;" not in html


def run_summarize(*args) -> int:
    return reef_stats.main(["summarize", *map(str, args)])


def test_outputs_are_not_clobbered_without_overwrite(tmp_path, capsys):
    data_root, infer_dir, _, _ = demo_like_tree(tmp_path, count=1)
    out = tmp_path / "stats"
    assert run_summarize(infer_dir, "--output-dir", out) == 0
    (out / "mine.txt").write_text("keep")
    assert run_summarize(infer_dir, "--output-dir", out) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").exists()
    assert run_summarize(infer_dir, "--output-dir", out, "--overwrite") == 2
    assert "did not write (mine.txt)" in capsys.readouterr().err, "a file of the user's"
    assert (out / "mine.txt").read_text() == "keep"
    (out / "mine.txt").unlink()
    (out / "report.html").unlink()
    assert run_summarize(infer_dir, "--output-dir", out, "--overwrite") == 0
    assert (out / "report.html").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_a_bad_image_is_named_the_others_counted_and_the_exit_is_non_zero(tmp_path, caplog):
    data_root, infer_dir, maps, _ = demo_like_tree(tmp_path, count=3)
    broken = sorted(maps)[1]
    (infer_dir / "semantic" / f"{broken}.png").write_bytes(b"not a png")
    out = tmp_path / "stats"
    status = run_summarize(infer_dir, "--truth", data_root / "reef_demo", "--output-dir", out)
    assert status == 1
    assert f"{broken}.png: cannot be decoded" in caplog.text
    counted = set(pd.read_csv(out / "images.csv")["image"])
    assert counted == set(maps) - {broken}
    assert f"{broken}: " in (out / "report.html").read_text()


def test_predicted_class_maps_with_groups_quadrat_and_scale(tmp_path):
    """test.py --pred-dir maps, a groups CSV, a quadrat polygon and --mm-per-pixel."""
    data_root, _, maps, semantic = demo_like_tree(tmp_path)
    pred_dir = tmp_path / "pred"
    for stem, class_map in semantic.items():
        write_png(pred_dir / f"{stem}.png", class_map)
    groups = tmp_path / "groups.csv"
    stems = sorted(maps)
    groups.write_text(
        "image,site,date\n"
        + "".join(
            f"{s}.jpg,{'MOO' if i < 2 else 'TIA'},2024-05-0{i + 1}\n" for i, s in enumerate(stems)
        )
    )
    out = tmp_path / "stats"
    status = run_summarize(
        pred_dir,
        "--classes",
        data_root / "reef_demo",
        "--groups",
        groups,
        "--group-by",
        "site",
        "--mm-per-pixel",
        "2",
        "--quadrat-polygon",
        "0,0 100,0 100,100 0,100",
        "--points",
        "16",
        "--output-dir",
        out,
    )
    assert status == 0
    cover = pd.read_csv(out / "cover.csv")
    inside = np.zeros(SHAPE, bool)
    inside[:101, :101] = True  # polygon2mask includes the polygon's edge pixels
    for stem, class_map in semantic.items():
        expected = np.bincount(class_map[inside], minlength=256)[: len(FINE.classes)]
        rows = cover[cover["image"] == stem].sort_values("class_index")
        assert rows["pixels"].tolist() == expected.tolist()
        assert np.allclose(rows["area_cm2"], expected * 0.04)
    groups_out = pd.read_csv(out / "groups.csv")
    assert set(groups_out["site"]) == {"MOO", "TIA"} and "date" not in groups_out
    moo = groups_out[(groups_out["site"] == "MOO") & (groups_out["class"] == "Acropora")]
    assert moo["area_m2"].item() == pytest.approx(2 * inside.sum() * 4e-6)
    points = pd.read_csv(out / "coralnet" / "predicted" / "annotations.csv")
    assert len(points) == 16 * len(stems) and points["Row"].max() <= 100
    assert set(points["Name"]) == {f"{s}.jpg" for s in stems}  # the photos' names


def test_annotations_alone_with_a_file_name_pattern(tmp_path):
    data_root, _, maps, _ = demo_like_tree(tmp_path)
    out = tmp_path / "stats"
    assert (
        run_summarize(
            data_root / "reef_demo",
            "--split",
            "test",
            "--group-pattern",
            r"reef_(?P<block>\d)",
            "--output-dir",
            out,
        )
        == 0
    )
    images = pd.read_csv(out / "images.csv")
    assert set(images["source"]) == {"annotated"} and "block" in images
    assert not (out / "cover_error.csv").exists()
    table = pd.read_csv(out / "coralnet" / "annotated" / "percent_covers.csv")
    assert table["Annotation status"].iloc[0] == "Confirmed"
    assert table["Image ID"].iloc[-1] == "ALL IMAGES"


def test_a_folder_of_something_else_is_refused_with_advice(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_summarize(tmp_path / "empty", "--output-dir", tmp_path / "o") == 2
    assert "needs --classes" in capsys.readouterr().err
    assert run_summarize(tmp_path / "nowhere", "--output-dir", tmp_path / "o") == 2
    assert "does not exist" in capsys.readouterr().err
    assert run_summarize(tmp_path / "empty", "--points", 5000, "--output-dir", tmp_path / "o") == 2
    assert "--points 5000: CoralNet takes 1 to 1000" in capsys.readouterr().err


def test_coralnet_names_the_photos_without_images(tmp_path, caplog):
    """Issue 23 item 7: without --images, CoralNet's files name each image as the photo
    CoralNet holds: from the prepared dataset's manifest.csv (the file prepare_data.py
    read), from the inference record, and never silently as the class map's <stem>.png."""
    data_root, infer_dir, maps, semantic = demo_like_tree(tmp_path, count=2)
    prepared = data_root / "reef_demo"
    stems = sorted(maps)
    photos = {stem: f"IMG_{k + 1:04d}.JPG" for k, stem in enumerate(stems)}  # camera names
    rows = [
        f"{k},/field/2024/{photos[s]},test,images/test/{s}.jpg,annotations/test/{s}.png,"
        "128,128,128,128,2,0\n"
        for k, s in enumerate(stems)
    ]
    (prepared / "manifest.csv").write_text(
        "sample_id,source_filepath,split,image,annotation,width,height,source_width,"
        "source_height,num_shapes,shapes_outside\n" + "".join(rows)
    )

    def names(out: Path, role: str) -> tuple[set, set]:
        points = pd.read_csv(out / "coralnet" / role / "annotations.csv")
        covers = pd.read_csv(out / "coralnet" / role / "percent_covers.csv")
        return set(points["Name"]), set(covers["Image name"].dropna())

    # inference ran on the prepared copies (reef_005.jpg); the manifest knows the photos
    out = tmp_path / "with_truth"
    assert run_summarize(infer_dir, "--truth", prepared, "--points", 4, "--output-dir", out) == 0
    for role in ("predicted", "annotated"):
        assert names(out, role) == (set(photos.values()), set(photos.values())), role
    assert set(pd.read_csv(out / "images.csv")["file_name"]) == set(photos.values())
    out = tmp_path / "annotations_alone"
    assert run_summarize(prepared, "--points", 4, "--output-dir", out) == 0
    assert names(out, "annotated")[0] == set(photos.values())

    # the semantic/ maps of the output as class maps: the inference record names the files
    out = tmp_path / "semantic_maps"
    args = ("--classes", "fine", "--points", 4, "--output-dir", out)
    assert run_summarize(infer_dir / "semantic", *args) == 0
    assert names(out, "predicted")[0] == {f"{s}.jpg" for s in stems}

    # nothing names the photos: <stem>.png, and the log says which images and what to do
    pred_dir = tmp_path / "pred"
    for stem, class_map in semantic.items():
        write_png(pred_dir / f"{stem}.png", class_map)
    out = tmp_path / "unnamed"
    caplog.clear()
    assert run_summarize(pred_dir, "--classes", "fine", "--points", 4, "--output-dir", out) == 0
    assert names(out, "predicted")[0] == {f"{s}.png" for s in stems}
    assert f"No photo name is known for 2 image(s) ({', '.join(stems)})" in caplog.text
    assert "give --images PHOTOS" in caplog.text
