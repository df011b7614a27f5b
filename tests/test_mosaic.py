"""Tiled two-stage inference of large images (mosaic/): blending, seams, georeference.

The models here are deterministic stand-ins built from real torch modules, so that
what a property means is known: a per-pixel semantic model (a 1x1 convolution from
colour to class logits) gives the same probabilities however the image is cut, and a
proposer that returns each connected blob of coral colour as a mask sees exactly the
part of a colony inside its tile. Then tiled and whole-image results must agree, and
a colony cut by seams must come back whole. One end-to-end run goes through
inference_with_coralscop.py with the tiny real models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
import shapely
import torch
from rasterio.features import rasterize
from rasterio.transform import Affine

from models.fusion import FusionSettings, fuse
from mosaic.blend import Blender
from mosaic.pipeline import TileSettings, run_tiled
from mosaic.seams import Piece, SeamMerger, mask_polygon
from mosaic.synthetic import write_mosaic
from mosaic.windows import grid, spans, weights

CLASSES = ["background", "red_coral", "green_coral"]
BACKGROUND, RED, GREEN = (60, 60, 60), (220, 40, 40), (40, 220, 40)
FUSION = FusionSettings(min_threshold=0.05, unsure_threshold=0.2, nms_threshold=0.5, min_area=20)
# A 1 mm UTM grid cell near the central meridian is 1 / 0.9996 mm on the ground (UTM's
# scale factor there): ground areas (mosaic/ground.py) are 0.08 % over the grid's.
UTM_M2_PER_MM2_CELL = 1e-6 / 0.9996**2


class ColourClasses(torch.nn.Module):
    """Per-pixel class probabilities from colour: dark gray background, red, green."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(
                torch.tensor([[0, 0, 0], [20, 0, 0], [0, 20, 0.0]])[..., None, None]
            )
            self.conv.bias.copy_(torch.tensor([10.0, 0, 0]))

    @torch.inference_mode()
    def forward(self, rgb: np.ndarray) -> torch.Tensor:
        pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
        return self.conv(pixels)[0].softmax(0)


@dataclass
class Blobs:
    masks: torch.Tensor


class BlobProposer(torch.nn.Module):
    """One proposal per 8-connected blob of saturated colour (a stand-in for CoralSCoP)."""

    def forward(self, rgb: np.ndarray) -> Blobs:
        coral = (rgb.max(2).astype(int) - rgb.min(2)) > 100
        count, labels = cv2.connectedComponents(coral.astype(np.uint8), connectivity=8)
        masks = (
            np.stack([labels == k for k in range(1, count)])
            if count > 1
            else np.zeros((0, *rgb.shape[:2]), bool)
        )
        return Blobs(torch.from_numpy(masks))


def _run(path: Path, out: Path, tile: int, overlap: int, **settings):
    return run_tiled(path, out, ColourClasses(), BlobProposer(), FUSION, CLASSES, None,
                     TileSettings(tile, overlap, **settings))  # fmt: skip


