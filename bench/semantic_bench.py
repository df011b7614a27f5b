"""Semantic model speed: our DINOv2 backbone vs the guide's mmseg VisionTransformer, side by side.

    python bench/semantic_bench.py --part backbone --sizes 518,1036       # CPU, issue 6 figures
    python bench/semantic_bench.py --part segmentor --sizes 1920 --dtype bf16 --device cuda

--part backbone times the backbone forward; --part segmentor times the whole
inference as the config sets it (slide 1280/853), from a normalised image tensor
to the class logits. Both models come from the project's configs with random
weights (configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py and
configs/baselines/guide_vit_segformer.py), measured in the same process: warm-up,
then the median of the repeats (CUDA events on GPUs) and the peak GPU memory.
Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fire  # noqa: E402
import torch  # noqa: E402
from timing import time_call  # noqa: E402

import models  # noqa: E402, F401  (registrations and the mmcv.ops stand-in)

CONFIGS = {
    "ours (timm DINOv2, SDPA)": ROOT / "configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py",
    "guide (mmseg VisionTransformer)": ROOT / "configs/baselines/guide_vit_segformer.py",
}


def build(config: Path, device: str) -> torch.nn.Module:
    from mmengine.config import Config
    from mmengine.model.utils import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(config), import_custom_modules=False)
    return revert_sync_batchnorm(MODELS.build(cfg.model)).to(device).eval()


def main(
    part: str = "backbone",
    sizes=(518, 1036),
    device: str = "cpu",
    dtype: str = "fp32",
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """Time each model at each size; returns the figures."""
    if isinstance(sizes, int):
        sizes = (sizes,)
    autocast = torch.autocast(
        device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16"
    )
    rows = []
    for name, config in CONFIGS.items():
        model = build(config, device)
        for size in sizes:
            image = torch.randn(1, 3, size, size, device=device)
            meta = [dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))]
            if part == "backbone":
                call = lambda m=model, x=image: m.backbone(x)  # noqa: E731
            else:
                call = lambda m=model, x=image, meta=meta: m.inference(x, meta)  # noqa: E731
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            with torch.no_grad(), autocast:
                _, seconds = time_call(call, device, warmup, repeats)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
            rows.append(
                dict(
                    model=name,
                    size=size,
                    median_s=round(statistics.median(seconds), 4),
                    runs_s=[round(s, 4) for s in seconds],
                    peak_gib=peak,
                )
            )
        del model
    for size in sizes:
        ours, guide = (
            next(r for r in rows if r["size"] == size and r["model"] == n) for n in CONFIGS
        )
        ours["speedup_vs_guide"] = round(guide["median_s"] / ours["median_s"], 2)
    device_name = (
        torch.cuda.get_device_name(0)
        if device.startswith("cuda")
        else (f"CPU {platform.machine()}, {torch.get_num_threads()} threads")
    )
    result = dict(
        benchmark=f"semantic_{part}",
        device=device_name,
        dtype=dtype,
        torch=torch.__version__,
        rows=rows,
    )
    print(f"\n{part} forward, {dtype}, {device_name} (median of {repeats}, after {warmup} warm-up)")
    print(f"{'model':34} {'size':>6} {'seconds':>9} {'speed-up':>9}")
    for r in rows:
        print(
            f"{r['model']:34} {r['size']:>6} {r['median_s']:>9} {r.get('speedup_vs_guide', ''):>9}"
        )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
