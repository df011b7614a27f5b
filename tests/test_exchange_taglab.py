"""exchange/taglab.py: TagLab projects read and written (tiny, CPU only).

TagLab's own mask of a blob is checked with a copy of its rule written here from its
source (Blob.getMask: cv2.fillPoly of the rounded contour, minus the rounded inner
contours, in an array of the blob's bbox; Mask.pointsBox for the bbox), independent of
the module's code. tools/check_taglab_project.py runs TagLab's real loader.
"""

from __future__ import annotations

import json
import math
import os

import cv2
import numpy as np
import pytest
import shapely
from rasterio.features import rasterize, shapes
from rasterio.transform import Affine
from shapely.geometry import MultiPolygon, Point, box, shape

from dataset.image_io import ImageWriteError
from exchange.regions import Region
from exchange.taglab import (
    TAGLAB_MAX_SIDE,
    TagLabError,
    TagLabWarning,
    TagLabWriter,
    colony_regions,
    read_taglab_project,
)
from mosaic.seams import Colony

CLASSES = ["background", "Acropora", "Porites"]
LABELS = [("Acropora", (255, 0, 0)), ("Porites", (0, 128, 255))]
W, H = 120, 80


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "ortho.png"
    assert cv2.imwrite(str(path), np.zeros((H, W, 3), np.uint8))
    return path


# ---- TagLab's rules, from its source (commit in exchange/taglab.py), for checking


def taglab_contour(text_or_list) -> np.ndarray:
    """Blob.toContour: tenths, first point then differences; or a list of [x, y]."""
    if isinstance(text_or_list, str):
        c = np.fromiter(map(int, text_or_list.split(" ")), dtype=int).reshape(-1, 2)
        return np.cumsum(c, axis=0) / 10.0
    return np.asarray(text_or_list)


def taglab_points_box(points: np.ndarray, pad: int = 4) -> np.ndarray:
    """Mask.pointsBox."""
    box_ = [points[:, 1].min() - pad, points[:, 0].min() - pad,
            points[:, 0].max() + pad, points[:, 1].max() + pad]  # fmt: skip
    box_[2] -= box_[1]
    box_[3] -= box_[0]
    return np.array(box_).astype(int)


def taglab_mask_in_map(blob: dict, width: int = W, height: int = H) -> np.ndarray:
    """Blob.getMask placed in the map (a margin-free map-sized array)."""
    bbox = np.asarray(blob["bbox"])
    rows, cols = bbox[3], bbox[2]
    origin = np.array([int(bbox[1]), int(bbox[0])])
    mask = np.zeros((rows, cols), np.uint8)
    points = taglab_contour(blob["contour"]).round().astype(int)
    cv2.fillPoly(mask, pts=[points - origin], color=(1))
    for inner in blob["inner contours"]:
        points = taglab_contour(inner).round().astype(int)
        cv2.fillPoly(mask, pts=[points - origin], color=(0, 0, 0))
    pad = 16
    placed = np.zeros((height + 2 * pad, width + 2 * pad), np.uint8)
    top, left = origin[1] + pad, origin[0] + pad
    placed[top : top + rows, left : left + cols] |= mask
    return placed[pad:-pad, pad:-pad]


def pixels(geometry, width: int = W, height: int = H) -> np.ndarray:
    return rasterize([geometry], out_shape=(height, width)).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def blobs_of(path, map_index: int = 0) -> list[dict]:
    return json.loads(path.read_text())["images"][map_index]["annotations"]["regions"]


