"""Corrected polygons (TagLab projects, GIS polygon files) as reef_stats' annotations
(analysis/polygon_source.py).

The numbers of a small annotated map (two genera, a hole, a colony in two parts, an
overlap, a background patch, a nodata collar, with and without a stated area) must equal
a class map built here by hand with numpy slicing; a colony relabelled in a corrected
GeoJSON must change the numbers of tiled inference's stale class map.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine
from shapely.geometry import MultiPolygon, Polygon, box

import reef_stats
from analysis import mosaic_source
from analysis.open_source import open_source
from analysis.polygon_source import PolygonSource
from analysis.sources import ANNOTATED, ClassInfo, SourceError
from dataset.taxonomy import load_taxonomy
from exchange.regions import AnnotatedMap, Region

FINE = load_taxonomy("fine")
ACR, POC, POR = (FINE.classes.index(n) for n in ("Acropora", "Pocillopora", "Porites"))
HEIGHT, WIDTH, COLLAR = 60, 80, 70  # columns from COLLAR on are nodata
UTM_2MM = Affine(0.002, 0, 500_000.0, 0, -0.002, 8_200_000.0)  # UTM 55S, 2 mm pixels


def write_orthomosaic(path: Path, georeferenced: bool = True) -> Path:
    """An RGB GeoTIFF whose columns from COLLAR on hold the nodata value in every band."""
    image = np.full((3, HEIGHT, WIDTH), 100, np.uint8)
    image[:, :, COLLAR:] = 0
    profile = dict(driver="GTiff", width=WIDTH, height=HEIGHT, count=3, dtype="uint8", nodata=0)
    if georeferenced:
        profile.update(crs="EPSG:32755", transform=UTM_2MM)
    with warnings.catch_warnings():  # a raster without georeference is meant
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(image)
    return path


# Boxes are (left, top, right, bottom) in map pixels: box(c0, r0, c1, r1) covers exactly
# the pixels [r0:r1, c0:c1].
HOLE = box(15, 10, 20, 15)
REGIONS = [
    Region("Acropora sp", box(10, 5, 30, 25).difference(HOLE), id=7),  # alias; 375 px
    Region("Porites massive", MultiPolygon([box(40, 5, 50, 15), box(55, 20, 65, 30)]), id=8),
    Region("pocillopora", box(25, 20, 35, 30), id=9),  # 100 px over the Acropora's corner
    Region("Porites", box(60, 40, 80, 55), id=10),  # into the nodata collar
    Region("Background", box(62, 42, 66, 46), id=11),  # a sand patch on the Porites
]
AREA = box(0, 0, 50, 40)


def expected_map(area: bool) -> np.ndarray:
    """The class map by hand: larger regions first, each smaller one painted over them."""
    expected = np.full((HEIGHT, WIDTH), 255 if area else 0, np.uint8)
    if area:
        expected[0:40, 0:50] = 0
    expected[5:25, 10:30] = ACR  # 375 px (the hole taken off)
    expected[10:15, 15:20] = 0  # the hole, inside the area: background
    expected[40:55, 60:80] = POR  # 300 px
    expected[5:15, 40:50] = POR  # 200 px in two parts
    expected[20:30, 55:65] = POR
    expected[20:30, 25:35] = POC  # 100 px
    expected[42:46, 62:66] = 0  # 16 px of sand
    expected[:, COLLAR:] = 255  # no image there
    return expected


def expected_colonies(expected: np.ndarray) -> dict[int, tuple[int, np.ndarray]]:
    """{region id: (class, full mask)}: each region's pixels in the map it painted."""
    inside = np.zeros_like(expected, bool)
    b = inside.copy()
    b[5:15, 40:50] = b[20:30, 55:65] = True
    d = inside.copy()
    d[40:55, 60:80] = True
    return {
        7: (ACR, expected == ACR),
        8: (POR, b & (expected == POR)),
        9: (POC, expected == POC),
        10: (POR, d & (expected == POR)),
    }


