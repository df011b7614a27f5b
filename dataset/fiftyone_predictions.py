"""Write two-stage predictions into a FiftyOne dataset field, to browse them in the App."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path


def add_predictions(dataset_name: str, items: Iterable[tuple[str, list]], classes: Sequence[str],
                    field: str = "predictions") -> int:  # fmt: skip
    """items: (image filepath, instances). Samples are matched by filepath (added when
    missing); each instance becomes an fo.Detection with its mask, confidence and the
    unsure/source attributes. Returns the number of samples written."""
    import fiftyone as fo

    dataset = (
        fo.load_dataset(dataset_name)
        if fo.dataset_exists(dataset_name)
        else fo.Dataset(dataset_name)
    )
    dataset.persistent = True
    written = 0
    for filepath, instances in items:
        filepath = str(Path(filepath).resolve())
        sample = (
            dataset.one(fo.ViewField("filepath") == filepath)
            if filepath in set(dataset.values("filepath"))
            else None
        )
        if sample is None:
            sample = fo.Sample(filepath=filepath)
            dataset.add_sample(sample)
        detections = []
        for inst in instances:
            height, width = inst.mask.shape
            x0, y0, x1, y1 = inst.box
            box = [x0 / width, y0 / height, (x1 - x0 + 1) / width, (y1 - y0 + 1) / height]
            detections.append(fo.Detection(
                label=classes[inst.label],
                bounding_box=box,
                mask=inst.mask[y0 : y1 + 1, x0 : x1 + 1],
                confidence=float(inst.score),
                unsure=bool(inst.unsure),
                source=inst.source,
            ))  # fmt: skip
        sample[field] = fo.Detections(detections=detections)
        sample.save()
        written += 1
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
