"""Ground areas in any coordinate reference system (mosaic/ground.py and its users).

One square on the reef flat at 17.5 degrees S is painted into a GeoTIFF in three CRSs
that photogrammetry software exports: UTM zone 55S, Web Mercator (EPSG:3857, whose unit
is a metre only at the equator) and WGS 84 degrees (EPSG:4326). Its area, through tiled
inference (stand-in stages from tests/test_mosaic.py) and through reef_stats.py, must
match the geodesic area of the painted block computed here independently: its corners
to longitude and latitude, each edge densified, pyproj.Geod's polygon area.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from pyproj import CRS, Geod, Transformer
from rasterio.transform import Affine
from test_mosaic import BACKGROUND, CLASSES, FUSION, RED, BlobProposer, ColourClasses

import reef_stats
from mosaic.ground import ground_pixel
from mosaic.pipeline import TileSettings, run_tiled

LON, LAT = 146.8, -17.5  # a reef flat of the Great Barrier Reef, in UTM zone 55S
SIZE, BLOCK = (200, 180), (40, 150, 30, 170)  # raster rows, cols; block top, bottom, left, right


def _origin(epsg: int, pixel: float) -> Affine:
    """A north-up transform whose raster's centre is at (LON, LAT)."""
    x, y = Transformer.from_crs(4326, epsg, always_xy=True).transform(LON, LAT)
    return Affine(pixel, 0, x - pixel * SIZE[1] / 2, 0, -pixel, y + pixel * SIZE[0] / 2)


CASES = {
    "utm": (32755, _origin(32755, 0.002)),
    "web_mercator": (3857, _origin(3857, 0.002)),  # 2 "metres" of 3857: 1.9 mm on the ground
    "degrees": (4326, _origin(4326, 2e-8)),  # 2.2 mm north-south, 2.1 mm east-west
}


def _geodesic_area_of_block(epsg: int, transform: Affine) -> float:
    top, bottom, left, right = BLOCK
    corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
    ring = []
    for (c0, r0), (c1, r1) in zip(corners, corners[1:] + corners[:1], strict=True):
        for t in np.linspace(0, 1, 50, endpoint=False):  # densified: edges are straight in the CRS
            ring.append(transform @ (c0 + t * (c1 - c0), r0 + t * (r1 - r0)))
    xs, ys = zip(*ring, strict=True)
    lons, lats = Transformer.from_crs(epsg, 4326, always_xy=True).transform(xs, ys)
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter(lons, lats)
    return abs(area)


