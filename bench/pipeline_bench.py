"""Training data pipeline speed: can the loaders keep the GPU fed?

    python bench/pipeline_bench.py          # 16 quadrats of 1920 px, 0, 2 and 4 workers
    python bench/pipeline_bench.py --image-size 256 --num-samples 4 --workers 0 --batches 2

The training target (issue 10) is >= 20 images/s with data loading included. This
bench measures the loading side alone, on a temporary folder in prepare_data's
layout filled with synthetic reef quadrats (JPEG images, PNG masks):
- each transform of the config's train_pipeline in this process with OpenCV on one
  thread (what one loader worker costs per sample);
- the config's train_dataloader (its batch size, persistent workers) at each
  --workers count: images per second after the first batch (the workers'
  start-up), read as a model that takes no time would read them.
Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import fire  # noqa: E402
import numpy as np  # noqa: E402

import engine  # noqa: E402, F401  (registrations, CoralDataset)
from dataset.reef_demo import GENUS_LOOKS, render_sample  # noqa: E402

MAIN_CONFIG = ROOT / "configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py"
MMSEG_ORIGINAL = {"CountingRandomCrop": "RandomCrop"}
UNIQUE_RENDERS = 4  # rendering a 1920 px quadrat takes ~2 s: reuse a few, shifted


def write_prepared_folder(root: Path, num_samples: int, image_size: int) -> None:
    """A folder as prepare_data.py writes it (train split only), synthetic content."""
    classes = ["background", *GENUS_LOOKS]
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    palette = [[0, 0, 0]] + [[(37 * i) % 256, (91 * i) % 256, (53 * i) % 256] for i in range(1, 6)]
    (root / "palette.txt").write_text("\n".join(" ".join(map(str, c)) for c in palette) + "\n")
    images, masks = root / "images/train", root / "annotations/train"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    renders = []
    for index in range(min(num_samples, UNIQUE_RENDERS)):
        image, colonies = render_sample(index, image_size)
        mask = np.zeros(image.shape[:2], np.uint8)
        for colony in colonies:
            outline = np.round(np.array(colony["points"]) * image_size).astype(np.int32)
            cv2.fillPoly(mask, [outline], classes.index(colony["label"]))
        renders.append((image, mask))
    for index in range(num_samples):
        image, mask = renders[index % len(renders)]
        shift = (index // len(renders)) * image_size // 7
        stem = f"quadrat_{index:04d}"
        written = (
            cv2.imwrite(str(images / f"{stem}.jpg"), np.roll(image, shift, 1)[..., ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 92]),
            cv2.imwrite(str(masks / f"{stem}.png"), np.roll(mask, shift, 1)),
        )  # fmt: skip
        if not all(written):  # cv2.imwrite returns False rather than raising
            raise OSError(f"could not write {stem} under {images.parent}")


def time_transforms(cfg, data_root: Path, num_samples: int) -> tuple[dict, dict]:
    """Median milliseconds of each train transform, OpenCV on one thread; and of each
    project transform beside the mmseg transform it replaces, on the same inputs."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import TRANSFORMS

    init_default_scope("mmseg")
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        steps = [TRANSFORMS.build(step) for step in cfg.train_pipeline]
        names = [f"{i}:{type(step).__name__}" for i, step in enumerate(steps)]
        times = {name: [] for name in names}
        # our faster stand-ins for mmseg transforms, timed beside the originals
        baselines = {
            name: TRANSFORMS.build(dict(spec, type=MMSEG_ORIGINAL[spec["type"]]))
            for name, spec in zip(names, cfg.train_pipeline, strict=True)
            if spec["type"] in MMSEG_ORIGINAL
        }
        baseline_times = {name: [] for name in baselines}
        for index in range(num_samples):
            stem = f"quadrat_{index:04d}"
            result = dict(
                img_path=str(data_root / f"images/train/{stem}.jpg"),
                seg_map_path=str(data_root / f"annotations/train/{stem}.png"),
                reduce_zero_label=False,
                seg_fields=[],
            )
            for name, step in zip(names, steps, strict=True):
                if name in baselines:  # mmseg's transform on the same input and draws, not kept
                    draws = np.random.get_state()
                    began = time.perf_counter()
                    baselines[name](dict(result))
                    baseline_times[name].append(1000 * (time.perf_counter() - began))
                    np.random.set_state(draws)
                began = time.perf_counter()
                result = step(result)
                times[name].append(1000 * (time.perf_counter() - began))
    finally:
        cv2.setNumThreads(threads)
    medians = {name: round(statistics.median(ms), 2) for name, ms in times.items()}
    compared = {
        name: dict(ours_ms=medians[name], mmseg_ms=round(statistics.median(ms), 2))
        for name, ms in baseline_times.items()
    }
    return medians, compared


def time_loader(cfg, data_root: Path, workers: int, batches: int) -> dict:
    from mmengine.runner import Runner

    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.dataset = dict(loader_cfg.dataset, data_root=str(data_root))
    loader_cfg.num_workers = workers
    loader_cfg.persistent_workers = workers > 0
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    batch_size = loader_cfg.batch_size
    batch_iter = iter(endless(loader))
    began = time.perf_counter()
    next(batch_iter)  # the workers' start-up and the first batch
    first = time.perf_counter() - began
    began = time.perf_counter()
    for _ in range(batches):
        next(batch_iter)
    seconds = time.perf_counter() - began
    return dict(
        workers=workers,
        batch=batch_size,
        first_batch_s=round(first, 2),
        images_per_s=round(batches * batch_size / seconds, 2),
    )


def endless(loader):
    """Batches without end: the loader again after each epoch."""
    while True:
        yield from loader


def main(
    config: str = str(MAIN_CONFIG),
    num_samples: int = 16,
    image_size: int = 1920,
    workers="0,2,4",
    batches: int = 8,
) -> dict:
    from mmengine.config import Config

    workers = [int(w) for w in str(workers).strip("()[]").split(",") if str(w).strip()]
    cfg = Config.fromfile(config)
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        data_root = Path(tmp)
        write_prepared_folder(data_root, num_samples, image_size)
        transforms, compared = time_transforms(cfg, data_root, num_samples)
        loaders = [time_loader(cfg, data_root, w, batches) for w in workers]
    per_sample_ms = round(sum(transforms.values()), 1)
    result = dict(
        benchmark="train_pipeline",
        config=str(config),
        device=f"CPU {platform.machine()}, {os.cpu_count()} cores",
        image_size=image_size,
        transforms_ms=transforms,
        replaced_transforms=compared,
        per_sample_ms_one_core=per_sample_ms,
        images_per_s_per_core=round(1000 / per_sample_ms, 2),
        loaders=loaders,
    )
    print(f"\n{Path(config).name} train pipeline on {image_size}px quadrats, {result['device']}")
    for name, ms in transforms.items():
        print(f"  {name:34} {ms:>8} ms")
    print(f"  {'one sample, one core':34} {per_sample_ms:>8} ms "
          f"({result['images_per_s_per_core']} images/s per core)")  # fmt: skip
    for name, row in compared.items():
        print(f"  {name} vs mmseg's original on the same inputs: {row['ours_ms']} vs "
              f"{row['mmseg_ms']} ms ({row['mmseg_ms'] / row['ours_ms']:.1f}x)")  # fmt: skip
    print(f"{'workers':>8} {'batch':>6} {'first batch s':>14} {'images/s':>9}")
    for row in loaders:
        print(f"{row['workers']:>8} {row['batch']:>6} {row['first_batch_s']:>14} "
              f"{row['images_per_s']:>9}")  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
