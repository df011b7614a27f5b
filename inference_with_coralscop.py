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
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from dataset.image_io import read_rgb
from dataset.inference_outputs import (
    InputFolderError,
    OutputConflictError,
    OutputFolder,
    scan_inputs,
)
from inferencer import TwoStageInferencer, default_device
from models.fusion import FusionSettings
from models.mask_generator import GeneratorSettings

log = logging.getLogger("inference")
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
        "--points-per-side", type=int, default=32, help="SAM prompt grid (CoralSCoP: 32)"
    )
    p.add_argument("--crop-n-layers", type=int, default=1, help="SAM crop layers (CoralSCoP: 1)")
    p.add_argument("--save-semantic", action="store_true", help="also write semantic class maps")
    p.add_argument(
        "--to-fiftyone",
        metavar="DATASET",
        help="also store the predictions of every finished image in this FiftyOne dataset "
        "(at the end of the run)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace another run's results in --output-dir"
    )
    return p.parse_args(argv)


def setup_logging(log_file: Path) -> None:
    """INFO and above to the terminal and to inference_log.txt (one file handler per run)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("inference", "inferencer", "models"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for old in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)


def _reason(exc: BaseException, name: str) -> str:
    """The error's message without a leading file name (the log line starts with it)."""
    message = str(exc)
    return message[len(name) + 2 :] if message.startswith(f"{name}: ") else message


def _check_stems(images: list[Path]) -> None:
    stems = [p.stem for p in images]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise InputFolderError(
            f"images in {images[0].parent} share a name (their masks would collide): {clashes}; "
            "rename them"
        )


def _settings(args: argparse.Namespace) -> tuple[GeneratorSettings, FusionSettings, dict]:
    generator = GeneratorSettings(
        points_per_side=args.points_per_side,
        crop_n_layers=args.crop_n_layers,
        pred_iou_thresh=args.score_threshold,
        min_mask_region_area=args.min_area,
    )
    fusion = FusionSettings(
        args.min_threshold, args.unsure_threshold, args.nms_threshold, args.min_area
    )
    run_info = {
        "segformer_config": str(args.segformer_config),
        "segformer_weights": str(args.segformer_weights),
        "sam_checkpoint": args.sam_checkpoint,
        "generator": vars(generator),
        "fusion": vars(fusion),
    }
    return generator, fusion, run_info


def _process(pending: list[Path], out: OutputFolder, inferencer, save_semantic: bool) -> int:
    """Every pending image through the models into the output folder; returns the failures."""
    failures = 0
    # decoding the next image overlaps the model work on this one
    with ThreadPoolExecutor(max_workers=1) as reader:
        decoded = [reader.submit(read_rgb, path, name=path.name) for path in pending[:1]]
        bar = tqdm(pending, unit="img")
        for index, path in enumerate(bar):
            if index + 1 < len(pending):
                nxt = pending[index + 1]
                decoded.append(reader.submit(read_rgb, nxt, name=nxt.name))
            started = time.perf_counter()
            try:
                image = decoded[index].result()
                result = inferencer(image)
                out.write(path.stem, path.name, image, result, inferencer.classes,
                          inferencer.palette, save_semantic)  # fmt: skip
            except Exception as exc:  # one bad image must not stop the batch; it is logged
                failures += 1
                log.error(
                    "%s: not done: %s: %s", path.name, type(exc).__name__, _reason(exc, path.name)
                )
                continue
            finally:
                decoded[index] = None  # the decoded image goes with this iteration
            seconds = time.perf_counter() - started
            bar.set_postfix(s_per_img=f"{seconds:.2f}", instances=len(result.instances))
            log.info(
                "%s: %d instances (%d unsure) in %.2f s (semantic %.2f, SAM %.2f, fusion %.2f)",
                path.name,
                len(result.instances),
                sum(i.unsure for i in result.instances),
                seconds,
                result.seconds["semantic"],
                result.seconds["sam"],
                result.seconds["fusion"],
            )
            del image, result  # nothing of a finished image outlives its iteration
    return failures


def _to_fiftyone(name: str, out: OutputFolder, images: list[Path], classes) -> None:
    """Store every finished image's instances, read back from its record one at a time:
    memory stays that of one batch, and images finished by an earlier (interrupted)
    run are stored too."""
    from dataset.fiftyone_predictions import add_predictions, detections_from_coco

    by_name = {p.name: p for p in images}
    items = (
        (by_name[record["image"]["file_name"]], detections_from_coco(
            record["annotations"], classes, record["image"]["width"], record["image"]["height"]
        ))
        for _, record in out.records([p.stem for p in images])
    )  # fmt: skip
    count = add_predictions(name, items)
    log.info("Stored predictions of %d images in FiftyOne dataset %s (field 'predictions')",
             count, name)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        scan = scan_inputs(args.input_dir)
        _check_stems(scan.images)
    except InputFolderError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    generator, fusion, run_info = _settings(args)
    try:
        out = OutputFolder(args.output_dir, run_info, args.overwrite)
    except (OutputConflictError, OSError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    with out:
        return _run(args, scan, out, generator, fusion)


def _run(
    args, scan, out: OutputFolder, generator: GeneratorSettings, fusion: FusionSettings
) -> int:
    setup_logging(out.log_file)
    for path, reason in scan.skipped:
        log.warning("%s: skipped: %s", path.name, reason)
    images = scan.images
    pending = [p for p in images if not out.is_done(p.stem)]
    log.info(
        "%d images in %s; %d already done, %d to process on %s",
        len(images),
        args.input_dir,
        len(images) - len(pending),
        len(pending),
        args.device,
    )
    inferencer = TwoStageInferencer(
        args.segformer_config,
        args.segformer_weights,
        args.sam_checkpoint,
        args.device,
        fusion,
        generator,
    )
    classes = inferencer.classes
    log.info("--min-threshold %s: pixels whose best class probability is under %.3f (%d classes) "
             "count for no class", fusion.min_threshold, fusion.probability_floor(len(classes)),
             len(classes))  # fmt: skip
    failures = _process(pending, out, inferencer, args.save_semantic)
    errors = 0
    try:
        predictions = out.assemble([p.stem for p in images], classes)
        log.info("Results in %s (predictions: %s, log: %s)", out.root, predictions, out.log_file)
    except OSError as exc:
        errors += 1
        log.error("predictions.json not written: %s", exc)
    if args.to_fiftyone:
        try:
            _to_fiftyone(args.to_fiftyone, out, images, classes)
        except Exception as exc:  # the files are written; say what failed, exit non-zero
            errors += 1
            log.error("FiftyOne dataset %s not updated: %s: %s", args.to_fiftyone,
                      type(exc).__name__, exc)  # fmt: skip
    if failures:
        log.error("%d of %d images failed; rerun the same command to retry them (see %s)",
                  failures, len(pending), out.log_file)  # fmt: skip
    return 1 if failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())
