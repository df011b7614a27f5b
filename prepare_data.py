"""Turn a FiftyOne dataset of polylines into an MMSegmentation dataset.

    python prepare_data.py criobe_finegrained_fo

Output directory, taxonomy, image size and the polylines field come from `.env`
(see .env.example); the flags below override them for one run.
"""

from __future__ import annotations

import logging
import sys

import fire

from dataset.prepare import PrepareError, prepare_dataset
from dataset.taxonomy import UnknownLabelsError
from settings import load_settings


def main(
    dataset_name: str,
    overwrite: bool = False,
    skip_unsplit: bool = False,
    skip_missing: bool = False,
    taxonomy: str | None = None,
    image_size: int | None = None,
    data_root: str | None = None,
    polylines_field: str | None = None,
    unknown_labels: str | None = None,
    line_width: float = 3.0,
    num_workers: int | None = None,
) -> None:
    """Prepare DATASET_NAME into <CORAL_DATA_ROOT>/<name without _fo>.

    Args:
        dataset_name: FiftyOne dataset with fo.Polylines and train/val/test tags.
        overwrite: replace an existing prepared folder.
        skip_unsplit: skip samples without exactly one split tag instead of stopping.
        skip_missing: prepare the other samples when some image cannot be read (damaged,
            missing, too large); the run still exits 1 at the end, naming them.
        taxonomy: fine, coarse or a taxonomy .yaml (default CORAL_TAXONOMY).
        image_size: longest side of written images and masks (default CORAL_IMAGE_SIZE).
        data_root: output root (default CORAL_DATA_ROOT).
        polylines_field: FiftyOne field with the polylines (default CORAL_POLYLINES_FIELD).
        unknown_labels: error or ignore (default CORAL_UNKNOWN_LABELS).
        line_width: stroke width in output pixels for open polylines.
        num_workers: worker processes (default CORAL_NUM_WORKERS; 0 = one per core).
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    settings = load_settings(
        taxonomy=taxonomy,
        image_size=image_size,
        data_root=data_root,
        polylines_field=polylines_field,
        unknown_labels=unknown_labels,
        num_workers=num_workers,
    )
    try:
        prepared = prepare_dataset(
            str(dataset_name), settings, overwrite, skip_unsplit, skip_missing, line_width
        )
    except (PrepareError, UnknownLabelsError, FileNotFoundError) as exc:
        logging.getLogger("prepare_data").error("%s", exc)
        sys.exit(1)
    if prepared.skipped:  # the dataset is usable, but not everything the user has is in it
        sys.exit(1)


if __name__ == "__main__":
    fire.Fire(main)
