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
