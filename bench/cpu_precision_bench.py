"""CPU precision: f32 against bf16, each stage, on a CPU with native bf16 (issue 24).

    python bench/cpu_precision_bench.py            # a 1920 px quadrat, ViT-B, tiny + recipe
    python bench/cpu_precision_bench.py --smoke    # seconds: tiny SAM, tiny config, 96 px

Each precision runs in a fresh process of its own (f32, then bf16) on the same inputs and
weights, through the classes inference uses (inferencer.py), set as --cpu-precision sets
them:

- SAM image encoder (CoralSCoP-shaped ViT-B, random weights saved as a checkpoint, so
  both processes load the same ones; OpenVINO by default, --runtime torch for PyTorch
  under autocast): one 1024 px pass over the quadrat as SAM resizes it; the median of
  --repeats after --warmup.
- SAM proposals: the generator at --points x --points prompts, no crop layer, every
  filter and the box NMS off, one run: one mask per prompt, to match. Random weights pass
  none of CoralSCoP's filters, and their masks all span the image, so NMS would keep one.
- Semantic model, per config (`tiny`: configs/reef_demo_tiny.py, `recipe`:
  configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py; random weights, no DINOv2
  download): from the decoded RGB quadrat to the class map on the host, as the CLI runs
  it (the config's test resize and mode: the recipe slides 1280 px windows over 1920).

Agreement with f32, all of it numeric only (random weights): the share of pixels with
the same argmax class; the SAM embedding's largest difference relative to its largest
value; proposals matched one to one (Hungarian on mask IoU) with their IoU. Where the
CPU has no native bf16 the bf16 column is "not measured", never estimated. Prints a
table and one JSON line; --out writes the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import fire  # noqa: E402
import numpy as np  # noqa: E402
from mask_matching import one_to_one  # noqa: E402

CONFIGS = {
    "tiny": ROOT / "configs" / "reef_demo_tiny.py",
    "recipe": ROOT / "configs" / "dinov2_vitb14_coralsegv4_ms_config_segformer.py",
}
NOT_MEASURED = "not measured"


def _encoder_input(sam, image: np.ndarray):
    """The 1024 px input SAM's predictor gives its encoder: resized, normalised, padded."""
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(sam.image_encoder.img_size).apply_image(image)
    pixels = torch.as_tensor(resized).permute(2, 0, 1)[None].float()
    return sam.preprocess(pixels)


def _encoder_precision(encoder) -> str:
    from models.coralscop import Bf16ImageEncoder

    if hasattr(encoder, "compiled"):  # OpenVINO: the precision it compiled, not the request
        return encoder.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return "bf16" if isinstance(encoder, Bf16ImageEncoder) else "f32"


