"""GIS polygon files onto a raster's pixel grid, and the GeoPackage of colonies (exchange/gis.py).

The raster is a small GeoTIFF in UTM zone 55S with 1 cm pixels. Polygons are drawn in
its pixel grid (vertices off pixel centres, edges not along rows or columns), taken to
the raster's CRS and from there to EPSG:4326 (a GeoJSON) and EPSG:3857 (a GeoPackage).
What read_regions returns, rasterized with the identity transform, must paint exactly
the pixels an independent path paints: GDAL's own tools (ogr2ogr -t_srs, then
gdal_rasterize onto the raster's grid) when they are installed, and always pyproj with
rasterio.features.rasterize through the raster's geotransform (geometry in CRS
coordinates, GDAL doing the pixel placement, where exchange/gis.py hands it pixel
geometries).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyogrio import raw
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.features import rasterize
from rasterio.transform import Affine

from dataset.image_io import ImageWriteError
from exchange.gis import GISError, GISWarning, read_area, read_regions
from mosaic.geopackage import GeoPackageWriter
from mosaic.seams import Colony

WIDTH, HEIGHT = 400, 300
UTM = "EPSG:32755"
TRANSFORM = Affine(0.01, 0, 640000.0, 0, -0.01, 8050000.0)  # 1 cm pixels
BURN = {"hole": 1, "multi": 2, "edge": 3}
# In pixel coordinates: one with a hole, one of two parts, one across the right edge.
SHAPES = {
    "hole": shapely.Polygon(
        [(40.2, 30.3), (160.7, 25.9), (175.4, 120.6), (90.1, 150.8), (35.6, 110.2)],
        [[(80.3, 60.2), (120.8, 58.1), (115.2, 100.7), (78.9, 95.4)]],
    ),
    "multi": shapely.MultiPolygon(
        [
            shapely.Polygon([(200.3, 20.2), (260.7, 30.4), (240.1, 80.9)]),
            shapely.Polygon([(210.4, 150.3), (280.6, 140.1), (270.2, 210.7), (205.9, 200.2)]),
        ]
    ),
    "edge": shapely.Polygon([(330.2, 180.3), (450.7, 170.6), (440.3, 260.9), (340.8, 280.4)]),
}
EDGE_TOLERANCE_PX = 1e-6


def _to_crs(geometry, crs: str, source: str = UTM):
    """A geometry from `source` to `crs` (pyproj, always_xy), vertex by vertex."""
    move = Transformer.from_crs(source, crs, always_xy=True)
    return shapely.transform(geometry, lambda xy: np.column_stack(move.transform(*xy.T)))


def _pixels_to_utm(geometry):
    return shapely.affinity.affine_transform(geometry, [0.01, 0, 0, -0.01, 640000.0, 8050000.0])


def _write_raster(path: Path, georeferenced: bool = True) -> Path:
    profile = dict(driver="GTiff", width=WIDTH, height=HEIGHT, count=1, dtype="uint8")
    if georeferenced:
        profile.update(crs=CRS.from_string(UTM), transform=TRANSFORM)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # meant, when asked
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((1, HEIGHT, WIDTH), np.uint8))
    return path


def _write_geojson(path: Path, features: list[tuple[dict, object]], crs: str | None) -> Path:
    """By hand (json floats are exact), so the file holds exactly these coordinates."""
    collection = {"type": "FeatureCollection"}
    if crs is not None:  # before the features, where GDAL and QGIS write it
        collection["crs"] = {"type": "name", "properties": {"name": crs}}
    collection["features"] = []
    for properties, geometry in features:
        collection["features"].append(
            {
                "type": "Feature",
                "properties": properties,
                "geometry": None if geometry is None else json.loads(shapely.to_geojson(geometry)),
            }
        )
    path.write_text(json.dumps(collection))
    return path


def _write_layer(path: Path, geometries, labels, crs: str | None, layer: str, **kw) -> Path:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided")  # meant, when None
        raw.write(
            path,
            np.array([shapely.to_wkb(g) for g in geometries], dtype=object),
            [np.array(labels, dtype=object), np.arange(1, len(labels) + 1, dtype=np.int32)],
            ["cls", "burn"],
            layer=layer,
            crs=crs,
            # Shapefiles: Polygon holds multi-part ones; GeoPackage: any geometry column.
            geometry_type="Polygon" if path.suffix == ".shp" else "Unknown",
            **kw,
        )
    return path


@pytest.fixture
def raster(tmp_path) -> Path:
    return _write_raster(tmp_path / "ortho.tif")


@pytest.fixture
def in_4326(tmp_path) -> tuple[Path, dict]:
    """The shapes as a GeoJSON in EPSG:4326 (no crs member: RFC 7946's default)."""
    lonlat = {k: _to_crs(_pixels_to_utm(g), "EPSG:4326") for k, g in SHAPES.items()}
    features = [({"cls": k, "burn": BURN[k]}, g) for k, g in lonlat.items()]
    return _write_geojson(tmp_path / "shapes.geojson", features, None), lonlat


@pytest.fixture
def in_3857(tmp_path) -> tuple[Path, dict]:
    mercator = {k: _to_crs(_pixels_to_utm(g), "EPSG:3857") for k, g in SHAPES.items()}
    path = _write_layer(
        tmp_path / "shapes.gpkg", list(mercator.values()), list(mercator), "EPSG:3857", "shapes"
    )
    return path, mercator


def _paint_pixels(regions) -> np.ndarray:
    """Our regions, already in pixel coordinates: rasterized with the identity transform."""
    shapes = [(r.geometry, BURN[r.label]) for r in regions]
    return rasterize(shapes, out_shape=(HEIGHT, WIDTH), transform=Affine.identity(), fill=0,
                     dtype="uint8", all_touched=False)  # fmt: skip


def _paint_pyproj(originals: dict, crs: str) -> np.ndarray:
    """The other path: the file's geometries to the raster's CRS with pyproj, rasterized
    through the raster's geotransform."""
    shapes = [(_to_crs(g, UTM, source=crs), BURN[k]) for k, g in originals.items()]
    return rasterize(shapes, out_shape=(HEIGHT, WIDTH), transform=TRANSFORM, fill=0,
                     dtype="uint8", all_touched=False)  # fmt: skip


def _paint_gdal(path: Path, raster: Path, tmp_path: Path) -> np.ndarray:
    """GDAL's own tools: ogr2ogr -t_srs to the raster's CRS, gdal_rasterize onto a copy of
    the raster's grid."""
    moved = tmp_path / f"{path.stem}_utm.gpkg"
    subprocess.run(["ogr2ogr", "-f", "GPKG", "-t_srs", UTM, "-nln", "moved", str(moved),
                    str(path)], check=True, capture_output=True)  # fmt: skip
    target = _write_raster(tmp_path / f"{path.stem}_burnt.tif")
    subprocess.run(["gdal_rasterize", "-a", "burn", "-l", "moved", str(moved), str(target)],
                   check=True, capture_output=True)  # fmt: skip
    with rasterio.open(target) as src:
        return src.read(1)


def _assert_same_pixels(ours: np.ndarray, reference: np.ndarray, regions) -> None:
    """Equal, but for pixels whose centre lies on a polygon's edge (to EDGE_TOLERANCE_PX),
    where the two roundings may go either way."""
    assert ours.any()
    rows, cols = np.nonzero(ours != reference)
    boundary = shapely.union_all([r.geometry.boundary for r in regions])
    centres = shapely.points(cols + 0.5, rows + 0.5)
    distances = shapely.distance(centres, boundary)
    assert (distances < EDGE_TOLERANCE_PX).all(), list(zip(rows, cols, distances, strict=True))


@pytest.mark.parametrize("source", ["in_4326", "in_3857"])
def test_polygons_land_on_the_pixels_of_an_independent_rasterization(
    source, raster, tmp_path, request
):
    path, originals = request.getfixturevalue(source)
    crs = "EPSG:4326" if source == "in_4326" else "EPSG:3857"
    regions = read_regions(path, raster, "cls")
    assert sorted(r.label for r in regions) == sorted(BURN)
    by_label = {r.label: r for r in regions}
    assert by_label["hole"].geometry.geom_type == "Polygon"
    assert len(by_label["hole"].geometry.interiors) == 1
    assert by_label["multi"].geometry.geom_type == "MultiPolygon"
    # Not clipped: the part beyond the raster's right edge is still there.
    assert by_label["edge"].geometry.bounds[2] == pytest.approx(450.7, abs=1e-6)
    for label, shape in SHAPES.items():  # the vertices come back where they were drawn
        assert shapely.hausdorff_distance(by_label[label].geometry, shape) < 1e-5

    ours = _paint_pixels(regions)
    assert {1, 2, 3} <= set(np.unique(ours))
    _assert_same_pixels(ours, _paint_pyproj(originals, crs), regions)
    if shutil.which("ogr2ogr") and shutil.which("gdal_rasterize"):
        _assert_same_pixels(ours, _paint_gdal(path, raster, tmp_path), regions)


def test_gdal_cli_reference(in_4326, raster, tmp_path):
    """The GDAL-tools comparison ran (not skipped silently where the tools exist)."""
    if not (shutil.which("ogr2ogr") and shutil.which("gdal_rasterize")):
        pytest.skip("GDAL's command-line tools (gdal-bin) are not installed")
    path, _ = in_4326
    gdal = _paint_gdal(path, raster, tmp_path)
    assert set(np.unique(gdal)) == {0, 1, 2, 3}
    regions = read_regions(path, raster, "cls")
    _assert_same_pixels(_paint_pixels(regions), gdal, regions)


def test_long_edges_are_densified(raster, tmp_path):
    """An area drawn in EPSG:4326 with 1.4 km diagonal edges: an edge straight in
    longitude and latitude is a curve in UTM, bowing about 1.4 cm (1.4 px) from the chord
    between its reprojected ends. Densified, the middle of each edge lands where pyproj
    puts it."""
    diamond = shapely.Polygon(
        [(640000.0, 8049000.0), (641000.0, 8050000.0), (640000.0, 8051000.0), (639000.0, 8050000.0)]
    )
    lonlat = _to_crs(diamond, "EPSG:4326")
    path = _write_geojson(tmp_path / "area.geojson", [({"cls": "area"}, lonlat)], None)
    area = read_area(path, raster)
    to_pixel = ~TRANSFORM
    to_utm = Transformer.from_crs("EPSG:4326", UTM, always_xy=True)
    corners = shapely.get_coordinates(lonlat)
    for start, end in zip(corners[:-1], corners[1:], strict=True):
        middle = to_pixel @ to_utm.transform(*((start + end) / 2))
        chord = (np.add(to_pixel @ to_utm.transform(*start), to_pixel @ to_utm.transform(*end))) / 2
        assert shapely.distance(shapely.Point(middle), shapely.Point(chord)) > 1  # it matters
        assert area.boundary.distance(shapely.Point(middle)) < 1e-3


def test_reads_shapefile_without_crs_given_layer_crs(raster, tmp_path):
    utm = [_pixels_to_utm(g) for g in SHAPES.values()]
    path = _write_layer(tmp_path / "nocrs.shp", utm, list(SHAPES), None, "nocrs")
    with pytest.raises(GISError, match=r"names no CRS.*EPSG:32755.*layer_crs"):
        read_regions(path, raster, "cls")
    regions = read_regions(path, raster, "cls", layer_crs=UTM)
    for region in regions:
        assert shapely.hausdorff_distance(region.geometry, SHAPES[region.label]) < 1e-6


def test_layer_crs_overrides_a_wrong_one(raster, tmp_path):
    utm = [_pixels_to_utm(g) for g in SHAPES.values()]
    wrong = _write_layer(tmp_path / "wrong.gpkg", utm, list(SHAPES), "EPSG:32756", "wrong")
    with pytest.warns(GISWarning, match=r"names WGS 84 / UTM zone 56S.*taken as.*32755"):
        regions = read_regions(wrong, raster, "cls", layer_crs=UTM)
    assert len(regions) == 3


def test_missing_field_lists_the_fields(in_4326, raster):
    path, _ = in_4326
    with pytest.raises(GISError, match=r"shapes\.geojson.*'klass'.*cls, burn"):
        read_regions(path, raster, "klass")
    assert {r.label for r in read_regions(path, raster, "CLS")} == set(BURN)  # any case
    assert {r.label for r in read_regions(path, raster, "burn")} == {"1", "2", "3"}


def test_several_layers_need_a_name(raster, tmp_path):
    utm = [_pixels_to_utm(g) for g in SHAPES.values()]
    path = _write_layer(tmp_path / "two.gpkg", utm, list(SHAPES), UTM, "colonies")
    _write_layer(path, utm[:1], ["x"], UTM, "other", append=True)
    with pytest.raises(GISError, match=r"two\.gpkg: 2 layers.*colonies, other.*layer="):
        read_regions(path, raster, "cls")
    with pytest.raises(GISError, match=r"no layer 'third'.*colonies, other"):
        read_regions(path, raster, "cls", layer="third")
    assert len(read_regions(path, raster, "cls", layer="colonies")) == 3
    assert [r.label for r in read_regions(path, raster, "cls", layer="other")] == ["x"]


def test_points_lines_and_empty_features_are_reported(raster, tmp_path):
    polygon = _to_crs(_pixels_to_utm(SHAPES["hole"]), "EPSG:4326")
    point = _to_crs(_pixels_to_utm(shapely.Point(10.3, 10.7)), "EPSG:4326")
    line = _to_crs(_pixels_to_utm(shapely.LineString([(1.3, 2.2), (50.1, 60.7)])), "EPSG:4326")
    features = [
        ({"cls": "hole"}, polygon),
        ({"cls": "p"}, point),
        ({"cls": "l"}, line),
        ({"cls": "n"}, None),
        ({"cls": None}, polygon),  # null class: unknown
    ]
    path = _write_geojson(tmp_path / "mixed.geojson", features, None)
    with pytest.warns(GISWarning) as caught:
        regions = read_regions(path, raster, "cls")
    messages = [str(w.message) for w in caught]
    assert any("2 of 5 features are no polygons (LineString, Point)" in m and "FID 1, 2" in m
               for m in messages), messages  # fmt: skip
    assert any("1 of 5 features have no geometry" in m and "FID 3" in m for m in messages)
    assert [(r.id, r.label) for r in regions] == [(0, "hole"), (4, "")]

    only = _write_geojson(tmp_path / "points.geojson", features[1:3], None)
    with pytest.warns(GISWarning), pytest.raises(GISError, match="none of its 2 features"):
        read_regions(only, raster, "cls")


def test_invalid_polygon_is_repaired(raster, tmp_path):
    bowtie = shapely.Polygon([(10.2, 10.3), (60.7, 60.1), (60.4, 10.6), (10.1, 60.9)])
    path = _write_layer(tmp_path / "bow.gpkg", [_pixels_to_utm(bowtie)], ["a"], UTM, "bow")
    with pytest.warns(GISWarning, match="1 of 1 features are invalid polygons"):
        (region,) = read_regions(path, raster, "cls")
    assert region.geometry.is_valid and region.geometry.geom_type == "MultiPolygon"
    assert region.geometry.area == pytest.approx(
        shapely.make_valid(bowtie, method="structure").area, rel=1e-9
    )


def test_layer_wholly_off_the_raster_is_an_error(raster, tmp_path):
    far = shapely.affinity.translate(_pixels_to_utm(SHAPES["hole"]), 5000.0, 0.0)
    path = _write_layer(tmp_path / "far.gpkg", [far], ["a"], UTM, "far")
    with pytest.raises(GISError, match="none of its 1 polygons lands on the raster"):
        read_regions(path, raster, "cls")


def test_raster_without_georeference_takes_pixel_coordinates(tmp_path):
    plain = _write_raster(tmp_path / "plain.tif", georeferenced=False)
    features = [({"cls": k}, g) for k, g in SHAPES.items()]
    pixels = _write_geojson(tmp_path / "pixels.geojson", features, None)
    regions = read_regions(pixels, plain, "cls")
    for region in regions:
        assert region.geometry.equals_exact(SHAPES[region.label], 0)
    named = _write_geojson(tmp_path / "named.geojson", features, "urn:ogc:def:crs:EPSG::32755")
    with pytest.raises(GISError, match="has no georeference"):
        read_regions(named, plain, "cls")


def test_read_area_is_the_union(in_3857, raster):
    path, _ = in_3857
    area = read_area(path, raster)
    expected = shapely.union_all(list(SHAPES.values()))
    assert area.symmetric_difference(expected).area < 1e-3  # vertices off by ~1e-7 px


def test_read_area_without_polygons_is_an_error(raster, tmp_path):
    empty = _write_geojson(tmp_path / "empty.geojson", [], None)
    with pytest.raises(GISError, match="no polygon to make the annotated area of"):
        read_area(empty, raster)


# ---------------------------------------------------------------- GeoPackageWriter

CLASSES = ["background", "acropora", "porites"]
PIXEL_M2 = 1e-4 / 0.9996**2  # what mosaic/ground.py measures near the central meridian


def _colonies() -> list[Colony]:
    hole = shapely.Polygon([(10, 10), (50, 10), (50, 40), (10, 40)],
                           [[(20, 20), (30, 20), (30, 30), (20, 30)]])  # fmt: skip
    parts = shapely.MultiPolygon([shapely.box(100, 5, 120, 25), shapely.box(130, 5, 140, 15)])
    return [
        Colony(1, 0.91234, False, hole, ["sam"]),
        Colony(2, 0.1, True, parts, ["sam", "semantic"]),
        Colony(1, 0.55, False, shapely.box(200, 100, 203, 104), ["semantic"]),
    ]


def test_geopackage_of_colonies(raster, tmp_path):
    path = tmp_path / "ortho_colonies.gpkg"
    writer = GeoPackageWriter(path, TRANSFORM, CRS.from_string(UTM), CLASSES, PIXEL_M2, "ortho")
    colonies = _colonies()
    writer.write(colonies[:2])
    writer.write([])
    writer.write(colonies[2:])
    writer.commit()
    assert (writer.count, writer.unsure) == (3, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ortho.tif", "ortho_colonies.gpkg"]

    assert pyogrio.list_layers(path).tolist() == [["ortho", "MultiPolygon"]]
    info = pyogrio.read_info(path)
    assert info["crs"] == "EPSG:32755"
    assert list(info["fields"]) == list(GeoPackageWriter.FIELDS)
    meta, _, wkb, data = raw.read(path)
    columns = dict(zip(meta["fields"], data, strict=True))
    geometries = shapely.from_wkb(wkb)
    assert set(shapely.get_type_id(geometries)) == {6}  # all MultiPolygon
    assert columns["id"].tolist() == [1, 2, 3]
    assert columns["class"].tolist() == ["acropora", "porites", "acropora"]
    assert columns["class_index"].tolist() == [1, 2, 1]
    assert columns["confidence"].tolist() == [0.9123, 0.1, 0.55]
    assert columns["unsure"].tolist() == [False, True, False]
    assert columns["source"].tolist() == ["sam", "sam+semantic", "semantic"]
    area_px = [c.area_px for c in colonies]
    assert columns["area_px"].tolist() == area_px == [1100, 500, 12]
    # Areas in the layer's CRS: pixel count x the grid cell (1 cm x 1 cm).
    np.testing.assert_allclose(shapely.area(geometries), np.array(area_px) * 1e-4, rtol=1e-7)
    np.testing.assert_allclose(columns["area_m2"], np.array(area_px) * PIXEL_M2, rtol=1e-6)
    assert len(geometries[0].geoms[0].interiors) == 1
    assert len(geometries[1].geoms) == 2

    # Read back onto the raster: the colonies' pixel geometries.
    regions = read_regions(path, raster, "class")
    for region, colony in zip(regions, colonies, strict=True):
        assert region.geometry.symmetric_difference(colony.geometry).area < 1e-6

    if shutil.which("ogrinfo"):
        text = subprocess.run(["ogrinfo", "-so", "-al", str(path)], check=True,
                              capture_output=True, text=True).stdout  # fmt: skip
        assert "Layer name: ortho" in text
        assert "Geometry: Multi Polygon" in text
        assert "Feature Count: 3" in text
        assert 'ID["EPSG",32755]' in text
        for field in ("id: Integer64", "class: String", "confidence: Real", "area_m2: Real"):
            assert field in text
        assert "unsure: Integer(Boolean)" in text


def test_geopackage_without_colonies_has_the_layer(tmp_path):
    path = tmp_path / "empty.gpkg"
    writer = GeoPackageWriter(path, TRANSFORM, CRS.from_string(UTM), CLASSES, None, "empty")
    writer.commit()
    info = pyogrio.read_info(path, force_feature_count=True)
    assert (info["layer_name"], info["features"], info["crs"]) == ("empty", 0, "EPSG:32755")
    assert info["geometry_type"] == "MultiPolygon"
    assert list(info["fields"]) == list(GeoPackageWriter.FIELDS)


def test_geopackage_without_georeference_is_in_pixels(tmp_path):
    path = tmp_path / "plain.gpkg"
    writer = GeoPackageWriter(path, Affine.identity(), None, CLASSES, None, "plain")
    writer.write(_colonies())
    writer.commit()
    meta, _, wkb, data = raw.read(path)
    assert meta["crs"] is None
    assert shapely.from_wkb(wkb[2]).equals(shapely.MultiPolygon([shapely.box(200, 100, 203, 104)]))
    assert np.isnan(data[list(meta["fields"]).index("area_m2")]).all()  # unknown: null


def test_geopackage_abort_leaves_nothing(tmp_path):
    path = tmp_path / "gone.gpkg"
    writer = GeoPackageWriter(path, TRANSFORM, CRS.from_string(UTM), CLASSES, None, "gone")
    writer.write(_colonies())
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_geopackage_unwritable_names_the_path(tmp_path):
    path = tmp_path / "missing" / "out.gpkg"
    with pytest.raises(ImageWriteError, match=r"missing/out\.gpkg: cannot write"):
        GeoPackageWriter(path, TRANSFORM, None, CLASSES, None, "out")