def _features(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


def test_tiles_cover_the_image_and_their_weights_sum_to_one():
    for length, tile, overlap in ((1000, 256, 64), (256, 256, 64), (100, 256, 32), (700, 200, 17)):
        found = spans(length, tile, overlap)
        assert found[0].start == 0 and found[-1].stop == length and found[-1].final == length
        owners = np.zeros(length, int)
        for span in found:
            assert span.start <= span.core_start < span.core_stop <= span.stop
            owners[span.core_start : span.core_stop] += 1
        assert (owners == 1).all(), "the cores partition the axis"
        for a, b in zip(found, found[1:], strict=False):
            assert a.final == b.start and a.stop - b.start == overlap  # neighbours only
    total = np.zeros((530, 770), np.float32)
    for row in grid(530, 770, 200, 60):
        for tile in row:
            total[tile.rows.start : tile.rows.stop, tile.cols.start : tile.cols.stop] += weights(
                tile, 60
            )
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_blending_streams_the_same_probabilities_as_the_whole_image():
    """Tiles cut from one probability field come out as that field's argmax and maximum."""
    rng = np.random.default_rng(0)
    field = cv2.GaussianBlur(rng.random((5, 410, 530)).astype(np.float32).transpose(1, 2, 0),
                             (0, 0), 6).transpose(2, 0, 1)  # fmt: skip
    field /= field.sum(0, keepdims=True)
    classes = np.zeros(field.shape[1:], np.uint8)
    confidence = np.zeros(field.shape[1:], np.uint8)
    blender = Blender(530, 5, 48)
    for row in grid(410, 530, 128, 48):
        for tile in row:
            r, c = tile.rows, tile.cols
            block = blender.add(tile, field[:, r.start : r.stop, c.start : c.stop].copy())
            h, w = block.classes.shape
            assert (block.row0, block.col0, h, w) == (r.start, c.start, r.final - r.start,
                                                      c.final - c.start)  # fmt: skip
            classes[r.start : r.final, c.start : c.final] = block.classes
            confidence[r.start : r.final, c.start : c.final] = block.confidence
    assert np.array_equal(classes, field.argmax(0))
    expected = np.round(field.max(0) * 255)
    assert np.abs(confidence.astype(int) - expected).max() <= 1


def test_seam_merge_joins_pieces_of_one_colony_and_keeps_neighbours_apart():
    tiles = grid(100, 180, 100, 20)[0]  # two tiles side by side, sharing columns 80-99
    disc = np.zeros((100, 180), bool)
    cv2.circle(disc.view(np.uint8), (90, 50), 30, 1, -1)
    other = np.zeros((100, 180), bool)
    other[5:15, 60:100] = True  # a second colony of the same class, in the overlap
    merger = SeamMerger(unsure_threshold=0.2)
    for tile, score in zip(tiles, (0.9, 0.5), strict=True):
        cols = slice(tile.cols.start, tile.cols.stop)
        pieces = [
            Piece(tile.key, 1, score, "sam", mask_polygon(mask[:, cols], 0, tile.cols.start))
            for mask in (disc, other)
        ]
        merger.add(tile, pieces)
    colonies = merger.finish()
    assert sorted(c.area_px for c in colonies) == sorted([disc.sum(), other.sum()])
    big = max(colonies, key=lambda c: c.area_px)
    # the areas the pieces keep (each tile's core: columns 0-89 and 90-179) weigh their
    # confidences
    left, right = disc[:, :90].sum(), disc[:, 90:].sum()
    assert big.confidence == pytest.approx((0.9 * left + 0.5 * right) / (left + right))


def _georeferenced_mosaic(path: Path, width=3000, height=2000) -> tuple[Path, dict]:
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    colonies = {}
    # across the vertical seam between the first two tile columns (tiles of 512, overlap 64)
    cv2.ellipse(image, (470, 300), (60, 40), 0, 0, 360, RED, -1)
    colonies["seam"] = (RED, (470, 300))
    # a massive colony over 3 x 3 tiles (centre tile (2, 3): rows 896-1408, columns 1344-1856)
    cv2.circle(image, (1600, 1150), 560, GREEN, -1)
    colonies["massive"] = (GREEN, (1600, 1150))
    cv2.circle(image, (2700, 250), 50, RED, -1)
    colonies["alone"] = (RED, (2700, 250))
    transform = Affine(0.001, 0, 500_000.0, 0, -0.001, 8_200_000.0)
    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                   crs="EPSG:32755", transform=transform, tiled=True)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image.transpose(2, 0, 1))
    return path, {"image": image, "colonies": colonies, "transform": transform}


