"""Synthetic outputs in the toolkit's real formats (used by the other test_analysis_* files),
and the readers of analysis/sources.py checked against them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage.draw import disk

from analysis.open_source import open_source
from analysis.sources import (
    ANNOTATED,
    PREDICTED,
    ClassMapFolder,
    PreparedSplit,
    SourceError,
    TwoStageOutput,
)
from dataset.coco import coco_document, image_annotations
from dataset.taxonomy import load_taxonomy

FINE = load_taxonomy("fine")
ACROPORA, PORITES, POCILLOPORA = (
    FINE.classes.index(n) for n in ("Acropora", "Porites", "Pocillopora")
)


@dataclass
class Instance:
    """What dataset.coco.image_annotations reads from an inference result."""

    mask: np.ndarray
    label: int
    score: float = 0.9
    unsure: bool = False
    source: str = "sam"


def disc(shape, center, radius) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(center, radius, shape=shape)] = True
    return mask


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def write_prepared(
    root: Path,
    maps: dict[str, np.ndarray],
    split: str = "test",
    photos: dict[str, np.ndarray] | None = None,
) -> Path:
    """A prepared dataset (fine taxonomy) as prepare_data.py lays it out."""
    (root / "classes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(FINE.classes) + "\n")
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in FINE.palette) + "\n")
    (root / "dataset_info.py").write_text(
        f"classes = {list(FINE.classes)!r}\nnum_classes = {len(FINE.classes)}\nignore_index = 255\n"
    )
    for stem, class_map in maps.items():
        write_png(root / "annotations" / split / f"{stem}.png", class_map.astype(np.uint8))
        photo = (photos or {}).get(stem)
        if photo is None:
            photo = np.full((*class_map.shape, 3), 100, np.uint8)
        write_png(root / "images" / split / f"{stem}.jpg", photo[..., ::-1])
    return root


def write_two_stage(
    folder: Path,
    images: dict[str, list[Instance]],
    semantic: dict[str, np.ndarray] | None = None,
    shape=(96, 96),
) -> Path:
    """An inference_with_coralscop.py output folder: predictions.json (via the project's own
    COCO writer), masks/<image>/instance_NNN.png and, optionally, semantic/<image>.png."""
    records, annotations = [], []
    for image_id, (stem, instances) in enumerate(sorted(images.items()), start=1):
        records.append(
            {"id": image_id, "file_name": f"{stem}.jpg", "height": shape[0], "width": shape[1]}
        )
        for ann in image_annotations(instances, image_id, len(annotations) + 1):
            annotations.append(ann)
        for number, inst in enumerate(instances, start=1):
            write_png(
                folder / "masks" / stem / f"instance_{number:03d}.png",
                inst.mask.astype(np.uint8) * 255,
            )
        if semantic and stem in semantic:
            write_png(folder / "semantic" / f"{stem}.png", semantic[stem].astype(np.uint8))
    folder.mkdir(parents=True, exist_ok=True)
    document = coco_document(records, annotations, FINE.classes)
    (folder / "predictions.json").write_text(json.dumps(document))
    return folder


def test_two_stage_output_reads_back_as_written(tmp_path):
    shape = (96, 96)
    big = Instance(disc(shape, (30, 30), 15), ACROPORA, score=0.8)
    small = Instance(disc(shape, (70, 60), 8), PORITES, score=0.15, unsure=True)
    folder = write_two_stage(tmp_path / "out", {"q1": [big, small], "q2": []}, shape=shape)
    source = open_source(folder)
    assert isinstance(source, TwoStageOutput) and source.kind == PREDICTED
    assert source.classes.names == FINE.classes and source.classes.palette == FINE.palette
    assert source.stems() == ["q1", "q2"]
    labels = source.load("q1")
    assert labels.name == "q1.jpg" and labels.cover_from == "instance masks"
    assert [c.id for c in labels.colonies] == [1, 2]  # the instance_NNN numbers
    for colony, inst in zip(labels.colonies, (big, small), strict=True):
        assert np.array_equal(colony.full(shape), inst.mask)
        assert colony.class_index == inst.label and colony.unsure == inst.unsure
        assert colony.confidence == pytest.approx(inst.score)
    expected = np.zeros(shape, np.uint8)
    expected[big.mask], expected[small.mask] = ACROPORA, PORITES
    assert np.array_equal(labels.class_map, expected)
    assert source.load("q2").colonies == []


def test_two_stage_semantic_map_is_the_class_map_where_saved(tmp_path):
    shape = (64, 64)
    semantic = np.zeros(shape, np.uint8)
    semantic[:, :16] = POCILLOPORA
    folder = write_two_stage(
        tmp_path / "out",
        {"q": [Instance(disc(shape, (30, 40), 9), PORITES)]},
        {"q": semantic},
        shape,
    )
    labels = open_source(folder).load("q")
    assert labels.cover_from == "semantic map" and np.array_equal(labels.class_map, semantic)
    assert [c.class_index for c in labels.colonies] == [PORITES]  # colonies stay the instances


def test_prepared_split_colonies_are_8_connected_regions(tmp_path):
    class_map = np.zeros((40, 40), np.uint8)
    class_map[2:6, 2:6] = ACROPORA
    class_map[6:9, 6:9] = ACROPORA  # touches the first at a corner only: one colony
    class_map[20:30, 20:30] = PORITES
    class_map[35:38, 0:3] = 255  # ignored: no colony
    root = write_prepared(tmp_path / "ds", {"a": class_map})
    source = open_source(root, split="test")
    assert isinstance(source, PreparedSplit) and source.kind == ANNOTATED
    labels = source.load("a")
    assert labels.name == "a.jpg" and labels.photo == root / "images/test/a.jpg"
    assert sorted((c.class_index, c.area) for c in labels.colonies) == [
        (ACROPORA, 16 + 9),
        (PORITES, 100),
    ]


def test_class_map_folder_needs_classes_and_checks_values(tmp_path):
    folder = tmp_path / "pred"
    good = np.zeros((8, 8), np.uint8)
    write_png(folder / "x.png", good)
    with pytest.raises(SourceError, match="needs --classes"):
        open_source(folder)
    source = open_source(folder, classes="fine")
    assert isinstance(source, ClassMapFolder) and source.load("x").name == "x.png"
    write_png(folder / "y.png", np.full((8, 8), 40, np.uint8))
    with pytest.raises(SourceError, match=r"y\.png: values 40 are no class"):
        source.load("y")
    write_png(folder / "z.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SourceError, match=r"z\.png: 3 channels"):
        source.load("z")


def test_unfinished_inference_output_says_what_to_do(tmp_path):
    (tmp_path / "out" / "masks").mkdir(parents=True)
    with pytest.raises(SourceError, match="predictions.json does not exist.*run the same"):
        open_source(tmp_path / "out")
    with pytest.raises(SourceError, match="no split 'val'"):
        open_source(write_prepared(tmp_path / "ds", {"a": np.zeros((4, 4))}), split="val")
