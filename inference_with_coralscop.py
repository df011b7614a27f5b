"""Two-stage inference on a folder: DINOv2 + SegFormer semantics, then CoralSCoP instances.

    python inference_with_coralscop.py \
        --input-dir data/test_samples/5-grid_removal/ --output-dir results/two_stage_inference/ \
        --segformer-config configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --segformer-weights work_dirs/criobe_finegrained_dinov2_segformer/best_mIoU_epoch_140.pth \
        --sam-checkpoint assets/pretrained_models/vit_b_coralscop.pth --device cuda:0

Writes visualizations/, masks/<image>/instance_NNN.png, predictions.json (COCO) and
inference_log.txt. A rerun skips finished images; a failed image is logged and
the run goes on, then exits with status 1.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
from tqdm import tqdm

from dataset import IMAGE_SUFFIXES
from dataset.inference_outputs import OutputConflictError, OutputFolder
from inferencer import TwoStageInferencer, default_device
from models.fusion import FusionSettings
from models.mask_generator import GeneratorSettings

log = logging.getLogger("inference")


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
        default=0.05,
        help="pixels whose best class probability is lower count for no class",
    )
    p.add_argument(
        "--unsure-threshold",
        type=float,
        default=0.2,
        help="instances less confident than this are kept but marked unsure",
    )
    p.add_argument("--nms-threshold", type=float, default=0.5, help="mask IoU for instance NMS")
    p.add_argument("--min-area", type=int, default=100, help="smallest instance, in pixels")
    p.add_argument(
        "--score-threshold", type=float, default=0.72, help="SAM predicted-IoU threshold"
    )
    p.add_argument(
        "--points-per-side", type=int, default=32, help="SAM prompt grid (CoralSCoP: 32)"
    )
    p.add_argument("--crop-n-layers", type=int, default=1, help="SAM crop layers (CoralSCoP: 1)")
    p.add_argument("--save-semantic", action="store_true", help="also write semantic class maps")
    p.add_argument(
        "--to-fiftyone", metavar="DATASET", help="also store predictions in this FiftyOne dataset"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace another run's results in --output-dir"
    )
    return p.parse_args(argv)


def read_rgb(path: Path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("not a readable image (missing, truncated or corrupt)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def setup_logging(log_file: Path) -> None:
    """INFO and above to the terminal and to inference_log.txt (one file handler per run)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for name in ("inference", "inferencer", "models"):
        logger = logging.getLogger(name)
        logger.setLevel(logging.INFO)
        for old in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = sorted(p for p in Path(args.input_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    stems = [p.stem for p in images]
    if len(set(stems)) != len(stems):
        clashes = sorted({s for s in stems if stems.count(s) > 1})
        print(f"ERROR: images share a name (their masks would collide): {clashes}", file=sys.stderr)
        return 2
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
    try:
        out = OutputFolder(args.output_dir, run_info, args.overwrite)
    except OutputConflictError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    setup_logging(out.log_file)
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
    failures, written = 0, []
    # decoding the next image overlaps the model work on this one
    with ThreadPoolExecutor(max_workers=1) as reader:
        decoded = [reader.submit(read_rgb, path) for path in pending[:1]]
        bar = tqdm(pending, unit="img")
        for index, path in enumerate(bar):
            if index + 1 < len(pending):
                decoded.append(reader.submit(read_rgb, pending[index + 1]))
            started = time.perf_counter()
            try:
                image = decoded[index].result()
                result = inferencer(image)
                out.write(
                    path.stem,
                    path.name,
                    image,
                    result,
                    inferencer.classes,
                    inferencer.palette,
                    args.save_semantic,
                )
            except Exception as exc:  # one bad image must not stop the batch; it is logged
                failures += 1
                log.error("%s: %s: %s", path, type(exc).__name__, exc)
                continue
            finally:
                decoded[index] = None  # free the decoded image
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
            written.append((path, result.instances))
    predictions = out.assemble(stems, inferencer.classes)
    if args.to_fiftyone and written:
        from dataset.fiftyone_predictions import add_predictions

        count = add_predictions(args.to_fiftyone, written, inferencer.classes)
        log.info(
            "Stored predictions of %d images in FiftyOne dataset %s (field 'predictions')",
            count,
            args.to_fiftyone,
        )
    log.info("Results in %s (predictions: %s, log: %s)", out.root, predictions, out.log_file)
    if failures:
        log.error("%d of %d images failed; see %s", failures, len(pending), out.log_file)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
