"""Where the time of a target goes: torch.profiler over one warm call of each stage.

    python bench/gpu_profile.py --device cuda                       # 1920 px, main config
    python bench/gpu_profile.py --tiny --image-size 96 --points-per-side 3 --crop-n-layers 0

Profiles, after warm-up, one call of the semantic model (decoded image to host
class map, bf16 where the device supports it) and one call of the CoralSCoP
proposal stage, through the same TwoStageInferencer that inference uses, and
prints each one's top operators by self device time (CPU time on a CPU), so a
missed target says what limits it. Weights are random (as in the other
benchmarks). Prints the tables and one JSON line with each stage's top five.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fire  # noqa: E402
import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from dataset.reef_demo import render_sample  # noqa: E402
from inferencer import TwoStageInferencer  # noqa: E402
from models.coralscop import SAM_TINY  # noqa: E402
from models.mask_generator import GeneratorSettings  # noqa: E402
from models.random_checkpoint import write_random_semantic_checkpoint  # noqa: E402

MAIN_CONFIG = ROOT / "configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py"
TINY_CONFIG = ROOT / "configs/reef_demo_tiny.py"


def _top_operators(fn, cuda: bool, rows: int) -> tuple[str, list[dict]]:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
        if cuda:
            torch.cuda.synchronize()
    averages = prof.key_averages()
    # torch >= 2.4 names it self_device_time_total; older ones self_cuda_time_total
    device_key = next(
        (k for k in ("self_device_time_total", "self_cuda_time_total") if hasattr(averages[0], k)),
        "self_cuda_time_total",
    )
    key = device_key if cuda else "self_cpu_time_total"
    table = averages.table(sort_by=key.replace("device", "cuda"), row_limit=rows)
    total = sum(getattr(e, key) for e in averages) or 1.0
    ranked = sorted(averages, key=lambda e: getattr(e, key), reverse=True)[:5]
    top = [
        dict(op=e.key, ms=round(getattr(e, key) / 1000, 2), share=round(getattr(e, key) / total, 3))
        for e in ranked
    ]
    return table, top


def main(
    device: str = "cpu",
    image_size: int = 1920,
    points_per_side: int = 32,
    crop_n_layers: int = 1,
    tiny: bool = False,
    warmup: int = 1,
    rows: int = 15,
) -> dict:
    cuda = device.startswith("cuda")
    config = TINY_CONFIG if tiny else MAIN_CONFIG
    workdir = Path(tempfile.mkdtemp(prefix="gpu-profile-"))
    try:
        checkpoint = write_random_semantic_checkpoint(config, workdir / "random.pth")
        inferencer = TwoStageInferencer(
            str(config),
            str(checkpoint),
            None,
            device,
            generator=GeneratorSettings(
                points_per_side=points_per_side, crop_n_layers=crop_n_layers
            ),
            sam_encoder=SAM_TINY if tiny else None,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    image, _ = render_sample(0, image_size)
    stages = {
        "semantic": lambda: (
            inferencer.semantic.predict_probs(image).argmax(0).to(torch.uint8).cpu().numpy()
        ),
        "proposals": lambda: inferencer.instances.propose(image),
    }
    result = dict(
        benchmark="profile",
        device=torch.cuda.get_device_name(0) if cuda else "cpu",
        image_size=image_size,
        semantic_bf16=inferencer.semantic.bf16,
        top={},
    )
    with torch.inference_mode():
        for name, fn in stages.items():
            for _ in range(warmup):
                fn()
            table, top = _top_operators(fn, cuda, rows)
            print(f"\n=== profile of {name}, {result['device']}, {image_size} px")
            print(table)
            result["top"][name] = top
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
