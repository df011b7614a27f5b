"""Write two-stage predictions into a FiftyOne dataset field, to browse them in the App."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Sequence
from pathlib import Path


def detections_from_coco(annotations: list[dict], classes: Sequence[str], width: int, height: int):
    """fo.Detection per COCO annotation (as predictions.json holds them): the mask cut to
    its box (what FiftyOne stores), confidence, and the unsure/source attributes."""
    import fiftyone as fo
    from pycocotools import mask as mask_utils

    detections = []
    for annotation in annotations:
        x, y, w, h = (round(v) for v in annotation["bbox"])
        # a copy of the box: the full-size decoded mask is freed at once
        crop = mask_utils.decode(annotation["segmentation"])[y : y + h, x : x + w].astype(bool)
        attributes = annotation.get("attributes", {})
        detections.append(fo.Detection(
            label=classes[annotation["category_id"]],
            bounding_box=[x / width, y / height, w / width, h / height],
            mask=crop,
            confidence=float(annotation["score"]),
            unsure=bool(attributes.get("unsure", False)),
            source=attributes.get("source"),
        ))  # fmt: skip
    return detections


def add_predictions(dataset_name: str, items: Iterable[tuple[str | Path, list]],
                    field: str = "predictions", batch_size: int = 16) -> int:  # fmt: skip
    """items: (image filepath, fo.Detection list), consumed lazily. Samples are matched by
    filepath (added when missing) and written `batch_size` images at a time, so memory
    stays that of one batch however many images come. Returns the number of samples written."""
    import fiftyone as fo

    dataset = (
        fo.load_dataset(dataset_name)
        if fo.dataset_exists(dataset_name)
        else fo.Dataset(dataset_name)
    )
    dataset.persistent = True
    # one query for the whole dataset; looking each image up in it is then constant time
    known = dict(zip(*dataset.values(["filepath", "id"]), strict=True))
    written = 0
    items = iter(items)
    while batch := list(itertools.islice(items, batch_size)):
        updates, new = {}, []
        for filepath, detections in batch:
            # FiftyOne stores absolute paths; a sample added through a link is found too
            absolute, real = os.path.abspath(filepath), os.path.realpath(filepath)
            sample_id = known.get(absolute) or known.get(real)
            labels = fo.Detections(detections=detections)
            if sample_id:
                updates[sample_id] = labels
            else:
                new.append(fo.Sample(filepath=absolute, **{field: labels}))
        if updates:
            dataset.set_values(field, updates, key_field="id")
        if new:
            ids = dataset.add_samples(new, progress=False)
            known.update(zip((s.filepath for s in new), ids, strict=True))
        written += len(batch)
    return written


def add_semantic_predictions(
    dataset_name: str,
    prepared_root: str | Path,
    pred_dir: str | Path,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    field: str = "predictions_semantic",
) -> int:
    """Store test.py's class maps on the FiftyOne samples they were prepared from.

    The prepared folder's manifest.csv maps each image to its sample id; the field
    gets the taxonomy's names as mask targets and its colours in the App's colour
    scheme, so the App shows predictions next to the polylines. Returns the count.
    """
    import csv

    import cv2
    import fiftyone as fo

    if not fo.dataset_exists(dataset_name):
        raise ValueError(f"No FiftyOne dataset named {dataset_name!r}; known: {fo.list_datasets()}")
    dataset = fo.load_dataset(dataset_name)
    with open(Path(prepared_root) / "manifest.csv", newline="") as handle:
        sample_of = {Path(row["image"]).stem: row["sample_id"] for row in csv.DictReader(handle)}
    written = 0
    for pred_file in sorted(Path(pred_dir).glob("*.png")):
        sample_id = sample_of.get(pred_file.stem)
        if sample_id is None:
            continue
        sample = dataset[sample_id]
        sample[field] = fo.Segmentation(mask=cv2.imread(str(pred_file), cv2.IMREAD_UNCHANGED))
        sample.save()
        written += 1
    dataset.mask_targets = {
        **dataset.mask_targets,
        field: {i: name for i, name in enumerate(classes) if i},
    }
    colours = [
        {"intTarget": i, "color": "#" + "".join(f"{v:02x}" for v in c)}
        for i, c in enumerate(palette)
        if i
    ]
    scheme = dataset.app_config.color_scheme or fo.ColorScheme()
    fields = [f for f in (scheme.fields or []) if f.get("path") != field]
    scheme.fields = [*fields, {"path": field, "maskTargetsColors": colours}]
    dataset.app_config.color_scheme = scheme
    dataset.save()
    return written
