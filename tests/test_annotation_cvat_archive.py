"""annotation/cvat_archive.py: the archive CVAT imports, and CVAT's export read back."""

from __future__ import annotations

import math
import uuid
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage

from annotation.cvat_archive import (
    CVATExportError,
    CVATFrame,
    ExportMismatchError,
    UnsupportedShapeError,
    check_frames,
    read_cvat_export,
    unknown_labels,
    write_cvat_archive,
)
from dataset.rasterize import fill_polygon

CLASSES = ("Acropora", "Porites", "Pocillopora", "Montipora")  # Montipora: used by no shape


@pytest.fixture
def reef(fiftyone, tmp_path):
    """Three small JPEGs, two of them named reef_001.jpg in different folders; predictions
    on the first two (closed, filled, three labels), none on the third."""
    fo = fiftyone
    rng = np.random.default_rng(0)
    paths = [tmp_path / "a/reef_001.jpg", tmp_path / "a/reef_002.jpg", tmp_path / "b/reef_001.jpg"]
    sizes = [(40, 30), (48, 32), (36, 36)]
    for path, (width, height) in zip(paths, sizes, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(path), rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    shapes = [
        [
            ("Acropora", [(0.1, 0.1), (0.5, 0.1), (0.5, 0.5), (0.1, 0.4)]),
            ("Porites", [(0.6, 0.6), (0.9, 0.6), (0.75, 0.95)]),
        ],
        [("Pocillopora", [(0.2, 0.25), (0.8, 0.3), (0.5, 0.9)])],
        [],
    ]
    dataset = fo.Dataset(f"cvat-archive-{uuid.uuid4().hex}")
    try:
        samples = []
        for path, sample_shapes in zip(paths, shapes, strict=True):
            polylines = [
                fo.Polyline(label=label, points=[points], closed=True, filled=True, confidence=0.5)
                for label, points in sample_shapes
            ]
            sample = fo.Sample(filepath=str(path))
            if polylines:
                sample["polylines"] = fo.Polylines(polylines=polylines)
            samples.append(sample)
        dataset.add_samples(samples)
        yield dataset, paths, sizes, shapes
    finally:
        dataset.delete()


def test_archive_is_what_fiftyone_and_cvat_read(fiftyone, reef, tmp_path):
    fo = fiftyone
    dataset, paths, sizes, shapes = reef
    archive = tmp_path / "out" / "round_1.zip"
    names = write_cvat_archive(dataset, "polylines", CLASSES, archive)

    ids = dict(zip(dataset.values("filepath"), dataset.values("id"), strict=True))
    assert names == {
        "reef_001.jpg": ids[str(paths[0])],
        "reef_002.jpg": ids[str(paths[1])],
        "reef_001-2.jpg": ids[str(paths[2])],
    }
    assert sorted(p.name for p in archive.parent.iterdir()) == ["round_1.zip"]  # no temp left

    extracted = tmp_path / "extracted"
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["annotations.xml"] + sorted(f"images/{n}" for n in names)
        zf.extractall(extracted)
    source_of = {"reef_001.jpg": paths[0], "reef_002.jpg": paths[1], "reef_001-2.jpg": paths[2]}
    for name, path in source_of.items():
        assert (extracted / "images" / name).read_bytes() == path.read_bytes()  # copied as is

    root = ET.parse(extracted / "annotations.xml").getroot()
    assert root.findtext("version") == "1.1"
    assert [label.findtext("name") for label in root.iter("label")] == list(CLASSES)
    # <image id> follows CVAT's default frame order (names sorted), for its id fallback
    images = {image.get("name"): image for image in root.iter("image")}
    assert [images[n].get("id") for n in sorted(images)] == ["0", "1", "2"]
    assert [a.get("name") for a in root.iter("attribute")] == []  # confidence is not sent

    imported = fo.Dataset.from_dir(
        dataset_type=fo.types.CVATImageDataset,
        data_path=str(extracted / "images"),
        labels_path=str(extracted / "annotations.xml"),
        name=f"cvat-archive-import-{uuid.uuid4().hex}",
    )
    try:
        assert [label["name"] for label in imported.info["task_labels"]] == list(CLASSES)
        by_name = {Path(s.filepath).name: s for s in imported}
        assert sorted(by_name) == sorted(names)
        for name, (width, height), expected in zip(source_of, sizes, shapes, strict=True):
            sample = by_name[name]
            assert (sample.metadata.width, sample.metadata.height) == (width, height)
            got = sample["polylines"].polylines if sample["polylines"] else []
            assert [p.label for p in got] == [label for label, _ in expected]
            for polyline, (_, points) in zip(got, expected, strict=True):
                assert polyline.closed and polyline.filled
                # FiftyOne writes whole pixels: at most half a pixel off
                np.testing.assert_allclose(
                    np.array(polyline.points[0]) * (width, height),
                    np.array(points) * (width, height),
                    atol=0.5 + 1e-9,
                )
    finally:
        imported.delete()

    # CVAT's export of the untouched task reads back as the frames sent
    frames = read_cvat_export(archive)
    check_frames(frames, names)
    assert [p.label for p in frames["reef_001.jpg"].polylines] == ["Acropora", "Porites"]
    assert frames["reef_001-2.jpg"].polylines == []


def test_existing_archive_is_kept_without_overwrite(reef, tmp_path):
    dataset = reef[0]
    archive = tmp_path / "round_1.zip"
    archive.write_bytes(b"the user's archive")
    with pytest.raises(FileExistsError, match=r"round_1\.zip.*overwrite=True"):
        write_cvat_archive(dataset, "polylines", CLASSES, archive)
    assert archive.read_bytes() == b"the user's archive"
    write_cvat_archive(dataset, "polylines", CLASSES, archive, overwrite=True)
    assert zipfile.is_zipfile(archive)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "round_1.zip"]


