"""Benchmark prepare_data: images per second on synthetic 1920x1920 quadrats.

    python bench/prepare_bench.py                      # 64 samples, 1920 px, all cores
    python bench/prepare_bench.py --num-samples 4 --image-size 128   # smoke setting

Each sample has `colonies` closed polylines of `vertices` points (CVAT polygons of
coral colonies), labelled with fine genera. The FiftyOne database is a temporary
one, so the user's datasets are untouched. Two runs are timed: output at the
source size (images copied) and output at half size (images re-encoded). Prints a
table and one JSON line.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("FIFTYONE_DATABASE_DIR", tempfile.mkdtemp(prefix="bench-fiftyone-"))
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")

import cv2  # noqa: E402
import fire  # noqa: E402
import numpy as np  # noqa: E402

from dataset.image_io import write_image  # noqa: E402
from dataset.prepare import prepare  # noqa: E402
from dataset.taxonomy import load_taxonomy  # noqa: E402
from settings import Settings  # noqa: E402


def make_dataset(workdir: Path, num_samples: int, image_size: int, colonies: int, vertices: int):
    import fiftyone as fo

    rng = np.random.default_rng(0)
    genera = load_taxonomy("fine").classes[1:]
    base = rng.integers(0, 255, (image_size, image_size, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 3)
    samples = []
    for index in range(num_samples):
        path = workdir / "src" / f"quadrat_{index:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, np.roll(base, index * 7, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 90])
        polylines = []
        for _ in range(colonies):
            centre, radius = rng.uniform(0.05, 0.95, 2), rng.uniform(0.01, 0.12)
            theta = np.sort(rng.uniform(0, 2 * np.pi, vertices))
            r = radius * rng.uniform(0.7, 1.0, vertices)
            points = np.clip(centre + np.stack([r * np.cos(theta), r * np.sin(theta)], 1), 0, 1)
            polylines.append(
                fo.Polyline(
                    label=str(rng.choice(genera)),
                    points=[[tuple(map(float, p)) for p in points]],
                    closed=True,
                    filled=True,
                )
            )
        tag = ("train", "train", "train", "train", "val", "test")[index % 6]
        samples.append(
            fo.Sample(filepath=str(path), tags=[tag], polylines=fo.Polylines(polylines=polylines))
        )
    dataset = fo.Dataset(f"bench_prepare_{os.getpid()}_fo")
    dataset.add_samples(samples, progress=False)
    return dataset


def main(
    num_samples: int = 64,
    image_size: int = 1920,
    colonies: int = 30,
    vertices: int = 120,
    num_workers: int = 0,
) -> dict:
    """Time prepare() at the source size and at half size; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        workdir = Path(tmp)
        dataset = make_dataset(workdir, num_samples, image_size, colonies, vertices)
        workers = num_workers or os.cpu_count() or 1
        figures = {}
        for label, size in (("copy", image_size), ("resize", image_size // 2)):
            settings = Settings(data_root=workdir / label, image_size=size, num_workers=workers)
            started = time.perf_counter()
            prepare(dataset.name, settings)
            elapsed = time.perf_counter() - started
            figures[label] = {"output_px": size, "seconds": round(elapsed, 3),
                              "images_per_s": round(num_samples / elapsed, 2)}  # fmt: skip
        dataset.delete()
    result = {
        "benchmark": "prepare_data",
        "device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "workers": workers,
        "num_samples": num_samples,
        "source_px": image_size,
        "colonies_per_image": colonies,
        "vertices_per_colony": vertices,
        **figures,
    }
    print(f"\nprepare_data, {num_samples} samples of {image_size}px, {workers} workers")
    print(f"{'mode':8} {'output':>8} {'seconds':>9} {'images/s':>9}")
    for label, f in figures.items():
        print(f"{label:8} {f['output_px']:>8} {f['seconds']:>9} {f['images_per_s']:>9}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
