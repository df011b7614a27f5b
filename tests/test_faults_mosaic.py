"""Fault suite: orthomosaics as photogrammetry exports them (mosaic/).

A collar around the mosaic that the file does not mark (no nodata value, no alpha band)
was predicted and counted as sea floor; `--nodata VALUE` marks it, and without it the
run warns naming the file.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import rasterio
from rasterio.transform import Affine
from test_mosaic import BACKGROUND, CLASSES, FUSION, RED, BlobProposer, ColourClasses

from mosaic.pipeline import TileSettings, run_tiled


def _collared(tmp_path, collar: int, value: int):
    """A 300 x 260 UTM mosaic: sea floor with two red colonies, inside a `collar` px band
    of `value` in every band, as exports without a nodata tag have."""
    image = np.empty((260, 300, 3), np.uint8)
    image[:] = BACKGROUND
    image[60:120, 60:140] = RED
    image[150:200, 180:250] = RED
    rng = np.random.default_rng(0)  # sea floor is textured, a collar is not
    image[:] = np.clip(image + rng.integers(-15, 16, image.shape), 0, 255).astype(np.uint8)
    if collar:
        image[:collar], image[-collar:], image[:, :collar], image[:, -collar:] = (value,) * 4
    path = tmp_path / "ortho_2026.tif"
    transform = Affine(0.001, 0, 500_000, 0, -0.001, 8_200_000)
    profile = dict(driver="GTiff", width=300, height=260, count=3, dtype="uint8",
                   crs="EPSG:32755", transform=transform)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image.transpose(2, 0, 1))
    return path, image


def test_an_unmarked_collar_is_named_and_nodata_keeps_it_out_of_every_figure(tmp_path, caplog):
    path, image = _collared(tmp_path, collar=20, value=0)
    with caplog.at_level(logging.WARNING, logger="inference.mosaic"):
        plain = run_tiled(path, tmp_path / "plain", ColourClasses(), BlobProposer(), FUSION,
                          CLASSES, None, TileSettings(128, 32))  # fmt: skip
    assert "ortho_2026.tif: most of the image's edge is one colour (0, 0, 0)" in caplog.text
    assert "pass --nodata 0" in caplog.text
    with rasterio.open(plain.outputs["classes"]) as classes:
        assert (classes.read(1)[:20] == 0).all(), "without --nodata the collar is sea floor"

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="inference.mosaic"):
        marked = run_tiled(path, tmp_path / "marked", ColourClasses(), BlobProposer(), FUSION,
                           CLASSES, None, TileSettings(128, 32, nodata=0))  # fmt: skip
    assert "most of the image's edge" not in caplog.text
    with rasterio.open(marked.outputs["classes"]) as classes:
        class_map = classes.read(1)
    collar = (image == 0).all(2)
    assert (class_map[collar] == 255).all() and (class_map[~collar] != 255).all()
    assert np.array_equal(np.bincount(class_map[~collar], minlength=3)[1:3],
                          [60 * 80 + 50 * 70, 0])  # fmt: skip
    features = json.loads(marked.outputs["colonies"].read_text())["features"]
    assert sorted(f["properties"]["area_px"] for f in features) == [50 * 70, 60 * 80]


def test_a_mosaic_without_a_collar_gets_no_warning(tmp_path, caplog):
    path, _ = _collared(tmp_path, collar=0, value=0)  # the textured sea floor to the edge
    with caplog.at_level(logging.WARNING, logger="inference.mosaic"):
        run_tiled(path, tmp_path / "out", ColourClasses(), BlobProposer(), FUSION, CLASSES,
                  None, TileSettings(128, 32))  # fmt: skip
    assert "most of the image's edge" not in caplog.text