def measure(precision: str, spec_file: str) -> None:
    """One precision, in this process: times and outputs to <work>/<precision>.npz, the
    figures printed as a RECORD line."""
    import torch
    from timing import time_call

    from dataset.reef_demo import render_sample
    from inferencer import CoralSCoPSegmenter, SemanticSegmenter
    from models.mask_generator import GeneratorSettings

    spec = json.loads(Path(spec_file).read_text())
    work, bf16 = Path(spec["work"]), precision == "bf16"
    image, _ = render_sample(0, spec["size"])
    record: dict = {"precision": precision, "threads": torch.get_num_threads()}
    arrays: dict[str, np.ndarray] = {}
    settings = GeneratorSettings(
        points_per_side=spec["points"], crop_n_layers=0, pred_iou_thresh=0.0,
        stability_score_thresh=0.0, coral_thresh=0.0, box_nms_thresh=1.0,
    )  # fmt: skip
    started = time.perf_counter()
    segmenter = CoralSCoPSegmenter(
        spec["sam_checkpoint"], "cpu", settings, spec["sam_encoder"], spec["runtime"], bf16
    )
    sam = segmenter.generator.sam
    record["sam"] = {
        "runtime": segmenter.encoder_runtime,
        "ran": _encoder_precision(sam.image_encoder),
        "load_s": round(time.perf_counter() - started, 2),
    }
    pixels = _encoder_input(sam, image)
    with torch.inference_mode():
        embedding, seconds = time_call(
            lambda encoder=sam.image_encoder: encoder(pixels), "cpu", spec["warmup"],
            spec["repeats"],
        )  # fmt: skip
        began = time.perf_counter()
        proposals = segmenter.propose(image)
        record["sam"]["proposals_s"] = round(time.perf_counter() - began, 2)
    record["sam"].update(encoder_s=round(statistics.median(seconds), 3),
                         encoder_runs_s=[round(s, 3) for s in seconds])  # fmt: skip
    arrays["embedding"] = embedding.float().numpy()
    arrays["masks"] = np.packbits(proposals.masks.cpu().numpy(), axis=-1)
    del segmenter, sam, proposals  # the semantic models' memory is their own
    for name, checkpoint in spec["semantic"].items():
        semantic = SemanticSegmenter(str(CONFIGS[name]), checkpoint, "cpu", bf16)

        def class_map(model=semantic):
            return model.predict_probs(image).argmax(0).to(torch.uint8).cpu().numpy()

        classes, seconds = time_call(class_map, "cpu", spec["warmup"], spec["repeats"])
        record[name] = {
            "ran": "bf16" if semantic.bf16 else "f32",
            "seconds": round(statistics.median(seconds), 3),
            "runs_s": [round(s, 3) for s in seconds],
        }
        arrays[f"classes_{name}"] = classes
        del semantic
    np.savez(work / f"{precision}.npz", **arrays)
    print("RECORD " + json.dumps(record), flush=True)


