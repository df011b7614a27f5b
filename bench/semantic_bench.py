"""Semantic model speed: our DINOv2 model vs the guide's mmseg VisionTransformer, side by side.

    python bench/semantic_bench.py --part backbone --sizes 518,1036       # CPU, issue 6 figures
    python bench/semantic_bench.py --part end2end --sizes 1920 --dtype bf16 --device cuda

--part backbone times the backbone forward; --part segmentor the whole inference
as the config sets it (slide 1280/853), from a normalised image tensor to the
class logits; --part end2end what a user waits for: from a decoded RGB uint8
image to the class map on the host, through inferencer.SemanticSegmenter
(transfer, normalisation, slide inference, softmax, argmax, copy back).
Both models come from the project's configs with random weights
(configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py and
configs/baselines/guide_vit_segformer.py), measured in the same process: warm-up,
then the median of the repeats (CUDA events on GPUs) and the peak GPU memory.
--dtype sets ours (bf16 autocast or fp32), --guide-dtype the guide's (fp32, as
the guide ran it). end2end resizes images to the config's test scale (1920 px) as
inference does; --native-size keeps the given size (quick CPU checks). Prints a
table and one JSON line.
"""

from __future__ import annotations

import json
import platform
import shutil
import statistics
import sys
import tempfile
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


def _end2end_segmenter(config: Path, device: str, bf16: bool, workdir: Path, native: bool):
    """The inference code's semantic model, with random weights saved as train.py saves them.

    native: skip the config's test-time resize (to 1920 px), for quick runs at small sizes."""
    from inferencer import SemanticSegmenter
    from models.random_checkpoint import write_random_semantic_checkpoint

    checkpoint = write_random_semantic_checkpoint(config, workdir / f"{config.stem}.pth")
    segmenter = SemanticSegmenter(str(config), str(checkpoint), device, bf16=bf16)
    if native:
        segmenter.scale = None
    return segmenter


def _end2end_call(segmenter, size: int):
    """From a decoded RGB image to the class map on the host."""
    import numpy as np

    image = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return lambda: segmenter.predict_probs(image).argmax(0).to(torch.uint8).cpu().numpy()


def main(
    part: str = "backbone",
    sizes=(518, 1036),
    device: str = "cpu",
    dtype: str = "fp32",
    guide_dtype: str = "fp32",
    native_size: bool = False,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    """Time each model at each size; returns the figures."""
    if isinstance(sizes, int):
        sizes = (sizes,)
    dtypes = dict(zip(CONFIGS, (dtype, guide_dtype), strict=True))
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="semantic-bench-"))
    try:
        for name, config in CONFIGS.items():
            bf16 = dtypes[name] == "bf16"
            autocast = torch.autocast(
                device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16
            )
            if part == "end2end":
                segmenter = _end2end_segmenter(config, device, bf16, workdir, native_size)
                model = segmenter.model
            else:
                model = build(config, device)
            for size in sizes:
                if part == "end2end":
                    call = _end2end_call(segmenter, size)
                else:
                    image = torch.randn(1, 3, size, size, device=device)
                    meta = [
                        dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))
                    ]
                    if part == "backbone":
                        call = lambda m=model, x=image: m.backbone(x)  # noqa: E731
                    else:
                        call = lambda m=model, x=image, meta=meta: m.inference(x, meta)  # noqa: E731
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                with torch.no_grad(), autocast:
                    _, seconds = time_call(call, device, warmup, repeats)
                peak = (
                    round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    if device.startswith("cuda")
                    else None
                )
                rows.append(
                    dict(
                        model=name,
                        dtype=dtypes[name],
                        size=size,
                        median_s=round(statistics.median(seconds), 4),
                        runs_s=[round(s, 4) for s in seconds],
                        peak_gib=peak,
                    )
                )
            del model, call
            segmenter = None
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
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
        torch=torch.__version__,
        rows=rows,
    )
    print(f"\n{part}, {device_name} (median of {repeats}, after {warmup} warm-up)")
    print(f"{'model':34} {'dtype':>5} {'size':>6} {'seconds':>9} {'peak GiB':>9} {'speed-up':>9}")
    for r in rows:
        print(
            f"{r['model']:34} {r['dtype']:>5} {r['size']:>6} {r['median_s']:>9} "
            f"{r['peak_gib'] if r['peak_gib'] is not None else '-':>9} "
            f"{r.get('speedup_vs_guide', ''):>9}"
        )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