def synthetic_source(tmp_path: Path, area: bool, **extra) -> PolygonSource:
    tmp_path.mkdir(parents=True, exist_ok=True)
    image = write_orthomosaic(tmp_path / "ortho.tif", extra.pop("georeferenced", True))
    annotated = AnnotatedMap("reef", image, WIDTH, HEIGHT, list(REGIONS),
                             AREA if area else None, **extra)  # fmt: skip
    return PolygonSource(tmp_path / "project.json", [annotated], ClassInfo.load("fine"))


@pytest.mark.parametrize("area", [False, True], ids=["valid pixels", "stated area"])
def test_cover_colonies_and_points_equal_a_numpy_class_map(tmp_path, monkeypatch, area):
    monkeypatch.setattr(mosaic_source, "WINDOW", 16)  # every count crosses window edges
    expected = expected_map(area)
    counted = expected != 255
    source = synthetic_source(tmp_path, area)
    assert source.kind == ANNOTATED and source.stems() == ["reef"]
    with source.open("reef") as image:
        assert image.name == "ortho.tif" and image.shape == (HEIGHT, WIDTH)
        assert np.array_equal(image.whole(), expected)
        pixels, total = image.class_pixels(FINE.num_classes)
        assert total == counted.sum()
        assert pixels.tolist() == np.bincount(expected[counted], minlength=256)[:17].tolist()
        colonies = {c.id: c for c in image.colonies()}
        wanted = expected_colonies(expected)
        assert sorted(colonies) == sorted(wanted), "one colony per region, none for the sand"
        for colony_id, (class_index, mask) in wanted.items():
            colony = colonies[colony_id]
            assert colony.class_index == class_index and colony.area == mask.sum()
            assert np.array_equal(colony.full(expected.shape), mask)
            top, left, bottom, right = colony.box
            around = counted[max(top - 1, 0) : bottom + 1, max(left - 1, 0) : right + 1]
            assert np.array_equal(image.valid_around(colony), around)
        # the colonies partition the coral of the class map, overlaps counted once
        coral = np.zeros(expected.shape, int)
        for colony in colonies.values():
            coral += colony.full(expected.shape)
        assert np.array_equal(coral, np.isin(expected, (ACR, POC, POR)))
        rows, cols, labels = image.stratified_points(16, np.random.default_rng(0))
        cells = [counted[r * HEIGHT // 4 : (r + 1) * HEIGHT // 4, c * WIDTH // 4 : (c + 1) *
                         WIDTH // 4].any() for r in range(4) for c in range(4)]  # fmt: skip
        assert len(rows) == sum(cells) and counted[rows, cols].all(), "a point per counted cell"
        assert np.array_equal(labels, expected[rows, cols])
        assert "EPSG:32755" in image.scale_from
        assert image.scale.mm_per_pixel == pytest.approx(2 / 0.9996, rel=1e-3)
    whole = source.load("reef")
    assert np.array_equal(whole.class_map, expected) and whole.cover_from == "polygons"
    assert sorted(c.id for c in whole.colonies) == sorted(wanted)


def test_scale_from_the_georeference_else_the_projects_pixel_size_else_none(tmp_path):
    with synthetic_source(tmp_path / "a", False, mm_per_pixel=5.0).open("reef") as image:
        assert "EPSG:32755" in image.scale_from, "the georeference wins"
    plain = synthetic_source(tmp_path / "b", False, mm_per_pixel=5.0, georeferenced=False)
    with plain.open("reef") as image:
        assert image.scale.mm_per_pixel == 5.0 and "pixel size" in image.scale_from
    with synthetic_source(tmp_path / "c", False, georeferenced=False).open("reef") as image:
        assert image.scale is None and image.scale_from.startswith("none")


def test_a_map_without_its_orthomosaic_needs_a_stated_area(tmp_path, caplog):
    missing = AnnotatedMap("reef", tmp_path / "moved.tif", WIDTH, HEIGHT, list(REGIONS))
    source = PolygonSource(tmp_path / "p.json", [missing], ClassInfo.load("fine"))
    with pytest.raises(SourceError, match=r"moved\.tif cannot be read.*annotated area"):
        source.open("reef")
    missing.area = AREA
    with source.open("reef") as image:
        expected = expected_map(area=True)
        expected[40:55, COLLAR:] = POR  # no nodata mask: the Porites counts in the collar
        assert np.array_equal(image.whole(), expected)
    assert "moved.tif cannot be read" in caplog.text


def test_unknown_labels_are_named_with_their_counts_never_dropped(tmp_path):
    image = write_orthomosaic(tmp_path / "ortho.tif")
    regions = [
        Region("Empty", box(0, 0, 5, 5)),
        Region("Empty", box(5, 5, 9, 9)),
        Region("Seagrass", box(20, 20, 30, 30)),
        Region("Porites", box(1, 40, 5, 45)),
    ]
    annotated = AnnotatedMap("reef", image, WIDTH, HEIGHT, regions)
    with pytest.raises(SourceError) as error:
        PolygonSource(tmp_path / "survey.json", [annotated], ClassInfo.load("fine"))
    message = str(error.value)
    assert "survey.json" in message and "'fine' taxonomy" in message
    assert "'Empty' (2), 'Seagrass' (1)" in message and "TagLab's class" in message
    # a coarse taxonomy knows its members' genus names
    genus = AnnotatedMap("m", image, WIDTH, HEIGHT, [Region("Acropora", box(0, 0, 4, 4))])
    coarse = PolygonSource(tmp_path / "s.json", [genus], ClassInfo.load("coarse"))
    with coarse.open("m") as opened:
        (colony,) = opened.colonies()
    assert coarse.classes.names[colony.class_index] == "Acroporidae"


def test_files_that_are_no_polygons_or_lack_their_raster_are_refused(tmp_path):
    table = tmp_path / "numbers.csv"
    table.write_text("a,b\n")
    with pytest.raises(SourceError, match=r"numbers\.csv: not an input.*TagLab project"):
        open_source(table)
    polygons = tmp_path / "corrected.geojson"
    polygons.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(SourceError, match=r"corrected\.geojson: .*give it as --images"):
        open_source(polygons)
    with pytest.raises(SourceError, match="--area .* is neither"):
        open_source(tmp_path, area=polygons)


# --- through the readers (exchange/gis.py, exchange/taglab.py) and the command line ---


def _tiled_run(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The stale predictions: tiled inference of an orthomosaic with the stand-in models
    of tests/test_mosaic.py (a class-map GeoTIFF and colonies GeoJSON in mosaics/)."""
    from test_mosaic import _georeferenced_mosaic, _run

    ortho, _ = _georeferenced_mosaic(tmp_path / "reef.tif", width=700, height=500)
    result = _run(ortho, tmp_path / "out" / "mosaics", 256, 32)
    return ortho, result.outputs["classes"], result.outputs["colonies"]


def test_a_corrected_geojson_gives_the_corrected_numbers_not_the_stale_maps(tmp_path):
    from test_mosaic import CLASSES

    ortho, classes_tif, colonies_json = _tiled_run(tmp_path)
    stale = open_source(tmp_path / "out" / "mosaics").load("reef")
    collection = json.loads(colonies_json.read_text())
    red = [f for f in collection["features"] if f["properties"]["class"] == "red_coral"]
    assert len(red) == 1, "the seam colony"
    red[0]["properties"].update({"class": "green_coral", "class_index": 2})  # the correction
    corrected = tmp_path / "corrected.geojson"
    corrected.write_text(json.dumps(collection))
    classes_txt = tmp_path / "classes.txt"
    classes_txt.write_text("\n".join(CLASSES) + "\n")

    # the corrected class map, by hand: the stale one with that colony's pixels green
    with rasterio.open(classes_tif) as src:
        expected = src.read(1)
    (relabelled,) = [c for c in stale.colonies if c.id == red[0]["properties"]["id"]]
    expected[relabelled.full(expected.shape)] = 2
    assert (expected == 1).sum() == 0 < (stale.class_map == 1).sum()

    out = tmp_path / "corrected_stats"
    argv = ["summarize", str(corrected), "--images", str(ortho), "--classes", str(classes_txt),
            "--output-dir", str(out), "--points", "20"]  # fmt: skip
    assert reef_stats.main(argv) == 0
    cover = pd.read_csv(out / "cover.csv")
    assert set(cover["source"]) == {"annotated"}
    assert cover["pixels"].tolist() == np.bincount(expected.ravel(), minlength=3)[:3].tolist()
    assert "EPSG:32755" in pd.read_csv(out / "images.csv")["scale_source"].item()
    colonies = pd.read_csv(out / "colonies.csv")
    assert colonies["genus"].tolist() == ["green_coral"] * len(stale.colonies)
    assert sorted(colonies["area_px"]) == sorted(c.area for c in stale.colonies)
    points = pd.read_csv(out / "coralnet" / "annotated" / "annotations.csv")
    codes = ("background", "redcoral", "greencoral")
    assert [codes[expected[r, c]] for r, c in zip(points["Row"], points["Column"], strict=True)] \
        == points["Label code"].tolist()  # fmt: skip

    # the stale map beside the corrected polygons (--truth): the correction is the error
    out = tmp_path / "versus"
    argv = ["summarize", str(tmp_path / "out" / "mosaics"), "--truth", str(corrected),
            "--images", str(ortho), "--output-dir", str(out), "--points", "0"]  # fmt: skip
    assert reef_stats.main(argv) == 0
    cover = pd.read_csv(out / "cover.csv").set_index(["source", "class"])
    moved = 100 * relabelled.area / expected.size
    assert cover.loc[("predicted", "red_coral"), "cover_percent"] == pytest.approx(moved)
    assert cover.loc[("annotated", "red_coral"), "cover_percent"] == 0
    errors = pd.read_csv(out / "cover_error.csv").set_index("class")
    assert errors.loc["red_coral", "mean_error_pp"] == pytest.approx(moved)
    assert errors.loc["green_coral", "mean_error_pp"] == pytest.approx(-moved)


def test_a_mosaic_beside_its_corrections_is_counted_by_windows_as_whole_maps_count_it(
    tmp_path, monkeypatch
):
    """summarize MOSAICS --truth corrected.geojson reads neither map whole: 64 px windows
    give every table the whole-map pair path (summary.py's, as for quadrats) gives."""
    from analysis import summary

    ortho, _, colonies_json = _tiled_run(tmp_path)
    collection = json.loads(colonies_json.read_text())
    (seam,) = collection["features"]  # the red colony across a tile seam, at (470, 300)
    collection["features"] = []  # people deleted it, and drew another (below)
    to_map = [0.001, 0, 0, -0.001, 500_000.0, 8_200_000.0]  # _georeferenced_mosaic's grid

    def feature(properties: dict, pixels: Polygon) -> dict:
        geometry = shapely.affinity.affine_transform(pixels, to_map)
        return {"type": "Feature", "properties": properties,
                "geometry": shapely.geometry.mapping(geometry)}  # fmt: skip

    collection["features"].append(feature({"class": "red_coral"}, box(100, 100, 160, 150)))
    corrected = tmp_path / "corrected.geojson"
    corrected.write_text(json.dumps(collection))
    # the annotated area, which cuts the deleted colony, is what both maps count
    area = tmp_path / "area.geojson"
    area.write_text(json.dumps({"type": "FeatureCollection", "crs": collection["crs"],
                                "features": [feature({}, box(0, 0, 480, 420))]}))  # fmt: skip
    argv = ["summarize", str(tmp_path / "out" / "mosaics"), "--truth", str(corrected),
            "--images", str(ortho), "--area", str(area), "--points", "30"]  # fmt: skip

    from test_mosaic import CLASSES

    classes_txt = tmp_path / "classes.txt"
    classes_txt.write_text("\n".join(CLASSES) + "\n")
    maps = {  # whole, by the readers' own load, before the windowed run forbids it
        "predicted": open_source(tmp_path / "out" / "mosaics").load("reef").class_map,
        "annotated": open_source(corrected, classes=classes_txt, images=ortho, area=area)
        .load("reef")
        .class_map,
    }
    whole = tmp_path / "whole"
    with monkeypatch.context() as patch:
        patch.setattr(summary, "windowed_pair", lambda *a: False)
        assert reef_stats.main([*argv, "--output-dir", str(whole)]) == 0

    def never(self, stem):
        raise AssertionError("a whole map was read")

    monkeypatch.setattr(mosaic_source, "WINDOW", 64)  # 700 x 500 px: 88 windows
    monkeypatch.setattr(mosaic_source.MosaicOutput, "load", never)
    monkeypatch.setattr(PolygonSource, "load", never)
    windowed = tmp_path / "windowed"
    assert reef_stats.main([*argv, "--output-dir", str(windowed)]) == 0
    tables = ["images.csv", "cover.csv", "colonies.csv", "groups.csv", "size_classes.csv",
              "cover_error.csv"]  # fmt: skip
    for name in tables:
        expected = pd.read_csv(whole / name)
        pd.testing.assert_frame_equal(pd.read_csv(windowed / name), expected, obj=name)
    # CoralNet's points: drawn cell by cell in window order (another draw of the same rule
    # than the whole map's row order), the same pixels for both, on the shared area only
    points = {kind: pd.read_csv(windowed / "coralnet" / kind / "annotations.csv")
              for kind in maps}  # fmt: skip
    where = points["predicted"][["Row", "Column"]]
    assert where.equals(points["annotated"][["Row", "Column"]])
    shared = (maps["predicted"] != 255) & (maps["annotated"] != 255)
    assert 20 <= len(where) <= 30 and shared[where["Row"], where["Column"]].all()
    codes = ("background", "redcoral", "greencoral")
    for kind, class_map in maps.items():
        labels = class_map[where["Row"], where["Column"]]
        assert points[kind]["Label code"].tolist() == [codes[i] for i in labels], kind
    images = pd.read_csv(windowed / "images.csv").set_index("source")
    assert images["valid_pixels"].tolist() == [shared.sum()] * 2 < [350_000] * 2  # one area
    colonies = pd.read_csv(windowed / "colonies.csv").set_index("source")
    seam_whole = shapely.affinity.affine_transform(
        shapely.geometry.shape(seam["geometry"]), [1000, 0, 0, -1000, -500_000_000, 8_200_000_000]
    )
    clipped = colonies.loc["predicted"]  # the stale map's colony, clipped to the shared area
    assert clipped["touches_edge"] and clipped["area_px"] < 0.8 * seam_whole.area
    assert colonies.loc["annotated", "area_px"] == 60 * 50
    # a quadrat is a photo's frame: refused for a mosaic pair as for a mosaic alone
    framed = tmp_path / "framed"
    quadrat = ["--quadrat-polygon", "0,0 100,0 100,100 0,100", "--output-dir", str(framed)]
    assert reef_stats.main([*argv, *quadrat]) == 1 and not framed.exists()


def test_a_polygon_file_names_its_unknown_labels_and_missing_class_field(tmp_path, capsys):
    ortho = write_orthomosaic(tmp_path / "ortho.tif")
    to_map = [UTM_2MM.a, UTM_2MM.b, UTM_2MM.d, UTM_2MM.e, UTM_2MM.c, UTM_2MM.f]
    features = [
        {"type": "Feature", "properties": {"genus": label},
         "geometry": shapely.geometry.mapping(shapely.affinity.affine_transform(g, to_map))}
        for label, g in (("Porites", box(1, 1, 9, 9)), ("Empty", box(20, 20, 30, 30)))
    ]  # fmt: skip
    polygons = tmp_path / "corrected.geojson"
    polygons.write_text(json.dumps({
        "type": "FeatureCollection", "features": features,
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32755"}},
    }))  # fmt: skip
    base = ["summarize", str(polygons), "--images", str(ortho), "--output-dir",
            str(tmp_path / "out")]  # fmt: skip
    assert reef_stats.main(base) == 2
    assert "no attribute 'class'" in capsys.readouterr().err
    assert reef_stats.main([*base, "--class-field", "genus"]) == 2
    assert "'Empty' (1)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_stated_area_file_limits_the_counted_pixels(tmp_path):
    ortho = write_orthomosaic(tmp_path / "ortho.tif")
    to_map = [UTM_2MM.a, UTM_2MM.b, UTM_2MM.d, UTM_2MM.e, UTM_2MM.c, UTM_2MM.f]
    crs = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32755"}}

    def write(path: Path, shapes: list[tuple[str, Polygon]]) -> Path:
        features = [
            {"type": "Feature", "properties": {"class": label},
             "geometry": shapely.geometry.mapping(shapely.affinity.affine_transform(g, to_map))}
            for label, g in shapes
        ]  # fmt: skip
        path.write_text(json.dumps({"type": "FeatureCollection", "features": features,
                                    "crs": crs}))  # fmt: skip
        return path

    polygons = write(tmp_path / "corrected.geojson",
                     [(r.label, r.geometry) for r in REGIONS])  # fmt: skip
    area = write(tmp_path / "area.geojson", [("area", AREA)])
    for with_area in (False, True):
        out = tmp_path / f"out_{with_area}"
        argv = ["summarize", str(polygons), "--images", str(ortho), "--output-dir", str(out),
                "--points", "0", *(["--area", str(area)] if with_area else [])]  # fmt: skip
        assert reef_stats.main(argv) == 0
        expected = expected_map(with_area)
        cover = pd.read_csv(out / "cover.csv")
        counted = expected[expected != 255]
        assert cover["pixels"].tolist() == np.bincount(counted, minlength=256)[:17].tolist()
        colonies = pd.read_csv(out / "colonies.csv")
        wanted = expected_colonies(expected)
        assert sorted(colonies["area_px"]) == sorted(int(m.sum()) for _, m in wanted.values())
        images = pd.read_csv(out / "images.csv")
        assert images["valid_pixels"].item() == counted.size
        mm2 = images["mm_per_pixel"].item() ** 2
        assert images["valid_area_cm2"].item() == pytest.approx(counted.size * mm2 / 100, 1e-6)


def write_taglab(path: Path, image: Path, regions: list[Region], area=None) -> Path:
    """A TagLab project of one map, as exchange/taglab.py writes one for TagLab."""
    from exchange.taglab import TagLabWriter

    labels = sorted({region.label for region in regions})
    writer = TagLabWriter(path, [(label, (200, 60, 60)) for label in labels], working_area=area)
    writer.begin_map("reef", image, WIDTH, HEIGHT, mm_per_pixel=5.0)
    writer.write(regions)
    writer.commit()
    return path


@pytest.mark.parametrize("area", [False, True], ids=["valid pixels", "working area"])
def test_a_taglab_project_through_the_command_line(tmp_path, area):
    image = write_orthomosaic(tmp_path / "ortho.tif")
    project = write_taglab(tmp_path / "survey.json", image, REGIONS, AREA if area else None)
    out = tmp_path / "out"
    argv = ["summarize", str(project), "--output-dir", str(out), "--points", "0"]
    assert reef_stats.main(argv) == 0
    expected = expected_map(area)
    counted = expected[expected != 255]
    cover = pd.read_csv(out / "cover.csv")
    assert set(cover["source"]) == {"annotated"} and set(cover["image"]) == {"reef"}
    assert cover["pixels"].tolist() == np.bincount(counted, minlength=256)[:17].tolist()
    # TagLab holds one outer contour per blob: the two parts of a colony are two regions
    parts = [int(m.sum()) for _, m in expected_colonies(expected).values()]
    parts = [p for p in parts if p != 200] + [100, 100]
    assert sorted(pd.read_csv(out / "colonies.csv")["area_px"]) == sorted(parts)
    images = pd.read_csv(out / "images.csv")
    assert "EPSG:32755" in images["scale_source"].item(), "the georeference before 5 mm"
    assert images["file_name"].item() == "ortho.tif"


def test_a_taglab_project_with_empty_regions_or_broken_is_named(tmp_path, capsys):
    image = write_orthomosaic(tmp_path / "ortho.tif")
    regions = [*REGIONS, Region("Empty", box(0, 50, 6, 58))]
    project = write_taglab(tmp_path / "survey.json", image, regions)
    out = tmp_path / "out"
    assert reef_stats.main(["summarize", str(project), "--output-dir", str(out)]) == 2
    error = capsys.readouterr().err
    assert "survey.json" in error and "'Empty' (1)" in error and "TagLab's class" in error
    broken = tmp_path / "broken.json"
    broken.write_text(project.read_text()[:200])
    assert reef_stats.main(["summarize", str(broken), "--output-dir", str(out)]) == 2
    error = capsys.readouterr().err
    assert "broken.json" in error and "TagLab project" in error
    assert not out.exists()