def _run_child(precision: str, spec_file: Path, env: dict) -> dict:
    code = (
        "import sys; sys.path.insert(0, 'bench'); import cpu_precision_bench as b; "
        "b.measure(sys.argv[1], sys.argv[2])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, precision, str(spec_file)], cwd=ROOT, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    records = [line[7:] for line in result.stdout.splitlines() if line.startswith("RECORD ")]
    if result.returncode or not records:
        raise SystemExit(f"the {precision} process failed:\n{result.stderr[-4000:]}")
    return json.loads(records[-1])


def match_masks(reference: np.ndarray, other: np.ndarray) -> dict:
    """Proposals matched one to one by mask IoU (Hungarian): counts and the IoU of pairs."""
    result = {"f32": len(reference), "bf16": len(other)}
    if not len(reference) or not len(other):
        return dict(result, matched=0)
    _, _, paired = one_to_one(reference, other)
    paired = paired[paired > 0]  # a pair that shares no pixel is no match
    if not len(paired):
        return dict(result, matched=0)
    return dict(result, matched=len(paired), median_iou=round(float(np.median(paired)), 4),
                min_iou=round(float(paired.min()), 4),
                share_iou_over_0_9=round(float((paired > 0.9).mean()), 4))  # fmt: skip


def agreement(work: Path, size: int, configs: list[str]) -> dict:
    """bf16's outputs against f32's."""
    f32, bf16 = np.load(work / "f32.npz"), np.load(work / "bf16.npz")
    reference = f32["embedding"]
    result = {
        "sam_embedding_max_diff_rel": round(
            float(np.abs(bf16["embedding"] - reference).max() / np.abs(reference).max()), 5
        )
    }
    masks = [np.unpackbits(run["masks"], axis=-1, count=size).astype(bool) for run in (f32, bf16)]
    result["sam_proposals"] = match_masks(*masks)
    for name in configs:
        key = f"classes_{name}"
        result[f"{name}_pixel_agreement"] = round(float((f32[key] == bf16[key]).mean()), 5)
    return result


def _openvino_version() -> str:
    try:
        import openvino
    except ImportError:
        return "not installed"
    return openvino.get_version()


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def main(
    size: int = 1920,
    configs=("tiny", "recipe"),
    points: int = 8,
    runtime: str = "openvino",
    warmup: int = 1,
    repeats: int = 3,
    smoke: bool = False,
    out: str | None = None,
) -> dict:
    """Both precisions, each in a fresh process; returns the figures. smoke: the smallest
    setting (a tiny SAM, the tiny config, 96 px, one run, no warm-up)."""
    import torch

    from models.coralscop import SAM_TINY, build_coralscop, write_random_checkpoint
    from models.cpu_precision import BF16_FLAGS, missing_bf16, read_cpu_flags
    from models.random_checkpoint import write_random_semantic_checkpoint

    if smoke:
        size, configs, points, warmup, repeats = 96, ("tiny",), 2, 0, 1
    configs = [configs] if isinstance(configs, str) else list(configs)
    unknown = set(configs) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"unknown configs {sorted(unknown)}: use {sorted(CONFIGS)}")
    flags = read_cpu_flags() or frozenset()
    absent = missing_bf16(read_cpu_flags())
    with tempfile.TemporaryDirectory(prefix="cpu-precision-bench-") as folder:
        work = Path(folder)
        if smoke:
            torch.manual_seed(0)
            sam_checkpoint = work / "sam_tiny.pth"
            torch.save(build_coralscop(SAM_TINY).state_dict(), sam_checkpoint)
        else:
            sam_checkpoint = write_random_checkpoint(work / "vit_b_coralscop.pth")
        spec = {
            "work": str(work), "size": size, "points": points, "runtime": runtime,
            "warmup": warmup, "repeats": repeats, "sam_checkpoint": str(sam_checkpoint),
            "sam_encoder": SAM_TINY if smoke else None,
            "semantic": {name: str(write_random_semantic_checkpoint(
                CONFIGS[name], work / f"{name}.pth")) for name in configs},
        }  # fmt: skip
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        # the OpenVINO export of the checkpoint's encoder is cached for the second process,
        # in this run's folder, not the user's
        env = {**os.environ, "CORAL_CACHE_DIR": str(work / "cache")}
        runs = {"f32": _run_child("f32", spec_file, env)}
        if absent is None:
            runs["bf16"] = _run_child("bf16", spec_file, env)
            agreed = agreement(work, size, configs)
        else:
            runs["bf16"], agreed = NOT_MEASURED, {}
    stages = ["sam", *configs]
    result = {
        "benchmark": "cpu_precision",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": _cpu_name(),
        "bf16_flags": sorted(flags & set(BF16_FLAGS)),
        "bf16_absent": absent,
        "cores": os.cpu_count(),
        "versions": {"torch": torch.__version__, "openvino": _openvino_version()},
        "size": size,
        "points": points,
        "runs": runs,
        "agreement": agreed,
    }
    if runs["bf16"] != NOT_MEASURED:
        for stage in stages:
            # a figure is only a bf16 figure if bf16 is what ran
            if runs["bf16"][stage]["ran"] != "bf16" or runs["f32"][stage]["ran"] != "f32":
                raise SystemExit(f"{stage}: asked f32/bf16, ran {runs['f32'][stage]['ran']}/"
                                 f"{runs['bf16'][stage]['ran']}")  # fmt: skip
    _print(result, stages)
    line = json.dumps(result)
    print(line)
    if out:
        Path(out).write_text(line + "\n")
    return result


def _seconds(run, stage: str):
    if run == NOT_MEASURED:
        return NOT_MEASURED
    return run[stage]["encoder_s" if stage == "sam" else "seconds"]


def _print(result: dict, stages: list[str]) -> None:
    runs = result["runs"]
    print(f"\n{result['cpu']}, {result['cores']} cores, {result['size']} px, "
          f"bf16 flags: {result['bf16_flags'] or 'none'}")  # fmt: skip
    print(f"{'stage':22} {'f32 (s)':>10} {'bf16 (s)':>14} {'speed-up':>9}")
    for stage in stages:
        f32, bf16 = _seconds(runs["f32"], stage), _seconds(runs["bf16"], stage)
        speedup = f"{f32 / bf16:.2f}x" if bf16 != NOT_MEASURED else NOT_MEASURED
        label = "SAM encoder (1024 px)" if stage == "sam" else f"semantic {stage}"
        print(f"{label:22} {f32:>10} {bf16:>14} {speedup:>9}")
    if result["agreement"]:
        print("agreement with f32 (random weights: numeric only):", result["agreement"])
    else:
        print(f"bf16 {NOT_MEASURED}: {result['bf16_absent']}")


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
