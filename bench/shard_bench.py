"""Sharded inference: images per second on 1 and on 2 CPU processes, the same images.

    python bench/shard_bench.py                                  # 8 quadrats of 1920 px
    python bench/shard_bench.py --images 2 --image-size 64 --points-per-side 2   # smoke

Target (issue 15): 2 processes on a 2-core machine do at least 1.6x the images per
second of 1. Both runs are the real command in fresh processes (the one-process
run plain, the two-process run under torchrun --launcher pytorch), each process on
one thread (OMP/MKL), on synthetic reef quadrats (dataset/reef_demo.py, JPEG) with
the tiny semantic config and a tiny random SAM on a light prompt grid (--sam vit_b:
SAM ViT-B with random weights, minutes per image). Two figures per run:

- processing: the images over the span from the first process starting its first
  image to the last one finishing (the command's own "N images processed in S s"
  log line): what sharding buys on a long batch;
- end to end: the images over the command's wall time, start-up (imports, model
  loading, process group) included: what this small batch costs.

Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import fire  # noqa: E402

from dataset.reef_demo import render_sample  # noqa: E402
from models.random_checkpoint import write_random_semantic_checkpoint  # noqa: E402

TINY_CONFIG = "configs/reef_demo_tiny.py"
TARGET = 1.6
# The command as users run it, with the tiny SAM swapped in unless ViT-B is asked for.
LAUNCHER = """
import sys
sys.path.insert(0, {root!r})
from models import coralscop
if {tiny!r}:
    coralscop.SAM_VIT_B = coralscop.SAM_TINY
import inference_with_coralscop as cli
sys.exit(cli.main(sys.argv[1:]))
"""
PROCESSED = re.compile(r"(\d+) images processed in ([\d.]+) s on (\d+) process")


def _write_quadrats(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True)
    for index in range(count):
        image, _ = render_sample(index, size)
        path = folder / f"quadrat_{index:03d}.jpg"
        if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")


def run_once(launcher: Path, args: list[str], processes: int, out: Path) -> dict:
    """One run of the command; its images, processing seconds and wall seconds."""
    python = [sys.executable, str(launcher)]
    if processes > 1:
        python = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", str(processes), str(launcher)]  # fmt: skip
        args = [*args, "--launcher", "pytorch"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    started = time.perf_counter()
    done = subprocess.run([*python, *args, "--output-dir", str(out)], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{processes} process(es) exited {done.returncode}:\n"
                           f"{done.stderr[-3000:]}")  # fmt: skip
    found = PROCESSED.search((out / "inference_log.txt").read_text())
    if not found:
        raise RuntimeError(f"no 'N images processed' line in {out / 'inference_log.txt'}")
    images, seconds = int(found.group(1)), float(found.group(2))
    return dict(processes=processes, images=images, processing_s=seconds, wall_s=round(wall, 1),
                processing_images_per_s=round(images / seconds, 4),
                end_to_end_images_per_s=round(images / wall, 4))  # fmt: skip


def main(
    images: int = 8,
    image_size: int = 1920,
    points_per_side: int = 8,
    sam: str = "tiny",
    encoder_runtime: str = "torch",
    keep: bool = False,
) -> dict:
    """sam: tiny or vit_b; encoder_runtime: the SAM encoder's (torch, openvino, auto)."""
    if sam not in ("tiny", "vit_b"):
        raise ValueError(f"--sam {sam}: use tiny or vit_b")
    workdir = Path(tempfile.mkdtemp(prefix="shard-bench-"))
    os.environ["CORAL_SAM_ENCODER_RUNTIME"] = encoder_runtime
    try:
        weights = write_random_semantic_checkpoint(ROOT / TINY_CONFIG, workdir / "random.pth")
        _write_quadrats(workdir / "in", images, image_size)
        launcher = workdir / "launcher.py"
        launcher.write_text(LAUNCHER.format(root=str(ROOT), tiny=sam == "tiny"))
        args = ["--input-dir", str(workdir / "in"),
                "--segformer-config", str(ROOT / TINY_CONFIG), "--segformer-weights",
                str(weights), "--device", "cpu", "--points-per-side", str(points_per_side),
                "--crop-n-layers", "0"]  # fmt: skip
        rows = []
        for processes in (1, 2):
            row = run_once(launcher, args, processes, workdir / f"out-{processes}")
            rows.append(row)
            print(f"  {processes} process(es): {row['images']} images, processing "
                  f"{row['processing_s']:.1f} s ({row['processing_images_per_s']:.3f} img/s), "
                  f"wall {row['wall_s']:.1f} s ({row['end_to_end_images_per_s']:.3f} img/s)",
                  flush=True)  # fmt: skip
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    one, two = rows
    speedup = round(two["processing_images_per_s"] / one["processing_images_per_s"], 3)
    end_to_end = round(two["end_to_end_images_per_s"] / one["end_to_end_images_per_s"], 3)
    figures = dict(benchmark="shard", images=images, image_size=image_size,
                   points_per_side=points_per_side, sam=sam, encoder_runtime=encoder_runtime,
                   cpus=os.cpu_count(), rows=rows, speedup=speedup,
                   end_to_end_speedup=end_to_end, target=TARGET,
                   meets_target=speedup >= TARGET)  # fmt: skip
    verdict = "meets" if speedup >= TARGET else "MISSES"
    print(
        f"\n2 vs 1 process: {speedup:.2f}x images per second while processing ({verdict} the "
        f"{TARGET}x target), {end_to_end:.2f}x end to end"
    )
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
