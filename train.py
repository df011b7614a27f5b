"""Train a segmentation model with MMSegmentation's Runner.

    python train.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --work-dir work_dirs/criobe_finegrained_dinov2_segformer [--amp] [--resume]
    torchrun --nproc_per_node 4 train.py CONFIG --launcher pytorch
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from mmengine.config import DictAction

import engine  # noqa: F401  (registers the runner, metric and hooks; safe checkpoint loading)
from engine import CoralRunner
from engine.runner import ConfigMismatchError
from engine.setup import (
    DataConfigError,
    add_hook,
    check_data,
    default_work_dir,
    enable_amp,
    load_config,
    plan_backbone_weights,
    set_launcher,
)
from models.dinov2_checkpoint import PretrainedUnavailableError
from models.safe_checkpoint import UnsafeCheckpointError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "config", help="config file, e.g. configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py"
    )
    parser.add_argument(
        "--work-dir", help="where checkpoints and logs go (default: work_dirs/<config name>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="CHECKPOINT",
        help="resume the latest checkpoint of the work dir, or the one given",
    )
    parser.add_argument(
        "--amp", action="store_true", help="mixed precision (bf16 where supported, else fp16)"
    )
    parser.add_argument(
        "--load-from",
        metavar="CHECKPOINT",
        help="start from these weights (e.g. the coarse model); "
        "a head with another class count is re-initialised",
    )
    parser.add_argument(
        "--cfg-options", nargs="+", action=DictAction, help="override config keys: key=value ..."
    )
    parser.add_argument("--launcher", choices=["none", "pytorch", "slurm", "mpi"], default="none")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)  # fmt: skip


def _weights_checkpoint(args: argparse.Namespace, cfg) -> str | None:
    """The checkpoint whose weights replace the backbone's starting weights, if any."""
    if args.resume:
        if args.resume != "auto":
            return args.resume
        from mmengine.runner import find_latest_checkpoint

        return find_latest_checkpoint(cfg.work_dir) if os.path.isdir(cfg.work_dir) else None
    return args.load_from or cfg.get("load_from")  # e.g. the fine config's coarse model


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = logging.getLogger("coral")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    cfg = load_config(args.config, args.cfg_options)
    cfg.work_dir = args.work_dir or default_work_dir(args.config)
    try:
        set_launcher(cfg, args.launcher)
        check_data(cfg, args.config, ("train_dataloader", "val_dataloader"))
    except DataConfigError as exc:
        log.error("%s", exc)
        return 1
    if args.amp:
        log.info("--amp: %s", enable_amp(cfg))
    if args.load_from:
        cfg.load_from = args.load_from
        cfg.load_from_partial = True
    if args.resume:
        cfg.resume = True
        cfg.load_from = None if args.resume == "auto" else args.resume
    try:
        level, weights = plan_backbone_weights(cfg, args.config, _weights_checkpoint(args, cfg))
    except PretrainedUnavailableError as exc:
        log.error("%s", exc)
        return 1
    add_hook(cfg, dict(type="BestCheckpointLinkHook"))
    runner = CoralRunner.from_cfg(cfg)
    if weights:
        runner.logger.log(level, weights)  # in the run's log file too
    try:
        runner.train()
    except (ConfigMismatchError, UnsafeCheckpointError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    if runner.rank == 0:
        print(f"\nTraining finished. Work dir: {cfg.work_dir} (checkpoints, best_mIoU.pth, "
              f"config copy, logs)\nTensorBoard: tensorboard --logdir {cfg.work_dir}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
