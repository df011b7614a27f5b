"""Training throughput and peak memory of a config, ours or the guide's baseline.

    python bench/train_bench.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --device cuda --amp --batch 4 --data config          # the guide's recipe, real pipeline
    python bench/train_bench.py configs/reef_demo_tiny.py --steps 3 --batch 2   # CPU smoke

--data config feeds the config's train_dataloader (its augmentation pipeline and
workers: data loading included) from its data_root; --data folder feeds the same
loader from a temporary folder of synthetic 1920 px quadrats in prepare_data's
layout (machines without the real data); --data synthetic feeds random crops of
the config's crop size (the model alone). --workers overrides the loader's
worker count. Each step is what mmengine's train loop runs per iteration
(`model.train_step` with the config's optimiser wrapper: layer decay, gradient
accumulation; --amp switches it to bf16 autocast as `train.py --amp` does), timed
after warm-up; the figures are the mean step time, images per second and peak
GPU memory. --checkpointing turns on the backbone's gradient checkpointing,
--fused uses torch's fused AdamW. Prints one table line and one JSON line.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import fire  # noqa: E402
import torch  # noqa: E402
from pipeline_bench import endless, write_prepared_folder  # noqa: E402

import engine  # noqa: E402, F401  (registrations)
from engine.setup import enable_amp  # noqa: E402


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
    fused: bool = False,
    workers: int | None = None,
    folder_samples: int = 16,
    folder_image_size: int = 1920,
) -> dict:
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(config)
    if checkpointing:
        cfg.model.backbone.use_checkpoint = True
    cuda = device.startswith("cuda")
    if amp and cuda:
        enable_amp(cfg)  # as train.py --amp does: AmpOptimWrapper, bf16 where supported
    if fused:
        cfg.optim_wrapper.optimizer.fused = True
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).to(device).train()
    # the config's optimiser (layer decay, gradient accumulation) as the Runner builds it
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    optim_wrapper.initialize_count_status(model, 0, warmup + steps)
    crop = tuple(cfg.get("crop_size", (512, 512)))
    workdir = tempfile.mkdtemp(prefix="train-bench-")
    if data == "folder":
        write_prepared_folder(Path(workdir), folder_samples, folder_image_size)
        cfg.train_dataloader.dataset.data_root = workdir
    if data in ("config", "folder"):
        cfg.train_dataloader.batch_size = batch
        if workers is not None:
            cfg.train_dataloader.num_workers = workers
            cfg.train_dataloader.persistent_workers = workers > 0
        batches = endless(Runner.build_dataloader(cfg.train_dataloader))
    else:
        batches = _synthetic_batches(batch, crop, cfg.model.decode_head.num_classes)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for step in range(warmup + steps):
        began = time.perf_counter()
        model.train_step(next(batches), optim_wrapper)  # what the Runner's train loop calls
        if cuda:
            torch.cuda.synchronize()
        if step >= warmup:
            seconds.append(time.perf_counter() - began)
    shutil.rmtree(workdir, ignore_errors=True)
    # with gradient accumulation only every n-th step updates: the mean is the throughput
    mean = statistics.fmean(seconds)
    result = dict(
        benchmark="train",
        config=str(config),
        device=torch.cuda.get_device_name(0) if cuda else "cpu",
        data=data,
        workers=cfg.train_dataloader.num_workers if data != "synthetic" else None,
        batch=batch,
        crop=list(crop),
        amp=bool(amp and cuda),
        checkpointing=checkpointing,
        fused_adamw=fused,
        accumulative_counts=cfg.optim_wrapper.get("accumulative_counts", 1),
        step_s=round(mean, 4),
        images_per_s=round(batch / mean, 2),
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
