"""Two-stage inference on a folder: DINOv2 + SegFormer semantics, then CoralSCoP instances.

    python inference_with_coralscop.py \
        --input-dir data/test_samples/5-grid_removal/ --output-dir results/two_stage_inference/ \
        --segformer-config configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --segformer-weights work_dirs/criobe_finegrained_dinov2_segformer/best_mIoU_epoch_140.pth \
        --sam-checkpoint assets/pretrained_models/vit_b_coralscop.pth --device cuda:0

Writes visualizations/, masks/<image>/instance_NNN.png, predictions.json (COCO) and
inference_log.txt. Every file of --input-dir is either processed or named in the
log with the reason it is not; a folder with no readable image stops the run
(status 2) before any model is loaded. A rerun skips finished images; a failed
image (unreadable, or an output that could not be written) is logged, the run
goes on, then exits with status 1. predictions.json is written at the end of a
run, complete, by rename. One run at a time may write an output folder.
Images over 40 MP (every image with --tiled) go through tiles (mosaic/): a class-map
and a confidence GeoTIFF and the colonies as GeoJSON and GeoPackage in mosaics/, in the
image's CRS. --taglab adds taglab_project.json, every image a map to correct in TagLab.

Sharded over several GPUs or nodes (each process does its share of the images,
balanced by pixel count; one merged predictions.json and log at the end):

    torchrun --nproc_per_node 4 inference_with_coralscop.py ... --launcher pytorch
    srun --ntasks 8 --gres gpu:4 python inference_with_coralscop.py ... --launcher slurm
"""

from __future__ import annotations

import argparse
import sys

from engine.batch_inference import run
from engine.distributed import LAUNCHERS, LauncherError, init_processes
from inferencer import default_device
from models.cpu_precision import PRECISIONS, requested_precision
from models.cpu_precision import VARIABLE as CPU_PRECISION_VARIABLE
from models.fusion import FusionSettings
from models.mask_generator import GeneratorSettings
from mosaic.pipeline import TILED_ABOVE_PIXELS, TileSettings
from mosaic.windows import check_tiling

DEFAULTS = FusionSettings()


def _floors() -> str:
    """What the default --min-threshold means for each taxonomy, for --help."""
    from dataset.taxonomy import load_taxonomy

    counts = {"fine": "fine classes", "coarse": "families"}
    floors = []
    for name, what in counts.items():
        classes = len(load_taxonomy(name).classes)
        floors.append(f"{DEFAULTS.probability_floor(classes):.3f} with the {classes} {what}")
    return " and p < ".join(floors)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--input-dir", required=True, help="folder of images")
    p.add_argument("--output-dir", required=True, help="where results go")
    p.add_argument("--segformer-config", required=True, help="config of the semantic model")
    p.add_argument("--segformer-weights", required=True, help="its checkpoint (.pth)")
    p.add_argument(
        "--sam-checkpoint",
        help="vit_b_coralscop.pth (or a stock SAM ViT-B); "
        "without it SAM has random weights: pipeline checks only",
    )
    p.add_argument(
        "--device", default=default_device(), help="cuda:0, cpu, ... (default: %(default)s)"
    )
    p.add_argument(
        "--cpu-precision", choices=PRECISIONS, default=None,
        help="on a CPU, the semantic model's and SAM image encoder's precision: f32, or bf16 "
        "(several times faster where the CPU has native bf16: AVX512_BF16 or AMX; elsewhere "
        f"a warning and f32). Default: {CPU_PRECISION_VARIABLE} or f32. GPUs run bf16 where "
        "they support it, whatever this says",
    )  # fmt: skip
    p.add_argument(
        "--min-threshold",
        type=float,
        default=DEFAULTS.min_threshold,
        help="pixels whose best class probability is close to a uniform guess count for no "
        "class; the value is the share of the way from uniform (1/C for C classes) to "
        "certain (1): a pixel counts when its best probability p >= 1/C + T * (1 - 1/C). "
        f"The default %(default)s removes p < {_floors()}; 0 keeps every pixel (an "
        "absolute threshold under 1/C would never act: the best of C probabilities is at "
        "least 1/C)",
    )
    p.add_argument(
        "--unsure-threshold",
        type=float,
        default=DEFAULTS.unsure_threshold,
        help="instances whose mean class probability is lower are kept but marked unsure "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--nms-threshold",
        type=float,
        default=DEFAULTS.nms_threshold,
        help="mask IoU for instance NMS (default: %(default)s)",
    )
    p.add_argument(
        "--min-area",
        type=int,
        default=DEFAULTS.min_area,
        help="smallest instance, in pixels (default: %(default)s)",
    )
    p.add_argument(
        "--score-threshold", type=float, default=0.72, help="SAM predicted-IoU threshold"
    )
    p.add_argument(
        "--stability-threshold", type=float, default=GeneratorSettings.stability_score_thresh,
        help="SAM stability-score threshold (CoralSCoP: %(default)s; 0 keeps every mask)",
    )  # fmt: skip
    p.add_argument(
        "--points-per-side", type=int, default=32, help="SAM prompt grid (CoralSCoP: 32)"
    )
    p.add_argument("--crop-n-layers", type=int, default=1, help="SAM crop layers (CoralSCoP: 1)")
    p.add_argument("--save-semantic", action="store_true", help="also write semantic class maps")
    p.add_argument(
        "--taglab",
        action="store_true",
        help="also write taglab_project.json: every image a TagLab map, every colony a "
        "region (genus, confidence), for correction in TagLab (docs/orthomosaics.md)",
    )
    p.add_argument(
        "--to-fiftyone",
        metavar="DATASET",
        help="also store the predictions of every finished image in this FiftyOne dataset "
        "(at the end of the run)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace another run's results in --output-dir"
    )
    p.add_argument(
        "--launcher",
        choices=LAUNCHERS,
        default="none",
        help="pytorch under torchrun, slurm under srun: the processes share the images "
        "(each on its GPU, cuda:LOCAL_RANK, when --device is a GPU) and one output folder",
    )
    p.add_argument(
        "--tiled",
        action="store_true",
        help="tiled inference for every image (automatic for images over "
        f"{TILED_ABOVE_PIXELS / 1e6:.0f} MP): read by windows, class map and confidence "
        "GeoTIFFs and colonies GeoJSON in mosaics/ (docs/orthomosaics.md)",
    )
    p.add_argument(
        "--tile-size", type=int, default=TileSettings.tile_size, help="tile side in px "
        "(default: %(default)s, SAM's input: proposals at native resolution)",
    )  # fmt: skip
    p.add_argument(
        "--tile-overlap", type=int, default=TileSettings.overlap,
        help="overlap of neighbouring tiles in px, at most half a tile (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--mm-per-pixel", type=float, help="ground size of a pixel for the colonies' areas in "
        "m2 (default: from the image's georeference)",
    )  # fmt: skip
    p.add_argument(
        "--nodata", type=int, metavar="VALUE", help="tiled images: input pixels of this value "
        "in every band are outside the mosaic (the black 0 or white 255 collar of an export "
        "without a nodata tag): 255 in the class map, in no colony, not counted",
    )  # fmt: skip
    p.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        check_tiling(args.tile_size, args.tile_overlap)
        requested_precision(args.cpu_precision)  # without the flag: CORAL_CPU_PRECISION's value
    except ValueError as exc:
        p.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        processes = init_processes(args.launcher)
    except LauncherError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    try:
        return run(args, processes)
    finally:
        processes.close()


if __name__ == "__main__":
    sys.exit(main())
