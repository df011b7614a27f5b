"""Turn annotations into an MMSegmentation dataset: a FiftyOne dataset of polylines, a
TagLab project, or an orthomosaic with GIS polygons.

    python prepare_data.py criobe_finegrained_fo
    python prepare_data.py survey.json --crop-size 1280            # TagLab project
    python prepare_data.py ortho.tif --polygons colonies.gpkg --class-field genus

Output directory, taxonomy, image size and the polylines field come from `.env`
(see .env.example); the flags below override them for one run.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import fire

from dataset.prepare import PrepareError, prepare_dataset
from dataset.taxonomy import UnknownLabelsError
from exchange.crops import CropSettings, prepare_maps
from exchange.gis import GISError
from exchange.open_maps import MapSourceError, open_maps
from exchange.taglab import TagLabError
from settings import load_settings

MAP_ERRORS = (MapSourceError, TagLabError, GISError)


def _names(value) -> tuple[str, ...]:
    """fire gives a comma list as a tuple, one name as a string."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else tuple(str(value).split(","))


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
    polygons: str | None = None,
    class_field: str = "class",
    layer: str | None = None,
    area: str | None = None,
    name: str | None = None,
    crop_size: int = 1280,
    mm_per_pixel: float | None = None,
    area_margin: int = 128,
    split_by: str = "block",
    block_size: int | None = None,
    split_ratios: tuple = (0.8, 0.1, 0.1),
    seed: int = 0,
    val_maps=None,
    test_maps=None,
    image_format: str = "jpg",
    nodata: int | None = None,
    view: str | None = None,
) -> None:
    """Prepare DATASET_NAME into <CORAL_DATA_ROOT>/<name without _fo>.

    Args:
        dataset_name: FiftyOne dataset with fo.Polylines and train/val/test tags; or a
            TagLab project (.json); or an orthomosaic (with --polygons).
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
        polygons: orthomosaics: the colonies (GeoJSON, GeoPackage, shapefile, any CRS).
        class_field: orthomosaics: the polygons' attribute holding the class name.
        layer: orthomosaics: the layer of a multi-layer file (GeoPackage).
        area: orthomosaics: polygons of the annotated area (pixels outside are ignored).
        name: orthomosaics: the dataset's name (default: the project's or image's name).
        crop_size: orthomosaics: side of the training crops, px.
        mm_per_pixel: orthomosaics: resample crops to this ground size (default native).
        area_margin: orthomosaics without a stated area: map px around the regions that
            count as annotated background.
        split_by: orthomosaics: block (spatial blocks) or map (whole maps).
        block_size: orthomosaics: block side in px (a whole number of crops; default 4 crops).
        split_ratios: orthomosaics: train,val,test shares of the blocks or maps.
        seed: orthomosaics: the seed that assigns blocks or maps to splits.
        val_maps: orthomosaics with --split-by map: maps for val (comma list).
        test_maps: orthomosaics with --split-by map: maps for test (comma list).
        image_format: orthomosaics: jpg (quality 95) or png (lossless) crops.
        nodata: orthomosaics: stored value of the collar outside the mosaic.
        view: FiftyOne datasets: prepare this saved view of the dataset (e.g. the labelled
            samples of an annotation loop) instead of all of it.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.captureWarnings(True)  # the readers' warnings (a skipped line, a repaired polygon)
    settings = load_settings(
        taxonomy=taxonomy,
        image_size=image_size,
        data_root=data_root,
        polylines_field=polylines_field,
        unknown_labels=unknown_labels,
        num_workers=num_workers,
    )
    source = Path(str(dataset_name))
    try:
        if source.is_file():  # an annotated orthomosaic: TagLab project, or image + polygons
            crops = CropSettings(
                crop_size=crop_size,
                mm_per_pixel=mm_per_pixel,
                area_margin=area_margin,
                split_by=split_by,
                block_size=block_size,
                split_ratios=tuple(float(r) for r in _names(split_ratios)),
                seed=seed,
                val_maps=_names(val_maps),
                test_maps=_names(test_maps),
                image_format=image_format,
                nodata=nodata,
            )
            maps = open_maps(source, polygons, class_field, layer, area)
            prepare_maps(maps, name or source.stem, settings, crops, overwrite)
            return
        prepared = prepare_dataset(
            str(dataset_name), settings, overwrite, skip_unsplit, skip_missing, line_width, view
        )
    except (PrepareError, UnknownLabelsError, FileNotFoundError, *MAP_ERRORS) as exc:
        logging.getLogger("prepare_data").error("%s", exc)
        sys.exit(1)
    if prepared.skipped:  # the dataset is usable, but not everything the user has is in it
        sys.exit(1)


if __name__ == "__main__":
    fire.Fire(main)
