"""Two-stage inference per image: semantic model, CoralSCoP proposals, fusion.

    python bench/two_stage_bench.py --device cuda --image-size 1920       # issue 10 target
    python bench/two_stage_bench.py --tiny --image-size 96 --points-per-side 3 --crop-n-layers 0 \
        --pred-iou-thresh 0 --stability-score-thresh 0

Times what `inference_with_coralscop.py` runs for one image, through the same
TwoStageInferencer: a decoded 1920 px reef quadrat in, instances and the class
map out (the files are not written). The whole call, and each stage on its own
(semantic to the host class map, proposals, fusion), with warm-up, median of the
repeats and CUDA events on GPUs, plus peak GPU memory. Weights are random unless
--semantic-checkpoint / --sam-checkpoint name real ones. The generator runs
CoralSCoP's settings; a random SAM makes noise that its thresholds reject (see
bench/generator_bench.py), so with random weights the proposals stage times the
model work alone: the proposal count is in the output. --tiny uses configs/reef_demo_tiny.py and a
tiny SAM (CPU smoke runs). Prints a table and one JSON line.
"""

from __future__ import annotations

import json
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

from dataset.reef_demo import render_sample  # noqa: E402
from inferencer import TwoStageInferencer  # noqa: E402
from models.coralscop import SAM_TINY  # noqa: E402
from models.fusion import fuse  # noqa: E402
from models.mask_generator import GeneratorSettings  # noqa: E402
from models.random_checkpoint import write_random_semantic_checkpoint  # noqa: E402

MAIN_CONFIG = ROOT / "configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py"
TINY_CONFIG = ROOT / "configs/reef_demo_tiny.py"


def main(
    device: str = "cpu",
    image_size: int = 1920,
    config: str | None = None,
    semantic_checkpoint: str | None = None,
    sam_checkpoint: str | None = None,
    points_per_side: int = 32,
    crop_n_layers: int = 1,
    pred_iou_thresh: float = GeneratorSettings.pred_iou_thresh,
    stability_score_thresh: float = GeneratorSettings.stability_score_thresh,
    tiny: bool = False,
    warmup: int = 1,
    repeats: int = 3,
) -> dict:
    config = Path(config or (TINY_CONFIG if tiny else MAIN_CONFIG))
    weights = dict(
        semantic=semantic_checkpoint or "random",
        sam=sam_checkpoint or ("random tiny" if tiny else "random ViT-B"),
    )
    workdir = Path(tempfile.mkdtemp(prefix="two-stage-bench-"))
    try:
        if semantic_checkpoint is None:
            semantic_checkpoint = write_random_semantic_checkpoint(config, workdir / "random.pth")
        generator = GeneratorSettings(
            points_per_side=points_per_side,
            crop_n_layers=crop_n_layers,
            pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh,
        )
        inferencer = TwoStageInferencer(
            str(config),
            str(semantic_checkpoint),
            sam_checkpoint,
            device,
            generator=generator,
            sam_encoder=SAM_TINY if tiny else None,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    image, _ = render_sample(0, image_size)
    semantic, sam = inferencer.semantic, inferencer.instances

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result, total = time_call(lambda: inferencer(image), device, warmup, repeats)
    probs, semantic_s = time_call(lambda: semantic.predict_probs(image), device, warmup, repeats)
    _, class_map_s = time_call(
        lambda: semantic.predict_probs(image).argmax(0).to(torch.uint8).cpu().numpy(),
        device,
        0,
        repeats,
    )
    proposals, proposals_s = time_call(lambda: sam.propose(image), device, warmup, repeats)
    _, fusion_s = time_call(
        lambda: fuse(probs, proposals.masks, inferencer.fusion), device, warmup, repeats
    )
    cuda = device.startswith("cuda")
    figures = dict(
        benchmark="two_stage",
        device=torch.cuda.get_device_name(0) if cuda else "cpu",
        image_size=image_size,
        semantic_config=config.name,
        weights=weights,
        generator=dict(
            points_per_side=points_per_side,
            crop_n_layers=crop_n_layers,
            pred_iou_thresh=generator.pred_iou_thresh,
            stability_score_thresh=generator.stability_score_thresh,
        ),
        total_s=round(statistics.median(total), 4),
        semantic_probs_s=round(statistics.median(semantic_s), 4),
        semantic_class_map_s=round(statistics.median(class_map_s), 4),
        proposals_s=round(statistics.median(proposals_s), 4),
        fusion_s=round(statistics.median(fusion_s), 4),
        proposals=len(proposals),
        instances=len(result.instances),
        peak_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    )
    print(f"\ntwo-stage inference on {figures['device']}, {image_size}px, "
          f"{figures['weights']} (median of {repeats}, after {warmup} warm-up)")  # fmt: skip
    for key in ("total_s", "semantic_probs_s", "semantic_class_map_s", "proposals_s", "fusion_s"):
        print(f"  {key:22} {figures[key]:>9}")
    print(f"  proposals {figures['proposals']}, instances {figures['instances']}, "
          f"peak {figures['peak_gib']} GiB")  # fmt: skip
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
