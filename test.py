"""Evaluate a checkpoint: per-class IoU / Acc table, mIoU, mAcc, aAcc, confusion matrix.

    python test.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        work_dirs/criobe_finegrained_dinov2_segformer/best_mIoU_epoch_140.pth \
        --split test --show-dir work_dirs/criobe_finegrained_dinov2_segformer/test_results

Writes metrics.json, confusion_matrix.csv and confusion_matrix.png into the work dir
(default: work_dirs/<config name>/test_<split>).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mmengine.config import DictAction

import engine  # noqa: F401  (registers the runner, metric and hooks; safe checkpoint loading)
from analysis.sources import SourceError
from engine import CoralRunner
from engine.setup import DataConfigError, add_hook, check_data, load_config, set_launcher
from models.safe_checkpoint import UnsafeCheckpointError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="the config the checkpoint was trained with")
    parser.add_argument(
        "checkpoint", help="checkpoint file, e.g. work_dirs/<run>/best_mIoU_epoch_140.pth"
    )
    parser.add_argument(
        "--split", choices=["val", "test"], default="val", help="split to evaluate (default val)"
    )
    parser.add_argument("--work-dir", help="where metrics, confusion matrix and logs go")
    parser.add_argument("--show-dir", help="write ground truth | prediction overlays here")
    parser.add_argument(
        "--pred-dir", help="write predicted class maps (PNG, one class index per pixel) here"
    )
    parser.add_argument(
        "--tta", action="store_true", help="multi-scale + flip test-time augmentation"
    )
    parser.add_argument(
        "--to-fiftyone",
        nargs="?",
        const="auto",
        metavar="DATASET",
        help="store predictions on the FiftyOne samples (default: the dataset prepared from)",
    )
    parser.add_argument("--fiftyone-field", default="predictions_semantic")
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, help="override config keys: key=value ..."
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def store_in_fiftyone(cfg, args) -> None:
    from dataset.fiftyone_predictions import add_semantic_predictions
    from dataset.info import INFO_FILE, read_dataset_info

    data_root = cfg.test_dataloader.dataset.data_root
    info = read_dataset_info(os.path.join(data_root, INFO_FILE))
    name = info["dataset_name"] if args.to_fiftyone == "auto" else args.to_fiftyone
    count = add_semantic_predictions(
        name, data_root, args.pred_dir, info["classes"], info["palette"], args.fiftyone_field
    )
    print(
        f"Stored {count} predictions in FiftyOne dataset {name}, "
        f"field {args.fiftyone_field!r}. Look:\n"
        f"  python -c \"import fiftyone as fo; fo.launch_app(fo.load_dataset('{name}')).wait()\""
    )


def cover_error_table(cfg, pred_dir: str, dataset) -> str:
    """Per-class cover error (predicted minus annotated, percentage points) into metrics.json,
    beside the IoU: the figure monitoring programs report, which mIoU hides."""
    from analysis.cover import add_cover_error

    return add_cover_error(
        os.path.join(cfg.work_dir, "metrics.json"),
        pred_dir,
        dataset.data_prefix["seg_map_path"],  # joined with data_root by the dataset
        dataset.metainfo["classes"],
        cfg.test_evaluator.get("ignore_index", 255),
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = logging.getLogger("coral")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    cfg = load_config(args.config, args.cfg_options)
    cfg.work_dir = args.work_dir or os.path.join(
        "work_dirs", os.path.splitext(os.path.basename(args.config))[0], f"test_{args.split}"
    )
    # One flag instead of editing the config: the test loader reads the chosen split.
    prefix = cfg.test_dataloader.dataset.data_prefix
    prefix.img_path, prefix.seg_map_path = f"images/{args.split}", f"annotations/{args.split}"
    try:
        set_launcher(cfg, args.launcher)
        check_data(cfg, args.config, ("test_dataloader",))
    except DataConfigError as exc:
        log.error("%s", exc)
        return 1
    if not os.path.isfile(args.checkpoint):
        log.error("Checkpoint %s does not exist", args.checkpoint)
        return 1
    cfg.load_from = args.checkpoint
    cfg.test_evaluator = dict(cfg.test_evaluator, output_dir=cfg.work_dir)
    cfg.default_hooks.visualization = dict(type="SegVisualizationHook", draw=False)
    if not args.pred_dir:  # the cover error reads the predicted class maps back
        args.pred_dir = os.path.join(cfg.work_dir, "pred")
    if args.show_dir or args.pred_dir:
        add_hook(
            cfg, dict(type="SavePredictionsHook", show_dir=args.show_dir, pred_dir=args.pred_dir)
        )
    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    runner = CoralRunner.from_cfg(cfg)
    try:
        metrics = runner.test()
    except (UnsafeCheckpointError, ValueError) as exc:
        # ValueError: a checkpoint of another model, a mask with values that are no class
        # (LabelValueError), files in the image folder that CoralDataset would not use
        log.error("%s", exc)
        return 1
    if runner.rank == 0:
        summary = ", ".join(f"{k}: {metrics[k]:.4f}" for k in ("mIoU", "mAcc", "aAcc"))
        print(f"\n{args.split} split of {cfg.test_dataloader.dataset.data_root}: {summary}")
        try:
            print(cover_error_table(cfg, args.pred_dir, runner.test_dataloader.dataset))
        except SourceError as exc:
            log.error("Cover error: %s", exc)
            return 1
        print(f"Metrics, confusion matrix (CSV, PNG) and logs: {cfg.work_dir}")
        for label, folder in (("Overlays", args.show_dir), ("Predicted class maps", args.pred_dir)):
            if folder:
                print(f"{label}: {folder}")
        if args.to_fiftyone:
            store_in_fiftyone(cfg, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