def random_colonies(seed: int, count: int) -> list[Colony]:
    """Pixel-mask colonies (mosaic/seams.py's kind: pixel-edge polygons, holes kept,
    several parts where the mask has), one per 20 x 20 cell so none overlap."""
    rng = np.random.default_rng(seed)
    colonies = []
    for k in range(count):
        h, w = rng.integers(2, 19, 2)
        mask = (rng.random((h, w)) < rng.uniform(0.5, 0.9)).astype(np.uint8)
        mask = cv2.dilate(mask, np.ones((2, 2), np.uint8))
        where = Affine.translation(1 + (k % 6) * 20, 1 + (k // 6) * 20)
        parts = [shape(g) for g, _ in shapes(mask, mask=mask > 0, transform=where)]
        colonies.append(Colony(1 + k % 2, float(rng.random()), False, shapely.union_all(parts)))
    return colonies


# ---- writing and reading back


def test_rectangle_with_hole_is_56_pixels_in_taglab_and_back(tmp_path, image):
    expected = np.zeros((H, W), bool)
    expected[10:16, 20:30] = True  # 10 x 6
    expected[12:14, 23:25] = False  # 2 x 2 hole
    assert expected.sum() == 56
    geometry = box(20, 10, 30, 16).difference(box(23, 12, 25, 14))
    assert np.array_equal(pixels(geometry), expected)

    path = tmp_path / "p.json"
    writer = TagLabWriter(path, LABELS)
    writer.begin_map("reef", image, W, H)
    writer.write(colony_regions([Colony(1, 0.875, False, geometry)], CLASSES))
    writer.end_map()
    writer.commit()

    (blob,) = blobs_of(path)
    assert blob["area"] == 56 and len(blob["inner contours"]) == 1
    assert np.array_equal(taglab_mask_in_map(blob), expected)  # TagLab's own mask
    assert blob["bbox"] == taglab_points_box(taglab_contour(blob["contour"])).tolist()
    # centroid: the mean pixel index (x, y), truncated to 0.1; blob name rounds it
    rows, cols = np.nonzero(expected)
    assert blob["centroid"] == [
        math.trunc(10 * cols.mean()) / 10,
        math.trunc(10 * rows.mean()) / 10,
    ]
    assert blob["blob name"] == f"c-1-{cols.mean():.1f}x-{rows.mean():.1f}y"
    assert blob["class name"] == "Acropora" and blob["data"]["confidence"] == 0.875

    (region,) = read_taglab_project(path)[0].regions
    assert region.geometry.area == 56
    assert np.array_equal(pixels(region.geometry), expected)
    assert (region.label, region.confidence, region.id) == ("Acropora", 0.875, 1)


def test_colonies_with_holes_and_parts_round_trip(tmp_path, image):
    colonies = random_colonies(seed=7, count=18)
    colonies.append(Colony(2, 0.5, True, MultiPolygon([box(2, 70, 5, 73), box(5, 73, 7, 75)])))
    colonies.append(
        Colony(1, 0.25, False, MultiPolygon([box(40, 70, 44, 74), box(50, 71, 52, 79)]))
    )
    assert any(len(c.geometry.interiors) for c in colonies if c.geometry.geom_type == "Polygon")
    path = tmp_path / "p.json"
    writer = TagLabWriter(path, LABELS)
    writer.begin_map("reef", image, W, H)
    writer.write(colony_regions(colonies[:10], CLASSES))  # two batches, as tiles close
    writer.write(colony_regions(colonies[10:], CLASSES))
    writer.end_map()
    writer.commit()
    assert writer.count == len(colonies) and writer.blobs > writer.count

    blobs = blobs_of(path)
    assert [b["id"] for b in blobs] == list(range(1, len(blobs) + 1))
    painted = np.zeros((H, W), int)
    for blob in blobs:
        assert blob["bbox"] == taglab_points_box(taglab_contour(blob["contour"])).tolist()
        mask = taglab_mask_in_map(blob)
        assert blob["area"] == mask.sum()
        assert blob["instance name"] == f"colony{blob['data']['colony']}"
        painted[mask > 0] = blob["data"]["colony"]
    for number, colony in enumerate(colonies, 1):  # TagLab sees each colony's pixels
        assert np.array_equal(painted == number, pixels(colony.geometry))

    (annotated,) = read_taglab_project(path, join_parts=True)
    assert len(annotated.regions) == len(colonies)
    for colony, region in zip(colonies, annotated.regions, strict=True):
        assert iou(pixels(colony.geometry), pixels(region.geometry)) >= 0.999
        assert region.geometry.area == colony.geometry.area
        assert region.label == CLASSES[colony.label]
        assert region.confidence == pytest.approx(colony.confidence, abs=5e-5)
    # one region per TagLab blob by default: the parts of a multi-part colony apart
    assert len(read_taglab_project(path)[0].regions) == len(blobs)


def test_any_shape_is_written_as_the_pixels_it_covers(tmp_path, image):
    circle = Point(60.3, 40.7).buffer(11.2)  # not on pixel edges: pixel-centre rule
    path = tmp_path / "p.json"
    writer = TagLabWriter(path, LABELS)
    writer.begin_map("reef", image, W, H)
    writer.write([Region("Porites", circle, 42, None), Region("Porites", Point(3, 3), None)])
    writer.write([Region("Porites", box(W - 2, 5, W + 10, 9)), Region("Porites", box(-9, 0, 0, 9))])
    writer.commit()  # ends the open map
    assert (writer.count, writer.skipped) == (2, 2)  # a point, and a box outside the map
    blob, clipped = blobs_of(path)
    assert clipped["area"] == 2 * 4  # the part inside the map
    assert np.array_equal(taglab_mask_in_map(blob) > 0, pixels(circle))
    assert blob["data"] == {"colony": 42}  # no confidence given, none written
    region, _ = read_taglab_project(path)[0].regions
    assert np.array_equal(pixels(region.geometry), pixels(circle))
    assert region.confidence is None


def test_map_fields_labels_and_working_area_survive(tmp_path, image):
    geotiff = tmp_path / "ortho_geo.tif"
    geotiff.write_bytes(b"stands in for a GeoTIFF")
    path = tmp_path / "p.json"
    writer = TagLabWriter(path, LABELS, dictionary_name="reef taxonomy",
                          working_area=box(10.5, 4, 100, 60))  # fmt: skip
    writer.begin_map("2023", image, W, H, mm_per_pixel=1.25, georeference=geotiff,
                     acquisition_date="2023-11-02")  # fmt: skip
    writer.end_map()
    writer.begin_map("2024", image, W, H)
    writer.end_map()
    writer.commit()

    data = json.loads(path.read_text())
    assert data["working_area"] == [4, 10, 90, 56]  # [top, left, width, height]
    assert data["labels"]["Porites"] == {"id": "Porites", "name": "Porites", "description": None,
                                         "fill": [0, 128, 255], "border": [200, 200, 200],
                                         "visible": True}  # fmt: skip
    first = data["images"][0]
    assert first["map_px_to_mm_factor"] == "1.25"  # TagLab keeps it as text
    assert first["channels"] == [{"filename": str(image), "type": "RGB"}]  # absolute
    assert os.path.isabs(first["georef_filename"])
    assert list(first)[-1] == "annotations"  # last: streamed

    one, two = read_taglab_project(path)
    assert (one.name, one.width, one.height, one.image) == ("2023", W, H, image)
    assert (one.mm_per_pixel, one.acquisition_date, one.georeference) == (
        1.25,
        "2023-11-02",
        geotiff,
    )
    assert (two.mm_per_pixel, two.acquisition_date, two.georeference) == (None, None, None)
    assert one.area.equals(box(10, 4, 100, 60)) and two.area.equals(one.area)
    assert one.regions == [] and two.regions == []


def test_a_map_taglab_cannot_open_is_refused(tmp_path, image):
    path = tmp_path / "p.json"
    writer = TagLabWriter(path, LABELS)
    with pytest.raises(TagLabError, match=r"TagLab cannot open.*32767.*gdal_translate -srcwin"):
        writer.begin_map("big", image, TAGLAB_MAX_SIDE + 1, 1000)
    with pytest.raises(TagLabError, match="not YYYY-MM-DD"):
        writer.begin_map("reef", image, W, H, acquisition_date="17/05/2024")
    with pytest.raises(TagLabError, match=r"missing\.tif does not exist"):
        writer.begin_map("reef", tmp_path / "missing.tif", W, H)
    writer.abort()
    assert list(tmp_path.iterdir()) == [image]  # no temporary file, no project


def test_abort_leaves_nothing(tmp_path, image):
    path = tmp_path / "p.json"
    writer = TagLabWriter(path, LABELS)
    writer.begin_map("reef", image, W, H)
    writer.write(colony_regions(random_colonies(seed=1, count=3), CLASSES))
    assert any(p.name.startswith(".p.json.tmp-") for p in tmp_path.iterdir())
    writer.abort()
    assert list(tmp_path.iterdir()) == [image]


def test_an_unwritable_place_is_an_image_write_error(tmp_path):
    with pytest.raises(ImageWriteError, match=r"missing/p\.json: cannot write"):
        TagLabWriter(tmp_path / "missing" / "p.json", LABELS)


def test_a_class_index_outside_the_classes_is_refused():
    with pytest.raises(TagLabError, match="class index 5"):
        list(colony_regions([Colony(5, 0.9, False, box(0, 0, 1, 1))], CLASSES))


# ---- a project as TagLab saves it


def taglab_saved_project(tmp_path) -> tuple:
    """A minimal project in the shape TagLab's Project.save writes (json.dumps of the
    project's __dict__, indent=1), placed as TagLab places it: the project and the map
    paths relative to TagLab's folder."""
    taglab = tmp_path / "TagLab"
    (taglab / "projects").mkdir(parents=True)
    (taglab / "maps").mkdir()
    assert cv2.imwrite(str(taglab / "maps" / "plot.png"), np.zeros((30, 40, 3), np.uint8))
    label = {"id": "Porites", "name": "Porites", "description": None, "fill": [0, 0, 255],
             "border": [200, 200, 200], "visible": True}  # fmt: skip
    # A 4 x 3 block of pixels, columns 2..5, rows 1..3, as TagLab's find_contours at 0.6
    # traces it (0.4 px outside the boundary pixels' centres), saved as text.
    block = "20 6 30 0 4 4 0 20 -4 4 -30 0 -4 -4 0 -20 4 -4"
    # Columns 10..16, rows 10..15 with a hole at columns 12..13, rows 12..13, in the older
    # list form; the hole traced at 0.4 (inside the hole pixels).
    ring = [[9.6, 10.0], [10.0, 9.6], [16.0, 9.6], [16.4, 10.0], [16.4, 15.0], [16.0, 15.4],
            [10.0, 15.4], [9.6, 15.0], [9.6, 10.0]]  # fmt: skip
    hole = [[11.6, 12.0], [12.0, 11.6], [13.0, 11.6], [13.4, 12.0], [13.4, 13.0],
            [13.0, 13.4], [12.0, 13.4], [11.6, 13.0], [11.6, 12.0]]  # fmt: skip

    def blob(id_, contour, inner, class_name, data, area):
        points = taglab_contour(contour)
        return {"bbox": taglab_points_box(points).tolist(), "centroid": [0.0, 0.0], "area": area,
                "perimeter": 0.0, "contour": contour, "inner contours": inner,
                "class name": class_name, "instance name": f"region{id_}",
                "blob name": f"c-{id_}-0.0x-0.0y", "id": id_, "note": "", "data": data}  # fmt: skip

    image = {
        "rect": [0.0, 0.0, 0.0, 0.0], "map_px_to_mm_factor": " 1.275", "width": 40,
        "height": 30, "annotations": {"regions": [
            blob(3, block, [], "Porites", {"confidence": 0.6}, 12.0),
            blob(7, ring, [hole], "Empty", {}, 38.0),
        ], "points": []},
        "layers": [], "channels": [{"filename": "maps/plot.png", "type": "RGB"}],
        "id": "plot 18", "name": "plot 18", "workspace": [], "export_dataset_area": [],
        "acquisition_date": "2000-1-01", "georef_filename": "", "metadata": {}, "grid": None,
    }  # fmt: skip
    older = dict(image, name="", id="", acquisition_date="1955-11-05", map_px_to_mm_factor="",
                 annotations=[blob(1, block, [], "Porites", {}, 12.0)])  # fmt: skip
    project = {
        "filename": "projects/survey.json", "working_area": [1, 2, 10, 5],
        "dictionary_name": "scripps", "dictionary_description": "", "labels": {"Porites": label},
        "images": [image, older], "correspondences": {}, "genet": {},
        "region_attributes": {"name": "", "description": "", "data": []},
        "spatial_reference_system": None, "metadata": {}, "image_metadata_template": {},
        "markers": {},
    }  # fmt: skip
    path = taglab / "projects" / "survey.json"
    path.write_text(json.dumps(project, indent=1))
    return path, taglab, project


def test_a_project_saved_by_taglab_reads(tmp_path):
    path, taglab, _ = taglab_saved_project(tmp_path)
    first, second = read_taglab_project(path)
    # the map path is relative to TagLab's folder, found from the project's `filename`
    assert first.image == taglab / "maps" / "plot.png"
    assert (first.name, first.width, first.height) == ("plot 18", 40, 30)
    assert (first.mm_per_pixel, first.acquisition_date) == (1.275, "2000-01-01")
    assert first.area.equals(box(2, 1, 12, 6))  # [top, left, width, height]
    block, ring = first.regions
    assert (block.label, block.id, block.confidence) == ("Porites", 3, 0.6)
    assert block.geometry.equals(box(2, 1, 6, 4))
    assert (ring.label, ring.id, ring.confidence) == ("Empty", 7, None)
    assert ring.geometry.equals(box(10, 10, 17, 16).difference(box(12, 12, 14, 14)))
    assert ring.geometry.area == 7 * 6 - 4
    # TagLab's loader: a nameless map is "noname02"; 1955-11-05 is its "no date"
    assert (second.name, second.acquisition_date, second.mm_per_pixel) == ("noname02", None, None)
    assert second.regions[0].geometry.equals(box(2, 1, 6, 4))
    # an explicit TagLab folder wins
    other = tmp_path / "elsewhere"
    (other / "maps").mkdir(parents=True)
    (other / "maps" / "plot.png").write_bytes(b"")
    assert read_taglab_project(path, taglab_dir=other)[0].image == other / "maps" / "plot.png"


def test_degenerate_and_outside_regions_are_reported(tmp_path):
    path, _, project = taglab_saved_project(tmp_path)
    regions = project["images"][0]["annotations"]["regions"]
    line = dict(regions[0], id=11, contour="50 50 10 0 10 0")  # three points on a line
    outside = dict(regions[0], id=12, contour="1000 1000 30 0 0 30 -30 0")
    edge = dict(regions[0], id=13, contour="-20 -20 60 0 0 60 -60 0")  # over the corner
    bowtie = dict(regions[0], id=14, contour="200 200 40 40 0 -40 -40 40")  # shoelace sum 0
    bowtie["bbox"] = taglab_points_box(taglab_contour(bowtie["contour"])).tolist()
    regions += [line, outside, edge, bowtie]
    path.write_text(json.dumps(project))
    with pytest.warns(TagLabWarning, match=r"map 'plot 18': 2 regions skipped: id 11 .*id 12"):
        first = read_taglab_project(path)[0]
    assert [r.id for r in first.regions] == [3, 7, 13, 14]
    assert first.regions[2].geometry.equals(box(0, 0, 5, 5))  # pixels -2..4, clipped to the map
    # the self-crossing outline: kept, as the pixels TagLab's fillPoly gives it
    expected = taglab_mask_in_map(bowtie, 40, 30) > 0
    assert expected.sum() > 0
    assert np.array_equal(pixels(first.regions[3].geometry, 40, 30), expected)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"images": [', r"p\.json: not a TagLab project: invalid JSON at line 1"),
        ("[1, 2]", r"p\.json: not a TagLab project"),
        ('{"labels": {}}', r"p\.json: not a TagLab project \(no 'images'"),
        ('{"Map File": "a.png"}', r"p\.json: a TagLab project of the pre-2020 format"),
        ('{"images": [{"name": "m", "width": 4, "height": 4}]}',
         r"p\.json, map 'm': no RGB channel"),
        ('{"images": [{"name": "m", "width": 4, "height": 4, "channels": [{"type": "DEM", '
         '"filename": "d.tif"}]}]}', r"p\.json, map 'm': no RGB channel"),
        ('{"images": [{"name": "m", "channels": [{"type": "RGB", "filename": "a.png"}]}]}',
         r"p\.json, map 'm': no valid width and height"),
        ('{"working_area": [1, 2], "images": []}', r"p\.json: the working area \[1, 2\]"),
    ],
)  # fmt: skip
def test_broken_projects_name_the_file(tmp_path, content, message):
    path = tmp_path / "p.json"
    path.write_text(content)
    with pytest.raises(TagLabError, match=message):
        read_taglab_project(path)


def test_a_broken_region_names_file_map_and_region(tmp_path):
    path, _, project = taglab_saved_project(tmp_path)
    del project["images"][0]["annotations"]["regions"][1]["class name"]
    path.write_text(json.dumps(project))
    with pytest.raises(TagLabError, match=r"survey\.json, map 'plot 18': region 2 \(id 7\)"):
        read_taglab_project(path)


def test_a_missing_project_is_a_taglab_error(tmp_path):
    with pytest.raises(TagLabError, match=r"nothing\.json: no such file"):
        read_taglab_project(tmp_path / "nothing.json")
