"""inference_with_coralscop.py --taglab: the run's predictions as a TagLab project, read back
colony for colony; maps TagLab cannot hold are named, the rest written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from rasterio.features import rasterize

from dataset.image_io import read_rgb
from exchange.run_to_taglab import PROJECT, write_run_project
from exchange.taglab import read_taglab_project
from mosaic.synthetic import write_mosaic

ROOT = Path(__file__).resolve().parents[1]


def _quadrat(size: int, seed: int) -> np.ndarray:
    """Coloured discs on sand, the kind of picture the tiny random model splits into regions."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), (194, 178, 128), np.uint8)
    for _ in range(10):
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        centre = tuple(int(v) for v in rng.integers(10, size - 10, 2))
        cv2.circle(image, centre, int(rng.integers(8, 30)), colour, -1)
    return image


def _mask(geometry, shape) -> np.ndarray:
    return rasterize([(geometry, 1)], out_shape=shape, dtype="uint8").astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max((a | b).sum(), 1)


def test_a_runs_predictions_become_a_taglab_project_colony_for_colony(
    tmp_path, monkeypatch, capsys, random_semantic_checkpoint
):
    monkeypatch.syspath_prepend(str(ROOT))
    import inference_with_coralscop as cli
    from models import coralscop

    monkeypatch.setattr(coralscop, "SAM_VIT_B", coralscop.SAM_TINY)
    inputs = tmp_path / "in"
    write_mosaic(inputs / "ortho.tif", [_quadrat(128, s) for s in range(3)], height=180, width=200)
    assert cv2.imwrite(str(inputs / "photo.png"), _quadrat(96, 7))
    # a camera JPEG stored landscape, shown portrait (EXIF Orientation 6), dated
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x0132] = "2024:03:15 10:20:00"
    Image.fromarray(_quadrat(80, 8)[:64]).save(inputs / "rotated.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    args = ["--input-dir", str(inputs), "--output-dir", str(out),
            "--segformer-config", str(ROOT / "configs/reef_demo_tiny.py"),
            "--segformer-weights", str(random_semantic_checkpoint), "--device", "cpu",
            "--points-per-side", "2", "--crop-n-layers", "0", "--min-area", "10",
            "--tile-size", "128", "--tile-overlap", "32", "--min-threshold", "0",
            "--taglab"]  # fmt: skip
    monkeypatch.setattr("mosaic.pipeline.TILED_ABOVE_PIXELS", 30_000)  # 200 x 180 is "large"
    assert cli.main(args) == 0
    maps = {m.name: m for m in read_taglab_project(out / PROJECT, join_parts=True)}
    assert sorted(maps) == ["ortho", "photo", "rotated"]

    # the tiled orthomosaic: its own file, georeferenced, 1 mm pixels, the GeoJSON's colonies
    ortho = maps["ortho"]
    assert ortho.image == (inputs / "ortho.tif").resolve() == ortho.georeference
    assert ortho.mm_per_pixel == pytest.approx(1.0, rel=1e-3)
    with rasterio.open(inputs / "ortho.tif") as src:
        to_pixels = ~src.transform
    matrix = [to_pixels.a, to_pixels.b, to_pixels.d, to_pixels.e, to_pixels.c, to_pixels.f]
    features = json.loads((out / "mosaics/ortho.geojson").read_text())["features"]
    assert len(features) == len(ortho.regions) > 0
    by_id = {r.id: r for r in ortho.regions}
    for feature in features:
        placed = shapely.affinity.affine_transform(shapely.geometry.shape(feature["geometry"]),
                                                   matrix)  # fmt: skip
        region = by_id[feature["properties"]["id"]]
        assert region.label == feature["properties"]["class"]
        assert region.confidence == pytest.approx(feature["properties"]["confidence"], abs=1e-4)
        assert _iou(_mask(region.geometry, (180, 200)), _mask(placed, (180, 200))) >= 0.999

    # whole images: the instance masks the run wrote, pixel for pixel
    predictions = json.loads((out / "predictions.json").read_text())
    classes = {c["id"]: c["name"] for c in predictions["categories"]}
    for name, shape in (("photo", (96, 96)), ("rotated", (80, 64))):
        found = maps[name]
        assert (found.height, found.width) == shape
        masks = sorted((out / "masks" / name).glob("instance_*.png"))
        assert len(masks) == len(found.regions) > 0
        image_id = next(i["id"] for i in predictions["images"] if i["file_name"].startswith(name))
        scores = [a for a in predictions["annotations"] if a["image_id"] == image_id]
        for number, (mask_file, region) in enumerate(zip(masks, found.regions, strict=True)):
            assert _iou(_mask(region.geometry, shape), cv2.imread(str(mask_file), 0) > 0) == 1.0
            assert region.label == classes[scores[number]["category_id"]]
    assert maps["photo"].image == (inputs / "photo.png").resolve()  # TagLab shows it as is
    # the rotated JPEG: TagLab would draw its stored (landscape) pixels, so the map's image
    # is an upright copy with the pixels the model saw
    rotated = maps["rotated"]
    assert rotated.image == (out / "taglab_images/rotated.png").resolve()
    np.testing.assert_array_equal(read_rgb(rotated.image), read_rgb(inputs / "rotated.jpg"))
    assert rotated.acquisition_date == "2024-03-15"

    # people correct the project in TagLab and save it in place, and edit the colonies'
    # GeoPackage in QGIS: a rerun keeps their project and writes its own beside it, and
    # --overwrite with other settings is refused, naming both, with nothing removed
    corrected = (out / PROJECT).read_bytes() + b"\n"
    (out / PROJECT).write_bytes(corrected)
    assert cli.main(args) == 0
    assert (out / PROJECT).read_bytes() == corrected
    assert read_taglab_project(out / "taglab_project.new.json")[0].name == "ortho"
    os.utime(out / "mosaics/ortho.gpkg")  # saved after the run's record of the image
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert cli.main([*args, "--overwrite", "--min-area", "12"]) == 2
    refusal = capsys.readouterr().err
    assert "mosaics/ortho.gpkg" in refusal and PROJECT in refusal
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert (out / PROJECT).read_bytes() == corrected


def test_maps_over_taglabs_limit_are_named_and_the_rest_written(tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    for path in (small, large):
        assert cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    records = {
        "small": {"image": {"file_name": "small.png", "height": 8, "width": 8},
                  "annotations": []},
        "large": {"image": {"file_name": "large.png", "height": 8, "width": 40000},
                  "annotations": []},
    }  # fmt: skip
    for stem, record in records.items():
        (tmp_path / f"{stem}.json").write_text(json.dumps(record))
    path, refused = write_run_project(
        tmp_path, [small, large], lambda stem: tmp_path / f"{stem}.json",
        ["background", "Acropora"], [[0, 0, 0], [60, 180, 75]],
    )  # fmt: skip
    assert refused == ["large.png"]
    assert [m.name for m in read_taglab_project(path)] == ["small"]
