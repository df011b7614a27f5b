"""Hooks: a stable `best_mIoU.pth` link, and prediction maps / overlays written by test.py."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from dataset.image_io import read_rgb, write_image
from dataset.visualize import overlay

BEST_LINK = "best_mIoU.pth"


@HOOKS.register_module()
class BestCheckpointLinkHook(Hook):
    """Keep `<work_dir>/best_mIoU.pth` pointing at the best checkpoint so far.

    CheckpointHook names the best checkpoint after its epoch (best_mIoU_epoch_140.pth,
    as the guide's commands expect); the link gives later steps (the fine-tuning
    config's load_from, packaging) one name to use. Runs after CheckpointHook.
    """

    priority = "LOWEST"

    def after_val_epoch(self, runner, metrics=None) -> None:
        if runner.rank != 0:
            return
        best = runner.message_hub.get_info("best_ckpt")
        if not best or not os.path.isfile(best):
            return
        link = Path(runner.work_dir) / BEST_LINK
        temporary = link.with_name(f".{BEST_LINK}.{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(os.path.basename(best))
        temporary.replace(link)  # atomic: never a moment without a best link


@HOOKS.register_module()
class SavePredictionsHook(Hook):
    """Write, per test image, the predicted class map (`pred_dir`, single-channel PNG)
    and/or ground truth | prediction overlays side by side (`show_dir`, JPEG).

    Writes are checked and atomic (dataset.image_io.write_image): a file that cannot be
    written stops test.py with ImageWriteError naming it, never a run that looks complete.
    """

    def __init__(self, pred_dir: str | None = None, show_dir: str | None = None) -> None:
        self.pred_dir = Path(pred_dir) if pred_dir else None
        self.show_dir = Path(show_dir) if show_dir else None

    def before_test(self, runner) -> None:
        for folder in (self.pred_dir, self.show_dir):
            if folder:
                folder.mkdir(parents=True, exist_ok=True)
        self.palette = np.array(runner.test_dataloader.dataset.metainfo["palette"], np.uint8)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        for sample in outputs or []:
            stem = Path(sample.img_path).stem
            pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
            if self.pred_dir:
                write_image(self.pred_dir / f"{stem}.png", pred)
            if self.show_dir:
                image = read_rgb(sample.img_path)
                panels = [overlay(image, pred, self.palette)]
                if "gt_sem_seg" in sample:
                    gt = sample.gt_sem_seg.data[0].cpu().numpy().astype(np.uint8)
                    panels.insert(0, overlay(image, gt, self.palette))
                side_by_side = cv2.cvtColor(np.hstack(panels), cv2.COLOR_RGB2BGR)
                write_image(self.show_dir / f"{stem}.jpg", side_by_side)
