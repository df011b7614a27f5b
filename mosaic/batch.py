"""A large image in inference_with_coralscop.py's batch: tiled inference into the output
folder's mosaics/, then the image's record (written last: a rerun skips it once done).

    <output>/mosaics/<stem>.classes.tif      class map GeoTIFF (uint8, 255 outside the image)
    <output>/mosaics/<stem>.confidence.tif   255 x the blended probability of that class
    <output>/mosaics/<stem>.geojson          colonies: polygons with class, confidence, areas

Large images are not in predictions.json (a COCO mask of a whole orthomosaic helps no
one); their record names these files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from dataset.image_io import write_bytes_atomic
from dataset.inference_outputs import OutputFolder
from mosaic.pipeline import MosaicResult, TileSettings, run_tiled

log = logging.getLogger("inference.mosaic")
FOLDER = "mosaics"


def infer_large_image(
    path: Path, out: OutputFolder, inferencer, settings: TileSettings
) -> MosaicResult:
    """inferencer: a TwoStageInferencer (its semantic and CoralSCoP models, its fusion)."""
    result = run_tiled(
        path,
        out.root / FOLDER,
        inferencer.semantic.predict_probs,
        inferencer.instances.propose,
        inferencer.fusion,
        inferencer.classes,
        inferencer.palette,
        settings,
    )
    record = {
        "image": {"file_name": path.name, "height": result.height, "width": result.width},
        "mosaic": {
            **{k: str(v.relative_to(out.root)) for k, v in result.outputs.items()},
            "tiles": result.tiles,
            "colonies": result.colonies,
            "unsure": result.unsure,
            "m2_per_pixel": result.pixel_area_m2,
            "scale_from": result.scale_from,
        },
        "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
    }
    write_bytes_atomic(out.record_path(path.stem), json.dumps(record).encode())
    log.info("%s: class map %s, colonies %s", path.name, result.outputs["classes"],
             result.outputs["colonies"])  # fmt: skip
    return result
