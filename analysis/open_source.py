"""Which reader a folder needs: the one place that tells the toolkit's outputs apart.

two-stage inference output   predictions.json or masks/      analysis/sources.py
prepared dataset             annotations/<split>/            analysis/sources.py
folder of class maps         <stem>.png, with --classes      analysis/sources.py
tiled inference's mosaics/   <stem>.classes.tif + .geojson   analysis/mosaic_source.py
"""

from __future__ import annotations

from pathlib import Path

from analysis.mosaic_source import MosaicOutput, is_mosaic_folder
from analysis.sources import (
    ClassInfo,
    ClassMapFolder,
    LabelSource,
    PreparedSplit,
    SourceError,
    TwoStageOutput,
)


def open_source(
    path: str | Path,
    split: str = "test",
    classes: str | Path | None = None,
    images: str | Path | None = None,
) -> LabelSource:
    """The reader for a folder: two-stage output, prepared dataset (its `split`), or class maps
    (with `classes`: a prepared dataset, whose images/<split> then names the photos, a
    classes.txt or a taxonomy name)."""
    path = Path(path)
    images = Path(images) if images else None
    if not path.is_dir():
        raise SourceError(f"{path}: {'not a folder' if path.exists() else 'does not exist'}")
    if is_mosaic_folder(path):  # the mosaics/ folder of tiled inference
        return MosaicOutput(path)
    if (path / "predictions.json").exists() or (path / "masks").is_dir():
        return TwoStageOutput(path, images)
    if (path / "annotations").is_dir():
        return PreparedSplit.open(path, split)
    if classes is None:
        raise SourceError(
            f"{path}: a folder of class maps needs --classes (the prepared dataset the "
            "model was trained on, a classes.txt, or a taxonomy name such as fine)"
        )
    split_photos = Path(classes) / "images" / split
    if images is None and split_photos.is_dir():
        images = split_photos  # maps predicted for that prepared split (test.py --pred-dir)
    return ClassMapFolder(path, ClassInfo.load(classes), images)