def _write(path, epsg: int, transform: Affine):
    image = np.empty((*SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    top, bottom, left, right = BLOCK
    image[top:bottom, left:right] = RED
    profile = dict(driver="GTiff", width=SIZE[1], height=SIZE[0], count=3, dtype="uint8",
                   crs=CRS.from_epsg(epsg).to_wkt(), transform=transform)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image.transpose(2, 0, 1))
    return path


@pytest.mark.parametrize("case", list(CASES))
def test_a_known_square_has_its_geodesic_area_in_tiled_inference_and_reef_stats(case, tmp_path):
    epsg, transform = CASES[case]
    truth_m2 = _geodesic_area_of_block(epsg, transform)
    path = _write(tmp_path / f"{case}.tif", epsg, transform)
    result = run_tiled(path, tmp_path / "out" / "mosaics", ColourClasses(), BlobProposer(),
                       FUSION, CLASSES, None, TileSettings(128, 32))  # fmt: skip
    assert "geodesic" in result.scale_from and f"EPSG:{epsg}" in result.scale_from
    (colony,) = json.loads(result.outputs["colonies"].read_text())["features"]
    top, bottom, left, right = BLOCK
    assert colony["properties"]["area_px"] == (bottom - top) * (right - left)
    assert colony["properties"]["area_m2"] == pytest.approx(truth_m2, rel=0.005)

    stats = tmp_path / "stats"
    argv = ["summarize", str(tmp_path / "out" / "mosaics"), "--output-dir", str(stats)]
    assert reef_stats.main([*argv, "--points", "0"]) == 0
    colonies = pd.read_csv(stats / "colonies.csv")
    assert colonies["area_cm2"].item() / 1e4 == pytest.approx(truth_m2, rel=0.005)
    cover = pd.read_csv(stats / "cover.csv").set_index("class")
    assert cover.loc["red_coral", "area_cm2"] / 1e4 == pytest.approx(truth_m2, rel=0.005)
    images = pd.read_csv(stats / "images.csv")
    assert f"EPSG:{epsg}" in images["scale_source"].item()
    report = (stats / "report.html").read_text()
    assert "geodesic" in report and f"EPSG:{epsg}" in report, (
        "the report says where areas come from"
    )


def test_web_mercator_units_are_not_ground_metres():
    """At 17.5 degrees S a 3857 'metre' is about cos(17.5) = 0.954 ground metres (the
    spherical formula on the ellipsoid's coordinates adds a little): the unit alone
    overstates areas by about 1/cos^2 - 1 = +10 %, which the ground pixel does not."""
    epsg, transform = CASES["web_mercator"]
    pixel = ground_pixel(CRS.from_epsg(epsg), transform, SIZE[1], SIZE[0])
    unit_area = 0.002**2
    assert unit_area / pixel.area_m2 - 1 == pytest.approx(1 / np.cos(np.radians(LAT)) ** 2 - 1,
                                                          rel=0.1)  # fmt: skip
    assert pixel.width_m == pytest.approx(pixel.height_m, rel=0.01), "near-conformal: square"


def test_degree_pixels_are_measured_with_their_two_sides():
    epsg, transform = CASES["degrees"]
    pixel = ground_pixel(CRS.from_epsg(epsg), transform, SIZE[1], SIZE[0])
    assert pixel.height_m == pytest.approx(2e-8 * 110_700, rel=0.01)  # a degree of latitude
    assert pixel.width_m / pixel.height_m == pytest.approx(np.cos(np.radians(LAT)), rel=0.01)
    assert pixel.area_m2 == pytest.approx(pixel.width_m * pixel.height_m, rel=1e-6)


def test_a_raster_without_a_georeference_has_no_ground_size():
    assert ground_pixel(None, Affine.identity(), 10, 10) is None


def test_a_mosaic_without_a_georeference_says_why_its_areas_are_in_pixels(tmp_path):
    image = np.empty((*SIZE, 3), np.uint8)
    image[:] = BACKGROUND
    top, bottom, left, right = BLOCK
    image[top:bottom, left:right] = RED
    path = tmp_path / "scan.tif"
    profile = dict(driver="GTiff", width=SIZE[1], height=SIZE[0], count=3, dtype="uint8")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image.transpose(2, 0, 1))
    result = run_tiled(path, tmp_path / "out", ColourClasses(), BlobProposer(), FUSION,
                       CLASSES, None, TileSettings(128, 32))  # fmt: skip
    assert result.pixel_area_m2 is None and "no georeference" in result.scale_from
    stats = tmp_path / "stats"
    argv = ["summarize", str(tmp_path / "out"), "--output-dir", str(stats), "--points", "0"]
    assert reef_stats.main(argv) == 0
    images = pd.read_csv(stats / "images.csv")
    assert "no georeference" in images["scale_source"].item()
    assert np.isnan(images["valid_area_m2"].item())
    assert "the class map has no georeference" in (stats / "report.html").read_text()


def test_a_local_crs_without_an_ellipsoid_uses_its_unit():
    """Photogrammetry without GPS ("Local Coordinates (m)", scale bars): no ellipsoid to
    measure on, so the CRS's linear unit is the scale, and the source says so."""
    from rasterio.crs import CRS as RasterioCRS

    local = RasterioCRS.from_wkt(
        'LOCAL_CS["Local Coordinates (m)",LOCAL_DATUM["Local Datum",0],'
        'UNIT["metre",1,AUTHORITY["EPSG","9001"]],AXIS["X",EAST],AXIS["Y",NORTH]]'
    )
    pixel = ground_pixel(local, Affine(0.002, 0, 0, 0, -0.002, 0), 100, 100)
    assert pixel.area_m2 == pytest.approx(4e-6) and "its unit" in pixel.source
