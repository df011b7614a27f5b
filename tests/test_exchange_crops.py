"""Annotated orthomosaics -> training crops (exchange/crops.py): masks against a map painted
by hand with numpy, ignore outside the annotated area, spatial splits, resampling."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
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
