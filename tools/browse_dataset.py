"""See training samples as the model sees them: after the augmentation pipeline,
image and mask side by side (replaces the guide's `mim run mmseg browse_dataset`).

    python tools/browse_dataset.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --show-interval 1 [--show] [--output-dir DIR] [--max-samples N]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

import engine  # noqa: E402, F401  (registrations)
from dataset.image_io import write_image  # noqa: E402
from dataset.visualize import colorize, overlay  # noqa: E402
from engine.setup import load_config  # noqa: E402


def render(sample: dict, palette) -> np.ndarray:
    """image | image with the mask overlaid | the mask in colour, for one packed sample."""
    image = cv2.cvtColor(
        sample["inputs"].permute(1, 2, 0).numpy().astype(np.uint8), cv2.COLOR_BGR2RGB
    )
    mask = sample["data_samples"].gt_sem_seg.data[0].numpy().astype(np.uint8)
    panels = [image, overlay(image, mask, palette), colorize(mask, palette)]
    return cv2.cvtColor(np.hstack(panels), cv2.COLOR_RGB2BGR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument(
        "--output-dir", help="write images here (default: work_dirs/browse_<config>)"
    )
    parser.add_argument("--show", action="store_true", help="also show each in a window")
    parser.add_argument("--show-interval", type=float, default=1.0, help="seconds per window")
    parser.add_argument("--max-samples", type=int, default=0, help="stop after N samples (0: all)")
    parser.add_argument("--cfg-options", nargs="+", action=DictAction)
    args = parser.parse_args(argv)
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    cfg = load_config(args.config, args.cfg_options)
    init_default_scope("mmseg")
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    palette = dataset.metainfo["palette"]
    out = Path(args.output_dir or os.path.join("work_dirs", f"browse_{Path(args.config).stem}"))
    out.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if args.max_samples <= 0 else min(args.max_samples, len(dataset))
    for index in range(count):
        sample = dataset[index]
        picture = render(sample, palette)
        name = f"{index:04d}_{Path(sample['data_samples'].img_path).stem}.jpg"
        write_image(out / name, picture)  # checked: cv2.imwrite returns False silently
        if args.show:
            cv2.imshow("browse_dataset (image | overlay | mask)", picture)
            cv2.waitKey(max(1, int(args.show_interval * 1000)))
    print(f"{count} training samples after the pipeline written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