def test_failed_write_leaves_nothing(reef, tmp_path):
    dataset, paths, _, _ = reef
    paths[1].unlink()  # the export fails half way
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="reef_002.jpg"):
        write_cvat_archive(dataset, "polylines", CLASSES, out / "round_1.zip")
    assert list(out.iterdir()) == []


def test_labels_outside_the_taxonomy_are_refused(reef, tmp_path):
    with pytest.raises(ValueError, match=r"\['Pocillopora'\]"):
        write_cvat_archive(reef[0], "polylines", CLASSES[:2], tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


# ---------------------------------------------------------------- CVAT's export, by hand


def cvat_rle(mask: np.ndarray) -> list[int]:
    """cvat-core's mask2Rle: runs over the flattened mask, starting with zeros."""
    runs, value, count = [], 0, 0
    for pixel in mask.ravel().tolist():
        if pixel == value:
            count += 1
        else:
            runs.append(count)
            value, count = pixel, 1
    return runs + [count]


def decode_reference(rle: list[int], width: int, height: int) -> np.ndarray:
    """cvat-core's rle2Mask, a loop, independent of the module's numpy decoder."""
    flat, value = [], 0
    for count in rle:
        flat += [value] * count
        value = 1 - value
    return np.array(flat, np.uint8).reshape(height, width)


# a blob with a bay open at the top and a pixel joined by its corner only (8-connected);
# and a ring (its hole is lost) beside a dot
BLOB = np.array(
    [
        [0, 1, 1, 0, 0, 0, 1],
        [1, 1, 1, 0, 0, 1, 0],
        [1, 1, 0, 0, 1, 1, 0],
        [1, 1, 0, 0, 0, 1, 1],
        [1, 1, 1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1, 1, 0],
    ],
    np.uint8,
)
RING_AND_DOT = np.array(
    [
        [1, 1, 1, 1, 0, 0],
        [1, 0, 0, 1, 0, 0],
        [1, 0, 0, 1, 0, 1],
        [1, 1, 1, 1, 0, 0],
    ],
    np.uint8,
)


def mask_element(label: str, mask: np.ndarray, left: int, top: int) -> str:
    height, width = mask.shape
    rle = ", ".join(map(str, cvat_rle(mask)))
    return (
        f'<mask label="{label}" source="semi-auto" occluded="0" rle="{rle}" left="{left}" '
        f'top="{top}" width="{width}" height="{height}" z_order="1">\n    </mask>'
    )


def cvat_xml(images: str) -> str:
    """An export in the form CVAT 2.x writes "CVAT for images 1.1" for a task."""
    labels = "".join(
        f"<label><name>{name}</name><color>#fa3253</color><type>any</type>"
        "<attributes></attributes></label>"
        for name in CLASSES
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta>
    <task>
      <id>42</id>
      <name>reef round 1</name>
      <size>2</size>
      <mode>annotation</mode>
      <overlap>0</overlap>
      <bugtracker></bugtracker>
      <created>2025-01-10 09:00:00.000000+00:00</created>
      <updated>2025-01-11 10:00:00.000000+00:00</updated>
      <subset>default</subset>
      <start_frame>0</start_frame>
      <stop_frame>1</stop_frame>
      <frame_filter></frame_filter>
      <segments><segment><id>7</id><start>0</start><stop>1</stop>
        <url>http://cvat/api/jobs/7</url></segment></segments>
      <owner><username>diver</username><email></email></owner>
      <assignee></assignee>
      <labels>{labels}</labels>
    </task>
    <dumped>2025-01-11 10:05:00.000000+00:00</dumped>
  </meta>
{images}
</annotations>
"""


EXPORT = cvat_xml(
    f"""  <image id="0" name="reef_001.jpg" width="40" height="30">
    <polygon label="Acropora" source="manual" occluded="0"
             points="4.50,3.25;20.00,3.00;20.75,15.50" z_order="0">
      <attribute name="health">bleached</attribute>
    </polygon>
    <box label="Porites" source="manual" occluded="0"
         xtl="2.00" ytl="4.00" xbr="12.00" ybr="10.00" z_order="0">
    </box>
    <box label="Porites" source="manual" occluded="0"
         xtl="2.00" ytl="4.00" xbr="12.00" ybr="10.00" rotation="90.00" z_order="0">
    </box>
    {mask_element("Pocillopora", BLOB, 21, 12)}
    <polyline label="Montipora" source="manual" occluded="1"
              points="1.00,28.00;38.50,27.25" z_order="0">
    </polyline>
    <ellipse label="Porites" source="manual" occluded="0"
             cx="30.00" cy="8.00" rx="6.00" ry="4.00" z_order="0">
    </ellipse>
  </image>
  <image id="1" name="reef_002.jpg" width="48" height="32">
    {mask_element("Acropora", RING_AND_DOT, 0, 20)}
  </image>
  <image id="2" name="reef_003.jpg" width="36" height="36">
  </image>"""
)


@pytest.fixture(params=["zip", "folder", "xml"])
def export_path(request, tmp_path):
    """The same export as CVAT's zip (with an image), unzipped in a folder, or the XML."""
    if request.param == "zip":
        path = tmp_path / "task_42_dataset.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("annotations.xml", EXPORT)
            zf.writestr("images/reef_001.jpg", b"\xff\xd8 not read")
        return path
    folder = tmp_path / "task_42_dataset"
    folder.mkdir()
    (folder / "annotations.xml").write_text(EXPORT)
    return folder if request.param == "folder" else folder / "annotations.xml"


def painted(polylines, width: int, height: int) -> np.ndarray:
    """Each polyline filled on its own (as the dataset paints them), then combined."""
    canvas = np.zeros((height, width), np.uint8)
    for polyline in polylines:
        for points in polyline.points:
            one = np.zeros_like(canvas)
            fill_polygon(one, np.array(points) * (width, height), 1)
            canvas |= one
    return canvas


def test_read_cvat_export(export_path):
    frames = read_cvat_export(export_path)
    assert sorted(frames) == ["reef_001.jpg", "reef_002.jpg", "reef_003.jpg"]
    assert frames["reef_003.jpg"] == CVATFrame(36, 36, [])
    frame = frames["reef_001.jpg"]
    assert (frame.width, frame.height) == (40, 30)
    labels = [p.label for p in frame.polylines]
    assert labels == ["Acropora", "Porites", "Porites", "Pocillopora", "Montipora", "Porites"]
    polygon, box, turned, blob, line, ellipse = frame.polylines

    np.testing.assert_allclose(
        polygon.points[0], [(4.5 / 40, 3.25 / 30), (20 / 40, 3 / 30), (20.75 / 40, 15.5 / 30)]
    )
    assert polygon.closed and polygon.filled
    assert "health" not in polygon.field_names and "occluded" not in line.field_names
    np.testing.assert_allclose(
        np.array(box.points[0]) * (40, 30), [(2, 4), (12, 4), (12, 10), (2, 10)]
    )
    # CVAT turns (2, 4) by 90 degrees about the centre (7, 7) to (10, 2): clockwise on screen
    np.testing.assert_allclose(
        np.array(turned.points[0]) * (40, 30), [(10, 2), (10, 12), (4, 12), (4, 2)], atol=1e-9
    )
    assert not line.closed and not line.filled
    np.testing.assert_allclose(line.points[0], [(1 / 40, 28 / 30), (38.5 / 40, 27.25 / 30)])
    outline = np.array(ellipse.points[0]) * (40, 30)
    radius = np.hypot((outline[:, 0] - 30) / 6, (outline[:, 1] - 8) / 4)
    np.testing.assert_allclose(radius, 1.0, atol=1e-9)  # vertices on the ellipse
    x, y = outline[:, 0], outline[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    assert area == pytest.approx(math.pi * 6 * 4, rel=0.01)

    # the mask, decoded by the reference from the XML's own RLE, painted exactly
    element = ET.fromstring(EXPORT).find(".//mask")
    rle = [int(v) for v in element.get("rle").split(",")]
    reference = decode_reference(rle, 7, 6)
    np.testing.assert_array_equal(reference, BLOB)
    expected = np.zeros((30, 40), np.uint8)
    expected[12:18, 21:28] = reference
    assert blob.closed and blob.filled and len(blob.points) == 1
    np.testing.assert_array_equal(painted([blob], 40, 30), expected)

    # a ring and a dot: two polygons, the ring's hole filled (a Polyline holds no holes)
    parts = frames["reef_002.jpg"].polylines
    assert len(parts) == 2 and {p.label for p in parts} == {"Acropora"}
    expected = np.zeros((32, 48), np.uint8)
    expected[20:24, 0:6] = ndimage.binary_fill_holes(RING_AND_DOT)
    np.testing.assert_array_equal(painted(parts, 48, 32), expected)
    assert painted(parts, 48, 32)[21, 1] == 1 and RING_AND_DOT[1, 1] == 0


def test_shapes_the_dataset_cannot_hold_are_named(tmp_path):
    path = tmp_path / "annotations.xml"
    path.write_text(
        cvat_xml(
            """  <image id="0" name="reef_001.jpg" width="40" height="30">
    <points label="Acropora" source="manual" occluded="0" points="3.00,4.00" z_order="0"></points>
    <polygon label="Acropora" source="manual" occluded="0" points="1,1;5,1;5,5"></polygon>
  </image>
  <image id="1" name="reef_002.jpg" width="40" height="30">
    <skeleton label="Porites" source="manual" z_order="0">
      <points label="1" source="manual" outside="0" occluded="0" points="1.00,2.00"></points>
    </skeleton>
  </image>"""
        )
    )
    with pytest.raises(UnsupportedShapeError) as error:
        read_cvat_export(path)
    message = str(error.value)
    assert "reef_001.jpg: <points label='Acropora'>" in message
    assert "reef_002.jpg: <skeleton label='Porites'>" in message


def test_other_formats_are_refused_by_name(tmp_path):
    coco = tmp_path / "task_42_coco.zip"
    with zipfile.ZipFile(coco, "w") as zf:
        zf.writestr("annotations/instances_default.json", '{"images": [], "annotations": []}')
        zf.writestr("images/reef_001.jpg", b"\xff\xd8")
    with pytest.raises(CVATExportError, match=r"task_42_coco\.zip.*CVAT for images 1\.1"):
        read_cvat_export(coco)

    video = tmp_path / "video.xml"
    video.write_text(
        cvat_xml(
            """  <track id="0" label="Acropora" source="manual">
    <polygon frame="0" keyframe="1" outside="0" occluded="0" points="1,1;5,1;5,5" z_order="0">
    </polygon>
  </track>"""
        )
    )
    with pytest.raises(CVATExportError, match=r"video\.xml.*CVAT for video.*CVAT for images 1\.1"):
        read_cvat_export(video)


def test_check_frames_names_missing_and_unexpected_images():
    sent = {"reef_001.jpg": "id1", "reef_002.jpg": "id2", "reef_003.jpg": "id3"}
    frames = {
        "reef_001.jpg": CVATFrame(40, 30, []),
        "reef_002.jpg": CVATFrame(40, 30, []),  # every shape deleted: fine
        "reef_003_fixed.jpg": CVATFrame(40, 30, []),
    }
    with pytest.raises(ExportMismatchError) as error:
        check_frames(frames, sent)
    message = str(error.value)
    assert "missing or renamed in CVAT: ['reef_003.jpg']" in message
    assert "not sent: ['reef_003_fixed.jpg']" in message
    assert "reef_002.jpg" not in message
    check_frames({name: CVATFrame(1, 1, []) for name in sent}, sent)


def test_unknown_labels(fiftyone):
    fo = fiftyone
    shapes = [
        fo.Polyline(label=label, points=[[(0, 0), (1, 0), (1, 1)]], closed=True, filled=True)
        for label in ("Acropora", "Stylophora", "acropora", "Stylophora")
    ]
    frames = {"a.jpg": CVATFrame(4, 4, shapes[:2]), "b.jpg": CVATFrame(4, 4, shapes[2:])}
    assert unknown_labels(frames, CLASSES) == ["Stylophora", "acropora"]
    assert unknown_labels(frames, [*CLASSES, "Stylophora", "acropora"]) == []
