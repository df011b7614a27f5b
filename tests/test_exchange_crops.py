"""Annotated orthomosaics -> training crops (exchange/crops.py): masks against a map painted
by hand with numpy, ignore outside the annotated area, spatial splits, resampling."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pyogrio.raw
import pytest
import rasterio
import rasterio.features
import shapely
from pyproj import Transformer
from rasterio.transform import Affine
from shapely.geometry import MultiPolygon, box

from dataset.info import read_dataset_info
from dataset.prepare import PrepareError
from dataset.taxonomy import UnknownLabelsError
from exchange.crops import CropSettings, assign_splits, crop_windows, prepare_maps
from exchange.regions import AnnotatedMap, Region
from settings import load_settings

WIDTH, HEIGHT = 300, 200
ACROPORA, PORITES, POCILLOPORA = 2, 15, 14  # fine taxonomy indices


def write_raster(path: Path, nodata_band: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (3, HEIGHT, WIDTH), dtype=np.uint8)
    transform = Affine(0.01, 0, 500000, 0, -0.01, 8200000)  # 1 cm pixels, UTM 55S
    profile = dict(driver="GTiff", height=HEIGHT, width=WIDTH, count=3, dtype="uint8",
                   crs="EPSG:32755", transform=transform)  # fmt: skip
    if nodata_band is not None:
        pixels[:, nodata_band] = 0
        profile["nodata"] = 0
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(pixels)
    return path


def reef_map(image: Path, area=None) -> AnnotatedMap:
    """An Acropora with a hole, a two-part Porites, a Pocillopora on top of the Acropora."""
    acropora = box(20, 30, 140, 110).difference(box(60, 50, 80, 70))
    porites = MultiPolygon([box(200, 20, 240, 60), box(250, 140, 290, 180)])
    pocillopora = box(120, 90, 150, 120)  # overlaps the Acropora: the smaller wins
    regions = [
        Region("Acropora", acropora, 1),
        Region("Porites", porites, 2),
        Region("pocillopora", pocillopora, 3),  # any case, as the taxonomy resolves names
    ]
    return AnnotatedMap("reef", image, WIDTH, HEIGHT, regions, area)


def expected_map(area=None) -> np.ndarray:
    """The same map painted with numpy slices, independently of rasterization."""
    truth = np.full((HEIGHT, WIDTH), 255, np.uint8)
    if area is None:  # no stated area: the regions grown by the margin
        return truth
    x0, y0, x1, y1 = area
    truth[y0:y1, x0:x1] = 0
    truth[30:110, 20:140] = ACROPORA
    truth[50:70, 60:80] = 0
    truth[20:60, 200:240] = PORITES
    truth[140:180, 250:290] = PORITES
    truth[90:120, 120:150] = POCILLOPORA
    outside = np.ones_like(truth, bool)
    outside[y0:y1, x0:x1] = False
    truth[outside] = 255
    return truth


def settings_for(tmp_path: Path):
    return load_settings(data_root=str(tmp_path / "prepared"), taxonomy="fine")


def reassemble(folder: Path) -> tuple[np.ndarray, list[dict]]:
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    whole = np.full((HEIGHT, WIDTH), 255, np.uint8)
    for row in rows:
        mask = cv2.imread(str(folder / "annotations" / row["split"] / f"{row['crop']}.png"), 0)
        r0, c0 = int(row["row0"]), int(row["col0"])
        h, w = int(row["height"]), int(row["width"])
        size = max(mask.shape)
        assert mask.shape == (size, size)  # edge crops are padded with ignore
        assert (mask[h:] == 255).all() and (mask[:, w:] == 255).all()
        whole[r0 : r0 + h, c0 : c0 + w] = mask[:h, :w]
    return whole, rows


def test_crops_reassemble_to_the_hand_painted_map_with_ignore_outside_the_area(tmp_path):
    image = write_raster(tmp_path / "reef.tif")
    area = (10, 10, 295, 190)
    crops = CropSettings(crop_size=64, block_size=128, split_ratios=(0.5, 0.25, 0.25))
    done = prepare_maps([reef_map(image, box(*area))], "reef", settings_for(tmp_path), crops)
    whole, rows = reassemble(done.path)
    np.testing.assert_array_equal(whole, expected_map(area))
    # every crop has a labelled pixel; the crop grid has 5 x 4 = 20 windows, all inside the area
    assert done.written + done.skipped_empty == 20
    info = read_dataset_info(done.path / "dataset_info.py")
    assert info["skipped_crops"] == done.skipped_empty
    assert sum(info["num_samples"].values()) == done.written == len(rows)


def test_no_block_in_two_splits_and_no_crop_across_a_block_border(tmp_path):
    image = write_raster(tmp_path / "reef.tif")
    crops = CropSettings(crop_size=40, block_size=80, split_ratios=(0.6, 0.2, 0.2), seed=3)
    done = prepare_maps([reef_map(image, box(0, 0, WIDTH, HEIGHT))], "reef",
                        settings_for(tmp_path), crops)  # fmt: skip
    _, rows = reassemble(done.path)
    split_of_block: dict[tuple[int, int], set[str]] = {}
    for row in rows:
        c0, r0 = int(row["col0"]), int(row["row0"])
        c1, r1 = c0 + int(row["width"]) - 1, r0 + int(row["height"]) - 1
        assert (c0 // 80, r0 // 80) == (c1 // 80, r1 // 80), row  # inside one block
        assert (int(row["block_col"]), int(row["block_row"])) == (c0 // 80, r0 // 80)
        split_of_block.setdefault((c0 // 80, r0 // 80), set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of_block.values())
    assert {s for splits in split_of_block.values() for s in splits} == {"train", "val", "test"}


def test_pixels_outside_the_mosaic_are_ignore_and_empty_crops_are_counted(tmp_path):
    collar = np.zeros((HEIGHT, WIDTH), bool)
    collar[:, 270:] = True  # nodata strip on the right
    image = write_raster(tmp_path / "reef.tif", collar)
    # no stated area: the regions grown by 5 px are the annotated area
    crops = CropSettings(crop_size=100, block_size=100, split_ratios=(1, 0, 0),
                         image_format="png", area_margin=5)  # fmt: skip
    done = prepare_maps([reef_map(image)], "reef", settings_for(tmp_path), crops)
    whole, rows = reassemble(done.path)
    assert (whole[:, 270:] == 255).all()  # the collar
    assert whole[35, 25] == ACROPORA and whole[60, 70] == 0  # inside a region, in its hole
    assert whole[30 - 3, 60] == 0 and whole[30 - 7, 60] == 255  # margin 5 px around the region
    assert (done.written, done.skipped_empty) == (6, 0)  # every 100 px window has a region
    # the written image is the raster's pixels, byte for byte (png)
    with rasterio.open(image) as src:
        pixels = src.read(window=((0, 100), (0, 100))).transpose(1, 2, 0)
    first = next(r for r in rows if r["row0"] == "0" and r["col0"] == "0")
    written = cv2.imread(str(done.path / "images" / first["split"] / f"{first['crop']}.png"))
    np.testing.assert_array_equal(written[..., ::-1], pixels)


def test_crops_without_a_labelled_pixel_are_skipped_and_counted(tmp_path):
    image = write_raster(tmp_path / "reef.tif")
    one = AnnotatedMap("reef", image, WIDTH, HEIGHT, [Region("Acropora", box(20, 20, 60, 60))])
    crops = CropSettings(crop_size=100, block_size=100, split_ratios=(1, 0, 0), area_margin=5)
    done = prepare_maps([one], "reef", settings_for(tmp_path), crops)
    assert (done.written, done.skipped_empty) == (1, 5)
    assert read_dataset_info(done.path / "dataset_info.py")["skipped_crops"] == 5
    mask = cv2.imread(str(done.path / "annotations" / "train" / "reef_r000_c000.png"), 0)
    assert np.bincount(mask.ravel(), minlength=256)[ACROPORA] == 40 * 40


def test_resampled_crops_take_the_class_at_each_output_pixel_centre(tmp_path):
    image = write_raster(tmp_path / "reef.tif")  # 10 mm pixels
    crops = CropSettings(crop_size=64, mm_per_pixel=20.0, split_ratios=(1, 0, 0))
    area = (10, 10, 290, 190)
    done = prepare_maps([reef_map(image, box(*area))], "reef", settings_for(tmp_path), crops)
    with open(done.path / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    native = expected_map(area)
    for row in rows:
        mask = cv2.imread(str(done.path / "annotations" / "train" / f"{row['crop']}.png"), 0)
        r0, c0 = int(row["row0"]), int(row["col0"])
        assert mask.shape == (64, 64)
        mask = mask[: int(row["out_height"]), : int(row["out_width"])]
        centres = native[r0 + 1 : r0 + 2 * mask.shape[0] : 2, c0 + 1 : c0 + 2 * mask.shape[1] : 2]
        np.testing.assert_array_equal(mask, centres)
        assert float(row["mm_per_pixel"]) == 20.0


def test_unknown_labels_are_named_not_dropped(tmp_path):
    image = write_raster(tmp_path / "reef.tif")
    annotated = reef_map(image)
    annotated.regions.append(Region("Seagrass", box(0, 0, 10, 10), 9))
    with pytest.raises(UnknownLabelsError, match="'Seagrass' \\(1\\)"):
        prepare_maps([annotated], "reef", settings_for(tmp_path), CropSettings(crop_size=64))


def test_a_map_whose_image_has_another_size_is_refused(tmp_path):
    image = write_raster(tmp_path / "reef.tif")
    annotated = reef_map(image)
    annotated.width = 400
    with pytest.raises(PrepareError, match="300 x 200 px but the annotations are on a 400 x 200"):
        prepare_maps([annotated], "reef", settings_for(tmp_path), CropSettings(crop_size=64))


def test_crop_grid_and_split_assignment():
    windows = crop_windows(0, 130, 70, 64, 1.0)
    assert [(w.col0, w.row0, w.width, w.height) for w in windows] == [
        (0, 0, 64, 64), (64, 0, 64, 64), (128, 0, 2, 64),
        (0, 64, 64, 6), (64, 64, 64, 6), (128, 64, 2, 6),
    ]  # fmt: skip
    splits = assign_splits(list(range(10)), (0.8, 0.1, 0.1), seed=0)
    assert sorted(splits.values()).count("train") == 8
    assert assign_splits(list(range(10)), (0.8, 0.1, 0.1), seed=0) == splits
    assert set(assign_splits([0, 1, 2], (0.9, 0.05, 0.05), 1).values()) == {"train", "val", "test"}


# --- through prepare_data.py, from the files users have ---------------------------------


ROOT = Path(__file__).resolve().parents[1]


def prepare_data(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """The command as a user runs it (fire's argument parsing included)."""
    env = {**os.environ, "CORAL_ENV_FILE": os.devnull}
    run = subprocess.run([sys.executable, "prepare_data.py", *args, "--data-root",
                          str(tmp_path / "prepared")], cwd=ROOT, env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    return run


def _utm_to(crs: str):
    return Transformer.from_crs("EPSG:32755", crs, always_xy=True)


def _write_layer(path: Path, geometries, genera: list[str], crs: str) -> Path:
    move = _utm_to(crs)
    placed = [
        shapely.transform(g, lambda xy: np.column_stack(move.transform(*xy.T))) for g in geometries
    ]
    kind = "MultiPolygon" if any(g.geom_type == "MultiPolygon" for g in geometries) else "Polygon"
    driver = "GeoJSON" if path.suffix == ".geojson" else "GPKG"
    pyogrio.raw.write(path, shapely.to_wkb(placed), field_data=[np.array(genera, object)],
                      fields=["genus"], geometry_type=kind, crs=crs, driver=driver)  # fmt: skip
    return path


def _in_utm(pixel_geometry):
    """Pixel coordinates of write_raster's grid -> UTM metres (1 cm pixels)."""
    return shapely.affinity.affine_transform(pixel_geometry, [0.01, 0, 0, -0.01, 500000, 8200000])


def test_polygons_in_wgs84_over_a_utm_raster_prepare_to_an_independent_rasterization(tmp_path):
    """prepare_data.py ORTHO --polygons (EPSG:4326) --area (EPSG:3857): the masks equal
    GDAL's rasterization of the same file through the raster's geotransform."""
    image = write_raster(tmp_path / "reef.tif")
    colonies_px = [
        shapely.Polygon([(20.3, 30.2), (139.6, 35.7), (120.2, 108.9), (25.5, 100.1)],
                        [[(60.2, 50.3), (80.4, 50.1), (70.7, 69.8)]]),
        MultiPolygon([box(200.2, 20.4, 239.7, 59.6), box(250.1, 140.3, 289.8, 179.2)]),
    ]  # fmt: skip
    polygons = _write_layer(tmp_path / "colonies.geojson", [_in_utm(g) for g in colonies_px],
                            ["Acropora", "Porites"], "EPSG:4326")  # fmt: skip
    area_px = box(10.4, 10.3, 295.2, 190.6)
    area = _write_layer(tmp_path / "area.gpkg", [_in_utm(area_px)], ["area"], "EPSG:3857")
    prepare_data(str(image), "--polygons", str(polygons), "--class-field", "genus", "--area",
                 str(area), "--crop-size", "64", "--split-ratios", "1,0,0", "--image-format",
                 "png", tmp_path=tmp_path)  # fmt: skip
    whole, _ = reassemble(tmp_path / "prepared" / "reef")
    # independently: the file's own geometries back to UTM by pyproj, burnt by rasterio
    # through the raster's geotransform (no pixel-coordinate geometry involved)
    with rasterio.open(image) as src:
        transform = src.transform
    expected = np.full((HEIGHT, WIDTH), 255, np.uint8)
    for path, values in ((area, [0]), (polygons, [ACROPORA, PORITES])):
        crs = pyogrio.read_info(path)["crs"]
        to_utm = Transformer.from_crs(crs, "EPSG:32755", always_xy=True)
        _, _, wkb, _ = pyogrio.raw.read(path)
        shapes = [shapely.transform(g, lambda xy, move=to_utm: np.column_stack(
            move.transform(*xy.T))) for g in shapely.from_wkb(wkb)]  # fmt: skip
        rasterio.features.rasterize(list(zip(shapes, values, strict=True)), out=expected,
                                    transform=transform)  # fmt: skip
    assert (expected == ACROPORA).sum() > 5000 and (expected == 255).sum() > 1000
    np.testing.assert_array_equal(whole, expected)
    if shutil.which("gdal_rasterize") and shutil.which("ogr2ogr"):  # GDAL's tools, as QGIS
        in_utm, burnt = tmp_path / "colonies_utm.gpkg", tmp_path / "burnt.tif"
        subprocess.run(["ogr2ogr", "-t_srs", "EPSG:32755", str(in_utm), str(polygons)], check=True)
        subprocess.run(["gdal_rasterize", "-q", "-burn", "1", "-ot", "Byte", "-te", "500000",
                        str(8200000 - HEIGHT * 0.01), str(500000 + WIDTH * 0.01), "8200000",
                        "-ts", str(WIDTH), str(HEIGHT), str(in_utm), str(burnt)],
                       check=True)  # fmt: skip
        with rasterio.open(burnt) as src:
            coral = src.read(1) > 0
        inside = whole != 255
        np.testing.assert_array_equal(coral & inside, np.isin(whole, [ACROPORA, PORITES]))


def test_a_taglab_project_prepares_with_its_working_area_and_map_splits(tmp_path):
    """Two maps in one TagLab project: each map's crops go to the split named for it, and
    pixels outside the project's working area are ignore."""
    from exchange.taglab import TagLabWriter

    first = write_raster(tmp_path / "site_a.tif")
    second = write_raster(tmp_path / "site_b.tif")
    project = tmp_path / "survey.json"
    writer = TagLabWriter(project, [("Acropora", (60, 180, 75)), ("Porites", (128, 0, 0))],
                          working_area=box(0, 0, 200, 150))  # fmt: skip
    for name, path in (("site A", first), ("site B", second)):
        writer.begin_map(name, path, WIDTH, HEIGHT, mm_per_pixel=10.0)
        writer.write([Region("Acropora", box(20, 30, 140, 110).difference(box(60, 50, 80, 70)), 1),
                      Region("Porites", box(150, 100, 190, 140), 2)])  # fmt: skip
        writer.end_map()
    writer.commit()
    run = prepare_data(str(project), "--crop-size", "100", "--split-by", "map", "--val-maps",
                       "site B", "--image-format", "png", tmp_path=tmp_path)  # fmt: skip
    assert "2 map(s), 4 region(s), 12 crop windows of 100 px" in run.stderr
    folder = tmp_path / "prepared" / "survey"
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["map"], r["split"]) for r in rows} == {("site A", "train"), ("site B", "val")}
    mask = cv2.imread(str(folder / "annotations" / "train" / "site A_r000_c000.png"), 0)
    expected = np.full((100, 100), 255, np.uint8)
    expected[:, :] = 0  # the working area covers this whole crop
    expected[30:100, 20:100] = ACROPORA
    expected[50:70, 60:80] = 0
    np.testing.assert_array_equal(mask, expected)
    outside = cv2.imread(str(folder / "annotations" / "train" / "site A_r001_c001.png"), 0)
    expected = np.full((100, 100), 255, np.uint8)
    expected[:50, :] = 0  # the working area ends at y 150
    expected[:10, :40] = ACROPORA  # its part at x 100-140, y 100-110
    expected[:40, 50:90] = PORITES
    np.testing.assert_array_equal(outside, expected)
    info = read_dataset_info(folder / "dataset_info.py")
    assert info["num_samples"] == {"train": 4, "val": 4, "test": 0}