def test_georeferenced_mosaic_gives_georeferenced_maps_and_whole_colonies(tmp_path):
    path, truth = _georeferenced_mosaic(tmp_path / "reef.tif")
    result = _run(path, tmp_path / "out", 512, 64)
    assert result.tiles == 7 * 5
    with rasterio.open(path) as src, rasterio.open(result.outputs["classes"]) as classes:
        assert classes.crs == src.crs and classes.transform == src.transform
        assert classes.profile["tiled"] and classes.dtypes == ("uint8",)
        class_map = classes.read(1)
        bounds = src.bounds
    expected = ColourClasses()(truth["image"]).argmax(0).numpy()
    assert np.array_equal(class_map, expected)
    collection = json.loads(result.outputs["colonies"].read_text())
    assert collection["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32755"
    features = collection["features"]
    assert len(features) == 3, [f["properties"] for f in features]
    for feature in features:
        geometry = shapely.geometry.shape(feature["geometry"])
        assert geometry.is_valid and geometry.geom_type == "Polygon"
        x0, y0, x1, y1 = geometry.bounds  # metres of UTM 55S, inside the mosaic
        assert bounds.left <= x0 < x1 <= bounds.right and bounds.bottom <= y0 < y1 <= bounds.top
        # area: the colony's pixels counted on the image, in px and in m2 at 1 mm/px
        col, row = ~truth["transform"] @ geometry.representative_point().coords[0]
        colour = truth["image"][int(row), int(col)]
        count, labels = cv2.connectedComponents(
            np.all(truth["image"] == colour, axis=2).astype(np.uint8), connectivity=8
        )
        pixels = int((labels == labels[int(row), int(col)]).sum())
        props = feature["properties"]
        assert props["area_px"] == pixels
        assert props["area_m2"] == pytest.approx(pixels * UTM_M2_PER_MM2_CELL, rel=1e-3)
        assert geometry.area == pytest.approx(pixels * 1e-6)  # in the grid's metres
        assert props["class"] == CLASSES[props["class_index"]] and props["confidence"] > 0.9
    assert {f["properties"]["class"] for f in features} == {"red_coral", "green_coral"}
    # the GeoPackage beside it holds the same colonies, for QGIS
    import pyogrio

    info = pyogrio.read_info(result.outputs["geopackage"])
    assert info["layer_name"] == "reef" and info["crs"] == "EPSG:32755"
    meta, _, wkb, fields = pyogrio.raw.read(result.outputs["geopackage"])
    packaged = dict(zip(meta["fields"], fields, strict=True))
    assert list(packaged["id"]) == [f["properties"]["id"] for f in features]
    assert list(packaged["class"]) == [f["properties"]["class"] for f in features]
    for feature, geometry in zip(features, shapely.from_wkb(wkb), strict=True):
        assert geometry.equals(shapely.geometry.shape(feature["geometry"]))


def _quadrat(size: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(BACKGROUND[0], 8, (size, size, 3)), 0, 255).astype(np.uint8)
    for _ in range(14):
        colour = RED if rng.random() < 0.5 else GREEN
        centre = tuple(int(v) for v in rng.integers(20, size - 20, 2))
        axes = tuple(int(v) for v in rng.integers(12, 70, 2))
        cv2.ellipse(image, centre, axes, int(rng.integers(180)), 0, 360, colour, -1)
    noise = rng.normal(0, 10, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def test_tiled_and_whole_image_agree_on_a_quadrat(tmp_path):
    image = _quadrat(640)
    path = tmp_path / "quadrat.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    result = _run(path, tmp_path / "out", 256, 64)
    assert result.tiles == 9
    probs = ColourClasses()(image)
    whole = fuse(probs, BlobProposer()(image).masks, FUSION)
    with rasterio.open(result.outputs["classes"]) as classes:
        assert classes.crs is None  # a PNG has no georeference
        agree = (classes.read(1) == probs.argmax(0).numpy()).mean()
    assert agree >= 0.995
    tiled = [
        rasterize([(f["geometry"], 1)], out_shape=image.shape[:2], dtype="uint8").astype(bool)
        for f in _features(result.outputs["colonies"])
    ]
    assert len(tiled) == len(whole) > 5
    for inst in whole:
        best = max((inst.mask & t).sum() / (inst.mask | t).sum() for t in tiled)
        assert best >= 0.9


def test_end_to_end_through_the_command_with_the_tiny_models(
    tmp_path, monkeypatch, capsys, random_semantic_checkpoint
):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    import inference_with_coralscop as cli
    from models import coralscop

    monkeypatch.setattr(coralscop, "SAM_VIT_B", coralscop.SAM_TINY)
    inputs = tmp_path / "in"
    write_mosaic(inputs / "ortho.tif", [_quadrat(128, s) for s in range(3)], height=180, width=200)
    assert cv2.imwrite(
        str(inputs / "photo.png"), _quadrat(96)
    )  # a small photo: the whole-image path
    args = ["--input-dir", str(inputs), "--output-dir", str(tmp_path / "out"),
            "--segformer-config", str(Path(__file__).parents[1] / "configs/reef_demo_tiny.py"),
            "--segformer-weights", str(random_semantic_checkpoint), "--device", "cpu",
            "--points-per-side", "2", "--crop-n-layers", "0", "--min-area", "10",
            "--tile-size", "128", "--tile-overlap", "32"]  # fmt: skip
    for overlap in (100, 0):  # more than half a tile; no strip to merge colonies in
        with pytest.raises(SystemExit) as stopped:
            cli.main([*args, "--tile-overlap", str(overlap)])
        assert stopped.value.code == 2
        assert f"--tile-overlap {overlap}: must be between 16 and half the tile size (64)" in (
            capsys.readouterr().err
        )
    monkeypatch.setattr("mosaic.pipeline.TILED_ABOVE_PIXELS", 30_000)  # 200 x 180 is "large"
    assert cli.main(args) == 0
    out = tmp_path / "out"
    with rasterio.open(out / "mosaics/ortho.classes.tif") as classes:
        assert classes.crs.to_epsg() == 32755 and classes.read(1).shape == (180, 200)
        assert json.loads(classes.tags()["classes"])[0] == "background"
    collection = json.loads((out / "mosaics/ortho.geojson").read_text())
    record = json.loads((out / ".per_image/ortho.json").read_text())
    assert record["mosaic"]["colonies"] == len(collection["features"])
    assert record["mosaic"]["tiles"] == 4
    assert record["mosaic"]["m2_per_pixel"] == pytest.approx(UTM_M2_PER_MM2_CELL, rel=1e-3)
    predictions = json.loads((out / "predictions.json").read_text())
    assert [i["file_name"] for i in predictions["images"]] == ["photo.png"]
    log = (out / "inference_log.txt").read_text()
    assert "ortho.tif: 200 x 180 px in 4 tiles" in log and "photo.png: " in log
    assert cli.main(args) == 0  # a rerun: both done, nothing redone
    assert "0 to process" in (out / "inference_log.txt").read_text()


# the demo's python, with the tiny SAM in place of ViT-B (minutes per tile on a CPU)
DEMO_PYTHON = """
import runpy, sys
from models import coralscop
coralscop.SAM_VIT_B = coralscop.SAM_TINY
if sys.argv[1] == "-m":
    sys.argv = sys.argv[2:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_the_demos_orthomosaic_stages_run_as_written(tmp_path, random_semantic_checkpoint):
    """Steps 6 and 7 of demo.sh: tiled inference with --taglab, then the TagLab project and
    the GeoPackage back into prepare_data.py and reef_stats.py."""
    import os
    import re
    import subprocess
    import sys

    from dataset.reef_demo import render_sample

    root = Path(__file__).resolve().parents[1]
    text = (root / "demo.sh").read_text()
    lines = "".join(re.search(rf"# >>> {block}\n(.*?)# <<< {block}", text, re.S).group(1)
                    for block in ("orthomosaic", "exchange"))  # fmt: skip
    data_root, work_dir = tmp_path / "prepared", tmp_path / "work"
    (data_root / "reef_demo/images/test").mkdir(parents=True)
    for index in range(4):
        image = render_sample(index, 200)[0]
        path = data_root / f"reef_demo/images/test/quadrat_{index}.jpg"
        assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    work_dir.mkdir()
    (work_dir / "best_mIoU.pth").symlink_to(random_semantic_checkpoint)
    ortho_dir, ortho_out = tmp_path / "ortho", tmp_path / "ortho_out"
    env = dict(os.environ, DATA_ROOT=str(data_root), WORK_DIR=str(work_dir),
               CONFIG="configs/reef_demo_tiny.py", ORTHO_DIR=str(ortho_dir),
               ORTHO_OUT=str(ortho_out), ORTHO_STATS=str(tmp_path / "stats"),
               PY=sys.executable, LAUNCH=DEMO_PYTHON, CORAL_ENV_FILE=os.devnull)  # fmt: skip
    script = 'set -euo pipefail\npython() { "$PY" -c "$LAUNCH" "$@"; }\n' + lines
    run = subprocess.run(
        ["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with rasterio.open(ortho_dir / "reef_orthomosaic.tif") as mosaic:
        assert mosaic.crs.to_epsg() == 32755 and mosaic.res == pytest.approx((0.001, 0.001))
        assert (mosaic.width, mosaic.height) == (400, 400)
        # quadrat 1 is the top right cell
        top_right = mosaic.read(window=((0, 200), (200, 400))).transpose(1, 2, 0)
        quadrat = cv2.imread(str(data_root / "reef_demo/images/test/quadrat_1.jpg"))
        assert np.array_equal(top_right, cv2.cvtColor(quadrat, cv2.COLOR_BGR2RGB))
        transform = mosaic.transform
    with rasterio.open(ortho_out / "mosaics/reef_orthomosaic.classes.tif") as classes:
        assert classes.transform == transform and classes.crs.to_epsg() == 32755
    collection = json.loads((ortho_out / "mosaics/reef_orthomosaic.geojson").read_text())
    assert collection["crs"]["properties"]["name"].endswith("EPSG::32755")
    assert (
        "reef_orthomosaic.tif: 400 x 400 px in 4 tiles"
        in (ortho_out / "inference_log.txt").read_text()
    )
    # step 7: the same colonies in the TagLab project, the GeoPackage and the numbers
    from exchange.taglab import read_taglab_project

    (taglab,) = read_taglab_project(ortho_out / "taglab_project.json", join_parts=True)
    colonies = len(collection["features"])
    assert taglab.name == "reef_orthomosaic" and len(taglab.regions) == colonies > 0
    assert taglab.georeference == (ortho_dir / "reef_orthomosaic.tif").resolve()
    assert pyogrio_count(ortho_out / "mosaics/reef_orthomosaic.gpkg") == colonies
    for name in ("reef_orthomosaic_taglab", "reef_orthomosaic"):
        manifest = (data_root / name / "manifest.csv").read_text().splitlines()
        assert manifest[0].startswith("crop,split,map,") and len(manifest) > 1
    stats = (tmp_path / "stats" / "colonies.csv").read_text().splitlines()
    assert len(stats) - 1 == colonies


def pyogrio_count(path: Path) -> int:
    import pyogrio

    return pyogrio.read_info(path)["features"]


def test_pixels_outside_the_mosaic_are_no_class_and_no_colony(tmp_path):
    """An orthomosaic's transparent border (alpha 0) is 255 in the class map, in no colony."""
    image = np.empty((200, 300, 3), np.uint8)
    image[:] = BACKGROUND
    cv2.circle(image, (100, 100), 40, RED, -1)  # half of it in the transparent band
    cv2.circle(image, (220, 100), 30, GREEN, -1)
    alpha = np.full((200, 300), 255, np.uint8)
    alpha[:, :100] = 0
    profile = dict(driver="GTiff", width=300, height=200, count=4, dtype="uint8",
                   photometric="RGB", alpha="YES")  # fmt: skip
    with rasterio.open(tmp_path / "edge.tif", "w", **profile) as dst:
        dst.write(np.dstack([image, alpha]).transpose(2, 0, 1))
    result = _run(tmp_path / "edge.tif", tmp_path / "out", 128, 32)
    with rasterio.open(result.outputs["classes"]) as classes:
        class_map = classes.read(1)
    assert (class_map[:, :100] == 255).all()
    assert np.array_equal(class_map[:, 100:], ColourClasses()(image).argmax(0).numpy()[:, 100:])
    features = _features(result.outputs["colonies"])
    red = [f for f in features if f["properties"]["class"] == "red_coral"]
    assert len(features) == 2 and len(red) == 1
    expected = (np.all(image == RED, axis=2) & (alpha > 0)).sum()
    assert red[0]["properties"]["area_px"] == expected
    assert shapely.geometry.shape(red[0]["geometry"]).bounds[0] >= 100


def test_16_bit_mosaics_are_scaled_by_the_bits_they_use(tmp_path):
    from mosaic.raster import MosaicSource

    data = np.zeros((3, 16, 16), np.uint16)
    data[:, 0, 0], data[:, 0, 1] = 4095, 2048
    profile = dict(driver="GTiff", width=16, height=16, count=3, dtype="uint16", NBITS=12)
    with rasterio.open(tmp_path / "deep.tif", "w", **profile) as dst:
        dst.write(data)
    with MosaicSource(tmp_path / "deep.tif") as source:
        rgb = source.read_rgb(0, 0, 16, 16)
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 16, 3)
    assert rgb[0, 0].tolist() == [255] * 3 and rgb[0, 1].tolist() == [128] * 3


def test_unreadable_pixel_types_are_refused_naming_the_file(tmp_path):
    from dataset.image_io import ImageReadError
    from mosaic.raster import MosaicSource

    profile = dict(driver="GTiff", width=8, height=8, count=1, dtype="float32")
    with rasterio.open(tmp_path / "dem.tif", "w", **profile) as dst:
        dst.write(np.zeros((1, 8, 8), np.float32))
    with pytest.raises(ImageReadError, match=r"dem.tif: float32 pixels.*gdal_translate"):
        MosaicSource(tmp_path / "dem.tif")


def test_reef_stats_reads_the_tiled_outputs_with_their_georeferenced_scale(tmp_path):
    from analysis.open_source import open_source

    path, truth = _georeferenced_mosaic(tmp_path / "reef.tif", width=1200, height=900)
    result = _run(path, tmp_path / "out", 512, 64)
    source = open_source(tmp_path / "out")
    assert source.description.startswith("tiled inference output")
    assert source.classes.names == tuple(CLASSES) and source.stems() == ["reef"]
    labels = source.load("reef")
    assert labels.scale.mm_per_pixel == pytest.approx(1 / 0.9996, rel=1e-3)
    assert "EPSG:32755" in labels.scale.source
    assert np.array_equal(labels.class_map, ColourClasses()(truth["image"]).argmax(0).numpy())
    features = {f["properties"]["id"]: f for f in _features(result.outputs["colonies"])}
    assert len(labels.colonies) == len(features) == 2  # the seam colony and the massive one
    for colony in labels.colonies:
        props = features[colony.id]["properties"]
        assert colony.area == props["area_px"] and colony.class_index == props["class_index"]
        # the burnt-back mask is the colony's own pixels on the image
        colour = RED if props["class"] == "red_coral" else GREEN
        region = np.all(truth["image"] == colour, axis=2)
        assert np.array_equal(colony.full(region.shape), region)


def test_polygons_keep_holes_and_follow_the_right_hand_rule(tmp_path):
    from rasterio.crs import CRS

    from mosaic.geojson import GeoJSONWriter
    from mosaic.seams import Colony

    ring = np.zeros((60, 80), np.uint8)
    cv2.circle(ring, (40, 30), 25, 1, -1)
    cv2.circle(ring, (40, 30), 10, 0, -1)  # a dead centre: the hole
    polygon = mask_polygon(ring.astype(bool), 100, 200)
    assert polygon.geom_type == "Polygon" and len(polygon.interiors) == 1
    assert polygon.area == ring.sum() and polygon.bounds[:2] == (215.0, 105.0)
    transform = Affine(0.002, 0, 300_000.0, 0, -0.002, 8_100_000.0)
    writer = GeoJSONWriter(tmp_path / "c.geojson", transform, CRS.from_epsg(32755), CLASSES,
                           4e-6, "c")  # fmt: skip
    writer.write([Colony(1, 0.5, False, polygon, ["sam"])])
    writer.commit()
    (feature,) = _features(tmp_path / "c.geojson")
    placed = shapely.geometry.shape(feature["geometry"])
    assert placed.exterior.is_ccw and not placed.interiors[0].is_ccw  # RFC 7946
    assert placed.area == pytest.approx(ring.sum() * 4e-6)
    assert feature["properties"]["area_m2"] == pytest.approx(ring.sum() * 4e-6)
    assert not list(tmp_path.glob(".*tmp*"))  # written by rename


class DisagreeingTiles:
    """Stand-in stages whose tiles disagree in every overlap: each call (one per tile)
    calls coral another class than its neighbours and sees each blob grown by another
    number of pixels and shifted, so the pieces two tiles see of one colony differ in
    class and in outline (some share less than half of the smaller one)."""

    def __init__(self) -> None:
        self.semantic_calls = 0
        self.proposal_calls = 0

    def predict_probs(self, rgb: np.ndarray) -> torch.Tensor:
        k, self.semantic_calls = self.semantic_calls, self.semantic_calls + 1
        coral = torch.from_numpy((rgb.max(2).astype(int) - rgb.min(2)) > 100)
        probs = torch.full((3, *coral.shape), 0.05)
        probs[0][~coral] = 0.9
        probs[1 + k % 2][coral] = 0.9
        return probs

    def propose(self, rgb: np.ndarray) -> Blobs:
        k, self.proposal_calls = self.proposal_calls, self.proposal_calls + 1
        coral = ((rgb.max(2).astype(int) - rgb.min(2)) > 100).astype(np.uint8)
        grown = cv2.dilate(coral, np.ones((2 * (k % 3) + 1,) * 2, np.uint8))
        shifted = np.roll(grown, (k % 2) * 3, axis=1)
        count, labels = cv2.connectedComponents(shifted, connectivity=8)
        masks = np.stack([labels == i for i in range(1, count)]) if count > 1 else None
        return Blobs(
            torch.from_numpy(masks if masks is not None else np.zeros((0, *coral.shape), bool))
        )


def test_colonies_of_a_mosaic_share_no_pixel_when_its_tiles_disagree(tmp_path):
    """The issue's acceptance: 3 x 3 tiles, disagreeing in every overlap; no two GeoJSON
    polygons intersect and the colonies' areas add up to the area of their union."""
    image = np.empty((320, 320, 3), np.uint8)
    image[:] = BACKGROUND
    for centre, radius in (((96, 96), 30), ((112, 200), 25), ((210, 104), 40), ((200, 200), 45),
                           ((40, 300), 15), ((300, 30), 18), ((160, 40), 20)):  # fmt: skip
        cv2.circle(image, centre, radius, RED, -1)  # across seams and tile corners
    path = write_mosaic(tmp_path / "reef.tif", [image], 320, 320, mm_per_pixel=2)
    stages = DisagreeingTiles()
    result = run_tiled(path, tmp_path / "out", stages.predict_probs, stages.propose, FUSION,
                       CLASSES, None, TileSettings(128, 32))  # fmt: skip
    assert result.tiles == 9 and stages.semantic_calls == 9
    features = _features(result.outputs["colonies"])
    polygons = [shapely.geometry.shape(f["geometry"]) for f in features]
    assert len(polygons) >= 7 and all(p.is_valid for p in polygons)
    pixel_m2 = 0.002**2
    for a in range(len(polygons)):
        for b in range(a + 1, len(polygons)):
            shared = polygons[a].intersection(polygons[b]).area / pixel_m2
            assert shared < 1e-6, (features[a]["properties"], features[b]["properties"], shared)
    union = shapely.union_all(polygons).area / pixel_m2
    total = sum(p.area for p in polygons) / pixel_m2
    assert total == pytest.approx(union, abs=1e-6)
    assert sum(f["properties"]["area_px"] for f in features) == round(union)
    # the colonies are the discs as the tiles saw them (grown and shifted by a few pixels)
    coral = (image.max(2).astype(int) - image.min(2)) > 100
    covered = rasterize(
        [(shapely.affinity.affine_transform(p, _pixel_matrix(path)), 1) for p in polygons],
        out_shape=coral.shape,
    ).astype(bool)
    assert (covered & coral).sum() >= 0.95 * coral.sum()


def _pixel_matrix(path: Path) -> list[float]:
    """shapely's affine matrix from a GeoTIFF's CRS coordinates to its pixel coordinates."""
    with rasterio.open(path) as src:
        t = ~src.transform
    return [t.a, t.b, t.d, t.e, t.c, t.f]


def test_two_tiles_that_disagree_on_a_colony_do_not_both_count_its_overlap():
    """The issue's case: a disc across a seam; the left tile calls it class 1, the right
    tile class 2 and sees it shifted, sharing under half of it. It used to come out as
    two colonies of 2695 + 2294 px for a disc of 2821 px."""
    tiles = grid(100, 180, 100, 20)[0]  # columns 0-99 and 80-179; cores 0-89 and 90-179
    disc = np.zeros((100, 180), bool)
    cv2.circle(disc.view(np.uint8), (90, 50), 30, 1, -1)
    shifted = np.zeros_like(disc)
    shifted[25:] = disc[:-25]  # the right tile sees it 25 px lower
    seen = (disc, shifted)
    merger = SeamMerger(unsure_threshold=0.2, min_shared=0.9)  # too different to merge
    for tile, mask, label in zip(tiles, seen, (1, 2), strict=True):
        cols = slice(tile.cols.start, tile.cols.stop)
        geometry = mask_polygon(mask[:, cols], 0, tile.cols.start)
        merger.add(tile, [Piece(tile.key, label, 0.8, "sam", geometry)])
    colonies = merger.finish()
    assert len(colonies) == 2
    assert colonies[0].geometry.intersection(colonies[1].geometry).area == 0
    expected = disc[:, :90].sum() + seen[1][:, 90:].sum()  # each tile's own part
    assert sum(c.area_px for c in colonies) == expected
    merged = SeamMerger(unsure_threshold=0.2)  # the default rule: one colony, class by area
    for tile, mask, label in zip(tiles, seen, (1, 2), strict=True):
        cols = slice(tile.cols.start, tile.cols.stop)
        geometry = mask_polygon(mask[:, cols], 0, tile.cols.start)
        merged.add(tile, [Piece(tile.key, label, 0.8, "sam", geometry)])
    (colony,) = merged.finish()
    assert colony.area_px == expected
    assert colony.label == (1 if disc[:, :90].sum() > seen[1][:, 90:].sum() else 2)


def test_a_georeferenced_image_under_the_size_threshold_still_gets_gis_outputs(tmp_path):
    """A 3072 x 2048 orthomosaic used to go through the photo path: no class-map GeoTIFF,
    no GeoJSON. Its georeference, not its size, decides (written small here: the rule
    reads only the header)."""
    from mosaic.pipeline import TILED_ABOVE_PIXELS, wants_tiling

    cell = _quadrat(64)
    geo = write_mosaic(tmp_path / "ortho.tif", [cell], 48, 64)
    plain = write_mosaic(tmp_path / "scan.tif", [cell], 48, 64, epsg=None)
    photo = tmp_path / "photo.png"
    assert cv2.imwrite(str(photo), cell)
    assert TILED_ABOVE_PIXELS > 64 * 48
    assert wants_tiling(geo, forced=False)
    assert not wants_tiling(plain, forced=False) and not wants_tiling(photo, forced=False)
    assert wants_tiling(photo, forced=True)


def test_reef_stats_counts_a_mosaic_window_by_window_as_the_whole_map_counts(tmp_path, monkeypatch):
    """The bounded-memory path (analysis/mosaic_summary.py) with windows of 100 px, so every
    count crosses window edges: cover equals a bincount of the whole class map, colonies
    the GeoJSON's, their edge flags measures.touches_edge on the whole map, and every
    CoralNet point lies in its own cell with the class under it."""
    import pandas as pd

    import reef_stats
    from analysis import mosaic_source
    from analysis.coralnet import grid_shape
    from analysis.measures import touches_edge
    from analysis.open_source import open_source

    path, _ = _georeferenced_mosaic(tmp_path / "reef.tif", width=700, height=500)
    result = _run(path, tmp_path / "out", 256, 32)
    monkeypatch.setattr(mosaic_source, "WINDOW", 100)
    stats = tmp_path / "stats"
    argv = ["summarize", str(tmp_path / "out"), "--output-dir", str(stats)]
    assert reef_stats.main([*argv, "--points", "12", "--seed", "3"]) == 0
    whole = open_source(tmp_path / "out").load("reef")
    valid = whole.class_map != 255
    cover = pd.read_csv(stats / "cover.csv")
    expected = np.bincount(whole.class_map[valid], minlength=3)[:3]
    assert cover["pixels"].tolist() == expected.tolist()
    colonies = pd.read_csv(stats / "colonies.csv").set_index("colony_id")
    features = _features(result.outputs["colonies"])
    assert sorted(colonies.index) == sorted(f["properties"]["id"] for f in features)
    for colony in whole.colonies:
        row = colonies.loc[colony.id]
        assert row["area_px"] == colony.area
        assert bool(row["touches_edge"]) == touches_edge(colony, valid)
    points = pd.read_csv(stats / "coralnet" / "predicted" / "annotations.csv")
    cell_rows, cell_cols = grid_shape(12)
    cells = set()
    for _, point in points.iterrows():
        r, c = int(point["Row"]), int(point["Column"])
        assert valid[r, c]
        assert (
            point["Label code"] == ("background", "redcoral", "greencoral")[whole.class_map[r, c]]
        )
        cells.add((r * cell_rows // 500, c * cell_cols // 700))
    assert len(points) == len(cells) == 12, "one point in each cell"


def test_colonies_saved_again_in_another_layout_read_the_same(tmp_path):
    """The GeoJSON is streamed a feature a line as mosaic/geojson.py writes it; a file
    saved again by another tool (QGIS, an editor) in any layout reads the same."""
    from analysis.open_source import open_source

    path, _ = _georeferenced_mosaic(tmp_path / "reef.tif", width=700, height=500)
    result = _run(path, tmp_path / "out", 256, 32)
    streamed = open_source(tmp_path / "out").load("reef").colonies
    collection = json.loads(result.outputs["colonies"].read_text())
    result.outputs["colonies"].write_text(json.dumps(collection, indent=2))
    again = open_source(tmp_path / "out").load("reef").colonies
    assert len(streamed) == len(again) == len(collection["features"]) >= 1
    for a, b in zip(streamed, again, strict=True):
        assert (a.id, a.box) == (b.id, b.box) and np.array_equal(a.mask, b.mask)


def test_pieces_that_only_touch_the_shared_strip_are_not_merged():
    """A piece ending exactly where the strip two tiles share begins meets it in a line
    (area 0); '0 >= half of 0' used to merge it with the neighbour's piece across classes."""
    from shapely.geometry import box

    tiles = grid(100, 260, 128, 32)[0]  # columns 0-127 and 96-223: strip 96-127
    merger = SeamMerger(unsure_threshold=0.2)
    merger.add(tiles[0], [Piece(tiles[0].key, 1, 0.9, "sam", box(60, 0, 96, 20))])
    merger.add(tiles[1], [Piece(tiles[1].key, 2, 0.9, "sam", box(128, 0, 150, 20))])
    colonies = sorted(merger.finish(), key=lambda c: c.label)
    assert [(c.label, c.area_px) for c in colonies] == [(1, 36 * 20), (2, 22 * 20)]


def test_a_nodata_value_outside_the_pixel_type_is_refused(tmp_path):
    from dataset.image_io import ImageReadError
    from mosaic.raster import MosaicSource

    path = write_mosaic(tmp_path / "ortho.tif", [_quadrat(64)], 64, 64)
    with pytest.raises(ImageReadError, match="--nodata 65535 is no uint8 pixel value"):
        MosaicSource(path, nodata=65535)
