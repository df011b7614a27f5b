"""Training throughput and peak memory of a config, ours or the guide's baseline.

    python bench/train_bench.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --device cuda --amp --batch 4 --data config          # the guide's recipe, real pipeline
    python bench/train_bench.py configs/reef_demo_tiny.py --steps 3 --batch 2   # CPU smoke

--data config feeds the config's train_dataloader (its augmentation pipeline and
workers: data loading included); --data synthetic feeds random crops of the
config's crop size (the model alone). Steps are full optimiser steps (forward,
backward, AdamW) after warm-up; the figure is the median step time, images per
second and the peak GPU memory. --checkpointing turns on the backbone's gradient
checkpointing. Prints one table line and one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fire  # noqa: E402
import torch  # noqa: E402

import engine  # noqa: E402, F401  (registrations)


def _synthetic_batches(batch: int, crop: tuple[int, int], num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    while True:
        inputs = [torch.randint(0, 256, (3, *crop), dtype=torch.uint8) for _ in range(batch)]
        samples = []
        for _ in range(batch):
            sample = SegDataSample(metainfo=dict(img_shape=crop, ori_shape=crop, pad_shape=crop))
            sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, *crop)))
            samples.append(sample)
        yield dict(inputs=inputs, data_samples=samples)


def main(
    config: str,
    device: str = "cpu",
    batch: int = 4,
    steps: int = 10,
    warmup: int = 2,
    amp: bool = False,
    checkpointing: bool = False,
    data: str = "synthetic",
) -> dict:
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(config)
    if checkpointing:
        cfg.model.backbone.use_checkpoint = True
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    crop = tuple(cfg.get("crop_size", (512, 512)))
    if data == "config":
        cfg.train_dataloader.batch_size = batch
        batches = iter(Runner.build_dataloader(cfg.train_dataloader))
    else:
        batches = _synthetic_batches(batch, crop, cfg.model.decode_head.num_classes)
    cuda = device.startswith("cuda")
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=amp and cuda
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for step in range(warmup + steps):
        began = time.perf_counter()
        batch_data = model.data_preprocessor(next(batches), True)
        with autocast:
            losses = model(**batch_data, mode="loss")
        loss = sum(v for k, v in losses.items() if "loss" in k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            seconds.append(time.perf_counter() - began)
    median = statistics.median(seconds)
    result = dict(
        benchmark="train",
        config=str(config),
        device=torch.cuda.get_device_name(0) if cuda else "cpu",
        data=data,
        batch=batch,
        crop=list(crop),
        amp=bool(amp and cuda),
        checkpointing=checkpointing,
        step_s=round(median, 4),
        images_per_s=round(batch / median, 2),
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    )
    print(
        f"\n{Path(config).name}: {result['images_per_s']} img/s (step {result['step_s']} s, "
        f"batch {batch}, crop {crop[0]}x{crop[1]}, {data} data), peak {result['peak_gib']} GiB"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
